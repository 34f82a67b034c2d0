"""The failover soak: 3 replicas, 50 devices uploading, a replica SIGKILLed every few seconds; nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from tests.ingest.conftest import make_table, seal
from tests.reliability.report import record
from tests.ingest.lake.test_replicas import lake_reader, replicas, wait_for  # noqa: F401 (replicas: the fixture)

DEVICES = 50
BATCHES_PER_DEVICE = int(os.environ.get("EDGELOOP_LAKE_SOAK_BATCHES", "12"))
KILL_EVERY_S = 4.0


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_replicas_killed_every_few_seconds_lose_and_duplicate_no_batch(replicas, tmp_path, vibration):
    """50 devices fail over between 3 replicas while one is SIGKILLed every few seconds: every batch lands exactly once."""
    group = replicas(3, lake_group_commit_delay_s=0.5)
    tokens = [group[0].add_device(f"dev-{index:02d}") for index in range(DEVICES)]
    for replica in group:
        wait_for(lambda replica=replica: replica.knows(tokens[-1]), what="the tokens to reach every replica")
    plan = [[seal(tmp_path / f"d{device}" / f"b{index}", vibration, make_table(vibration, predictions=200)[0])
             for index in range(BATCHES_PER_DEVICE)] for device in range(DEVICES)]
    stop = threading.Event()
    stats = {"kills": 0, "failovers": 0, "answers_201": 0, "answers_200": 0, "refused": 0}
    lock = threading.Lock()

    def device(index: int) -> None:
        at = index % len(group)
        for batch_id, body in plan[index]:
            while True:
                status, _ = group[at].put(batch_id, body, tokens[index])
                if status in (200, 201):
                    with lock:
                        stats["answers_201" if status == 201 else "answers_200"] += 1
                    break
                assert status is None or status in (429, 503), (batch_id, status)
                with lock:
                    stats["failovers"] += 1
                    if status is not None:
                        stats["refused"] += 1
                at = (at + 1) % len(group)  # the next URL, as an agent with several would
                time.sleep(0.2)

    def killer() -> None:
        rng = random.Random(13)
        while not stop.wait(KILL_EVERY_S):
            victim = group[rng.randrange(len(group))]
            victim.kill()
            with lock:
                stats["kills"] += 1
            victim.start()
            victim.wait_ready()

    started = time.monotonic()
    chaos = threading.Thread(target=killer)
    chaos.start()
    workers = [threading.Thread(target=device, args=(index,)) for index in range(DEVICES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    chaos.join()
    elapsed = time.monotonic() - started
    sent = DEVICES * BATCHES_PER_DEVICE
    with lake_reader(group[0]) as con:
        ledger, distinct_batches = con.execute("SELECT count(*), count(DISTINCT batch_id) FROM batches").fetchone()
        rows, distinct_rows = con.execute("SELECT count(*), count(DISTINCT record_id) FROM vibration").fetchone()
    expected = sent * 200
    figures = {**stats, "batches_sent": sent, "ledger_rows": ledger, "distinct_batch_ids": distinct_batches,
               "records_acknowledged": expected, "records_landed": rows, "records_lost": expected - distinct_rows,
               "records_twice": rows - distinct_rows, "batches_twice": ledger - distinct_batches, "elapsed_s": round(elapsed, 1)}
    print("lake soak:", json.dumps(figures))
    record("lake: 3 replicas, 50 devices, replica SIGKILLs", {"replica SIGKILL": stats["kills"], "failover": stats["failovers"]},
           acknowledged=expected, lost=figures["records_lost"], duplicated=figures["records_twice"])
    assert stats["kills"] >= 2
    assert (ledger, distinct_batches, rows, distinct_rows) == (sent, sent, expected, expected), figures
