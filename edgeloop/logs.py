"""Structured logs on stderr: one JSON object per line, or text with the fields as key=value; a rate limit for loops."""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter", "RateLimitedLogger", "TextFormatter", "configure_logging"]

# LogRecord attributes that are not user-supplied ``extra`` fields.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as {"ts", "level", "logger", "msg", ...extra} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Formats a record as ``<ts> <level> <logger>: <msg> key=value ...``: the same fields as the JSON lines (logfmt)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        parts = [f"{ts} {record.levelname.lower()} {record.name}: {record.getMessage()}"]
        for key, value in vars(record).items():
            if key not in _RESERVED:
                parts.append(f"{key}={_logfmt(value)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _logfmt(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if text and not any(char in text for char in ' "=\n\t\\'):
        return text
    return orjson.dumps(text).decode()  # quoted, with quotes, backslashes and newlines escaped


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    """Route every logger to stderr, as JSON lines unless ``json`` is false (then text with key=value fields)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


class RateLimitedLogger:
    """Logs a repeating error at most once per ``interval_s`` per key, counting the rest."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, msg: str, **extra: Any) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self._interval_s:
            self._last[key] = (last, suppressed + 1)
            return
        if suppressed:
            extra["suppressed"] = suppressed
        self._last[key] = (now, 0)
        self._logger.log(level, msg, extra=extra)
