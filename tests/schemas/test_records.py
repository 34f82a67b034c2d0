"""Record validation: per-record errors that name the field, good records kept."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from edgeloop.schemas import EXAMPLES_DIR, RecordValidator, SchemaRegistry


@pytest.fixture(scope="module")
def registry():
    return SchemaRegistry.from_dir(EXAMPLES_DIR)


def prediction(**inputs):
    return {
        "kind": "prediction",
        "model": "vibration",
        "model_version": "2.0.1",
        "inputs": {"temperature_c": 41.5, "rpm": 1480, "spectrum": [0.5] * 16, **inputs},
        "outputs": {"predicted_class": "ok", "confidence": 0.9},
    }


def test_good_records_validate_and_normalize(registry):
    """Timestamps become aware UTC datetimes and every good record comes back."""
    validator = RecordValidator(registry["vibration"])
    idx, good, issues = validator.validate([prediction(measured_at="2026-11-26T08:00:00+02:00")])
    assert issues == [] and idx == [0]
    assert good[0]["inputs"]["measured_at"] == datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (prediction(rpm="fast"), "inputs.rpm"),
        (prediction(rpm=2**40), "inputs.rpm"),
        (prediction(spectrum=[1.0] * 3), "inputs.spectrum"),
        (prediction(colour="red"), "inputs.colour"),
        (prediction(measured_at="yesterday"), "inputs.measured_at"),
        (prediction(measured_at="0001-01-01T00:00:00+01:00"), "inputs.measured_at"),  # year 0 in UTC
        ({**prediction(), "created_at": "9999-12-31T23:59:59-01:00"}, "created_at"),  # year 10000 in UTC
        (prediction(note="x" * 3000), "inputs.note"),
        ({**prediction(), "kind": "guess"}, "kind"),
        ({**prediction(), "outputs": {"confidence": 0.3}}, "outputs.predicted_class"),
        ({"kind": "feedback", "model": "vibration", "model_version": "1", "prediction_id": "nope", "feedback": {"true_class": "x"}}, "prediction_id"),
    ],
)
def test_bad_record_names_its_field(registry, record, field):
    """A bad record gets one issue naming the offending field; the good one beside it is kept."""
    validator = RecordValidator(registry["vibration"])
    idx, good, issues = validator.validate([prediction(), record])
    assert idx == [0] and len(good) == 1
    assert [(issue.index, issue.field) for issue in issues] == [(1, field)]


def test_binary_cap_is_on_decoded_bytes(registry):
    """A thumbnail over max_bytes is refused; one under it decodes from base64."""
    validator = RecordValidator(registry["image_classifier"])

    def record(size):
        return {
            "kind": "prediction",
            "model": "image_classifier",
            "model_version": "1",
            "inputs": {"thumbnail": base64.b64encode(b"\xff" * size).decode()},
            "outputs": {"predicted_class": "cola", "confidence": 0.5},
        }

    idx, good, issues = validator.validate([record(16384), record(16385)])
    assert idx == [0] and good[0]["inputs"]["thumbnail"] == b"\xff" * 16384
    assert issues[0].field == "inputs.thumbnail" and "cap" in issues[0].message
