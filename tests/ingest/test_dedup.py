"""A record id lands at most once per model table: across batches, inside one batch, inside one group commit, across restarts."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.ingest.batch import read_batch
from edgeloop.ingest.store import Landing, Store
from edgeloop.schemas import ModelSchema
from tests.ingest.conftest import BASE_TIME, make_config, make_table, seal


def with_ids(table: pa.Table, ids: list[uuid.UUID]) -> pa.Table:
    """``table`` with its record_id column replaced by ``ids`` (one per row)."""
    index = table.schema.get_field_index("record_id")
    return table.set_column(index, table.schema.field(index), pa.array([i.bytes for i in ids], pa.binary(16)).cast(pa.uuid()))


def batch_of(tmp_path: Path, schema: ModelSchema, ids: list[uuid.UUID], feedback_ids: list[uuid.UUID] = ()) -> tuple[str, bytes]:
    """A sealed batch whose predictions carry ``ids`` and whose feedback rows carry ``feedback_ids``."""
    feedback = [(uuid.uuid4(), "cavitation", BASE_TIME) for _ in feedback_ids]
    table, _ = make_table(schema, predictions=len(ids), feedback=feedback)
    return seal(tmp_path, schema, with_ids(table, [*ids, *feedback_ids]))


async def test_same_record_ids_in_two_batches_land_once(server, tmp_path, vibration):
    """Two batches carrying the same record ids: the second answers 201 with every row counted as a duplicate, and the ids land once."""
    token = await server.add_device("pump-1")
    ids = [uuid.uuid4() for _ in range(40)]
    first = batch_of(tmp_path / "a", vibration, ids)
    second = batch_of(tmp_path / "b", vibration, ids)
    status, receipt, _ = await server.put(*first, token)
    assert status == 201 and receipt["duplicates"] == 0, receipt
    status, receipt, _ = await server.put(*second, token)
    assert status == 201 and receipt["rows"] == 40 and receipt["duplicates"] == 40, receipt
    assert await server.sql("SELECT count(*) AS n, count(DISTINCT record_id) AS ids FROM vibration") == [{"n": 40, "ids": 40}]
    rows = await server.sql("SELECT batch_id, rows, duplicates FROM batches ORDER BY landed_at")
    assert rows == [
        {"batch_id": first[0], "rows": 40, "duplicates": 0},
        {"batch_id": second[0], "rows": 40, "duplicates": 40},
    ]
    status, replay, _ = await server.put(*second, token)
    assert status == 200 and replay["duplicates"] == 40, replay
    async with server.session.get(f"{server.url}/metrics") as response:
        metrics = await response.text()
    assert 'edgeloop_ingest_rows_landed_total{model="vibration"} 40.0' in metrics
    assert 'edgeloop_ingest_duplicate_rows_total{model="vibration"} 40.0' in metrics


async def test_partial_overlap_and_repeats_inside_one_batch(server, tmp_path, vibration):
    """A batch that repeats an id and shares some with a landed batch lands only its new ids, once each, and counts the rest."""
    token = await server.add_device("pump-1")
    old = [uuid.uuid4() for _ in range(10)]
    new = [uuid.uuid4() for _ in range(5)]
    assert (await server.put(*batch_of(tmp_path / "a", vibration, old), token))[0] == 201
    mixed = [*old[:4], *new, new[0], new[0], new[3]]
    status, receipt, _ = await server.put(*batch_of(tmp_path / "b", vibration, mixed), token)
    assert status == 201 and receipt["rows"] == 12 and receipt["duplicates"] == 7, receipt
    landed = await server.sql("SELECT record_id::VARCHAR AS id FROM vibration")
    assert sorted(row["id"] for row in landed) == sorted(str(i) for i in [*old, *new])


async def test_feedback_ids_are_deduplicated_in_their_own_table(server, tmp_path, vibration):
    """Feedback record ids land once in the feedback table; a prediction and a feedback row may share an id across tables."""
    token = await server.add_device("pump-1")
    shared = [uuid.uuid4() for _ in range(3)]
    assert (await server.put(*batch_of(tmp_path / "a", vibration, shared, shared), token))[0] == 201
    status, receipt, _ = await server.put(*batch_of(tmp_path / "b", vibration, [uuid.uuid4()], shared), token)
    assert status == 201 and receipt["duplicates"] == 3, receipt
    assert await server.sql("SELECT count(*) AS n FROM vibration") == [{"n": 4}]
    assert await server.sql("SELECT count(*) AS n, count(DISTINCT record_id) AS ids FROM vibration_feedback") == [{"n": 3, "ids": 3}]


def _landing(tmp_path: Path, schema: ModelSchema, ids: list[uuid.UUID], store: Store) -> Landing:
    batch_id, body = batch_of(tmp_path, schema, ids)
    config = make_config(tmp_path)
    store.register(schema).result(30)  # the server lands only schemas it has registered
    batch = read_batch(body, batch_id=batch_id, limits=config.limits, schema_for=store.catalog.get)
    return Landing(batch, "pump-1", datetime.now(UTC))


def test_duplicates_inside_one_group_commit_land_once(tmp_path, vibration):
    """Batches that share record ids and land in the same group commit land each id once; the first batch in the group keeps it."""
    config = make_config(tmp_path, store={"group_commit_delay_s": 0.5, "group_commit_max_batches": 8})
    store = Store(config.store.db_path, config.store)
    try:
        ids = [uuid.uuid4() for _ in range(30)]
        landings = [_landing(tmp_path / f"b{n}", vibration, ids[n * 5 : n * 5 + 20], store) for n in range(3)]
        futures = [store.submit(landing) for landing in landings]
        answers = [future.result(30) for future in futures]
        assert [status for status, _ in answers] == [201, 201, 201]
        assert [receipt["duplicates"] for _, receipt in answers] == [0, 15, 15]
        assert len({receipt["landed_at"] for _, receipt in answers}) == 1, "the batches did not share one group commit"
        count = store.cursor().execute("SELECT count(*), count(DISTINCT record_id) FROM vibration").fetchone()
        assert count == (30, 30)
    finally:
        store.close()


def test_a_record_id_landed_before_a_restart_is_still_a_duplicate(tmp_path, vibration):
    """Deduplication reads the table, not a cache: after the server restarts, an id landed before stays landed once."""
    config = make_config(tmp_path)
    ids = [uuid.uuid4() for _ in range(8)]
    for name in ("a", "b"):
        store = Store(config.store.db_path, config.store)
        try:
            status, receipt = store.submit(_landing(tmp_path / name, vibration, ids, store)).result(30)
            assert status == 201 and receipt["duplicates"] == (0 if name == "a" else 8), receipt
        finally:
            store.close()
    store = Store(config.store.db_path, config.store)
    try:
        assert store.cursor().execute("SELECT count(*) FROM vibration").fetchone() == (8,)
    finally:
        store.close()


@pytest.mark.timeout(300)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(st.integers(0, 39), min_size=1, max_size=25), min_size=1, max_size=6),
    grouped=st.booleans(),
)
def test_any_overlap_of_batches_lands_each_id_once_and_receipts_add_up(tmp_path_factory, vibration, batches, grouped):
    """Whatever ids batches share, and however they group, each id lands once and rows minus duplicates sum to the ids landed."""
    root = tmp_path_factory.mktemp("dedup")
    pool = [uuid.uuid4() for _ in range(40)]
    _land_each_id_once(root, vibration, pool, batches, grouped)


def _land_each_id_once(root, vibration, pool, batches, grouped):
    """Land batches of ``pool[i]`` ids (one at a time or grouped) and check each id landed once, receipts and ledger adding up."""
    config = make_config(root, store={"group_commit_delay_s": 0.2 if grouped else 0.0})
    store = Store(config.store.db_path, config.store)
    try:
        landings = [_landing(root / f"b{n}", vibration, [pool[i] for i in picks], store) for n, picks in enumerate(batches)]
        if grouped:
            answers = [future.result(30) for future in [store.submit(landing) for landing in landings]]
        else:
            answers = [store.submit(landing).result(30) for landing in landings]
        distinct = {i for picks in batches for i in picks}
        assert all(status == 201 for status, _ in answers)
        assert sum(receipt["rows"] - receipt["duplicates"] for _, receipt in answers) == len(distinct)
        landed = store.cursor().execute("SELECT count(*), count(DISTINCT record_id) FROM vibration").fetchone()
        assert landed == (len(distinct), len(distinct))
        ledger = store.cursor().execute("SELECT sum(rows - duplicates)::BIGINT FROM batches").fetchone()
        assert ledger == (len(distinct),)
    finally:
        store.close()


async def test_concurrent_uploads_of_the_same_ids_under_other_batch_ids_land_once(server, tmp_path, vibration):
    """Twenty batches with the same record ids uploaded at once all answer 201 and the ids land once."""
    token = await server.add_device("pump-1")
    ids = [uuid.uuid4() for _ in range(50)]
    bodies = [batch_of(tmp_path / f"c{n}", vibration, ids) for n in range(20)]
    answers = await asyncio.gather(*(server.put(*body, token) for body in bodies))
    assert [status for status, _, _ in answers] == [201] * 20
    assert sum(receipt["rows"] - receipt["duplicates"] for _, receipt, _ in answers) == 50
    assert await server.sql("SELECT count(*) AS n FROM vibration") == [{"n": 50}]


@pytest.mark.timeout(300)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spans=st.lists(st.tuples(st.integers(0, 59), st.integers(1, 20), st.sampled_from([1, 2, 3])), min_size=1, max_size=6),
    grouped=st.booleans(),
)
def test_time_ordered_ids_in_near_or_interleaved_spans_land_each_id_once(tmp_path_factory, vibration, spans, grouped):
    """Time-ordered ids as agents mint them (UUIDv7): batches of runs, every other or every third id of a run, adjacent,
    overlapping or interleaved with landed ones, land each id once with the receipts adding up."""
    root = tmp_path_factory.mktemp("dedup-ordered")
    pool = sorted((uuid.uuid4() for _ in range(80)), key=lambda i: i.bytes)  # ordered as UUIDv7 ids are
    picks = [list(range(start, min(start + length, len(pool)), step)) for start, length, step in spans]
    _land_each_id_once(root, vibration, pool, picks, grouped)


def test_a_batch_knows_the_span_of_its_ids_only_when_none_repeats(tmp_path, vibration):
    """The check threads hand the writer a batch's lowest and highest record id, and none when an id repeats inside it."""
    config = make_config(tmp_path)
    ids = sorted((uuid.uuid4() for _ in range(5)), key=lambda i: i.bytes)
    for name, chosen, span in (("a", [ids[3], ids[0], ids[4]], (ids[0].bytes, ids[4].bytes)), ("b", [ids[1], ids[2], ids[1]], None)):
        batch_id, body = batch_of(tmp_path / name, vibration, chosen)
        batch = read_batch(body, batch_id=batch_id, limits=config.limits, schema_for=lambda _: vibration)
        assert batch.id_span == span
