"""Sync's memory survives a restart: the backoff during an outage, the last results, what the status report knows."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from bench.simulator import SimulatedModel
from edgeloop.collector.config import SamplingSettings
from edgeloop.collector.journal import Journal
from edgeloop.collector.reporter import StatusReporter
from edgeloop.collector.sync import Syncer
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.collector.sync_peer import IngestPeer, make_batch, spool, sync_settings  # noqa: F401 (fixtures)
from tests.ingest.conftest import free_port


def _records(seed: int, rows: int = 10) -> list[dict]:
    return list(SimulatedModel("vibration", seed=seed).predictions(rows))


def _seconds_until(stamp: str) -> float:
    return (datetime.fromisoformat(stamp) - datetime.now(UTC)).total_seconds()


@pytest.fixture
def ingest_down(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The URL of an ingest that is not running (connections refused), and a device token for it."""
    token = tmp_path / "device.token"
    token.write_text("device-token")
    token.chmod(0o600)
    yield f"http://127.0.0.1:{free_port()}", token


def _outage_agent(agent_factory, url: str, token: Path, **sync):
    """An agent whose every seal is past high water, so each seal starts a sync that fails and backs off."""
    return agent_factory(
        spool={"seal_max_rows": 5},
        sync={"enabled": True, "url": url, "token_file": str(token), "interval_s": 7200, "jitter_s": 0, "max_attempts": 1,
              "retry_initial_s": 600, "retry_max_s": 3600, "high_water_bytes": 1, "request_timeout_s": 5, **sync},
    )


def _backing_off(agent) -> dict:
    for _ in range(200):
        sync = agent.status()["sync"]
        if sync["retries_in_a_row"] and sync["retry_at"] and not sync["running"]:
            return sync
        time.sleep(0.05)
    raise AssertionError(f"no retry scheduled: {agent.status()['sync']}")


def _listen(url: str) -> socket.socket:
    """Ingest's port taken by a listener that answers nothing: any connection the agent makes waits in its backlog."""
    listener = socket.create_server(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    listener.setblocking(False)
    return listener


def _connected(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def test_an_agent_restarted_during_an_outage_keeps_its_backoff(agent_factory, ingest_down):
    """An agent SIGKILLed and restarted while ingest is down shows the same failures in a row, retry time, next sync and last error, and contacts ingest neither at start nor on the next seal."""
    url, token = ingest_down
    agent = _outage_agent(agent_factory, url, token).start()
    assert agent.post_records(_records(1))[0] == 200  # sealed past high water: a sync, refused, backs off
    before = _backing_off(agent)
    assert before["retries_in_a_row"] == 1 and "ingest unreachable" in before["last_result"]["reason"], before
    assert 300 - 5 <= _seconds_until(before["retry_at"]) <= 600
    agent.kill()  # a crash; systemd starts it again at once
    with _listen(url) as listener:
        agent.start()
        after = agent.status()["sync"]
        for key in ("retries_in_a_row", "retry_at", "next_sync_at", "last_sync_at", "last_result", "jitter_offset_s"):
            assert after[key] == before[key], (key, before[key], after[key])
        assert agent.post_records(_records(2))[0] == 200  # another seal past high water
        time.sleep(2.0)
        assert not _connected(listener), "the restarted agent contacted ingest before its retry was due"
        shown = agent.cli("status").stdout
        assert f"retrying at {before['retry_at']} (failed 1 in a row; last success never)" in shown, shown
        assert "last error: ingest unreachable" in shown, shown
        assert agent.stop() == 0
    offline = orjson.loads(agent.cli("status", "--json").stdout)["sync"]  # stopped: what it saved is still the truth
    assert (offline["retry_at"], offline["retries_in_a_row"]) == (before["retry_at"], 1), offline
    assert offline["last_result"] == before["last_result"], offline


def test_a_retry_due_while_the_agent_was_down_is_drawn_again_not_made_at_once(agent_factory, ingest_down):
    """A retry whose time passed while the agent was down (a fleet's power cut) is drawn again from now at the same backoff, not made at start."""
    url, token = ingest_down
    agent = _outage_agent(agent_factory, url, token).start()
    assert agent.post_records(_records(1))[0] == 200
    _backing_off(agent)
    assert agent.stop() == 0
    state_file = agent.state_dir / "sync.json"
    state = orjson.loads(state_file.read_bytes())
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    state.update(failures_in_a_row=3, retry_at=an_hour_ago.isoformat(), high_water_not_before=None)
    state_file.write_bytes(orjson.dumps(state))  # three failures, then the power was off past the retry
    with _listen(url) as listener:
        agent.start()
        sync = agent.status()["sync"]
        assert sync["retries_in_a_row"] == 3, sync
        assert 1200 - 5 <= _seconds_until(sync["retry_at"]) <= 2400, sync  # 4 x 600 s, from its upper half
        time.sleep(2.0)
        assert not _connected(listener), "the restarted agent retried at once"
        assert agent.stop() == 0


def test_a_random_jitter_offset_is_kept_across_restarts(agent_factory, ingest_down, tmp_path):
    """An agent with neither jitter_seed nor a readable token keeps the random offset it drew, so restarts do not move its slot in the window."""
    url, _ = ingest_down
    agent = _outage_agent(agent_factory, url, tmp_path / "no-token-yet", jitter_s=3600).start()
    offset = agent.status()["sync"]["jitter_offset_s"]
    agent.kill()
    agent.start()
    assert agent.status()["sync"]["jitter_offset_s"] == offset
    assert agent.stop() == 0


def test_status_after_a_restart_shows_the_last_sync_and_report(agent_factory, ingest):
    """After a sync that landed and a restart, status still shows when it was, what it did, the last report and the server's clock offset."""
    agent = agent_factory(sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0}).start()
    assert agent.post_records(_records(1))[0] == 200
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    before = agent.status()
    assert before["sync"]["last_result"]["outcome"] == "ok" and before["health"]["clock"]["last_offset_s"] is not None
    agent.kill()
    agent.start()
    after = agent.status()
    for key in ("last_sync_at", "last_result", "last_success_at", "retries_in_a_row"):
        assert after["sync"][key] == before["sync"][key], key
    assert after["health"]["clock"]["last_offset_s"] == before["health"]["clock"]["last_offset_s"]
    assert after["health"]["last_report"] == before["health"]["last_report"]
    assert after["health"]["models"] == before["health"]["models"]  # the model versions the app logged
    success = datetime.fromisoformat(before["sync"]["last_success_at"]).timestamp()
    metric = next(line for line in agent.metrics().splitlines() if line.startswith("edgeloop_sync_last_success_timestamp_seconds "))
    assert abs(float(metric.split()[-1]) - success) < 1.0, metric
    assert agent.stop() == 0


def test_status_after_a_restart_shows_when_policies_were_last_fetched(agent_factory, ingest):
    """After a restart that fetches no policies (sync off, or backing off), status still says when the last fetch was and how it went."""
    agent = agent_factory(sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0}).start()
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    before = agent.status()["policies"]["last_fetch"]
    assert before is not None and before["outcome"] in ("updated", "unchanged"), before
    agent.kill()
    agent.config["sync"]["enabled"] = False  # the device is taken offline
    agent.start()
    assert agent.status()["policies"]["last_fetch"] == before
    assert agent.stop() == 0


@pytest.mark.parametrize("saved", [
    b"{not json",
    b'["a list"]',
    orjson.dumps({"failures_in_a_row": "3", "retry_at": "yesterday", "next_sync_at": "2026-01-01T00:00:00",
                  "last_result": [1], "jitter_offset_s": -5, "report": {"last_offset_s": "x", "versions": {"vibration": [1]},
                                                                         "unreported": {"failed": True}}}),
    orjson.dumps({"failures_in_a_row": 2, "retry_at": None, "last_result": {"started_at": "garbage", "outcome": 7}}),
], ids=["not-json", "not-an-object", "wrong-types", "odd-result"])
def test_an_unreadable_sync_state_starts_sync_afresh(agent_factory, ingest_down, saved):
    """A sync.json that is not JSON or holds values of the wrong types (a hand edit) does not stop the agent: what cannot be read is left out."""
    url, token = ingest_down
    agent = _outage_agent(agent_factory, url, token)
    agent.state_dir.mkdir(parents=True)
    (agent.state_dir / "sync.json").write_bytes(saved)
    agent.start()
    sync = agent.status()["sync"]
    assert sync["retry_at"] is None and sync["retries_in_a_row"] in (0, 2), sync
    assert agent.cli("status").returncode == 0
    assert agent.stop() == 0


async def test_the_report_counts_failures_that_could_send_no_report(spool, tmp_path):
    """Syncs that failed without reaching ingest count in the next report's failures_in_a_row, as the ones that reached it do."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    port = free_port()
    settings = sync_settings(f"http://127.0.0.1:{port}", tmp_path, max_attempts=1)
    reporter = StatusReporter(
        spool=spool, journal=Journal(spool, registry, spool.settings), sync=settings,
        registry=lambda: registry, sampling=SamplingSettings, agent_version="test",
    )
    syncer = Syncer(settings, spool, agent_version="test", reporter=reporter)
    make_batch(spool)
    for _ in range(2):  # ingest down: no report can be sent
        assert (await syncer.run_once()).outcome == "failed"
    peer = await IngestPeer().start(port=port)
    try:
        peer.script.append(500)  # up, but the upload fails: this run's report is sent
        assert (await syncer.run_once()).outcome == "failed"
        [document] = peer.statuses
        assert document["sync"]["failures_in_a_row"] == 3, document["sync"]
        assert document["sync"]["since_last_report"] == {"failed": 3}, document["sync"]
    finally:
        await peer.stop()


def test_a_scheduled_sync_missed_while_the_agent_was_down_runs_soon_after_it_starts(agent_factory, ingest):
    """A nightly sync whose time passed while the agent was down (a device off every night) runs within retry_initial_s of the next start, and a restart before it keeps its time."""
    sync = {"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "schedule": "0 2 1 1 *",
            "jitter_s": 0.0, "retry_initial_s": 3600}
    agent = agent_factory(sync=sync).start()
    assert agent.post_records(_records(1))[0] == 200
    assert agent.stop() == 0
    state_file = agent.state_dir / "sync.json"
    state = orjson.loads(state_file.read_bytes())
    assert _seconds_until(state["next_sync_at"]) > 0  # the night's sync, still ahead
    state["next_sync_at"] = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    state_file.write_bytes(orjson.dumps(state))  # the device was off at 02:00
    agent.start()
    catch_up = agent.status()["sync"]["next_sync_at"]
    assert 0 <= _seconds_until(catch_up) <= 3600, catch_up  # within retry_initial_s, not tomorrow night
    agent.kill()
    agent.start()  # a crash before the catch-up: the same time, not a new draw and not tomorrow
    assert agent.status()["sync"]["next_sync_at"] == catch_up
    assert agent.stop() == 0
    state = orjson.loads(state_file.read_bytes())
    state["next_sync_at"] = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    state_file.write_bytes(orjson.dumps(state))
    agent.config["sync"]["retry_initial_s"] = 1.0
    agent.start()
    for _ in range(200):
        last = agent.status()["sync"]["last_result"]
        if last and last.get("outcome") == "ok" and last.get("uploaded") == 1:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(agent.status()["sync"])
    assert agent.stop() == 0


def test_a_first_start_makes_no_catch_up_sync(agent_factory, ingest):
    """An agent started for the first time waits for its schedule: nothing was missed."""
    sync = {"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "schedule": "0 2 * * *",
            "jitter_s": 0.0, "retry_initial_s": 1.0}
    agent = agent_factory(sync=sync).start()
    scheduled = datetime.fromisoformat(agent.status()["sync"]["next_sync_at"]).astimezone(UTC)
    assert (scheduled.hour, scheduled.minute, scheduled.second) == (2, 0, 0), scheduled
    assert agent.stop() == 0


def test_a_catch_up_never_puts_off_a_scheduled_sync_due_sooner(agent_factory, ingest):
    """A missed sync's catch-up drawn past the schedule's next sync gives way to it: the agent syncs at the earlier of the two."""
    sync = {"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "schedule": "* * * * *",
            "jitter_s": 0.0, "retry_initial_s": 36000}
    agent = agent_factory(sync=sync).start()
    assert agent.stop() == 0
    state_file = agent.state_dir / "sync.json"
    state = orjson.loads(state_file.read_bytes())
    state["next_sync_at"] = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    state_file.write_bytes(orjson.dumps(state))
    agent.start()
    assert _seconds_until(agent.status()["sync"]["next_sync_at"]) <= 60
    assert agent.stop() == 0
