"""The failover soak: 3 replicas, devices uploading, a replica SIGKILLed every few seconds; nothing lost, nothing twice.

The soak (``pytest -m soak``) runs the issue's rate: 50 devices and at least 20 kills, one every
2-5 s, each victim restarted; the suite runs a short one (10 devices, 4 kills).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from edgeloop.ingest.config import IngestConfig
from tests.ingest.conftest import make_table, seal
from tests.ingest.lake.test_replicas import Replica, lake_reader, replicas, wait_for  # noqa: F401 (replicas: the fixture)
from tests.reliability.report import record

ROWS_PER_BATCH = 200
SOAK_KILLS = int(os.environ.get("EDGELOOP_LAKE_SOAK_KILLS", "20"))


@dataclass
class Tally:
    """What the devices and the killer saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: set[str] = field(default_factory=set)
    kills: int = 0
    kills_mid_commit: int = 0  # the victim held claims (a group between its ledger read and its commit's end)
    claims_at_kill: int = 0
    failovers: int = 0
    refused: int = 0  # answered 429 or 5xx: retried on the next replica, as the agent does
    server_errors: int = 0  # of them 5xx other than 503 (our fault, though retried)
    answers: dict[int, int] = field(default_factory=dict)


def _claims_of(catalog: str, pid: int) -> int:
    """Claim rows of the replica process ``pid``: batch ids of a group it was landing when it died."""
    with psycopg.connect(catalog, autocommit=True) as con:
        row = con.execute("SELECT count(*) FROM edgeloop_claims WHERE replica LIKE %s", [f"%-{pid}-%"]).fetchone()
    return int(row[0])


def run_failover(group: list[Replica], tmp_path: Path, schema, *, devices: int, kills: int,
                 kill_every_s: tuple[float, float]) -> dict[str, int | float]:
    """Devices upload until ``kills`` SIGKILLs (each victim restarted) are done; every count is checked against the lake."""
    tokens = [group[0].add_device(f"dev-{index:02d}") for index in range(devices)]
    for replica in group:
        wait_for(lambda replica=replica: replica.knows(tokens[-1]), timeout_s=60, what="the tokens to reach every replica")
    catalog = IngestConfig.load(group[0].config).store.catalog or ""
    stop = threading.Event()
    tally = Tally()
    errors: list[BaseException] = []

    def device(index: int) -> None:
        at = index % len(group)
        sent = 0
        try:
            while not stop.is_set():
                table = make_table(schema, predictions=ROWS_PER_BATCH)[0]
                batch_id, body = seal(tmp_path / f"d{index}" / f"b{sent}", schema, table)
                sent += 1
                while True:  # a batch once sealed is sent until it is acknowledged, as the agent's spool does
                    status, answer = group[at].put(batch_id, body, tokens[index])
                    if status in (200, 201):
                        with tally.lock:
                            tally.acknowledged.add(batch_id)
                            tally.answers[status] = tally.answers.get(status, 0) + 1
                        break
                    # The agent's rule: a 4xx other than 429 is the sender's fault and would be dead-lettered.
                    assert status is None or status == 429 or status >= 500, (batch_id, status, answer)
                    with tally.lock:
                        tally.failovers += 1
                        tally.refused += status is not None
                        if status is not None and status >= 500 and status != 503:
                            tally.server_errors += 1
                    at = (at + 1) % len(group)  # the next URL, as an agent with several would
                    time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)
            stop.set()

    def killer() -> None:
        rng = random.Random(13)
        try:
            while tally.kills < kills and not stop.wait(rng.uniform(*kill_every_s)):
                victim = group[tally.kills % len(group)]  # in turn: every replica dies and comes back
                pid = victim.process.pid
                victim.kill()
                held = _claims_of(catalog, pid)
                with tally.lock:
                    tally.kills += 1
                    tally.claims_at_kill += held
                    tally.kills_mid_commit += held > 0
                victim.start()
                victim.wait_ready()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            stop.set()

    started = time.monotonic()
    workers = [threading.Thread(target=device, args=(index,)) for index in range(devices)]
    for worker in workers:
        worker.start()
    chaos = threading.Thread(target=killer)
    chaos.start()
    chaos.join()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    assert not errors, errors
    with lake_reader(group[0]) as con:
        ledger, distinct_batches = con.execute("SELECT count(*), count(DISTINCT batch_id) FROM batches").fetchone()
        landed_ids = {row[0] for row in con.execute("SELECT batch_id::VARCHAR FROM batches").fetchall()}
        rows, distinct_rows = con.execute("SELECT count(*), count(DISTINCT record_id) FROM vibration").fetchone()
    sent = len(tally.acknowledged)
    expected = sent * ROWS_PER_BATCH
    figures = {
        "kills": tally.kills, "kills_mid_commit": tally.kills_mid_commit, "claims_at_kill": tally.claims_at_kill,
        "failovers": tally.failovers, "refused_429_5xx": tally.refused, "server_errors": tally.server_errors,
        "answers_201": tally.answers.get(201, 0),
        "answers_200": tally.answers.get(200, 0), "batches_acknowledged": sent, "ledger_rows": ledger,
        "distinct_batch_ids": distinct_batches, "batches_lost": len(tally.acknowledged - landed_ids),
        "batches_unacknowledged_landed": len(landed_ids - tally.acknowledged), "batches_twice": ledger - distinct_batches,
        "records_acknowledged": expected, "records_landed": rows, "distinct_record_ids": distinct_rows,
        "records_twice": rows - distinct_rows, "elapsed_s": round(elapsed, 1),
    }
    print("lake failover:", json.dumps(figures))
    assert tally.kills == kills, figures
    assert figures["batches_lost"] == 0 and figures["batches_twice"] == 0, figures
    assert landed_ids == tally.acknowledged, figures  # a device sends until acknowledged, so nothing lands unasked
    assert (ledger, distinct_batches, rows, distinct_rows) == (sent, sent, expected, expected), figures
    return figures


@pytest.mark.timeout(300)  # 4 kills and restarts took 80 s on a loaded 2-core box, and teardown stops 3 replicas
def test_replicas_killed_in_turn_lose_and_duplicate_no_batch(replicas, tmp_path, vibration):
    """10 devices fail over between 3 replicas while each is SIGKILLed and restarted in turn: every batch lands exactly once."""
    group = replicas(3, lake_group_commit_delay_s=0.2)
    figures = run_failover(group, tmp_path, vibration, devices=10, kills=4, kill_every_s=(1.0, 3.0))
    assert figures["failovers"] >= 1  # devices on a killed replica moved on (each kill drops every device on it)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_replicas_killed_every_few_seconds_lose_and_duplicate_no_batch(replicas, tmp_path, vibration):
    """50 devices fail over between 3 replicas while one is SIGKILLed every few seconds (20+ kills): every batch lands once."""
    group = replicas(3, lake_group_commit_delay_s=0.5)
    figures = run_failover(group, tmp_path, vibration, devices=50, kills=SOAK_KILLS, kill_every_s=(2.0, 5.0))
    record("lake: 3 replicas, 50 devices, replica SIGKILLs",
           {"replica SIGKILL": figures["kills"], "of them mid-commit": figures["kills_mid_commit"],
            "failover": figures["failovers"]},
           acknowledged=figures["records_acknowledged"], lost=figures["batches_lost"] * ROWS_PER_BATCH,
           duplicated=figures["records_twice"])
