"""Record times end to end: the app's datetimes and numbers → agent (its own TZ) → sync → ingest → DuckDB → `sql`, the same instant."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import orjson
import pytest

from bench.simulator import SimulatedModel
from tests.collector.conftest import ROOT
from tests.ingest.conftest import cli as ingest_cli

pytestmark = pytest.mark.timeout(240)

# The app logs one prediction per case; each script line is a Python expression for created_at, run under the app's TZ.
APP = r"""
import json, sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo
from bench.simulator import SimulatedModel
from edgeloop.collector.client import Client

cases = json.loads(sys.argv[2])
template = next(SimulatedModel("vibration", seed=5).predictions(1))
client = Client(sys.argv[1])
ids = {}
for name, expression in cases.items():
    ids[name] = client.log_prediction("vibration", "1.0", template["inputs"], template["outputs"], created_at=eval(expression))
client.close(timeout_s=60)
print(json.dumps({"ids": ids, "stats": client.stats()}))
"""

# (Python expression the app passes as created_at, the UTC instant it means)
SDK_CASES = {
    "naive_summer": ("datetime(2026, 7, 1, 12, 0)", "2026-07-01T16:00:00+00:00"),  # the app's local time, New York EDT
    "naive_fold_first": ("datetime(2026, 11, 1, 1, 30)", "2026-11-01T05:30:00+00:00"),  # 01:30 EDT, the first pass
    "naive_fold_second": ("datetime(2026, 11, 1, 1, 30, fold=1)", "2026-11-01T06:30:00+00:00"),  # 01:30 EST
    "naive_1970": ("datetime(1970, 1, 1)", "1970-01-01T05:00:00+00:00"),
    "kathmandu": ("datetime(2026, 11, 26, 10, 15, 2, 123456, tzinfo=timezone(timedelta(hours=5, minutes=45)))",
                  "2026-11-26T04:30:02.123456+00:00"),
    "minus_half_hour": ("datetime(2026, 11, 26, 10, 0, tzinfo=timezone(-timedelta(minutes=30)))", "2026-11-26T10:30:00+00:00"),
    "seconds_offset": ("datetime(2026, 11, 26, 10, 15, 2, tzinfo=timezone(timedelta(hours=5, minutes=45, seconds=30)))",
                       "2026-11-26T04:29:32+00:00"),
    "amsterdam_lmt": ("datetime(1900, 1, 1, 12, 0, tzinfo=ZoneInfo('Europe/Amsterdam'))", "1900-01-01T11:40:28+00:00"),
    "y2038": ("datetime(2038, 1, 19, 3, 14, 8, tzinfo=timezone.utc)", "2038-01-19T03:14:08+00:00"),
    "y2100": ("datetime(2100, 1, 1, tzinfo=ZoneInfo('Asia/Kathmandu'))", "2099-12-31T18:15:00+00:00"),
    "y9999": ("datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)", "9999-12-31T23:59:59.999999+00:00"),
    "epoch_float": ("2147483648.5", "2038-01-19T03:14:08.500000+00:00"),
}


def landed_times(ingest, table: str = "vibration") -> dict[str, tuple[str, str]]:
    """record_id → (created_at as UTC text with microseconds, its DuckDB type), read from the database file."""
    rows = ingest.query(
        f"SELECT CAST(record_id AS VARCHAR), strftime(timezone('UTC', created_at), '%Y-%m-%dT%H:%M:%S.%f+00:00'),"
        f" typeof(created_at) FROM {table}"
    )
    return {record_id: (text, kind) for record_id, text, kind in rows}


def as_utc_text(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).isoformat(timespec="microseconds")


def synced_agent(agent_factory, ingest, tz: str):
    agent = agent_factory(sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0})
    agent.env = {"TZ": tz}
    return agent.start()


def sync_and_stop(agent) -> None:
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    assert agent.status()["spool"]["batches"] == 0
    assert agent.stop() == 0


def test_sdk_datetimes_land_as_the_instant_the_app_meant(agent_factory, ingest):
    """A naive datetime is the app's local time (fold honoured), an aware one keeps every second of its offset, in DuckDB and `sql`."""
    agent = synced_agent(agent_factory, ingest, "Asia/Kathmandu")  # the agent's zone must not matter
    cases = {name: expression for name, (expression, _) in SDK_CASES.items()}
    cases["naive_gap"] = "datetime(2026, 3, 8, 2, 30)"  # no New York clock showed it
    app = subprocess.run(
        [sys.executable, "-c", APP, str(agent.socket), json.dumps(cases)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={"TZ": "America/New_York", "PATH": "/usr/bin:/bin"},
    )
    assert app.returncode == 0, app.stderr
    answer = json.loads(app.stdout)
    assert answer["stats"]["sent"] == len(cases) and answer["stats"]["invalid"] == 0, answer["stats"]
    sync_and_stop(agent)

    landed = landed_times(ingest)
    ids = answer["ids"]
    for name, (_, expected) in SDK_CASES.items():
        assert landed[ids[name]] == (as_utc_text(expected), "TIMESTAMP WITH TIME ZONE"), name
    # A time in the spring-forward gap is read with one of the two offsets around it, not as UTC.
    assert landed[ids["naive_gap"]][0] in ("2026-03-08T06:30:00.000000+00:00", "2026-03-08T07:30:00.000000+00:00")

    # `sql` gives every one back unchanged, in UTC.
    shown = ingest_cli("sql", "--config", str(ingest.config), "--format", "json",
                       "SELECT CAST(record_id AS VARCHAR) AS id, created_at FROM vibration")
    back = {row["id"]: row["created_at"] for row in map(orjson.loads, shown.stdout.splitlines())}
    for name, (_, expected) in SDK_CASES.items():
        assert as_utc_text(back[ids[name]]) == as_utc_text(expected), (name, back[ids[name]])


# (created_at as the app puts it on the wire, the UTC instant it is stored as)
WIRE_CASES = [
    ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999+00:00"),  # RFC 3339's leap second: the last µs of its minute
    ("2016-12-31T23:59:60.5Z", "2016-12-31T23:59:59.999999+00:00"),
    ("2017-01-01T05:44:60+05:45", "2016-12-31T23:59:59.999999+00:00"),  # the same leap second in Kathmandu
    ("2026-11-26T10:15:02.123456789Z", "2026-11-26T10:15:02.123456+00:00"),  # nanoseconds: cut to µs
    ("2026-11-26T10:15:02-00:30", "2026-11-26T10:45:02+00:00"),
    ("2026-11-26T10:15:02", "2026-11-26T10:15:02+00:00"),  # text without an offset is UTC, whatever the agent's TZ
    (1764152102, "2025-11-26T10:15:02+00:00"),  # seconds
    (1764152102.25, "2025-11-26T10:15:02.250000+00:00"),
    (1764152102123, "2025-11-26T10:15:02.123000+00:00"),  # milliseconds
    (1764152102123456, "2025-11-26T10:15:02.123456+00:00"),  # microseconds
    (1764152102123456789, "2025-11-26T10:15:02.123456+00:00"),  # nanoseconds
    (0, "1970-01-01T00:00:00+00:00"),
    (2147483648, "2038-01-19T03:14:08+00:00"),
    (4102444800, "2100-01-01T00:00:00+00:00"),
    ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999+00:00"),
]


def test_wire_times_land_as_rfc3339_and_epoch_units_say(agent_factory, ingest):
    """A leap second, nanosecond text and epoch seconds, ms, µs or ns are kept (not refused) and land as the instant they name."""
    agent = synced_agent(agent_factory, ingest, "America/St_Johns")
    template = next(SimulatedModel("vibration", seed=5).predictions(1))
    records = [dict(template, record_id=None, created_at=value) for value, _ in WIRE_CASES]
    status, body = agent.post_records(records)
    assert status == 200 and body["accepted"] == len(WIRE_CASES), body
    ids = [result["record_id"] for result in body["results"]]
    sync_and_stop(agent)
    landed = landed_times(ingest)
    assert [landed[record_id][0] for record_id in ids] == [as_utc_text(expected) for _, expected in WIRE_CASES]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2016-12-31T23:59:61Z", "valid datetime"),
        ("9999-12-31T23:59:60-01:00", "outside years 1 to 9999"),
        (1e22, "valid datetime"),
        (True, "valid datetime"),
    ],
)
def test_a_time_that_is_none_is_refused_with_its_reason(agent, value, message):
    """A second 61, a leap second past year 9999 in UTC, an epoch no unit makes a time, a bool: invalid, naming created_at."""
    template = next(SimulatedModel("vibration", seed=5).predictions(1))
    status, body = agent.post_records([dict(template, created_at=value)])
    assert status == 422, body
    [result] = body["error"]["details"]["results"]
    assert result["error"]["field"] == "created_at" and message in result["error"]["message"], result
