"""Times an admin, a viewer or a labelling tool sends: outside years 1 to 9999 in UTC they are the sender's error, never a 500."""

from __future__ import annotations

import uuid

import pytest

from tests.ingest.conftest import cli, make_table, seal

# Each is a valid ISO 8601 time whose UTC reading falls before year 1 or after year 9999.
OUT_OF_RANGE = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"]


def _admin(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_token}"}


@pytest.mark.parametrize("before", OUT_OF_RANGE)
async def test_a_deletion_before_a_time_outside_the_range_is_a_400(server, before):
    """POST /v1/deletions with a ``before`` outside years 1 to 9999 in UTC is 400 bad_deletion, not a 500."""
    async with server.session.post(f"{server.url}/v1/deletions", json={"model": "vibration", "before": before},
                                   headers=_admin(server)) as response:
        body = await response.json()
    assert response.status == 400, body
    assert body["error"]["code"] == "bad_deletion" and "years 1 to 9999" in body["error"]["message"]


@pytest.mark.parametrize("query", [f"since={OUT_OF_RANGE[0].replace('+', '%2B')}", f"until={OUT_OF_RANGE[1]}"])
async def test_a_report_window_outside_the_range_is_a_400(server, query):
    """A dashboard report whose since or until falls outside years 1 to 9999 in UTC is 400 query_failed, not a 500."""
    async with server.session.get(f"{server.url}/v1/dashboard/report/vibration?{query}", headers=_admin(server)) as response:
        body = await response.json()
    assert response.status == 400, body
    assert body["error"]["code"] == "query_failed" and "years 1 to 9999" in body["error"]["message"]


async def test_a_report_since_year_1_compares_with_what_fits_before_it(server, tmp_path, vibration):
    """A report since the first day of year 1 answers 200: the drift reference before it starts at year 1, not an overflow."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=5)
    batch_id, body = seal(tmp_path, vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    async with server.session.get(f"{server.url}/v1/dashboard/report/vibration?since=0001-01-01",
                                  headers=_admin(server)) as response:
        report = await response.json()
    assert response.status == 200, report
    assert report["reference"].startswith("0001-01-01")


@pytest.mark.parametrize("created_at", OUT_OF_RANGE)
async def test_an_imported_label_outside_the_range_is_a_row_error_and_lands_nothing(server, tmp_path, vibration, created_at):
    """An imported label whose created_at falls outside years 1 to 9999 in UTC is a per-row error; no such time is stored."""
    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=1)
    batch_id, body = seal(tmp_path, vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    rows = [{"row": 1, "record_id": str(ids[0]), "fields": {"true_class": "ok"}, "created_at": created_at}]
    async with server.session.post(f"{server.url}/v1/feedback/vibration", json={"source": "tool", "tag": "t", "rows": rows},
                                   headers=_admin(server)) as response:
        result = await response.json()
    assert response.status == 200, result
    assert result["imported"] == 0 and len(result["errors"]) == 1
    assert "years 1 to 9999" in result["errors"][0]["error"]
    assert await server.sql("SELECT count(*) AS n FROM vibration_feedback") == [{"n": 0}]


@pytest.mark.parametrize(
    "args",
    [
        ["delete", "--model", "vibration", "--before", OUT_OF_RANGE[0]],
        ["report", "--model", "vibration", "--since", OUT_OF_RANGE[1]],
        ["export", "--model", "vibration", "--until", OUT_OF_RANGE[0], "--out", "-", "--format", "csv"],
    ],
)
def test_a_cli_time_outside_the_range_is_a_usage_error(tmp_path, args):
    """A CLI time outside years 1 to 9999 in UTC is refused by the argument parser (exit 2, no traceback)."""
    result = cli(*args, "--db", str(tmp_path / f"{uuid.uuid4().hex}.duckdb"), check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "years 1 to 9999" in result.stderr


async def test_an_imported_label_keeps_its_record_id_whatever_its_offset(server, tmp_path, vibration):
    """A label's record id is the UUIDv5 of its time as written (offset kept), so re-importing a file adds nothing."""
    import json

    from edgeloop.ingest.label_import import LABEL_NAMESPACE

    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=1)
    batch_id, body = seal(tmp_path, vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    rows = [{"row": 1, "record_id": str(ids[0]), "fields": {"true_class": "ok"}, "created_at": "2026-01-02T03:04:05+05:00"}]
    async with server.session.post(f"{server.url}/v1/feedback/vibration", json={"source": "tool", "tag": "t", "rows": rows},
                                   headers=_admin(server)) as response:
        assert (await response.json())["imported"] == 1
    identity = json.dumps([str(ids[0]), "tool", None, {"true_class": "ok"}, "2026-01-02T03:04:05+05:00"], separators=(",", ":"))
    expected = str(uuid.uuid5(LABEL_NAMESPACE, identity))
    assert await server.sql("SELECT record_id::VARCHAR AS id FROM vibration_feedback") == [{"id": expected}]


async def test_a_report_window_that_ends_before_it_starts_is_a_400(server, tmp_path, vibration):
    """A dashboard report with since after until is 400 query_failed naming both, not a 200 with an inverted window."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=5)[0])
    assert (await server.put(batch_id, body, token))[0] == 201
    async with server.session.get(f"{server.url}/v1/dashboard/report/vibration?since=2026-02-01&until=2026-01-01",
                                  headers=_admin(server)) as response:
        report = await response.json()
    assert response.status == 400, report
    assert report["error"]["code"] == "query_failed" and "must be before until" in report["error"]["message"]
