"""The Pacer: refused uploads are told to come back spread over the time the queue needs to drain."""

from __future__ import annotations

import random
import statistics

from edgeloop.ingest.pacer import Pacer


def _pacer_at(rate_per_s: float, **kwargs) -> Pacer:
    pacer = Pacer(rng=random.Random(7), **kwargs)
    for step in range(11):
        pacer.landed(round(rate_per_s / 10), now=100.0 + step * 0.1)  # one second of commits at the rate
    return pacer


def test_before_a_rate_is_known_every_refusal_gets_the_configured_wait():
    """With fewer than two commits half a second apart, Retry-After is the configured retry_after_s."""
    pacer = Pacer(default_s=2, max_s=60)
    assert pacer.retry_after_s(backlog=100, now=10.0) == 2
    pacer.landed(5, now=10.0)
    assert pacer.retry_after_s(backlog=100, now=10.1) == 2


def test_a_refused_burst_is_spread_over_the_backlogs_drain_time():
    """At 100 batches/s with 1,000 queued (10 s), refusals are told 5 to 15 s, spread out rather than all the same."""
    pacer = _pacer_at(100, default_s=2, max_s=60)
    waits = [pacer.retry_after_s(backlog=1000, now=101.0) for _ in range(1000)]
    assert min(waits) == 5 and max(waits) == 15
    assert 9 <= statistics.mean(waits) <= 11
    assert max(waits.count(wait) for wait in set(waits)) < 150  # no herd: no second gets more than ~1/7 of them


def test_waits_are_at_least_one_second_and_never_over_the_maximum():
    """A short backlog still waits 1 s; a long one is capped at retry_after_max_s."""
    pacer = _pacer_at(100, default_s=2, max_s=30)
    assert {pacer.retry_after_s(backlog=1, now=101.0) for _ in range(50)} == {1}
    assert max(pacer.retry_after_s(backlog=100_000, now=101.0) for _ in range(50)) == 30
