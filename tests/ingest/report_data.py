"""Generated field data with known figures, landed through a real ingest server.

A population of predictions per model version is drawn with a known accuracy and a known
calibration error, then thinned the way the device's uncertainty sampling thins it (every
prediction below 0.8 confidence kept, the rest kept at 1 in 4 with sample_weight 4), and
half of what is kept gets a label. The second week's inputs are shifted.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa

from edgeloop.ingest.app import STORE
from edgeloop.schemas import ModelSchema
from tests.ingest.conftest import Server, make_config, seal, start_server

START = datetime(2026, 10, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
CLASSES = ("normal", "imbalance", "cavitation", "misalignment")
CLASS_SHARES = (0.55, 0.2, 0.15, 0.1)
OPERATORS = ("a@plant.example", "b@plant.example", "c@plant.example")


@dataclass(frozen=True)
class Version:
    """How a model version behaves: confidence ~ U(low, high), correct with probability confidence - overconfidence."""

    name: str
    population: int
    confidence_low: float
    confidence_high: float
    overconfidence: float
    label_rate: float = 0.5

    @property
    def accuracy(self) -> float:
        return (self.confidence_low + self.confidence_high) / 2 - self.overconfidence


VERSIONS = (
    Version("2.0.3", 9000, 0.7, 1.0, 0.05),  # accuracy 0.80, ECE 0.05
    Version("2.1.0", 12000, 0.8, 1.0, 0.0),  # accuracy 0.90, calibrated
    Version("2.2.0-rc1", 48, 0.8, 1.0, 0.0, label_rate=1.0),  # ~12 kept, all labelled
)


def keep_probability(confidence: float) -> float:
    return 1.0 if confidence < 0.8 else 0.25


def _draw(rng: random.Random, schema: ModelSchema, blank: dict[str, Any], version: Version,
          when: Callable[[random.Random], datetime]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """One prediction of ``version`` made at ``when(rng)``: (its row if the device kept it, its feedback if labelled)."""
    confidence = rng.uniform(version.confidence_low, version.confidence_high)
    truth = rng.choices(CLASSES, CLASS_SHARES)[0]
    correct = rng.random() < confidence - version.overconfidence
    predicted = truth if correct else rng.choice([c for c in CLASSES if c != truth])
    created_at = when(rng)
    shifted = created_at >= START + WEEK
    temperature = rng.gauss(63.0 if shifted else 60.0, 3.0)
    operator = rng.choices(OPERATORS, (0.6, 0.2, 0.2) if shifted else (1 / 3, 1 / 3, 1 / 3))[0]
    p = keep_probability(confidence)
    if rng.random() >= p:
        return None, None
    record_id = uuid.UUID(int=rng.getrandbits(128))
    prediction = {
        **blank, "record_id": record_id, "kind": "prediction", "model": schema.name,
        "model_version": version.name, "created_at": created_at, "sample_weight": 1 / p,
        "prediction_id": None, "source": None,
        "temperature_c": round(temperature, 1), "rpm": rng.choice((1480, 1780, 2960)),
        "spectrum": [0.5] * 16, "operator_email": operator, "lat": round(rng.gauss(51.9, 0.05), 2),
        "lon": 4.31, "predicted_class": predicted, "confidence": confidence, "anomaly_score": 0.1,
    }
    if rng.random() >= version.label_rate:
        return prediction, None
    return prediction, {
        **blank, "record_id": uuid.UUID(int=rng.getrandbits(128)), "kind": "feedback",
        "model": schema.name, "model_version": version.name,
        "created_at": created_at + timedelta(hours=2), "sample_weight": 1.0,
        "prediction_id": record_id, "source": "operator", "true_class": truth,
    }


def vibration_rows(schema: ModelSchema, seed: int = 16) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept prediction rows, feedback rows) for every version, over two weeks; week two's inputs shifted."""
    rng = random.Random(seed)
    predictions: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    blank = {spec.name: None for spec in schema.stored_fields}
    for version in VERSIONS:
        for _ in range(version.population):
            prediction, label = _draw(rng, schema, blank, version,
                                      lambda r: START + timedelta(seconds=r.uniform(0, 2 * WEEK.total_seconds())))
            if prediction is not None:
                predictions.append(prediction)
            if label is not None:
                feedback.append(label)
    return predictions, feedback


# A rollout over five ISO weeks: 2.0.3 (accuracy 0.80) gives way to 2.1.0 (0.90), which starts as a canary.
ROLLOUT_START = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday, so each generated week is one ISO week
ROLLOUT_PER_WEEK = 6000
ROLLOUT_SHARES = {"2.0.3": (1.0, 0.97, 0.5, 0.2, 0.0), "2.1.0": (0.0, 0.03, 0.5, 0.8, 1.0)}


def rollout_rows(schema: ModelSchema, seed: int = 17) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept prediction rows, feedback rows) of a five-week rollout from 2.0.3 to 2.1.0 (ROLLOUT_SHARES per week)."""
    rng = random.Random(seed)
    predictions: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    blank = {spec.name: None for spec in schema.stored_fields}
    for version in VERSIONS[:2]:
        for week, share in enumerate(ROLLOUT_SHARES[version.name]):
            start = ROLLOUT_START + week * WEEK
            for _ in range(round(share * ROLLOUT_PER_WEEK)):
                prediction, label = _draw(rng, schema, blank, version,
                                          lambda r: start + timedelta(seconds=r.uniform(0, WEEK.total_seconds() - 1)))
                if prediction is not None:
                    predictions.append(prediction)
                if label is not None:
                    feedback.append(label)
    return predictions, feedback


def land(folder: Path, schema: ModelSchema, rows: list[dict[str, Any]], *, devices: int = 2,
         batch_rows: int = 5000) -> Path:
    """Land ``rows`` through a real in-process ingest server from ``devices`` devices; returns the DuckDB file."""
    config = make_config(folder)

    async def run() -> None:
        runner, url = await start_server(config)
        try:
            async with aiohttp.ClientSession() as session:
                server = Server(url, config, session, runner.app)
                await asyncio.wrap_future(runner.app[STORE].register(schema))  # schemas are the server's: an admin registers each
                tokens = [await server.add_device(f"pump-{i}") for i in range(devices)]
                for index in range(0, len(rows), batch_rows):
                    chunk = rows[index:index + batch_rows]
                    table = pa.Table.from_pylist(chunk, schema=schema.arrow_schema)
                    batch_id, body = seal(folder / "spool", schema, table)
                    status, answer, _ = await server.put(batch_id, body, tokens[(index // batch_rows) % devices])
                    assert status == 201, answer
        finally:
            await runner.cleanup()

    asyncio.run(run())
    return config.store.db_path
