"""Which valid records the device keeps, by the sampling policy in force for their model.

A policy (``edgeloop.schemas.policy``) is a set of named strategies; each gives a prediction
a probability p_i of selecting it, drawn independently, and the prediction is kept when
any selects it. It then carries ``sample_weight = 1 / (1 − Π(1 − p_i))``, the inverse of the
chance the whole policy keeps it, so Σ sample_weight over kept records estimates how many
predictions were made and weighted means are unbiased; and ``sampled_by``, the names of
the strategies that selected it. Feedback is always kept, weight 1: labels are rare.

Quotas (per minute, hour or day, per strategy and over the whole policy) are fixed windows
of that length on the device's uptime clock (``CLOCK_BOOTTIME``: it never goes back and counts
while the device sleeps), not the wall clock: an NTP step back would re-open an hour already
spent, and a clock that boots in 2038 and is then corrected would count one real hour in three
windows. The windows' counts are saved to ``<state_dir>/quotas.json`` (with the boot id) before
the request that spent them is answered, so an agent that crashes and is restarted (systemd
``Restart=``) within a window keeps its count: a crash loop sends no more than the quota. A
reboot starts every window again (uptime starts again at 0, and the saved counts belong to
the boot that counted them). A strategy over its quota does not
select; a prediction that no strategy may select any more, or that the policy's own quota
refuses, is dropped as ``rate_capped``. Quotas bias the weights and are not corrected: in
a window where one binds, the kept records are the window's first ones and their weights
under-count it (a correct weight would need the window's final count, only known once the
window's records are on disk). The drop counts travel in every batch's metadata, so an
analyst sees which windows were capped; where no quota binds, weights are exact.

A quota counts records kept, not records selected: ``decide`` notes what it charged each
window in the caller's ``charges``, and a request the agent then refuses (the journal cannot
be written, the disk or the spool is full) has it given back with ``refund``, so the app's
resend, once the disk recovers, is not capped by records that were never stored.

The legacy per-model keys (``keep_rate``, ``always_keep_below_confidence``,
``max_per_hour``) are the policy ``legacy_policy`` builds: a ``random`` strategy named
``keep_rate``, a ``confidence_below`` named ``uncertain`` and the policy quota ``per_hour``.

The RNG is seeded from ``sampling.seed`` when given, for reproducible tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from edgeloop.collector.bootclock import boot_id, uptime_s
from edgeloop.collector.config import SamplingRule
from edgeloop.durable import write_durably
from edgeloop.logs import RateLimitedLogger
from edgeloop.schemas.policy import ConfidenceBelow, Policy, PolicyRules, RandomStrategy

__all__ = ["Charge", "InForce", "QUOTAS_FILE", "RATE_CAPPED", "SAMPLED_OUT", "Sampler", "legacy_policy"]

log = logging.getLogger(__name__)

SAMPLED_OUT = "sampled_out"
RATE_CAPPED = "rate_capped"
QUOTAS_FILE = "quotas.json"  # in the state dir: the quota windows' counts, for a restart on the same boot
_POLICY = ""  # the quota key of the whole policy (strategy names are never empty)

Charge = tuple[tuple[str, str, int], int, int]  # (model, strategy, window length s), window, records charged


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

    def __init__(
        self, seed: int | None = None, *, clock: Callable[[], float] = uptime_s, state_dir: Path | None = None
    ) -> None:
        self._rng = random.Random(seed)
        self._clock = clock
        self._policies: Mapping[str, InForce] = {}
        self._windows: dict[tuple[str, str, int], tuple[int, int]] = {}  # (model, strategy, window s) -> (window, kept)
        self._path = state_dir / QUOTAS_FILE if state_dir is not None else None
        self._unsaved = False  # a count changed since the last save began
        self._saving: asyncio.Lock | None = None
        self._errors = RateLimitedLogger(log)
        if self._path is not None:
            self._load(self._path)

    def _load(self, path: Path) -> None:
        """Take the counts an earlier run of this boot saved; anything else starts the windows afresh."""
        try:
            saved = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("cannot read the saved quota counts; the windows start again", extra={"path": str(path), "error": str(exc)})
            return
        if not isinstance(saved, dict) or saved.get("boot_id") != boot_id():
            log.info("quota windows start again: the device rebooted since they were counted")
            return
        windows = saved.get("windows")
        for entry in windows if isinstance(windows, list) else ():
            if (isinstance(entry, list) and len(entry) == 5 and all(isinstance(v, str) for v in entry[:2])
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in entry[2:]) and entry[2] > 0):
                model, name, length_s, window, kept = entry
                self._windows[(model, name, length_s)] = (window, kept)

    async def save(self) -> None:
        """Write the windows' counts durably if they changed; returns once this call's changes are on disk.

        Saves in flight are one at a time; a call that waited finds its changes saved by the one
        before if they were made before it began (a group commit, as the journal's fsync).
        A save that fails is logged (rate-limited) and retried by the next call: records are not
        refused for a counter.
        """
        if self._path is None or not self._unsaved:
            return
        if self._saving is None:
            self._saving = asyncio.Lock()
        async with self._saving:
            if not self._unsaved:
                return
            payload, self._unsaved = self._snapshot(), False
            try:
                await asyncio.to_thread(write_durably, self._path, payload, mode=0o600)
            except OSError as exc:
                self._unsaved = True
                self._errors.log(logging.WARNING, "save", "cannot save the quota counts", error=str(exc))

    def _snapshot(self) -> bytes:
        """The counts of the windows still open (a closed one can never count again)."""
        now_s = int(self._clock())
        windows = [[model, name, length_s, window, kept]
                   for (model, name, length_s), (window, kept) in self._windows.items() if window == now_s // length_s]
        return orjson.dumps({"boot_id": boot_id(), "windows": windows})

    def apply(self, policies: Mapping[str, InForce]) -> None:
        """Swap in new policies whole; the random stream and the quota windows go on (by strategy name)."""
        self._policies = dict(policies)

    def version(self, model: str) -> str | None:
        in_force = self._policies.get(model)
        return in_force.version if in_force is not None else None

    def decide(
        self, model: str, records: Sequence[dict[str, Any]], now_s: float | None = None,
        charges: list[Charge] | None = None,
    ) -> tuple[list[float | str], list[str | None], str | None]:
        """Per record its sample_weight (kept) or drop reason, and the strategies that selected it; the policy version.

        ``now_s`` is a time on the sampler's clock (default: now), which places the quota windows.
        What the kept records were charged is appended to ``charges``, for ``refund`` if they are not stored.
        """
        in_force = self._policies.get(model)
        if in_force is None:  # no policy for the model: keep everything as it comes
            return [1.0] * len(records), [None] * len(records), None
        rules = in_force.rules
        strategies = rules.strategies
        if rules.keeps_all is not None:  # the default policy (keep_rate = 1): no draws, no quotas
            kinds = [record["kind"] == "prediction" for record in records]
            return [1.0] * len(records), [rules.keeps_all if kind else None for kind in kinds], in_force.version
        now_s = int(self._clock() if now_s is None else now_s)
        # Quota budgets are read once per call (``now`` is one instant) and written back at the end.
        budgets = [self._budget(model, name, quotas, now_s) for name, _, quotas, _ in strategies]
        used = [0] * len(strategies)
        policy_budget = self._budget(model, _POLICY, rules.quotas, now_s)
        policy_used = 0
        names: dict[int, str] = {}  # bit mask of selecting strategies -> their names, joined
        limited_at = [i for i, (_, _, quotas, _) in enumerate(strategies) if quotas]
        limited = sum(1 << i for i in limited_at)
        indexed = tuple(enumerate(strategies))
        evaluate = tuple((1 << i, probability, constant) for i, (_, probability, _, constant) in indexed)
        draw = self._rng.random
        outcomes: list[float | str] = []
        selected_by: list[str | None] = []
        for record in records:
            if record["kind"] != "prediction":
                outcomes.append(1.0)
                selected_by.append(None)
                continue
            missed = 1.0  # Π(1 − p_i)
            mask = 0
            capped = False
            for bit, probability, constant in evaluate:
                p = constant if constant is not None else probability(record)
                if p <= 0.0:
                    continue
                missed *= 1.0 - p
                if p >= 1.0 or draw() < p:
                    if bit & limited and used[bit.bit_length() - 1] >= budgets[bit.bit_length() - 1]:
                        capped = True
                    else:
                        mask |= bit
            if not mask or policy_used >= policy_budget:
                outcomes.append(RATE_CAPPED if mask or capped else SAMPLED_OUT)
                selected_by.append(None)
                continue
            policy_used += 1
            joined = names.get(mask)
            if joined is None:
                joined = names[mask] = ",".join(strategies[i][0] for i in range(len(strategies)) if mask >> i & 1)
            if mask & limited:
                for i in limited_at:
                    if mask >> i & 1:
                        used[i] += 1
            outcomes.append(1.0 / (1.0 - missed))
            selected_by.append(joined)
        for i, (name, _, quotas, _) in indexed:
            if quotas and used[i]:
                self._count(model, name, quotas, now_s, used[i], charges)
        if rules.quotas and policy_used:
            self._count(model, _POLICY, rules.quotas, now_s, policy_used, charges)
        return outcomes, selected_by, in_force.version

    def _budget(self, model: str, name: str, quotas: tuple[tuple[int, int], ...], now_s: int) -> float:
        """How many more records ``name`` may keep in its current windows (infinite without quotas)."""
        budget = math.inf
        for length_s, most in quotas:
            window, kept = self._windows.get((model, name, length_s), (-1, 0))
            budget = min(budget, most - (kept if window == now_s // length_s else 0))
        return budget

    def refund(self, charges: Sequence[Charge]) -> None:
        """Give back what ``decide`` charged for records that were not stored after all (their request was refused).

        A window that closed since keeps its count: it can never count again anyway.
        """
        for key, window, charged in charges:
            current, kept = self._windows.get(key, (-1, 0))
            if current == window:
                self._windows[key] = (window, max(0, kept - charged))
                self._unsaved = True

    def _count(
        self, model: str, name: str, quotas: tuple[tuple[int, int], ...], now_s: int, kept_now: int,
        charges: list[Charge] | None,
    ) -> None:
        for length_s, _ in quotas:
            key = (model, name, length_s)
            window, kept = self._windows.get(key, (-1, 0))
            current = now_s // length_s
            self._windows[key] = (current, kept + kept_now if window == current else kept_now)
            if charges is not None:
                charges.append((key, current, kept_now))
        self._unsaved = True
