"""The agent's window of recent record ids: at least ``intake.recent_ids`` remembered, in bounded memory."""

from __future__ import annotations

import random
import tracemalloc

from edgeloop.collector.recent_ids import GENERATIONS, RecentIds


def _keys(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(16) + b"\x00\x01" for _ in range(n)]


def test_the_window_remembers_at_least_capacity_ids_and_at_most_two_generations_more():
    """After any number of adds, the last ``capacity`` ids are all remembered, and no more than capacity + 2 generations are held."""
    rng = random.Random(5)
    capacity = 1_000
    recent = RecentIds(capacity)
    added: list[bytes] = []
    for size in [1, 7, 250, 999, 3, 1_000, 64] * 6:
        keys = _keys(rng, size)
        recent.add(keys)
        added.extend(keys)
        assert all(key in recent for key in added[-capacity:])
        assert len(recent) <= capacity + 2 * capacity // GENERATIONS
    assert added[0] not in recent  # the window slides


def test_the_window_of_the_default_capacity_holds_under_seven_mb():
    """50,000 ids (the default) cost at most ~90 bytes each for 1.5x the capacity, at every moment of a long run."""
    rng = random.Random(6)
    tracemalloc.start()
    try:
        recent = RecentIds(50_000)
        start = tracemalloc.get_traced_memory()[0]
        peak = 0
        for _ in range(200):
            recent.add(_keys(rng, 1_000))
            peak = max(peak, tracemalloc.get_traced_memory()[0] - start)
    finally:
        tracemalloc.stop()
    assert peak <= 50_000 * 1.5 * 90, f"{peak / 2**20:.1f} MiB"


def test_a_zero_capacity_window_remembers_nothing():
    """intake.recent_ids = 0 turns the window off."""
    recent = RecentIds(0)
    keys = _keys(random.Random(7), 10)
    recent.add(keys)
    assert len(recent) == 0 and keys[0] not in recent
