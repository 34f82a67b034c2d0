"""Server-side policies: versioned, validated like on the device, targeted by name or tag, ETag/304, rollback."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from edgeloop.schemas.registry import EXAMPLES_DIR
from tests.ingest.conftest import Server

BAND = '[strategies.boundary]\ntype = "confidence_band"\nthreshold = 0.5\nepsilon = 0.1\n'
RANDOM = '[strategies.baseline]\ntype = "random"\nrate = 0.1\n'


async def admin(server: Server, path: str, payload: dict) -> tuple[int, dict]:
    async with server.session.post(f"{server.url}{path}", json=payload,
                                   headers={"Authorization": f"Bearer {server.admin_token}"}) as response:
        return response.status, await response.json()


async def fetch(server: Server, token: str, etag: str | None = None) -> tuple[int, dict | None, str | None]:
    headers = {"Authorization": f"Bearer {token}"}
    if etag:
        headers["If-None-Match"] = etag
    async with server.session.get(f"{server.url}/v1/policies", headers=headers) as response:
        body = await response.json() if response.status != 304 else None
        return response.status, body, response.headers.get("ETag")


async def test_a_device_gets_the_latest_policy_and_an_unchanged_one_costs_a_304(server):
    """Each `set` is the next version; a device gets the latest with an ETag, and that ETag answers 304 until it changes."""
    token = await server.add_device("cam-1")
    status, body, _ = await fetch(server, token)
    assert status == 200 and body == {"policies": {}}
    status, receipt = await admin(server, "/v1/policies/vibration", {"policy": BAND, "source": "band.toml"})
    assert status == 201 and receipt["version"] == 1
    status, body, etag = await fetch(server, token)
    assert body["policies"]["vibration"]["version"] == 1 and "boundary" in body["policies"]["vibration"]["policy"]["strategies"]
    assert (await fetch(server, token, etag))[0] == 304
    await admin(server, "/v1/policies/vibration", {"policy": RANDOM})
    status, body, new_etag = await fetch(server, token, etag)
    assert status == 200 and body["policies"]["vibration"]["version"] == 2 and new_etag != etag


async def test_policies_target_devices_by_name_pattern_and_tag(server):
    """A targeted policy reaches only matching devices; the others get the highest version that applies to them."""
    cam, kiosk = await server.add_device("cam-1"), await server.add_device("kiosk-1")
    await admin(server, "/v1/policies/vibration", {"policy": RANDOM})
    await admin(server, "/v1/policies/vibration", {"policy": BAND, "devices": "cam-*"})
    await admin(server, "/v1/policies/vibration", {"policy": RANDOM, "tag": "pilot"})
    versions = [(await fetch(server, t))[1]["policies"]["vibration"]["version"] for t in (cam, kiosk)]
    assert versions == [2, 1]
    status, tags = await admin(server, "/v1/devices/kiosk-1/tags", {"add": ["pilot"]})
    assert status == 200 and tags == {"device": "kiosk-1", "tags": ["pilot"]}
    versions = [(await fetch(server, t))[1]["policies"]["vibration"]["version"] for t in (cam, kiosk)]
    assert versions == [2, 3]
    assert (await admin(server, "/v1/devices/nobody/tags", {"add": ["pilot"]}))[0] == 404
    assert (await admin(server, "/v1/devices/kiosk-1/tags", {"add": ["no spaces"]}))[0] == 400


async def test_a_tag_both_added_and_removed_is_refused(server):
    """A tag change that adds and removes the same tag is a 400 naming it, and the device's tags stay as they were."""
    await server.add_device("kiosk-1")
    await admin(server, "/v1/devices/kiosk-1/tags", {"add": ["pilot"]})
    status, body = await admin(server, "/v1/devices/kiosk-1/tags", {"add": ["pilot", "eu"], "remove": ["pilot"]})
    assert status == 400 and body["error"]["code"] == "bad_tag" and "'pilot'" in body["error"]["message"]
    assert (await admin(server, "/v1/devices/kiosk-1/tags", {}))[1]["tags"] == ["pilot"]


async def test_rollback_adds_a_version_copying_an_older_one(server):
    """Rollback stores a new version with the older policy (history only grows); to a missing version it is a 404."""
    token = await server.add_device("cam-1")
    await admin(server, "/v1/policies/vibration", {"policy": BAND})
    await admin(server, "/v1/policies/vibration", {"policy": RANDOM})
    status, receipt = await admin(server, "/v1/policies/vibration/rollback", {"to": None})
    assert status == 201 and receipt["version"] == 3 and receipt["note"] == "rollback to version 1"
    policy = (await fetch(server, token))[1]["policies"]["vibration"]
    assert policy["version"] == 3 and "boundary" in policy["policy"]["strategies"]
    status, body = await admin(server, "/v1/policies/vibration/rollback", {"to": 9})
    assert status == 404 and body["error"]["code"] == "no_policy"


@pytest.mark.parametrize(
    ("model", "payload", "status", "code"),
    [
        ("vibration", {"policy": "[strategies.a]\ntype = 'random'\nrate = 2.0\n"}, 422, "bad_policy"),
        ("vibration", {"policy": "[strategies.a]\ntype = 'drift'\nfield = 'nope'\nmin = 1.0\n"}, 422, "bad_policy"),
        ("vibration", {"policy": "[strategies"}, 422, "bad_policy"),
        ("vibration", {"policy": 3}, 400, "bad_json"),
        ("vibration", {"policy": RANDOM, "tag": "has space"}, 400, "bad_target"),
        ("nosuchmodel", {"policy": RANDOM}, 404, "unknown_model"),
    ],
)
async def test_bad_policies_are_refused_with_the_error_shape(server, model, payload, status, code):
    """A policy that breaks the shared rules or its model's schema is refused with the one error shape; nothing is stored."""
    got, body = await admin(server, f"/v1/policies/{model}", payload)
    assert (got, body["error"]["code"]) == (status, code) and body["error"]["message"]
    assert await server.sql("SELECT count(*) AS n FROM policies") == [{"n": 0}]


async def test_policy_endpoints_need_the_right_token(server):
    """Devices read policies with a device token; setting one needs the admin token."""
    token = await server.add_device("cam-1")
    async with server.session.get(f"{server.url}/v1/policies") as response:
        assert response.status == 401
    async with server.session.post(f"{server.url}/v1/policies/vibration", json={"policy": RANDOM},
                                   headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 401


async def test_batches_from_agents_before_sampled_by_still_land(server, vibration, tmp_path):
    """A batch without sampled_by and policy_version lands them as nulls; one with them lands them; an over-long one is a 422."""
    from tests.ingest.conftest import make_table, seal

    token = await server.add_device("old-agent")
    old, _ = make_table(vibration, predictions=3)
    batch_id, body = seal(tmp_path / "a", vibration, old.drop_columns(["sampled_by", "policy_version"]))
    status, receipt, _ = await server.put(batch_id, body, token)
    assert status == 201, receipt
    new, _ = make_table(vibration, predictions=2)
    new = new.set_column(new.schema.get_field_index("sampled_by"), "sampled_by", pa.array(["boundary", "a,b"]))
    batch_id, body = seal(tmp_path / "b", vibration, new)
    assert (await server.put(batch_id, body, token))[0] == 201
    rows = await server.sql("SELECT sampled_by FROM vibration ORDER BY sampled_by NULLS FIRST")
    assert [row["sampled_by"] for row in rows] == [None, None, None, "a,b", "boundary"]
    # The README's query for "kept by strategy b" passes the SQL allow-list.
    assert await server.sql("SELECT count(*) AS n FROM vibration WHERE list_contains(string_split(sampled_by, ','), 'b')") == [{"n": 1}]
    long, _ = make_table(vibration, predictions=1)
    long = long.set_column(long.schema.get_field_index("sampled_by"), "sampled_by", pa.array(["x" * 600]))
    batch_id, body = seal(tmp_path / "c", vibration, long)
    status, answer, _ = await server.put(batch_id, body, token)
    assert (status, answer["error"]["code"]) == (422, "bad_values")


def test_a_database_from_before_gets_the_new_envelope_columns(tmp_path, vibration):
    """Opening a database whose model tables predate sampled_by and policy_version adds them (null in old rows)."""
    import duckdb

    from edgeloop.ingest.store import Store
    from tests.ingest.conftest import make_config

    config = make_config(tmp_path)
    store = Store(config.store.db_path, config.store)
    store.register(vibration).result(timeout=30)
    store.close()
    with duckdb.connect(str(config.store.db_path)) as con:
        for table in ("vibration", "vibration_feedback"):
            con.execute(f"ALTER TABLE {table} DROP COLUMN sampled_by")
            con.execute(f"ALTER TABLE {table} DROP COLUMN policy_version")
    store = Store(config.store.db_path, config.store)
    try:
        columns = {row[0] for row in store.cursor().execute("DESCRIBE vibration_training").fetchall()}
    finally:
        store.close()
    assert {"sampled_by", "policy_version"} <= columns


def test_policy_commands_work_on_the_database_file_with_the_server_stopped(tmp_path):
    """policy set/show/history/rollback and devices tag run on the file directly when no server holds it."""
    from tests.ingest.conftest import cli, write_config

    config = str(write_config(tmp_path, 1))
    cli("schemas", "push", str(EXAMPLES_DIR / "vibration.toml"), "--config", config)
    cli("devices", "add", "cam-1", "--config", config)
    band, rand = tmp_path / "band.toml", tmp_path / "random.toml"
    band.write_text(BAND)
    rand.write_text(RANDOM)
    assert "version 1 stored for every device" in cli("policy", "set", "--model", "vibration", str(band), "--config", config).stdout
    out = cli("policy", "set", "--model", "vibration", str(rand), "--tag", "pilot", "--config", config).stdout
    assert "version 2 stored for tag 'pilot'" in out
    shown = json.loads(cli("policy", "show", "--model", "vibration", "--device", "cam-1", "--config", config).stdout)
    assert shown["version"] == 1
    assert "pilot" in cli("devices", "tag", "cam-1", "pilot", "--config", config).stdout
    shown = json.loads(cli("policy", "show", "--model", "vibration", "--device", "cam-1", "--config", config).stdout)
    assert shown["version"] == 2 and "baseline" in shown["policy"]["strategies"]
    assert "rollback to version 1" in cli("policy", "rollback", "--model", "vibration", "--config", config).stdout
    history = cli("policy", "history", "--model", "vibration", "--format", "csv", "--config", config).stdout
    assert len(history.strip().splitlines()) == 4
    bad = tmp_path / "bad.toml"
    bad.write_text('[strategies.a]\ntype = "random"\nrate = 7\n')
    refused = cli("policy", "set", "--model", "vibration", str(bad), "--config", config, check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "strategies.a.rate" in refused.stderr
