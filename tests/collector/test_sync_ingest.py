"""Syncer against the real ingest server (a subprocess on loopback, DuckDB in tmp_path): every row lands once."""

from __future__ import annotations

import asyncio
import shutil

from edgeloop.collector.sync import Syncer
from tests.collector.sync_peer import make_batch, make_spool, sync_settings


def syncer(spool, tmp_path, ingest, **overrides):
    settings = sync_settings(ingest.url, tmp_path, token_file=ingest.token_file, **overrides)
    return Syncer(settings, spool, agent_version="test")


async def test_spooled_rows_land_once_and_a_replay_adds_none(ingest, tmp_path):
    """Every spooled row lands in DuckDB with its clock offset; re-sending the same batches (an ack lost in a crash) adds no row."""
    state = tmp_path / "state"
    spool = make_spool(state)
    batches = [make_batch(spool, rows=rows) for rows in (3, 5, 8, 13)]
    kept = tmp_path / "kept"
    shutil.copytree(spool.batches_dir, kept)

    result = await syncer(spool, tmp_path, ingest).run_once()
    assert (result.outcome, result.uploaded, result.rows) == ("ok", 4, 29)
    assert spool.pending() == []

    # The agent crashed after the server answered but before the files left the spool.
    shutil.rmtree(spool.batches_dir)
    shutil.copytree(kept, spool.batches_dir)
    replay = await syncer(make_spool(state), tmp_path, ingest).run_once()
    assert (replay.outcome, replay.uploaded, replay.already_present) == ("ok", 0, 4)

    rows, distinct, offsets = ingest.query(
        "SELECT count(*), count(DISTINCT record_id), count(clock_offset_s) FROM image_classifier"
    )[0]
    assert rows == distinct == offsets == 29
    ledger = ingest.query("SELECT batch_id, rows, device FROM batches ORDER BY batch_id")
    assert ledger == [(batch.batch_id, batch.rows, "kiosk-7") for batch in batches]


async def test_batches_sent_with_expect_100_continue_land_through_the_real_server(ingest, tmp_path):
    """With every batch over expect_continue_bytes, each waits for ingest's deferred 100 Continue and lands once."""
    spool = make_spool(tmp_path / "state")
    batches = [make_batch(spool, rows=rows, thumbnail_bytes=4_000) for rows in (4, 6)]
    result = await syncer(spool, tmp_path, ingest, expect_continue_bytes=1).run_once()
    assert (result.outcome, result.uploaded, result.rows) == ("ok", 2, 10) and spool.pending() == []
    assert ingest.query("SELECT count(*), count(DISTINCT record_id) FROM image_classifier")[0] == (10, 10)
    assert [row[0] for row in ingest.query("SELECT batch_id FROM batches ORDER BY batch_id")] == sorted(b.batch_id for b in batches)


async def test_server_killed_mid_upload_then_back_lands_each_batch_once(ingest, tmp_path):
    """SIGKILL of ingest during a PUT, then a restart: the sync's retries land every batch exactly once."""
    spool = make_spool(tmp_path / "state")
    batches = [make_batch(spool, rows=10, thumbnail_bytes=12_000) for _ in range(3)]
    total = sum(batch.bytes for batch in batches)
    sync = syncer(spool, tmp_path, ingest, bandwidth_bytes_per_s=total // 3, max_attempts=60,
                  backoff_initial_s=0.1, backoff_max_s=0.5)
    running = asyncio.create_task(sync.run_once())
    await asyncio.sleep(0.5)  # each batch takes about a second at this rate: the first is mid-body
    ingest.kill()
    assert not running.done()
    await asyncio.to_thread(ingest.start)
    result = await asyncio.wait_for(running, timeout=60)
    assert result.outcome == "ok" and result.uploaded + result.already_present == 3 and result.retries >= 1
    assert spool.pending() == [] and spool.rejected() == []
    rows, distinct = ingest.query("SELECT count(*), count(DISTINCT record_id) FROM image_classifier")[0]
    assert rows == distinct == 30
    assert ingest.query("SELECT count(*) FROM batches")[0][0] == 3


async def test_a_batch_of_an_unregistered_schema_waits_for_the_admin(tmp_path):
    """A 422 unknown_schema keeps the batch in the spool (never rejected/); once an admin pushes the schema the next sync lands it."""
    from edgeloop.schemas import EXAMPLES_DIR
    from tests.collector.conftest import Ingest
    from tests.ingest.conftest import cli, free_port, write_config

    folder = tmp_path / "ingest"
    folder.mkdir()
    port = free_port()
    config = write_config(folder, port)
    config.write_text(config.read_text().replace(f'schemas_dir = "{EXAMPLES_DIR}"\n', ""))
    token_file = folder / "kiosk.token"
    token_file.write_text(cli("devices", "add", "kiosk-7", "--config", str(config)).stdout.strip().splitlines()[-1])
    token_file.chmod(0o600)
    ingest = Ingest(f"http://127.0.0.1:{port}", config, token_file, folder / "ingest.duckdb", folder / "server.log")
    ingest.start()
    try:
        spool = make_spool(tmp_path / "state")
        batch = make_batch(spool, rows=4)
        held = await syncer(spool, tmp_path, ingest, max_attempts=1).run_once()
        assert held.outcome == "failed" and held.rejected == 0 and held.failed == 1
        assert "unknown_schema" in held.reason
        assert [b.batch_id for b in spool.pending()] == [batch.batch_id] and spool.rejected() == []
        await asyncio.to_thread(cli, "schemas", "push", str(EXAMPLES_DIR / "image_classifier.toml"), "--config", str(config))
        landed = await syncer(spool, tmp_path, ingest).run_once()
        assert (landed.outcome, landed.uploaded) == ("ok", 1)
        assert ingest.query("SELECT count(*) FROM image_classifier")[0][0] == 4
    finally:
        ingest.stop()
