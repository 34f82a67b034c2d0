"""A throw-away PostgreSQL cluster for the lake tests: initdb into a temp dir, a free loopback port, stopped at the end.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it); nothing uses a
system service. initdb refuses to run as root, so as root the cluster runs as ``postgres``.
A test run that is killed cannot stop its cluster, so each cluster names the process that owns
it and a new one first stops those whose owner is gone.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresCluster", "postgres_bin", "reap_orphans", "running"]


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin directory, or wherever initdb is on PATH; None if there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


OWNER_FILE = "owner.pid"


def running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap a dead process, such as a daemonized postmaster)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def reap_orphans(bin_dir: Path, temp_dir: Path | None = None) -> list[Path]:
    """Stop and remove the clusters of test runs that died without stopping them; the folders removed."""
    reaped = []
    for folder in sorted(Path(temp_dir or tempfile.gettempdir()).glob("edgeloop-pg-*")):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge: being set up, or made before owners were recorded
        if running(owner):
            continue
        command = [str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
        reaped.append(folder)
    return reaped


class PostgresCluster:
    """One cluster; ``database()`` makes a fresh database and returns its libpq connection string."""

    def __init__(self, bin_dir: Path) -> None:
        reap_orphans(bin_dir)
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="edgeloop-pg-"))
        (self.folder / OWNER_FILE).write_text(str(os.getpid()))
        self.port = _free_port()
        self._count = 0
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        # Test data: nothing to keep across a crash of the machine, so no fsync.
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "-t", "60", "start")

    def _run(self, tool: str, *args: str) -> str:
        command = [str(self.bin_dir / tool), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def database(self) -> str:
        """A new, empty database."""
        self._count += 1
        name = f"lake{self._count}_{os.getpid()}"
        self.sql(f"CREATE DATABASE {name}")
        return self.conninfo(name)

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._run("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                         "-d", database, "-c", statement)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (self.folder / "data" / "postmaster.pid").exists():
                time.sleep(0.1)
            shutil.rmtree(self.folder, ignore_errors=True)
