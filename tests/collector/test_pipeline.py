"""The record pipeline: per-record results in order, batches typed as the schema, privacy applied end to end."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeloop.collector.config import SamplingRule, SamplingSettings
from edgeloop.collector.pipeline import Pipeline
from edgeloop.errors import ConfigError
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry

KEY = b"0123456789abcdef-test-fleet-key!"
NOW = datetime(2026, 11, 26, 6, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry():
    return SchemaRegistry.from_dir(EXAMPLES_DIR)


@pytest.fixture
def pipeline(registry):
    return Pipeline(registry, SamplingSettings(seed=1), KEY)


def prediction(confidence: float = 0.9, **inputs):
    return {
        "kind": "prediction",
        "model": "vibration",
        "model_version": "2.1.0",
        "inputs": {
            "temperature_c": 41.56,
            "rpm": 1480,
            "spectrum": [0.25] * 16,
            "operator_email": "jane@plant.example",
            "note": "call me on +44 20 7946 0958",
            "lat": 51.12345,
            "lon": -0.12789,
            "measured_at": "2026-11-26T08:17:31.5+02:00",
            "serial_number": "SN-000123",
            **inputs,
        },
        "outputs": {"predicted_class": "ok", "confidence": confidence},
    }


def feedback(prediction_id: str):
    return {
        "kind": "feedback",
        "model": "vibration",
        "model_version": "2.1.0",
        "prediction_id": prediction_id,
        "source": "operator",
        "feedback": {"true_class": "outer_race", "repair_cost_eur": 120.0},
    }


def test_results_follow_input_order_with_invalid_beside_valid(pipeline):
    """Each input gets one result in order; invalid, unknown-model and non-object records sit beside accepted ones."""
    given_id = str(uuid.uuid4())
    records = [
        prediction(),
        prediction(rpm="fast"),
        {"model": "no_such_model"},
        42,
        {"kind": "prediction"},
        {**prediction(), "record_id": given_id},
        feedback(given_id),
    ]
    out = pipeline.process(records, now=NOW)
    assert [r["index"] for r in out.results] == list(range(len(records)))
    assert [r["status"] for r in out.results] == ["accepted", "invalid", "invalid", "invalid", "invalid", "accepted", "accepted"]
    assert out.results[1]["error"] == {"field": "inputs.rpm", "message": "Input should be a valid integer"}
    assert out.results[2]["error"] == {"field": "model", "message": "unknown model 'no_such_model'"}
    assert out.results[3]["error"]["field"] == "record"
    assert out.results[4]["error"]["field"] == "model"
    assert out.results[5]["record_id"] == given_id
    assert uuid.UUID(out.results[0]["record_id"]).version == 7
    assert out.accepted == 3 and out.invalid == 4
    assert out.drops == {"invalid": 3, "unknown_model": 1}
    batch = out.batches["vibration"]
    assert [str(v) for v in batch.column("record_id").to_pylist()] == [out.results[i]["record_id"] for i in (0, 5, 6)]


def test_batch_schema_is_the_model_schema(pipeline, registry):
    """The batch has exactly the schema's Arrow schema: envelope, then stored fields; dropped fields are absent."""
    batch = pipeline.process([prediction(), feedback(str(uuid.uuid4()))], now=NOW).batches["vibration"]
    assert batch.schema == registry["vibration"].arrow_schema
    assert "serial_number" not in batch.schema.names
    assert batch.column("record_id").type == pa.uuid() and batch.column("prediction_id").type == pa.uuid()


def test_envelope_values(pipeline):
    """created_at is the record's own when given, else now; prediction-only and feedback-only columns are null on the other kind."""
    prediction_id = str(uuid.uuid4())
    records = [prediction(), {**prediction(), "created_at": "2026-11-25T23:00:00Z"}, feedback(prediction_id)]
    rows = pipeline.process(records, now=NOW).batches["vibration"].to_pylist()
    assert [row["created_at"] for row in rows] == [NOW, datetime(2026, 11, 25, 23, tzinfo=UTC), NOW]
    assert rows[0]["prediction_id"] is None and rows[0]["source"] is None and rows[0]["true_class"] is None
    assert str(rows[2]["prediction_id"]) == prediction_id and rows[2]["source"] == "operator"
    assert rows[2]["rpm"] is None and rows[2]["true_class"] == "outer_race"
    assert [row["sample_weight"] for row in rows] == [1.0, 1.0, 1.0]


def test_sampled_out_records_get_ids_but_no_row(registry):
    """A valid record the sampler drops is answered sampled_out with an id and counted; uncertain ones are kept."""
    settings = SamplingSettings(seed=1, models={"vibration": SamplingRule(keep_rate=0.5, always_keep_below_confidence=0.2)})
    out = Pipeline(registry, settings, KEY).process([prediction()] * 200 + [prediction(confidence=0.1)] * 10, now=NOW)
    statuses = [r["status"] for r in out.results]
    assert set(statuses) == {"accepted", "sampled_out"}
    assert all(uuid.UUID(r["record_id"]) for r in out.results)
    assert out.drops["sampled_out"] == statuses.count("sampled_out")
    weights = out.batches["vibration"].column("sample_weight").to_pylist()
    assert weights[-10:] == [1.0] * 10 and set(weights[:-10]) == {2.0}


def test_rate_capped_records_are_counted_apart(registry):
    """Predictions over the hourly cap are answered sampled_out and counted as rate_capped."""
    settings = SamplingSettings(seed=1, default=SamplingRule(max_per_hour=3))
    out = Pipeline(registry, settings, KEY).process([prediction()] * 5, now=NOW)
    assert out.accepted == 3 and out.drops == {"rate_capped": 2}
    assert [r["status"] for r in out.results][3:] == ["sampled_out", "sampled_out"]


def test_nothing_kept_means_no_batch(pipeline):
    """A request with no kept record yields no batch at all."""
    out = pipeline.process([prediction(rpm=None, temperature_c="hot"), "x"], now=NOW)
    assert out.batches == {} and out.accepted == 0 and out.invalid == 2


def test_short_fleet_key_is_refused(registry):
    """A fleet key under 16 bytes is a ConfigError."""
    with pytest.raises(ConfigError):
        Pipeline(registry, SamplingSettings(), b"too short")


def test_round_trip_through_parquet_and_duckdb(pipeline, tmp_path):
    """Written to Parquet and read with DuckDB, the batch gives typed values after privacy and no raw PII."""
    given_id = str(uuid.uuid4())
    out = pipeline.process([{**prediction(), "record_id": given_id}, feedback(given_id)], now=NOW)
    path = tmp_path / "batch.parquet"
    pq.write_table(pa.Table.from_batches([out.batches["vibration"]]), path, compression="zstd")
    assert b"jane@plant.example" not in path.read_bytes() and b"SN-000123" not in path.read_bytes()
    assert pq.read_table(path).schema == out.batches["vibration"].schema
    row = duckdb.sql(
        f"""
        select record_id, typeof(record_id), created_at::varchar, typeof(created_at), temperature_c, typeof(temperature_c),
               rpm, typeof(rpm), spectrum[1], typeof(spectrum), operator_email, note, lat, lon,
               measured_at::varchar, sample_weight
        from read_parquet('{path}') where kind = 'prediction'
        """
    ).fetchone()
    assert row[0] == uuid.UUID(given_id) and row[1] == "UUID"
    assert row[2] == "2026-11-26 06:30:15.123456+00" and row[3] == "TIMESTAMP WITH TIME ZONE"
    assert row[4] == pytest.approx(41.6, abs=1e-5) and row[5] == "FLOAT"
    assert row[6:10] == (1480, "INTEGER", 0.25, "FLOAT[]")  # Parquet has no fixed-size list; pyarrow restores it
    assert row[10] == pipeline.privacy.hash("jane@plant.example") and len(row[10]) == 64
    assert row[11] == "call me on <PHONE>"
    assert row[12:14] == (51.12, -0.13)
    assert row[14] == "2026-11-26 06:17:00+00"
    assert row[15] == 1.0
    label = duckdb.sql(f"select prediction_id, true_class, repair_cost_eur from read_parquet('{path}') where kind = 'feedback'").fetchone()
    assert label[0] == uuid.UUID(given_id) and label[1] == "outer_race"
    assert label[2] != 120.0 and isinstance(label[2], float)  # Laplace noise (scale 5)


@pytest.mark.parametrize("listed", [frozenset({"invalid"}), frozenset(), frozenset({"sampled_out", "invalid"})])
def test_unlisted_results_change_nothing_but_the_answer(registry, listed):
    """Leaving kept and sampled-out results out (``?results=errors``) keeps the same rows, drops, duplicates and invalid results."""
    settings = SamplingSettings(seed=3, default=SamplingRule(keep_rate=0.5))
    given_id = str(uuid.uuid4())
    records = [prediction(confidence=0.5 + i / 100) for i in range(40)] + [
        prediction(rpm="fast"), {**prediction(), "record_id": given_id}, {**prediction(), "record_id": given_id}, feedback(given_id),
    ]
    full = Pipeline(registry, settings, KEY).process(records, now=NOW)
    part = Pipeline(registry, settings, KEY).process(records, now=NOW, listed=listed)
    assert part.drops == full.drops and part.duplicates == full.duplicates and part.invalid == full.invalid == 1
    assert part.keys == full.keys
    for model, batch in full.batches.items():
        drop = ["record_id", "repair_cost_eur"]  # ids minted here and the noise differ run to run
        assert part.batches[model].drop_columns(drop).equals(batch.drop_columns(drop))
    def outline(results):  # ids minted for records sent without one differ run to run
        return [(r["index"], r["status"], r.get("duplicate"), r.get("error")) for r in results if r and r["status"] in listed]

    assert outline(part.results) == outline(full.results)
    assert all(result["status"] in listed | {"invalid"} for result in part.results if result)


def test_lines_are_validated_against_the_schemas_of_the_last_reload(registry, tmp_path):
    """After a reload drops a field, a line carrying it is refused with the field named; one without it is kept."""
    import orjson

    pipeline = Pipeline(registry, SamplingSettings(seed=1), KEY)
    full = orjson.dumps({**prediction(), "record_id": str(uuid.uuid4())})
    assert pipeline.process_lines([full], now=NOW).accepted == 1
    for path in EXAMPLES_DIR.glob("*.toml"):
        text = path.read_text()
        if path.stem == "vibration":
            text = text.replace('[inputs.serial_number]\ntype = "string"\nprivacy = "drop"\n', "")
        (tmp_path / path.name).write_text(text)
    pipeline.reload(SchemaRegistry.from_dir(tmp_path), SamplingSettings(seed=1))
    assert pipeline.process_lines([orjson.dumps({**prediction(), "record_id": str(uuid.uuid4())})], now=NOW) is None
    refused = pipeline.process([orjson.loads(full)], now=NOW)
    assert refused.results[0]["error"] == {"field": "inputs.serial_number", "message": "unknown field"}
    inputs = {key: value for key, value in prediction()["inputs"].items() if key != "serial_number"}
    kept = pipeline.process_lines([orjson.dumps({**prediction(), "inputs": inputs, "record_id": str(uuid.uuid4())})], now=NOW)
    assert kept is not None and kept.accepted == 1 and "serial_number" not in kept.batches["vibration"].schema.names


@pytest.mark.parametrize("unset", ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"])
def test_an_unset_record_id_is_invalid_the_same_way_as_json_or_as_ndjson_lines(pipeline, unset):
    """A nil or max record_id, even twice in one request, gets one invalid error on the record_id field in both paths."""
    records = [{**prediction(), "record_id": unset}, prediction(), {**prediction(), "record_id": unset}]
    decoded = pipeline.process(records, now=NOW)
    lines = pipeline.process_lines([orjson.dumps(record) for record in records], now=NOW)
    for out in (decoded, lines):
        assert [result["status"] for result in out.results] == ["invalid", "accepted", "invalid"]
        for result in (out.results[0], out.results[2]):
            assert result["error"] == {"field": "record_id", "message": "the nil (all zeros) or max (all ones) UUID names no record: an unset default?"}
        assert out.drops["invalid"] == 2 and out.accepted == 1 and not out.duplicates
