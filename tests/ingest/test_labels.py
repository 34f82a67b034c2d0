"""Labels back in: `label-queue` writes tasks for a labelling tool, `feedback import` lands the labels it returns."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from edgeloop.ingest.label_import import read_labels
from edgeloop.ingest.label_queue import write_tasks
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.ingest.conftest import (
    cli,
    free_port,
    land_and_stop,
    make_table,
    put_batch,
    seal,
    spawn_server,
    stop_server,
    write_config,
)

JPEG = b"\xff\xd8\xff\xe0" + b"thumbnail"


@pytest.fixture(scope="module")
def image_classifier():
    return SchemaRegistry.from_dir(EXAMPLES_DIR)["image_classifier"]


def _with(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


def _sql(config, query: str) -> list[dict]:
    out = cli("sql", query, "--format", "json", "--config", str(config)).stdout
    return [json.loads(line) for line in out.splitlines()]


def _annotate(task: dict, index: int, label: str, **extra) -> dict:
    """What Label Studio's JSON export gives back for a task labelled in its UI."""
    return {
        "id": 100 + index, "data": task["data"], "predictions": task.get("predictions", []),
        "annotations": [{
            "id": 1000 + index, "completed_by": {"id": 7, "email": "ann@labels.example.com"},
            "result": [{"id": f"r{index}", "from_name": "true_class", "to_name": "thumbnail", "type": "choices",
                        "value": {"choices": [label]}}],
            "was_cancelled": False, "created_at": "2026-11-20T10:00:00.000000Z", "updated_at": "2026-11-20T10:00:00.000000Z",
            **extra,
        }],
    }


def test_label_studio_export_reimported_shows_up_in_the_training_view(tmp_path, image_classifier):
    """Unlabelled predictions go out as Label Studio tasks with their thumbnails as files; the labelled export comes
    back into the training view (source label-studio, labeled_by the annotator), the latest label wins, a second
    import adds nothing, and bad rows are reported by number while the good ones land."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "kiosk-1", "--config", str(config)).stdout.strip()
    server = spawn_server(config, tmp_path / "server.log")
    try:
        table, ids = make_table(image_classifier, predictions=6)
        table = _with(table, "thumbnail", [JPEG + bytes([i]) for i in range(6)])
        table = _with(table, "predicted_class", ["cola" if i % 2 else "water" for i in range(6)])
        batch_id, body = seal(tmp_path / "a", image_classifier, table)
        assert put_batch(port, batch_id, body, token) == 201
        # One prediction already has a label from the device: it is not worth labelling again.
        labelled, _ = make_table(image_classifier, feedback=[(ids[5], "water", datetime(2025, 6, 2, tzinfo=UTC))])
        batch_id, body = seal(tmp_path / "b", image_classifier, labelled)
        assert put_batch(port, batch_id, body, token) == 201
        # ... and one gets an old device label that the import will override.
        older, _ = make_table(image_classifier, feedback=[(ids[0], "water", datetime(2025, 6, 2, tzinfo=UTC))])

        out = tmp_path / "queue" / "tasks.json"
        out.parent.mkdir()
        made = cli("label-queue", "--model", "image_classifier", "--format", "label-studio", "--out", str(out),
                   "--config", str(config))
        assert "wrote 5 tasks" in made.stderr
        tasks = json.loads(out.read_text())
        assert [task["data"]["record_id"] for task in tasks] == [str(i) for i in ids[:5]]  # oldest first
        for index, task in enumerate(tasks):
            reference = task["data"]["thumbnail"]
            assert reference.startswith("/data/local-files/?d=tasks_files/") and reference.endswith(".jpg")
            assert (out.parent / reference.split("?d=")[1]).read_bytes() == JPEG + bytes([index])
            assert task["predictions"][0]["result"][0]["value"]["choices"] == ["water" if index % 2 == 0 else "cola"]
            assert task["data"]["model"] == "image_classifier"
        config_xml = (out.parent / "tasks.label_config.xml").read_text()
        assert '<Choices name="true_class" toName="thumbnail"' in config_xml and 'value="cola"' in config_xml

        batch_id, body = seal(tmp_path / "c", image_classifier, older)
        assert put_batch(port, batch_id, body, token) == 201
        exported = [_annotate(task, i, "juice" if i < 3 else "cola") for i, task in enumerate(tasks)]
        exported[3]["annotations"][0]["was_cancelled"] = True  # skipped in the UI: no label
        exported[4]["annotations"][0]["result"][0].update(type="rectanglelabels", value={"rectanglelabels": ["cola"]})
        exported.append(_annotate({"data": {"record_id": str(uuid.uuid4())}}, 9, "cola"))  # not a landed prediction
        export_file = tmp_path / "export.json"
        export_file.write_text(json.dumps(exported))

        first = cli("feedback", "import", str(export_file), "--format", "label-studio", "--config", str(config), check=False)
        assert first.returncode == 1
        assert "imported 3 labels of image_classifier" in first.stderr and "2 rows refused" in first.stderr
        assert f"{export_file}:5: " in first.stderr and "rectanglelabels" in first.stderr
        assert f"{export_file}:6: " in first.stderr and "no prediction" in first.stderr
        again = cli("feedback", "import", str(export_file), "--format", "label-studio", "--config", str(config), check=False)
        assert "imported 0 labels" in again.stderr and "3 already there" in again.stderr

        rows = _sql(config, "SELECT record_id, true_class, feedback_source, labeled_by FROM image_classifier_training "
                            "WHERE feedback_id IS NOT NULL ORDER BY created_at")
        assert rows == [
            {"record_id": str(ids[0]), "true_class": "juice", "feedback_source": "label-studio", "labeled_by": "ann@labels.example.com"},
            {"record_id": str(ids[1]), "true_class": "juice", "feedback_source": "label-studio", "labeled_by": "ann@labels.example.com"},
            {"record_id": str(ids[2]), "true_class": "juice", "feedback_source": "label-studio", "labeled_by": "ann@labels.example.com"},
            {"record_id": str(ids[5]), "true_class": "water", "feedback_source": "operator", "labeled_by": None},
        ]
        assert _sql(config, "SELECT count(*) AS n FROM image_classifier_feedback") == [{"n": 5}]
        # The dashboard's label coverage counts imported labels as it counts device ones.
        assert _sql(config, "SELECT predictions, labelled FROM label_coverage WHERE model = 'image_classifier'") == [
            {"predictions": 6, "labelled": 4}]
        left = tmp_path / "queue" / "left.jsonl"
        cli("label-queue", "--model", "image_classifier", "--format", "jsonl", "--out", str(left), "--config", str(config))
        assert [json.loads(line)["record_id"] for line in left.read_text().splitlines()] == [str(ids[3]), str(ids[4])]
    finally:
        stop_server(server)


def test_jsonl_and_csv_round_trip_with_the_server_stopped(tmp_path, vibration):
    """A JSON lines and a CSV queue, filled in by a labeller, import from the file with the server stopped; values are
    checked against the feedback fields (types, required, privacy), with one line per bad row and exit 1."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    server = spawn_server(config, tmp_path / "server.log")
    try:
        table, ids = make_table(vibration, predictions=6)
        table = _with(table, "confidence", [0.9, 0.2, 0.6, 0.1, 0.95, 0.5])
        batch_id, body = seal(tmp_path / "a", vibration, table)
        assert put_batch(port, batch_id, body, token) == 201
    finally:
        stop_server(server)
    queue = tmp_path / "queue.jsonl"
    cli("label-queue", "--model", "vibration", "--format", "jsonl", "--order", "uncertainty", "--limit", "3",
        "--out", str(queue), "--config", str(config))
    lines = [json.loads(line) for line in queue.read_text().splitlines()]
    assert [line["record_id"] for line in lines] == [str(ids[3]), str(ids[1]), str(ids[5])]  # least confident first
    assert all(line["true_class"] is None for line in lines)
    lines[0]["true_class"] = "outer_race"
    lines[0]["labeled_by"] = "sam"
    lines[1]["repair_cost_eur"] = 12.5  # noise-protected on devices: cannot come from a file
    lines[1]["true_class"] = "ok"
    lines[2]["true_class"] = "ok"
    lines[2]["created_at"] = "not a time"
    queue.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli("feedback", "import", str(queue), "--format", "jsonl", "--config", str(config), check=False)
    assert result.returncode == 1 and "imported 1 labels of vibration" in result.stderr
    assert f"{queue}:2: " in result.stderr and "repair_cost_eur" in result.stderr
    assert f"{queue}:3: " in result.stderr and "not an ISO 8601 time" in result.stderr

    sheet = tmp_path / "queue.csv"
    cli("label-queue", "--model", "vibration", "--format", "csv", "--out", str(sheet), "--config", str(config))
    with open(sheet, newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 5 and "true_class" in records[0]
    for record in records:
        record["true_class"] = "cage"
    records[0]["record_id"] = "not-a-uuid"
    with open(sheet, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    result = cli("feedback", "import", str(sheet), "--format", "csv", "--source", "spreadsheet", "--config", str(config),
                 check=False)
    assert result.returncode == 1 and "imported 4 labels" in result.stderr and f"{sheet}:2: " in result.stderr
    with duckdb.connect(str(tmp_path / "ingest.duckdb"), read_only=True) as con:
        labels = con.execute("SELECT feedback_source, true_class, labeled_by, count(*) FROM vibration_training "
                             "WHERE feedback_id IS NOT NULL GROUP BY ALL ORDER BY ALL").fetchall()
    assert labels == [("import", "outer_race", "sam", 1), ("spreadsheet", "cage", None, 4)]
    ok = cli("feedback", "import", str(sheet), "--format", "csv", "--source", "spreadsheet", "--config", str(config),
             check=False)
    assert "imported 0 labels" in ok.stderr and "4 already there" in ok.stderr


def test_strategy_selects_the_records_that_strategy_kept(tmp_path, vibration):
    """--strategy S queues only predictions whose sampled_by names S, not another strategy whose name starts the same."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    server = spawn_server(config, tmp_path / "server.log")
    try:
        table, ids = make_table(vibration, predictions=4)
        table = _with(table, "sampled_by", ["band", "random,band", "bandwidth", None])
        batch_id, body = seal(tmp_path / "a", vibration, table)
        assert put_batch(port, batch_id, body, token) == 201
        out = tmp_path / "q.jsonl"
        cli("label-queue", "--model", "vibration", "--strategy", "band", "--format", "jsonl", "--out", str(out),
            "--config", str(config))
        assert [json.loads(line)["record_id"] for line in out.read_text().splitlines()] == [str(ids[0]), str(ids[1])]
    finally:
        stop_server(server)


def test_latest_label_wins_and_ties_break_by_received_then_id(tmp_path, vibration):
    """In <model>_training the label with the latest created_at wins; equal times go to the later received_at,
    then to the larger feedback id."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    server = spawn_server(config, tmp_path / "server.log")
    try:
        table, ids = make_table(vibration, predictions=1)
        batch_id, body = seal(tmp_path / "a", vibration, table)
        assert put_batch(port, batch_id, body, token) == 201
        at = datetime(2026, 1, 1, tzinfo=UTC)
        device, _ = make_table(vibration, feedback=[(ids[0], "from-device", at)])
        batch_id, body = seal(tmp_path / "b", vibration, device)
        assert put_batch(port, batch_id, body, token) == 201
        sheet = tmp_path / "labels.jsonl"
        sheet.write_text(json.dumps({"record_id": str(ids[0]), "true_class": "from-tool", "created_at": at.isoformat()}) + "\n")
        cli("feedback", "import", str(sheet), "--format", "jsonl", "--model", "vibration", "--config", str(config))
        assert _sql(config, "SELECT true_class FROM vibration_training") == [{"true_class": "from-tool"}]  # received later
        older = tmp_path / "older.jsonl"
        older.write_text(json.dumps({"record_id": str(ids[0]), "true_class": "old",
                                     "created_at": (at - timedelta(days=1)).isoformat()}) + "\n")
        cli("feedback", "import", str(older), "--format", "jsonl", "--model", "vibration", "--config", str(config))
        assert _sql(config, "SELECT true_class FROM vibration_training") == [{"true_class": "from-tool"}]
    finally:
        stop_server(server)


def test_rows_giving_different_feedback_fields_all_land(tmp_path):
    """Labels that fill in different feedback fields land together, each field where it was given and null elsewhere;
    values of the wrong type are per-row errors."""
    from edgeloop.ingest.label_import import LabelRow, land_labels
    from edgeloop.ingest.store import Store
    from edgeloop.schemas.model_schema import ModelSchema
    from tests.ingest.conftest import make_config

    schema = ModelSchema.from_toml(
        'name = "grader"\nversion = 1\n[outputs.score]\ntype = "float32"\n'
        '[feedback.grade]\ntype = "string"\nprivacy = "keep"\n[feedback.points]\ntype = "int32"\n'
        '[feedback.checked]\ntype = "bool"\n'
    )
    config = make_config(tmp_path)
    store = Store(config.store.db_path, config.store)
    try:
        store.register(schema).result()
        table, ids = make_table(schema, predictions=3)
        rows = table.drop_columns(["kind", "model"])

        def insert(con) -> None:
            con.register("__test_rows", rows)
            try:
                con.execute("INSERT INTO grader BY NAME SELECT * EXCLUDE (prediction_id, source, grade, points, checked) FROM __test_rows")
            finally:
                con.unregister("__test_rows")

        store.call(insert).result()
        labels = [LabelRow(1, str(ids[0]), {"grade": "A"}), LabelRow(2, str(ids[1]), {"points": "7", "checked": "true"}),
                  LabelRow(3, str(ids[2]), {"points": 2**40}), LabelRow(4, str(ids[2]), {"checked": "maybe"})]
        result = store.call(lambda con: land_labels(con, schema, labels, source="t", tag="x", max_value_bytes=100)).result()
        assert result["imported"] == 2 and [e["row"] for e in result["errors"]] == [3, 4]
        got = store.cursor().execute("SELECT grade, points, checked FROM grader_training ORDER BY created_at").fetchall()
        assert got == [("A", None, None), (None, 7, True), (None, None, None)]
    finally:
        store.close()


def _feedback_store(tmp_path, schema):
    """A real Store with ``schema`` registered and one helper that inserts rows as the writer would land them."""
    from edgeloop.ingest.store import Store
    from tests.ingest.conftest import make_config

    config = make_config(tmp_path)
    store = Store(config.store.db_path, config.store)
    store.register(schema).result()

    def insert(table: str, rows: list[dict]) -> None:
        def run(con) -> None:
            names = ", ".join(rows[0])
            marks = ", ".join("?" for _ in rows[0])
            for row in rows:
                con.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))
        store.call(run).result()

    return config, store, insert


def _view(store, sql: str) -> list[tuple]:
    """Rows of a query on a read cursor, through Arrow (timestamps with their zone, no pytz)."""
    def plain(v):
        return uuid.UUID(v) if isinstance(v, str) and len(v) == 36 and v.count("-") == 4 else v

    return [tuple(plain(v) for v in row.values()) for row in store.cursor().execute(sql).to_arrow_table().to_pylist()]


def _prediction(record_id, at):
    return {"record_id": record_id, "model_version": "1.0", "created_at": at, "sample_weight": 1.0,
            "predicted_class": "normal", "confidence": 0.5, "device": "pump-1", "batch_id": "b", "received_at": at}


def _feedback(prediction_id, at, *, label=None, cost=None, received=None, **extra):
    return {"record_id": uuid.uuid4(), "prediction_id": prediction_id, "model_version": "1.0", "created_at": at,
           "sample_weight": 1.0, "source": "operator", "true_class": label, "repair_cost_eur": cost,
           "device": "pump-1", "batch_id": "b", "received_at": received or at, **extra}


def test_a_later_feedback_without_the_truth_does_not_hide_an_earlier_label(tmp_path, vibration):
    """In <model>_training each feedback field is its latest non-null value, so a later comment-only feedback keeps
    the earlier label, and feedback_id/feedback_created_at/feedback_source name the latest feedback carrying the truth."""
    _, store, insert = _feedback_store(tmp_path, vibration)
    try:
        at = datetime(2026, 3, 1, tzinfo=UTC)
        ids = [uuid.uuid4() for _ in range(5)]
        insert("vibration", [_prediction(i, at) for i in ids])
        label_then_cost = [_feedback(ids[0], at + timedelta(hours=1), label="imbalance"),
                           _feedback(ids[0], at + timedelta(hours=2), cost=120.0)]
        cost_then_label = [_feedback(ids[1], at + timedelta(hours=1), cost=50.0),
                           _feedback(ids[1], at + timedelta(hours=2), label="cavitation")]
        cost_only = [_feedback(ids[2], at + timedelta(hours=1), cost=7.0)]
        relabelled = [_feedback(ids[3], at + timedelta(hours=1), label="normal", cost=1.0),
                      _feedback(ids[3], at + timedelta(hours=3), label="misalignment"),
                      _feedback(ids[3], at + timedelta(hours=4), cost=2.0)]
        feedback = label_then_cost + cost_then_label + cost_only + relabelled
        insert("vibration_feedback", feedback)
        rows = _view(store, "SELECT record_id, true_class, repair_cost_eur, feedback_id, feedback_created_at "
                           "FROM vibration_training")
        got = {row[0]: row[1:] for row in rows}
        assert got[ids[0]] == ("imbalance", 120.0, label_then_cost[0]["record_id"], label_then_cost[0]["created_at"])
        assert got[ids[1]] == ("cavitation", 50.0, cost_then_label[1]["record_id"], cost_then_label[1]["created_at"])
        assert got[ids[2]] == (None, 7.0, cost_only[0]["record_id"], cost_only[0]["created_at"])  # no label: latest of any kind
        assert got[ids[3]] == ("misalignment", 2.0, relabelled[1]["record_id"], relabelled[1]["created_at"])
        assert got[ids[4]] == (None, None, None, None)
        assert len(rows) == 5  # one row per prediction, however many feedback rows it has
    finally:
        store.close()


def test_labeled_by_belongs_to_the_label_not_to_a_later_comment(tmp_path, vibration):
    """labeled_by is the annotator of the label the view shows: a later feedback without the truth does not replace it,
    and a later label from a device (no annotator) does."""
    from edgeloop.ingest.store import add_feedback_column

    _, store, insert = _feedback_store(tmp_path, vibration)
    try:
        store.call(lambda con: add_feedback_column(con, "vibration", "labeled_by", "VARCHAR")).result()
        at = datetime(2026, 3, 1, tzinfo=UTC)
        ids = [uuid.uuid4() for _ in range(2)]
        insert("vibration", [_prediction(i, at) for i in ids])
        insert("vibration_feedback", [
            _feedback(ids[0], at, label="imbalance", labeled_by="ann@labels.example.com"),
            _feedback(ids[0], at + timedelta(hours=1), cost=3.0, labeled_by=None),
            _feedback(ids[1], at, label="imbalance", labeled_by="ann@labels.example.com"),
            _feedback(ids[1], at + timedelta(hours=1), label="normal", labeled_by=None),
        ])
        rows = _view(store, "SELECT record_id, true_class, labeled_by FROM vibration_training")
        got = {row[0]: row[1:] for row in rows}
        assert got[ids[0]] == ("imbalance", "ann@labels.example.com")
        assert got[ids[1]] == ("normal", None)
    finally:
        store.close()


def test_a_prediction_with_only_a_comment_stays_in_the_label_queue(tmp_path, vibration):
    """The label queue lists predictions without a feedback carrying the truth field, not those without any feedback."""
    from edgeloop.ingest.label_queue import queue_query

    _, store, insert = _feedback_store(tmp_path, vibration)
    try:
        at = datetime(2026, 3, 1, tzinfo=UTC)
        ids = [uuid.uuid4() for _ in range(3)]
        insert("vibration", [_prediction(i, at + timedelta(seconds=n)) for n, i in enumerate(ids)])
        insert("vibration_feedback", [_feedback(ids[0], at, label="normal"), _feedback(ids[1], at, cost=9.0)])
        columns = dict(store.cursor().execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'vibration'").fetchall())
        sql, params = queue_query(vibration, columns)
        queued = store.cursor().execute(f"SELECT record_id FROM ({sql})", params).to_arrow_table().column(0).to_pylist()
        assert queued == [str(ids[1]), str(ids[2])]
    finally:
        store.close()


def test_a_database_with_the_old_training_view_gets_the_new_one_on_open(tmp_path, vibration):
    """A training view made before labels were picked per field (latest feedback whole) is replaced when the store opens."""
    from edgeloop.ingest.store import Store

    config, store, insert = _feedback_store(tmp_path, vibration)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    record = uuid.uuid4()
    try:
        insert("vibration", [_prediction(record, at)])
        insert("vibration_feedback", [_feedback(record, at, label="imbalance"),
                                      _feedback(record, at + timedelta(hours=1), cost=4.0)])
        old = ("CREATE OR REPLACE VIEW vibration_training AS SELECT p.*, f.record_id AS feedback_id, "
               "f.created_at AS feedback_created_at, f.source AS feedback_source, f.true_class, f.repair_cost_eur "
               "FROM vibration AS p LEFT JOIN (SELECT * FROM vibration_feedback QUALIFY row_number() OVER "
               "(PARTITION BY prediction_id ORDER BY created_at DESC, received_at DESC, record_id DESC) = 1) AS f "
               "ON f.prediction_id = p.record_id")
        store.call(lambda con: con.execute(old)).result()
        assert store.cursor().execute("SELECT true_class FROM vibration_training").fetchall() == [(None,)]
    finally:
        store.close()
    reopened = Store(config.store.db_path, config.store)
    try:
        assert reopened.cursor().execute("SELECT true_class, repair_cost_eur FROM vibration_training").fetchall() == [
            ("imbalance", 4.0)]
    finally:
        reopened.close()


def test_export_labeled_only_leaves_out_predictions_with_only_a_comment(tmp_path, vibration):
    """export --labeled-only writes the predictions whose truth field has a value, not those whose only feedback
    is a comment or a cost."""
    import pyarrow.parquet as pq

    config, store, insert = _feedback_store(tmp_path, vibration)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    ids = [uuid.uuid4() for _ in range(3)]
    try:
        insert("vibration", [_prediction(i, at + timedelta(seconds=n)) for n, i in enumerate(ids)])
        insert("vibration_feedback", [_feedback(ids[0], at, label="normal"), _feedback(ids[1], at, cost=9.0),
                                      _feedback(ids[0], at + timedelta(hours=1), cost=3.0)])
    finally:
        store.close()
    path = write_config(tmp_path, free_port())  # the same database file, read by the CLI with the server stopped
    assert config.store.db_path == tmp_path / "ingest.duckdb"
    out = tmp_path / "train.parquet"
    cli("export", "--model", "vibration", "--labeled-only", "--out", str(out), "--config", str(path))
    rows = pq.read_table(out, columns=["record_id", "true_class", "repair_cost_eur"]).to_pylist()
    def as_uuid(v):
        return uuid.UUID(bytes=v) if isinstance(v, bytes) else uuid.UUID(str(v))

    assert [(as_uuid(row["record_id"]), row["true_class"], row["repair_cost_eur"]) for row in rows] == [(ids[0], "normal", 3.0)]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("record_id,true_class\n{id},\"cage\n", "unexpected end of data"),  # a quote never closed swallows the rest
        ("record_id,true_class\n{id},{big}\n", "field larger than field limit"),
        ("record_id,true_class,true_class\n{id},cage,ok\n", "true_class appears twice"),
    ],
    ids=["unterminated quote", "field over the csv module's limit", "duplicate column"],
)
def test_a_csv_that_cannot_be_read_unambiguously_is_one_error_naming_file_and_line(tmp_path, vibration, content, problem):
    """A label CSV that is malformed or names a column twice is refused as a whole with one error naming file and line."""
    from edgeloop.errors import EdgeloopError
    from edgeloop.ingest.label_import import read_labels

    path = tmp_path / "labels.csv"
    path.write_text(content.format(id=uuid.uuid4(), big="x" * 200_000))
    with pytest.raises(EdgeloopError) as info:
        read_labels(path, "csv", vibration)
    message = str(info.value)
    assert message.startswith(f"{path}:") and problem in message and "\n" not in message, message


FORMULAS = ['=HYPERLINK("http://evil.example","open")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1"]


def test_a_csv_queue_hands_a_spreadsheet_no_formula_and_its_labels_still_import(tmp_path, vibration):
    """Text from devices that a spreadsheet would run as a formula (=, +, -, @, tab or CR first) is written after a
    quote mark in a CSV queue, so it shows as text; the labels filled in beside it read back by record_id."""
    table, ids = make_table(vibration, predictions=len(FORMULAS))
    table = _with(_with(table, "predicted_class", FORMULAS), "model_version", FORMULAS)
    sheet = tmp_path / "queue.csv"
    write_tasks(table, vibration, "csv", sheet)
    with open(sheet, newline="") as handle:
        records = list(csv.DictReader(handle))
    for record, formula in zip(records, FORMULAS, strict=True):
        assert record["predicted_class"] == record["model_version"] == "'" + formula
        assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in record.values())
        record["true_class"] = "ok"
    with open(sheet, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    labels, errors = read_labels(sheet, "csv", vibration)
    assert errors == [] and [(row.record_id, row.fields) for row in labels] == [(str(i), {"true_class": "ok"}) for i in ids]


async def test_an_overlong_label_source_is_a_client_error_over_http_and_one_line_in_the_cli(server, tmp_path, vibration):
    """A source over 1,024 characters is 400 bad_json from POST /v1/feedback (it was a 500) and one line from the CLI."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    row = {"row": 1, "record_id": str(uuid.uuid4()), "fields": {"true_class": "ok"}}
    async with server.session.post(f"{server.url}/v1/feedback/vibration", headers=headers,
                                   json={"source": "s" * 1025, "tag": "t", "rows": [row]}) as response:
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["code"] == "bad_json"
    sheet = tmp_path / "labels.csv"
    sheet.write_text(f"record_id,true_class\n{uuid.uuid4()},ok\n")
    (tmp_path / "cli").mkdir()
    config = write_config(tmp_path / "cli", free_port())
    stop_server(spawn_server(config, tmp_path / "server.log"))  # a database holding the example schemas
    result = cli("feedback", "import", str(sheet), "--format", "csv", "--model", "vibration", "--source", "s" * 1025,
                 "--config", str(config), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert "source is over 1024 characters" in result.stderr


@pytest.mark.parametrize("limit", ["0", "-3", "ten", str(2**63), str(10**30)])
def test_a_label_queue_limit_that_is_no_count_is_a_usage_line(tmp_path, limit):
    """--limit must be a whole number from 1 to 2^63-1: anything else is one usage line (exit 2), before the database."""
    config = write_config(tmp_path, free_port())
    result = cli("label-queue", "--model", "vibration", "--format", "jsonl", "--limit", limit,
                 "--out", str(tmp_path / "queue.jsonl"), "--config", str(config), check=False)
    assert result.returncode == 2, result.stderr
    assert "--limit" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "queue.jsonl").exists()


def test_a_csv_with_a_million_columns_is_read_in_linear_time(tmp_path, vibration):
    """A label CSV whose header has a million columns is read in seconds (the duplicate-column check was quadratic and hung)."""
    import time

    record = uuid.uuid4()
    path = tmp_path / "wide.csv"
    path.write_text("record_id,true_class," + ",".join(f"c{n}" for n in range(1_000_000)) + f"\n{record},ok\n")
    started = time.monotonic()
    rows, errors = read_labels(path, "csv", vibration)
    assert time.monotonic() - started < 20
    assert errors == [] and [(row.record_id, row.fields) for row in rows] == [(str(record), {"true_class": "ok"})]


def test_a_label_stamped_in_a_leap_second_imports_at_the_last_microsecond_of_its_minute(tmp_path, vibration):
    """A label file's created_at of 23:59:60 (RFC 3339's leap second, as the agent takes it) imports as 23:59:59.999999, not a row error."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    table, ids = make_table(vibration, predictions=1)
    land_and_stop(tmp_path, config, port, token, vibration, table)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"record_id": str(ids[0]), "true_class": "ok", "created_at": "2017-01-01T05:44:60.5+05:45"}) + "\n")
    result = cli("feedback", "import", str(labels), "--format", "jsonl", "--model", "vibration", "--config", str(config), check=False)
    assert result.returncode == 0 and "imported 1 labels" in result.stderr, result.stderr
    rows = _sql(config, "SELECT strftime(feedback_created_at, '%Y-%m-%dT%H:%M:%S.%f') AS at FROM vibration_training")
    assert rows == [{"at": "2016-12-31T23:59:59.999999"}]
