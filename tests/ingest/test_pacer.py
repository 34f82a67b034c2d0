"""The Pacer: refused uploads are told to come back spread out at the writer's landing rate."""

from __future__ import annotations

from edgeloop.ingest.pacer import Pacer


def test_before_a_rate_is_known_every_refusal_gets_the_configured_wait():
    """With fewer than two commits half a second apart, Retry-After is the configured retry_after_s."""
    pacer = Pacer(default_s=2, max_s=60)
    assert pacer.retry_after_s(backlog=100, now=10.0) == 2
    pacer.landed(5, now=10.0)
    assert pacer.retry_after_s(backlog=100, now=10.1) == 2


def test_a_refused_burst_is_spread_one_landing_apart_after_the_backlog():
    """At 100 batches/s with 200 queued, 300 refusals are told 2 s, then later and later, about 100 per second."""
    pacer = Pacer(default_s=2, max_s=60)
    for step in range(11):
        pacer.landed(10, now=100.0 + step * 0.1)  # 100 batches/s over one second
    waits = [pacer.retry_after_s(backlog=200, now=101.0) for _ in range(300)]
    assert waits == sorted(waits)
    assert waits[0] == 2 and waits[-1] == 5
    assert all(99 <= waits.count(wait) <= 101 for wait in (3, 4)), waits


def test_waits_never_exceed_the_maximum_and_a_stale_schedule_does_not_outlive_it():
    """Retry-After is capped at retry_after_max_s, and a schedule left by devices that never came back expires."""
    pacer = Pacer(default_s=2, max_s=5)
    for step in range(11):
        pacer.landed(1, now=step * 0.1)  # 10 batches/s
    assert max(pacer.retry_after_s(backlog=0, now=1.0) for _ in range(1000)) == 5
    pacer.landed(1, now=600.0)
    pacer.landed(1, now=601.0)
    assert pacer.retry_after_s(backlog=0, now=601.0) <= 5
