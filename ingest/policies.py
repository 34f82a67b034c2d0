"""Sampling policies the server pushes to devices: versioned per model, targeted, rolled back.

Tables (created with the database)::

    policies     model, version (1, 2, ... per model), policy_json, devices (a name pattern,
                 fnmatch: "cam-*"), tag, created_at, note; never updated or deleted
    device_tags  device, tag

A device gets, per model, the highest version whose target matches it: ``devices`` matches
its name (null: any) and ``tag`` is one of its tags (null: any). ``rollback`` adds a new
version copying an older one (policy and target), so history only grows and devices see a
new version either way. A policy is checked against the model's latest registered schema
with the rules a device uses (``Policy.check``) before it is stored.

``PolicyIndex`` holds every policy and tag in memory, rebuilt on the writer after each
change, so a device's ``GET /v1/policies`` costs no database read; its ETag is a digest of
the answer, so an unchanged answer is a 304.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson

from edgeloop.errors import BatchRejected, PolicyError
from edgeloop.ingest.catalog import Catalog
from edgeloop.schemas.policy import Policy

__all__ = ["POLICY_ROWS_SQL", "POLICY_TABLES", "TAG_ROWS_SQL", "PolicyBook", "PolicyIndex"]

POLICY_TABLES = """
CREATE TABLE IF NOT EXISTS policies (
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    policy_json VARCHAR NOT NULL,
    devices VARCHAR,
    tag VARCHAR,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    note VARCHAR,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS device_tags (
    device VARCHAR NOT NULL,
    tag VARCHAR NOT NULL,
    PRIMARY KEY (device, tag)
);
"""

POLICY_ROWS_SQL = "SELECT model, version, policy_json, devices, tag FROM policies"
TAG_ROWS_SQL = "SELECT device, tag FROM device_tags"
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")  # \Z: "$" also matches before a final newline
MAX_PATTERN_CHARS = 128
MAX_TAGS_PER_DEVICE = 64
MAX_NOTE_CHARS = 500


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    policy: dict[str, Any]
    devices: str | None
    tag: str | None


class PolicyIndex:
    """Every stored policy and device tag, to answer devices from memory."""

    def __init__(self, entries: dict[str, list[_Entry]] | None = None, tags: dict[str, frozenset[str]] | None = None) -> None:
        self._entries = entries or {}  # model -> entries, highest version first
        self._tags = tags or {}

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection) -> PolicyIndex:
        return cls.from_rows(con.execute(POLICY_ROWS_SQL).fetchall(), con.execute(TAG_ROWS_SQL).fetchall())

    @classmethod
    def from_rows(cls, policies: Iterable[Sequence[Any]], tags: Iterable[Sequence[Any]]) -> PolicyIndex:
        """From the rows of POLICY_ROWS_SQL and TAG_ROWS_SQL (read directly or through the admin API)."""
        entries: dict[str, list[_Entry]] = {}
        for model, version, text, devices, tag in sorted(policies, key=lambda row: (row[0], -row[1])):
            entries.setdefault(model, []).append(_Entry(version, orjson.loads(text), devices, tag))
        by_device: dict[str, set[str]] = {}
        for device, tag in tags:
            by_device.setdefault(device, set()).add(tag)
        return cls(entries, {device: frozenset(values) for device, values in by_device.items()})

    def for_device(self, device: str) -> tuple[dict[str, Any], str]:
        """The document a device gets (each model's policy that applies to it) and its ETag."""
        tags = self._tags.get(device, frozenset())
        policies: dict[str, Any] = {}
        for model, entries in self._entries.items():
            for entry in entries:
                if (entry.devices is None or fnmatch.fnmatchcase(device, entry.devices)) and (entry.tag is None or entry.tag in tags):
                    policies[model] = {"version": entry.version, "policy": entry.policy}
                    break
        document = {"policies": policies}
        etag = '"' + hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32] + '"'
        return document, etag


class PolicyBook:
    """Changes to the policies and tags, each inside the caller's transaction (the writer's, or the CLI's)."""

    @staticmethod
    def set(con: duckdb.DuckDBPyConnection, catalog: Catalog, model: str, text: str, *, source: str,
            devices: str | None = None, tag: str | None = None, note: str | None = None) -> dict[str, Any]:
        """Check and store a policy file for ``model`` as its next version."""
        schema = catalog.latest(model)
        if schema is None:
            raise BatchRejected(404, "unknown_model", f"no schema is registered for model {model[:64]!r}: push it first")
        try:
            policy = Policy.from_toml(text, source=source)
            policy.check(schema)
        except PolicyError as exc:
            raise BatchRejected(422, "bad_policy", str(exc)) from exc
        _check_target(devices, tag)
        return _insert(con, model, policy.model_dump(mode="json", exclude_none=True), devices, tag,
                       note or f"set from {source}"[:MAX_NOTE_CHARS])

    @staticmethod
    def rollback(con: duckdb.DuckDBPyConnection, catalog: Catalog, model: str, to: int | None = None) -> dict[str, Any]:
        """A new version copying ``to`` (default: the version before the latest)."""
        rows = con.execute(
            "SELECT version, policy_json, devices, tag FROM policies WHERE model = ? ORDER BY version DESC", [model]
        ).fetchall()
        if not rows:
            raise BatchRejected(404, "no_policy", f"model {model[:64]!r} has no policy to roll back")
        if to is None:
            if len(rows) < 2:
                raise BatchRejected(409, "no_policy", f"model {model!r} has only version {rows[0][0]}: nothing to roll back to")
            to = rows[1][0]
        match = [row for row in rows if row[0] == to]
        if not match:
            raise BatchRejected(404, "no_policy", f"model {model!r} has no policy version {to}")
        _, text, devices, tag = match[0]
        schema = catalog.latest(model)
        try:  # the schema may have changed since that version was set
            if schema is not None:
                Policy.from_mapping(orjson.loads(text), source=f"version {to}").check(schema)
        except PolicyError as exc:
            raise BatchRejected(422, "bad_policy", f"version {to} no longer fits the model's schema: {exc}") from exc
        return _insert(con, model, orjson.loads(text), devices, tag, f"rollback to version {to}")

    @staticmethod
    def tag(con: duckdb.DuckDBPyConnection, device: str, add: list[str], remove: list[str]) -> dict[str, Any]:
        """Add and remove tags of a known device; returns its tags."""
        if not con.execute("SELECT 1 FROM devices WHERE name = ?", [device]).fetchone():
            raise BatchRejected(404, "unknown_device", f"no device named {device[:64]!r}")
        for tag in (*add, *remove):
            if not isinstance(tag, str) or not TAG.match(tag):
                raise BatchRejected(400, "bad_tag", f"tag {str(tag)[:70]!r}: letters, digits and _ . : - (at most 64, starting with a letter or digit)")
        if both := sorted(set(add) & set(remove)):
            raise BatchRejected(400, "bad_tag", f"tag {both[0]!r} is both added and removed: say which")
        for tag in remove:
            con.execute("DELETE FROM device_tags WHERE device = ? AND tag = ?", [device, tag])
        for tag in add:
            # Not ON CONFLICT: a lake's tables have no keys (its device changes are serialized instead).
            con.execute("INSERT INTO device_tags SELECT $d, $t WHERE NOT EXISTS "
                        "(SELECT 1 FROM device_tags WHERE device = $d AND tag = $t)", {"d": device, "t": tag})
        tags = [row[0] for row in con.execute("SELECT tag FROM device_tags WHERE device = ? ORDER BY tag", [device]).fetchall()]
        if len(tags) > MAX_TAGS_PER_DEVICE:
            raise BatchRejected(400, "bad_tag", f"a device has at most {MAX_TAGS_PER_DEVICE} tags")
        return {"device": device, "tags": tags}


def _check_target(devices: str | None, tag: str | None) -> None:
    if devices is not None and (not devices or len(devices) > MAX_PATTERN_CHARS):
        raise BatchRejected(400, "bad_target", f"a device pattern is 1 to {MAX_PATTERN_CHARS} characters")
    if tag is not None and not TAG.match(tag):
        raise BatchRejected(400, "bad_target", f"tag {tag[:70]!r}: letters, digits and _ . : - (at most 64)")


def _insert(con: duckdb.DuckDBPyConnection, model: str, policy: dict[str, Any], devices: str | None,
            tag: str | None, note: str) -> dict[str, Any]:
    (latest,) = con.execute("SELECT coalesce(max(version), 0) FROM policies WHERE model = ?", [model]).fetchone()
    version = latest + 1
    con.execute(
        "INSERT INTO policies VALUES (?, ?, ?, ?, ?, now(), ?)",
        [model, version, orjson.dumps(policy, option=orjson.OPT_SORT_KEYS).decode(), devices, tag, note],
    )
    return {"model": model, "version": version, "devices": devices, "tag": tag, "note": note, "policy": policy}
