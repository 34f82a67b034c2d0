"""edgeloop's device side. Apps import ``Client``; the rest runs inside ``edgeloop-collector``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeloop.collector.client import Client

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so `python -m edgeloop.collector.cli run` can set up memory before pyarrow loads.
    if name == "Client":
        from edgeloop.collector.client import Client

        return Client
    raise AttributeError(f"module 'edgeloop.collector' has no attribute {name!r}")
