"""The Python SDK: cheap log calls, never raising into the app, bounded buffering, counted drops."""

from __future__ import annotations

import threading
import time

import pyarrow.parquet as pq

from bench.simulator import SimulatedModel
from edgeloop.collector import Client


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


def test_log_calls_from_many_threads_lose_no_count(tmp_path):
    """Many threads log at once and every record is accounted for (its cost per call is benchmark row 1's, not a test's)."""
    client = Client(tmp_path / "nobody.sock", max_buffer=1_000_000, flush_interval_s=60)
    inputs, outputs = {"rpm": 1500}, {"predicted_class": "ok", "confidence": 0.9}

    def work() -> None:
        for _ in range(20_000):
            client.log_prediction("vibration", "1", inputs, outputs)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close(timeout_s=0.1)
    assert sum(client.stats()["dropped"].values()) == 80_000  # buffered ones "closed", the one retried "agent_unavailable"


def test_importing_the_sdk_does_not_load_pyarrow():
    """An inference app that imports edgeloop.Client does not pay for pyarrow, pydantic or duckdb."""
    import subprocess
    import sys

    code = "import sys, edgeloop; edgeloop.Client; print(sorted(m for m in ('pyarrow', 'pydantic', 'duckdb') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_created_at_is_the_log_time_not_the_agent_intake_time(agent_factory):
    """A record logged while the agent is down carries the time it was logged, not the time the agent took it in."""
    agent = agent_factory()
    client = Client(agent.socket, flush_interval_s=0.02, retry_max_s=0.1)
    sim = SimulatedModel("vibration", seed=5)
    record = next(sim.predictions(1))
    before = time.time()
    record_id = client.log_prediction("vibration", "1.0", record["inputs"], record["outputs"])
    feedback_id = client.log_feedback(record_id, "vibration", "1.0", {"true_class": "normal"})
    after = time.time()
    _wait_for(lambda: client.stats()["buffered"] == 2)
    time.sleep(0.3)  # the agent comes up well after the log call
    agent.start()
    assert client.flush(timeout_s=20)
    client.close()
    agent.flush()
    table = agent.read_batches()["vibration"]
    stamped = {str(rid): ts.timestamp() for rid, ts in zip(table["record_id"].to_pylist(), table["created_at"].to_pylist(), strict=True)}
    assert set(stamped) == {record_id, feedback_id}
    for value in stamped.values():
        assert before - 0.001 <= value <= after + 0.001, (before, value, after)


def test_stats_count_records_waiting_for_an_agent_that_is_down(agent_factory):
    """stats()['buffered'] and .buffered count records the sender holds while it retries a down agent."""
    agent = agent_factory()
    client = Client(agent.socket, batch_size=20, flush_interval_s=0.01, retry_max_s=0.05)
    _log(client, SimulatedModel("vibration", seed=6).predictions(50))
    time.sleep(0.3)  # the sender has taken a batch out of the buffer and is retrying it
    assert client.stats()["buffered"] == 50
    assert client.buffered == 50
    agent.start()
    assert client.flush(timeout_s=20)
    stats = client.stats()
    assert stats["buffered"] == 0 and stats["sent"] == 50 and client.buffered == 0
    client.close()


def test_client_keeps_working_in_a_forked_child(agent):
    """After os.fork() the child's client logs and flushes into the agent, and neither process sends the other's records."""
    import os
    import warnings

    client = Client(agent.socket, flush_interval_s=0.02)
    sim = SimulatedModel("vibration", seed=7)
    records = list(sim.predictions(30))
    parent_ids = [client.log_prediction("vibration", "1.0", r["inputs"], r["outputs"]) for r in records[:10]]
    assert client.flush(timeout_s=20)
    parent_ids += [client.log_prediction("vibration", "1.0", r["inputs"], r["outputs"]) for r in records[10:20]]
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12 warns about fork with threads: the case at hand
        pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(read_end)
            child_ids = [client.log_prediction("vibration", "1.0", r["inputs"], r["outputs"]) for r in records[20:]]
            ok = client.flush(timeout_s=20)
            stats = client.stats()
            os.write(write_end, (",".join(child_ids) + "|" + str(ok) + "|" + str(stats["sent"])).encode())
            client.close()
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_text, ok, sent = report.split("|")
    assert ok == "True" and sent == "10", report
    child_ids = child_text.split(",")
    assert client.flush(timeout_s=20)
    client.close()
    agent.flush()
    stored = [str(v) for v in agent.read_batches()["vibration"]["record_id"].to_pylist()]
    assert sorted(stored) == sorted(parent_ids + child_ids)


def _requests_answered(agent, status: str) -> float:
    """How many POST /v1/records the agent answered with ``status``, from /metrics."""
    prefix = 'edgeloop_request_seconds_count{route="/v1/records",status="' + status + '"}'
    return sum(float(line.split()[-1]) for line in agent.metrics().splitlines() if line.startswith(prefix))


def test_sdk_learns_the_agents_body_bound_from_its_first_413(agent_factory):
    """Against an agent whose memory budget admits smaller bodies than the SDK's batches, the first 413 teaches the SDK the bound: later batches fit, nothing is dropped."""
    agent = agent_factory(agent={"memory_budget_mb": 8}, intake={"max_body_bytes": 100_000}).start()
    client = Client(agent.socket, batch_size=1_000)
    records = list(SimulatedModel("vibration", seed=12).records(5_000, feedback_ratio=0))
    for start in range(0, len(records), 1_000):  # five full batches, each well over 100 KB
        _log(client, records[start : start + 1_000])
        assert client.flush(timeout_s=60)
    stats = client.stats()
    client.close()
    assert stats["sent"] == 5_000 and stats["dropped"] == {}, stats
    assert 1 <= _requests_answered(agent, "413") <= 2  # the SDK keeps two requests in flight; both may be sent before the first 413 returns
    assert _requests_answered(agent, "200") >= 5_000 * 540 // 100_000


def test_records_dropped_at_close_for_an_agent_never_reached_are_said_on_stderr(tmp_path):
    """An app with no logging set up that logs to a socket nobody answers on (a wrong path, no permission) is told
    on stderr at close how many records were dropped and which socket never answered."""
    import subprocess
    import sys

    socket_path = tmp_path / "wrong" / "agent.sock"
    app = (
        "from edgeloop import Client\n"
        f"client = Client({str(socket_path)!r}, retry_max_s=0.05)\n"
        "client.log_prediction('vibration', '2.1.0', inputs={}, outputs={'predicted_class': 'x', 'confidence': 0.5})\n"
        "client.close(timeout_s=0.5)\n"
        "print(client.stats()['dropped'])\n"
    )
    result = subprocess.run([sys.executable, "-c", app], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'agent_unavailable': 1}"
    assert f"1 records dropped at close: the agent at {socket_path} never answered" in result.stderr, result.stderr
    assert "No such file or directory" in result.stderr and "Traceback" not in result.stderr
