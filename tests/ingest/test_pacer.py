"""The Pacer: each refused upload gets its own place in line, so a refused burst returns at the writer's rate."""

from __future__ import annotations

from collections import Counter

from edgeloop.ingest.pacer import Pacer


def _pacer_at(rate_per_s: float, **kwargs) -> Pacer:
    pacer = Pacer(**kwargs)
    for step in range(11):
        pacer.landed(round(rate_per_s / 10), more_waiting=True, now=100.0 + step * 0.1)  # a busy second at the rate
    return pacer


def test_before_a_rate_is_known_every_refusal_gets_the_configured_wait():
    """With fewer than two commits half a second apart, Retry-After is the configured retry_after_s."""
    pacer = Pacer(default_s=2, max_s=60)
    assert pacer.retry_after_s(backlog=100, now=10.0) == 2
    pacer.landed(5, more_waiting=True, now=10.0)
    assert pacer.retry_after_s(backlog=100, now=10.1) == 2


def test_the_rate_is_what_the_writer_lands_while_busy_not_what_devices_sent():
    """Commits after an idle writer do not count: a trickle after a busy spell leaves the busy rate in place."""
    pacer = _pacer_at(100, default_s=2, max_s=60)
    for step in range(20):  # then one batch every second, the writer idle in between
        pacer.landed(1, more_waiting=False, now=101.0 + step)
    assert pacer.retry_after_s(backlog=400, now=121.5) <= 3  # 201 ahead at ~100/s; at the trickle's 1/s, the 60 s maximum


def test_a_burst_larger_than_the_queue_comes_back_at_the_writers_rate():
    """At 100 batches/s with 256 queued, 1,000 refusals are told 2 s to 12 s, about 100 per second: never more than the writer lands."""
    pacer = _pacer_at(100, default_s=2, max_s=60)
    waits = [pacer.retry_after_s(backlog=256, now=101.0) for _ in range(1000)]
    assert waits == sorted(waits)  # first refused, first back
    assert waits[0] == 2 and waits[-1] == 12  # half the queue (128) then 1,000 more at 100/s
    assert max(Counter(waits).values()) <= 100


def test_a_place_in_line_is_given_up_once_its_time_has_come():
    """Uploads told to come back stop counting once due: a refusal after they returned waits for half the queue only."""
    pacer = _pacer_at(100, default_s=2, max_s=60)
    assert [pacer.retry_after_s(backlog=200, now=101.0) for _ in range(300)][-1] == 4  # (100 + 299 + 1) / 100
    assert pacer.retry_after_s(backlog=200, now=101.0 + 4) == 2  # every earlier promise is due: (100 + 1) / 100


def test_the_last_measured_rate_serves_a_burst_after_a_quiet_spell():
    """A burst long after the last commit is paced at the writer's last measured rate, not the fixed fallback."""
    pacer = _pacer_at(50, default_s=2, max_s=60)
    assert pacer.retry_after_s(backlog=500, now=1000.0) == 6  # (250 + 1) / 50


def test_waits_are_at_least_one_second_and_never_over_the_maximum():
    """A short backlog still waits 1 s; a long one is capped at retry_after_max_s."""
    pacer = _pacer_at(100, default_s=2, max_s=30)
    assert pacer.retry_after_s(backlog=1, now=101.0) == 1
    assert pacer.retry_after_s(backlog=100_000, now=101.0) == 30
