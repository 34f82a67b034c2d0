"""Sampling: strategies of a policy, 1/P weights, which strategies selected a record, quotas, feedback always kept."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from edgeloop.collector.bootclock import boot_id
from edgeloop.collector.config import SamplingRule
from edgeloop.collector.sampling import RATE_CAPPED, SAMPLED_OUT, InForce, Sampler, legacy_policy
from edgeloop.schemas.model_schema import ModelSchema
from edgeloop.schemas.policy import Policy

NOW = datetime(2026, 11, 26, 6, 30, tzinfo=UTC).timestamp()  # on the sampler's clock: 06:30 of an uptime hour

SCHEMA = ModelSchema.from_toml(
    """
name = "m"
version = 1
confidence_field = "confidence"
prediction_field = "predicted_class"
truth_field = "true_class"
[inputs.temperature_c]
type = "float32"
[outputs.predicted_class]
type = "string"
privacy = "keep"
[outputs.confidence]
type = "float32"
[outputs.detections]
type = "int32"
[feedback.true_class]
type = "string"
privacy = "keep"
"""
)


def sampler(policy: Policy | dict, seed: int = 1, model: str = "m") -> Sampler:
    if isinstance(policy, dict):
        policy = Policy.from_mapping(policy)
    s = Sampler(seed)
    s.apply({model: InForce("test", policy.check(SCHEMA))})
    return s


def legacy(seed: int = 1, **rule) -> Sampler:
    return sampler(legacy_policy(SamplingRule(**rule)), seed)


def prediction(confidence: float = 0.99, cls: str = "ok", detections: int = 0, temperature: float = 20.0) -> dict:
    return {
        "kind": "prediction",
        "inputs": {"temperature_c": temperature},
        "outputs": {"predicted_class": cls, "confidence": confidence, "detections": detections},
    }


def confident(n: int) -> list[dict]:
    return [prediction(0.99) for _ in range(n)]


def decide(s: Sampler, records: list[dict], now: float = NOW) -> list[float | str]:
    return s.decide("m", records, now)[0]


def test_kept_predictions_weigh_one_over_keep_rate():
    """Every kept prediction carries weight 1/keep_rate and every other is sampled out."""
    assert set(decide(legacy(keep_rate=0.25), confident(1000))) == {4.0, SAMPLED_OUT}


def test_weights_sum_to_the_number_of_predictions():
    """Σ sample_weight over kept predictions estimates how many were made (seeded: 40,000 at p=0.1 within 5%)."""
    rng = random.Random(3)
    records = [prediction(rng.random()) for _ in range(40_000)]
    decisions = decide(legacy(keep_rate=0.1, always_keep_below_confidence=0.2), records)
    total = sum(d for d in decisions if isinstance(d, float))
    # sd of the estimate is sqrt(32,000 * 0.9 / 0.1) ~ 537, so 2,000 is almost 4 sd.
    assert total == pytest.approx(40_000, abs=2_000)


def test_uncertain_predictions_are_always_kept_with_weight_one():
    """A prediction below the confidence threshold is kept with weight 1 even at a tiny keep rate."""
    assert decide(legacy(keep_rate=0.01, always_keep_below_confidence=0.3), [prediction(0.29)] * 500) == [1.0] * 500


def test_feedback_is_always_kept():
    """Feedback is kept with weight 1 whatever the keep rate and cap, and no strategy is named for it."""
    s = legacy(keep_rate=0.01, max_per_hour=1)
    weights, selected_by, _ = s.decide("m", [{"kind": "feedback"}] * 100, NOW)
    assert weights == [1.0] * 100 and selected_by == [None] * 100


def test_cap_holds_per_hour_and_per_model():
    """At most max_per_hour predictions are kept per model in one hour of uptime; the next hour starts afresh."""
    s = Sampler(1)
    rules = legacy_policy(SamplingRule(max_per_hour=10)).check(SCHEMA)
    s.apply({"m": InForce("a", rules), "other": InForce("a", rules)})
    first = s.decide("m", confident(6), NOW)[0]
    second = s.decide("m", confident(6), NOW + timedelta(minutes=20).total_seconds())[0]
    assert first == [1.0] * 6 and second == [1.0] * 4 + [RATE_CAPPED] * 2
    assert s.decide("other", confident(3), NOW)[0] == [1.0] * 3
    assert s.decide("m", confident(12), NOW + timedelta(minutes=29).total_seconds())[0].count(1.0) == 0
    assert s.decide("m", confident(12), NOW + timedelta(hours=1).total_seconds())[0].count(1.0) == 10


def test_cap_covers_uncertain_predictions_but_not_feedback():
    """Uncertain predictions count against the cap; feedback neither counts nor is capped."""
    s = legacy(always_keep_below_confidence=0.5, max_per_hour=2)
    records = [prediction(0.1), {"kind": "feedback"}, prediction(0.1), prediction(0.1)]
    assert decide(s, records) == [1.0, 1.0, 1.0, RATE_CAPPED]


def test_seed_makes_sampling_reproducible():
    """Two samplers with one seed make the same decisions; another seed differs."""
    records = confident(200)
    assert decide(legacy(5, keep_rate=0.5), records) == decide(legacy(5, keep_rate=0.5), records)
    assert decide(legacy(5, keep_rate=0.5), records) != decide(legacy(6, keep_rate=0.5), records)


def test_confidence_band_keeps_records_near_the_threshold_only():
    """A confidence band keeps predictions within ε of the threshold (inclusive) with weight 1 and names itself."""
    s = sampler({"strategies": {"boundary": {"type": "confidence_band", "threshold": 0.5, "epsilon": 0.1}}})
    records = [prediction(c) for c in (0.39, 0.4, 0.5, 0.6, 0.61, 0.95)]
    weights, selected_by, version = s.decide("m", records, NOW)
    assert weights == [SAMPLED_OUT, 1.0, 1.0, 1.0, SAMPLED_OUT, SAMPLED_OUT]
    assert selected_by == [None, "boundary", "boundary", "boundary", None, None] and version == "test"


def test_by_class_rates_and_every_other_class():
    """Per-class rates keep rare classes more; `others` is the rate of every class not listed."""
    s = sampler({"strategies": {"rare": {"type": "by_class", "rates": {"fault": 1.0, "ok": 0.0}, "others": 0.5}}}, seed=2)
    weights, selected_by, _ = s.decide("m", [prediction(cls="fault")] * 50 + [prediction(cls="ok")] * 50 + [prediction(cls="odd")] * 400, NOW)
    assert weights[:50] == [1.0] * 50 and selected_by[:50] == ["rare"] * 50
    assert weights[50:100] == [SAMPLED_OUT] * 50
    odd = [w for w in weights[100:] if w != SAMPLED_OUT]
    assert set(odd) == {2.0} and 150 < len(odd) < 250


def test_count_and_drift_strategies_keep_outliers():
    """A count strategy keeps predictions with more detections than N; a drift probe keeps inputs outside the declared range."""
    policy = {"strategies": {
        "crowded": {"type": "count", "field": "detections", "above": 10},
        "hot": {"type": "drift", "field": "temperature_c", "min": -20.0, "max": 80.0},
    }}
    records = [prediction(detections=11), prediction(detections=10), prediction(temperature=81.0),
               prediction(temperature=-21.0), prediction(detections=50, temperature=90.0), prediction()]
    weights, selected_by, _ = sampler(policy).decide("m", records, NOW)
    assert weights == [1.0, SAMPLED_OUT, 1.0, 1.0, 1.0, SAMPLED_OUT]
    assert selected_by == ["crowded", None, "hot", "hot", "crowded,hot", None]


def test_weight_is_the_inverse_of_the_combined_keep_probability():
    """Two random strategies at 0.5 and 0.2 keep with P = 1 − 0.5·0.8 = 0.6: every kept record weighs 1/0.6."""
    s = sampler({"strategies": {"a": {"type": "random", "rate": 0.5}, "b": {"type": "random", "rate": 0.2}}})
    weights, selected_by, _ = s.decide("m", confident(5000), NOW)
    kept = [w for w in weights if w != SAMPLED_OUT]
    assert kept and all(w == pytest.approx(1 / 0.6) for w in kept)
    assert {"a", "b", "a,b"} == {name for name in selected_by if name}


def test_strategy_quota_per_minute_binds_per_strategy():
    """A strategy over its per-minute quota stops selecting until the next minute; another strategy still selects."""
    s = sampler({"strategies": {
        "boundary": {"type": "confidence_band", "threshold": 0.5, "epsilon": 0.1, "per_minute": 3},
        "crowded": {"type": "count", "field": "detections", "above": 10},
    }})
    records = [prediction(0.5)] * 5 + [prediction(0.5, detections=20)]
    assert decide(s, records) == [1.0, 1.0, 1.0, RATE_CAPPED, RATE_CAPPED, 1.0]
    assert s.decide("m", records, NOW)[1][-1] == "crowded"
    assert decide(s, records[:3], NOW + timedelta(minutes=1).total_seconds()) == [1.0] * 3


def test_policy_quota_per_day():
    """The policy's per_day quota caps everything the model keeps in a day of uptime."""
    s = sampler({"per_day": 5, "strategies": {"all": {"type": "random", "rate": 1.0}}})
    assert decide(s, confident(4)) == [1.0] * 4
    assert decide(s, confident(4), NOW + timedelta(hours=10).total_seconds()) == [1.0] + [RATE_CAPPED] * 3
    assert decide(s, confident(2), NOW + timedelta(days=1).total_seconds()) == [1.0] * 2


def test_a_new_policy_applies_whole_and_quota_windows_carry_on():
    """Applying a new policy changes the next decisions; a strategy keeping its name keeps its quota count."""
    s = sampler({"strategies": {"all": {"type": "random", "rate": 1.0, "per_hour": 3}}})
    assert decide(s, confident(2)) == [1.0, 1.0]
    s.apply({"m": InForce("v2", Policy.from_mapping({"strategies": {"all": {"type": "random", "rate": 1.0, "per_hour": 3}}}).check(SCHEMA))})
    weights, _, version = s.decide("m", confident(2), NOW)
    assert weights == [1.0, RATE_CAPPED] and version == "v2"


def test_legacy_rule_and_its_policy_keep_the_same_records_with_the_same_weights():
    """The [sampling] keys become a policy that decides exactly like the old rule: keep, weight 1 below the threshold, 1/rate else."""
    rng = random.Random(9)
    records = [prediction(rng.random()) for _ in range(2000)]
    weights = decide(legacy(keep_rate=0.2, always_keep_below_confidence=0.3), records)
    for record, weight in zip(records, weights, strict=True):
        if record["outputs"]["confidence"] < 0.3:
            assert weight == 1.0
        else:
            assert weight in (SAMPLED_OUT, pytest.approx(5.0))


@pytest.mark.parametrize("saved", [b"\x00not json", b"[]", b'{"boot_id": "other-boot", "windows": [["m", "", 3600, 0, 99]]}',
                                   b'{"boot_id": "BOOT", "windows": [["m", "", "x", null, 1], "junk", ["m", "", 0, 0, 9]]}',
                                   b'{"boot_id": "BOOT", "windows": 7}'])
def test_unreadable_or_other_boot_quota_counts_start_the_windows_afresh(tmp_path, saved):
    """A quotas.json that is not JSON, is from another boot or holds junk entries is ignored: the sampler starts with fresh windows."""
    (tmp_path / "quotas.json").write_bytes(saved.replace(b"BOOT", boot_id().encode()))
    s = Sampler(1, state_dir=tmp_path, clock=lambda: NOW)
    s.apply({"m": InForce("test", legacy_policy(SamplingRule(max_per_hour=5)).check(SCHEMA))})
    outcomes, _, _ = s.decide("m", confident(8))
    assert sum(isinstance(o, float) for o in outcomes) == 5


async def test_quota_counts_saved_are_read_back_by_the_next_sampler_on_the_same_boot(tmp_path):
    """The counts a sampler saves are the next one's (a restart), so the window's remaining budget carries over."""
    policy = {"m": InForce("test", legacy_policy(SamplingRule(max_per_hour=5)).check(SCHEMA))}
    first = Sampler(1, state_dir=tmp_path, clock=lambda: NOW)
    first.apply(policy)
    assert sum(isinstance(o, float) for o in first.decide("m", confident(3))[0]) == 3
    await first.save()
    second = Sampler(2, state_dir=tmp_path, clock=lambda: NOW)
    second.apply(policy)
    assert sum(isinstance(o, float) for o in second.decide("m", confident(8))[0]) == 2
