"""The simulated models: valid records, deterministic per seed, shaped like production data."""

from __future__ import annotations

import base64
import statistics
from datetime import datetime

import pytest

from bench import simulator
from bench.simulator import MODELS, SimulatedModel
from edgeloop.schemas import EXAMPLES_DIR, RecordValidator, SchemaRegistry


@pytest.fixture(scope="module")
def registry():
    return SchemaRegistry.from_dir(EXAMPLES_DIR)


@pytest.mark.parametrize("name", MODELS)
def test_records_validate_against_their_schema(registry, name):
    """Every simulated prediction and feedback record passes the model's record validator."""
    records = list(SimulatedModel(name, seed=3).records(600, feedback_ratio=0.1))
    _, good, issues = RecordValidator(registry[name]).validate(records)
    assert issues == []
    assert len(good) == 600
    assert 20 < sum(r["kind"] == "feedback" for r in records) < 120


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_records_other_seed_other_records(name):
    """A seed fixes the whole stream; another seed gives another device."""
    first = list(SimulatedModel(name, seed=7).records(50))
    assert first == list(SimulatedModel(name, seed=7).records(50))
    assert first != list(SimulatedModel(name, seed=8).records(50))


@pytest.mark.parametrize("name", MODELS)
def test_feedback_labels_an_earlier_prediction(name):
    """Each feedback record's prediction_id is a prediction this device logged before it."""
    seen: set[str] = set()
    for record in SimulatedModel(name, seed=1).records(400, feedback_ratio=0.2):
        if record["kind"] == "feedback":
            assert record["prediction_id"] in seen
        else:
            seen.add(record["record_id"])


def test_vibration_values_look_like_a_pump():
    """Readings cluster near operating points and set points, and the model is mostly confident."""
    predictions = list(SimulatedModel("vibration", seed=2).predictions(500))
    inputs = [p["inputs"] for p in predictions]
    assert all(30 < i["temperature_c"] < 95 for i in inputs)
    assert len({round(i["rpm"], -2) for i in inputs}) <= 12  # a few set points, not a spread
    assert all(i["spectrum"][0] > i["spectrum"][15] for i in inputs)  # energy decays with frequency
    assert len({(round(i["lat"], 2), round(i["lon"], 2)) for i in inputs}) == 1  # one plant
    assert len({i["operator_email"] for i in inputs}) <= 6
    assert statistics.median(p["outputs"]["confidence"] for p in predictions) > 0.75
    datetime.fromisoformat(inputs[0]["measured_at"])


def test_image_scores_are_sorted_and_sum_to_at_most_one():
    """Top-5 scores come best first, the best is the confidence, and they never sum past 1."""
    for record in SimulatedModel("image_classifier", seed=4).predictions(300):
        scores = record["outputs"]["top_k_scores"]
        assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0
        assert scores[0] <= record["outputs"]["confidence"]
        thumbnail = base64.b64decode(record["inputs"]["thumbnail"])
        assert thumbnail.startswith(b"\xff\xd8") and 500 < len(thumbnail) <= 16384


def test_thumbnails_without_pillow_are_synthetic_but_distinct(monkeypatch):
    """Without Pillow the thumbnails are JPEG-framed stand-ins, still distinct per frame."""
    monkeypatch.setattr(simulator, "Image", None)
    assert not simulator.thumbnails_are_jpeg()
    frames = [r["inputs"]["thumbnail"] for r in SimulatedModel("image_classifier", seed=5).predictions(100)]
    assert len(set(frames)) == 100
    assert all(1000 < len(base64.b64decode(f)) < 4000 for f in frames)
