"""The schema files: loading, one-line errors, fingerprints and the Arrow schema."""

from __future__ import annotations

import pyarrow as pa
import pytest

from edgeloop.schemas import EXAMPLES_DIR, ModelSchema, SchemaError, SchemaRegistry

MINIMAL = """
name = "m"
version = 1
[inputs.x]
type = "float32"
"""


def test_examples_load():
    """Both shipped example schemas load and cover the types the issue names."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    assert {schema.name for schema in registry} == {"vibration", "image_classifier"}
    vibration = registry["vibration"]
    types = {spec.type for spec in vibration.fields}
    assert {"float32", "vector", "string", "timestamp", "float64"} <= types
    assert registry["image_classifier"].field("thumbnail").max_bytes == 16384


def test_drop_removes_the_column_and_hash_makes_it_text():
    """A dropped field never has a column; a hashed one is stored as text."""
    schema = SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]
    names = schema.arrow_schema.names
    assert "serial_number" not in names
    assert schema.arrow_schema.field("operator_email").type == pa.string()
    assert schema.arrow_schema.field("spectrum").type == pa.list_(pa.float32(), 16)
    assert names[:8] == ["record_id", "kind", "model", "model_version", "created_at", "sample_weight", "prediction_id", "source"]


def test_fingerprint_is_stable_and_tracks_stored_shape():
    """The fingerprint ignores descriptions and changes when a type or rule changes."""
    base = ModelSchema.from_toml(MINIMAL)
    described = ModelSchema.from_toml(MINIMAL.replace('type = "float32"', 'type = "float32"\ndescription = "x"'))
    retyped = ModelSchema.from_toml(MINIMAL.replace("float32", "float64"))
    ruled = ModelSchema.from_toml(MINIMAL.replace('type = "float32"', 'type = "float32"\nprivacy = "round:1"'))
    assert base.fingerprint == described.fingerprint
    assert len({base.fingerprint, retyped.fingerprint, ruled.fingerprint}) == 3


def test_canonical_json_round_trips():
    """A schema rebuilt from a batch's metadata is the same schema."""
    schema = SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]
    again = ModelSchema.from_canonical_json(schema.canonical_json())
    assert again.fingerprint == schema.fingerprint
    assert again.arrow_schema == schema.arrow_schema


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "m"\nversion = 1\n[inputs.x]\ntype = "vector"\n', "f.toml: field inputs.x: a vector field needs dim"),
        ('name = "m"\nversion = 1\n[inputs.x]\ntype = "floaty"\n', "f.toml: field inputs.x (type):"),
        ('name = "m"\nversion = 1\n[inputs.x]\ntype = "float32"\nprivacy = "round:x"\n', "f.toml: field inputs.x (privacy): privacy rule 'round' needs a number"),
        ('name = "m"\nversion = 1\n[inputs.x]\ntype = "int32"\nprivacy = "redact"\n', "f.toml: field inputs.x: redact applies to string fields only"),
        ('name = "m"\nversion = 1\n[inputs.x]\ntype = "int32"\ncolour = 1\n', "f.toml: field inputs.x: unknown setting 'colour'"),
        ('name = "m"\nversion = 1\n[inputs.x]\ntype = "int32"\n[outputs.x]\ntype = "int32"\n', "f.toml: field 'x' appears twice"),
        ('name = "m"\nversion = 1\n[inputs.record_id]\ntype = "string"\n', "f.toml: field inputs.record_id: 'record_id' is an envelope column"),
        ('name = "m"\n[inputs.x]\ntype = "int32"\n', "f.toml: missing 'version'"),
        ('name = "m"\nversion = 1\n[inputs.x\n', "f.toml: not valid TOML"),
        ('name = "m"\nversion = 1\n[inputs.b]\ntype = "binary"\n', "f.toml: field inputs.b: a binary field needs max_bytes"),
    ],
)
def test_invalid_schema_gives_one_line_naming_file_and_field(text, expected):
    """Every invalid schema file gives a one-line error that names the file and the field."""
    with pytest.raises(SchemaError) as info:
        ModelSchema.from_toml(text, source="f.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_duplicate_model_names_are_refused(tmp_path):
    """Two files for one model are an error naming both files."""
    (tmp_path / "a.toml").write_text(MINIMAL)
    (tmp_path / "b.toml").write_text(MINIMAL)
    with pytest.raises(SchemaError, match="already defined"):
        SchemaRegistry.from_dir(tmp_path)
