"""Which policy a device runs: pinned file > server's (unless forbidden) > [sampling]; kept durably; refused whole."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from edgeloop.collector.config import PolicySettings, SamplingSettings, check_policy_files
from edgeloop.collector.policies import Policies
from edgeloop.errors import ConfigError
from edgeloop.schemas.registry import EXAMPLES_DIR, SchemaRegistry
from tests.sockets import listen_on_loopback

REGISTRY = SchemaRegistry.from_dir(EXAMPLES_DIR)
BAND = {"strategies": {"boundary": {"type": "confidence_band", "threshold": 0.5, "epsilon": 0.1}}}
DRIFT_NOPE = {"strategies": {"hot": {"type": "drift", "field": "nope", "min": 0.0}}}


def document(version: int, policy: dict, model: str = "vibration") -> dict:
    return {"policies": {model: {"version": version, "policy": policy}}}


def test_server_policy_wins_over_sampling_and_survives_a_restart(tmp_path: Path):
    """An accepted server policy runs instead of [sampling] and is read back from the state dir by a new agent."""
    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    assert policies.resolve(REGISTRY)["vibration"].version.startswith("config:")
    assert policies.accept(document(4, BAND), '"e1"', REGISTRY) is True
    assert policies.resolve(REGISTRY)["vibration"].version == "server:4"
    assert policies.accept(document(4, BAND), '"e1"', REGISTRY) is False
    again = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    assert again.resolve(REGISTRY)["vibration"].version == "server:4" and again.etag == '"e1"'
    assert (tmp_path / "policies.json").stat().st_mode & 0o777 == 0o600


def test_forbid_and_a_pinned_file_ignore_the_server(tmp_path: Path):
    """remote = "forbid" runs [sampling]; a pinned file runs whatever the server pushed."""
    Policies(PolicySettings(), SamplingSettings(), tmp_path).accept(document(2, BAND), None, REGISTRY)
    forbidden = Policies(PolicySettings(remote="forbid"), SamplingSettings(), tmp_path)
    assert forbidden.resolve(REGISTRY)["vibration"].version.startswith("config:")
    pinned_file = tmp_path / "pinned.toml"
    pinned_file.write_text('[strategies.all]\ntype = "random"\nrate = 0.5\n')
    pinned = Policies(PolicySettings(files={"vibration": pinned_file}), SamplingSettings(), tmp_path)
    assert pinned.resolve(REGISTRY)["vibration"].version.startswith("file:")
    assert Policies(PolicySettings(), SamplingSettings(), tmp_path).resolve(REGISTRY)["vibration"].version == "server:2"


def test_a_document_with_one_bad_policy_is_refused_whole(tmp_path: Path):
    """A policy that does not fit this device's schema refuses the whole answer; the previous policies stay and stay on disk."""
    from edgeloop.errors import PolicyError

    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    policies.accept(document(1, BAND), None, REGISTRY)
    bad = {"policies": {**document(2, BAND)["policies"], "image_classifier": {"version": 2, "policy": DRIFT_NOPE}}}
    with pytest.raises(PolicyError, match="image_classifier version 2"):
        policies.accept(bad, None, REGISTRY)
    assert policies.resolve(REGISTRY)["vibration"].version == "server:1"
    assert orjson.loads((tmp_path / "policies.json").read_bytes())["policies"]["vibration"]["version"] == 1


def test_an_unreadable_state_file_falls_back_to_local_policies(tmp_path: Path):
    """A corrupt policies.json is logged and ignored: the device runs [sampling] until the next sync."""
    (tmp_path / "policies.json").write_text("{not json")
    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    assert policies.resolve(REGISTRY)["vibration"].version.startswith("config:")


def test_pinned_files_are_checked_against_the_schema(tmp_path: Path):
    """check-config and start-up refuse a pinned file that is missing, invalid or does not fit its model."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[strategies.hot]\ntype = "drift"\nfield = "nope"\nmin = 0.0\n')
    with pytest.raises(ConfigError, match="policy.files.vibration: .*'nope'"):
        check_policy_files(PolicySettings(files={"vibration": bad}), REGISTRY)
    with pytest.raises(ConfigError, match="cannot read"):
        check_policy_files(PolicySettings(files={"vibration": tmp_path / "missing.toml"}), REGISTRY)
    with pytest.raises(ConfigError, match="no schema"):
        check_policy_files(PolicySettings(files={"nomodel": bad}), REGISTRY)


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, orjson.dumps(document(3, BAND)), "updated"),
        (304, b"", "unchanged"),
        (404, b"{}", "unsupported"),
        (500, b"{}", "failed: HTTP 500"),
        (200, b"{not json", "refused"),
        (200, orjson.dumps(document(3, DRIFT_NOPE)), "refused"),
        (200, b"[" + b" " * (17 << 20) + b"]", "refused"),
    ],
)
async def test_fetch_never_raises_and_keeps_the_policies_in_force(tmp_path: Path, status: int, body: bytes, outcome: str):
    """Whatever the server answers, fetch reports it in a word and only a valid 200 changes the policies."""
    seen: dict[str, str | None] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["authorization"] = request.headers.get("Authorization")
        seen["if_none_match"] = request.headers.get("If-None-Match")
        return web.Response(status=status, body=body if status != 304 else None, headers={"ETag": '"x"'})

    app = web.Application()
    app.router.add_get("/v1/policies", handler)
    runner = web.AppRunner(app)
    url = await listen_on_loopback(runner)
    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    policies.etag = '"old"'
    try:
        async with aiohttp.ClientSession() as session:
            got = await policies.fetch(session, url, "tok", REGISTRY)
    finally:
        await runner.cleanup()
    assert got.startswith(outcome) and policies.last_fetch["outcome"] == got
    assert seen == {"authorization": "Bearer tok", "if_none_match": '"old"'}
    version = policies.resolve(REGISTRY)["vibration"].version
    assert version == ("server:3" if outcome == "updated" else version) and (outcome == "updated") == version.startswith("server:")
