"""A group commit takes up the uploads queued while its rows are inserted: one transaction, every guarantee kept."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from edgeloop.errors import BatchRejected, ServerOverloaded
from edgeloop.ingest.batch import read_batch
from edgeloop.ingest.store import Landing, Store
from edgeloop.schemas import ModelSchema
from tests.ingest.conftest import make_config, make_table, seal
from tests.ingest.test_dedup import batch_of, with_ids


class HeldStore(Store):
    """Fault injection: the first insert of rows waits until the test has queued what it wants behind it."""

    def __init__(self, *args, **kwargs) -> None:
        self.inserting = threading.Event()
        self.release = threading.Event()
        self.groups: list[int] = []
        super().__init__(*args, on_landed=lambda landed: self.groups.append(len(landed)), **kwargs)

    def _insert_rows(self, con, jobs, *args):
        if not self.inserting.is_set():
            self.inserting.set()
            assert self.release.wait(30), "the test never released the first insert"
        return super()._insert_rows(con, jobs, *args)


class FailingTallyStore(HeldStore):
    """Fault injection: the tallies of the first group of more than one batch raise ``fault``."""

    fault: BaseException = duckdb.ConstraintException("Constraint Error: injected")

    def _tally(self, con, jobs, *args):
        if len(jobs) > 1 and self.fault is not None:
            fault, type(self).fault = self.fault, None
            raise fault
        return super()._tally(con, jobs, *args)


def _landing(tmp_path: Path, schema: ModelSchema, store: Store, ids: list[uuid.UUID], batch_id: str | None = None,
             device: str = "pump-1") -> Landing:
    batch_id, body = batch_of(tmp_path, schema, ids) if batch_id is None else _sealed_as(tmp_path, schema, ids, batch_id)
    batch = read_batch(body, batch_id=batch_id, limits=make_config(tmp_path).limits, schema_for=store.catalog.get)
    return Landing(batch, device, datetime.now(UTC))


def _sealed_as(tmp_path: Path, schema: ModelSchema, ids: list[uuid.UUID], batch_id: str) -> tuple[str, bytes]:
    table, _ = make_table(schema, predictions=len(ids))
    return seal(tmp_path, schema, with_ids(table, ids), batch_id=batch_id)


def _open(tmp_path: Path, schema: ModelSchema, store_class: type[HeldStore] = HeldStore, **store: object) -> HeldStore:
    config = make_config(tmp_path, store={"group_commit_delay_s": 0, **store})
    opened = store_class(config.store.db_path, config.store)
    opened.register(schema).result(30)
    return opened


def test_uploads_queued_during_a_group_join_its_transaction(tmp_path, vibration):
    """Batches queued while a group's rows go in land in its commit: one landed_at, ids deduplicated across them, replays and conflicts answered."""
    store = _open(tmp_path, vibration)
    try:
        ids = [uuid.uuid4() for _ in range(12)]
        first = _landing(tmp_path / "a", vibration, store, ids[:8])
        pending = store.submit(first)
        assert store.inserting.wait(30)
        later = [store.submit(_landing(tmp_path / "b", vibration, store, ids[4:12])),  # shares 4 ids with the first
                 store.submit(_landing(tmp_path / "c", vibration, store, [uuid.uuid4() for _ in range(3)], device="pump-2")),
                 store.submit(first)]  # the same batch again: answered with the first's receipt
        other = store.submit(_landing(tmp_path / "d", vibration, store, ids[:2], batch_id=first.batch.batch_id))
        store.release.set()
        answers = [pending.result(30), *(future.result(30) for future in later)]
        assert [status for status, _ in answers] == [201, 201, 201, 200]
        assert answers[3][1] == answers[0][1], "the replay did not get the first landing's receipt"
        assert [receipt["duplicates"] for _, receipt in answers[:3]] == [0, 4, 0]
        assert len({receipt["landed_at"] for _, receipt in answers}) == 1, "the batches did not share one commit"
        with pytest.raises(BatchRejected) as refused:
            other.result(30)
        assert refused.value.status == 409 and refused.value.code == "conflict"
        assert store.groups == [3], "one group commit of three batches"
        con = store.cursor()
        assert con.execute("SELECT count(*), count(DISTINCT record_id) FROM vibration").fetchone() == (15, 15)
        assert con.execute("SELECT count(*), sum(rows - duplicates)::BIGINT FROM batches").fetchone() == (3, 15)
        assert con.execute("SELECT sum(predictions)::BIGINT FROM label_coverage").fetchone() == (15,)
        assert con.execute("SELECT sum(batches)::BIGINT, sum(rows)::BIGINT FROM device_health").fetchone() == (3, 15)
    finally:
        store.release.set()
        store.close()


def test_a_call_queued_during_a_group_runs_after_it_and_before_later_uploads(tmp_path, vibration):
    """A writer call queued behind a group's uploads stops the group taking more: it sees the group landed, and later uploads land after it."""
    store = _open(tmp_path, vibration)
    try:
        pending = store.submit(_landing(tmp_path / "a", vibration, store, [uuid.uuid4() for _ in range(5)]))
        assert store.inserting.wait(30)
        before = store.submit(_landing(tmp_path / "b", vibration, store, [uuid.uuid4() for _ in range(5)]))
        seen = store.call(lambda con: con.execute("SELECT count(*) FROM batches").fetchone()[0])
        after = store.submit(_landing(tmp_path / "c", vibration, store, [uuid.uuid4() for _ in range(5)]))
        store.release.set()
        assert [pending.result(30)[0], before.result(30)[0], after.result(30)[0]] == [201, 201, 201]
        assert seen.result(30) == 2
        assert store.groups == [2, 1]
    finally:
        store.release.set()
        store.close()


def test_a_failed_group_lands_the_batches_it_took_up_one_by_one(tmp_path, vibration):
    """When a group that took up batches fails inside DuckDB, each of its batches, those taken up included, lands alone."""
    store = _open(tmp_path, vibration, FailingTallyStore)
    try:
        pending = store.submit(_landing(tmp_path / "a", vibration, store, [uuid.uuid4() for _ in range(5)]))
        assert store.inserting.wait(30)
        later = [store.submit(_landing(tmp_path / name, vibration, store, [uuid.uuid4() for _ in range(5)])) for name in "bc"]
        store.release.set()
        assert [future.result(30)[0] for future in [pending, *later]] == [201, 201, 201]
        assert store.groups == [1, 1, 1]
        assert store.cursor().execute("SELECT count(*) FROM vibration").fetchone() == (15,)
    finally:
        store.release.set()
        store.close()


def test_out_of_memory_in_a_topped_up_group_answers_every_batch_and_the_writer_goes_on(tmp_path, vibration):
    """Out of memory outside DuckDB in a group that took up batches: every one of them gets 503, none is left waiting, the next lands."""

    class OutOfMemory(FailingTallyStore):
        fault = MemoryError("malloc of size 8388608 failed")

    store = _open(tmp_path, vibration, OutOfMemory)
    try:
        pending = store.submit(_landing(tmp_path / "a", vibration, store, [uuid.uuid4() for _ in range(5)]))
        assert store.inserting.wait(30)
        later = [store.submit(_landing(tmp_path / name, vibration, store, [uuid.uuid4() for _ in range(5)])) for name in "bc"]
        store.release.set()
        for future in [pending, *later]:
            with pytest.raises(ServerOverloaded):
                future.result(30)
        assert store.queued == 0
        assert store.submit(_landing(tmp_path / "d", vibration, store, [uuid.uuid4() for _ in range(5)])).result(30)[0] == 201
        assert store.cursor().execute("SELECT count(*) FROM vibration").fetchone() == (5,)
    finally:
        store.release.set()
        store.close()
