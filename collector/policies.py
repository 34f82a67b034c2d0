"""Which sampling policy each model runs on this device: pinned files, the server's, or [sampling].

Precedence per model: a policy file pinned in ``[policy] files``; else, unless ``[policy]
remote = "forbid"``, the policy the server pushes (``GET /v1/policies``, fetched at every
sync and at start-up); else the policy equivalent to the model's ``[sampling]`` rule.

The server's answer is checked with the rules the server used (``Policy.check`` against
this device's schemas) and taken whole or not at all, then written durably to
``<state_dir>/policies.json`` before it applies: a restart, offline or not, runs the last
policies the device accepted. Each applied policy reports a version: ``server:<n>``,
``file:<digest>`` or ``config:<digest>``. When the last fetch was and how it went is saved
there too, so ``status`` after a restart still says it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from edgeloop.collector.answer import Answer
from edgeloop.collector.config import PolicySettings, SamplingSettings
from edgeloop.collector.sampling import InForce, legacy_policy
from edgeloop.durable import write_durably
from edgeloop.errors import PolicyError
from edgeloop.schemas.policy import Policy
from edgeloop.schemas.registry import SchemaRegistry
from edgeloop.settings import read_text

__all__ = ["MAX_DOCUMENT_BYTES", "Policies"]

log = logging.getLogger(__name__)

STATE_FILE = "policies.json"
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # a policy per model, each at most MAX_POLICY_BYTES


class Policies:
    """The policies this device may run, and the one in force per model (``resolve``)."""

    def __init__(self, settings: PolicySettings, sampling: SamplingSettings, state_dir: Path | None = None) -> None:
        self.settings = settings
        self.sampling = sampling
        self._path = state_dir / STATE_FILE if state_dir is not None else None
        self._pinned = {model: _read_file(path) for model, path in settings.files.items()}
        self.etag: str | None = None
        self.remote: dict[str, tuple[int, Policy]] = {}
        self.last_fetch: dict[str, Any] | None = None  # {"at", "outcome"} of the latest fetch
        if self._path is not None:
            self._load(self._path)

    def reload(self, settings: PolicySettings, sampling: SamplingSettings) -> None:
        """New [policy] and [sampling] sections (SIGHUP); the server's policies stay."""
        self._pinned = {model: _read_file(path) for model, path in settings.files.items()}
        self.settings, self.sampling = settings, sampling

    def resolve(self, registry: SchemaRegistry) -> dict[str, InForce]:
        """The policy each model of ``registry`` runs now, checked against its schema."""
        in_force: dict[str, InForce] = {}
        for schema in registry:
            model = schema.name
            pinned = self._pinned.get(model)
            remote = self.remote.get(model) if self.settings.remote == "allow" else None
            if pinned is not None:
                in_force[model] = InForce(f"file:{pinned.digest}", pinned.check(schema))
                continue
            if remote is not None:
                try:
                    in_force[model] = InForce(f"server:{remote[0]}", remote[1].check(schema))
                    continue
                except PolicyError as exc:  # the schema changed since it was accepted
                    log.error("server policy does not fit the model's schema; using [sampling]",
                              extra={"model": model, "error": str(exc)})
            local = legacy_policy(self.sampling.rule(model))
            in_force[model] = InForce(f"config:{local.digest}", local.check(schema))
        return in_force

    def accept(self, document: Any, etag: str | None, registry: SchemaRegistry) -> bool:
        """Take the server's policies if every one is valid for its model here; True when they changed."""
        remote = _parse_document(document, registry)
        if remote == self.remote:
            self.etag = etag
            return False
        if self._path is not None:
            write_durably(self._path, self._state(remote, etag, self.last_fetch), mode=0o600)
        self.remote, self.etag = remote, etag
        log.info("server policies accepted", extra={"versions": {m: v for m, (v, _) in remote.items()}})
        return True

    async def fetch(self, session: aiohttp.ClientSession, url: str, token: str, registry: SchemaRegistry) -> str:
        """Ask the server for this device's policies; returns what happened, in a word. Never raises for the server's answer."""
        outcome = await self._fetch(session, url, token, registry)
        self.last_fetch = {"at": datetime.now(UTC).isoformat(), "outcome": outcome}
        if self._path is not None and self.settings.remote == "allow":
            try:
                write_durably(self._path, self._state(self.remote, self.etag, self.last_fetch), mode=0o600)
            except OSError as exc:  # the policies in force are saved already; only the fetch's time is not
                log.warning("cannot save when the policies were fetched", extra={"path": str(self._path), "error": str(exc)})
        return outcome

    @staticmethod
    def _state(remote: dict[str, tuple[int, Policy]], etag: str | None, last_fetch: dict[str, Any] | None) -> bytes:
        return orjson.dumps({"etag": etag, "policies": _document(remote), "last_fetch": last_fetch})

    async def _fetch(self, session: aiohttp.ClientSession, url: str, token: str, registry: SchemaRegistry) -> str:
        if self.settings.remote == "forbid":
            return "forbidden"
        headers = {"Authorization": f"Bearer {token}"}
        if self.etag:
            headers["If-None-Match"] = self.etag
        try:
            # Never redirected: steering comes from sync.url's origin or not at all. The session bounds the time.
            async with session.get(f"{url}/v1/policies", headers=headers, allow_redirects=False) as response:
                if response.status == 304:
                    return "unchanged"
                if response.status == 404:
                    return "unsupported"  # a server from before policies
                answer = await Answer.read(response, MAX_DOCUMENT_BYTES)
            if answer.status != 200:
                log.warning("policy fetch refused", extra={"status": answer.status, "body": str(answer.shown)[:200]})
                hint = " (check sync.token_file)" if answer.status in (401, 403) else ""
                return f"failed: HTTP {answer.status}{hint}"
            if answer.problem is not None:
                raise PolicyError(f"the policy document is {answer.problem}")
            if isinstance(answer.body, str):
                raise PolicyError(f"the policy document is not JSON: {answer.body[:80]!r}")
            changed = self.accept(answer.body, answer.headers.get("ETag"), registry)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # aiohttp's repr is its connection key; its text names the host and the cause a person can act on.
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("policy fetch failed; running on the policies in force", extra={"error": error})
            return f"failed: {error}"
        except PolicyError as exc:
            log.error("server policies refused; running on the policies in force", extra={"error": str(exc)})
            return f"refused: {exc}"
        return "updated" if changed else "unchanged"

    def _load(self, path: Path) -> None:
        try:
            state = orjson.loads(path.read_bytes())
            self.remote = _parse_stored(state["policies"])
            self.etag = state.get("etag")
            last_fetch = state.get("last_fetch")
            if isinstance(last_fetch, dict) and all(isinstance(last_fetch.get(key), str) for key in ("at", "outcome")):
                self.last_fetch = {"at": last_fetch["at"], "outcome": last_fetch["outcome"]}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, PolicyError) as exc:
            # Written durably, so only a hand edit gets here: run on local policies until the next sync.
            log.error("stored server policies unreadable; ignored until the next sync", extra={"path": str(path), "error": str(exc)})


def _read_file(path: Path) -> Policy:
    return Policy.from_toml(read_text(path, what="policy.files"), source=str(path))


def _parse_stored(raw: Any) -> dict[str, tuple[int, Policy]]:
    if not isinstance(raw, dict):
        raise PolicyError("policies must be an object of model -> {version, policy}")
    parsed: dict[str, tuple[int, Policy]] = {}
    for model, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), int) or isinstance(entry["version"], bool):
            raise PolicyError(f"policies.{str(model)[:64]}: needs an integer version and a policy")
        parsed[model] = (entry["version"], Policy.from_mapping(entry.get("policy"), source=f"server policy for {str(model)[:64]}"))
    return parsed


def _parse_document(document: Any, registry: SchemaRegistry) -> dict[str, tuple[int, Policy]]:
    """The server's answer, every policy checked against this device's schema of its model (others ignored)."""
    if not isinstance(document, dict):
        raise PolicyError("the policy document is not a JSON object")
    remote = _parse_stored(document.get("policies"))
    for model, (version, policy) in list(remote.items()):
        schema = registry.get(model)
        if schema is None:
            del remote[model]  # a model this device does not run
            continue
        try:
            policy.check(schema)
        except PolicyError as exc:
            raise PolicyError(f"server policy {model} version {version}: {exc}") from exc
    return remote


def _document(remote: dict[str, tuple[int, Policy]]) -> dict[str, Any]:
    return {model: {"version": version, "policy": policy.model_dump(mode="json", exclude_none=True)} for model, (version, policy) in remote.items()}
