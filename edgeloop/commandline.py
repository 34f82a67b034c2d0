"""What both command lines (``edgeloop-collector``, ``edgeloop-ingest``) share in reading their arguments."""

from __future__ import annotations

import argparse

__all__ = ["refuse_options_before_the_command"]


def refuse_options_before_the_command(parser: argparse.ArgumentParser, argv: list[str], example: str) -> None:
    """An option before the command (``--config FILE status``) is a usage error saying where it goes:
    argparse would call the option's value an invalid command."""
    first = argv[0].split("=", 1)[0] if argv else ""
    if first.startswith("--") and first not in ("--help", "--version"):
        parser.error(f"{first} goes after the command: {parser.prog} COMMAND {first} ... (e.g. {parser.prog} {example})")
