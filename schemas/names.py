"""The rule for model and field names, in a module of its own so that query builders check a name
without loading the schema models (pydantic, Arrow)."""

from __future__ import annotations

import re

__all__ = ["NAME_PATTERN"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")  # \Z: "$" also matches before a final newline
