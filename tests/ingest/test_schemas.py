"""Schemas are the server's: registered by an admin, checked by fingerprint, evolved only compatibly."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from edgeloop.ingest.app import STORE
from edgeloop.schemas import EXAMPLES_DIR, ModelSchema
from tests.ingest.conftest import cli, free_port, make_table, seal, spawn_server, stop_server, write_config
from tests.ingest.test_upload import _assert_error

VIBRATION_TOML = (EXAMPLES_DIR / "vibration.toml").read_text()


def _toml(extra: str = "", *, version: int = 2, base: str = VIBRATION_TOML) -> str:
    return base.replace("version = 1", f"version = {version}") + extra


@pytest.fixture
async def bare(make_server):
    """A server with no schema registered at all (no schemas_dir)."""
    return await make_server(server={"schemas_dir": None})


async def _push(server, text: str) -> tuple[int, dict]:
    async with server.session.post(
        f"{server.url}/v1/schemas", data=text.encode(), headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as response:
        return response.status, await response.json()


async def test_unregistered_schema_is_422_naming_it_and_lands_once_pushed(bare, tmp_path, vibration):
    """A batch of a schema nobody registered gets 422 unknown_schema with its fingerprint; after a push it lands."""
    token = await bare.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
    status, error, _ = await bare.put(batch_id, body, token)
    assert status == 422
    _assert_error(error, "unknown_schema")
    assert error["error"]["details"] == {"model": "vibration", "fingerprint": vibration.fingerprint}
    assert vibration.fingerprint in error["error"]["message"]
    assert await bare.sql("SELECT count(*) AS n FROM (SHOW TABLES) WHERE name = 'vibration'") == [{"n": 0}]
    status, receipt = await _push(bare, VIBRATION_TOML)
    assert status == 201 and receipt["status"] == "registered" and receipt["fingerprint"] == vibration.fingerprint
    assert (await _push(bare, VIBRATION_TOML))[0] == 200
    status, receipt, _ = await bare.put(batch_id, body, token)
    assert status == 201, receipt


async def test_a_device_cannot_define_or_alter_a_model(server, tmp_path, vibration):
    """A rogue device's own schema for a model, or an extra column under a registered fingerprint, never lands nor changes tables."""
    token = await server.add_device("rogue")
    rogue = ModelSchema.from_toml(_toml('\n[inputs.pwned]\ntype = "string"\nprivacy = "keep"\n'))
    batch_id, body = seal(tmp_path, rogue, make_table(rogue, predictions=2)[0])
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422
    _assert_error(error, "unknown_schema")
    # The registered fingerprint, but a table with an extra column: the carried schema text is ignored.
    table, _ = make_table(rogue, predictions=2)
    batch_id, body = seal(tmp_path / "b", vibration, table)
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422
    _assert_error(error, "schema_mismatch")
    columns = await server.sql("SELECT column_name FROM (DESCRIBE vibration)")
    assert "pwned" not in {row["column_name"] for row in columns}
    models = await server.sql("SELECT schema_fingerprint FROM models WHERE model = 'vibration'")
    assert models == [{"schema_fingerprint": vibration.fingerprint}]
    good_id, good = seal(tmp_path / "c", vibration, make_table(vibration, predictions=4)[0])
    assert (await server.put(good_id, good, await server.add_device("pump-1")))[0] == 201


async def test_compatible_evolution_is_pushed_and_every_version_lands(server, tmp_path, vibration):
    """Pushing a version that adds a field widens the tables; old and new fingerprints both land; a type change is 409."""
    token = await server.add_device("pump-1")
    wider = ModelSchema.from_toml(_toml('\n[inputs.humidity]\ntype = "float32"\n'))
    batch_id, body = seal(tmp_path, wider, make_table(wider, predictions=3)[0])
    assert (await server.put(batch_id, body, token))[0] == 422
    status, receipt = await _push(server, _toml('\n[inputs.humidity]\ntype = "float32"\n'))
    assert status == 201, receipt
    assert any("ADD COLUMN" in change and "humidity" in change for change in receipt["changes"])
    assert (await server.put(batch_id, body, token))[0] == 201
    old_id, old = seal(tmp_path / "old", vibration, make_table(vibration, predictions=2)[0])
    assert (await server.put(old_id, old, token))[0] == 201
    assert await server.sql("SELECT count(humidity) AS filled, count(*) AS n FROM vibration") == [{"filled": 3, "n": 5}]
    status, error = await _push(server, _toml(version=3).replace('[inputs.rpm]\ntype = "int32"', '[inputs.rpm]\ntype = "float64"'))
    assert status == 409
    _assert_error(error, "incompatible_schema")
    assert error["error"]["details"][0]["column"] == "rpm"
    assert len(server.app[STORE].catalog) == 3  # vibration v1, v2 and image_classifier: the refused one is not in
    status, error = await _push(server, "name = 'batches'\nversion = 1\n[inputs.x]\ntype = 'int32'\n")
    assert status == 409
    _assert_error(error, "reserved_model_name")
    status, error = await _push(server, "this is = = not toml")
    assert status == 422
    _assert_error(error, "bad_schema")


async def test_values_are_checked_against_the_servers_schema(server, tmp_path, vibration):
    """A string over its field's max_bytes, or a sample_weight that is negative, under 1 or not finite is 422 bad_values."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=3)
    notes = pa.array(["fine", "x" * 5_000_000, None])
    table = table.set_column(table.schema.get_field_index("note"), table.schema.field("note"), notes)
    batch_id, body = seal(tmp_path, vibration, table)
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422, error
    _assert_error(error, "bad_values")
    assert error["error"]["details"][0]["column"] == "note" and error["error"]["details"][0]["bytes"] >= 5_000_000
    table, _ = make_table(vibration, predictions=3)
    notes = pa.array(["fine", "y" * 3_000, None])  # over the 2 KiB cap, small enough to pass the page bound
    table = table.set_column(table.schema.get_field_index("note"), table.schema.field("note"), notes)
    batch_id, body = seal(tmp_path / "s", vibration, table)
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422
    assert error["error"]["details"][0] == {
        "column": "note", "problem": "a value of 3000 bytes is over the cap of 2560", "bytes": 3000, "limit": 2560,
    }
    table, _ = make_table(vibration, predictions=2, weight=-3.0)
    batch_id, body = seal(tmp_path / "w", vibration, table)
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422
    _assert_error(error, "bad_values")
    assert error["error"]["details"] == [{"column": "sample_weight", "problem": "2 values are not a finite number >= 1"}]
    table, _ = make_table(vibration, predictions=1, weight=float("nan"))
    batch_id, body = seal(tmp_path / "n", vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 422
    assert await server.sql("SELECT count(*) AS n FROM batches") == [{"n": 0}]


def test_schemas_cli_push_list_diff(tmp_path):
    """`schemas push/list/diff` work on the file with the server stopped and through it while it runs."""
    config = write_config(tmp_path, free_port()).read_text().replace(f'schemas_dir = "{EXAMPLES_DIR}"\n', "")
    config_path = tmp_path / "ingest.toml"
    config_path.write_text(config)
    cli("devices", "add", "pump-1", "--config", str(config_path))  # creates the database
    pushed = cli("schemas", "push", str(EXAMPLES_DIR / "vibration.toml"), "--config", str(config_path))
    assert "registered" in pushed.stdout and "vibration" in pushed.stdout
    wider = tmp_path / "vibration-v2.toml"
    wider.write_text(_toml('\n[inputs.humidity]\ntype = "float32"\nprivacy = "round:1"\n'))
    diff = cli("schemas", "diff", str(wider), "--config", str(config_path))
    assert "added" in diff.stdout and "humidity" in diff.stdout and "compatible" in diff.stdout
    retyped = tmp_path / "vibration-bad.toml"
    retyped.write_text(_toml(version=3).replace('[inputs.rpm]\ntype = "int32"', '[inputs.rpm]\ntype = "string"'))
    diff = cli("schemas", "diff", str(retyped), "--config", str(config_path), check=False)
    assert diff.returncode == 1 and "rpm" in diff.stdout and "not compatible" in diff.stdout
    server = spawn_server(config_path, tmp_path / "server.log")
    try:
        pushed = cli("schemas", "push", str(wider), "--config", str(config_path))
        assert "registered" in pushed.stdout
        refused = cli("schemas", "push", str(retyped), "--config", str(config_path), check=False)
        assert refused.returncode == 1 and "rpm" in refused.stderr and refused.stderr.count("\n") == 1
        listed = cli("schemas", "list", "--format", "json", "--config", str(config_path))
        rows = [json.loads(line) for line in listed.stdout.splitlines()] if listed.stdout.lstrip().startswith("{") else json.loads(listed.stdout)
        assert sorted((row["model"], row["version"]) for row in rows) == [("vibration", 1), ("vibration", 2)]
    finally:
        stop_server(server)
    listed = cli("schemas", "list", "--config", str(config_path))
    assert listed.stdout.count("vibration") == 2


HUGE = "9" * 30  # a TOML integer past 64 bits: Python reads it, nothing downstream can hold it


@pytest.mark.parametrize(
    "text",
    [
        'name = "big"\nversion = 2147483648\n[inputs.x]\ntype = "float32"\n',
        f'name = "big"\nversion = {HUGE}\n[inputs.x]\ntype = "float32"\n',
        f'name = "big"\nversion = 1\n[inputs.x]\ntype = "string"\nprivacy = "redact"\nmax_bytes = {HUGE}\n',
        f'name = "big"\nversion = 1\n[inputs.x]\ntype = "binary"\nmax_bytes = {HUGE}\n',
    ],
    ids=["version past int32", "version past 64 bits", "redact max_bytes past 64 bits", "binary max_bytes past 64 bits"],
)
async def test_a_schema_number_too_big_to_store_is_422_and_the_catalog_still_reads(bare, text):
    """A schema whose version or max_bytes no column can hold is 422 bad_schema at push; GET /v1/schemas keeps answering 200."""
    status, body = await _push(bare, text)
    assert status == 422, body
    _assert_error(body, "bad_schema")
    async with bare.session.get(f"{bare.url}/v1/schemas", headers={"Authorization": f"Bearer {bare.admin_token}"}) as response:
        assert response.status == 200 and (await response.json())["schemas"] == []


@pytest.mark.parametrize("text", ['name = "eta\\n"\nversion = 1\n[outputs.y]\ntype = "float64"\n',
                                  'name = "eta"\nversion = 1\n[outputs."y\\n"]\ntype = "float64"\n'])
async def test_a_model_or_field_name_ending_in_a_newline_is_refused(bare, text):
    """A name is the whole of its pattern: "eta\\n" (which `$` let through) is 422 bad_schema, not a second "eta"."""
    status, body = await _push(bare, text)
    assert status == 422 and body["error"]["code"] == "bad_schema", body


async def test_a_device_name_or_tag_ending_in_a_newline_is_refused(server):
    """Adding device "pump-1\\n" or tagging a device "pilot\\n" is 400, as any other name outside the pattern."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with server.session.post(f"{server.url}/v1/devices", json={"name": "pump-1\n"}, headers=headers) as r:
        assert r.status == 400, await r.text()
    await server.add_device("pump-1")
    async with server.session.post(f"{server.url}/v1/devices/pump-1/tags", json={"add": ["pilot\n"]}, headers=headers) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_tag"
