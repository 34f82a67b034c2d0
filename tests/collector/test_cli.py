"""``edgeloop-collector`` commands: one-line errors, exit codes, status with the agent up and down, spool tools."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from bench.simulator import SimulatedModel
from tests.collector.conftest import run_cli


def _one_line_error(result) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeloop-collector: error: "), result.stderr
    return lines[0]


def test_check_config_accepts_a_good_config(agent_factory):
    """check-config exits 0 and names the models when config, schemas, key and state dir are fine."""
    result = agent_factory().cli("check-config")
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "vibration" in result.stdout


def test_check_config_one_line_errors(agent_factory, tmp_path):
    """Every config problem is one line on stderr and exit 1: unknown key, bad value, key file, state dir."""
    agent = agent_factory()
    agent.config["spool"]["seal_max_rowz"] = 5
    assert "unknown setting 'spool.seal_max_rowz'" in _one_line_error(agent.cli("check-config"))
    del agent.config["spool"]["seal_max_rowz"]

    agent.config["spool"]["when_full"] = "panic"
    assert "spool.when_full" in _one_line_error(agent.cli("check-config"))
    agent.config["spool"]["when_full"] = "reject_new"

    key = tmp_path / "short.key"
    key.write_bytes(b"short")
    key.chmod(0o600)
    agent.config["agent"]["key_file"] = str(key)
    assert "at least 16" in _one_line_error(agent.cli("check-config"))
    key.write_bytes(secrets.token_bytes(32))
    key.chmod(0o644)
    assert "readable by everyone" in _one_line_error(agent.cli("check-config"))
    key.chmod(0o600)
    agent.config["agent"]["key_file"] = str(tmp_path / "missing.key")
    assert "cannot read the fleet key" in _one_line_error(agent.cli("check-config"))
    agent.config["agent"]["key_file"] = str(key)

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    agent.config["agent"]["state_dir"] = str(blocker / "state")
    assert "state_dir" in _one_line_error(agent.cli("check-config"))

    result = run_cli("check-config", "--config", str(tmp_path / "nope.toml"))
    assert "nope.toml: no such config file" in _one_line_error(result)


@pytest.mark.parametrize(
    ("sync", "named"),
    [
        ({"timezone": "Mars/Olympus"}, "sync.timezone"),
        ({"schedule": "0 0 31 2 *"}, "sync.schedule"),  # February 31st: the window never opens
        ({"interval_s": 1e300}, "sync.interval_s"),
        ({"jitter_s": 1e300}, "sync.jitter_s"),
        ({"request_timeout_s": 1e300}, "sync.request_timeout_s"),
        ({"url": "https://ingest example.com"}, "sync.url"),
        ({"url": "https://"}, "sync.url"),
        ({"url": "https://127.0.0.1:9/v1"}, "sync.url"),  # an API path: every upload a 404
        ({"url": "https://127.0.0.1:9/v1/batches/"}, "sync.url"),
        ({"ca_file": "<not a certificate>"}, "sync.ca_file"),
    ],
)
def test_a_sync_setting_the_agent_could_not_run_on_fails_check_config_and_start_in_one_line(agent_factory, tmp_path, sync, named):
    """A sync setting that would crash the agent or never sync is one line naming it, from check-config and from run."""
    token = tmp_path / "device.token"
    token.write_text("tok\n")
    token.chmod(0o600)
    if sync.get("ca_file") == "<not a certificate>":
        sync = {"ca_file": str(token)}
    agent = agent_factory(sync={"enabled": True, "url": "https://127.0.0.1:9", "token_file": str(token), **sync})
    assert named in _one_line_error(agent.cli("check-config"))
    if named == "sync.ca_file":
        return  # the agent collects without a working sync; the sync's own result names the file
    run = run_cli("run", "--config", str(agent.config_path), timeout_s=60)
    assert named in _one_line_error(run)


def test_run_on_a_state_dir_or_socket_folder_it_cannot_create_names_the_setting(agent_factory, tmp_path):
    """run with a state_dir or socket folder that cannot be created exits 1 with one line naming the setting."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    agent = agent_factory()
    agent.config["agent"]["state_dir"] = str(blocker / "state")
    agent.write_config()
    line = _one_line_error(run_cli("run", "--config", str(agent.config_path)))
    assert "agent.state_dir" in line and str(blocker / "state") in line
    agent.config["agent"]["state_dir"] = str(tmp_path / "state")
    agent.config["agent"]["socket_path"] = str(blocker / "run" / "agent.sock")
    agent.write_config()
    run = run_cli("run", "--config", str(agent.config_path))
    line = run.stderr.strip().splitlines()[-1]  # after the agent's own log lines
    assert run.returncode == 1 and line.startswith("edgeloop-collector: error: ")
    assert "agent.socket_path" in line and str(blocker / "run") in line


def test_a_check_across_settings_is_one_clean_line(agent_factory):
    """A problem between two settings (a body the memory budget cannot hold) reads 'file: message', no empty setting name."""
    agent = agent_factory(agent={"memory_budget_mb": 8}, intake={"max_body_bytes": 1 << 20})
    line = _one_line_error(agent.cli("check-config"))
    assert f"{agent.config_path}: intake.max_body_bytes = 1048576 is more than" in line and ": :" not in line


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "1e400"])
def test_a_timeout_that_is_not_a_positive_finite_number_is_a_usage_error(agent_factory, timeout):
    """--timeout -1, 0, nan or inf is a usage error naming --timeout (exit 2), not a traceback."""
    agent = agent_factory()
    for command in (["status"], ["sync"], ["spool", "requeue", "--all"]):
        result = agent.cli(*command, f"--timeout={timeout}")
        assert result.returncode == 2, (command, result.stderr)
        assert "--timeout" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_status_with_agent_down_reads_the_disk_and_exits_3(agent_factory):
    """With the agent stopped, status says so, still reports the spool from disk, and exits 3."""
    agent = agent_factory().start()
    assert agent.post_records(list(SimulatedModel("vibration", seed=2).predictions(50)))[0] == 200
    assert agent.stop() == 0
    result = agent.cli("status", "--json")
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["agent"]["running"] is False
    assert report["spool"]["records"] == 50 and report["spool"]["batches"] == 1
    human = agent.cli("status")
    assert human.returncode == 3 and "NOT RUNNING" in human.stdout and "50 records" in human.stdout


def test_status_of_an_agent_that_holds_the_state_dir_but_does_not_answer_says_so_and_exits_1(agent_factory):
    """A hung agent (SIGSTOP) is reported as running but not answering, with its pid, exit 1; once killed, not running, exit 3."""
    agent = agent_factory().start()
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        human = agent.cli("status", "--timeout", "1")
        as_json = agent.cli("status", "--json", "--timeout", "1")
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    assert human.returncode == 1, (human.stdout, human.stderr)
    assert "NOT ANSWERING" in human.stdout and f"pid {agent.proc.pid}" in human.stdout, human.stdout
    assert "NOT RUNNING" not in human.stdout
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1
    assert report["agent"]["running"] is True and report["agent"]["answering"] is False
    assert report["agent"]["pid"] == agent.proc.pid and "spool" in report
    agent.kill()
    gone = agent.cli("status", "--json")
    assert gone.returncode == 3 and json.loads(gone.stdout)["agent"]["running"] is False


def test_status_with_agent_down_counts_a_torn_batch_file_in_its_text(agent_factory):
    """With the agent down, a sealed batch that no longer reads is counted as unreadable in status's text, not hidden."""
    agent = agent_factory().start()
    assert agent.post_records(list(SimulatedModel("vibration", seed=2).predictions(20)))[0] == 200
    agent.flush()
    agent.kill()
    (batch,) = agent.batch_files()
    batch.write_bytes(batch.read_bytes()[:100])
    human = agent.cli("status")
    assert human.returncode == 3 and "1 unreadable batch file" in human.stdout, human.stdout


def test_status_flush_and_spool_list_with_agent_up(agent_factory):
    """status (human and JSON), flush and spool list agree with what the agent holds."""
    agent = agent_factory(spool={"seal_max_age_s": 3600}).start()
    assert agent.post_records(list(SimulatedModel("image_classifier", seed=2).predictions(30)))[0] == 200
    status = agent.cli("status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["journal"]["records"] == 30
    flushed = agent.cli("flush")
    assert flushed.returncode == 0 and "sealed 1 batches (30 records)" in flushed.stdout
    human = agent.cli("status")
    assert human.returncode == 0 and "running" in human.stdout and "30 records" in human.stdout
    listing = json.loads(agent.cli("spool", "list", "--json").stdout)
    assert [(row["model"], row["rows"], row["state"]) for row in listing] == [("image_classifier", 30, "pending")]
    table = agent.cli("spool", "list").stdout
    assert "image_classifier" in table and "1 pending batches, 30 records" in table


def test_flush_and_sync_with_agent_down_are_one_line_errors(agent_factory):
    """flush and sync against a socket nobody listens on fail with one line and exit 1."""
    agent = agent_factory()
    assert "does not answer" in _one_line_error(agent.cli("flush"))
    assert "does not answer" in _one_line_error(agent.cli("sync", "--wait"))


def test_sync_without_a_configured_server_is_a_one_line_error(agent_factory):
    """sync on an agent with no ingest server configured says it was skipped and why, exit 1; the agent serves on."""
    agent = agent_factory().start()
    assert "sync skipped" in _one_line_error(agent.cli("sync", "--wait"))
    assert agent.status()["agent"]["running"] is True


def test_spool_verify_reports_and_quarantines_a_bad_batch(agent_factory):
    """spool verify reads every batch, names one whose fingerprint does not match, and --quarantine moves it."""
    agent = agent_factory().start()
    sim = SimulatedModel("vibration", seed=3)
    for _ in range(2):
        assert agent.post_records(list(sim.predictions(20)))[0] == 200
        agent.flush()
    assert agent.stop() == 0
    good, bad = agent.batch_files()
    table = pq.read_table(bad)
    metadata = dict(pq.read_metadata(bad).metadata)
    metadata[b"edgeloop.schema_fingerprint"] = b"0000000000000000"
    pq.write_table(table.replace_schema_metadata(metadata), bad)

    result = agent.cli("spool", "verify")
    assert result.returncode == 1
    assert f"BAD {bad.stem}" in result.stdout and "fingerprint" in result.stdout and "1 of 2 batches OK" in result.stdout
    result = agent.cli("spool", "verify", "--quarantine", "--json")
    assert result.returncode == 0
    assert [row["ok"] for row in json.loads(result.stdout)] == [True, False]
    assert agent.batch_files() == [good]
    assert (agent.state_dir / "quarantine" / bad.name).exists()
    assert agent.cli("spool", "verify").returncode == 0


def test_spool_verify_quarantine_refuses_while_the_agent_runs(agent_factory):
    """spool verify --quarantine will not move files under a running agent."""
    agent = agent_factory().start()
    assert "agent is running" in _one_line_error(agent.cli("spool", "verify", "--quarantine"))


def test_help_explains_every_command():
    """--help lists every command with a sentence of explanation."""
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "status", "flush", "sync", "check-config", "spool", "pseudonym"):
        assert command in result.stdout
    assert "verify" in run_cli("spool", "--help").stdout
    assert run_cli("bogus").returncode == 2


def _reject_all(agent) -> list[str]:
    """Move every pending batch to rejected/ as the syncer does for a 4xx (the agent must be stopped)."""
    from edgeloop.collector.config import SpoolSettings
    from edgeloop.collector.spool import Spool

    spool = Spool(agent.state_dir, SpoolSettings(), agent_version="test")
    ids = [batch.batch_id for batch in spool.pending()]
    for batch_id in ids:
        spool.reject(batch_id, status=400, error={"error": {"code": "corrupt_parquet", "message": "malloc failed"}})
    return ids


def test_spool_requeue_moves_rejected_batches_back_with_the_agent_down_and_up(agent_factory):
    """spool requeue BATCH (agent stopped) and --all (agent running) move rejected batches back to pending, durably and counted."""
    agent = agent_factory().start()
    sim = SimulatedModel("vibration", seed=8)
    for _ in range(3):
        assert agent.post_records(list(sim.predictions(10)))[0] == 200
        agent.flush()
    assert agent.stop() == 0
    first, *rest = _reject_all(agent)
    assert agent.batch_files() == []

    result = agent.cli("spool", "requeue", first)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "requeued 1 batches (10 records); the next sync sends them"
    assert [path.stem for path in agent.batch_files()] == [first]
    assert not (agent.state_dir / "rejected" / f"{first}.error.json").exists()

    agent.start()
    assert agent.status()["spool"]["rejected"] == 2
    result = agent.cli("spool", "requeue", "--all", "--json")
    assert result.returncode == 0, result.stderr
    assert sorted(row["batch_id"] for row in json.loads(result.stdout)) == sorted(rest)
    status = agent.status()
    assert status["spool"]["rejected"] == 0 and status["spool"]["batches"] == 3 and status["spool"]["records"] == 30
    assert agent.cli("spool", "requeue", "--all").stdout.strip() == "no rejected batches to requeue"
    assert not list((agent.state_dir / "rejected").iterdir())


def test_spool_requeue_errors_are_one_line(agent_factory):
    """An unknown or malformed batch id is a one-line error with exit 1, with the agent down or up; no arguments is usage (2)."""
    agent = agent_factory()
    agent.write_config()
    (agent.state_dir / "rejected").mkdir(parents=True)
    assert "no rejected batch 01a217c5-93b1-711e-a0df-e1998ec223d1" in _one_line_error(
        agent.cli("spool", "requeue", "01a217c5-93b1-711e-a0df-e1998ec223d1")
    )
    assert "not a batch id" in _one_line_error(agent.cli("spool", "requeue", "../../etc/passwd"))
    assert agent.cli("spool", "requeue").returncode == 2
    agent.start()
    assert "404" in _one_line_error(agent.cli("spool", "requeue", "01a217c5-93b1-711e-a0df-e1998ec223d1"))
    assert "not a batch id" in _one_line_error(agent.cli("spool", "requeue", "../x"))


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    """A config file that is not UTF-8 text is refused in one line naming it, exit 1, for every command that reads it."""
    config = tmp_path / "collector.toml"
    config.write_bytes(b"[spool]\nmax_bytes = 1\n# \xff\xfe\n")
    for command in ("check-config", "status"):
        line = _one_line_error(run_cli(command, "--config", str(config)))
        assert str(config) in line and "UTF-8" in line


def test_status_into_a_pipe_its_reader_closed_ends_quietly(agent_factory):
    """status whose stdout reader went away (| head) exits as a tool ended by SIGPIPE does, 141, with nothing on stderr."""
    import subprocess
    import sys

    from tests.collector.conftest import ROOT

    agent = agent_factory()
    agent.write_config()
    proc = subprocess.Popen([sys.executable, "-m", "edgeloop.collector.cli", "status", "--config", str(agent.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # before the child writes a byte
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 141 and stderr == b"", stderr


def test_status_after_a_failed_sync_says_why_and_the_policy_fetch_in_words(agent_factory, tmp_path):
    """After a sync to a server that is down, status names the cause in its text, the policy fetch's outcome is the
    error's text, not aiohttp's repr of its connection key, and a sync without --wait says where its result shows."""
    from tests.ingest.conftest import free_port

    token = tmp_path / "device.token"
    token.write_text("some-device-token\n")
    token.chmod(0o600)
    url = f"http://127.0.0.1:{free_port()}"
    agent = agent_factory(sync={"enabled": True, "url": url, "token_file": str(token), "max_attempts": 1}).start()
    assert agent.post_records(list(SimulatedModel("vibration", seed=2).predictions(5)))[0] == 200
    assert "ingest unreachable" in _one_line_error(agent.cli("sync", "--wait"))
    human = agent.cli("status")
    assert human.returncode == 0, human.stderr
    sync_lines = human.stdout.split("sync       ", 1)[1].splitlines()
    under = [line for line in sync_lines[1:] if line.startswith("           ")]
    assert "(failed)" in sync_lines[0] and any("ingest unreachable" in line for line in under), human.stdout
    outcome = json.loads(agent.cli("status", "--json").stdout)["policies"]["last_fetch"]["outcome"]
    assert outcome.startswith("failed: ClientConnectorError: Cannot connect to host"), outcome
    assert "ConnectionKey(" not in human.stdout + outcome
    started = agent.cli("sync")  # without --wait: it says where the result will be
    assert started.returncode == 0 and "`edgeloop-collector status` shows how it ended" in started.stdout, started


def _as_an_unprivileged_user() -> list[str]:
    """A command prefix that makes permission bits bind: as root, setpriv drops the capabilities that ignore them."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: file permissions cannot be made to bind")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def test_commands_on_an_agent_this_user_may_not_reach_say_so_and_how(agent_factory):
    """status, sync and run by a user who may not open the agent's socket or state dir give one line naming the
    path, its owner and group and sudo, never 'not answering', a hung agent or an errno."""
    agent = agent_factory().start()
    prefix = _as_an_unprivileged_user()
    os.chown(agent.socket, 0 if prefix else os.getuid(), os.getgid())
    try:
        agent.socket.chmod(0o000)
        agent.state_dir.chmod(0o000)
        for command in (["status"], ["status", "--json"], ["sync", "--wait"], ["flush"]):
            result = subprocess.run([*prefix, *_cli_argv(agent, *command)], capture_output=True, text=True, timeout=60)
            line = _one_line_error(result)
            assert f"{agent.socket}: permission denied for user" in line and "sudo" in line, (command, line)
            assert "[Errno" not in line and "NOT ANSWERING" not in result.stdout
        agent.socket.chmod(0o660)
        agent.stop()
        run = subprocess.run([*prefix, *_cli_argv(agent, "run")], capture_output=True, text=True, timeout=60)
        line = _one_line_error(run)
        assert str(agent.state_dir) in line and "permission denied for user" in line and "[Errno" not in line, line
        status = subprocess.run([*prefix, *_cli_argv(agent, "status")], capture_output=True, text=True, timeout=60)
        line = _one_line_error(status)
        assert str(agent.state_dir) in line and "belongs to" in line and "[Errno" not in line, line
    finally:
        agent.state_dir.chmod(0o750)


def _cli_argv(agent, *args: str) -> list[str]:
    return [sys.executable, "-m", "edgeloop.collector.cli", *args, "--config", str(agent.write_config())]


def test_a_missing_config_says_how_to_make_one():
    """A collector command with no config file is one line naming the file, --config, $EDGELOOP_CONFIG and init-config."""
    result = run_cli("status", "--config", "/nonexistent/collector.toml")
    line = _one_line_error(result)
    assert "/nonexistent/collector.toml: no such config file" in line and "init-config" in line, line


@pytest.mark.parametrize("first", ["--config", "--config=collector.toml", "--socket"])
def test_an_option_before_the_command_says_where_it_goes(first):
    """`edgeloop-collector --config FILE status` is a usage error (exit 2) saying the option goes after the command,
    not 'invalid choice' naming the file."""
    result = run_cli(first, "collector.toml", "status")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"{first.split('=')[0]} goes after the command: edgeloop-collector COMMAND" in last, last
    assert "invalid choice" not in result.stderr


def test_a_second_agent_on_the_same_socket_with_another_state_dir_refuses_and_leaves_the_first_reachable(
        agent_factory):
    """run with another state dir but a socket_path another agent serves exits 1 naming agent.socket_path, and the
    first agent still answers on its socket afterwards (the second took the socket and removed it on exit)."""
    first = agent_factory("first").start()
    second = agent_factory("second")
    second.config["agent"]["socket_path"] = str(first.socket)
    run = run_cli("run", "--config", str(second.write_config()), timeout_s=60)
    line = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and line.startswith("edgeloop-collector: error: agent.socket_path: "), run.stderr
    assert "served by another agent" in line
    assert first.socket.is_socket() and first.status()["agent"]["pid"] == first.proc.pid
    first.kill()  # a crash leaves the socket file behind: the next agent takes it over
    assert first.socket.is_socket()
    second.start()
    assert second.status()["agent"]["pid"] == second.proc.pid
