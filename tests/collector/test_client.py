"""The Python SDK: cheap log calls, never raising into the app, bounded buffering, counted drops."""

from __future__ import annotations

import threading
import time

import pyarrow.parquet as pq

from edgeloop.collector import Client
from bench.simulator import SimulatedModel


def _log(client: Client, records) -> list[str]:
    ids = []
    for r in records:
        if r["kind"] == "prediction":
            ids.append(client.log_prediction(r["model"], r["model_version"], r["inputs"], r["outputs"]))
        else:
            ids.append(client.log_feedback(r["prediction_id"], r["model"], r["model_version"], r["feedback"], source="qa"))
    return ids


def test_sdk_never_raises_with_the_agent_down_and_counts_drops(tmp_path):
    """With nothing listening, log calls return ids at once, the buffer stays bounded and every record is counted."""
    client = Client(tmp_path / "nobody.sock", max_buffer=100, batch_size=10, flush_interval_s=0.01, retry_max_s=0.05)
    records = list(SimulatedModel("vibration", seed=1).records(300, feedback_ratio=0.1))
    started = time.perf_counter()
    ids = _log(client, records)
    assert time.perf_counter() - started < 1.0
    assert len(set(ids)) == 300
    assert client.flush(timeout_s=0.2) is False
    assert client.stats()["dropped"]["buffer_full"] >= 180
    started = time.perf_counter()
    client.close(timeout_s=0.5)
    assert time.perf_counter() - started < 2.0
    stats = client.stats()
    assert stats["sent"] == 0 and stats["buffered"] == 0
    assert sum(stats["dropped"].values()) == 300, stats
    client.log_prediction("vibration", "1", {}, {})  # after close: counted, not raised
    assert client.stats()["dropped"]["closed"] >= 1


def test_sdk_delivers_records_into_sealed_batches(agent):
    """Everything logged through the SDK is in the spool after flush, under the ids log_prediction returned."""
    client = Client(agent.socket, batch_size=200)
    records = list(SimulatedModel("vibration", seed=2).records(1000, feedback_ratio=0.1))
    ids = _log(client, records)
    assert client.flush(timeout_s=30)
    stats = client.stats()
    assert stats["sent"] == 1000 and stats["invalid"] == 0 and stats["dropped"] == {}
    client.close()
    agent.flush()
    stored = []
    for path in agent.batch_files():
        stored.extend(str(v) for v in pq.read_table(path, columns=["record_id"]).column("record_id").to_pylist())
    assert sorted(stored) == sorted(ids)


def test_sdk_counts_invalid_records_and_keeps_the_rest(agent):
    """Records the agent refuses are counted as invalid with their errors; the valid ones are sent."""
    with Client(agent.socket) as client:
        good = next(SimulatedModel("vibration", seed=3).predictions(1))
        client.log_prediction("vibration", "1.0", good["inputs"], good["outputs"])
        client.log_prediction("vibration", "1.0", {"rpm": "fast"}, good["outputs"])
        client.log_prediction("no_such_model", "1.0", {}, {})
        assert client.flush(timeout_s=10)
        stats = client.stats()
    assert stats["sent"] == 1 and stats["invalid"] == 2
    assert {error["error"]["field"] for error in stats["recent_errors"]} == {"inputs.rpm", "model"}


def test_sdk_retries_until_the_agent_comes_up(agent_factory):
    """Records logged while the agent is down are delivered once it starts, within the buffer bound."""
    agent = agent_factory()
    client = Client(agent.socket, flush_interval_s=0.02, retry_max_s=0.2)
    ids = _log(client, SimulatedModel("image_classifier", seed=4).predictions(50))
    time.sleep(0.3)
    agent.start()
    assert client.flush(timeout_s=20)
    assert client.stats()["sent"] == 50
    client.close()
    agent.flush()
    assert sum(pq.read_metadata(p).num_rows for p in agent.batch_files()) == len(ids)


def test_log_call_is_cheap_and_thread_safe(tmp_path):
    """Many threads log at once without losing count, at a few microseconds per call."""
    client = Client(tmp_path / "nobody.sock", max_buffer=1_000_000, flush_interval_s=60)
    inputs, outputs = {"rpm": 1500}, {"predicted_class": "ok", "confidence": 0.9}

    def work() -> None:
        for _ in range(20_000):
            client.log_prediction("vibration", "1", inputs, outputs)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    per_call_us = (time.perf_counter() - started) / 80_000 * 1e6
    assert per_call_us < 20, per_call_us  # ~1 µs alone; generous for a busy CI box
    client.close(timeout_s=0.1)
    assert sum(client.stats()["dropped"].values()) == 80_000  # buffered ones "closed", the one retried "agent_unavailable"


def test_importing_the_sdk_does_not_load_pyarrow():
    """An inference app that imports collector.Client does not pay for pyarrow, pydantic or duckdb."""
    import subprocess
    import sys

    code = "import sys, collector; collector.Client; print(sorted(m for m in ('pyarrow', 'pydantic', 'duckdb') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
