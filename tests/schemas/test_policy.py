"""Sampling policies: bounded validation shared by device and server, and unbiased weights (property test)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.collector.sampling import SAMPLED_OUT, InForce, Sampler
from edgeloop.errors import PolicyError
from edgeloop.schemas.policy import MAX_STRATEGIES, Policy, load_policy_text
from edgeloop.schemas.registry import EXAMPLES_DIR, SchemaRegistry

VIBRATION = SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]

EXAMPLE = """
description = "boundary cases, rare classes, a 1% baseline"
per_hour = 100000

[strategies.baseline]
type = "random"
rate = 0.01

[strategies.boundary]
type = "confidence_band"
threshold = 0.5
epsilon = 0.1
per_minute = 100

[strategies.rare]
type = "by_class"
rates = { bearing_wear = 1.0, imbalance = 0.5 }
others = 0.0

[strategies.hot]
type = "drift"
field = "temperature_c"
min = -20.0
max = 80.0
per_day = 5000
"""


def test_example_policy_parses_and_fits_its_model():
    """The README's example policy parses and fits the vibration schema; its canonical form round-trips."""
    policy = load_policy_text(EXAMPLE, VIBRATION, source="example.toml")
    assert list(policy.strategies) == ["baseline", "boundary", "rare", "hot"]
    assert Policy.from_mapping(policy.model_dump(mode="json")) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[strategies.a]\ntype = 'random'\nrate = 1.5", "strategies.a.rate: Input should be less than or equal to 1"),
        ("[strategies.a]\ntype = 'random'\nrate = -0.1", "greater than or equal to 0"),
        ("[strategies.a]\ntype = 'random'\nrate = nan", "finite number"),
        ("[strategies.a]\ntype = 'lottery'\nrate = 0.1", "does not match any of the expected tags"),
        ("[strategies.A]\ntype = 'random'\nrate = 0.1", "String should match pattern"),
        ("[strategies.a]\ntype = 'random'\nrate = 0.1\nper_hour = -1", "greater than or equal to 0"),
        ("[strategies.a]\ntype = 'random'\nrate = 0.1\nsurprise = 1", "Extra inputs are not permitted"),
        ("[strategies.a]\ntype = 'count'\nfield = 'confidence'", "needs above or below"),
        ("[strategies.a]\ntype = 'drift'\nfield = 'rpm'\nmin = 5.0\nmax = 1.0", "min is above max"),
        ("strategies = 3", "strategies"),
        ("[strategies", "not valid TOML"),
    ],
)
def test_bad_policies_are_one_line_errors(text: str, message: str):
    """Every broken policy file is a one-line PolicyError naming the file and the setting."""
    with pytest.raises(PolicyError, match="^p.toml: ") as caught:
        Policy.from_toml(text, source="p.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bounds_on_strategies_and_class_lists():
    """A policy holds at most MAX_STRATEGIES strategies and 1,024 classes per class list."""
    many = {f"s{i}": {"type": "random", "rate": 0.1} for i in range(MAX_STRATEGIES + 1)}
    with pytest.raises(PolicyError, match="strategies"):
        Policy.from_mapping({"strategies": many})
    classes = {f"c{i}": 0.5 for i in range(1025)}
    with pytest.raises(PolicyError, match="rates"):
        Policy.from_mapping({"strategies": {"rare": {"type": "by_class", "rates": classes}}})
    long_classes = {f"{i:04d}" + "x" * 120: 0.5 for i in range(1024)}
    within = {f"s{i}": {"type": "by_class", "rates": long_classes} for i in range(3)}
    with pytest.raises(PolicyError, match="over 262144"):
        Policy.from_mapping({"strategies": within})


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ({"type": "drift", "field": "nope", "min": 0.0}, "'nope' is not a numeric input field"),
        ({"type": "drift", "field": "confidence", "min": 0.0}, "is not a numeric input field"),
        ({"type": "count", "field": "temperature_c", "above": 3}, "is not a numeric output field"),
        ({"type": "by_class", "field": "confidence", "rates": {}}, "is not a string, integer or bool output"),
    ],
)
def test_a_policy_must_fit_its_models_schema(strategy: dict, message: str):
    """A strategy naming a field the model lacks, or one of the wrong section or type, is refused before it applies."""
    policy = Policy.from_mapping({"strategies": {"s": strategy}})
    with pytest.raises(PolicyError, match=message):
        policy.check(VIBRATION)


def test_confidence_strategies_need_a_confidence_field():
    """A confidence strategy for a model whose schema declares no confidence_field is refused."""
    schema = SchemaRegistry.from_dir(EXAMPLES_DIR)["image_classifier"]
    policy = Policy.from_mapping({"strategies": {"b": {"type": "confidence_band", "threshold": 0.5, "epsilon": 0.1}}})
    if schema.confidence_field is None:
        with pytest.raises(PolicyError, match="no confidence_field"):
            policy.check(schema)
    else:
        policy.check(schema)


_random = st.builds(lambda rate: {"type": "random", "rate": rate}, st.floats(0.05, 1.0))
_band = st.builds(lambda t, e, rate: {"type": "confidence_band", "threshold": t, "epsilon": e, "rate": rate},
                  st.floats(0, 1), st.floats(0, 0.5), st.floats(0.05, 1.0))
_below = st.builds(lambda b, rate: {"type": "confidence_below", "below": b, "rate": rate}, st.floats(0, 1), st.floats(0.05, 1.0))
_class = st.builds(lambda a, b, others: {"type": "by_class", "rates": {"normal": a, "bearing_wear": b}, "others": others},
                   st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
_drift = st.builds(lambda low, width, rate: {"type": "drift", "field": "temperature_c", "min": low, "max": low + width, "rate": rate},
                   st.floats(-10, 50), st.floats(0, 40), st.floats(0.05, 1.0))
_policies = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), st.one_of(_random, _band, _below, _class, _drift),
                            min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies=_policies, seed=st.integers(0, 2**32 - 1))
def test_weighted_count_of_kept_records_estimates_the_true_count(strategies: dict, seed: int):
    """For random policies, Σ sample_weight over kept records estimates how many records the policy could keep, within 5 sd."""
    policy = Policy.from_mapping({"strategies": strategies})
    rules = policy.check(VIBRATION)
    rng = random.Random(seed)
    classes = ["normal", "bearing_wear", "imbalance"]
    records = [
        {"kind": "prediction", "inputs": {"temperature_c": rng.uniform(-30, 100)},
         "outputs": {"predicted_class": rng.choice(classes), "confidence": rng.random()}}
        for _ in range(4000)
    ]
    sampler = Sampler(seed)
    sampler.apply({"vibration": InForce("t", rules)})
    weights, _, _ = sampler.decide("vibration", records)
    # The exact keep probability of each record, computed here independently of the sampler.
    keep = [1 - math.prod(1 - p for _, probability, _, _ in rules.strategies if (p := probability(r)) > 0) for r in records]
    reachable = sum(1 for p in keep if p > 0)
    variance = sum((1 - p) / p for p in keep if p > 0)
    estimate = sum(w for w in weights if w != SAMPLED_OUT)
    assert all(w == SAMPLED_OUT for w, p in zip(weights, keep, strict=True) if p == 0)
    assert abs(estimate - reachable) <= 5 * math.sqrt(variance) + 1e-6, (estimate, reachable, variance)
