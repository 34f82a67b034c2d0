"""Sampling: keep rate with 1/p weights, uncertainty sampling, the hourly cap, feedback always kept."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from edgeloop.collector.config import SamplingRule, SamplingSettings
from edgeloop.collector.sampling import RATE_CAPPED, SAMPLED_OUT, Sampler

NOW = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)


def sampler(seed: int = 1, **rule) -> Sampler:
    return Sampler(SamplingSettings(seed=seed, models={"m": SamplingRule(**rule)}))


def confident(n: int) -> tuple[list[str], list[float]]:
    return ["prediction"] * n, [0.99] * n


def test_kept_predictions_weigh_one_over_keep_rate():
    """Every kept prediction carries weight 1/keep_rate and every other is sampled out."""
    decisions = sampler(keep_rate=0.25).decide("m", *confident(1000), NOW)
    assert set(decisions) == {4.0, SAMPLED_OUT}


def test_weights_sum_to_the_number_of_predictions():
    """Σ sample_weight over kept predictions estimates how many were made (seeded: 40,000 at p=0.1 within 5%)."""
    kinds, _ = confident(40_000)
    rng = random.Random(3)
    confidences = [rng.random() for _ in kinds]
    decisions = sampler(keep_rate=0.1, always_keep_below_confidence=0.2).decide("m", kinds, confidences, NOW)
    total = sum(d for d in decisions if isinstance(d, float))
    # sd of the estimate is sqrt(32,000 * 0.9 / 0.1) ~ 537, so 2,000 is almost 4 sd.
    assert total == pytest.approx(40_000, abs=2_000)


def test_uncertain_predictions_are_always_kept_with_weight_one():
    """A prediction below the confidence threshold is kept with weight 1 even at a tiny keep rate."""
    decisions = sampler(keep_rate=0.01, always_keep_below_confidence=0.3).decide(
        "m", ["prediction"] * 500, [0.29] * 500, NOW
    )
    assert decisions == [1.0] * 500


def test_feedback_is_always_kept():
    """Feedback is kept with weight 1 whatever the keep rate and cap."""
    decisions = sampler(keep_rate=0.01, max_per_hour=1).decide("m", ["feedback"] * 100, [None] * 100, NOW)
    assert decisions == [1.0] * 100


def test_cap_holds_per_clock_hour_and_per_model():
    """At most max_per_hour predictions are kept per model in one clock hour; the next hour starts afresh."""
    s = Sampler(SamplingSettings(seed=1, default=SamplingRule(max_per_hour=10)))
    first = s.decide("m", *confident(6), NOW)
    second = s.decide("m", *confident(6), NOW + timedelta(minutes=20))
    assert first == [1.0] * 6 and second == [1.0] * 4 + [RATE_CAPPED] * 2
    assert s.decide("other", *confident(3), NOW) == [1.0] * 3
    assert s.decide("m", *confident(12), NOW + timedelta(minutes=29)).count(1.0) == 0
    assert s.decide("m", *confident(12), NOW + timedelta(hours=1)).count(1.0) == 10


def test_cap_covers_uncertain_predictions_but_not_feedback():
    """Uncertain predictions count against the cap; feedback neither counts nor is capped."""
    s = sampler(always_keep_below_confidence=0.5, max_per_hour=2)
    decisions = s.decide("m", ["prediction", "feedback", "prediction", "prediction"], [0.1, None, 0.1, 0.1], NOW)
    assert decisions == [1.0, 1.0, 1.0, RATE_CAPPED]


def test_seed_makes_sampling_reproducible():
    """Two samplers with one seed make the same decisions; another seed differs."""
    args = ("m", *confident(200), NOW)
    assert sampler(seed=5, keep_rate=0.5).decide(*args) == sampler(seed=5, keep_rate=0.5).decide(*args)
    assert sampler(seed=5, keep_rate=0.5).decide(*args) != sampler(seed=6, keep_rate=0.5).decide(*args)
