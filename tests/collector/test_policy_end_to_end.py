"""Steering from the server with real processes: a policy set on the server changes what a running agent keeps."""

from __future__ import annotations

import json
import random
import time
import uuid

from tests.collector.conftest import AgentProcess
from tests.ingest.conftest import cli as ingest_cli

BAND_POLICY = """
description = "only the decision boundary"
[strategies.boundary]
type = "confidence_band"
threshold = 0.5
epsilon = 0.1
"""


def predictions(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"kind": "prediction", "model": "vibration", "model_version": "2.0.0", "record_id": str(uuid.uuid4()),
         "inputs": {"temperature_c": 40.0, "rpm": 1500}, "outputs": {"predicted_class": "normal", "confidence": rng.random()}}
        for _ in range(n)
    ]


def log(agent: AgentProcess, records: list[dict]) -> None:
    status, body = agent.post_records(records)
    assert status == 200, body


def sync(agent: AgentProcess) -> dict:
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr + agent.log()
    return agent.status()


def test_policy_set_on_the_server_changes_what_a_running_agent_keeps_at_its_next_sync(agent_factory, ingest):
    """After `policy set`, the next sync applies it: later records are kept by it (sampled_by, version); it survives an offline restart."""
    agent = agent_factory(
        sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0},
    ).start()
    before = predictions(200, seed=1)
    log(agent, before)
    status = sync(agent)
    local_version = status["policies"]["models"]["vibration"]
    assert local_version.startswith("config:") and status["policies"]["last_fetch"]["outcome"] == "unchanged"

    policy_file = ingest.config.parent / "boundary.toml"
    policy_file.write_text(BAND_POLICY)
    stored = ingest_cli("policy", "set", "--model", "vibration", str(policy_file), "--config", str(ingest.config), "--url", ingest.url)
    assert "version 1 stored" in stored.stdout

    status = sync(agent)  # fetches the policy, then uploads (nothing new yet)
    assert status["policies"]["models"]["vibration"] == "server:1"
    assert status["policies"]["last_fetch"]["outcome"] == "updated"
    after = predictions(400, seed=2)
    log(agent, after)
    status = sync(agent)
    assert status["policies"]["last_fetch"]["outcome"] == "unchanged"  # a 304: same ETag

    agent.stop()
    ingest.stop()  # offline from here on
    restarted = agent.start()
    status = restarted.status()
    assert status["policies"]["models"]["vibration"] == "server:1"  # kept across the restart, server unreachable
    offline = predictions(300, seed=3)
    log(restarted, offline)
    restarted.flush()
    local = restarted.read_batches()["vibration"].to_pylist()
    in_band = [r for r in offline if 0.4 <= r["outputs"]["confidence"] <= 0.6]
    assert len(local) == len(in_band) and {r["policy_version"] for r in local} == {"server:1"}
    assert restarted.stop() == 0

    rows = ingest.query("SELECT CAST(record_id AS VARCHAR), policy_version, sampled_by, sample_weight, confidence FROM vibration")
    by_id = {row[0]: row[1:] for row in rows}
    assert all(by_id[r["record_id"]][:2] == (local_version, "keep_rate") for r in before)  # keep_rate 1: all of them
    kept = [r for r in after if r["record_id"] in by_id]
    expected = [r for r in after if 0.4 <= r["outputs"]["confidence"] <= 0.6]
    assert {r["record_id"] for r in kept} == {r["record_id"] for r in expected} and 40 < len(expected) < 120
    assert {by_id[r["record_id"]] [:3] for r in kept} == {("server:1", "boundary", 1.0)}
    mixed = ingest.query("SELECT batch_id FROM vibration GROUP BY batch_id HAVING count(DISTINCT policy_version) > 1")
    assert mixed == []  # a policy change seals the journal first
    fleet = ingest_cli("fleet", "--versions", "--format", "json", "--config", str(ingest.config)).stdout
    assert [json.loads(line)["policies"] for line in fleet.splitlines()] == [f"{local_version}, server:1"]
    history = ingest_cli("policy", "history", "--model", "vibration", "--config", str(ingest.config), "--format", "csv").stdout
    assert "set from" in history and "boundary" in history


def test_an_agent_takes_the_servers_policy_at_start_up(agent_factory, ingest):
    """An agent starting while the server answers runs the server's policy before its first sync; `status` says which."""
    policy_file = ingest.config.parent / "boundary.toml"
    policy_file.write_text(BAND_POLICY)
    ingest_cli("policy", "set", "--model", "vibration", str(policy_file), "--config", str(ingest.config), "--url", ingest.url)
    agent = agent_factory(
        sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "interval_s": 86400.0, "jitter_s": 0.0},
    ).start()
    deadline = time.monotonic() + 60
    while agent.status()["policies"]["models"]["vibration"] != "server:1":
        assert time.monotonic() < deadline, agent.log()
        time.sleep(0.1)
    assert agent.status()["sync"].get("last_sync_at") is None  # no sync ran: the start-up fetch did it
    shown = agent.cli("status")
    assert "policies   " in shown.stdout and "vibration server:1" in shown.stdout, shown.stdout
    assert agent.stop() == 0
