"""Privacy configuration on the device: regions, custom patterns, the allow-list, a model-based
detector, the envelope's free text, explicit rules for string fields, and fleet-key hygiene."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

import pytest

from edgeloop.collector.config import PrivacySettings, SamplingSettings
from edgeloop.collector.pipeline import Pipeline
from edgeloop.errors import SchemaError
from edgeloop.schemas import SchemaRegistry
from edgeloop.schemas.model_schema import ModelSchema
from edgeloop.schemas.registry import EXAMPLES_DIR
from tests.collector.conftest import FLEET_KEY, run_cli

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
PREDICTION_ID = "01937b5e-0000-7000-8000-000000000001"


def detect_names(text: str) -> list[tuple[int, int, str]]:
    """A small model-free stand-in for a named-entity model: finds 'Jane Roe'."""
    start = text.find("Jane Roe")
    return [] if start < 0 else [(start, start + len("Jane Roe"), "person")]


def one_line_error(result) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeloop-collector: error: "), result.stderr
    return lines[0]


def vibration(note: str) -> dict:
    return {
        "kind": "prediction",
        "model": "vibration",
        "model_version": "2.1.0",
        "inputs": {"temperature_c": 41.5, "rpm": 1480, "spectrum": [0.25] * 16, "note": note},
        "outputs": {"predicted_class": "ok", "confidence": 0.9},
    }


def test_regions_patterns_allow_and_detector_reach_the_stored_column():
    """A pipeline built from [privacy] finds national numbers of its regions, custom kinds and detector spans, and keeps allowed text."""
    settings = PrivacySettings(
        regions=("CH",),
        patterns=({"name": "employee_id", "regex": r"\bEMP-\d{6}\b"},),
        allow=(r"\bsupport@acme\.example\b",),
        detector="tests.collector.test_privacy_config:detect_names",
    )
    pipeline = Pipeline(SchemaRegistry.from_dir(EXAMPLES_DIR), SamplingSettings(seed=1), FLEET_KEY, settings)
    note = "Jane Roe (EMP-004211) called 044 668 18 00, cc support@acme.example and jo@acme.example"
    batch = pipeline.process([vibration(note)], now=NOW).batches["vibration"]
    assert batch.column("note")[0].as_py() == (
        "<PERSON> (<EMPLOYEE_ID>) called <PHONE>, cc support@acme.example and <EMAIL>"
    )


def test_feedback_source_is_redacted_by_default():
    """The envelope's feedback `source` is free text: an e-mail in it never reaches the batch."""
    pipeline = Pipeline(SchemaRegistry.from_dir(EXAMPLES_DIR), SamplingSettings(seed=1), FLEET_KEY)
    record = {
        "kind": "feedback",
        "model": "vibration",
        "model_version": "2.1.0",
        "prediction_id": PREDICTION_ID,
        "source": "operator jane.roe@plant.example.com",
        "feedback": {"true_class": "outer_race"},
    }
    batch = pipeline.process([record], now=NOW).batches["vibration"]
    assert batch.column("source")[0].as_py() == "operator <EMAIL>"


def test_schema_source_privacy_can_hash_or_drop_it():
    """source_privacy = "hash" stores the HMAC of `source`; "drop" stores nothing; the fingerprint changes with it."""
    base = 'name = "m"\nversion = 1\n[inputs.x]\ntype = "float32"\n[feedback.label]\ntype = "string"\nprivacy = "keep"\n'
    hashed = ModelSchema.from_toml('source_privacy = "hash"\n' + base)
    dropped = ModelSchema.from_toml('source_privacy = "drop"\n' + base)
    plain = ModelSchema.from_toml(base)
    assert len({hashed.fingerprint, dropped.fingerprint, plain.fingerprint}) == 3
    registry = SchemaRegistry([hashed])
    record = {"kind": "feedback", "model": "m", "model_version": "1", "prediction_id": PREDICTION_ID,
              "source": "operator-7", "feedback": {"label": "a"}}  # fmt: skip
    batch = Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY).process([record], now=NOW).batches["m"]
    assert batch.column("source")[0].as_py() == hmac.new(FLEET_KEY, b"operator-7", hashlib.sha256).hexdigest()
    registry = SchemaRegistry([dropped])
    batch = Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY).process([record], now=NOW).batches["m"]
    assert batch.column("source")[0].as_py() is None
    with pytest.raises(SchemaError, match="source_privacy"):
        ModelSchema.from_toml('source_privacy = "round:1"\n' + base)


def test_string_field_without_an_explicit_rule_is_refused():
    """A schema file whose string field has no privacy rule is refused with a one-line error naming the field."""
    text = 'name = "m"\nversion = 1\n[inputs.comment]\ntype = "string"\n'
    with pytest.raises(SchemaError, match=r"field inputs\.comment: a string field needs an explicit privacy rule"):
        ModelSchema.from_toml(text, source="m.toml")


def test_schema_patterns_are_checked_and_used(tmp_path):
    """A schema's own [privacy] patterns and allow-list apply to its fields; a bad regex is refused at load."""
    text = (
        'name = "m"\nversion = 1\n[privacy]\nallow = ["ACME-HQ"]\n'
        '[[privacy.patterns]]\nname = "badge"\nregex = "B\\\\d{5}"\nvalidator = "luhn"\n'
        '[inputs.note]\ntype = "string"\nprivacy = "redact"\n'
    )
    schema = ModelSchema.from_toml(text)
    pipeline = Pipeline(SchemaRegistry([schema]), SamplingSettings(seed=1), FLEET_KEY)
    record = {"kind": "prediction", "model": "m", "model_version": "1", "inputs": {"note": "B12344 B12345 at ACME-HQ"},
              "outputs": {}}
    batch = pipeline.process([record], now=NOW).batches["m"]
    assert batch.column("note")[0].as_py() == "<BADGE> B12345 at ACME-HQ"
    assert ModelSchema.from_canonical_json(schema.canonical_json()).canonical_json() == schema.canonical_json()
    for bad, problem in (("B(\\\\d", "does not compile"), ("x*", "matches the empty string")):
        with pytest.raises(SchemaError, match=problem):
            ModelSchema.from_toml(text.replace('B\\\\d{5}', bad))


@pytest.mark.parametrize(
    ("privacy", "problem"),
    [
        ({"patterns": [{"name": "emp", "regex": "EMP-(\\d"}]}, "privacy.patterns.0.regex: regex 'EMP-(\\\\d' does not compile"),
        ({"patterns": [{"name": "emp", "regex": "\\d*"}]}, "matches the empty string"),
        ({"allow": ["a|"]}, "privacy.allow: regex 'a|' matches the empty string"),
        ({"regions": ["XX"]}, "unknown region 'XX'"),
        ({"patterns": [{"name": "emp", "regex": "E\\d", "validator": "crc"}]}, "privacy.patterns.0.validator"),
        ({"detector": "no_such_module_here:detect"}, "privacy.detector: cannot load 'no_such_module_here:detect'"),
    ],
)
def test_check_config_refuses_bad_privacy_settings(agent_factory, privacy, problem):
    """A pattern that does not compile or matches the empty string, an unknown region or validator, or a detector that does not load: one line, exit 1."""
    agent = agent_factory(privacy=privacy)
    assert problem in one_line_error(agent.cli("check-config"))


def test_agent_applies_privacy_settings_end_to_end(agent_factory):
    """A running agent with [privacy] settings stores the redacted note in its sealed batch."""
    agent = agent_factory(privacy={"regions": ["CH"], "patterns": [{"name": "employee_id", "regex": "EMP-\\d{6}"}]})
    agent.start()
    status, body = agent.post_records([vibration("EMP-004211 on 044 668 18 00")])
    assert status == 200, body
    agent.flush()
    notes = [note for table in agent.read_batches().values() for note in table.column("note").to_pylist()]
    assert notes == ["<EMPLOYEE_ID> on <PHONE>"]


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [
        (None, 0o620, "writable by others"),
        (None, 0o602, "writable by others"),
        (b"a" * 40, 0o600, "looks guessable"),
        (b"password12345678", 0o600, "looks guessable"),
        (b"0123456701234567" * 2, 0o600, "looks guessable"),
    ],
)
def test_fleet_key_hygiene(agent_factory, tmp_path, content, mode, problem):
    """A group- or world-writable key file, or a key of low entropy, is refused with one line."""
    key = tmp_path / "fleet.key"
    key.write_bytes(content or secrets.token_bytes(32))
    key.chmod(mode)
    agent = agent_factory(agent={"key_file": str(key)})
    assert problem in one_line_error(agent.cli("check-config"))
    assert problem in one_line_error(agent.cli("pseudonym", "x"))


def test_installer_style_base64_key_is_accepted(agent_factory, tmp_path):
    """The installer's key, 32 random bytes as base64 text with a newline, passes; it is used as text, not decoded."""
    key = tmp_path / "fleet.key"
    text = secrets.token_bytes(32).hex()[:44]
    key.write_text(text + "\n")
    key.chmod(0o600)
    agent = agent_factory(agent={"key_file": str(key)})
    result = agent.cli("pseudonym", "jane.roe@plant.example.com")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == hmac.new(text.encode(), b"jane.roe@plant.example.com", hashlib.sha256).hexdigest()


def test_pseudonym_prints_what_the_device_stores(agent_factory):
    """`pseudonym VALUE` prints exactly the hash the agent stores for VALUE in a `hash` field, for strings and typed values."""
    agent = agent_factory()
    agent.start()
    record = vibration("x")
    record["inputs"]["operator_email"] = "jane.roe@plant.example.com"
    status, body = agent.post_records([record])
    assert status == 200, body
    agent.flush()
    stored = [v for table in agent.read_batches().values() for v in table.column("operator_email").to_pylist()]
    printed = agent.cli("pseudonym", "jane.roe@plant.example.com")
    assert printed.returncode == 0, printed.stderr
    assert stored == [printed.stdout.strip()]
    number = agent.cli("pseudonym", "--type", "int", "1480")
    assert number.stdout.strip() == hmac.new(FLEET_KEY, b"1480", hashlib.sha256).hexdigest()
    assert "is not a int" in one_line_error(agent.cli("pseudonym", "--type", "int", "x"))


def test_a_timestamp_pseudonym_reads_a_leap_second_as_the_agent_does(agent_factory):
    """`pseudonym --type timestamp` of a leap second prints the hash of :59.999999 (what the agent stores), the same in any offset."""
    agent = agent_factory()
    leap = agent.cli("pseudonym", "--type", "timestamp", "2016-12-31T23:59:60Z")
    assert leap.returncode == 0, leap.stderr
    expected = hmac.new(FLEET_KEY, b"2016-12-31T23:59:59.999999+00:00", hashlib.sha256).hexdigest()
    assert leap.stdout.strip() == expected
    assert agent.cli("pseudonym", "--type", "timestamp", "2017-01-01T05:44:60+05:45").stdout.strip() == expected


def test_pseudonym_without_a_config_is_one_line(tmp_path):
    """`pseudonym` with a missing config file is a one-line error, exit 1."""
    assert "nope.toml: no such config file" in one_line_error(run_cli("pseudonym", "x", "--config", str(tmp_path / "nope.toml")))


def test_presidio_works_through_the_detector_hook(agent_factory):
    """Presidio's recognizers, named in privacy.detector, redact what they find in a running agent's batches."""
    pytest.importorskip("presidio_analyzer")
    agent = agent_factory(privacy={"detector": "tests.collector.presidio_detector:detect"})
    assert agent.cli("check-config").returncode == 0
    agent.start()
    status, body = agent.post_records([vibration("ship the seal to SW1A 2AA by Friday")])
    assert status == 200, body
    agent.flush()
    notes = [note for table in agent.read_batches().values() for note in table.column("note").to_pylist()]
    assert notes == ["ship the seal to <UK_POSTCODE> by Friday"]


def broken_detector(text: str) -> list[tuple[int, int, str]]:
    raise RuntimeError("model not loaded")


def test_a_failing_detector_fails_the_request_and_stores_nothing(agent_factory):
    """When the detector raises, the request is answered 500 and none of its text reaches the spool."""
    agent = agent_factory(privacy={"detector": "tests.collector.test_privacy_config:broken_detector"})
    agent.start()
    status, _ = agent.post_records([vibration("Jane Roe, unchecked")])
    assert status == 500
    agent.flush()
    assert all(b"Jane Roe" not in path.read_bytes() for path in agent.state_dir.rglob("*") if path.is_file())


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_pseudonym_of_a_timestamp_outside_years_1_to_9999_is_one_line(agent_factory, value):
    """`pseudonym --type timestamp` with a time outside years 1 to 9999 in UTC is a one-line error, not a traceback."""
    agent = agent_factory()
    assert "years 1 to 9999" in one_line_error(agent.cli("pseudonym", "--type", "timestamp", value))
