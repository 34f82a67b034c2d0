"""``edgeloop-ingest``: run the ingest server and work with its database.

    edgeloop-ingest serve
    edgeloop-ingest devices add NAME | list | show NAME | revoke NAME | tag NAME TAG... [--remove]
    edgeloop-ingest policy set --model M FILE [--devices PATTERN] [--tag TAG] | show --model M [--device NAME]
                           | history --model M | rollback --model M [--to VERSION]
    edgeloop-ingest schemas push FILE... | list | diff FILE
    edgeloop-ingest sql "SELECT ..." | - [--format table|csv|json|parquet] [--out FILE|-]
    edgeloop-ingest export --model M [--since T] [--until T] [--labeled-only] --out train.parquet|-
    edgeloop-ingest fleet [--silent] [--state S]... [--versions [--since T]]
    edgeloop-ingest report --model M [--since T] [--until T] [--by model_version|device|none]
                    [--bucket auto|day|week|month] [--format table|json|html]
    edgeloop-ingest label-queue --model M [--strategy S] [--since T] [--limit N] [--order oldest|uncertainty]
                    --format label-studio|jsonl|csv --out FILE
    edgeloop-ingest feedback import FILE --format label-studio|jsonl|csv [--model M] [--source NAME]
    edgeloop-ingest delete --device NAME | --model M --before DATE | --where-hashed FIELD=VALUE [--yes] [--by NAME]
    edgeloop-ingest migrate --to ducklake | --check
    edgeloop-ingest check-config | init-config [--systemd] | --version

The config is --config, else $EDGELOOP_INGEST_CONFIG, else /etc/edgeloop/ingest.toml.
Errors print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import getpass
import hashlib
import importlib.util
import json
import logging
import math
import os
import shlex
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if importlib.util.find_spec("duckdb") is None:  # a device install: the server extra is left out
    sys.exit("edgeloop-ingest: DuckDB is not installed; the server needs: pip install 'edgeloop[server]'")

import orjson

from edgeloop import __version__
from edgeloop.commandline import refuse_options_before_the_command
from edgeloop.durable import write_durably
from edgeloop.errors import ConfigError, EdgeloopError
from edgeloop.ingest.admin import Admin, LocalAdmin, open_admin
from edgeloop.ingest.choices import GROUPINGS, IMPORT_FORMATS, ORDERS, PERIODS, QUEUE_FORMATS, REPORT_FORMATS, STATES
from edgeloop.ingest.connection import quote
from edgeloop.ingest.export import (
    FORMATS,
    STDOUT,
    Progress,
    ResultStream,
    copy_result,
    copy_target,
    parquet_metadata,
    training_query,
    write_result,
)
from edgeloop.pipe import closed_pipe_exit
from edgeloop.times import utc_time
from edgeloop.units import printable

# Each command imports the rest where it runs: `sql` and `export` to a file start with DuckDB and the config alone,
# without Arrow, aiohttp or the report and fleet modules (tests/test_layering.py holds them to it).
if TYPE_CHECKING:

    from edgeloop.ingest.config import IngestConfig, ServerSettings

__all__ = ["main"]

log = logging.getLogger("ingest")

DEFAULT_CONFIG = Path("/etc/edgeloop/ingest.toml")
IMPORT_CHUNK_ROWS = 5_000  # labels per admin-API call: well under its body cap


def _timestamp(text: str) -> datetime:
    try:
        return utc_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _out_path(text: str) -> Path:
    """An --out FILE that can be written whole (its folder exists, it is no folder itself), or - for stdout.

    Checked before the query runs: the temp file and the rename would otherwise fail after all the work.
    """
    path = Path(text)
    if path == STDOUT:
        return path
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: give a file name in it")
    if path.exists() and not path.is_file():  # the rename into place would replace a FIFO or a device (/dev/null)
        raise argparse.ArgumentTypeError(f"{text} is not a regular file (a FIFO, socket or device): use --out - and "
                                         "redirect stdout to it")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: the folder {folder} is not writable")
    return path


MAX_KEEP_S = 100 * 365 * 86400.0  # an INTERVAL DuckDB spells; NaN, infinity or 1e300 reached it as a conversion error


def _keep_s(text: str) -> float:
    """A --keep-s: a finite number of seconds from 0 to 100 years."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_KEEP_S:  # NaN fails both
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to {MAX_KEEP_S:.0f} (100 years)")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        help=f"ingest TOML config (default: $EDGELOOP_INGEST_CONFIG or {DEFAULT_CONFIG}; "
        "`edgeloop-ingest init-config` prints a complete one)",
    )
    common.add_argument("--db", type=Path, help="DuckDB file (overrides store.db_path)")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="reach a running server here instead of opening the database file")
    remote.add_argument("--admin-token-file", type=Path, help="admin token for --url (default: server.admin_token_file)")
    remote.add_argument("--ca-file", type=Path, help="CA or server certificate for an https --url")
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    fmt.add_argument("--out", type=_out_path, help="write to FILE (whole or not at all), or - for stdout (the default)")

    parser = argparse.ArgumentParser(
        prog="edgeloop-ingest",
        description="Land Parquet batches from edge devices in DuckDB; query and export them.",
        epilog="sql, export, fleet, report, devices, label-queue, feedback import and delete open the database "
        "directly when the server is stopped, "
        "and go through the running server's admin API when it holds the file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", parents=[common], help="run the ingest server until SIGTERM/SIGINT")
    commands.add_parser(
        "check-config", parents=[common], help="validate the config, TLS files and the database folder; one-line error"
    )
    init = commands.add_parser(
        "init-config",
        help="print a complete, commented config (every setting with its default): "
        "edgeloop-ingest init-config > /etc/edgeloop/ingest.toml",
    )
    init.add_argument("--systemd", action="store_true", help="print the systemd unit file instead")

    devices = commands.add_parser("devices", help="add, list or revoke device tokens")
    actions = devices.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common, remote], help="add a device and print its token once")
    add.add_argument("name")
    actions.add_parser("list", parents=[common, remote, fmt], help="devices with state, created, last seen, batches, rows")
    show = actions.add_parser(
        "show", parents=[common, remote],
        help="one device: state, latest status (backlog, drops, sync, disk, clock, versions), refusals, recent statuses",
    )
    show.add_argument("name")
    show.add_argument("--format", choices=("table", "json"), default="table", help="default: table")
    show.add_argument("--history", type=int, default=10, help="recent statuses to show (default 10)")
    revoke = actions.add_parser("revoke", parents=[common, remote], help="revoke a device's token at once")
    revoke.add_argument("name")
    tag = actions.add_parser("tag", parents=[common, remote], help="tag a device (policies can target a tag)")
    tag.add_argument("name")
    tag.add_argument("tags", nargs="+", metavar="TAG")
    tag.add_argument("--remove", action="store_true", help="remove these tags instead")

    policy = commands.add_parser("policy", help="sampling policies pushed to devices at their next sync")
    policy_actions = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    policy_set = policy_actions.add_parser(
        "set", parents=[common, remote], help="check a policy file against the model's schema and store it as the next version"
    )
    policy_set.add_argument("--model", required=True)
    policy_set.add_argument("file", type=Path, metavar="FILE")
    policy_set.add_argument("--devices", metavar="PATTERN", help='only devices whose name matches (fnmatch, e.g. "cam-*")')
    policy_set.add_argument("--tag", help="only devices with this tag (`devices tag`)")
    show = policy_actions.add_parser("show", parents=[common, remote], help="the latest policy of a model (or what one device gets)")
    show.add_argument("--model", required=True)
    show.add_argument("--device", help="the policy this device gets, by its name and tags")
    history = policy_actions.add_parser("history", parents=[common, remote, fmt], help="every version of a model's policy")
    history.add_argument("--model", required=True)
    rollback = policy_actions.add_parser(
        "rollback", parents=[common, remote], help="a new version copying an older one (default: the one before the latest)"
    )
    rollback.add_argument("--model", required=True)
    rollback.add_argument("--to", type=int, metavar="VERSION")

    schemas = commands.add_parser("schemas", help="register model schemas: only registered ones are accepted from devices")
    schema_actions = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    push = schema_actions.add_parser(
        "push", parents=[common, remote], help="register schema files (a new model, or a compatible new version)"
    )
    push.add_argument("files", nargs="+", type=Path, metavar="FILE")
    schema_actions.add_parser("list", parents=[common, remote, fmt], help="every registered schema: model, version, fingerprint")
    diff_parser = schema_actions.add_parser(
        "diff", parents=[common, remote], help="what a schema file changes against its model's registered versions"
    )
    diff_parser.add_argument("file", type=Path, metavar="FILE")

    sql = commands.add_parser("sql", parents=[common, remote, fmt], help="run one read-only SELECT")
    sql.add_argument("query", help='e.g. "SELECT model_version, count(*) FROM vibration GROUP BY 1"; - reads it from stdin')

    export = commands.add_parser(
        "export", parents=[common, remote], help="write a model's training set: predictions, latest label, sample weight"
    )
    export.add_argument("--model", required=True)
    export.add_argument("--since", type=_timestamp, help="predictions created at or after (ISO 8601, UTC if no zone)")
    export.add_argument("--until", type=_timestamp, help="predictions created before")
    export.add_argument("--labeled-only", action="store_true",
                        help="only predictions with a label: a value in the truth_field (any feedback if none is declared)")
    export.add_argument("--format", choices=FORMATS, default="parquet", help="default: parquet")
    export.add_argument("--out", type=_out_path, required=True, help="FILE (written whole or not at all), or - for stdout")

    fleet_parser = commands.add_parser(
        "fleet", parents=[common, remote, fmt],
        help="every device's state (ok, late, failing, silent, never_seen, revoked) and health; --versions: versions in use",
    )
    fleet_parser.add_argument("--silent", action="store_true", help="only devices that have gone silent")
    fleet_parser.add_argument("--state", action="append", choices=STATES, default=[],
                              help="only devices in this state (repeatable)")
    fleet_parser.add_argument("--versions", action="store_true",
                              help="per model and version: devices, predictions, feedback, first and last landed")
    fleet_parser.add_argument("--since", type=_timestamp, help="with --versions: only rows landed on or after this day")
    compact = commands.add_parser(
        "compact", parents=[common],
        help='a lake (store.backend = "ducklake"): merge small files, expire old snapshots, delete unneeded files',
    )
    compact.add_argument("--keep-s", type=_keep_s, default=3600.0,
                         help="keep snapshots and files younger than this (in-flight commits and readers need them; default 3600)")
    migrate = commands.add_parser(
        "migrate", parents=[common],
        help="--to ducklake: copy the DuckDB store (store.db_path or --db) into the config's lake, ledger included; "
        "--check: list what an earlier version stored that today's checks refuse (exit 1 if any); the server stopped",
    )
    how = migrate.add_mutually_exclusive_group(required=True)
    how.add_argument("--to", choices=("ducklake",), help="the backend to copy into")
    how.add_argument("--check", action="store_true",
                     help="list times outside years 1-9999 and schema numbers past 2^31-1 the database holds; changes nothing")

    report = commands.add_parser(
        "report", parents=[common, remote],
        help="field performance per model version: accuracy, per-class figures, calibration or MAE/RMSE, drift",
    )
    report.add_argument("--model", required=True)
    report.add_argument("--since", type=_timestamp, help="predictions created at or after (ISO 8601, UTC if no zone)")
    report.add_argument("--until", type=_timestamp, help="predictions created before")
    report.add_argument("--by", choices=GROUPINGS, default="model_version", help="one row per (default: model_version)")
    report.add_argument("--bucket", choices=PERIODS, default="auto",
                        help="period of the accuracy/MAE-over-time series (default auto: from the data's span)")
    report.add_argument("--format", choices=REPORT_FORMATS, default="table", help="default: table")
    report.add_argument("--out", type=_out_path, help="write to FILE (durably) instead of stdout")
    report.add_argument("--reference", type=Path, metavar="FILE",
                        help="drift reference: a Parquet file from `export` (default: the window before --since)")
    report.add_argument("--reference-since", type=_timestamp, help="drift reference: a date range of the same model")
    report.add_argument("--reference-until", type=_timestamp)
    report.add_argument("--prediction", help="output field to compare (default: the schema's prediction_field)")
    report.add_argument("--truth", help="feedback field holding the truth (default: the schema's truth_field)")
    report.add_argument("--confidence", help="float output with the model's confidence (default: confidence_field)")
    report.add_argument("--task", choices=("classification", "regression"), help="default: from the fields' types")

    queue = commands.add_parser(
        "label-queue", parents=[common, remote],
        help="write the predictions most worth labelling (no label yet) as tasks for a labelling tool",
        description="Unlabelled predictions, oldest or least confident first, as a Label Studio task list, JSON lines or "
        "CSV. Binary fields (images) are written as files in <out stem>_files/ next to the task file; Label Studio "
        "also gets <out stem>.label_config.xml. Label them, then `edgeloop-ingest feedback import` the result.",
    )
    queue.add_argument("--model", required=True)
    queue.add_argument("--strategy", help="only records kept by this sampling strategy (the sampled_by column)")
    queue.add_argument("--since", type=_timestamp, help="predictions created at or after (ISO 8601, UTC if no zone)")
    queue.add_argument("--until", type=_timestamp, help="predictions created before")
    queue.add_argument("--limit", type=_positive, default=100, help="at most this many tasks (default 100)")
    queue.add_argument("--order", choices=ORDERS, default="oldest",
                       help="oldest first (default) or uncertainty: least confident first (the schema's confidence_field)")
    queue.add_argument("--format", choices=QUEUE_FORMATS, required=True)
    queue.add_argument("--out", type=_out_path, required=True, help="the task file (written whole or not at all)")

    feedback = commands.add_parser("feedback", help="labels from a labelling tool back into the feedback tables")
    feedback_actions = feedback.add_subparsers(dest="action", required=True, metavar="ACTION")
    imports = feedback_actions.add_parser(
        "import", parents=[common, remote],
        help="land labels (Label Studio JSON export, JSON lines or CSV); idempotent",
        description="Land the labels of FILE as feedback rows (source = the tool, labeled_by = the annotator). "
        "Each row names the prediction by record_id and gives feedback fields by name. Importing the same file "
        "twice adds nothing. Rows that are not valid or name no landed prediction are listed with their row "
        "number (a Label Studio task's position in the list) on stderr; the valid rows land, and the exit "
        "status is 1 if any row failed, else 0.",
    )
    imports.add_argument("file", type=Path, metavar="FILE")
    imports.add_argument("--format", choices=IMPORT_FORMATS, required=True)
    imports.add_argument("--model", help="the model the labels are for (default: the file's model column)")
    imports.add_argument("--source", help="the feedback rows' source (default: label-studio, or import)")

    delete = commands.add_parser(
        "delete", parents=[common, remote],
        help="delete a device's rows, a model's rows before a date, or a person's (dry run unless --yes)",
        description="Count, and with --yes delete, the rows a predicate matches in every model table (feedback on a "
        "deleted prediction goes with it). Every deletion is recorded in the deletions table (who, when, what, rows) "
        "and the database file is rewritten so the rows cannot be read back from it. The deletion holds against records "
        "devices upload later (README, Deleting data); deleting a device's rows does not revoke it.",
    )
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", help="every row this device sent")
    which.add_argument("--before", type=_timestamp, help="rows of --model created before this time (ISO 8601)")
    which.add_argument("--where-hashed", metavar="FIELD=VALUE",
                       help="rows whose pseudonymized FIELD holds VALUE (what `edgeloop-collector pseudonym` prints)")
    delete.add_argument("--model", help="only this model's tables (required with --before)")
    delete.add_argument("--yes", action="store_true", help="delete; without it, only count (a dry run)")
    delete.add_argument("--by", help="who asked, for the audit table (default: your user name)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    if value >= 2**63:  # DuckDB's LIMIT is a BIGINT
        raise argparse.ArgumentTypeError(f"{text!r} is past the largest count, 2^63 - 1")
    return value


def _config(args: argparse.Namespace) -> IngestConfig:
    from edgeloop.ingest.config import IngestConfig

    named = args.config or os.environ.get("EDGELOOP_INGEST_CONFIG")
    path = Path(named) if named else DEFAULT_CONFIG
    if not named and args.db and not path.exists():
        config = IngestConfig()  # `sql --db FILE` on a machine with no server config
    elif not path.exists():
        raise ConfigError(
            f"{path}: no such config file (give --config FILE or $EDGELOOP_INGEST_CONFIG; "
            f"`edgeloop-ingest init-config > {path}` writes one)"
        )
    else:
        config = IngestConfig.load(path)
    if args.db:
        config = config.model_copy(update={"store": config.store.model_copy(update={"db_path": args.db})})
    return config


def _admin(args: argparse.Namespace, config: IngestConfig, *, write: bool = False) -> Admin:
    return open_admin(config, url=args.url, token_file=args.admin_token_file, ca_file=args.ca_file, write=write)


def _cannot_listen(server: ServerSettings, exc: OSError) -> ConfigError:
    if exc.errno == errno.EADDRINUSE:
        why = "is already in use by another process (change server.port, or stop that process)"
    else:
        why = f"cannot be listened on: {exc.strerror or exc} (check server.host and server.port)"
    return ConfigError(f"server.port: {server.host}:{server.port} {why}")


def _check_can_listen(server: ServerSettings) -> None:
    """Bind and release the address first, so a busy port is one line before the database opens."""
    try:
        infos = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
                probe.bind(address)
    except OSError as exc:
        raise _cannot_listen(server, exc) from exc


async def _serve(config: IngestConfig) -> None:
    # The server's parts are imported here: an export or a query starts without aiohttp's import time.
    import asyncio
    import signal

    from aiohttp import web

    from edgeloop.ingest.app import create_app, create_runner, ssl_context

    config = _fit_connections(config)
    server = config.server
    _check_can_listen(server)
    app = create_app(config)
    runner = create_runner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.host, server.port, ssl_context=ssl_context(config))
        try:
            await site.start()
        except OSError as exc:  # taken between the check and now
            raise _cannot_listen(server, exc) from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        addresses = [f"{host}:{port}" for host, port, *_ in runner.addresses]
        log.info("listening", extra={"addresses": addresses, "port": runner.addresses[0][1], "tls": bool(ssl_context(config))})
        await stop.wait()
        log.info("stopping: finishing queued uploads")
    finally:
        await runner.cleanup()
    log.info("stopped")


def _fit_connections(config: IngestConfig) -> IngestConfig:
    """The config with ``server.max_connections`` lowered to what the open-files limit holds (``connections_that_fit``)."""
    from edgeloop.runner import connections_that_fit  # aiohttp: only for serve and check-config

    server = config.server
    fits = connections_that_fit(server.max_connections, setting="server.max_connections", up_to_hard=True)
    if fits == server.max_connections:
        return config
    return config.model_copy(update={"server": server.model_copy(update={"max_connections": fits})})


def _check_config(config: IngestConfig) -> str:
    """Everything serve needs before it opens the database; one line for the first problem."""
    from edgeloop.ingest.app import ssl_context

    ssl_context(config)
    _fit_connections(config)
    store = config.store
    lake = store.backend == "ducklake"
    folders = [("server.admin_token_file", config.server.admin_token_file.parent)]
    if not lake:
        folders.insert(0, ("store.db_path", store.db_path.parent))
    elif not store.on_s3:
        folders.insert(0, ("store.data_path", Path(store.data_path or "")))
    for name, folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-config-"):
                pass
        except OSError as exc:
            raise ConfigError(f"{name}: {folder} is not writable: {exc.strerror}") from exc
    tls = "https" if config.server.tls_cert_file else "http"
    if lake:
        from edgeloop.ingest.lake import Claims, extension_path  # the lake extra's dependencies

        for name in ("ducklake", "postgres_scanner") + (("httpfs",) if store.on_s3 else ()):
            extension_path(name)
        claims = Claims(store.catalog or "", "check-config", store.lake_claim_timeout_s)
        try:
            with claims.exclusive("check-config"):  # the catalog database answers (serve creates the lake in it)
                pass
        finally:
            claims.close()
        return f"config OK ({tls} on {config.server.host}:{config.server.port}; lake {store.data_path}, catalog reachable)"
    return f"config OK ({tls} on {config.server.host}:{config.server.port}; database {config.store.db_path})"


def _leave(code: int) -> None:
    """End a server whose database is checkpointed and closed: flush the log and exit without tearing down
    every module (a quarter of a second of the stop, measured, that keeps nothing durable)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _leave_after_read(args: argparse.Namespace) -> None:
    """End a process of its own whose query's output is written (and in place): without closing DuckDB, whose
    buffer pool took ~0.4 s to free after a 2,000,000-row export (measured), nor tearing down every module."""
    if args.own_process:
        _leave(0)


def _run(args: argparse.Namespace) -> int:
    if args.command == "init-config":
        from edgeloop.ingest.config import EXAMPLE_CONFIG, UNIT_FILE

        sys.stdout.write((UNIT_FILE if args.systemd else EXAMPLE_CONFIG).read_text(encoding="utf-8"))
        return 0
    config = _config(args)
    if args.command == "check-config":
        print(_check_config(config))
        return 0
    if args.command == "serve":
        import asyncio

        from edgeloop.logs import configure_logging

        os.umask(os.umask(0o027) | 0o027)  # files DuckDB creates later (WAL, temp) stay out of others' reach
        configure_logging(config.server.log_level, json=config.server.log_json)
        asyncio.run(_serve(config))
        return 0
    if args.command == "devices":
        admin = _admin(args, config, write=args.action != "list")
        try:
            if args.action == "add":
                token = admin.add_device(args.name)
                print(token)
                print(f"device {args.name!r} added; this token is shown only once", file=sys.stderr)
            elif args.action == "revoke":
                admin.revoke_device(args.name)
                print(f"device {args.name!r} revoked", file=sys.stderr)
            elif args.action == "tag":
                receipt = admin.tag_device(args.name, [] if args.remove else args.tags, args.tags if args.remove else [])
                print(f"device {args.name!r} tags: {', '.join(receipt['tags']) or '(none)'}")
            elif args.action == "show":
                _show_device(admin, config, args)
            else:
                from edgeloop.ingest.fleet import devices

                _write(ResultStream.of(devices(admin, datetime.now(UTC), config.fleet)), args.format, args.out)
        finally:
            admin.close()
        return 0
    if args.command == "schemas":
        return _schemas(args, config)
    if args.command == "policy":
        return _policy(args, config)
    if args.command == "migrate" and args.check:
        return _migrate_check(config)
    if args.command in ("compact", "migrate"):
        return _lake_command(args, config)
    if args.command == "label-queue":
        return _label_queue(args, config)
    if args.command == "feedback":
        return _feedback_import(args, config)
    if args.command == "delete":
        return _delete(args, config)
    copies = args.command in ("sql", "export") and args.format in ("csv", "parquet")
    if copies and args.format == "parquet" and (args.out is None or args.out == STDOUT) and sys.stdout.isatty():
        raise EdgeloopError("--format parquet is binary: give --out FILE, or --out - and redirect stdout")
    with contextlib.ExitStack() as stack:
        # With the server stopped, DuckDB writes CSV and Parquet itself, to this one path only (for stdout a spool file).
        write_to = stack.enter_context(copy_target(args.out)) if copies else None
        admin = open_admin(config, url=args.url, token_file=args.admin_token_file, ca_file=args.ca_file, write_to=write_to)
        stack.callback(admin.close)
        if write_to is not None and not isinstance(admin, LocalAdmin):  # the server's stream is spooled by write_result
            write_to.unlink(missing_ok=True)  # now: a read ends the process without teardown
        if args.command == "sql":
            query = sys.stdin.read() if args.query == "-" else args.query
            fingerprints = admin.fingerprints() if args.format == "parquet" else {}
            _emit(admin, query, [], args.format, args.out, fingerprints, export=False)
            _leave_after_read(args)
        elif args.command == "export":
            fingerprints = admin.fingerprints()
            if args.model not in fingerprints:
                known = ", ".join(sorted(fingerprints)) or "none"
                raise EdgeloopError(f"no model named {args.model!r} has landed (known: {known})")
            truth = None
            if args.labeled_only:
                from edgeloop.ingest.report import model_schema

                truth = model_schema(admin, args.model).truth_field
            sql, params = training_query(args.model, since=args.since, until=args.until, labeled_only=args.labeled_only,
                                         truth=truth)
            rows = _emit(admin, sql, params, args.format, args.out, fingerprints, export=True, model=args.model)
            print(f"exported {rows} rows of {args.model} to {'stdout' if args.out == STDOUT else args.out}", file=sys.stderr)
            _leave_after_read(args)
        elif args.command == "fleet":
            from edgeloop.ingest.fleet import fleet_overview, versions
            from edgeloop.ingest.fleet_view import fleet_table

            if args.versions:
                _write(ResultStream.of(versions(admin, since=args.since)), args.format, args.out)
            else:
                states = sorted(set(args.state) | ({"silent"} if args.silent else set()))
                table = fleet_overview(admin, datetime.now(UTC), config.fleet, states=states or None)
                _write(ResultStream.of(fleet_table(table) if args.format == "table" else table), args.format, args.out)
        elif args.command == "report":
            from edgeloop.ingest.report import build_report, declare, model_schema
            from edgeloop.ingest.report_view import render_report

            schema = declare(model_schema(admin, args.model), prediction=args.prediction, truth=args.truth,
                             confidence=args.confidence, task=args.task)
            result = build_report(
                admin, schema, since=args.since, until=args.until, by=args.by, bucket=args.bucket,
                reference_since=args.reference_since, reference_until=args.reference_until, reference_path=args.reference,
            )
            data = render_report(result, args.format)
            if args.out is None:
                sys.stdout.write(data.decode())
            else:
                write_durably(args.out, data)
                print(f"wrote the {args.format} report of {args.model} to {args.out}", file=sys.stderr)
    return 0


def _policy(args: argparse.Namespace, config: IngestConfig) -> int:
    from edgeloop.ingest.policies import POLICY_ROWS_SQL, TAG_ROWS_SQL, PolicyIndex

    admin = _admin(args, config, write=args.action in ("set", "rollback"))
    try:
        if args.action == "set":
            from edgeloop.settings import read_text  # here: --help loads no pydantic (tests/test_layering.py)

            text = read_text(args.file, error=EdgeloopError)
            receipt = admin.set_policy(args.model, text, str(args.file), args.devices, args.tag)
            print(f"policy {receipt['model']} version {receipt['version']} stored{_target(receipt)}; devices take it at their next sync")
        elif args.action == "rollback":
            receipt = admin.rollback_policy(args.model, args.to)
            print(f"policy {receipt['model']} version {receipt['version']} stored ({receipt['note']}){_target(receipt)}")
        elif args.action == "history":
            sql = ("SELECT version, created_at, coalesce(devices, '*') AS devices, coalesce(tag, '') AS tag, note, policy_json "
                   "FROM policies WHERE model = ? ORDER BY version")
            _write(ResultStream.of(admin.query(sql, [args.model])), args.format, args.out)
        else:
            rows = admin.query(POLICY_ROWS_SQL + " WHERE model = ?", [args.model]).to_pylist()
            if not rows:
                raise EdgeloopError(f"model {args.model!r} has no policy (`edgeloop-ingest policy set --model {args.model} FILE`)")
            if args.device is None:
                latest = max(rows, key=lambda row: row["version"])
                shown = {"model": args.model, "version": latest["version"], "devices": latest["devices"], "tag": latest["tag"],
                         "policy": json.loads(latest["policy_json"])}
            else:
                tags = admin.query(TAG_ROWS_SQL + " WHERE device = ?", [args.device]).to_pylist()
                index = PolicyIndex.from_rows([tuple(row.values()) for row in rows], [tuple(row.values()) for row in tags])
                got = index.for_device(args.device)[0]["policies"].get(args.model)
                if got is None:
                    raise EdgeloopError(f"no policy of {args.model!r} targets device {args.device!r}: it runs its local one")
                shown = {"model": args.model, "device": args.device, **got}
            print(json.dumps(shown, indent=2, sort_keys=True))
    finally:
        admin.close()
    return 0


def _target(receipt: dict) -> str:
    parts = [f"devices {receipt['devices']!r}" if receipt.get("devices") else "", f"tag {receipt['tag']!r}" if receipt.get("tag") else ""]
    return " for " + " and ".join(part for part in parts if part) if any(parts) else " for every device"


def _show_device(admin: Admin, config: IngestConfig, args: argparse.Namespace) -> None:
    from edgeloop.ingest.fleet import device_detail
    from edgeloop.ingest.fleet_view import device_text

    detail = device_detail(admin, args.name, datetime.now(UTC), config.fleet, history=args.history)
    if detail is None:
        raise EdgeloopError(f"no device named {args.name!r} (see `edgeloop-ingest devices list`)")
    if args.format == "json":
        print(json.dumps(detail, indent=2, default=str))
    else:
        print(device_text(detail))


def _lake_command(args: argparse.Namespace, config: IngestConfig) -> int:
    if config.store.backend != "ducklake":
        raise ConfigError(f'{args.command} works on a lake: set store.backend = "ducklake", store.catalog and store.data_path')
    from edgeloop.ingest.lake import compact, migrate  # the lake extra's dependencies

    if args.command == "compact":
        result = compact(config.store, keep_s=args.keep_s)
        recounted = "; label coverage counted again by the current rule" if result["coverage_recounted"] else ""
        folded = f"; {result['deltas_folded']} aggregate delta rows folded" if result["deltas_folded"] else ""
        print(f"compacted the lake: {result['files_before']} files before, {result['files_after']} after{folded}{recounted}",
              file=sys.stderr)
        return 0
    copied = migrate(config.store.db_path, config.store)
    for table, rows in copied.items():
        print(f"{table}\t{rows}")
    print(f"copied {len(copied)} tables from {config.store.db_path} into the lake", file=sys.stderr)
    return 0


def _migrate_check(config: IngestConfig) -> int:
    """``migrate --check``: one line per column or schema holding values today's checks refuse; exit 1 if any."""
    admin = LocalAdmin(config.store.db_path, read_only=True, lake=config.store if config.store.backend == "ducklake" else None)
    try:
        findings = admin.legacy_values()
    finally:
        admin.close()
    for finding in findings:
        print(finding.line())
    if findings:
        print(f"{len(findings)} stored values are outside what this version accepts; reads tolerate them, "
              "nothing was changed", file=sys.stderr)
        return 1
    print("nothing stored is outside what this version accepts", file=sys.stderr)
    return 0


def _schemas(args: argparse.Namespace, config: IngestConfig) -> int:
    import pyarrow as pa

    from edgeloop.ingest.catalog import diff
    from edgeloop.ingest.store import table_columns
    from edgeloop.schemas.model_schema import load_schema_file

    admin = _admin(args, config, write=args.action == "push")
    try:
        if args.action == "push":
            from edgeloop.settings import read_text  # here: --help loads no pydantic (tests/test_layering.py)

            for path in args.files:
                text = read_text(path, error=EdgeloopError)
                receipt = admin.push_schema(text, str(path))
                changes = f" ({len(receipt['changes'])} table changes)" if receipt["changes"] else ""
                print(f"{receipt['model']} version {receipt['version']} {receipt['fingerprint']}: "
                      f"{receipt['status'].replace('_', ' ')}{changes}")
            return 0
        catalog = admin.catalog()
        if args.action == "list":
            schemas = sorted(catalog, key=lambda schema: (schema.name, schema.version))
            table = pa.table({
                "model": [schema.name for schema in schemas],
                "version": pa.array([schema.version for schema in schemas], pa.int64()),  # a catalog may predate the int32 bound
                "fingerprint": [schema.fingerprint for schema in schemas],
                "fields": pa.array([len(schema.fields) for schema in schemas], pa.int32()),
            })
            _write(ResultStream.of(table), args.format, args.out)
            return 0
        new = load_schema_file(args.file)
        registered = [schema for schema in catalog if schema.name == new.name]
        latest = max(registered, key=lambda schema: schema.version, default=None)
        if new.fingerprint in {schema.fingerprint for schema in registered}:
            print(f"{new.name} {new.fingerprint}: already registered")
            return 0
        print(f"{new.name} version {new.version} {new.fingerprint} against "
              + (f"version {latest.version} {latest.fingerprint}" if latest else "nothing registered (a new model)"))
        for change in diff(latest, new):
            detail = change.get("to") or change.get("from") or ", ".join(
                f"{key} {before!r} -> {after!r}" for key, (before, after) in change["what"].items()
            )
            print(f"  {change['change']:8} {change['field']}: {detail}")
        stored: dict[str, tuple[str, int]] = {}
        for schema in registered:
            for columns in table_columns(schema).values():
                for name, type_ in columns.items():
                    stored.setdefault(name, (type_, schema.version))
        conflicts = [
            f"{name} is stored as {stored[name][0]} (version {stored[name][1]}), this file makes it {type_}"
            for columns in table_columns(new).values() for name, type_ in columns.items()
            if name in stored and stored[name][0] != type_
        ]
        if conflicts:
            print("not compatible: " + "; ".join(sorted(set(conflicts))))
            return 1
        print("compatible: `edgeloop-ingest schemas push` registers it; devices on every registered version keep landing")
        return 0
    finally:
        admin.close()


def _label_queue(args: argparse.Namespace, config: IngestConfig) -> int:
    import pyarrow as pa

    from edgeloop.ingest.label_queue import queue_query, write_tasks

    admin = _admin(args, config)
    try:
        schema = admin.catalog().latest(args.model)
        if schema is None:
            raise EdgeloopError(f"no model named {args.model!r} is registered")
        described = admin.query(f"DESCRIBE {quote(args.model)}").to_pylist()
        columns = {row["column_name"]: row["column_type"] for row in described}
        sql, params = queue_query(schema, columns, strategy=args.strategy, since=args.since, until=args.until,
                                  order=args.order, limit=args.limit)
        table = admin.query(sql, params)
    finally:
        admin.close()
    table = table.add_column(0, "model", pa.array([args.model] * table.num_rows, pa.string()))
    written = write_tasks(table, schema, args.format, args.out)
    extra = f", {written['files']} files in {written['folder']}" if written["folder"] else ""
    config_note = f"; labelling config: {written['label_config']}" if written["label_config"] else ""
    print(f"wrote {written['tasks']} tasks of {args.model} to {args.out}{extra}{config_note}", file=sys.stderr)
    return 0


def _feedback_import(args: argparse.Namespace, config: IngestConfig) -> int:
    from edgeloop.ingest.label_import import read_labels

    admin = _admin(args, config, write=True)
    try:
        catalog = admin.catalog()
        model = args.model or _model_of(args.file, args.format)
        schema = catalog.latest(model)
        if schema is None:
            raise EdgeloopError(f"no model named {model!r} is registered")
        rows, errors = read_labels(args.file, args.format, schema)
        source = args.source or ("label-studio" if args.format == "label-studio" else "import")
        tag = hashlib.sha256(args.file.read_bytes()).hexdigest()[:16]
        imported = duplicates = 0
        for start in range(0, len(rows), IMPORT_CHUNK_ROWS):
            result = admin.import_labels(model, source, tag, rows[start:start + IMPORT_CHUNK_ROWS])
            imported += result["imported"]
            duplicates += result["duplicates"]
            errors.extend(result["errors"])
    finally:
        admin.close()
    for error in sorted(errors, key=lambda error: error["row"]):
        print(printable(f"{args.file}:{error['row']}: {error['error']}"), file=sys.stderr)  # it quotes the file's text
    print(f"imported {imported} labels of {model} from {args.file} ({duplicates} already there"
          f"{f', {len(errors)} rows refused' if errors else ''})", file=sys.stderr)
    return 1 if errors else 0


def _model_of(path: Path, fmt: str) -> str:
    """The model named in a task file written by label-queue (its ``model`` column)."""
    try:
        if fmt == "label-studio":
            tasks = orjson.loads(path.read_bytes())
            names = {task.get("data", {}).get("model") for task in tasks if isinstance(task, dict)}
        else:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                records = csv.DictReader(handle) if fmt == "csv" else (json.loads(line) for line in handle if line.strip())
                names = {record.get("model") for record in records if isinstance(record, dict)}
    except (OSError, ValueError) as exc:
        raise EdgeloopError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    names.discard(None)
    if len(names) != 1:
        raise EdgeloopError(f"{path}: give --model (the file names {len(names)} models in its model column)")
    return str(names.pop())


def _delete(args: argparse.Namespace, config: IngestConfig) -> int:
    from edgeloop.ingest.deletion import Deletion

    hashed = None
    if args.where_hashed is not None:
        field, sep, value = args.where_hashed.partition("=")
        if not sep or not field or not value:
            raise EdgeloopError("--where-hashed takes FIELD=VALUE (VALUE as `edgeloop-collector pseudonym` prints it)")
        hashed = (field, value)
    deletion = Deletion(device=args.device, model=args.model, before=args.before, hashed=hashed)
    by = args.by or getpass.getuser()
    admin = _admin(args, config, write=True)
    try:
        result = admin.delete(deletion, execute=args.yes, by=by)
    finally:
        admin.close()
    verb = "deleted" if args.yes else "dry run: would delete"
    print(f"{verb} {result['rows']} rows where {result['predicate']}")
    for table, rows in sorted(result["tables"].items()):
        print(f"  {table:32} {rows}")
    if args.yes and result.get("compaction_error"):
        print(f"recorded as deletion {result['deletion_id']} by {by}")
        raise EdgeloopError(f"the rows are deleted, but the database file was not rewritten, so their bytes may remain "
                            f"in it: {result['compaction_error']} (run the same delete again to retry the rewrite)")
    if args.yes and "file_note" in result:
        print(f"recorded as deletion {result['deletion_id']} by {by}; {result['file_note']}")
    elif args.yes:
        print(f"recorded as deletion {result['deletion_id']} by {by}; the database file was rewritten "
              f"({result['file_bytes_before']} -> {result['file_bytes_after']} bytes)")
    else:
        print("nothing was deleted: run again with --yes to delete these rows")
    if result.get("tombstones_until"):
        held = "is left out" if args.yes else "would be left out"
        print(f"feedback that arrives later on the deleted predictions {held} until {result['tombstones_until'][:19]}Z "
              "(store.tombstone_days); any later deletion then removes their tombstones")
    if args.device is not None:
        print(f"hint: a deletion is no revocation: what {args.device} uploads later lands as new data; to refuse it: "
              f"edgeloop-ingest devices revoke {shlex.quote(args.device)}")
    return 0


def _emit(admin: Admin, sql: str, params: list, fmt: str, out: Path | None, fingerprints: dict[str, str], *,
          export: bool, model: str | None = None) -> int:
    """Run the query and write its rows: by the database's own COPY when it is ours to open, else streamed."""
    if isinstance(admin, LocalAdmin) and admin.write_to is not None:
        tables = admin.tables_read(sql)
        metadata = _footer(sql, params, fingerprints, tables | ({model} if model else set())) if fmt == "parquet" else None
        progress = Progress(sys.stderr) if _shows_progress(out) else None
        return copy_result(lambda options, on_progress: admin.copy(sql, params, options, on_progress),
                           fmt, out, sys.stdout, spool=admin.write_to, metadata=metadata,
                           progress=progress)  # type: ignore[arg-type]
    progress = None
    if export and _shows_progress(out):
        total = admin.query(f"SELECT count(*) AS n FROM ({sql})", params).column("n")[0].as_py()
        progress = Progress(sys.stderr, total=total)
    result = admin.stream(sql, params, export=export)
    tables = result.tables | ({model} if model else set())
    metadata = _footer(sql, params, fingerprints, frozenset(tables)) if fmt == "parquet" else None
    rows = _write(result, fmt, out, metadata=metadata, progress=progress)  # stdout gets all of it or nothing
    if result.truncated:
        print(f"edgeloop-ingest: the result is truncated: {result.truncated_reason}", file=sys.stderr)
    return rows


def _write(result: ResultStream, fmt: str, out: Path | None, *, metadata: dict[str, str] | None = None,
           progress: Progress | None = None) -> int:
    if progress is None and fmt != "table" and _shows_progress(out):
        progress = Progress(sys.stderr)
    return write_result(result, fmt, out, sys.stdout, metadata=metadata, progress=progress)  # type: ignore[arg-type]


def _shows_progress(out: Path | None) -> bool:
    """Progress goes to a terminal, and only while the rows go somewhere else."""
    return out is not None and out != STDOUT and sys.stderr.isatty()


def _footer(query: str, params: list, fingerprints: dict[str, str], tables: frozenset[str]) -> dict[str, str]:
    """Parquet footer: the query and the schema fingerprints of the models whose tables it read."""
    read = {model: fp for model, fp in fingerprints.items() if tables & {model, f"{model}_feedback", f"{model}_training"}}
    return parquet_metadata(query, params, read, __version__)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    refuse_options_before_the_command(parser, sys.argv[1:] if argv is None else list(argv), "serve --config FILE")
    args = parser.parse_args(argv)
    args.own_process = argv is None  # the process's own command line, so it may end without teardown
    try:
        code = _run(args)
        if args.command == "serve" and args.own_process:  # it ends here
            _leave(code)
        return code
    except EdgeloopError as exc:
        print(f"edgeloop-ingest: {printable(' '.join(str(exc).split()))}", file=sys.stderr)  # it may quote sent text
        return 1
    except BrokenPipeError:  # the reader of stdout went away (| head): nothing to say to anyone
        return closed_pipe_exit()
    except OSError as exc:  # a file that went away or a disk that filled after the arguments were checked
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"edgeloop-ingest: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
