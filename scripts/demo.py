"""The whole edgeloop loop on one machine, with the embedded defaults; run by ./scripts/demo.

ingest server (DuckDB file under var/demo/) → a registered device → a device agent →
a simulated model logging predictions and feedback through the SDK → a sync →
SQL over the landed rows, the fleet view and the field performance report → everything
stopped again; with --keep the server stays up for the dashboard until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the simulated models live in the repository's bench/, not in the installed package

from bench.simulator import SimulatedModel  # noqa: E402
from edgeloop.collector.client import Client  # noqa: E402
from edgeloop.schemas import EXAMPLES_DIR  # noqa: E402

BIN = Path(sys.executable).parent


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, what: str, timeout_s: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"demo: {what} exited with {process.returncode}; see its log above")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"demo: {what} did not come up within {timeout_s:.0f}s")


def run(*args: str, capture: bool = False) -> str:
    result = subprocess.run([str(BIN / args[0]), *args[1:]], text=True, capture_output=capture)
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"demo: {' '.join(args[:2])} failed with exit {result.returncode}")
    return result.stdout if capture else ""


def stop(process: subprocess.Popen, name: str) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    print(f"    {name} stopped (exit {process.returncode})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5000, help="predictions the simulated model logs (default 5000)")
    parser.add_argument("--var", type=Path, default=ROOT / "var" / "demo", help="where the demo keeps its files")
    parser.add_argument("--keep", action="store_true",
                        help="leave the ingest server running afterwards and print the dashboard URL and a viewer token "
                             "(Ctrl-C stops it)")
    args = parser.parse_args()

    var: Path = args.var
    # Each run starts clean, so a second run shows the same loop again.
    shutil.rmtree(var, ignore_errors=True)
    (var / "device").mkdir(parents=True)
    (var / "server").mkdir(parents=True)
    logs = var / "logs"
    logs.mkdir()

    port = free_port()
    ingest_toml = var / "ingest.toml"
    ingest_toml.write_text(
        f"""[server]
host = "127.0.0.1"
port = {port}
admin_token_file = "{var / 'server' / 'admin.token'}"
log_json = true

[store]
db_path = "{var / 'server' / 'edgeloop.duckdb'}"
"""
    )
    processes: list[tuple[subprocess.Popen, str]] = []
    try:
        step(f"starting the ingest server on 127.0.0.1:{port} (DuckDB file {var / 'server' / 'edgeloop.duckdb'})")
        server = subprocess.Popen(
            [str(BIN / "edgeloop-ingest"), "serve", "--config", str(ingest_toml)],
            stdout=open(logs / "ingest.log", "w"),
            stderr=subprocess.STDOUT,
        )
        processes.append((server, "ingest server"))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(f"{url}/healthz", timeout=1).status == 200, "ingest server", process=server)

        step("registering the model schemas: the server accepts batches of registered schemas only")
        run("edgeloop-ingest", "schemas", "push", *sorted(str(path) for path in EXAMPLES_DIR.glob("*.toml")),
            "--config", str(ingest_toml))

        step("registering the device 'pump-pc-01' (its token is printed once, stored only as a hash)")
        token = run("edgeloop-ingest", "devices", "add", "pump-pc-01", "--config", str(ingest_toml), capture=True)
        token = token.strip().splitlines()[-1].split()[-1]
        token_file = var / "device" / "device.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)

        key_file = var / "device" / "fleet.key"
        key_file.write_bytes(secrets.token_bytes(32))
        key_file.chmod(0o600)
        socket_path = var / "device" / "agent.sock"
        collector_toml = var / "collector.toml"
        collector_toml.write_text(
            f"""[agent]
state_dir = "{var / 'device' / 'state'}"
socket_path = "{socket_path}"
key_file = "{key_file}"

[spool]
seal_max_rows = 2000

[sampling.models.vibration]
keep_rate = 0.5
always_keep_below_confidence = 0.6

[sync]
url = "{url}"
token_file = "{token_file}"
schedule = "0 2 * * *"
jitter_s = 7200
"""
        )
        run("edgeloop-collector", "check-config", "--config", str(collector_toml))

        step("starting the device agent (unix socket, journal, spool; nightly sync scheduled)")
        agent = subprocess.Popen(
            [str(BIN / "edgeloop-collector"), "run", "--config", str(collector_toml)],
            stdout=open(logs / "agent.log", "w"),
            stderr=subprocess.STDOUT,
        )
        processes.append((agent, "device agent"))
        wait_for(socket_path.exists, "device agent", process=agent)

        step(f"a simulated pump model logs {args.records} predictions and some feedback through the SDK")
        started = datetime.now(UTC)
        model = SimulatedModel("vibration", seed=7, model_version="2.1.0", start=started)
        client = Client(socket_path)
        predictions = feedback = 0
        for record in model.records(args.records + args.records // 10, feedback_ratio=0.09):
            if record["kind"] == "prediction":
                client.log_prediction(
                    record["model"], record["model_version"], record["inputs"], record["outputs"],
                    record_id=record["record_id"],
                )
                predictions += 1
            else:
                client.log_feedback(
                    record["prediction_id"], record["model"], record["model_version"], record["feedback"],
                    source=record.get("source"),
                )
                feedback += 1
        client.close(timeout_s=30)
        logged = datetime.now(UTC)
        print(f"    logged {predictions} predictions and {feedback} feedback records; SDK: {client.stats()}")

        step("sealing the journal and syncing now (instead of waiting for tonight's window)")
        run("edgeloop-collector", "flush", "--config", str(collector_toml))
        run("edgeloop-collector", "sync", "--wait", "--config", str(collector_toml))
        run("edgeloop-collector", "status", "--config", str(collector_toml))

        step("SQL over the landed rows (edgeloop-ingest sql, through the running server)")
        run(
            "edgeloop-ingest", "sql", "--config", str(ingest_toml),
            "SELECT model_version, count(*) AS rows, round(sum(sample_weight)) AS weighted_predictions,"
            " round(avg(confidence), 3) AS avg_confidence, count(DISTINCT predicted_class) AS classes"
            " FROM vibration GROUP BY ALL",
        )
        run(
            "edgeloop-ingest", "sql", "--config", str(ingest_toml),
            "SELECT predicted_class, true_class, count(*) AS n FROM vibration_training"
            " WHERE true_class IS NOT NULL GROUP BY ALL ORDER BY n DESC LIMIT 8",
        )
        step("the fleet view: each device's health (it reported at the sync), then which model versions run where")
        run("edgeloop-ingest", "fleet", "--config", str(ingest_toml))
        run("edgeloop-ingest", "fleet", "--versions", "--config", str(ingest_toml))
        export = var / "train.parquet"
        run("edgeloop-ingest", "export", "--config", str(ingest_toml), "--model", "vibration", "--labeled-only", "--out", str(export))
        print(f"    training set written to {export}")

        # The SDK stamps created_at as it logs: compare the second half of the logging with the first.
        middle = started + (logged - started) / 2
        end = logged + timedelta(seconds=1)
        window = ("--since", middle.isoformat(), "--until", end.isoformat())
        step("field performance: accuracy, per-class figures and calibration of 2.1.0, drift of the second half vs the first")
        run("edgeloop-ingest", "report", "--config", str(ingest_toml), "--model", "vibration", *window)
        page = var / "report.html"
        run("edgeloop-ingest", "report", "--config", str(ingest_toml), "--model", "vibration", *window,
            "--format", "html", "--out", str(page))
        print(f"    the same report as one self-contained HTML file: {page}")
        viewer = (var / "server" / "viewer.token").read_text().strip()
        if args.keep:
            stop(agent, "device agent")
            processes.remove((agent, "device agent"))
            step("the dashboard: the server keeps running until Ctrl-C")
            print(f"    open    {url}/dashboard")
            print(f"    log in with the viewer token: {viewer}")
            print(f"    (the file {var / 'server' / 'viewer.token'}; read-only: the dashboard and SQL, never devices)")
            print(f"    JSON:   curl -H 'Authorization: Bearer {viewer}' {url}/v1/dashboard/overview", flush=True)
            _wait_for_interrupt(server)
        else:
            print(f"\n    To see the dashboard, run ./scripts/demo --keep: it leaves the server running and prints "
                  f"its URL ({url}/dashboard here) and a viewer token.")
    finally:
        step("stopping what the demo started")
        for process, name in reversed(processes):
            stop(process, name)
    print(f"\nDone. Files are under {var}; logs in {logs}.")
    return 0


def _wait_for_interrupt(server: subprocess.Popen) -> None:
    """Until Ctrl-C (or SIGTERM), or the server exits on its own."""
    stopping: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        while not stopping and server.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print()
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
