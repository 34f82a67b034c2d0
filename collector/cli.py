"""``edgeloop-collector``: run the device agent and look after its spool.

Exit codes: 0 success · 1 an error (one line on stderr; for ``sync --wait``: the sync did not
send everything; for ``status``: an agent holds the state dir but does not answer) · 2 bad
usage · 3 ``status``: the agent is not running (either way the spool is still reported, read from disk)
· 141 stdout's reader went away (``| head``), quietly, as a tool ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from edgeloop.commandline import refuse_options_before_the_command
from edgeloop.times import bounded
from edgeloop.units import duration, size, text_table

if TYPE_CHECKING:
    from edgeloop.collector.config import CollectorConfig

__all__ = ["main", "read_fleet_key"]

DEFAULT_CONFIG = "/etc/edgeloop/collector.toml"
MIN_KEY_BYTES = 16
MIN_KEY_BITS = 64  # estimated: length x the Shannon entropy of its bytes
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


class _Failure(Exception):
    """A one-line error for stderr, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def read_fleet_key(path: Path) -> bytes:
    """The fleet key: the file's bytes as they are (base64 text is not decoded), trailing
    whitespace stripped; at least 16 bytes, not guessable, writable and readable only by its owner."""
    from edgeloop.errors import ConfigError

    try:
        info = path.stat()
        key = path.read_bytes().rstrip(b" \t\r\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fleet key: {exc.strerror}") from exc
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path}: the fleet key is writable by others, who could swap it (chmod go-w {path})")
    if info.st_mode & stat.S_IROTH:
        raise ConfigError(f"{path}: the fleet key is readable by everyone (chmod o-r {path})")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{path}: the fleet key has {len(key)} bytes; it needs at least {MIN_KEY_BYTES}")
    bits = key_entropy_bits(key)
    if bits < MIN_KEY_BITS:
        raise ConfigError(
            f"{path}: the fleet key looks guessable (about {bits:.0f} bits; at least {MIN_KEY_BITS} needed):"
            " make one with `head -c 32 /dev/urandom | base64`"
        )
    return key


def key_entropy_bits(key: bytes) -> float:
    """An upper estimate of a key's entropy: its length times the Shannon entropy of its bytes.
    A repeated or dictionary-like key (``aaaa...``, ``abcdabcd...``, ``password12345678``) scores low."""
    import math
    from collections import Counter

    # A key that repeats a shorter piece has no more entropy than that piece.
    period = next((p for p in range(1, len(key) // 2 + 1) if key == (key[:p] * (len(key) // p + 1))[: len(key)]), len(key))
    piece = key[:period]
    counts = Counter(piece)
    per_byte = -sum(n / len(piece) * math.log2(n / len(piece)) for n in counts.values())
    return per_byte * len(piece)


# -- commands ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from edgeloop.collector.footprint import bound_allocator, keep_out_unused_modules

    keep_out_unused_modules()  # before anything imports pyarrow
    config = _config(args)
    bound_allocator(config.agent.malloc_arenas)
    from edgeloop.collector.agent import Agent
    from edgeloop.collector.config import CollectorConfig
    from edgeloop.collector.notify import Notifier
    from edgeloop.logs import configure_logging

    configure_logging(config.agent.log_level, json=config.agent.log_json)
    key = read_fleet_key(config.agent.key_file)
    agent = Agent(
        config,
        fleet_key=key,
        notifier=Notifier.from_env(os.environ),
        reload_config=lambda: CollectorConfig.load(args.config),
    )
    return asyncio.run(agent.run())


def cmd_check_config(args: argparse.Namespace) -> int:
    from edgeloop.collector.config import check_policy_files, check_sampling_models
    from edgeloop.collector.privacy import load_detector
    from edgeloop.schemas.registry import EXAMPLES_DIR, SchemaRegistry

    config = _config(args)
    registry = SchemaRegistry.from_dir(config.agent.schemas_dir or EXAMPLES_DIR)
    if not len(registry):
        raise _Failure(f"{config.agent.schemas_dir}: no schema files (*.toml) in the schemas folder")
    check_sampling_models(config.sampling, (schema.name for schema in registry))
    check_policy_files(config.policy, registry)
    if config.privacy.detector:
        load_detector(config.privacy.detector)
    read_fleet_key(config.agent.key_file)
    _check_writable(config.agent.state_dir, "state_dir")
    _check_writable(config.agent.socket.parent, "socket folder")
    sync = config.sync
    if sync.enabled and sync.url:
        for name, path in (("sync.token_file", sync.token_file), ("sync.ca_file", sync.ca_file)):
            if path is not None and not os.access(path, os.R_OK):
                raise _Failure(f"{name}: {path} does not exist or is not readable")
        if sync.token_file is None:
            raise _Failure("sync.token_file: needed when sync.url is set")
        _check_token_file(sync.token_file)
        if sync.ca_file is not None:
            _check_ca_file(sync.ca_file)
    models = ", ".join(schema.name for schema in registry)
    print(f"config OK: {args.config} (models: {models}; state in {config.agent.state_dir})")
    return EXIT_OK


def _check_ca_file(path: Path) -> None:
    """The CA bundle loads as the sync will load it, so a wrong file is found before the nightly sync fails."""
    import ssl

    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise _Failure(f"sync.ca_file: {path} holds no usable CA certificate: {exc}") from exc


def _check_token_file(path: Path) -> None:
    """The device token is a secret: refuse an empty file and one everybody can read."""
    if path.stat().st_mode & stat.S_IROTH:
        raise _Failure(f"sync.token_file: {path} is readable by everyone (chmod o-r {path})")
    if not path.read_text(encoding="utf-8", errors="replace").strip():
        raise _Failure(f"sync.token_file: {path} is empty (put the token from `edgeloop-ingest devices add` in it)")


def cmd_init_config(args: argparse.Namespace) -> int:
    from edgeloop.collector.config import EXAMPLE_CONFIG, UNIT_FILE

    sys.stdout.write((UNIT_FILE if args.systemd else EXAMPLE_CONFIG).read_text(encoding="utf-8"))
    return EXIT_OK


def cmd_pseudonym(args: argparse.Namespace) -> int:
    """Print the HMAC the `hash` rule stores for VALUE, so an operator can find a person's rows."""
    from edgeloop.collector.privacy import Privacy
    from edgeloop.times import from_iso

    config = _config(args)
    key = read_fleet_key(config.agent.key_file)
    raw: str = args.value
    try:
        value: Any = {
            "string": str,
            "int": int,
            "float": float,
            "bool": lambda text: {"true": True, "false": False}[text.lower()],
            "timestamp": from_iso,  # a leap second as the agent reads it
        }[args.type](raw)
    except (ValueError, KeyError):
        raise _Failure(f"{raw!r} is not a {args.type}") from None
    if args.type == "timestamp" and value.tzinfo is None:
        raise _Failure(f"{raw!r}: give the timestamp's UTC offset (2026-11-26T06:00:00+00:00)")
    if args.type == "timestamp":
        try:
            bounded(value)  # the agent refuses such a record, so it has no pseudonym to find
        except ValueError as exc:
            raise _Failure(str(exc)) from None
    print(Privacy(key).hash(value))
    return EXIT_OK


def _check_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-config-"):
            pass
    except OSError as exc:
        raise _Failure(f"{what}: {folder} is not writable: {exc.strerror}") from exc


def cmd_status(args: argparse.Namespace) -> int:
    from edgeloop.errors import AgentUnavailableError

    socket_path, config = _socket_and_config(args, need_config=False)
    try:
        status_code, report = _call(socket_path, "GET", "/v1/status", timeout_s=args.timeout or 30.0)
    except AgentUnavailableError as exc:
        report = _offline_status(config, socket_path, str(exc))
        # An agent that holds the state dir but does not answer is hung, not stopped.
        code = EXIT_ERROR if report["agent"]["running"] else EXIT_NOT_RUNNING
    else:
        if status_code != 200:
            raise _Failure(_error_line(status_code, report))
        code = EXIT_OK
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(_format_status(report))
    return code


def _offline_status(config: CollectorConfig | None, socket_path: Path, why: str) -> dict[str, Any]:
    """What the disk says when the agent does not answer."""
    report: dict[str, Any] = {"agent": {"running": False, "socket": str(socket_path), "error": why}}
    if config is None:
        return report
    holder = _lock_holder(config.agent.state_dir / "agent.lock")
    if holder is not None:
        report["agent"].update(running=True, answering=False, pid=holder)
    from edgeloop.collector.spool import describe_batch

    state = config.agent.state_dir
    batches, unreadable = [], 0
    for path in sorted((state / "batches").glob("*.parquet")):
        try:
            batches.append(describe_batch(path))
        except Exception:
            unreadable += 1
    journal = [path for path in (state / "journal").rglob("*.wal") if path.is_file()]
    report["spool"] = {
        "batches": len(batches),
        "records": sum(batch.rows for batch in batches),
        "bytes": sum(batch.bytes for batch in batches),
        "unreadable": unreadable,
        "oldest_record_age_s": round(max(batch.age_s() for batch in batches), 3) if batches else None,
        "rejected": len(list((state / "rejected").glob("*.parquet"))),
        "quarantined": sum(1 for _ in (state / "quarantine").glob("*")),
        "budget_bytes": config.spool.max_bytes,
    }
    report["journal"] = {"segments": len(journal), "bytes_on_disk": sum(path.stat().st_size for path in journal)}
    report["sync"] = _offline_sync(config)
    return report


def _offline_sync(config: CollectorConfig) -> dict[str, Any]:
    """What the agent's last run saved of sync (its backoff, its last result): true until the agent runs again."""
    from edgeloop.collector.sync_state import SYNC_STATE_FILE, SyncState

    settings = config.sync
    saved = SyncState.load(config.agent.state_dir / SYNC_STATE_FILE)
    last = saved.last_result
    return {
        "enabled": settings.enabled,
        "configured": settings.enabled and settings.url is not None,
        "url": settings.url,
        "last_sync_at": last.get("started_at") if last else None,
        "last_result": last,
        "next_sync_at": saved.next_sync_at,
        "retry_at": saved.retry_at,
        "retries_in_a_row": saved.failures_in_a_row,
        "last_success_at": saved.last_success_at,
        "running": False,
    }


def _lock_holder(lock_file: Path) -> int | None:
    """The pid holding the agent's lock on ``lock_file``, read from /proc/locks (taking the lock to test it would race a starting agent)."""
    try:
        info = lock_file.stat()
        locks = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in locks.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiter's line has "->" after the number.
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        major, minor, inode = (fields[5].split(":") + ["", "", ""])[:3]
        try:
            if (int(inode), int(major, 16), int(minor, 16)) == (info.st_ino, os.major(info.st_dev), os.minor(info.st_dev)):
                return int(fields[4])
        except ValueError:
            continue
    return None


def cmd_flush(args: argparse.Namespace) -> int:
    socket_path, _ = _socket_and_config(args, need_config=False)
    status_code, answer = _call(socket_path, "POST", "/v1/flush", timeout_s=args.timeout or 30.0)
    if status_code != 200:
        raise _Failure(_error_line(status_code, answer))
    if args.json:
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    else:
        rows = sum(batch["rows"] for batch in answer["batches"])
        print(f"sealed {answer['sealed']} batches ({rows} records)")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    socket_path, _ = _socket_and_config(args, need_config=False)
    # A waited-for sync takes as long as the upload does; the agent bounds it, not this call.
    timeout_s = args.timeout if args.timeout is not None else (86400.0 if args.wait else 30.0)
    status_code, answer = _call(socket_path, "POST", "/v1/sync", {"wait": args.wait}, timeout_s=timeout_s)
    if status_code != 200:
        raise _Failure(_error_line(status_code, answer))
    if answer.get("outcome") == "skipped":
        raise _Failure(f"sync skipped: {answer.get('reason')}")
    if args.json or args.wait:
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    else:
        started = "sync started in the background: `edgeloop-collector status` shows how it ended (--wait waits for it)"
        print(started if answer.get("started") else orjson.dumps(answer).decode())
    if args.wait and answer.get("outcome") != "ok":
        # Scripts and health checks read the exit code: anything left unsent is a failure.
        raise _Failure(f"sync {answer.get('outcome')}: {answer.get('reason')}")
    return EXIT_OK


def cmd_spool_list(args: argparse.Namespace) -> int:
    from edgeloop.collector.spool import describe_batch

    config = _config(args)
    state = config.agent.state_dir
    rows: list[dict[str, Any]] = []
    for folder, where in (("batches", "pending"), ("rejected", "rejected")):
        for path in sorted((state / folder).glob("*.parquet")):
            entry: dict[str, Any] = {"batch_id": path.stem, "state": where, "file": str(path)}
            try:
                batch = describe_batch(path)
            except Exception as exc:
                entry.update(model=None, rows=None, bytes=path.stat().st_size, age_s=None, problem=str(exc))
            else:
                entry.update(
                    model=batch.model,
                    rows=batch.rows,
                    bytes=batch.bytes,
                    age_s=round(batch.age_s(), 1),
                )
            if where == "rejected":
                reason = path.with_name(f"{path.stem}.error.json")
                entry["reason"] = orjson.loads(reason.read_bytes()) if reason.exists() else None
            rows.append(entry)
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    table = [["BATCH", "STATE", "MODEL", "ROWS", "BYTES", "AGE"]]
    for entry in rows:
        table.append(
            [
                entry["batch_id"],
                entry["state"],
                entry["model"] or "?",
                "?" if entry["rows"] is None else str(entry["rows"]),
                size(entry["bytes"]),
                duration(entry["age_s"], missing="?"),
            ]
        )
    print(text_table(table))
    pending = [entry for entry in rows if entry["state"] == "pending"]
    total = sum(entry["rows"] or 0 for entry in pending)
    print(f"{len(pending)} pending batches, {total} records; {len(rows) - len(pending)} rejected")
    return EXIT_OK


def cmd_spool_verify(args: argparse.Namespace) -> int:
    from edgeloop.collector.agent import lock_state_dir
    from edgeloop.collector.spool import verify_batch
    from edgeloop.errors import EdgeloopError

    config = _config(args)
    state = config.agent.state_dir
    lock = None
    if args.quarantine:
        try:
            lock = lock_state_dir(state)
        except EdgeloopError:
            raise _Failure(f"{state}: the agent is running; stop it before `spool verify --quarantine`") from None
    try:
        results = []
        for path in sorted((state / "batches").glob("*.parquet")):
            try:
                batch = verify_batch(path)
            except ValueError as exc:
                results.append({"batch_id": path.stem, "ok": False, "problem": str(exc)})
            else:
                results.append({"batch_id": path.stem, "ok": True, "rows": batch.rows, "model": batch.model})
        bad = [result for result in results if not result["ok"]]
        if args.quarantine and bad:
            from edgeloop.durable import move_durably

            for result in bad:
                path = state / "batches" / f"{result['batch_id']}.parquet"
                result["quarantined"] = str(move_durably(path, state / "quarantine" / path.name))
    finally:
        if lock is not None:
            os.close(lock)
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        for result in bad:
            moved = " (quarantined)" if result.get("quarantined") else ""
            print(f"BAD {result['batch_id']}: {result['problem']}{moved}")
        print(f"{len(results) - len(bad)} of {len(results)} batches OK")
    return EXIT_ERROR if bad and not args.quarantine else EXIT_OK


def cmd_spool_requeue(args: argparse.Namespace) -> int:
    from edgeloop.collector.agent import lock_state_dir
    from edgeloop.errors import EdgeloopError

    config = _config(args)
    state = config.agent.state_dir
    body: dict[str, Any] = {"all": True} if args.all else {"batches": args.batches}
    if not (state / "rejected").is_dir():
        if args.batches:
            raise _Failure(f"no rejected batch {args.batches[0]} ({state} holds no spool)")
        print("no rejected batches to requeue")
        return EXIT_OK
    try:
        lock = lock_state_dir(state)
    except EdgeloopError:  # the agent runs: it moves the files and updates its own index of the spool
        status_code, answer = _call(config.agent.socket, "POST", "/v1/spool/requeue", body, timeout_s=args.timeout)
        if status_code != 200:
            raise _Failure(_error_line(status_code, answer)) from None
        requeued = answer["requeued"]
    else:
        try:
            requeued = _requeue_offline(config, args.batches or None)
        finally:
            os.close(lock)
    if args.json:
        print(orjson.dumps(requeued, option=orjson.OPT_INDENT_2).decode())
    elif not requeued:
        print("no rejected batches to requeue")
    else:
        rows = sum(batch["rows"] for batch in requeued)
        print(f"requeued {len(requeued)} batches ({rows} records); the next sync sends them")
    return EXIT_OK


def _requeue_offline(config: CollectorConfig, batch_ids: list[str] | None) -> list[dict[str, Any]]:
    """The agent is stopped (we hold its lock): move the files ourselves."""
    from edgeloop import __version__
    from edgeloop.collector.spool import Spool, is_batch_id

    spool = Spool(config.agent.state_dir, config.spool, agent_version=__version__)
    if batch_ids is None:
        batch_ids = [path.stem for path in spool.rejected()]
    bad = [batch_id for batch_id in batch_ids if not is_batch_id(batch_id)]
    if bad:
        raise _Failure(f"{bad[0]!r} is not a batch id")
    missing = [batch_id for batch_id in batch_ids if not (spool.rejected_dir / f"{batch_id}.parquet").is_file()]
    if missing:  # checked first, so a typo moves nothing
        raise _Failure(f"no rejected batch {missing[0]} (see `edgeloop-collector spool list`)")
    requeued = []
    for batch_id in batch_ids:
        batch = spool.requeue(batch_id)
        requeued.append({"batch_id": batch.batch_id, "model": batch.model, "rows": batch.rows, "bytes": batch.bytes})
    return requeued


# -- helpers ---------------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> CollectorConfig:
    from edgeloop.collector.config import CollectorConfig

    path = Path(args.config)
    if not path.exists():
        raise _Failure(
            f"{path}: no such config file (give --config FILE or $EDGELOOP_CONFIG; "
            f"`edgeloop-collector init-config > {DEFAULT_CONFIG}` writes one)"
        )
    return CollectorConfig.load(path)


def _socket_and_config(args: argparse.Namespace, *, need_config: bool) -> tuple[Path, CollectorConfig | None]:
    from edgeloop.errors import ConfigError

    config = None
    if args.socket is None or Path(args.config).exists():
        try:
            config = _config(args)
        except ConfigError:
            if args.socket is None or need_config:
                raise
    socket_path = Path(args.socket) if args.socket else config.agent.socket  # type: ignore[union-attr]
    return socket_path, config


def _call(socket_path: Path, method: str, path: str, body: Any = None, *, timeout_s: float) -> tuple[int, Any]:
    from edgeloop.collector.client import call_agent
    from edgeloop.errors import AgentUnavailableError

    try:
        return call_agent(socket_path, method, path, body, timeout_s=timeout_s)
    except AgentUnavailableError as exc:
        # A socket this user may not open is no stopped or hung agent: say whose it is.
        if isinstance(exc.__cause__, PermissionError):
            raise _Failure(_denied_line(socket_path, "cannot talk to the agent at")) from exc
        raise


def _denied_line(path: Path, doing: str) -> str:
    """One line for a file of the agent's that this user may not use, naming its owner and group."""
    import getpass
    import grp
    import pwd

    for existing in (path, *path.parents):  # the nearest one this user may stat: a file under a closed folder is not
        try:
            info = existing.stat()
            owner = pwd.getpwuid(info.st_uid).pw_name
            group = grp.getgrgid(info.st_gid).gr_name
            break
        except (OSError, KeyError):
            continue
    else:
        return f"{doing} {path}: permission denied for user {getpass.getuser()} (try sudo)"
    return (
        f"{doing} {path}: permission denied for user {getpass.getuser()} ({existing} belongs to {owner}:{group}):"
        f" run it with sudo, or as a member of group {group}"
    )


def _error_line(status_code: int, answer: Any) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return f"agent answered {status_code}: {answer['error'].get('message')}"
    return f"agent answered {status_code}: {str(answer)[:200]}"


def _format_status(report: dict[str, Any]) -> str:
    agent = report["agent"]
    lines = []
    if agent.get("running") and agent.get("answering", True):
        lines.append(
            f"agent      running, pid {agent['pid']}, version {agent['version']}, "
            f"up {duration(agent['uptime_s'])}, on {agent['socket']}"
        )
    elif agent.get("pid"):
        lines.append(
            f"agent      NOT ANSWERING: pid {agent['pid']} holds the state dir but does not answer"
            f" ({agent['error']}); spool read from disk"
        )
    else:
        lines.append(f"agent      NOT RUNNING ({agent['error']}); spool read from disk")
    spool = report.get("spool")
    if spool:
        age = spool.get("oldest_record_age_s")
        lines.append(
            f"spool      {spool['batches']} batches, {spool['records']} records, {size(spool['bytes'])}"
            f" of {size(spool['budget_bytes'])}; oldest record "
            + ("-" if age is None else f"{duration(age)} old")
        )
        unreadable = spool.get("unreadable")
        lines.append(
            f"           {spool['rejected']} rejected, {spool['quarantined']} quarantined"
            + (f", {unreadable} unreadable batch file{'s' if unreadable > 1 else ''} (quarantined on next start)" if unreadable else "")
        )
    journal = report.get("journal")
    if journal:
        if "records" in journal:
            lines.append(
                f"journal    {journal['records']} records not sealed yet, {size(journal['bytes'])}"
                f" in {journal['open_segments'] + journal['sealing_segments'] + journal['unsealed_segments']} segments"
            )
            if journal.get("writable") is False:
                lines.append(
                    f"           CANNOT BE WRITTEN since {journal['write_error_since']} ({journal['write_error']}):"
                    " new records are refused; those accepted are kept"
                )
        else:
            lines.append(
                f"journal    {journal['segments']} segments, {size(journal['bytes_on_disk'])} (sealed on next start)"
            )
    disk = report.get("disk")
    if disk:
        state = f"FULL since {disk['full_since']}" if disk.get("full") else "ok"
        lines.append(
            f"disk       {state}, {size(disk['free_bytes'])} free; seal reserve "
            f"{size(disk['seal_reserve_held_bytes'])} of {size(disk['seal_reserve_bytes'])} held"
        )
        if disk.get("full"):
            lines.append("           " + _why_full(disk))
    drops = report.get("drops")
    if drops:
        total = drops["total"]
        text = ", ".join(f"{reason} {count}" for reason, count in sorted(total.items())) or "none"
        lines.append(f"drops      {text} (since the agent started)")
    sync = report.get("sync")
    if sync:
        if not sync.get("enabled"):
            lines.append("sync       disabled")
        else:
            last = sync.get("last_result")
            outcome = last.get("outcome", last) if isinstance(last, dict) else last
            lines.append(
                f"sync       last {sync.get('last_sync_at') or 'never'} ({outcome or '-'}), "
                f"next {sync.get('next_sync_at') or '-'}" + (", running now" if sync.get("running") else "")
            )
            if sync.get("retry_at") or sync.get("retries_in_a_row"):
                lines.append(
                    f"           retrying at {sync.get('retry_at') or 'the next sync'} (failed {sync['retries_in_a_row']} "
                    f"in a row; last success {sync.get('last_success_at') or 'never'})"
                )
            if isinstance(last, dict) and last.get("outcome") not in ("ok", "skipped") and last.get("reason"):
                lines.append(f"           last error: {last['reason']}")
    policies = report.get("policies")
    if policies:
        running = ", ".join(f"{model} {version}" for model, version in sorted(policies["models"].items())) or "-"
        fetched = policies.get("last_fetch") or {}
        lines.append(
            f"policies   {running}; remote {policies['remote']}, last fetch "
            + (f"{fetched['at']} ({fetched['outcome']})" if fetched else "never")
        )
    health = report.get("health")
    if health:
        lines += _format_health(health, syncing=bool(sync and sync.get("configured")))
    return "\n".join(lines)


def _why_full(disk: dict[str, Any]) -> str:
    """Why the agent calls a disk with free bytes full: the room it keeps for others, or the seal reserve."""
    reserve = disk.get("reserve_free_bytes")
    if reserve is not None and disk["free_bytes"] < reserve:
        return (f"under spool.reserve_free_bytes ({size(reserve)}), kept free for the rest of the device:"
                " new records get 507 disk_full; free space or lower the setting")
    if disk["seal_reserve_held_bytes"] < disk["seal_reserve_bytes"]:
        return (f"the seal reserve (spool.seal_reserve_bytes, {size(disk['seal_reserve_bytes'])}) cannot be held:"
                " new records get 507 disk_full; free space or lower the setting")
    return "a write met a full disk: new records get 507 disk_full until one succeeds"


def _format_health(health: dict[str, Any], *, syncing: bool) -> list[str]:
    """The facts the status document sent at sync adds: versions in use, sampling, clock, the last report."""
    lines = []
    for model in health["models"]:
        lines.append(f"model      {model['model']} (schema {model['schema_fingerprint'][:12]}), "
                     f"versions logged: {', '.join(model['versions']) or 'none yet'}")
    sampling = health["sampling"]
    rules = [f"default keep {sampling['default']['keep_rate']:g}"] + [
        f"{name} keep {rule['keep_rate']:g}" for name, rule in sampling["models"].items()
    ]
    lines.append(f"sampling   {'; '.join(rules)}")
    clock = health["clock"]
    synced = {True: "synchronized", False: "NOT synchronized", None: "unknown"}[clock["synchronized"]]
    offset = "" if clock["last_offset_s"] is None else f"; server saw an offset of {clock['last_offset_s']:+.3f}s"
    lines.append(f"clock      NTP {synced}{offset}")
    last = health.get("last_report")
    if last is None and not syncing:
        pass  # no sync, no report: the sync line says why
    elif last is None:
        lines.append(f"report     none sent yet (one per sync; expected every {duration(health['sync_window_s'])})")
    elif last["stored"]:
        lines.append(f"report     stored, sent {last['sent_at']}")
    else:
        lines.append(f"report     NOT stored ({last['error']})")
    return lines


# -- argument parsing -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=os.environ.get("EDGELOOP_CONFIG", DEFAULT_CONFIG),
        help=f"the collector's TOML config (default: $EDGELOOP_CONFIG or {DEFAULT_CONFIG})",
    )
    talk = argparse.ArgumentParser(add_help=False)
    talk.add_argument("--socket", help="the agent's unix socket (default: agent.socket_path from the config)")
    talk.add_argument(
        "--timeout", type=_timeout_s, help="seconds to wait for the agent (default 30; sync --wait: until the sync ends)"
    )

    parser = argparse.ArgumentParser(
        prog="edgeloop-collector",
        description="The edgeloop device agent: collects, anonymizes and spools model records, then syncs them.",
        epilog="Exit codes: 0 ok, 1 error (sync --wait: the sync failed; status: the agent runs but does not answer), 2 bad usage, 3 (status) agent not running, 141 stdout's reader went away (| head).",
    )
    from edgeloop import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", parents=[common], help="run the agent in the foreground (what the systemd unit starts)"
    )
    run.set_defaults(func=cmd_run)

    status = commands.add_parser(
        "status",
        parents=[common, talk],
        help="what the agent holds: spool, journal, drops, sync; from disk if the agent is down (exit 3)",
    )
    status.add_argument("--json", action="store_true", help="print the full report as JSON")
    status.set_defaults(func=cmd_status)

    flush = commands.add_parser("flush", parents=[common, talk], help="seal the records in the journal into batches now")
    flush.add_argument("--json", action="store_true", help="print the sealed batches as JSON")
    flush.set_defaults(func=cmd_flush)

    sync = commands.add_parser("sync", parents=[common, talk], help="start a sync of the spool now")
    sync.add_argument(
        "--wait", action="store_true", help="wait for the sync to finish, print its result, exit 1 unless it sent everything"
    )
    sync.add_argument("--json", action="store_true", help="print the answer as JSON")
    sync.set_defaults(func=cmd_sync)

    check = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the config, schemas, fleet key and state dir; one-line error and exit 1 on a problem",
    )
    check.set_defaults(func=cmd_check_config)

    init = commands.add_parser(
        "init-config",
        help="print a complete, commented config (every setting with its default): "
        "edgeloop-collector init-config > /etc/edgeloop/collector.toml",
    )
    init.add_argument("--systemd", action="store_true", help="print the systemd unit file instead")
    init.set_defaults(func=cmd_init_config)

    pseudonym = commands.add_parser(
        "pseudonym",
        parents=[common],
        help="print the HMAC a `hash` field stores for VALUE (find a person's rows on the server; the key stays here)",
    )
    pseudonym.add_argument("value", metavar="VALUE", help="the value as the app sends it, e.g. an e-mail")
    pseudonym.add_argument(
        "--type",
        choices=["string", "int", "float", "bool", "timestamp"],
        default="string",
        help="the field's type (default string): numbers and timestamps are hashed in canonical form",
    )
    pseudonym.set_defaults(func=cmd_pseudonym)

    spool = commands.add_parser("spool", help="inspect the sealed batches on disk (works with the agent down)")
    spool_commands = spool.add_subparsers(dest="spool_command", required=True, metavar="SPOOL_COMMAND")
    listing = spool_commands.add_parser(
        "list", parents=[common], help="list pending and rejected batches: id, model, rows, bytes, age"
    )
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.set_defaults(func=cmd_spool_list)
    verify = spool_commands.add_parser(
        "verify",
        parents=[common],
        help="read every pending batch fully and check metadata and schema fingerprint; exit 1 if any is bad",
    )
    verify.add_argument("--json", action="store_true", help="print one result per batch as JSON")
    verify.add_argument(
        "--quarantine", action="store_true", help="move bad batches to quarantine/ (only while the agent is stopped)"
    )
    verify.set_defaults(func=cmd_spool_verify)
    requeue = spool_commands.add_parser(
        "requeue",
        parents=[common],
        help="move rejected batches back to the pending spool, for the next sync (agent running or not)",
    )
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("batches", nargs="*", default=[], metavar="BATCH", help="batch ids, as `spool list` shows them")
    which.add_argument("--all", action="store_true", help="every rejected batch")
    requeue.add_argument("--json", action="store_true", help="print the requeued batches as JSON")
    requeue.add_argument("--timeout", type=_timeout_s, default=30.0, help="seconds to wait for a running agent (default 30)")
    requeue.set_defaults(func=cmd_spool_requeue)
    return parser


def _timeout_s(text: str) -> float:
    """--timeout: seconds above 0, finite (a socket refuses -1, nan and inf with a traceback)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"must be seconds above 0 and at most a year, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeloop-collector``; returns the exit code."""
    parser = _parser()
    refuse_options_before_the_command(parser, sys.argv[1:] if argv is None else list(argv), "status --config FILE")
    args = parser.parse_args(argv)
    if args.command == "run":
        _prepare_agent_process()
    from edgeloop.errors import EdgeloopError

    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _Failure as exc:
        _error(str(exc))
        return exc.code
    except BrokenPipeError:  # the reader of stdout went away (| head): nothing to say to anyone
        from edgeloop.pipe import closed_pipe_exit

        return closed_pipe_exit()
    except PermissionError as exc:
        _error(_denied_line(Path(exc.filename), "cannot use") if exc.filename else str(exc))
        return EXIT_ERROR
    except (EdgeloopError, OSError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _prepare_agent_process() -> None:
    """Memory settings that only work before pyarrow loads, when this process is the agent.

    Arrow on the system allocator gives freed memory back to the OS (the agent trims the
    heap after each seal; mimalloc and jemalloc keep it cached), and pyarrow is kept from
    loading numpy, which the agent never uses (about 14 MB of RSS on a small device).
    """
    if "pyarrow" in sys.modules:
        return  # imported by an embedding program: too late, and not ours to change
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]


def _error(message: str) -> None:
    line = " ".join(message.split())
    print(f"edgeloop-collector: error: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
