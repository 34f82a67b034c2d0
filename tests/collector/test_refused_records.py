"""Records the agent refuses (journal unwritable, disk or spool full) spend nothing: no quota, no remembered id, no count."""

from __future__ import annotations

import time

import pytest

from bench.simulator import SimulatedModel
from tests.collector.conftest import inject_faults


def _records(seed: int, rows: int) -> list[dict]:
    return list(SimulatedModel("vibration", seed=seed).predictions(rows))


def _in_one_hour_window() -> None:
    """Wait out the last minute of an uptime hour, so the test's records fall in one quota window."""
    if time.clock_gettime(time.CLOCK_BOOTTIME) % 3600 > 3540:
        time.sleep(3600 - time.clock_gettime(time.CLOCK_BOOTTIME) % 3600 + 1)


def _metric(agent, prefix: str) -> float:
    lines = [line for line in agent.metrics().splitlines() if line.startswith(prefix)]
    return sum(float(line.split()[-1]) for line in lines)


@pytest.mark.parametrize("code", ["EROFS", "ENOSPC", "EIO"])
def test_records_refused_by_a_failing_journal_spend_no_quota(agent_factory, code):
    """Records refused because the journal cannot be written leave the hour's max_per_hour unspent, so their resend is kept, and a restart counts only records kept."""
    _in_one_hour_window()
    agent = agent_factory(sampling={"default": {"max_per_hour": 30}}, spool={"seal_max_age_s": 0.5})
    fault = inject_faults(agent)
    agent.start()
    first, refused = _records(1, 20), _records(2, 10)
    status, body = agent.post_records(first)
    assert status == 200 and body["accepted"] == 20, body
    fault.write_text(code)
    status, body = agent.post_records(refused)
    assert status in (503, 507), body
    fault.unlink()
    status, body = agent.post_records(refused)  # the app sends them again once the disk recovers
    assert status == 200 and body["accepted"] == 10 and body["sampled_out"] == 0, body
    assert _metric(agent, 'edgeloop_records_total{model="vibration",status="accepted"}') == 30
    agent.kill()  # systemd restarts it within the hour: the saved count is the 30 kept, not 40
    agent.start()
    status, body = agent.post_records(_records(3, 5))
    assert status == 200 and body["accepted"] == 0 and body["sampled_out"] == 5, body
    assert agent.stop() == 0
    stored = agent.read_batches()["vibration"]
    assert sorted(map(str, stored["record_id"].to_pylist())) == sorted(r["record_id"] for r in first + refused)


def test_records_refused_by_a_full_spool_spend_no_quota(agent_factory):
    """Records refused with 507 spool_full (reject_new) leave max_per_hour unspent: once the spool has room their resend is kept."""
    _in_one_hour_window()
    agent = agent_factory(sampling={"default": {"max_per_hour": 30}}, spool={"max_bytes": 1, "when_full": "reject_new"})
    agent.start()
    for _ in range(3):
        status, body = agent.post_records(_records(1, 20))
        assert status == 507 and body["error"]["code"] == "spool_full", body
    agent.config["spool"] = {**agent.config["spool"], "max_bytes": 64 << 20}
    assert agent.stop() == 0
    agent.start()
    status, body = agent.post_records(_records(1, 20))
    assert status == 200 and body["accepted"] == 20 and body["sampled_out"] == 0, body


def test_a_request_refused_after_one_models_records_reached_the_journal_keeps_them_once(agent_factory):
    """When one model's journal refuses a write after another model's records of the same request were written, the resend stores each record once: those written are duplicates of it, the rest are new."""
    _in_one_hour_window()
    agent = agent_factory(sampling={"models": {"vibration": {"max_per_hour": 10}}})
    fault = inject_faults(agent)
    agent.env["EDGELOOP_TEST_FAULT_DIR"] = str(agent.state_dir / "journal" / "image_classifier")  # only its segments fail
    agent.start()
    vibration, images = _records(1, 5), list(SimulatedModel("image_classifier", seed=2).predictions(5))
    fault.write_text("ENOSPC")
    status, body = agent.post_records(vibration + images)  # vibration's frame is written, image_classifier's is not
    assert status == 507 and body["error"]["code"] == "disk_full", body
    fault.unlink()
    status, body = agent.post_records(vibration + images)
    assert status == 200 and body["accepted"] == 10 and body["duplicates"] == 5 and body["sampled_out"] == 0, body
    status, body = agent.post_records(_records(3, 10))  # the five written spent the hour's quota of ten
    assert status == 200 and body["accepted"] == 5, body
    assert agent.stop() == 0
    stored = agent.read_batches()
    vibration_ids = [str(v) for v in stored["vibration"]["record_id"].to_pylist()]
    assert len(vibration_ids) == len(set(vibration_ids)) == 10, vibration_ids
    assert sorted(str(v) for v in stored["image_classifier"]["record_id"].to_pylist()) == sorted(r["record_id"] for r in images)
