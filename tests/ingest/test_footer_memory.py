"""Footers carrying megabytes of key-value metadata: refused over ``limits.max_footer_metadata_bytes``, and never held after an upload.

pyarrow's ``FileMetaData.schema`` and the ``ParquetSchema`` it returns hold each other: a
footer read that way is freed only when Python's cycle collector reaches its oldest
generation, which an upload loop allocates too few objects to trigger. The server's RSS then
grew by about two footers per upload (5.5 MB per upload with 3 MiB of metadata).
"""

from __future__ import annotations

import gc
import io
import json
import uuid
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from edgeloop.errors import BatchRejected
from edgeloop.ingest.batch import read_batch
from edgeloop.ingest.config import LimitSettings
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from edgeloop.schemas.envelope import BATCH_METADATA_KEYS
from tests.ingest.conftest import cli, free_port, make_table, put_batch, seal, spawn_server, stop_server, write_config

VIBRATION = SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]
WARM_UPLOADS = 10
MEASURED_UPLOADS = 50
GROWTH_BOUND_MB = 40  # before the fix: about 280 MB over these 50 uploads


def with_metadata(metadata_bytes: int, *, fingerprint: str = VIBRATION.fingerprint, rows: int = 5) -> tuple[str, bytes]:
    """A valid vibration batch whose footer also carries ``metadata_bytes`` of an extra key."""
    table, _ = make_table(VIBRATION, predictions=rows)
    batch_id = str(uuid.uuid4())
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema.remove_metadata(), compression="zstd") as out:
        out.write_table(table)
        out.add_key_value_metadata({
            BATCH_METADATA_KEYS["batch_id"]: batch_id.encode(),
            BATCH_METADATA_KEYS["model"]: b"vibration",
            BATCH_METADATA_KEYS["schema_fingerprint"]: fingerprint.encode(),
            b"padding": batch_id.encode() + b"x" * metadata_bytes,  # distinct per batch: nothing to share
        })
    return batch_id, sink.getvalue()


def _outcome(body: bytes, batch_id: str, limits: LimitSettings) -> str:
    """What read_batch made of a body, as a word (no exception object outlives this frame)."""
    try:
        read_batch(body, batch_id=batch_id, limits=limits, schema_for={VIBRATION.fingerprint: VIBRATION}.get)
    except BatchRejected as exc:
        return exc.code
    return "ok"


def test_reading_a_batch_leaves_no_reference_cycles(tmp_path: Path):
    """Reading a batch, accepted or refused at any check, leaves nothing for the cycle collector: its footer is freed at once."""
    limits = LimitSettings(max_footer_metadata_bytes=4 << 20)
    good_id, good = seal(tmp_path, VIBRATION, make_table(VIBRATION, predictions=50)[0])
    padded_id, padded = with_metadata(1 << 20)
    unknown_id, unknown = with_metadata(1 << 20, fingerprint="0" * 16)
    cut = good[:-8] + (len(good)).to_bytes(4, "little") + b"PAR1"
    cases = [(good, good_id, "ok"), (padded, padded_id, "ok"), (unknown, unknown_id, "unknown_schema"),
             (good, str(uuid.uuid4()), "batch_id_mismatch"), (cut, good_id, "corrupt_parquet")]
    gc.collect()
    gc.disable()
    try:
        outcomes = [_outcome(body, batch_id, limits) for body, batch_id, _ in cases]
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert outcomes == [expected for _, _, expected in cases]
    assert unreachable == 0, "reading batches left reference cycles: their footers wait for the cycle collector"


def test_footer_metadata_over_the_limit_is_413_before_the_rows_are_read():
    """Key-value metadata over ``limits.max_footer_metadata_bytes`` is 413 ``metadata_too_large``; a sealed batch's few KiB pass."""
    limits = LimitSettings()
    batch_id, body = with_metadata(limits.max_footer_metadata_bytes)
    with pytest.raises(BatchRejected) as refused:
        read_batch(body, batch_id=batch_id, limits=limits, schema_for={VIBRATION.fingerprint: VIBRATION}.get)
    assert (refused.value.status, refused.value.code) == (413, "metadata_too_large")
    assert refused.value.details["limit"] == limits.max_footer_metadata_bytes
    batch_id, body = with_metadata(4096)
    assert read_batch(body, batch_id=batch_id, limits=limits, schema_for={VIBRATION.fingerprint: VIBRATION}.get).rows == 5


@pytest.mark.timeout(300)
def test_uploads_with_megabytes_of_footer_metadata_do_not_grow_the_server(tmp_path: Path):
    """A real server taking 60 uploads whose footers carry 3 MiB of metadata (the limit raised to allow them) grows by under 40 MB after the first 10."""
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + "\n[limits]\nmax_footer_metadata_bytes = 4194304\n")
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip().splitlines()[-1]
    server = spawn_server(config, tmp_path / "server.log")
    process = psutil.Process(server.pid)
    statuses: list[int | None] = []
    try:
        for index in range(WARM_UPLOADS + MEASURED_UPLOADS):
            if index == WARM_UPLOADS:
                before_mb = process.memory_info().rss / 2**20
            statuses.append(put_batch(port, *with_metadata(3 << 20), token))
        after_mb = process.memory_info().rss / 2**20
    finally:
        stop_server(server)
    print("footer-metadata RSS figures:", json.dumps({"after_10_mb": round(before_mb), "after_60_mb": round(after_mb)}))
    assert statuses == [201] * (WARM_UPLOADS + MEASURED_UPLOADS)
    assert after_mb - before_mb < GROWTH_BOUND_MB, (before_mb, after_mb)
