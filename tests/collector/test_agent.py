"""The agent as a process: crash safety under SIGKILL, recovery, clean shutdown, a truthful status."""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections import Counter

import pyarrow.parquet as pq
import uuid_utils

from bench.simulator import SimulatedModel
from edgeloop.collector.journal import FRAME_HEADER
from edgeloop.errors import AgentUnavailableError


def _ids(table) -> list[str]:
    return [str(value) for value in table.column("record_id").to_pylist()]


def _all_record_ids(agent) -> list[str]:
    ids: list[str] = []
    for path in agent.batch_files():
        ids.extend(_ids(pq.read_table(path)))  # reads every byte: a half-written file fails here
    return ids


def test_acknowledged_records_survive_repeated_sigkill_under_load(agent_factory):
    """After many SIGKILLs at random points under concurrent load, every acknowledged record is in exactly one sealed batch."""
    agent = agent_factory(spool={"seal_max_rows": 700, "seal_max_age_s": 0.5}).start()
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    sent_ok = Counter()

    def sender(seed: int) -> None:
        models = [SimulatedModel("vibration", seed=seed), SimulatedModel("image_classifier", seed=seed + 100)]
        rng = random.Random(seed)
        while not stop.is_set():
            model = rng.choice(models)
            records = list(model.predictions(rng.randint(20, 250)))
            try:
                status, body = agent.post_records(records, timeout_s=10.0)
            except AgentUnavailableError:
                time.sleep(0.01)
                continue
            if status == 200:
                accepted = [r["record_id"] for r in body["results"] if r["status"] == "accepted"]
                assert len(accepted) == len(records), body
                with lock:
                    acked.update(accepted)
                sent_ok[seed] += 1

    threads = [threading.Thread(target=sender, args=(seed,), daemon=True) for seed in range(4)]
    for thread in threads:
        thread.start()
    rng = random.Random(7)
    cycles = 12
    try:
        for _ in range(cycles):
            time.sleep(rng.uniform(0.15, 0.9))
            agent.kill()
            agent.start()
        time.sleep(0.5)
    finally:
        stop.set()  # a failed restart must not leave the senders spinning for the rest of the run
        for thread in threads:
            thread.join(30)
    assert agent.stop() == 0, agent.log()
    agent.start()  # one more recovery pass must find nothing left to do
    assert agent.stop() == 0

    ids = _all_record_ids(agent)
    counts = Counter(ids)
    assert len(acked) > 2000, "too little load to mean anything"
    assert all(sent_ok.values()) and len(sent_ok) == 4
    missing = acked - counts.keys()
    assert not missing, f"{len(missing)} acknowledged records lost"
    duplicated = [rid for rid, n in counts.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} records in more than one batch"
    state = agent.state_dir
    assert not list((state / "journal").rglob("*.wal"))
    assert not [p for p in (state / "batches").iterdir() if p.name.startswith(".")]
    assert not list((state / "quarantine").iterdir())


def test_sigterm_seals_open_segments_and_exits_zero(agent_factory):
    """SIGTERM seals the open journal segments into batches and the agent exits 0."""
    agent = agent_factory(spool={"seal_max_age_s": 3600}).start()
    records = list(SimulatedModel("vibration", seed=3).predictions(300))
    status, body = agent.post_records(records)
    assert status == 200 and body["accepted"] == 300
    assert agent.batch_files() == []
    started = time.monotonic()
    assert agent.stop() == 0, agent.log()
    assert time.monotonic() - started < agent.config["agent"]["shutdown_timeout_s"]
    assert sorted(_all_record_ids(agent)) == sorted(r["record_id"] for r in records)
    assert not list((agent.state_dir / "journal").rglob("*.wal"))
    assert not agent.socket.exists()


def _kill_with_open_segment(agent_factory, records):
    agent = agent_factory(spool={"seal_max_age_s": 3600}).start()
    status, _ = agent.post_records(records[:100])
    assert status == 200
    status, _ = agent.post_records(records[100:])
    assert status == 200
    agent.kill()
    (segment,) = (agent.state_dir / "journal").rglob("*.wal")
    return agent, segment


def test_torn_journal_tail_is_cut_off_and_counted(agent_factory):
    """A half-written frame at the end of a segment is cut off on restart, counted as journal_torn, and the rest sealed."""
    records = list(SimulatedModel("vibration", seed=4).predictions(150))
    agent, segment = _kill_with_open_segment(agent_factory, records)
    with open(segment, "ab") as handle:
        handle.write(FRAME_HEADER.pack(5000, 1234) + b"\x00" * 100)  # a frame that never finished
    agent.start()
    status = agent.status()
    assert status["agent"]["recovery"]["torn_bytes"] == FRAME_HEADER.size + 100
    assert status["drops"]["total"]["journal_torn"] == 1
    assert sorted(_all_record_ids(agent)) == sorted(r["record_id"] for r in records)


def test_crc_bad_frame_is_cut_off_not_a_crash_loop(agent_factory):
    """A frame whose checksum does not match ends the valid prefix; the frames before it are sealed."""
    records = list(SimulatedModel("vibration", seed=5).predictions(150))
    agent, segment = _kill_with_open_segment(agent_factory, records)
    data = bytearray(segment.read_bytes())
    first_length, _ = FRAME_HEADER.unpack_from(data, 0)
    second = FRAME_HEADER.size + first_length
    data[second + FRAME_HEADER.size + 40] ^= 0xFF  # flip a byte in the second frame's payload
    segment.write_bytes(bytes(data))
    agent.start()
    status = agent.status()
    assert status["drops"]["total"]["journal_torn"] == 1
    assert sorted(_all_record_ids(agent)) == sorted(r["record_id"] for r in records[:100])
    assert agent.stop() == 0


def test_unreadable_segment_and_batch_are_quarantined(agent_factory):
    """A journal segment and a batch file that cannot be read go to quarantine/ and the agent starts anyway."""
    agent = agent_factory()
    batches = agent.state_dir / "batches"
    batches.mkdir(parents=True)
    bad_batch = batches / f"{uuid_utils.uuid7()}.parquet"
    bad_batch.write_bytes(b"PAR1 this is not parquet at all PAR1")
    journal = agent.state_dir / "journal" / "vibration"
    journal.mkdir(parents=True)
    bad_segment = journal / f"{uuid_utils.uuid7()}.wal"
    payload = b"not an arrow stream"
    bad_segment.write_bytes(FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
    agent.start()
    quarantined = sorted(p.name for p in (agent.state_dir / "quarantine").iterdir())
    assert quarantined == sorted([bad_batch.name, bad_segment.name])
    status = agent.status()
    assert status["spool"]["quarantined"] == 2
    assert status["drops"]["total"]["quarantined_file"] == 2
    assert agent.post_records(list(SimulatedModel("vibration", seed=1).predictions(5)))[0] == 200


def test_status_tells_the_truth_about_disk(agent_factory):
    """GET /v1/status reports the batches, records, bytes and journal size that are on disk."""
    agent = agent_factory(spool={"seal_max_age_s": 3600}).start()
    sim = SimulatedModel("image_classifier", seed=9)
    for _ in range(3):
        assert agent.post_records(list(sim.predictions(120)))[0] == 200
        agent.flush()
    assert agent.post_records(list(sim.predictions(40)))[0] == 200  # stays in the journal
    status = agent.status()
    files = agent.batch_files()
    assert status["spool"]["batches"] == len(files) == 3
    assert status["spool"]["records"] == sum(pq.read_metadata(p).num_rows for p in files) == 360
    assert status["spool"]["bytes"] == sum(p.stat().st_size for p in files)
    wal = list((agent.state_dir / "journal").rglob("*.wal"))
    assert status["journal"]["records"] == 40
    assert status["journal"]["bytes"] == status["journal"]["bytes_on_disk"] == sum(p.stat().st_size for p in wal)
    assert status["spool"]["models"] == {
        "image_classifier": {"batches": 3, "records": 360, "bytes": status["spool"]["bytes"]}
    }
    assert 0 <= status["spool"]["oldest_record_age_s"] < 60



def test_journal_is_sealed_with_the_schema_it_was_written_under(agent_factory, tmp_path):
    """Records journaled before a SIGKILL and a schema edit (a field added) are all sealed, under the schema they were written with."""
    import shutil

    import pyarrow.parquet as pq

    from edgeloop.schemas import EXAMPLES_DIR
    from edgeloop.schemas.registry import SchemaRegistry

    schemas = tmp_path / "schemas"
    shutil.copytree(EXAMPLES_DIR, schemas)
    old = SchemaRegistry.from_dir(schemas)["vibration"]
    agent = agent_factory(agent={"schemas_dir": str(schemas)}, spool={"seal_max_age_s": 3600}).start()
    records = list(SimulatedModel("vibration", seed=11).predictions(6))
    status, body = agent.post_records(records)
    assert status == 200 and body["accepted"] == 6
    agent.kill()
    assert list((agent.state_dir / "journal").rglob("*.wal"))
    schema_file = schemas / "vibration.toml"
    schema_file.write_text(schema_file.read_text() + '\n[inputs.humidity_pct]\ntype = "float32"\nprivacy = "keep"\n')
    new = SchemaRegistry.from_dir(schemas)["vibration"]
    assert new.fingerprint != old.fingerprint

    agent.start()
    status = agent.status()
    assert status["agent"]["recovery"]["quarantined"] == 0, status
    assert not list((agent.state_dir / "quarantine").iterdir())
    (batch,) = agent.batch_files()
    meta = pq.read_metadata(batch).metadata
    assert meta[b"edgeloop.schema_fingerprint"].decode() == old.fingerprint
    assert sorted(_ids(pq.read_table(batch))) == sorted(r["record_id"] for r in records)

    later = list(SimulatedModel("vibration", seed=12).predictions(3))
    for record in later:
        record["inputs"]["humidity_pct"] = 40.5
    assert agent.post_records(later)[0] == 200
    agent.flush()
    newest = max(agent.batch_files(), key=lambda path: path.name)
    assert pq.read_metadata(newest).metadata[b"edgeloop.schema_fingerprint"].decode() == new.fingerprint
    assert pq.read_table(newest)["humidity_pct"].to_pylist() == [40.5] * 3
    assert agent.stop() == 0


def test_a_record_id_is_kept_once_within_a_request_and_across_a_sigkill(agent_factory):
    """A record resent after a SIGKILL, or twice in one request, is answered accepted (flagged duplicate) and stored once."""
    agent = agent_factory(spool={"seal_max_age_s": 3600}).start()
    records = list(SimulatedModel("vibration", seed=21).predictions(40))
    status, body = agent.post_records(records[:30] + records[:5])  # five ids twice in one request
    assert status == 200, body
    assert body["accepted"] == 35 and body["duplicates"] == 5, body
    assert [r["status"] for r in body["results"]] == ["accepted"] * 35
    assert [r.get("duplicate", False) for r in body["results"]] == [False] * 30 + [True] * 5
    agent.kill()  # after the fsync, before the app saw an answer: it resends the request
    agent.start()
    status, body = agent.post_records(records)  # the same 30 again, plus 10 new
    assert status == 200, body
    assert body["accepted"] == 40 and body["duplicates"] == 30, body
    assert {r["record_id"] for r in body["results"] if r.get("duplicate")} == {r["record_id"] for r in records[:30]}
    feedback = {
        "kind": "feedback",
        "model": "vibration",
        "model_version": "1.0",
        "record_id": records[0]["record_id"],  # same id as a prediction: another table, not a duplicate
        "prediction_id": records[0]["record_id"],
        "feedback": {"true_class": "normal"},
    }
    status, body = agent.post_records([feedback])
    assert status == 200 and body["duplicates"] == 0, body
    assert agent.stop() == 0
    ids = _all_record_ids(agent)
    assert len(ids) == 41
    assert Counter(ids)[records[0]["record_id"]] == 2  # one prediction, one feedback
    assert sorted(set(ids)) == sorted(r["record_id"] for r in records)


def test_sdk_resends_after_sigkills_land_each_record_id_once(agent_factory):
    """The SDK logs 8,000 records through four SIGKILLs of the agent; each record id is in the spool exactly once."""
    from edgeloop.collector import Client

    agent = agent_factory(spool={"seal_max_rows": 1000, "seal_max_age_s": 0.5}).start()
    client = Client(agent.socket, batch_size=250, flush_interval_s=0.005, retry_max_s=0.2)
    sim = SimulatedModel("vibration", seed=22)
    ids: list[str] = []
    done = threading.Event()

    def log() -> None:
        for record in sim.predictions(8000):
            ids.append(client.log_prediction("vibration", "1.0", record["inputs"], record["outputs"]))
            if len(ids) % 50 == 0:
                time.sleep(0.002)
        done.set()

    thread = threading.Thread(target=log, daemon=True)
    thread.start()
    rng = random.Random(23)
    for _ in range(4):
        time.sleep(rng.uniform(0.2, 0.6))
        agent.kill()
        agent.start()
    assert done.wait(60)
    assert client.flush(timeout_s=60)
    stats = client.stats()
    client.close()
    assert stats["dropped"] == {} and stats["sent"] == 8000, stats
    assert agent.stop() == 0, agent.log()
    counts = Counter(_all_record_ids(agent))
    assert set(counts) == set(ids)
    duplicated = [rid for rid, n in counts.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} of {len(ids)} record ids landed twice"
