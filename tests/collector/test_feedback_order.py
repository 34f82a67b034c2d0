"""Feedback against its prediction in every order, end to end: agent (restarted between) → sync → ingest → the training view."""

from __future__ import annotations

import uuid

import pytest

from bench.simulator import SimulatedModel

pytestmark = pytest.mark.timeout(240)


def prediction(template: dict, confidence: float) -> dict:
    return dict(template, record_id=None, outputs={**template["outputs"], "confidence": confidence})


def feedback(template: dict, prediction_id: str, true_class: str) -> dict:
    return {"kind": "feedback", "model": "vibration", "model_version": template["model_version"], "record_id": None,
            "prediction_id": prediction_id, "source": "operator", "feedback": {"true_class": true_class}}


def post(agent, records: list[dict]) -> list[dict]:
    status, body = agent.post_records(records)
    assert status == 200, body
    return body["results"]


def sync(agent) -> None:
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr + result.stdout


def test_feedback_labels_its_prediction_whatever_the_order_batch_or_restart(agent_factory, ingest):
    """Feedback sent before its prediction, or for one landed before an agent restart, labels it once in the training view
    and the coverage tally; feedback on a sampled-out prediction is kept in <model>_feedback and labels nothing."""
    agent = agent_factory(
        sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0},
        sampling={"models": {"vibration": {"keep_rate": 0.001, "always_keep_below_confidence": 0.5}}},
    ).start()
    template = next(SimulatedModel("vibration", seed=4).predictions(1))

    early_id = str(uuid.uuid4())  # an old SDK's id, minted by the app before the prediction is logged
    [early_label] = post(agent, [feedback(template, early_id, "cavitation")])
    [before_restart] = post(agent, [prediction(template, 0.1)])
    assert early_label["status"] == before_restart["status"] == "accepted"
    sync(agent)  # the label lands a batch before its prediction
    assert agent.stop() == 0

    agent.start()
    [early] = post(agent, [dict(prediction(template, 0.2), record_id=early_id)])
    [dropped] = post(agent, [prediction(template, 0.99)])
    assert early["status"] == "accepted" and dropped["status"] == "sampled_out"
    post(agent, [feedback(template, before_restart["record_id"], "imbalance"),
                 feedback(template, dropped["record_id"], "ok")])
    sync(agent)
    assert agent.stop() == 0

    labels = dict(ingest.query(
        "SELECT CAST(record_id AS VARCHAR), true_class FROM vibration_training ORDER BY created_at"
    ))
    assert labels == {early_id: "cavitation", before_restart["record_id"]: "imbalance"}
    orphans = ingest.query(
        "SELECT CAST(f.prediction_id AS VARCHAR) FROM vibration_feedback AS f ANTI JOIN vibration AS p "
        "ON p.record_id = f.prediction_id"
    )
    assert orphans == [(dropped["record_id"],)]
    assert ingest.query("SELECT sum(predictions)::BIGINT, sum(labelled)::BIGINT FROM label_coverage") == [(2, 2)]
