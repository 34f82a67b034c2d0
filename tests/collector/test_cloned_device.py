"""A device re-imaged from a golden SD-card image: two agents with one state dir's copy and one token, against a real server."""

from __future__ import annotations

import shutil
import time

import orjson
import pytest

from bench.simulator import SimulatedModel
from tests.ingest.conftest import cli as ingest_cli

pytestmark = pytest.mark.timeout(240)


def sync(agent) -> dict:
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode in (0, 1), result.stderr + result.stdout
    return orjson.loads(result.stdout)


def test_two_agents_from_one_image_land_each_record_once_and_the_operator_is_told(agent_factory, ingest):
    """The journal both copies recover lands once (the second copy is a 409 conflict), and `devices show` and the log say two agents share the token."""
    settings = {"sync": {"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0}}
    golden = agent_factory("golden", **settings).start()
    model = SimulatedModel("vibration", seed=9)
    status, body = golden.post_records(list(model.predictions(20)))
    assert status == 200 and body["accepted"] == 20, body
    golden.kill()  # the image is taken with records still in the journal, unsealed

    clone = agent_factory("clone", **settings)
    shutil.rmtree(clone.state_dir, ignore_errors=True)
    shutil.copytree(golden.state_dir, clone.state_dir)
    golden.start()
    clone.start()
    outcomes = []
    for _ in range(2):
        for agent in (golden, clone):
            status, body = agent.post_records(list(model.predictions(1)))
            assert status == 200 and body["accepted"] == 1, body
            result = sync(agent)
            outcomes.append((result["outcome"], result["uploaded"], result["rejected"]))
            time.sleep(1.1)  # fleet.min_status_interval_s: each sync's status is stored
    assert golden.stop() == 0 and clone.stop() == 0
    # Both copies sealed the journal's segment under its id: the clone's re-sealed copy (its rows landed, its
    # footer's sealed_at differs) is 409 conflict and kept in rejected/; every other batch lands.
    assert outcomes == [("ok", 2, 0), ("partial", 1, 1), ("ok", 1, 0), ("ok", 1, 0)]
    [error] = [orjson.loads(path.read_bytes()) for path in (clone.state_dir / "rejected").glob("*.error.json")]
    assert error["status"] == 409 and error["error"]["error"]["code"] == "conflict"

    assert ingest.query("SELECT count(*), count(DISTINCT record_id) FROM vibration") == [(24, 24)]
    assert ingest.query("SELECT sum(rows), sum(duplicates) FROM batches") == [(24, 0)]
    shown = ingest_cli("devices", "show", "kiosk-7", "--format", "json", "--config", str(ingest.config))
    assert orjson.loads(shown.stdout)["shared_token"] is True
    table = ingest_cli("devices", "show", "kiosk-7", "--config", str(ingest.config)).stdout
    assert "shared token" in table and "own name and token" in table
    assert "two agents send with one device's token" in ingest.log.read_text()


def test_one_agent_restarted_is_not_a_shared_token(agent_factory, ingest):
    """An agent's runs one after another (restarts) never read as two agents sharing a token."""
    agent = agent_factory(sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0})
    for _ in range(3):
        agent.start()
        sync(agent)
        assert agent.stop() == 0
        time.sleep(1.1)
    shown = ingest_cli("devices", "show", "kiosk-7", "--format", "json", "--config", str(ingest.config))
    detail = orjson.loads(shown.stdout)
    assert detail["shared_token"] is False and len(detail["recent_statuses"]) == 3
    assert "two agents send" not in ingest.log.read_text()
