"""Label coverage kept at landing equals what the training view counts, whatever order rows land in."""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta

import duckdb
import pyarrow as pa

from edgeloop.ingest import tallies
from tests.ingest.conftest import BASE_TIME, make_table, seal

COVERAGE_SQL = (
    "SELECT model_version, predictions, weighted, labelled, weighted_labelled FROM label_coverage "
    "WHERE model = 'vibration' ORDER BY 1"
)
TRUTH_SQL = (  # labelled: the truth field has a value (true_class is the vibration model's truth_field)
    "SELECT model_version, count(*) AS predictions, sum(sample_weight) AS weighted, count(true_class) AS labelled, "
    "coalesce(sum(CASE WHEN true_class IS NULL THEN 0 ELSE sample_weight END), 0) AS weighted_labelled "
    "FROM vibration_training GROUP BY 1 ORDER BY 1"
)


def _rows(rows):
    return [(r["model_version"], r["predictions"], round(r["weighted"], 6), r["labelled"], round(r["weighted_labelled"], 6))
            for r in rows]


async def test_coverage_matches_the_training_view_in_any_landing_order(server, tmp_path, vibration):
    """Predictions and feedback landing in random orders (feedback first, twice, duplicates, same batch) count as the view does."""
    token = await server.add_device("pump-1")
    rng = random.Random(12)
    bodies: list[tuple[str, bytes]] = []
    for index in range(6):
        version = rng.choice(["2.0.3", "2.1.0"])
        weight = rng.choice([1.0, 2.0, 4.0])
        start = BASE_TIME + timedelta(hours=index)
        table, ids = make_table(vibration, predictions=rng.randint(5, 30), version=version, start=start, weight=weight)
        bodies.append(seal(tmp_path / uuid.uuid4().hex, vibration, table))
        labelled = rng.sample(ids, rng.randint(0, len(ids)))
        twice = labelled[: len(labelled) // 3]  # a second label for some: still one labelled prediction
        for chunk in (labelled, twice):
            if chunk:
                feedback = [(record_id, "normal", start + timedelta(minutes=rng.randint(1, 50))) for record_id in chunk]
                table, _ = make_table(vibration, feedback=feedback, version=version, start=start)
                bodies.append(seal(tmp_path / uuid.uuid4().hex, vibration, table))
    # One batch carrying predictions and their feedback together.
    table, ids = make_table(vibration, predictions=7, version="2.1.0", start=BASE_TIME, weight=2.0)
    feedback_table, _ = make_table(vibration, feedback=[(ids[0], "normal", BASE_TIME), (ids[3], "normal", BASE_TIME)],
                                   version="2.1.0")
    bodies.append(seal(tmp_path / uuid.uuid4().hex, vibration, pa.concat_tables([table, feedback_table])))
    rng.shuffle(bodies)  # feedback often lands before its predictions
    for batch_id, body in bodies:
        status, receipt, _ = await server.put(batch_id, body, token)
        assert status == 201, receipt
    for batch_id, body in bodies[:3]:  # replays change nothing
        assert (await server.put(batch_id, body, token))[0] == 200
    kept = await server.sql(COVERAGE_SQL)
    truth = await server.sql(TRUTH_SQL)
    assert _rows(kept) == _rows(truth)
    assert sum(r["labelled"] for r in truth) > 0 and len(truth) == 2


def _comment_only(schema, prediction_ids, at, *, cost: float = 80.0) -> pa.Table:
    """Feedback rows that carry a repair cost but no truth (true_class null): a comment, not a label."""
    table, _ = make_table(schema, feedback=[(record_id, None, at) for record_id in prediction_ids])
    index = table.schema.get_field_index("repair_cost_eur")
    return table.set_column(index, "repair_cost_eur", pa.array([cost] * table.num_rows, pa.float64()))


async def test_a_comment_only_feedback_is_not_labelled_on_the_dashboard_as_in_the_report(server, tmp_path, vibration):
    """A prediction whose only feedback carries no truth (a comment or a cost) is unlabelled in the dashboard's label
    coverage, as in the report and the label queue; one that gets its label later counts from then on."""
    import asyncio

    from edgeloop.ingest.admin import RemoteAdmin
    from edgeloop.ingest.report import build_report, declare, model_schema

    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=10, version="2.0.3")
    labelled = make_table(vibration, feedback=[(record_id, "normal", BASE_TIME) for record_id in ids[:3]])[0]
    # A comment first, the predictions, a comment with the predictions, then a comment after a label.
    early = _comment_only(vibration, ids[3:5], BASE_TIME)
    together = pa.concat_tables([table, _comment_only(vibration, ids[5:6], BASE_TIME)])
    after = _comment_only(vibration, ids[:1] + ids[6:7], BASE_TIME + timedelta(hours=1))
    for rows in (early, together, labelled, after):
        batch_id, body = seal(tmp_path / uuid.uuid4().hex, vibration, rows)
        assert (await server.put(batch_id, body, token))[0] == 201

    async def coverage() -> dict:
        async with server.session.get(f"{server.url}/v1/dashboard/data?days=7",
                                      headers={"Authorization": f"Bearer {server.admin_token}"}) as response:
            assert response.status == 200
            return {row["model_version"]: row for row in (await response.json())["coverage"]}

    def report():
        admin = RemoteAdmin(server.url, server.admin_token)
        return build_report(admin, declare(model_schema(admin, "vibration")))

    shown = (await coverage())["2.0.3"]
    group = next(g for g in (await asyncio.to_thread(report)).groups if g.key == "2.0.3")
    assert (group.collected, group.labelled) == (10, 3)
    assert (shown["predictions"], shown["labelled"], shown["coverage"]) == (10, 3, group.coverage)
    # A label for a prediction that had only a comment counts it once.
    batch_id, body = seal(tmp_path / uuid.uuid4().hex, vibration,
                          make_table(vibration, feedback=[(ids[3], "imbalance", BASE_TIME + timedelta(hours=2))])[0])
    assert (await server.put(batch_id, body, token))[0] == 201
    assert (await coverage())["2.0.3"]["labelled"] == 4
    assert _rows(await server.sql(COVERAGE_SQL)) == _rows(await server.sql(TRUTH_SQL))


async def test_imported_feedback_without_the_truth_labels_nothing(server, tmp_path, vibration):
    """Rows imported through POST /v1/feedback/{model} label a prediction only when they carry the truth field."""
    from edgeloop.schemas import EXAMPLES_DIR, ModelSchema

    # The truth optional, and a field an annotator may fill alone (a note).
    text = (EXAMPLES_DIR / "vibration.toml").read_text().replace('name = "vibration"', 'name = "pump"', 1)
    text = text.replace('[feedback.true_class]\ntype = "string"\nprivacy = "keep"  # a class label, not free text\nrequired = true',
                        '[feedback.true_class]\ntype = "string"\nprivacy = "keep"', 1)
    text += '\n[feedback.annotator_note]\ntype = "string"\nprivacy = "keep"\n'
    schema = ModelSchema.from_toml(text, source="pump")
    async with server.session.post(f"{server.url}/v1/schemas", data=text.encode(), headers={
            "Authorization": f"Bearer {server.admin_token}", "Content-Type": "application/toml"}) as response:
        assert response.status == 201, await response.text()
    token = await server.add_device("pump-1")
    table, ids = make_table(schema, predictions=5)
    batch_id, body = seal(tmp_path, schema, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    rows = [{"row": 0, "record_id": str(ids[0]), "fields": {"true_class": "normal"}},
            {"row": 1, "record_id": str(ids[1]), "fields": {"annotator_note": "bearing noise"}},
            {"row": 2, "record_id": str(ids[2]), "fields": {"annotator_note": "checked"}}]
    async with server.session.post(f"{server.url}/v1/feedback/pump", json={"source": "test", "tag": "t1", "rows": rows},
                                   headers={"Authorization": f"Bearer {server.admin_token}"}) as response:
        answer = await response.json()
        assert response.status == 200 and answer["imported"] == 3, answer
    assert (await server.sql("SELECT labelled FROM label_coverage WHERE model = 'pump'"))[0]["labelled"] == 1
    assert _rows(await server.sql(COVERAGE_SQL.replace("'vibration'", "'pump'"))) == _rows(
        await server.sql(TRUTH_SQL.replace("vibration_training", "pump_training")))


def test_a_database_from_before_the_table_is_counted_when_the_store_opens(tmp_path):
    """ensure_tables on a database whose rows landed before the tallies existed counts them from the tables."""
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute("CREATE TABLE models (model VARCHAR, schema_json VARCHAR)")
    con.execute("""INSERT INTO models VALUES ('m', '{"truth_field": "label"}')""")
    con.execute("CREATE TABLE m (record_id UUID, model_version VARCHAR, sample_weight DOUBLE, device VARCHAR, "
                "created_at TIMESTAMPTZ, received_at TIMESTAMPTZ)")
    con.execute("CREATE TABLE m_feedback (record_id UUID, prediction_id UUID, label VARCHAR)")
    con.execute("CREATE TABLE batches (received_at TIMESTAMPTZ, model VARCHAR, drops VARCHAR, rows BIGINT, duplicates BIGINT)")
    con.execute("""INSERT INTO batches VALUES ('2026-11-01 10:00:00+00', 'm', '{"sampled_out": 5, "rate_capped": 0}', 3, 1),
        ('2026-11-01 23:00:00+00', 'm', '{"sampled_out": 2}', 4, 0), ('2026-11-02 01:00:00+00', 'm', '{}', 5, 0)""")
    ids = [uuid.uuid4() for _ in range(4)]
    con.executemany("INSERT INTO m VALUES (?, ?, ?, 'd', ?::TIMESTAMPTZ, now())", [
        (ids[0], "1", 1.0, "2026-10-01 00:00:00+00"), (ids[1], "1", 3.0, "2026-10-02 00:00:00+00"),
        (ids[2], "2", 1.0, "2026-10-03 00:00:00+00"), (ids[3], "2", 1.0, "2026-10-04 00:00:00+00"),
    ])
    con.executemany("INSERT INTO m_feedback VALUES (?, ?, ?)", [
        (uuid.uuid4(), ids[1], "a"), (uuid.uuid4(), ids[1], "b"), (uuid.uuid4(), ids[2], "a"),
        (uuid.uuid4(), ids[3], None),  # a comment: not a label
    ])
    tallies.ensure_tables(con)
    assert con.execute("SELECT * FROM label_coverage ORDER BY model_version").fetchall() == [
        ("m", "1", 2, 4.0, 1, 3.0), ("m", "2", 2, 2.0, 1, 1.0),
    ]
    assert con.execute("SELECT * FROM drops_daily").fetchall() == [(date(2026, 11, 1), "m", "sampled_out", 7)]
    assert con.execute("SELECT device, model_version FROM device_versions").fetchall() == [("d", "2")]
    assert con.execute("SELECT device, day, to_version FROM version_changes").fetchall() == [("d", date(2026, 10, 3), "2")]
    tallies.ensure_tables(con)  # a second open counts nothing twice
    assert con.execute("SELECT sum(predictions) FROM label_coverage").fetchone()[0] == 4


async def test_drops_per_day_and_reason_are_tallied_as_batches_land(server, tmp_path, vibration):
    """Each batch's drop counts add up in drops_daily by day and reason, as the ledger has them; replays add nothing."""
    from edgeloop.collector.config import SpoolSettings
    from edgeloop.collector.spool import Spool

    token = await server.add_device("pump-1")
    spool = Spool(tmp_path / "spool", SpoolSettings(), agent_version="test-1")
    sealed = []
    for sampled, capped in ((5, 0), (7, 2), (0, 0)):
        if sampled:
            spool.count_drop("sampled_out", sampled)
        if capped:
            spool.count_drop("rate_capped", capped)
        table, _ = make_table(vibration, predictions=3, version="2.1.0")
        sealed.append(spool.write_batch(table, schema=vibration))
    for batch in sealed + sealed[:1]:
        status, receipt, _ = await server.put(batch.batch_id, batch.path.read_bytes(), token)
        assert status in (200, 201), receipt
    kept = await server.sql("SELECT reason, sum(records)::BIGINT AS n FROM drops_daily GROUP BY 1 ORDER BY 1")
    assert kept == [{"reason": "rate_capped", "n": 2}, {"reason": "sampled_out", "n": 12}]
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with server.session.get(f"{server.url}/v1/dashboard/fleet?days=2", headers=headers) as response:
        drops = (await response.json())["drops"]["by_reason"]
    assert {reason: sum(counts) for reason, counts in drops.items()} == {"rate_capped": 2, "sampled_out": 12}


def test_hostile_drop_counts_are_capped_and_never_fail_a_landing(tmp_path):
    """Drop counts a device made up (huge, repeated, long reasons) are capped instead of overflowing the tally."""
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    tallies.ensure_tables(con)
    for _ in range(3):
        tallies.note_drops(con, [(date(2026, 11, 1), "m", {"x" * 500: 10**30, "ok": 3, "negative": -5})])
    rows = dict(con.execute("SELECT reason, records FROM drops_daily").fetchall())
    assert rows == {"x" * tallies.MAX_REASON_CHARS: tallies.MAX_COUNT, "ok": 9}


def test_a_label_coverage_counted_by_an_older_rule_is_counted_again_when_the_store_opens(tmp_path, vibration):
    """A DuckDB store whose label coverage counted comment-only feedback as labels (before 2026-11) counts it again by
    the one rule when it opens, once; a new store's table names the rule from the start."""
    from edgeloop.ingest.store import Store
    from tests.ingest.test_labels import _feedback, _feedback_store, _prediction

    config, store, insert = _feedback_store(tmp_path, vibration)
    ids = [uuid.uuid4() for _ in range(4)]
    try:
        assert store.cursor().execute(
            "SELECT comment FROM duckdb_tables() WHERE table_name = 'label_coverage'").fetchone()[0] == tallies.COVERAGE_RULE
        insert("vibration", [_prediction(record_id, BASE_TIME) for record_id in ids])
        insert("vibration_feedback", [_feedback(ids[0], BASE_TIME, label="normal"), _feedback(ids[1], BASE_TIME, cost=3.0)])

        def as_an_older_version_left_it(con) -> None:
            con.execute("DELETE FROM label_coverage")
            con.execute("INSERT INTO label_coverage VALUES ('vibration', '1.0', 4, 4.0, 2, 2.0)")
            con.execute("COMMENT ON TABLE label_coverage IS NULL")

        store.call(as_an_older_version_left_it).result()
    finally:
        store.close()
    reopened = Store(config.store.db_path, config.store)
    try:
        cur = reopened.cursor()
        assert _rows(cur.execute(COVERAGE_SQL).to_arrow_table().to_pylist()) == [("1.0", 4, 4.0, 1, 1.0)]
        assert _rows(cur.execute(COVERAGE_SQL).to_arrow_table().to_pylist()) == _rows(
            cur.execute(TRUTH_SQL).to_arrow_table().to_pylist())
        assert cur.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'label_coverage'").fetchone()[0] == (
            tallies.COVERAGE_RULE)
    finally:
        reopened.close()


def test_a_truth_field_declared_later_counts_the_next_landings_by_it(tmp_path, vibration):
    """Declaring a truth field on a model that had none makes the next landing count only feedback carrying it as labels."""
    import json
    from datetime import UTC, datetime

    from edgeloop.ingest.batch import read_batch
    from edgeloop.ingest.store import Landing, Store
    from edgeloop.schemas import ModelSchema
    from tests.ingest.conftest import make_config

    document = json.loads(vibration.canonical_json())
    for key in ("prediction_field", "truth_field", "task"):
        document.pop(key, None)
    undeclared = ModelSchema.from_canonical_json(json.dumps(document))
    assert undeclared.fingerprint == vibration.fingerprint and undeclared.truth_field is None
    config = make_config(tmp_path)
    store = Store(config.store.db_path, config.store)

    def land(name: str, table: pa.Table) -> None:
        batch_id, body = seal(tmp_path / name, vibration, table)
        batch = read_batch(body, batch_id=batch_id, limits=config.limits, schema_for=store.catalog.get)
        assert store.submit(Landing(batch, "pump-1", datetime.now(UTC))).result(30)[0] == 201

    try:
        assert store.register(undeclared).result(30)["status"] == "registered"
        predictions, ids = make_table(vibration, predictions=4, version="1.0")
        land("p", predictions)
        land("c1", _comment_only(vibration, ids[:1], BASE_TIME))  # no truth field declared: any feedback labels
        assert store.register(vibration).result(30)["status"] == "declarations_updated"
        land("c2", _comment_only(vibration, ids[1:2], BASE_TIME))  # a comment: no label now
        land("l", make_table(vibration, feedback=[(ids[2], "normal", BASE_TIME)], version="1.0")[0])
        counted = store.cursor().execute("SELECT predictions, labelled FROM label_coverage WHERE model = 'vibration'").fetchall()
        assert counted == [(4, 2)]
    finally:
        store.close()


def test_a_failure_inside_a_temp_table_block_is_the_error_the_caller_sees():
    """A statement that fails inside ``dropped_after`` aborts the transaction; the caller gets that failure (an out of
    memory stays a 503), not the "Current transaction is aborted" a DROP would raise after it, and the rollback drops
    the temp table."""
    import duckdb
    import pytest

    from edgeloop.ingest.aggregate import dropped_after

    con = duckdb.connect()
    con.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    con.execute("INSERT INTO t VALUES (1)")
    con.execute("BEGIN TRANSACTION")
    con.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS a")
    with pytest.raises(duckdb.ConstraintException):
        with dropped_after(con, "scratch"):
            con.execute("INSERT INTO t SELECT a FROM temp.scratch")
    con.execute("ROLLBACK")
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scratch'").fetchone()[0] == 0
    with dropped_after(con, "scratch"):
        con.execute("CREATE TEMP TABLE scratch AS SELECT 2 AS a")
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scratch'").fetchone()[0] == 0


async def test_a_device_clock_years_ahead_does_not_freeze_its_version(server, tmp_path, vibration):
    """Rows dated years ahead of their arrival count as made when they arrived: once the clock is right, the next version moves the device."""
    from datetime import UTC, datetime

    token = await server.add_device("pump-1")
    ahead, _ = make_table(vibration, predictions=2, version="1.0", start=datetime.now(UTC) + timedelta(days=3650))
    right, _ = make_table(vibration, predictions=2, version="2.0", start=datetime.now(UTC))
    for name, table in (("ahead", ahead), ("right", right)):
        batch_id, body = seal(tmp_path / name, vibration, table)
        assert (await server.put(batch_id, body, token))[0] == 201
    versions = await server.sql("SELECT model_version, since_at < now() + INTERVAL 1 DAY AS sane FROM device_versions")
    assert versions == [{"model_version": "2.0", "sane": True}]
    changes = await server.sql("SELECT from_version, to_version FROM version_changes ORDER BY to_version")
    assert changes == [{"from_version": None, "to_version": "1.0"}, {"from_version": "1.0", "to_version": "2.0"}]
