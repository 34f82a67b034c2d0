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
        ('name = "m"\nversion = 1\n[inputs.record_id]\ntype = "string"\nprivacy = "keep"\n', "f.toml: field inputs.record_id: 'record_id' is an envelope column"),
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


COMPARED = MINIMAL + """
[outputs.label]
type = "string"
privacy = "keep"
[outputs.score]
type = "float32"
[outputs.estimate]
type = "float64"
[feedback.truth]
type = "string"
privacy = "keep"
[feedback.measured]
type = "float64"
"""


def _declare(text: str, **keys: str) -> str:
    head = "".join(f'{key} = "{value}"\n' for key, value in keys.items())
    return head + text


def test_comparison_declarations_leave_the_fingerprint_alone():
    """Declaring prediction and truth fields travels in the schema JSON but keeps the fingerprint of the stored columns."""
    plain = ModelSchema.from_toml(COMPARED)
    declared = ModelSchema.from_toml(_declare(COMPARED, prediction_field="label", truth_field="truth"))
    assert declared.fingerprint == plain.fingerprint
    assert "prediction_field" not in plain.canonical_json()
    again = ModelSchema.from_canonical_json(declared.canonical_json())
    assert (again.prediction_field, again.truth_field, again.comparison_task) == ("label", "truth", "classification")
    assert again.fingerprint == declared.fingerprint


def test_the_examples_declare_what_to_compare():
    """Both example schemas declare a classification of predicted_class against true_class with a confidence."""
    for schema in SchemaRegistry.from_dir(EXAMPLES_DIR):
        assert (schema.prediction_field, schema.truth_field, schema.confidence_field) == ("predicted_class", "true_class", "confidence")
        assert schema.comparison_task == "classification"


def test_float_prediction_and_truth_make_a_regression():
    """Float prediction and truth fields are a regression unless the task says otherwise."""
    schema = ModelSchema.from_toml(_declare(COMPARED, prediction_field="estimate", truth_field="measured"))
    assert schema.comparison_task == "regression"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"prediction_field": "label"}, "prediction_field and truth_field go together"),
        ({"prediction_field": "x", "truth_field": "truth"}, "prediction_field 'x' must name a stored output field"),
        ({"prediction_field": "label", "truth_field": "label"}, "truth_field 'label' must name a stored feedback field"),
        ({"prediction_field": "estimate", "truth_field": "truth"}, "a regression compares numeric"),
        ({"prediction_field": "estimate", "truth_field": "measured", "task": "classification"}, "a classification compares label fields"),
        ({"prediction_field": "label", "truth_field": "measured", "task": "regression"}, "a regression compares numeric"),
        ({"task": "regression"}, "task needs prediction_field and truth_field"),
    ],
)
def test_bad_comparison_declarations_are_one_line_errors(keys, expected):
    """A comparison that cannot be computed is refused when the schema loads, with a one-line reason."""
    with pytest.raises(SchemaError) as info:
        ModelSchema.from_toml(_declare(COMPARED, **keys), source="f.toml")
    assert "\n" not in str(info.value)
    assert expected in str(info.value), str(info.value)


def test_hashed_truth_against_plain_prediction_is_refused():
    """A hashed truth label can never equal a plain predicted label, so the schema says so when it loads."""
    text = _declare(COMPARED.replace('[feedback.truth]\ntype = "string"\nprivacy = "keep"', '[feedback.truth]\ntype = "string"\nprivacy = "hash"'),
                    prediction_field="label", truth_field="truth")
    with pytest.raises(SchemaError, match="like with like"):
        ModelSchema.from_toml(text)
