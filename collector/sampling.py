"""Which valid records the device keeps, by the sampling policy in force for their model.

A policy (``edgeloop.schemas.policy``) is a set of named strategies; each gives a prediction
a probability p_i of selecting it, drawn independently, and the prediction is kept when
any selects it. It then carries ``sample_weight = 1 / (1 − Π(1 − p_i))``, the inverse of the
chance the whole policy keeps it, so Σ sample_weight over kept records estimates how many
predictions were made and weighted means are unbiased; and ``sampled_by``, the names of
the strategies that selected it. Feedback is always kept, weight 1: labels are rare.

Quotas (per minute, hour or day, per strategy and over the whole policy) are fixed windows
keyed by the clock minute, hour or day of ``now``. A strategy over its quota does not
select; a prediction that no strategy may select any more, or that the policy's own quota
refuses, is dropped as ``rate_capped``. Quotas bias the weights and are not corrected: in
a window where one binds, the kept records are the window's first ones and their weights
under-count it (a correct weight would need the window's final count, only known once the
window's records are on disk). The drop counts travel in every batch's metadata, so an
analyst sees which windows were capped; where no quota binds, weights are exact.

The legacy per-model keys (``keep_rate``, ``always_keep_below_confidence``,
``max_per_hour``) are the policy ``legacy_policy`` builds: a ``random`` strategy named
``keep_rate``, a ``confidence_below`` named ``uncertain`` and the policy quota ``per_hour``.

The RNG is seeded from ``sampling.seed`` when given, for reproducible tests and benchmarks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgeloop.collector.config import SamplingRule
from edgeloop.schemas.policy import ConfidenceBelow, Policy, PolicyRules, RandomStrategy

__all__ = ["InForce", "RATE_CAPPED", "SAMPLED_OUT", "Sampler", "legacy_policy"]

SAMPLED_OUT = "sampled_out"
RATE_CAPPED = "rate_capped"
_POLICY = ""  # the quota key of the whole policy (strategy names are never empty)


@dataclass(frozen=True, slots=True)
class InForce:
    """A model's policy as the device applies it: checked rules and the version it reports."""

    version: str
    rules: PolicyRules


def legacy_policy(rule: SamplingRule) -> Policy:
    """The policy equivalent to a ``[sampling]`` rule: same keeps, same weights, same hourly cap."""
    strategies: dict[str, Any] = {}
    if rule.always_keep_below_confidence is not None:
        strategies["uncertain"] = ConfidenceBelow(type="confidence_below", below=rule.always_keep_below_confidence)
    strategies["keep_rate"] = RandomStrategy(type="random", rate=rule.keep_rate)
    return Policy(strategies=strategies, per_hour=rule.max_per_hour, description="from [sampling]")


class Sampler:
    """Decides, per valid record, keep (weight and selecting strategies) or drop (the reason)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._policies: Mapping[str, InForce] = {}
        self._windows: dict[tuple[str, str, int], tuple[int, int]] = {}  # (model, strategy, window s) -> (window, kept)

    def apply(self, policies: Mapping[str, InForce]) -> None:
        """Swap in new policies whole; the random stream and the quota windows go on (by strategy name)."""
        self._policies = dict(policies)

    def version(self, model: str) -> str | None:
        in_force = self._policies.get(model)
        return in_force.version if in_force is not None else None

    def decide(
        self, model: str, records: Sequence[dict[str, Any]], now: datetime
    ) -> tuple[list[float | str], list[str | None], str | None]:
        """Per record its sample_weight (kept) or drop reason, and the strategies that selected it; the policy version."""
        in_force = self._policies.get(model)
        if in_force is None:  # no policy for the model: keep everything as it comes
            return [1.0] * len(records), [None] * len(records), None
        rules = in_force.rules
        strategies = rules.strategies
        now_s = int(now.timestamp())
        windows = self._windows
        draw = self._rng.random
        outcomes: list[float | str] = []
        selected_by: list[str | None] = []
        for record in records:
            if record["kind"] != "prediction":
                outcomes.append(1.0)
                selected_by.append(None)
                continue
            missed = 1.0  # Π(1 − p_i)
            chosen: list[str] = []
            capped = False
            for name, probability, quotas in strategies:
                p = probability(record)
                if p <= 0.0:
                    continue
                missed *= 1.0 - p
                if p >= 1.0 or draw() < p:
                    if quotas and _full(windows, model, name, quotas, now_s):
                        capped = True
                    else:
                        chosen.append(name)
            if not chosen:
                outcomes.append(RATE_CAPPED if capped else SAMPLED_OUT)
                selected_by.append(None)
                continue
            if rules.quotas and _full(windows, model, _POLICY, rules.quotas, now_s):
                outcomes.append(RATE_CAPPED)
                selected_by.append(None)
                continue
            for name, _, quotas in strategies:
                if quotas and name in chosen:
                    _count(windows, model, name, quotas, now_s)
            if rules.quotas:
                _count(windows, model, _POLICY, rules.quotas, now_s)
            outcomes.append(1.0 / (1.0 - missed))
            selected_by.append(",".join(chosen))
        return outcomes, selected_by, in_force.version


def _full(windows: dict[tuple[str, str, int], tuple[int, int]], model: str, name: str,
          quotas: tuple[tuple[int, int], ...], now_s: int) -> bool:
    for length_s, most in quotas:
        window, kept = windows.get((model, name, length_s), (-1, 0))
        if window == now_s // length_s and kept >= most:
            return True
    return False


def _count(windows: dict[tuple[str, str, int], tuple[int, int]], model: str, name: str,
           quotas: tuple[tuple[int, int], ...], now_s: int) -> None:
    for length_s, _ in quotas:
        key = (model, name, length_s)
        window, kept = windows.get(key, (-1, 0))
        current = now_s // length_s
        windows[key] = (current, kept + 1 if window == current else 1)
