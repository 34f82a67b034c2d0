"""The real ``edgeloop-ingest`` CLI: devices, sql, export and fleet with the server stopped and running."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ingest.conftest import (
    BASE_TIME,
    CLI,
    cli,
    free_port,
    make_table,
    put_batch,
    seal,
    spawn_server,
    stop_server,
    write_config,
)


def test_devices_add_list_revoke(tmp_path, vibration):
    """Devices are added with the server stopped, listed with their batches, and revoked while it runs — at once."""
    port = free_port()
    config = write_config(tmp_path, port)
    added = cli("devices", "add", "pump-1", "--config", str(config))
    token = added.stdout.strip()
    assert token.startswith("eld_") and "shown only once" in added.stderr
    duplicate = cli("devices", "add", "pump-1", "--config", str(config), check=False)
    assert duplicate.returncode == 1 and duplicate.stderr.count("\n") == 1 and "already exists" in duplicate.stderr
    server = spawn_server(config, tmp_path / "server.log")
    try:
        batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
        assert put_batch(port, batch_id, body, token) == 201
        second = cli("devices", "add", "pump-2", "--config", str(config)).stdout.strip()
        listing = cli("devices", "list", "--format", "json", "--config", str(config)).stdout
        listed = [json.loads(line) for line in listing.splitlines()]
        assert [(d["name"], d["status"], d["batches"], d["rows"]) for d in listed] == [("pump-1", "active", 1, 3), ("pump-2", "active", 0, 0)]
        assert listed[0]["last_seen"] is not None
        assert "token" not in json.dumps(listed)
        cli("devices", "revoke", "pump-1", "--config", str(config))
        other_id, other = seal(tmp_path / "b", vibration, make_table(vibration, predictions=1)[0])
        assert put_batch(port, other_id, other, token) == 401
        assert put_batch(port, other_id, other, second) == 201
    finally:
        stop_server(server)
    table = cli("devices", "list", "--config", str(config)).stdout
    assert "pump-1" in table and "revoked" in table


def test_sql_export_fleet_with_server_running_and_stopped(tmp_path, vibration):
    """sql, export and fleet give the same answers through the running server and from the file after it stops."""
    port = free_port()
    config = write_config(tmp_path, port)
    tokens = [cli("devices", "add", f"pump-{i}", "--config", str(config)).stdout.strip() for i in range(3)]
    server = spawn_server(config, tmp_path / "server.log")
    predictions = []
    try:
        for index, token in enumerate(tokens):
            version = "2.0" if index == 2 else "1.0"
            table, ids = make_table(vibration, predictions=4, version=version, weight=2.5,
                                    start=datetime(2025, 6, 1, tzinfo=UTC) + timedelta(days=index))
            predictions.extend(ids)
            batch_id, body = seal(tmp_path / str(index), vibration, table)
            assert put_batch(port, batch_id, body, token) == 201
        base = datetime(2025, 7, 1, tzinfo=UTC)
        labels, _ = make_table(vibration, feedback=[(predictions[0], "old", base), (predictions[0], "new", base + timedelta(minutes=1)),
                                                    (predictions[5], "ok", base)])
        batch_id, body = seal(tmp_path / "labels", vibration, labels)
        assert put_batch(port, batch_id, body, tokens[0]) == 201
        running = _all_outputs(tmp_path / "running", config)
    finally:
        stop_server(server)
    stopped = _all_outputs(tmp_path / "stopped", config)
    assert running == stopped
    sql_rows, export_all, export_labeled, export_window, fleet_rows = running
    assert sql_rows == [{"model_version": "1.0", "n": 8}, {"model_version": "2.0", "n": 4}]
    assert len(export_all) == 12 and all(row["sample_weight"] == 2.5 for row in export_all)
    assert {(row["record_id"], row["true_class"]) for row in export_labeled} == {
        (str(predictions[0]), "new"), (str(predictions[5]), "ok")}
    assert len(export_window) == 4  # only the second day's batch
    assert [(row["model"], row["model_version"], row["devices"], row["predictions"]) for row in fleet_rows] == [
        ("vibration", "1.0", 2, 8), ("vibration", "2.0", 1, 4)] or sorted(
        (row["model_version"], row["devices"]) for row in fleet_rows) == [("1.0", 2), ("2.0", 1)]
    assert all(row["last_seen"] for row in fleet_rows)


def _all_outputs(folder, config):
    folder.mkdir()
    sql = cli("sql", "SELECT model_version, count(*) AS n FROM vibration GROUP BY 1 ORDER BY 1", "--format", "json",
              "--config", str(config)).stdout
    sql_rows = [json.loads(line) for line in sql.splitlines()]
    exports = []
    for name, extra in [("all", []), ("labeled", ["--labeled-only"]),
                        ("window", ["--since", "2025-06-02", "--until", "2025-06-03T00:00:00+00:00"])]:
        out = folder / f"{name}.parquet"
        result = cli("export", "--model", "vibration", "--out", str(out), "--config", str(config), *extra)
        assert f"to {out}" in result.stderr
        # UUIDs as text: Spark refuses Parquet's UUID type, and text reads the same in every reader.
        columns = {column.name: column for column in pq.ParquetFile(out).schema}
        assert all((columns[name].physical_type, columns[name].logical_type.type) == ("BYTE_ARRAY", "STRING")
                   for name in ("record_id", "feedback_id")), columns
        rows = pq.read_table(out).to_pylist()
        assert all(str(uuid.UUID(row["record_id"])) == row["record_id"] for row in rows)
        exports.append(rows)
    fleet = cli("fleet", "--versions", "--format", "json", "--config", str(config)).stdout
    fleet_rows = [json.loads(line) for line in fleet.splitlines()]
    table = cli("fleet", "--versions", "--config", str(config)).stdout
    assert "model_version" in table and "vibration" in table
    return sql_rows, *[[{k: v for k, v in row.items()} for row in export] for export in exports], fleet_rows


def test_cli_errors_are_one_line(tmp_path):
    """A refused statement, an unknown model and a missing database each give one line on stderr and exit 1."""
    config = write_config(tmp_path, free_port())
    missing = cli("sql", "SELECT 1", "--config", str(config), check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no database" in missing.stderr
    cli("devices", "add", "pump-1", "--config", str(config))
    refused = cli("sql", "DELETE FROM devices", "--config", str(config), check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("edgeloop-ingest: refused: DELETE")
    unknown = cli("export", "--model", "nope", "--out", str(tmp_path / "x.parquet"), "--config", str(config), check=False)
    assert unknown.returncode == 1 and "no model named 'nope'" in unknown.stderr
    assert not (tmp_path / "x.parquet").exists()
    help_text = cli("--help").stdout
    assert "serve" in help_text and "export" in help_text and "fleet" in help_text


NESTED_SQL = "SELECT map(['a'], [1]) AS m, {'x': 1, 'y': 'z'} AS s, INTERVAL '1 day 2 hours' AS i, count(*) AS n FROM vibration"


def _stdin_cli(sql: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "sql", "-", *args], input=sql.encode(), capture_output=True, timeout=60)


def test_query_outputs_for_retraining_with_server_running_and_stopped(tmp_path, vibration):
    """sql reads SQL from stdin, CSV holds MAP/STRUCT/INTERVAL, JSON prints intervals readably, export --out - writes
    Parquet to stdout with its provenance in the footer — the same through the server and from the file."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    server = spawn_server(config, tmp_path / "server.log")
    outputs = {}
    try:
        batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=4)[0])
        assert put_batch(port, batch_id, body, token) == 201
        fingerprint = json.loads(cli("sql", "SELECT schema_fingerprint FROM models WHERE model = 'vibration'", "--format", "json",
                                     "--config", str(config)).stdout)["schema_fingerprint"]
        for mode in ("running", "stopped"):
            if mode == "stopped":
                stop_server(server)
            csv = _stdin_cli(NESTED_SQL, "--format", "csv", "--config", str(config))
            assert csv.returncode == 0, csv.stderr
            as_json = _stdin_cli(NESTED_SQL, "--format", "json", "--config", str(config))
            parquet = subprocess.run([*CLI, "export", "--model", "vibration", "--out", "-", "--config", str(config)],
                                     capture_output=True, timeout=60)
            assert parquet.returncode == 0, parquet.stderr
            outputs[mode] = (csv.stdout.decode(), json.loads(as_json.stdout), parquet.stdout)
    finally:
        stop_server(server)
    assert not (tmp_path / "-").exists()
    for mode, (csv, row, parquet) in outputs.items():
        assert csv.splitlines()[0] == "m,s,i,n", mode
        assert "1 day 02:00:00" in csv and "{a=1}" in csv, (mode, csv)
        assert row == {"m": {"a": 1}, "s": {"x": 1, "y": "z"}, "i": "1 day 02:00:00", "n": 4}, mode
        exported = pq.read_table(pa.BufferReader(parquet))
        assert exported.num_rows == 4, mode
        footer = {k.decode(): v.decode() for k, v in pq.read_metadata(pa.BufferReader(parquet)).metadata.items()}
        assert footer["edgeloop.query"].startswith('SELECT * FROM "vibration_training"'), mode
        assert json.loads(footer["edgeloop.schema_fingerprints"]) == {"vibration": fingerprint}, mode
        assert footer["edgeloop.version"] and datetime.fromisoformat(footer["edgeloop.exported_at"]).tzinfo, mode


@pytest.mark.parametrize(
    "command",
    [
        ["sql", "SELECT 1 AS one", "--format", "csv"],
        ["sql", "SELECT 1 AS one", "--format", "json"],
        ["export", "--model", "vibration"],
        ["export", "--model", "vibration", "--format", "csv"],
        ["report", "--model", "vibration"],
        ["label-queue", "--model", "vibration", "--format", "jsonl"],
    ],
)
@pytest.mark.parametrize("where", ["a folder", "in a missing folder"])
def test_an_out_path_that_cannot_be_written_is_one_line(tmp_path, command, where):
    """Every --out that is a folder, or sits in a folder that does not exist, is refused in one line with no traceback."""
    config = write_config(tmp_path, free_port())
    cli("devices", "add", "pump-1", "--config", str(config))  # creates the database
    out = tmp_path if where == "a folder" else tmp_path / "missing" / "out.file"
    result = cli(*command, "--out", str(out), "--config", str(config), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(("edgeloop-ingest", "usage")), result.stderr
    assert str(out) in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []  # no temp file left


@pytest.mark.parametrize(
    "command",
    [
        ["sql", "SELECT 1 AS one", "--format", "csv"],
        ["sql", "SELECT 1 AS one", "--format", "json"],
        ["export", "--model", "vibration", "--format", "parquet"],
        ["label-queue", "--model", "vibration", "--format", "jsonl"],
    ],
)
@pytest.mark.parametrize("kind", ["a FIFO", "a socket", "a link to a FIFO"])
def test_an_out_path_that_is_no_regular_file_is_refused_and_left_as_it_was(tmp_path, command, kind):
    """An --out naming a FIFO, socket or device (or a link to one) is one usage line: it was renamed over, as root even /dev/null."""
    config = write_config(tmp_path, free_port())
    cli("devices", "add", "pump-1", "--config", str(config))  # creates the database
    special = tmp_path / "special"
    if kind == "a socket":
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(special))  # the socket file stays after the socket is closed
    else:
        os.mkfifo(special)
    out = special if kind != "a link to a FIFO" else tmp_path / "link"
    if kind == "a link to a FIFO":
        out.symlink_to(special)
    result = cli(*command, "--out", str(out), "--config", str(config), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("usage") or "not a regular file" in result.stderr
    assert f"{out} is not a regular file" in result.stderr, result.stderr
    assert not stat.S_ISREG(special.lstat().st_mode) and (out == special or out.is_symlink())
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []  # no temp file left


def test_sql_into_a_pipe_its_reader_closed_ends_quietly(tmp_path):
    """sql whose stdout reader went away (| head) exits as a tool ended by SIGPIPE does, 141, with nothing on stderr."""
    config = write_config(tmp_path, free_port())
    cli("devices", "add", "pump-1", "--config", str(config))
    for fmt in ("table", "json"):
        proc = subprocess.Popen([*CLI, "sql", "SELECT * FROM range(100000)", "--format", fmt, "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # before the child writes a byte
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 141 and stderr == b"", (fmt, proc.returncode, stderr)


def test_device_text_reaches_a_terminal_with_its_control_characters_shown_not_obeyed(tmp_path, vibration):
    """A model version a device sent with escape sequences (retitle, clear the screen, rewrite the line, reorder the
    text) is printed by sql, fleet, devices show and report with those characters escaped, never raw."""
    hostile = "2.0\x1b]0;owned\x07\x1b[2J\r\u202eevil\n1.0"
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    server = spawn_server(config, tmp_path / "server.log")
    try:
        table, ids = make_table(vibration, predictions=3, version=hostile)
        feedback, _ = make_table(vibration, feedback=[(ids[0], "ok", BASE_TIME)], version=hostile)
        for name, rows in (("p", table), ("f", feedback)):
            assert put_batch(port, *seal(tmp_path / name, vibration, rows), token) == 201
    finally:
        stop_server(server)
    for command in (["sql", "SELECT model_version FROM vibration"], ["fleet", "--versions"], ["devices", "show", "pump-1"],
                    ["report", "--model", "vibration"], ["report", "--model", "vibration", "--by", "none"]):
        out = cli(*command, "--config", str(config)).stdout
        assert not any(c in out for c in "\x1b\x07\r\u202e"), (command, out)
        assert "\\x1b" in out or command[-1] == "none", (command, out)


@pytest.mark.parametrize("first", ["--config", "--config=ingest.toml", "--db"])
def test_an_option_before_the_command_says_where_it_goes(first):
    """`edgeloop-ingest --config FILE serve` is a usage error (exit 2) saying the option goes after the command, not
    'invalid choice' naming the file."""
    result = cli(first, "ingest.toml", "serve", check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"{first.split('=')[0]} goes after the command: edgeloop-ingest COMMAND" in last, last
    assert "invalid choice" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [["schemas", "push", "{missing}"], ["policy", "set", "--model", "vibration", "{missing}"],
     ["feedback", "import", "{missing}", "--format", "jsonl"]],
)
def test_a_file_argument_that_does_not_exist_is_one_plain_line(tmp_path, command):
    """A schema, policy or label file that is not there is one line naming it and the OS's words, no errno repr."""
    config = write_config(tmp_path, free_port())
    cli("devices", "add", "pump-1", "--config", str(config))  # creates the database
    missing = tmp_path / "missing.toml"
    result = cli(*(part.format(missing=missing) for part in command), "--config", str(config), check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"cannot read {missing}: No such file or directory" in result.stderr or \
        f"{missing}: cannot read: No such file or directory" in result.stderr, result.stderr
    assert "[Errno" not in result.stderr
