"""The Catalog: the model schemas this server accepts, by fingerprint.

Schemas are the server's to own: an admin registers each one (``edgeloop-ingest schemas
push FILE``, or ``server.schemas_dir`` at start), and a batch is checked against the
registered schema its fingerprint names, never against the schema text it carries. A new
version of a model is registered only if its columns fit the tables already there (added
fields become nullable columns; a column never changes type), so every registered
fingerprint of a model stays accepted: devices upgrade at their own pace.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from edgeloop.schemas.model_schema import ModelSchema

__all__ = ["Catalog", "diff"]


class Catalog:
    """Registered schemas by fingerprint; immutable, so readers on any thread see a consistent one."""

    def __init__(self, schemas: Iterable[ModelSchema] = ()) -> None:
        self._by_fingerprint = {schema.fingerprint: schema for schema in schemas}

    def get(self, fingerprint: str) -> ModelSchema | None:
        return self._by_fingerprint.get(fingerprint)

    def latest(self, model: str) -> ModelSchema | None:
        """The highest version registered for ``model``."""
        versions = [schema for schema in self._by_fingerprint.values() if schema.name == model]
        return max(versions, key=lambda schema: schema.version, default=None)

    def with_schema(self, schema: ModelSchema) -> Catalog:
        return Catalog([*self._by_fingerprint.values(), schema])

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._by_fingerprint

    def __iter__(self) -> Iterator[ModelSchema]:
        return iter(self._by_fingerprint.values())

    def __len__(self) -> int:
        return len(self._by_fingerprint)


def diff(old: ModelSchema | None, new: ModelSchema) -> list[dict[str, Any]]:
    """Field by field, what ``new`` changes against ``old``: added, removed or changed (with what)."""
    before = {spec.name: spec.canonical() for spec in old.fields} if old else {}
    after = {spec.name: spec.canonical() for spec in new.fields}
    changes: list[dict[str, Any]] = []
    for name, spec in after.items():
        if name not in before:
            changes.append({"field": name, "change": "added", "to": _describe(spec)})
        elif spec != before[name]:
            changed = {key: [before[name][key], value] for key, value in spec.items() if before[name][key] != value}
            changes.append({"field": name, "change": "changed", "what": changed})
    for name, spec in before.items():
        if name not in after:
            changes.append({"field": name, "change": "removed", "from": _describe(spec)})
    return changes


def _describe(spec: dict[str, Any]) -> str:
    extra = "".join(f" {key}={spec[key]}" for key in ("dim", "max_bytes") if spec.get(key) is not None)
    return f"{spec['section']}.{spec['name']} {spec['type']}{extra} privacy={spec['privacy']}"
