"""Control characters in text from outside (labels, notes, versions, annotators): kept as sent, escaped on every output."""

from __future__ import annotations

import csv
import io
import json

import aiohttp
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tests.ingest.conftest import cli, free_port, land_and_stop, make_table, seal, write_config

# NUL, a terminal's escape (clear screen, retitle), a bell, a C1 control (NEL) and a bidi override.
HOSTILE = "\x00\x1b[2J\x1b]0;owned\x07\x85\u202e"
RAW = ("\x00", "\x1b", "\x07", "\x85", "\u202e")


def _with(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


async def _land_hostile(server, tmp_path, vibration) -> None:
    """A device's version and note, and an imported label and annotator, all holding HOSTILE."""
    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=4, version=f"2.0{HOSTILE}")
    table = _with(table, "note", [f"note{HOSTILE}"] * 4)
    table = _with(table, "predicted_class", ["ok", f"cage{HOSTILE}", "ok", f"cage{HOSTILE}"])
    batch_id, body = seal(tmp_path / "a", vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    rows = [{"row": n, "record_id": str(record_id), "fields": {"true_class": f"cage{HOSTILE}" if n % 2 else "ok"},
             "labeled_by": f"sam{HOSTILE}"} for n, record_id in enumerate(ids)]
    async with server.session.post(f"{server.url}/v1/feedback/vibration",
                                   headers={"Authorization": f"Bearer {server.admin_token}"},
                                   json={"source": f"sheet{HOSTILE}", "tag": "t", "rows": rows}) as response:
        assert response.status == 200 and (await response.json())["imported"] == 4


async def test_control_characters_are_stored_as_sent_and_shown_escaped_on_every_dashboard_page(server, tmp_path, vibration):
    """A NUL, terminal escapes, a C1 control and a bidi override in a version, a note and a label are stored unchanged, kept by the JSON API, and shown escaped (never raw) on the dashboard's HTML pages."""
    await _land_hostile(server, tmp_path, vibration)
    stored = await server.sql("SELECT DISTINCT f.true_class, f.labeled_by, f.source, p.note, p.model_version "
                              "FROM vibration_feedback f JOIN vibration p ON p.record_id = f.prediction_id "
                              "WHERE f.true_class <> 'ok'")
    assert stored == [{"true_class": f"cage{HOSTILE}", "labeled_by": f"sam{HOSTILE}", "source": f"sheet{HOSTILE}",
                       "note": f"note{HOSTILE}", "model_version": f"2.0{HOSTILE}"}]
    viewer = server.config.server.viewer_token_path.read_text().strip()
    async with server.session.get(f"{server.url}/v1/dashboard/devices/pump-1",
                                  headers={"Authorization": f"Bearer {viewer}"}) as response:
        assert response.status == 200
        assert json.loads(await response.read())["versions"][0]["model_version"] == f"2.0{HOSTILE}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(f"{server.url}/dashboard/login", data={"token": viewer, "next": "/dashboard"}) as login:
            assert login.status == 200
        for path in ("/dashboard", "/dashboard/devices", "/dashboard/devices/pump-1", "/dashboard/report?model=vibration"):
            async with session.get(f"{server.url}{path}") as page:
                assert page.status == 200, path
                text = await page.text()
            assert not [c for c in RAW if c in text], (path, [c for c in RAW if c in text])
            if path.endswith(("pump-1", "vibration")):
                assert "2.0\\x00\\x1b[2J" in text, path  # the version, escaped as a terminal shows it
            if path.endswith("vibration"):
                assert "cage\\x00" in text, path  # the class label


def _on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal; its exit code and what the terminal got."""
    import os
    import pty
    import subprocess

    from tests.ingest.conftest import CLI

    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([*CLI, *args], stdout=terminal, stderr=subprocess.DEVNULL)
        os.close(terminal)
        terminal = -1
        got = bytearray()
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the other end closed (EIO on Linux)
                break
            if not chunk:
                break
            got += chunk
        return process.wait(timeout=60), got.decode("utf-8", "replace")
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)


def test_csv_and_json_on_a_terminal_show_control_characters_escaped_and_files_keep_them(tmp_path, vibration):
    """`sql --format csv|json` to a terminal shows a note's and a version's control characters escaped, never raw, while to a pipe or a file CSV and Parquet carry the text byte for byte."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    table, _ = make_table(vibration, predictions=2, version=f"2.0{HOSTILE}")
    land_and_stop(tmp_path, config, port, token, vibration, _with(table, "note", [f"note{HOSTILE}\nsecond line", "plain"]))
    query = "SELECT model_version, note FROM vibration ORDER BY note"
    for fmt in ("csv", "json"):
        code, shown = _on_a_terminal("sql", query, "--format", fmt, "--config", str(config))
        assert code == 0, shown
        assert not [c for c in RAW if c in shown], (fmt, shown)
        assert "\\x1b[2J" in shown or "\\u001b[2J" in shown, (fmt, shown)
    piped = cli("sql", query, "--format", "csv", "--config", str(config)).stdout
    assert list(csv.reader(io.StringIO(piped)))[1:] == [[f"2.0{HOSTILE}", f"note{HOSTILE}\nsecond line"], [f"2.0{HOSTILE}", "plain"]]
    cli("sql", query, "--format", "parquet", "--out", str(tmp_path / "out.parquet"), "--config", str(config))
    assert pq.read_table(tmp_path / "out.parquet").column("note").to_pylist() == [f"note{HOSTILE}\nsecond line", "plain"]
    with duckdb.connect(str(tmp_path / "ingest.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM vibration WHERE model_version = ?", [f"2.0{HOSTILE}"]).fetchone()[0] == 2


def test_a_label_file_with_control_characters_imports_them_as_sent_and_its_error_lines_escape_them(tmp_path, vibration):
    """`feedback import` of a CSV whose label and annotator hold control characters stores them unchanged, and a row whose time holds an escape sequence is refused in a line that shows it escaped."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    table, ids = make_table(vibration, predictions=2)
    land_and_stop(tmp_path, config, port, token, vibration, table)
    sheet = tmp_path / "labels.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "true_class", "labeled_by"])
        writer.writerow([str(ids[0]), f"cage{HOSTILE}", f"sam{HOSTILE}"])
    done = cli("feedback", "import", str(sheet), "--format", "csv", "--model", "vibration", "--config", str(config))
    assert "imported 1 labels" in done.stderr
    lines = tmp_path / "labels.jsonl"
    lines.write_text(json.dumps({"record_id": str(ids[1]), "true_class": "ok", "created_at": "not\x1b[2J a time"}) + "\n")
    refused = cli("feedback", "import", str(lines), "--format", "jsonl", "--model", "vibration", "--config", str(config),
                  check=False)
    assert refused.returncode == 1 and "not\\x1b[2J a time" in refused.stderr and "\x1b" not in refused.stderr, refused.stderr
    with duckdb.connect(str(tmp_path / "ingest.duckdb"), read_only=True) as con:
        assert con.execute("SELECT true_class, labeled_by FROM vibration_feedback").fetchall() == [
            (f"cage{HOSTILE}", f"sam{HOSTILE}")]
