"""Which valid records the device keeps, and the weight each kept record carries.

Per model (``SamplingRule``):

- Feedback is always kept, weight 1: labels are rare and each one is worth keeping.
- A prediction whose confidence (the schema's ``confidence_field``) is below
  ``always_keep_below_confidence`` is kept with p = 1, weight 1: the records a model is
  unsure of are the ones worth most for retraining (uncertainty sampling).
- Any other prediction is kept with probability ``keep_rate`` and weight 1 / keep_rate,
  so Σ sample_weight over kept records estimates how many predictions were made, and a
  weighted mean over them is unbiased for the population mean.
- ``max_per_hour`` caps kept predictions per model in each clock hour (a fixed window keyed
  by the hour of ``now``); a prediction that passes the draw after the cap is reached is
  dropped as ``rate_capped``. The cap covers uncertain predictions too: it exists to bound
  disk and bandwidth when a model misbehaves (a covered camera is uncertain all day).

The cap biases the weights, and they are not corrected: within an hour where the cap
binds, the kept records' weights sum to about cap / keep_rate instead of the hour's true
count N, so Σ sample_weight under-counts that hour by the factor cap / (N * keep_rate), and
the kept records are the hour's first ones, skewing towards its start. A correct weight
would need N, which is only known after the hour's records are on disk. The drop counts
(``rate_capped`` among them) travel in every batch's metadata, so an analyst can see which
hours were capped and rescale them; in hours where the cap does not bind, weights are exact.

The RNG is seeded from ``SamplingSettings.seed`` when given, for reproducible tests and
benchmarks; otherwise from the OS.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime

from edgeloop.collector.config import SamplingSettings

__all__ = ["RATE_CAPPED", "SAMPLED_OUT", "Sampler"]

SAMPLED_OUT = "sampled_out"
RATE_CAPPED = "rate_capped"


class Sampler:
    """Decides, per valid record, keep (with its weight) or drop (with the reason)."""

    def __init__(self, settings: SamplingSettings) -> None:
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._window: dict[str, tuple[int, int]] = {}  # model -> (hour since epoch, kept in it)

    def reload(self, settings: SamplingSettings) -> None:
        """New rules from a reloaded config; the random stream and this hour's counts go on."""
        self._settings = settings

    def decide(
        self, model: str, kinds: Sequence[str], confidences: Sequence[float | None], now: datetime
    ) -> list[float | str]:
        """One entry per record: its sample_weight if kept, else ``SAMPLED_OUT`` or ``RATE_CAPPED``."""
        rule = self._settings.rule(model)
        keep_rate = rule.keep_rate
        weight = 1.0 / keep_rate
        threshold = rule.always_keep_below_confidence
        cap = rule.max_per_hour
        hour = int(now.timestamp() // 3600)
        window_hour, kept = self._window.get(model, (hour, 0))
        if window_hour != hour:
            kept = 0
        draw = self._rng.random
        decisions: list[float | str] = []
        append = decisions.append
        for kind, confidence in zip(kinds, confidences, strict=True):
            if kind != "prediction":
                append(1.0)
                continue
            if threshold is not None and confidence is not None and confidence < threshold:
                this = 1.0
            elif keep_rate >= 1.0 or draw() < keep_rate:
                this = weight
            else:
                append(SAMPLED_OUT)
                continue
            if cap is not None:
                if kept >= cap:
                    append(RATE_CAPPED)
                    continue
                kept += 1
            append(this)
        self._window[model] = (hour, kept)
        return decisions
