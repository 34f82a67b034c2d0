"""Record validation: per-record errors that name the field, good records kept."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import hypothesis
import pytest
from hypothesis import strategies

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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUILT: dict[int, tuple] = {}


def _validators(registry) -> tuple:
    """The vibration record and line validators, compiled once for every generated example."""
    from edgeloop.schemas.records import LineValidator

    if id(registry) not in _BUILT:
        _BUILT[id(registry)] = (RecordValidator(registry["vibration"]), LineValidator([registry["vibration"]]))
    return _BUILT[id(registry)]


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    instant=strategies.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),  # noqa: DTZ001 (hypothesis bounds are naive)
                                 timezones=strategies.just(UTC)),
    offset_s=strategies.integers(min_value=-86399, max_value=86399),
)
def test_any_aware_time_the_sdk_sends_is_the_same_instant_in_both_parsers(registry, instant, offset_s):
    """Any aware datetime in years 1-9999 (any offset, seconds included) comes out of the SDK's text as its own instant, in both parsers."""
    from datetime import timedelta, timezone

    import orjson

    from edgeloop.collector.client import _wire_time

    local = instant.astimezone(timezone(timedelta(seconds=offset_s)))
    record = {**prediction(), "created_at": _wire_time(local)}
    _, good, issues = _validators(registry)[0].validate([record])
    assert issues == [] and good[0]["created_at"] == instant
    assert _validators(registry)[1].validate(orjson.dumps(record))["created_at"] == instant


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(us=strategies.integers(min_value=253_402_300_800_000, max_value=253_402_300_799_999_999))
def test_epoch_microseconds_and_nanoseconds_past_what_milliseconds_reach_are_read_exactly(registry, us):
    """An integer too large for epoch milliseconds reads as microseconds to the µs, and one 1,000 times that as nanoseconds."""
    validator = _validators(registry)[0]
    expected = _EPOCH + timedelta(microseconds=us)
    for value in (us, us * 1000 + 999):
        _, good, issues = validator.validate([{**prediction(), "created_at": value}])
        assert issues == [] and good[0]["created_at"] == expected, value
