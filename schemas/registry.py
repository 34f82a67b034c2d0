"""The set of model schemas an agent or server knows, loaded from a folder of TOML files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from edgeloop.errors import SchemaError
from edgeloop.schemas.model_schema import ModelSchema, load_schema_file

__all__ = ["EXAMPLES_DIR", "SchemaRegistry"]

EXAMPLES_DIR = Path(__file__).parent / "models"


class SchemaRegistry:
    """Model schemas by model name; one schema per model."""

    def __init__(self, schemas: Iterable[ModelSchema] = ()) -> None:
        self._by_name: dict[str, ModelSchema] = {}
        for schema in schemas:
            self.add(schema)

    def add(self, schema: ModelSchema) -> None:
        if schema.name in self._by_name:
            other = self._by_name[schema.name]
            raise SchemaError(f"{schema.source}: model {schema.name!r} is already defined by {other.source}")
        self._by_name[schema.name] = schema

    @classmethod
    def from_dir(cls, path: str | Path) -> SchemaRegistry:
        path = Path(path)
        if not path.is_dir():
            raise SchemaError(f"{path}: schema folder does not exist")
        return cls(load_schema_file(file) for file in sorted(path.glob("*.toml")))

    def get(self, name: str) -> ModelSchema | None:
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> ModelSchema:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[ModelSchema]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)
