"""Sizes, durations and plain-text tables for people: the CLIs of both sides print them the same way."""

from __future__ import annotations

import html
import re

# Control characters (C0 with newline, DEL, C1) and the bidirectional overrides: on a terminal ESC
# starts a sequence that can retitle the window, clear it or rewrite what is shown, CR rewrites
# the line, and U+202E shows the text after it reversed.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def size(value: float | None, *, missing: str = "-") -> str:
    """``1536`` → ``1.5 KB`` (binary multiples, as df and du print them)."""
    if value is None:
        return missing
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(amount) < 1024 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


def duration(seconds: float | None, *, missing: str = "-") -> str:
    """``7260`` → ``2h 1m``: two units at most, so a column of them stays readable."""
    if seconds is None:
        return missing
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def ago(seconds: float | None, *, missing: str = "never") -> str:
    """How long ago, never negative (a device clock ahead of ours reads as ``0s ago``)."""
    return missing if seconds is None else f"{duration(max(seconds, 0.0))} ago"


def printable(text: str) -> str:
    """``text`` as a terminal should show it: each control character as its escape (``\\x1b``), obeyed by none."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def html_text(value: object) -> str:
    """``value`` as HTML text or an attribute's value: markup escaped, and each control character and bidi
    override shown as its escape, as ``printable`` shows it (a browser drops NUL and hides the rest)."""
    return html.escape(printable("" if value is None else str(value)), quote=True)


def text_table(rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart; the first row is the header."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
