"""Server-side policies: versioned, validated like on the device, targeted by name or tag, ETag/304, rollback."""

from __future__ import annotations

import pytest

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
