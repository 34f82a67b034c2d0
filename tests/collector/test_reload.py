"""SIGHUP reloads sampling rules and schemas in a running agent without a restart."""

from __future__ import annotations

import shutil
import signal
import time

import pyarrow.parquet as pq

from bench.simulator import SimulatedModel
from edgeloop.schemas.registry import EXAMPLES_DIR

NEW_MODEL = """
name = "door_sensor"
version = 1

[inputs.opened]
type = "bool"
required = true

[outputs.alarm]
type = "bool"
required = true
"""


def reload_and_wait(agent, reloads: int, timeout_s: float = 30.0) -> dict:
    """Send SIGHUP and wait until the agent's status counts ``reloads`` reloads."""
    agent.write_config()
    agent.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = agent.status()
        if status["agent"].get("reloads", 0) >= reloads:
            return status
        time.sleep(0.05)
    raise AssertionError(f"no reload within {timeout_s}s:\n{agent.log()}")


def door(opened: bool) -> dict:
    return {"kind": "prediction", "model": "door_sensor", "model_version": "1",
            "inputs": {"opened": opened}, "outputs": {"alarm": opened}}


def test_sighup_applies_new_sampling_and_schemas_to_a_running_agent(agent_factory, tmp_path):
    """After SIGHUP the same agent process samples by the new rule, knows a new model, and seals old records under the old schema."""
    schemas = tmp_path / "schemas"
    shutil.copytree(EXAMPLES_DIR, schemas)
    agent = agent_factory(agent={"schemas_dir": str(schemas)}, spool={"seal_max_age_s": 3600})
    agent.start()
    pid = agent.proc.pid
    sim = SimulatedModel("vibration", seed=4)
    status, answer = agent.post_records(list(sim.predictions(200)))
    assert status == 200 and answer["accepted"] == 200
    assert agent.post_records([door(True)])[0] == 422  # no such model yet

    agent.config["sampling"]["models"] = {"vibration": {"keep_rate": 0.05}}
    (schemas / "door_sensor.toml").write_text(NEW_MODEL)
    vibration = schemas / "vibration.toml"
    vibration.write_text(vibration.read_text() + '\n[inputs.site]\ntype = "string"\nprivacy = "keep"\n')
    reload_and_wait(agent, 1)

    status, answer = agent.post_records(list(sim.predictions(400)))
    assert status == 200 and answer["sampled_out"] > 300, answer
    assert agent.post_records([door(True), door(False)])[1]["accepted"] == 2
    record = next(iter(sim.predictions(1)))
    record["inputs"]["site"] = "hall 3"
    assert agent.post_records([record])[1]["results"][0]["status"] in ("accepted", "sampled_out")
    assert agent.proc.pid == pid and agent.proc.poll() is None

    agent.flush()
    sealed: dict[str, set[str]] = {}
    for path in agent.batch_files():
        metadata = pq.read_metadata(path).metadata
        sealed.setdefault(metadata[b"edgeloop.model"].decode(), set()).add(metadata[b"edgeloop.schema_fingerprint"].decode())
    assert len(sealed["vibration"]) == 2 and len(sealed["door_sensor"]) == 1  # old records under the old schema
    verify = agent.cli("spool", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr  # each batch matches the schema it was sealed with


def test_a_bad_config_on_sighup_is_refused_and_the_agent_runs_on(agent_factory, tmp_path):
    """A reloaded config that names a sampling model with no schema is refused whole; the old rules stay."""
    agent = agent_factory().start()
    agent.config["sampling"]["models"] = {"vibratoin": {"keep_rate": 0.01}}
    agent.write_config()
    agent.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "reload refused" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "sampling.models.vibratoin" in agent.log()
    status, answer = agent.post_records(list(SimulatedModel("vibration", seed=1).predictions(50)))
    assert status == 200 and answer["accepted"] == 50
    assert agent.status()["agent"].get("reloads", 0) == 0
