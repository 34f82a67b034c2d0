"""What every row shares: its result line (``Row``), the run's context (``Bench``) and the processes it starts.

Every process a row starts runs on loopback and is stopped by its pid (TERM, then KILL)
when the row's ``with`` block ends; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
FLEET_KEY = bytes(range(32))  # privacy needs a key; its value does not change sizes


class Unavailable(Exception):
    """A reference or part this machine cannot run; the row says so instead of a figure."""


@dataclass(frozen=True)
class Goal:
    """A target a row's median must meet: ``figure`` is "edgeloop" or "ratio"."""

    figure: str
    op: str  # ">=" or "<="
    value: float

    def met(self, edgeloop: float | None, ratio: float | None) -> bool | None:
        got = edgeloop if self.figure == "edgeloop" else ratio
        if got is None:
            return None
        return got >= self.value if self.op == ">=" else got <= self.value

    def text(self, unit: str) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.figure == "ratio":
            return f"{sign} {self.value:g}x"
        value = f"{self.value:,.0f}" if self.value >= 1000 else f"{self.value:g}"
        return f"{sign} {value} {unit}".rstrip()


@dataclass
class Row:
    """One line of the table from one run: edgeloop's figure next to the reference's."""

    number: int
    what: str
    unit: str
    edgeloop: float | None
    reference_name: str = ""
    reference: float | None = None
    goals: tuple[Goal, ...] = ()
    note: str = ""
    unavailable: str = ""  # why the row could not be measured here, if it could not

    @property
    def ratio(self) -> float | None:
        if self.edgeloop is None or not self.reference:
            return None
        return self.edgeloop / self.reference

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.number, self.what, self.reference_name)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Bench:
    """One benchmark run's context, handed to every row."""

    quick: bool
    work: Path
    registry: SchemaRegistry = field(default_factory=lambda: SchemaRegistry.from_dir(EXAMPLES_DIR))
    details: dict[str, Any] = field(default_factory=dict)  # this run's extra figures, kept in the JSON
    _folders: int = 0

    def log(self, message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    def folder(self, name: str) -> Path:
        """A fresh folder in the work dir (runs repeat, so names get a counter)."""
        self._folders += 1
        path = self.work / f"{self._folders:03d}-{name}"
        path.mkdir(parents=True)
        return path


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


@contextlib.contextmanager
def process(args: list[str], *, log: Path, env: dict[str, str] | None = None, **kwargs: Any) -> Iterator[subprocess.Popen]:
    """Start a process and stop it (by its pid: TERM, then KILL) when the block ends."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, **kwargs)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, timeout_s: float = 120) -> float:
    """TERM, wait (up to ``timeout_s``), then KILL; the seconds it took to exit."""
    started = time.perf_counter()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return time.perf_counter() - started


def wait_for(check: Callable[[], bool], *, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout_s:.0f} s")


def console_script(name: str) -> str:
    """A command installed beside this Python (the venv's bin), else on PATH."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise Unavailable(f"the {name} command is not installed")
    return found


def python_module(module: str, *args: str) -> list[str]:
    """The command line running ``python -m module`` from the repository (cwd must be ROOT)."""
    return [sys.executable, "-m", module, *args]


def debian_binary(bench: Bench, binary: str, package: str, places: tuple[str, ...] = ("/usr/sbin", "/usr/bin")) -> str:
    """A Debian package's binary; installed with apt-get when running as root, else Unavailable."""

    def find() -> str | None:
        return shutil.which(binary) or next(
            (f"{p}/{binary}" for p in places if os.access(f"{p}/{binary}", os.X_OK)), None
        )

    if found := find():
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable(f"{binary} is not installed (apt-get install {package}, as root)")
    bench.log(f"{binary} is not installed: installing Debian's {package} (running as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(install, env=env, capture_output=True, timeout=300)
    if found := find():
        return found
    raise Unavailable(f"{binary} could not be installed with apt-get install {package}")


def _rss_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and RssShmem of a process in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        return {
            key: int(value.split()[0])
            for key, _, value in (line.partition(":") for line in status)
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem")
        }


class ProcessWatch:
    """Samples processes' CPU time and RSS (summed over them) from a thread until stopped."""

    def __init__(self, *pids: int, interval_s: float = 0.05) -> None:
        import psutil

        self.procs = [psutil.Process(pid) for pid in pids]
        self.interval_s = interval_s
        self.peak_rss = 0
        self.anon_at_peak = 0  # of the peak, the private (anonymous) part; the rest is mapped files, mostly libraries
        self.peak_anon = 0
        self.samples: list[tuple[float, int]] = []  # (monotonic s, summed RSS bytes)
        self.cpu_start = self._cpu()
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sample()
        self._thread.start()

    def _cpu(self) -> float:
        total = 0.0
        for proc in self.procs:
            with contextlib.suppress(Exception):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def _sample(self) -> None:
        rss = anon = 0
        for proc in self.procs:
            with contextlib.suppress(OSError):
                parts = _rss_kib(proc.pid)
                rss += parts.get("VmRSS", 0) * 1024
                anon += parts.get("RssAnon", 0) * 1024
        if rss:
            self.samples.append((time.monotonic(), rss))
            if rss > self.peak_rss:
                self.peak_rss, self.anon_at_peak = rss, anon
            self.peak_anon = max(self.peak_anon, anon)
        cpu = self._cpu() - self.cpu_start
        self.cpu_s = max(self.cpu_s, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    @property
    def last_rss(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def median_rss(self, since: float) -> int:
        """The median RSS sampled since the monotonic time ``since`` (a steady state)."""
        values = sorted(rss for moment, rss in self.samples if moment >= since)
        return values[len(values) // 2] if values else self.last_rss

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- edgeloop's parts


class IngestServer:
    """A real ``edgeloop-ingest serve`` on a loopback port with a DuckDB file in its own folder."""

    def __init__(self, bench: Bench, name: str, *, server: str = "", store: str = "", limits: str = "", start: bool = True) -> None:
        for module in ("edgeloop.ingest.cli", "edgeloop.ingest.app"):
            try:
                __import__(module)
            except ImportError as exc:
                raise Unavailable(f"the ingest service is not importable ({exc})") from None
        self.folder = bench.folder(name)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.config = self.folder / "ingest.toml"
        self.config.write_text(
            f'[server]\nhost = "{LOOPBACK}"\nport = {self.port}\nadmin_token_file = "{self.folder / "admin.token"}"\n'
            f'log_level = "warning"\nschemas_dir = "{EXAMPLES_DIR}"\n{server}'
            f'[store]\ndb_path = "{self.folder / "edgeloop.duckdb"}"\n{store}'
            + (f"[limits]\n{limits}" if limits else "")
        )
        self.stop_s: float | None = None
        self.proc: subprocess.Popen | None = None
        self.admin = ""
        if start:
            self.start()

    def start(self) -> None:
        """Start serving (a second start after a stop serves the same database again)."""
        self.stop_s = None
        with open(self.folder / "server.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [console_script("edgeloop-ingest"), "serve", "--config", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(self._healthy, timeout_s=60, what="edgeloop-ingest serve", proc=self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}: {self.log_tail()}") from None
        self.admin = (self.folder / "admin.token").read_text().strip()

    def add_device_offline(self, name: str) -> str:
        """Register a device with the server stopped (``edgeloop-ingest devices add``); its token."""
        done = subprocess.run(
            [console_script("edgeloop-ingest"), "devices", "add", name, "--config", str(self.config)],
            capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"edgeloop-ingest devices add failed: {done.stderr[-500:]}")
        return done.stdout.strip()

    def __enter__(self) -> IngestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")[-800:]

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin}", "Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def add_devices(self, names: list[str]) -> list[str]:
        """Register devices through the admin API; their tokens, in order."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda name: self._post("/v1/devices", {"name": name})["token"], names))

    def landed(self) -> tuple[int, int]:
        """(batches, rows) landed so far."""
        answer = self._post(
            "/v1/sql", {"sql": "SELECT count(*)::BIGINT AS b, coalesce(sum(rows), 0)::BIGINT AS n FROM batches"}
        )
        row = answer["rows"][0]
        return int(row["b"]), int(row["n"])

    def rows_landed(self) -> int:
        return self.landed()[1]

    def stop(self) -> float:
        """Stop the server (its final WAL checkpoint included); the seconds that took."""
        if self.proc is None:
            return 0.0
        if self.stop_s is None:
            self.stop_s = stop(self.proc)
        return self.stop_s


def agent_config(folder: Path, *, sync_url: str | None = None, token: str = "", sampling: str = "", extra: str = "") -> Path:
    """An agent config in ``folder``: keep every record unless ``sampling`` (TOML) says otherwise."""
    (folder / "fleet.key").write_bytes(FLEET_KEY)
    (folder / "fleet.key").chmod(0o600)
    (folder / "device.token").write_text(token + "\n")
    (folder / "device.token").chmod(0o600)
    sync = (
        f'[sync]\nurl = "{sync_url}"\ntoken_file = "{folder / "device.token"}"\njitter_s = 0\n'
        "high_water_bytes = 8589934592\n"
        if sync_url is not None
        else "[sync]\nenabled = false\n"
    )
    config = folder / "collector.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{folder / "state"}"\nsocket_path = "{folder / "agent.sock"}"\n'
        f'key_file = "{folder / "fleet.key"}"\nlog_level = "warning"\n{extra}'
        "[spool]\nreserve_free_bytes = 0\nmax_bytes = 17179869184\n"
        + (sampling or "[sampling]\nseed = 1\n[sampling.default]\nkeep_rate = 1.0\n")
        + sync
    )
    return config


class Agent:
    """A real ``edgeloop-collector run`` in ``folder``, ready once its socket answers."""

    def __init__(self, folder: Path, config: Path, *, env: dict[str, str] | None = None) -> None:
        from edgeloop.collector.client import call_agent
        from edgeloop.errors import AgentUnavailableError

        self.folder, self.config = folder, config
        self.socket = folder / "agent.sock"
        self._stack = contextlib.ExitStack()
        self.proc = self._stack.enter_context(
            process([console_script("edgeloop-collector"), "run", "--config", str(config)], log=folder / "agent.log", env=env)
        )

        def ready() -> bool:
            try:
                return call_agent(self.socket, "GET", "/v1/status", timeout_s=5)[0] == 200
            except AgentUnavailableError:
                return False

        try:
            wait_for(ready, timeout_s=120, what="edgeloop-collector run", proc=self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}: {(folder / 'agent.log').read_text(errors='replace')[-800:]}") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        from edgeloop.collector.client import call_agent

        status, answer = call_agent(self.socket, method, path, body, timeout_s=600)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {answer}")
        return answer

    def command(self, *args: str, timeout_s: float = 660) -> None:
        """Run ``edgeloop-collector ARGS --config ...`` against this agent; fail loudly."""
        done = subprocess.run(
            [console_script("edgeloop-collector"), *args, "--config", str(self.config)], capture_output=True, timeout=timeout_s
        )
        if done.returncode != 0:
            raise RuntimeError(f"edgeloop-collector {args[0]} failed: {done.stderr.decode()[-500:]}")

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stack.close()
