"""Text logs keep every structured field as key=value, like the JSON lines do."""

from __future__ import annotations

import logging

from edgeloop.logs import JsonFormatter, TextFormatter


def record(msg: str, **extra) -> logging.LogRecord:
    entry = logging.LogRecord("edgeloop.collector.sync", logging.WARNING, __file__, 1, msg, None, None)
    entry.__dict__.update(extra)
    return entry


def test_text_lines_carry_the_fields():
    """A text log line ends with each extra field as key=value, quoting values with spaces, quotes or newlines."""
    line = TextFormatter().format(record(
        "upload failed: retrying", batch_id="0193abc", attempt=2, wait_s=0.5,
        error='PUT http://x/v1: 503 busy: "queue full"\nagain', peer=None, tags=["a", "b"],
    ))
    assert line.split(" ", 1)[1].startswith("warning edgeloop.collector.sync: upload failed: retrying ")
    assert " batch_id=0193abc attempt=2 wait_s=0.5 " in line
    assert ' error="PUT http://x/v1: 503 busy: \\"queue full\\"\\nagain" ' in line
    assert line.endswith(' peer=null tags="[\\"a\\",\\"b\\"]"')
    assert "\n" not in line


def test_text_and_json_carry_the_same_fields():
    """Every field the JSON formatter writes (beyond ts, level, logger, msg) appears in the text line."""
    import orjson

    entry = record("sync finished", outcome="failed", reason="ingest unreachable", uploaded=0, bytes=0)
    fields = set(orjson.loads(JsonFormatter().format(entry))) - {"ts", "level", "logger", "msg"}
    text = TextFormatter().format(entry)
    assert fields == {"outcome", "reason", "uploaded", "bytes"}
    assert all(f" {name}=" in text for name in fields)
