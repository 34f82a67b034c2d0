"""Device health end to end: a real agent subprocess reports its status at every sync to a real ingest server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.simulator import SimulatedModel
from tests.collector.conftest import Ingest
from tests.ingest.conftest import cli as ingest_cli
from tests.ingest.conftest import free_port, write_config


@pytest.fixture
def make_ingest(tmp_path: Path) -> Iterator[Callable[..., Ingest]]:
    """Start ``edgeloop-ingest serve`` with extra config text, device kiosk-7 registered; stopped at teardown."""
    started: list[Ingest] = []

    def start(extra: str = "") -> Ingest:
        folder = tmp_path / f"ingest{len(started)}"
        folder.mkdir()
        port = free_port()
        config = write_config(folder, port, extra)
        token_file = folder / "kiosk.token"
        token_file.write_text(ingest_cli("devices", "add", "kiosk-7", "--config", str(config)).stdout.strip().splitlines()[-1])
        token_file.chmod(0o600)
        server = Ingest(f"http://127.0.0.1:{port}", config, token_file, folder / "ingest.duckdb", folder / "server.log")
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def fleet(ingest: Ingest, *args: str) -> list[dict]:
    out = ingest_cli("fleet", "--format", "json", "--config", str(ingest.config), *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def sync_config(ingest: Ingest, **extra) -> dict:
    return {"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0,
            "interval_s": 3600.0, **extra}


def test_a_device_with_nothing_to_send_shows_up_alive_with_its_health(agent_factory, make_ingest):
    """A sync with an empty spool still reports: the device is ok in `fleet`, and `devices show` has its status."""
    ingest = make_ingest()
    agent = agent_factory(sync=sync_config(ingest)).start()
    assert [row["state"] for row in fleet(ingest)] == ["never_seen"]

    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["outcome"], answer["uploaded"], answer["report"]) == ("ok", 0, "stored")

    [row] = fleet(ingest)
    assert row["device"] == "kiosk-7" and row["state"] == "ok", row
    assert row["last_outcome"] == "ok" and row["backlog_records"] == 0 and row["sync_window_s"] == 3600.0
    assert row["agent_version"] and row["statuses"] == 1 and abs(row["clock_offset_s"]) < 60
    assert fleet(ingest, "--silent") == []

    shown = ingest_cli("devices", "show", "kiosk-7", "--config", str(ingest.config)).stdout
    assert "kiosk-7  (ok)" in shown and "backlog       0 batches" in shown and "sync window 60m" in shown
    detail = json.loads(ingest_cli("devices", "show", "kiosk-7", "--format", "json", "--config", str(ingest.config)).stdout)
    assert detail["status"]["sync"]["outcome"] == "ok" and detail["status"]["sampling"]["default"]["keep_rate"] == 1.0
    assert {model["model"] for model in detail["status"]["models"]} == {"vibration", "image_classifier"}
    assert set(detail["status"]["sampling"]["policies"]) == {"vibration", "image_classifier"}  # the version each runs
    assert "policies      " in shown
    missing = ingest_cli("devices", "show", "nobody", "--config", str(ingest.config), check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no device named 'nobody'" in missing.stderr

    status = agent.status()
    assert status["health"]["last_report"]["stored"] is True and status["health"]["sync_window_s"] == 3600.0
    assert "report     stored" in agent.cli("status").stdout


def test_versions_drops_and_backlog_travel_in_the_report(agent_factory, make_ingest):
    """The model versions the app logged, drops since the last report and the landed versions show for the device."""
    ingest = make_ingest()
    agent = agent_factory(sync=sync_config(ingest), sampling={"models": {"vibration": {"keep_rate": 0.5}}}).start()
    records = list(SimulatedModel("vibration", seed=5).predictions(80))
    for index, record in enumerate(records):
        record["model_version"] = ("2.0.0", "2.1.0")[index % 2]
    code, answer = agent.post_records(records)
    assert code == 200, answer
    dropped = agent.status()["drops"]["total"].get("sampled_out", 0)
    assert dropped > 0
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr

    detail = json.loads(ingest_cli("devices", "show", "kiosk-7", "--format", "json", "--config", str(ingest.config)).stdout)
    [vibration] = [model for model in detail["status"]["models"] if model["model"] == "vibration"]
    assert sorted(vibration["versions"]) == ["2.0.0", "2.1.0"]
    assert detail["status"]["drops"] == {"sampled_out": dropped} and detail["device"]["dropped"] == dropped
    assert detail["status"]["sampling"]["models"]["vibration"]["keep_rate"] == 0.5
    landed = {row["model_version"]: row["predictions"] for row in detail["versions"]}
    assert set(landed) == {"2.0.0", "2.1.0"} and sum(landed.values()) == 80 - dropped
    by_version = {row["model_version"]: row for row in fleet(ingest, "--versions")}
    assert by_version["2.1.0"]["devices"] == 1 and by_version["2.1.0"]["predictions"] == landed["2.1.0"]

    # A second report carries only the drops since the first.
    time.sleep(1.1)  # fleet.min_status_interval_s
    assert agent.cli("sync", "--wait").returncode == 0
    detail = json.loads(ingest_cli("devices", "show", "kiosk-7", "--format", "json", "--config", str(ingest.config)).stdout)
    assert detail["status"]["drops"] == {} and detail["device"]["dropped"] == dropped and detail["device"]["statuses"] == 2


def test_a_device_whose_uploads_are_refused_shows_the_count(agent_factory, make_ingest):
    """Uploads refused with 413 are counted against the device, and its last sync shows as failing with the error."""
    ingest = make_ingest("[limits]\nmax_body_bytes = 2000\n")
    agent = agent_factory(sync=sync_config(ingest)).start()
    assert agent.post_records(list(SimulatedModel("vibration", seed=5).predictions(20)))[0] == 200
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 1  # the batch was rejected
    [row] = fleet(ingest)
    assert row["refused"] >= 1 and row["last_refused_code"] == "too_large", row
    assert row["state"] == "failing" and row["last_outcome"] == "failed" and "rejected" in row["last_error"]
    table = ingest_cli("fleet", "--config", str(ingest.config)).stdout
    assert "failing" in table and "(too_large)" in table


def test_a_device_that_stops_reporting_is_flagged_silent(agent_factory, make_ingest):
    """With a 1 s sync window, a killed agent's device turns late, then silent, and `fleet --silent` lists it."""
    ingest = make_ingest("[fleet]\ngrace_s = 4.0\nsilent_after_windows = 2.0\nmin_status_interval_s = 0\n")
    agent = agent_factory(sync=sync_config(ingest, interval_s=1.0)).start()
    assert agent.cli("sync", "--wait").returncode == 0
    [row] = fleet(ingest)
    assert row["sync_window_s"] == 1.0 and row["state"] in ("ok", "late"), row
    agent.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        silent = fleet(ingest, "--silent")
        if silent:
            break
        time.sleep(0.5)
    assert [row["device"] for row in silent] == ["kiosk-7"] and silent[0]["state"] == "silent"
    assert silent[0]["silent_for_s"] > 2 * 1.0 + 4.0


def test_a_failed_report_is_carried_into_the_next_one(agent_factory, tmp_path):
    """While ingest is down nothing is stored; the first report after it is back counts the failed sync and all drops."""
    port = free_port()
    folder = tmp_path / "late-ingest"
    folder.mkdir()
    config = write_config(folder, port)
    token_file = folder / "kiosk.token"
    token_file.write_text(ingest_cli("devices", "add", "kiosk-7", "--config", str(config)).stdout.strip().splitlines()[-1])
    token_file.chmod(0o600)
    ingest = Ingest(f"http://127.0.0.1:{port}", config, token_file, folder / "ingest.duckdb", folder / "server.log")
    agent = agent_factory(sync=sync_config(ingest, max_attempts=1),
                          sampling={"models": {"vibration": {"keep_rate": 0.5}}}).start()
    assert agent.post_records(list(SimulatedModel("vibration", seed=6).predictions(60)))[0] == 200
    dropped = agent.status()["drops"]["total"]["sampled_out"]
    assert agent.cli("sync", "--wait").returncode == 1  # nothing listens yet
    assert agent.status()["health"]["last_report"] is None  # unreachable: no report was even tried

    ingest.start()
    try:
        assert agent.cli("sync", "--wait").returncode == 0
        detail = json.loads(ingest_cli("devices", "show", "kiosk-7", "--format", "json", "--config", str(config)).stdout)
    finally:
        ingest.stop()
    sync = detail["status"]["sync"]
    assert sync["outcome"] == "ok" and sync["since_last_report"] == {"failed": 1, "ok": 1}
    assert detail["status"]["drops"] == {"sampled_out": dropped} and detail["device"]["statuses"] == 1
