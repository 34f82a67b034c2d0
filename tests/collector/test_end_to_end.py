"""The whole loop with real processes: SDK → agent → sync → ingest server → DuckDB."""

from __future__ import annotations

import hmac

from bench.simulator import SimulatedModel
from edgeloop.collector.client import Client
from edgeloop.collector.privacy import canonical_bytes
from tests.collector.conftest import FLEET_KEY


def log_through_sdk(agent, records):
    """Log simulated records as an inference app would; returns predictions and feedback by id."""
    predictions, feedback = {}, {}
    client = Client(agent.socket)
    for record in records:
        if record["kind"] == "prediction":
            record_id = client.log_prediction(
                record["model"], record["model_version"], record["inputs"], record["outputs"], record_id=record["record_id"]
            )
            predictions[record_id] = record
        else:
            record_id = client.log_feedback(
                record["prediction_id"], record["model"], record["model_version"], record["feedback"], source=record["source"]
            )
            feedback[record_id] = record
    client.close(timeout_s=60)
    stats = client.stats()
    assert stats["sent"] == len(records) and stats["invalid"] == 0 and not stats["dropped"], stats
    return predictions, feedback


def test_logged_records_land_in_duckdb_once_after_privacy_and_sampling(agent_factory, ingest):
    """Every record an app logs reaches DuckDB exactly once, anonymized as its schema says, with unbiased weights."""
    agent = agent_factory(
        sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0},
        sampling={"models": {"image_classifier": {"keep_rate": 0.5, "always_keep_below_confidence": 0.3}}},
    ).start()
    vibration, vibration_feedback = log_through_sdk(agent, list(SimulatedModel("vibration", seed=3).records(1500, 0.1)))
    images, _ = log_through_sdk(agent, list(SimulatedModel("image_classifier", seed=3).predictions(1000)))

    # No flush: the sync seals the open journal itself, so everything logged so far goes.
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    status = agent.status()
    assert status["spool"]["batches"] == 0 and status["journal"]["records"] == 0, status
    assert status["sync"]["last_result"]["outcome"] == "ok"
    sampled_out = status["drops"]["total"].get("sampled_out", 0)
    assert agent.stop() == 0

    rows = dict(ingest.query("SELECT CAST(record_id AS VARCHAR), operator_email FROM vibration"))
    assert rows.keys() == vibration.keys()  # keep_rate 1: every prediction, once
    for record_id, email in rows.items():
        raw = vibration[record_id]["inputs"].get("operator_email")
        expected = None if raw is None else hmac.digest(FLEET_KEY, canonical_bytes(raw), "sha256").hex()
        assert email == expected
    columns = {name for (name,) in ingest.query("SELECT column_name FROM duckdb_columns() WHERE table_name = 'vibration'")}
    assert "serial_number" not in columns  # privacy rule drop: never left the device
    minutes = ingest.query("SELECT count(*) FROM vibration WHERE measured_at != date_trunc('minute', measured_at)")
    assert minutes == [(0,)]  # truncate:minute
    labels = ingest.query("SELECT count(*), count(DISTINCT record_id) FROM vibration_feedback")
    assert labels == [(len(vibration_feedback), len(vibration_feedback))]

    kept, distinct, weight = ingest.query(
        "SELECT count(*), count(DISTINCT record_id), sum(sample_weight) FROM image_classifier"
    )[0]
    landed = {rid for (rid,) in ingest.query("SELECT CAST(record_id AS VARCHAR) FROM image_classifier")}
    assert kept == distinct and landed <= images.keys()
    assert 0 < kept < len(images)
    assert kept + sampled_out == len(images)
    # sum(1/p) estimates the 1,000 predictions the kiosk really made.
    assert abs(weight - len(images)) < 150
    ledger = ingest.query("SELECT count(*), sum(rows), count(DISTINCT device) FROM batches")[0]
    assert ledger[1] == len(rows) + len(vibration_feedback) + kept and ledger[2] == 1
