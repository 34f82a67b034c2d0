"""POST /v1/records end to end on a real agent: round trip into Parquet, and every kind of bad input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math

import duckdb
import orjson
import pyarrow as pa
import pytest

from bench.simulator import SimulatedModel
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.collector.conftest import FLEET_KEY

REGISTRY = SchemaRegistry.from_dir(EXAMPLES_DIR)


def _error_shape(body) -> dict:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def _hmac(value: str) -> str:
    return hmac.new(FLEET_KEY, value.encode(), hashlib.sha256).hexdigest()


def test_round_trip_through_parquet_and_duckdb_after_privacy(agent):
    """Records sent come back from the sealed batches, via pyarrow and DuckDB, typed by the schema and anonymized."""
    vibration = list(SimulatedModel("vibration", seed=11).records(300, feedback_ratio=0.1))
    vibration[0]["inputs"]["note"] = "call +49 30 1234567 or mail jo@example.com"
    images = list(SimulatedModel("image_classifier", seed=12).predictions(200))
    for chunk in (vibration[:150], vibration[150:], images):
        status, body = agent.post_records(chunk)
        assert status == 200 and body["invalid"] == 0 and body["sampled_out"] == 0, body
    assert agent.stop() == 0

    tables = agent.read_batches()
    assert set(tables) == {"vibration", "image_classifier"}
    for model, sent in (("vibration", vibration), ("image_classifier", images)):
        table = tables[model]
        schema = REGISTRY[model]
        assert table.schema.equals(schema.arrow_schema), model
        by_id = {str(row["record_id"]): row for row in table.to_pylist()}
        assert sorted(by_id) == sorted(record["record_id"] for record in sent)
        for record in sent:
            row = by_id[record["record_id"]]
            assert row["kind"] == record["kind"] and row["model_version"] == record["model_version"]
            assert row["sample_weight"] == 1.0
            assert row["created_at"].tzinfo is not None
            if record["kind"] == "feedback":
                assert str(row["prediction_id"]) == record["prediction_id"]
                assert row["true_class"] == record["feedback"]["true_class"]
                continue
            inputs, outputs = record["inputs"], record["outputs"]
            assert row["predicted_class"] == outputs["predicted_class"]
            assert math.isclose(row["confidence"], outputs["confidence"], rel_tol=1e-6)
            if model == "vibration":
                assert "serial_number" not in row  # privacy "drop": no column at all
                assert row["operator_email"] == _hmac(inputs["operator_email"])
                assert row["rpm"] == inputs["rpm"]
                assert math.isclose(row["lat"], round(inputs["lat"] / 0.01) * 0.01, abs_tol=1e-9)
                assert row["measured_at"].second == 0 and row["measured_at"].microsecond == 0
                assert row["spectrum"] == pytest.approx(inputs["spectrum"], rel=1e-6)
            else:
                assert row["thumbnail"] == base64.b64decode(inputs["thumbnail"])
                assert row["camera_id"] == _hmac(inputs["camera_id"])
                assert row["top_k_scores"] == pytest.approx(outputs["top_k_scores"], rel=1e-6)
    note = next(row["note"] for row in tables["vibration"].to_pylist() if str(row["record_id"]) == vibration[0]["record_id"])
    assert "jo@example.com" not in note and "1234567" not in note and "<EMAIL>" in note

    files = [str(path) for path in agent.batch_files()]
    con = duckdb.connect()
    for model, table in tables.items():
        paths = [p for p in files if model in pa.parquet.read_metadata(p).metadata[b"edgeloop.model"].decode()]
        relation = con.sql(f"SELECT * FROM read_parquet({paths!r}) ORDER BY record_id")
        types = dict(zip(relation.columns, (str(t) for t in relation.types)))
        assert types["record_id"] == "UUID" and types["created_at"] == "TIMESTAMP WITH TIME ZONE"
        assert types["sample_weight"] == "DOUBLE"
        # Parquet has no fixed-size list: DuckDB reads vectors as FLOAT[], every one of the schema's length.
        if model == "vibration":
            assert types["spectrum"] == "FLOAT[]" and types["rpm"] == "INTEGER" and "serial_number" not in types
            lengths = con.sql(f"SELECT DISTINCT len(spectrum) FROM read_parquet({paths!r}) WHERE spectrum IS NOT NULL")
            assert lengths.fetchall() == [(16,)]
        else:
            assert types["thumbnail"] == "BLOB" and types["top_k_scores"] == "FLOAT[]"
        from_duckdb = relation.to_arrow_table()
        assert from_duckdb.num_rows == table.num_rows
        ids_duck = sorted(str(v) for v in from_duckdb.column("record_id").to_pylist())
        assert ids_duck == sorted(str(v) for v in table.column("record_id").to_pylist())
        assert con.sql(f"SELECT count(DISTINCT record_id) FROM read_parquet({paths!r})").fetchone()[0] == table.num_rows


def _good(n: int = 1, seed: int = 21) -> list[dict]:
    return list(SimulatedModel("vibration", seed=seed).predictions(n))


@pytest.fixture
def small_agent(agent_factory):
    return agent_factory(intake={"max_body_bytes": 256 * 1024, "max_records_per_request": 50}).start()


def test_malformed_json_is_400_and_the_agent_keeps_serving(small_agent):
    """A body that is not JSON gets 400 in the error shape; the next request is served."""
    status, body = small_agent.post_raw(b'[{"kind": "prediction", ')
    assert status == 400 and _error_shape(body)["code"] == "bad_json"
    status, body = small_agent.post_raw(b'"just a string"')
    assert status == 400 and _error_shape(body)["code"] == "bad_json"
    assert small_agent.post_records(_good(3))[0] == 200


def test_wrong_types_unknown_model_and_oversize_binary_name_the_field(small_agent):
    """Invalid records get a per-record error naming the field while valid ones in the same request are kept."""
    good = _good(2)
    wrong_type = _good(1, seed=22)[0]
    wrong_type["inputs"]["rpm"] = "fast"
    unknown = {**_good(1, seed=23)[0], "model": "no_such_model"}
    image = next(SimulatedModel("image_classifier", seed=24).predictions(1))
    image["inputs"]["thumbnail"] = base64.b64encode(b"\xff" * 20_000).decode()
    status, body = small_agent.post_records([good[0], wrong_type, unknown, image, good[1]])
    assert status == 200, body
    assert (body["accepted"], body["invalid"]) == (2, 3)
    errors = {r["index"]: r["error"] for r in body["results"] if r["status"] == "invalid"}
    assert errors[1]["field"] == "inputs.rpm"
    assert errors[2]["field"] == "model" and "no_such_model" in errors[2]["message"]
    assert errors[3]["field"] == "inputs.thumbnail" and "16384" in errors[3]["message"]
    assert [r["status"] for r in body["results"]] == ["accepted", "invalid", "invalid", "invalid", "accepted"]


def test_all_invalid_is_422_with_the_results(small_agent):
    """A request in which no record is valid gets 422, its per-record errors in details."""
    status, body = small_agent.post_records([{"kind": "prediction"}, {"model": "vibration"}])
    assert status == 422
    error = _error_shape(body)
    assert error["code"] == "all_invalid" and error["details"]["invalid"] == 2


def test_ndjson_bad_line_is_one_invalid_record(small_agent):
    """In NDJSON a malformed line is an invalid record at its index and the other lines are kept."""
    good = _good(2)
    body = orjson.dumps(good[0]) + b"\n{not json\n" + orjson.dumps(good[1]) + b"\n"
    status, answer = small_agent.post_raw(body, "application/x-ndjson")
    assert status == 200, answer
    assert (answer["accepted"], answer["invalid"]) == (2, 1)
    assert answer["results"][1]["status"] == "invalid" and answer["results"][1]["index"] == 1
    assert answer["results"][2]["record_id"] == good[1]["record_id"]


def test_size_limits_and_content_type_are_refused_clearly(small_agent):
    """A body over max_body_bytes and too many records get 413, another content type 415."""
    status, body = small_agent.post_raw(b"[" + b" " * (300 * 1024) + b"]")
    assert status == 413 and _error_shape(body)["code"] == "too_large"
    status, body = small_agent.post_records(_good(60))
    assert status == 413 and _error_shape(body)["code"] == "too_many_records"
    status, body = small_agent.post_raw(b"a,b\n1,2\n", "text/csv")
    assert status == 415 and _error_shape(body)["code"] == "unsupported_media_type"
    status, body = small_agent.request("GET", "/v1/nothing-here")
    assert status == 404 and _error_shape(body)["code"] == "not_found"
    status, body = small_agent.request("DELETE", "/v1/records")
    assert status == 405 and _error_shape(body)["code"] == "method_not_allowed"
    assert small_agent.post_records(_good(3))[0] == 200


# 400 thumbnails in one request (~8 MB): a memory budget that admits such bodies.
BIG_BODIES: dict = {"agent": {"memory_budget_mb": 400}, "intake": {"max_body_bytes": 8 << 20}}


def _fill(agent, until_status: int | None, rounds: int) -> list[int]:
    sim = SimulatedModel("image_classifier", seed=31)
    statuses = []
    for _ in range(rounds):
        status, _ = agent.post_records(list(sim.predictions(400)))
        statuses.append(status)
        if status == until_status:
            break
    return statuses


def test_full_spool_with_reject_new_answers_507(agent_factory):
    """With a few-MB budget and reject_new, intake answers 507 spool_full once full, and keeps serving status."""
    agent = agent_factory(
        spool={"max_bytes": 3 * 1024 * 1024, "when_full": "reject_new", "seal_max_rows": 400}, **BIG_BODIES
    ).start()
    statuses = _fill(agent, 507, 40)
    assert statuses[-1] == 507 and statuses[0] == 200
    status, body = agent.post_records(list(SimulatedModel("image_classifier", seed=32).predictions(400)))
    assert status == 507 and _error_shape(body)["code"] == "spool_full"
    report = agent.status()
    assert report["drops"]["total"]["spool_full"] >= 800
    assert report["spool"]["bytes"] + report["journal"]["bytes"] <= 3 * 1024 * 1024


def test_full_spool_with_drop_oldest_drops_and_counts(agent_factory):
    """With a few-MB budget and drop_oldest, intake keeps accepting, the oldest batches go and are counted."""
    agent = agent_factory(
        spool={"max_bytes": 3 * 1024 * 1024, "when_full": "drop_oldest", "seal_max_rows": 400}, **BIG_BODIES
    ).start()
    statuses = _fill(agent, None, 25)
    assert set(statuses) == {200}
    report = agent.status()
    assert report["drops"]["total"]["spool_full"] > 0
    assert report["spool"]["bytes"] <= 3 * 1024 * 1024
    assert len(agent.batch_files()) == report["spool"]["batches"]


def test_a_finite_number_its_column_cannot_hold_is_refused_not_stored_as_infinity(small_agent):
    """A number its float32 column (or its rounding) would turn into infinity is an invalid record naming the field."""
    def vibration(section: str, name: str, value) -> dict:
        record = _good(1, seed=25)[0]
        del record["record_id"]
        record[section][name] = value
        return record

    huge = [
        vibration("outputs", "confidence", 1e300),  # float32
        vibration("inputs", "spectrum", [1.0] * 15 + [-1e39]),  # a vector of float32
        vibration("inputs", "temperature_c", 3.4e38),  # float32 under round:0.1
        vibration("inputs", "lat", 1e308),  # float64 under round:0.01
    ]
    label = {"kind": "feedback", "model": "vibration", "model_version": "2.3.0",
             "prediction_id": "019cabe3-d1f4-7091-9d8d-18174831bf5b", "feedback": {"true_class": "normal", "repair_cost_eur": 1.7e308}}
    edge = [vibration("outputs", "confidence", 3.4e38), vibration("inputs", "lat", 1e300)]
    status, body = small_agent.post_records([*huge, label, *edge])
    assert status == 200, body
    errors = [(r["index"], r["error"]["field"]) for r in body["results"] if r["status"] == "invalid"]
    assert errors == [(0, "outputs.confidence"), (1, "inputs.spectrum.15"), (2, "inputs.temperature_c"),
                      (3, "inputs.lat"), (4, "feedback.repair_cost_eur")], body
    assert small_agent.stop() == 0
    table = small_agent.read_batches()["vibration"]
    assert table.num_rows == 2
    for name in ("confidence", "lat", "temperature_c"):
        assert all(math.isfinite(value) for value in table.column(name).to_pylist()), name


def test_the_nil_or_max_uuid_as_an_id_is_refused_not_taken_for_a_resend(small_agent):
    """A record_id or prediction_id of all zeros or all ones (an app's unset default) is invalid, not a duplicate that vanishes."""
    first, second = _good(2, seed=26)
    first["record_id"] = second["record_id"] = "00000000-0000-0000-0000-000000000000"
    label = {"kind": "feedback", "model": "vibration", "model_version": "2.3.0",
             "prediction_id": "ffffffff-ffff-ffff-ffff-ffffffffffff", "feedback": {"true_class": "normal"}}
    for record, field in ((first, "record_id"), (second, "record_id"), (label, "prediction_id")):
        status, body = small_agent.post_records([record])
        assert status == 422, body
        (result,) = body["error"]["details"]["results"]
        assert result["error"]["field"] == field and "nil" in result["error"]["message"], result
