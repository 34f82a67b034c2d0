"""The field report recovers known accuracy, calibration and drift, and agrees with scikit-learn."""

from __future__ import annotations

import html
import json
import math
import random
import shutil
import uuid
from datetime import timedelta
from html.parser import HTMLParser

import duckdb
import pyarrow as pa
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from edgeloop.errors import EdgeloopError, QueryFailed
from edgeloop.ingest.admin import LocalAdmin
from edgeloop.ingest.export import training_query
from edgeloop.ingest.report import build_report, declare, model_schema, period_starts, wilson
from edgeloop.ingest.report_view import render_report
from edgeloop.schemas import EXAMPLES_DIR, ModelSchema
from tests.ingest.conftest import cli, free_port, spawn_server, stop_server, write_config
from tests.ingest.report_data import (
    ROLLOUT_SHARES,
    ROLLOUT_START,
    START,
    VERSIONS,
    WEEK,
    land,
    rollout_rows,
    vibration_rows,
)


def _landed(tmp_path_factory, schema, name, generated):
    predictions, feedback = generated
    return land(tmp_path_factory.mktemp(name), schema, predictions + feedback)


def _read_only(db):
    backend = LocalAdmin(db, read_only=True, timeout_s=60)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def field_db(tmp_path_factory, vibration):
    """A DuckDB file with two weeks of vibration predictions and labels from three versions."""
    return _landed(tmp_path_factory, vibration, "field", vibration_rows(vibration))


@pytest.fixture
def admin(field_db):
    yield from _read_only(field_db)


@pytest.fixture(scope="module")
def rollout_db(tmp_path_factory, vibration):
    """A DuckDB file with a five-week rollout from 2.0.3 (accuracy 0.80) to 2.1.0 (0.90), a canary in week two."""
    return _landed(tmp_path_factory, vibration, "rollout", rollout_rows(vibration))


@pytest.fixture
def rollout(rollout_db):
    yield from _read_only(rollout_db)


def _report(admin, **kwargs):
    return build_report(admin, declare(model_schema(admin, "vibration")), **kwargs)


def _groups(report):
    return {group.key: group for group in report.groups}


def test_known_accuracy_per_version_is_recovered_within_its_interval(admin):
    """Each version's weighted accuracy interval holds the accuracy it was generated with, and 2.1.0 beats 2.0.3."""
    groups = _groups(_report(admin))
    for version in VERSIONS[:2]:
        accuracy = groups[version.name].accuracy
        assert accuracy.low <= version.accuracy <= accuracy.high, (version, accuracy)
        assert accuracy.high - accuracy.low < 0.05
        assert accuracy.n == groups[version.name].labelled
    assert groups["2.1.0"].accuracy.low > groups["2.0.3"].accuracy.high


def test_weights_undo_uncertainty_sampling(admin):
    """Unweighted, the kept sample over-represents uncertain predictions; the weighted figure is the population's."""
    rows = admin.query(*training_query("vibration", labeled_only=True)).to_pylist()
    old = [row for row in rows if row["model_version"] == "2.0.3"]
    unweighted = sum(row["predicted_class"] == row["true_class"] for row in old) / len(old)
    accuracy = _groups(_report(admin))["2.0.3"].accuracy
    assert unweighted < accuracy.low  # 0.75 expected unweighted against 0.80 in the population
    assert accuracy.n_eff < accuracy.n  # unequal weights cost effective sample size


def test_a_dozen_labels_do_not_look_better_than_thousands(admin):
    """A version with about a dozen labels gets an interval wide enough that its lower bound sits below the big version's."""
    groups = _groups(_report(admin))
    few, many = groups["2.2.0-rc1"].accuracy, groups["2.1.0"].accuracy
    assert few.n < 30
    assert few.high - few.low > 4 * (many.high - many.low)
    assert few.low < many.low


def test_figures_match_scikit_learn_on_the_same_rows(admin):
    """Accuracy, per-class precision/recall/F1, the confusion matrix and coverage equal scikit-learn's on the exported rows."""
    report = _report(admin)
    rows = admin.query(*training_query("vibration")).to_pylist()
    for group in report.groups:
        mine = [row for row in rows if row["model_version"] == group.key]
        labelled = [row for row in mine if row["true_class"] is not None]
        truth = [row["true_class"] for row in labelled]
        predicted = [row["predicted_class"] for row in labelled]
        weights = [row["sample_weight"] for row in labelled]
        assert group.collected == len(mine) and group.labelled == len(labelled)
        assert group.weighted_coverage == pytest.approx(sum(weights) / sum(row["sample_weight"] for row in mine))
        assert group.accuracy.value == pytest.approx(accuracy_score(truth, predicted, sample_weight=weights), abs=1e-12)
        labels = [figures.label for figures in group.classes]
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, predicted, labels=labels, sample_weight=weights, zero_division=0
        )
        for index, figures in enumerate(group.classes):
            assert (figures.precision.value or 0.0) == pytest.approx(precision[index], abs=1e-12)
            assert (figures.recall.value or 0.0) == pytest.approx(recall[index], abs=1e-12)
            assert figures.f1.value == pytest.approx(f1[index], abs=1e-12)
            assert figures.support == sum(1 for t in truth if t == figures.label)
        matrix = confusion_matrix(truth, predicted, labels=labels)
        for i, t in enumerate(labels):
            for j, p in enumerate(labels):
                assert group.confusion[t].get(p, 0) == matrix[i][j]


def test_calibration_error_built_in_is_found(admin):
    """2.0.3 was generated 0.05 over-confident in every bucket and 2.1.0 calibrated: ECE and the reliability table say so."""
    groups = _groups(_report(admin))
    old, new = groups["2.0.3"], groups["2.1.0"]
    assert old.ece.low <= 0.05 <= old.ece.high
    assert new.ece.low < 0.02 and new.ece.value < old.ece.low
    for bucket in old.reliability:
        if bucket.labelled > 200:
            assert bucket.accuracy.low <= bucket.confidence - 0.05 <= bucket.accuracy.high, bucket
    assert sum(bucket.share for bucket in old.reliability) == pytest.approx(1.0)
    assert [b.collected for b in old.reliability if b.low < 0.7] == [0] * 7


def test_shifted_inputs_are_flagged_and_steady_ones_are_not(admin):
    """Week two's temperature shift and operator mix are flagged as drift; latitude and rpm stay stable."""
    report = _report(admin, since=START + WEEK, until=START + 2 * WEEK)
    assert report.reference.startswith(START.isoformat(timespec="seconds"))
    drift = {d.field: d for d in report.drift}
    assert drift["temperature_c"].flag == "drift" and drift["temperature_c"].kind == "numeric"
    assert drift["operator_email"].flag == "drift" and drift["operator_email"].kind == "categorical"
    assert drift["operator_email"].p_value < 1e-6
    for steady in ("lat", "rpm", "lon"):
        assert drift[steady].flag == "stable", drift[steady]
    assert drift["rpm"].p_value is None and drift["predicted_class"].kind == "categorical"
    assert "spectrum" not in drift and "measured_at" not in drift  # vectors and timestamps are not compared
    # PSI by hand from the bins the report shows.
    bins = drift["temperature_c"].bins
    expected = sum((b.current - b.reference) * math.log(max(b.current, 1e-4) / max(b.reference, 1e-4)) for b in bins)
    assert drift["temperature_c"].psi == pytest.approx(expected)
    assert sum(b.reference for b in bins) == pytest.approx(1.0) and sum(b.current for b in bins) == pytest.approx(1.0)


def test_no_reference_no_drift_with_a_note(admin):
    """Without --since or a reference, drift is skipped and the report says how to get it."""
    report = _report(admin)
    assert report.drift == [] and any("--reference" in note for note in report.notes)


def test_grouping_by_device_and_none(admin):
    """--by device gives one row per device and --by none one row whose counts are the totals."""
    by_version = _report(admin)
    by_device = _report(admin, by="device")
    together = _report(admin, by="none")
    assert sorted(group.key for group in by_device.groups) == ["pump-0", "pump-1"]
    assert [group.key for group in together.groups] == ["all"]
    assert together.groups[0].labelled == sum(group.labelled for group in by_version.groups)
    assert together.groups[0].collected == sum(group.collected for group in by_device.groups)


def test_wilson_matches_its_textbook_values():
    """Wilson's interval for 8/10 is [0.490, 0.943] and for 0/12 starts at 0 (values from Newcombe 1998)."""
    low, high = wilson(0.8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    low, high = wilson(0.0, 12)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2425, abs=1e-3)


REGRESSION = """
name = "eta"
version = 1
prediction_field = "eta_min"
truth_field = "actual_min"
[inputs.distance_km]
type = "float64"
[outputs.eta_min]
type = "float64"
required = true
[feedback.actual_min]
type = "float64"
"""


def test_regression_mae_rmse_bias_are_recovered_and_match_scikit_learn(tmp_path):
    """Errors drawn N(0.5, 2) give bias 0.5, RMSE 2.06 and MAE 1.645 within their intervals, equal to scikit-learn's."""
    schema = ModelSchema.from_toml(REGRESSION)
    rng = random.Random(5)
    rows = []
    blank = {spec.name: None for spec in schema.stored_fields}
    for index in range(4000):
        record_id = uuid.UUID(int=rng.getrandbits(128))
        truth = rng.uniform(5, 60)
        weight = 1.0 if index % 2 else 2.0
        at = START + timedelta(minutes=index)
        rows.append({**blank, "record_id": record_id, "kind": "prediction", "model": "eta", "model_version": "1.0",
                     "created_at": at, "sample_weight": weight, "distance_km": truth / 2,
                     "eta_min": truth + rng.gauss(0.5, 2.0)})
        rows.append({**blank, "record_id": uuid.UUID(int=rng.getrandbits(128)), "kind": "feedback", "model": "eta",
                     "model_version": "1.0", "created_at": at + timedelta(minutes=30), "sample_weight": 1.0,
                     "prediction_id": record_id, "source": "gps", "actual_min": truth})
    db = land(tmp_path, schema, rows, devices=1)
    admin = LocalAdmin(db, read_only=True)
    try:
        report = build_report(admin, declare(model_schema(admin, "eta")))
        labelled = admin.query(*training_query("eta", labeled_only=True)).to_pylist()
    finally:
        admin.close()
    group = report.groups[0]
    assert report.task == "regression" and group.labelled == 4000 and group.accuracy is None
    mu, sigma = 0.5, 2.0
    expected_mae = sigma * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * sigma * sigma)) + mu * math.erf(mu / (sigma * math.sqrt(2)))
    assert group.bias.low <= mu <= group.bias.high
    assert group.mae.low <= expected_mae <= group.mae.high
    assert group.rmse.low <= math.sqrt(mu * mu + sigma * sigma) <= group.rmse.high
    truth = [row["actual_min"] for row in labelled]
    predicted = [row["eta_min"] for row in labelled]
    weights = [row["sample_weight"] for row in labelled]
    assert group.mae.value == pytest.approx(mean_absolute_error(truth, predicted, sample_weight=weights))
    assert group.rmse.value == pytest.approx(math.sqrt(mean_squared_error(truth, predicted, sample_weight=weights)))
    assert group.bias.value == pytest.approx(sum(w * (p - t) for w, p, t in zip(weights, predicted, truth)) / sum(weights))


def test_undeclared_comparison_and_unknown_model_are_clear_errors(admin):
    """A model without prediction/truth declarations, bad overrides, or an unknown model each give a one-line error."""
    schema = model_schema(admin, "vibration")
    bare = ModelSchema(**{**schema.model_dump(exclude={"fields", "source"}), "prediction_field": None, "truth_field": None},
                       fields=schema.fields)
    with pytest.raises(EdgeloopError, match="does not declare what to compare"):
        declare(bare)
    with pytest.raises(EdgeloopError, match="truth_field 'anomaly_score' must name a stored feedback field"):
        declare(schema, truth="anomaly_score")
    with pytest.raises(EdgeloopError, match="no model named 'nope'"):
        model_schema(admin, "nope")
    declared = declare(bare, prediction="predicted_class", truth="true_class")
    assert declared.comparison_task == "classification"


def test_empty_window_reports_no_groups(admin):
    """A window with no predictions gives an empty report with a note, not an error."""
    report = _report(admin, since=START - 10 * WEEK, until=START - 9 * WEEK)
    assert report.groups == [] and "no predictions in this window" in report.notes
    assert report.over_time is None and "Accuracy over time" not in render_report(report, "html").decode()
    assert "no predictions in this window" in render_report(report, "table").decode()  # a field without bins too


def test_a_window_that_ends_before_it_starts_is_refused(admin):
    """since at or after until is a one-line error naming both, not an empty report with an inverted comparison window."""
    with pytest.raises(QueryFailed, match=r"since \(.*\) must be before until"):
        _report(admin, since=START, until=START - WEEK)
    with pytest.raises(QueryFailed, match="must be before until"):
        _report(admin, since=START, until=START)


def test_reports_are_reproducible(admin):
    """Two runs over the same data give the same report, bootstrap intervals included."""
    assert _report(admin).to_dict() == _report(admin).to_dict()


def test_arrow_table_of_rows_is_never_pulled(admin, monkeypatch):
    """The report's queries return aggregates: no query result has as many rows as the labelled records."""
    sizes = []
    original = admin.query

    def counting(sql, params=()):
        table = original(sql, params)
        sizes.append(table.num_rows)
        return table

    monkeypatch.setattr(admin, "query", counting)
    report = _report(admin, since=START + WEEK)
    assert max(sizes) < 100 < report.groups[0].labelled
    assert isinstance(original("SELECT 1 AS x"), pa.Table)


def test_cli_report_is_the_same_through_the_running_server_and_from_the_file(field_db, tmp_path):
    """report --format json gives the same figures through a running server's admin API and from the stopped file."""
    shutil.copy(field_db, tmp_path / "ingest.duckdb")
    port = free_port()
    config = write_config(tmp_path, port)
    args = ("report", "--model", "vibration", "--since", "2026-10-08", "--until", "2026-10-15", "--config", str(config))
    server = spawn_server(config, tmp_path / "server.log")
    try:
        running = json.loads(cli(*args, "--format", "json").stdout)
        page = tmp_path / "report.html"
        written = cli(*args, "--format", "html", "--out", str(page))
        assert "wrote the html report" in written.stderr
    finally:
        stop_server(server)
    stopped = json.loads(cli(*args, "--format", "json").stdout)
    assert running == stopped
    assert {g["key"] for g in stopped["groups"]} == {"2.0.3", "2.1.0", "2.2.0-rc1"}
    assert [d["field"] for d in stopped["drift"] if d["flag"] == "drift"] == ["temperature_c", "operator_email"]
    text = cli(*args).stdout
    assert "accuracy" in text and "temperature_c" in text and "drift" in text
    assert page.read_text().startswith("<!DOCTYPE html>")
    over = stopped["over_time"]  # a week's window: one point per version per day, in JSON, text and HTML alike
    assert over["period"] == "day" and over["periods"][0] == "2026-10-08" and len(over["periods"]) == 7
    assert "accuracy per version per day (UTC)" in text and "chart-intervals" in page.read_text()
    weekly = json.loads(cli(*args, "--format", "json", "--bucket", "week").stdout)["over_time"]
    assert weekly["period"] == "week" and weekly["periods"] == ["2026-10-05", "2026-10-12"]


def test_reference_export_file_gives_the_same_drift_as_its_date_range(field_db, tmp_path):
    """Drift against a named export of the first week equals drift against the first week as a date range."""
    export = tmp_path / "week1.parquet"
    cli("export", "--model", "vibration", "--since", "2026-10-01", "--until", "2026-10-08", "--out", str(export), "--db", str(field_db))
    window = ("report", "--model", "vibration", "--since", "2026-10-08", "--until", "2026-10-15", "--db", str(field_db), "--format", "json")
    by_file = json.loads(cli(*window, "--reference", str(export)).stdout)
    by_range = json.loads(cli(*window, "--reference-since", "2026-10-01", "--reference-until", "2026-10-08").stdout)
    assert by_file["reference"] == "export file week1.parquet"
    for a, b in zip(by_file["drift"], by_range["drift"], strict=True):
        assert a["field"] == b["field"] and a["flag"] == b["flag"]
        assert a["psi"] == pytest.approx(b["psi"]) and a["reference_n"] == b["reference_n"]
    missing = cli(*window, "--reference", str(tmp_path / "nope.parquet"), check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "nope.parquet" in missing.stderr


def test_cli_errors_are_one_line(field_db):
    """An unknown model, a bad override and a bad --by each end with one line on stderr and exit 1 or 2."""
    unknown = cli("report", "--model", "nope", "--db", str(field_db), check=False)
    assert unknown.returncode == 1 and unknown.stderr.strip().count("\n") == 0 and "no model named 'nope'" in unknown.stderr
    bad = cli("report", "--model", "vibration", "--truth", "confidence", "--db", str(field_db), check=False)
    assert bad.returncode == 1 and "must name a stored feedback field" in bad.stderr
    assert cli("report", "--model", "vibration", "--by", "colour", "--db", str(field_db), check=False).returncode == 2


HOSTILE = '<script>alert("x")</script>'


def test_html_report_is_self_contained_and_escapes_what_devices_sent(tmp_path, vibration):
    """The HTML has no script, link or URL, and labels and versions from devices appear only escaped."""
    predictions, feedback = vibration_rows(vibration, seed=3)
    for row in predictions[:50] + feedback:
        row["model_version"] = '"><img src=x onerror=alert(1)>'
    for row in predictions[:200]:
        row["predicted_class"] = HOSTILE
    db = land(tmp_path, vibration, predictions + feedback)
    admin = LocalAdmin(db, read_only=True)
    try:
        report = _report(admin, since=START + WEEK)
    finally:
        admin.close()
    page = render_report(report, "html").decode()
    lowered = page.lower().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name, never fetched
    for forbidden in ("<script", "<img", "<link", "<iframe", "<object", "http://", "https://", "@import", "url("):
        assert forbidden not in lowered, forbidden
    tags: set[str] = set()
    attributes: set[str] = set()

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            attributes.update(name for name, _ in attrs)

    Collector().feed(page)
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b", "br", "div", "span",
                    "table", "thead", "tbody", "tr", "th", "td", "dl", "dt", "dd", "svg", "line", "circle", "rect", "text",
                    "g", "polygon", "polyline", "details", "summary"}, tags
    assert not {name for name in attributes if name in ("src", "href") or name.startswith("on")}, attributes
    assert html.escape(HOSTILE) in page
    assert page.count("<svg") >= 2 + len(report.groups) and page.rstrip().endswith("</html>")
    assert 'class="chart chart-intervals"' in page  # accuracy over time, the hostile version escaped in it too


def test_an_empty_window_against_a_full_reference_shows_no_invented_shares(admin):
    """With no predictions in the window, drift says 'too few' and every window share is zero."""
    report = _report(admin, since=START + 3 * WEEK, until=START + 4 * WEEK,
                     reference_since=START, reference_until=START + WEEK)
    assert report.drift and {d.flag for d in report.drift} == {"too few"}
    assert all(b.current == 0 for d in report.drift for b in d.bins)


def test_a_change_of_sampling_rate_is_not_drift(tmp_path, vibration):
    """The same population kept at p=1 in week one and thinned by confidence in week two shows no weighted drift."""
    rng = random.Random(11)
    blank = {spec.name: None for spec in vibration.stored_fields}
    rows = []
    for index in range(12000):
        second_week = index % 2 == 1
        confidence = rng.uniform(0.5, 1.0)
        p = 0.2 if second_week and confidence >= 0.75 else 1.0  # week two: uncertainty sampling switched on
        if rng.random() >= p:
            continue
        rows.append({**blank, "record_id": uuid.UUID(int=rng.getrandbits(128)), "kind": "prediction", "model": "vibration",
                     "model_version": "2.1.0", "created_at": START + (WEEK if second_week else timedelta()) + timedelta(seconds=index),
                     "sample_weight": 1 / p, "temperature_c": round(50 + 20 * confidence + rng.gauss(0, 1), 1),
                     "predicted_class": "normal", "confidence": confidence, "spectrum": [0.5] * 16})
    db = land(tmp_path, vibration, rows, devices=1)
    admin = LocalAdmin(db, read_only=True)
    try:
        report = _report(admin, since=START + WEEK, until=START + 2 * WEEK)
        unweighted = admin.query(
            "SELECT avg(temperature_c) FILTER (WHERE created_at < ?::TIMESTAMPTZ) AS before, "
            "avg(temperature_c) FILTER (WHERE created_at >= ?::TIMESTAMPTZ) AS after FROM vibration",
            [(START + WEEK).isoformat(), (START + WEEK).isoformat()],
        ).to_pylist()[0]
    finally:
        admin.close()
    assert unweighted["before"] - unweighted["after"] > 1  # the sample itself moved: thinned confident records
    drift = {d.field: d for d in report.drift}
    assert drift["temperature_c"].flag == "stable" and drift["confidence"].flag == "stable", drift["temperature_c"]


def test_a_weight_no_sampler_could_give_is_left_out_and_counted(tmp_path, vibration):
    """A sample_weight that is not a finite number >= 1 never reaches a figure; the report says how many it left out."""
    predictions, feedback = vibration_rows(vibration, seed=8)
    predictions = [row for row in predictions if row["model_version"] == "2.1.0"][:400]
    kept = {row["record_id"] for row in predictions}
    feedback = [row for row in feedback if row["prediction_id"] in kept]
    db = land(tmp_path, vibration, predictions + feedback, devices=1)
    # The server refuses such weights (422 bad_values); a table written before that check may hold them.
    with duckdb.connect(str(db)) as con:
        for row, bad in zip(predictions, ("nan", "inf", "-inf", "0", "-4", "0.5", "1e-300")):
            con.execute("UPDATE vibration SET sample_weight = ?::DOUBLE WHERE record_id = ?", [bad, row["record_id"]])
    admin = LocalAdmin(db, read_only=True)
    try:
        report = _report(admin, reference_since=START, reference_until=START + WEEK)
    finally:
        admin.close()
    group = report.groups[0]
    assert group.collected == 393 and "7 predictions with a sample_weight" in " ".join(report.notes)
    for value in (group.accuracy.value, group.accuracy.low, group.ece.value, group.weighted_coverage):
        assert math.isfinite(value) and 0 <= value <= 1
    assert all(d.psi is None or math.isfinite(d.psi) for d in report.drift)


def test_pushing_new_declarations_for_a_registered_schema_reaches_the_report(tmp_path, vibration):
    """Declarations stay out of the fingerprint, so pushing them again for a registered schema updates it in place."""
    bare = ModelSchema(**{**vibration.model_dump(exclude={"fields", "source"}), "prediction_field": None, "truth_field": None},
                       fields=vibration.fields)
    predictions, feedback = vibration_rows(vibration, seed=2)
    db = land(tmp_path, bare, predictions[:300] + feedback[:100], devices=1)
    admin = LocalAdmin(db, read_only=False)
    try:
        assert model_schema(admin, "vibration").prediction_field is None
        text = (EXAMPLES_DIR / "vibration.toml").read_text()
        assert admin.push_schema(text, "vibration.toml")["status"] == "declarations_updated"
        assert admin.push_schema(text, "vibration.toml")["status"] == "already_registered"
        declared = model_schema(admin, "vibration")
        assert (declared.prediction_field, declared.truth_field, declared.fingerprint) == ("predicted_class", "true_class", bare.fingerprint)
        assert build_report(admin, declare(declared)).groups[0].accuracy is not None
    finally:
        admin.close()


def _weeks(count: int) -> list[str]:
    return [(ROLLOUT_START + i * WEEK).date().isoformat() for i in range(count)]


def test_accuracy_per_version_over_time_recovers_the_rollout(rollout):
    """Over five weeks the weekly accuracy of 2.0.3 and of 2.1.0 holds 0.80 and 0.90 within its intervals,
    each version has points only in the weeks it ran, and the per-week counts add up to the version's."""
    report = _report(rollout)
    over = report.over_time
    assert over.period == "week" and over.metric == "accuracy"  # 35 days of data: weeks, chosen from the span
    assert over.periods == _weeks(5)
    assert [series.version for series in over.series] == ["2.0.3", "2.1.0"]  # in order of appearance
    truth = {version.name: version.accuracy for version in VERSIONS[:2]}
    groups = _groups(report)
    misses = 0
    for series in over.series:
        ran = [week for week, share in zip(_weeks(5), ROLLOUT_SHARES[series.version]) if share]
        assert [point.start for point in series.points] == ran
        for point in series.points:
            estimate = point.estimate
            assert estimate.low <= estimate.value <= estimate.high
            misses += not estimate.low <= truth[series.version] <= estimate.high
        assert sum(point.estimate.n for point in series.points) == groups[series.version].labelled
        assert sum(point.collected for point in series.points) == groups[series.version].collected
    assert misses <= 1  # 95% intervals over 8 points: one miss is chance, more would be a bias
    weeks_both = {p.start: p.estimate for p in over.series[1].points}
    old = {p.start: p.estimate for p in over.series[0].points}
    middle = _weeks(5)[2]
    assert weeks_both[middle].low > old[middle].high  # 2.1.0 is visibly better in the week both ran at scale


def test_a_week_with_few_labels_gets_a_wider_interval(rollout):
    """2.1.0's canary week (3% of predictions, a few dozen labels) has a much wider interval than its full weeks."""
    series = {s.version: s for s in _report(rollout).over_time.series}["2.1.0"]
    canary, *full = series.points
    assert canary.start == _weeks(5)[1] and canary.estimate.n < 60
    def width(e):
        return e.high - e.low

    assert all(width(canary.estimate) > 2.5 * width(point.estimate) for point in full)
    assert all(canary.estimate.n < point.estimate.n for point in full)


def test_one_period_of_the_series_is_the_report_of_that_period(rollout):
    """A week's point equals the per-version figure of a report over just that week: one definition, one interval."""
    week = ROLLOUT_START + 2 * WEEK
    point = {s.version: s.points for s in _report(rollout).over_time.series}["2.1.0"][1]
    alone = _groups(_report(rollout, since=week, until=week + WEEK))["2.1.0"]
    assert point.start == week.date().isoformat()
    assert point.estimate == alone.accuracy


def test_the_period_is_chosen_from_the_span_or_given(rollout):
    """auto gives days for a week of data and weeks for five; day, week and month can be asked for; others are refused."""
    one_week = _report(rollout, since=ROLLOUT_START, until=ROLLOUT_START + WEEK).over_time
    assert one_week.period == "day" and len(one_week.periods) == 7
    daily = _report(rollout, bucket="day").over_time
    assert daily.period == "day" and len(daily.periods) == 35
    monthly = _report(rollout, bucket="month").over_time
    assert monthly.period == "month" and monthly.periods == ["2026-10-01", "2026-11-01"]
    for series in daily.series:  # finer periods split the same labelled records
        version = {s.version: s for s in monthly.series}[series.version]
        assert sum(p.estimate.n for p in series.points) == sum(p.estimate.n for p in version.points)
    with pytest.raises(QueryFailed, match="bucket must be one of auto, day, week, month"):
        _report(rollout, bucket="hour")
    with pytest.raises(QueryFailed, match="more than 400 days"):
        period_starts("day", START.date(), (START + 60 * WEEK).date())
    assert period_starts("week", START.date(), START.date()) == [(START - timedelta(days=START.weekday())).date()]


def test_mae_over_time_for_a_regression(tmp_path):
    """A regression's series is MAE per version per period, with the interval and count of its per-version MAE."""
    schema = ModelSchema.from_toml(REGRESSION)
    rng = random.Random(6)
    rows = []
    blank = {spec.name: None for spec in schema.stored_fields}
    for index in range(600):
        record_id = uuid.UUID(int=rng.getrandbits(128))
        truth = rng.uniform(5, 60)
        at = ROLLOUT_START + timedelta(hours=index)  # 25 days: daily points
        rows.append({**blank, "record_id": record_id, "kind": "prediction", "model": "eta", "model_version": "1.0",
                     "created_at": at, "sample_weight": 1.0, "distance_km": truth / 2,
                     "eta_min": truth + rng.gauss(0.0, 2.0)})
        rows.append({**blank, "record_id": uuid.UUID(int=rng.getrandbits(128)), "kind": "feedback", "model": "eta",
                     "model_version": "1.0", "created_at": at + timedelta(minutes=30), "sample_weight": 1.0,
                     "prediction_id": record_id, "source": "gps", "actual_min": truth})
    admin = LocalAdmin(land(tmp_path, schema, rows, devices=1), read_only=True)
    try:
        report = build_report(admin, declare(model_schema(admin, "eta")))
        whole = build_report(admin, declare(model_schema(admin, "eta")), bucket="month")
    finally:
        admin.close()
    over = report.over_time
    assert over.metric == "MAE" and over.period == "day" and len(over.periods) == 25
    points = over.series[0].points
    assert sum(p.estimate.n for p in points) == 600
    expected = 2.0 * math.sqrt(2 / math.pi)  # E|N(0, 2)|
    assert sum(p.estimate.low <= expected <= p.estimate.high for p in points) >= len(points) - 3  # 95%: chance misses
    (month,) = whole.over_time.series[0].points
    assert month.estimate == report.groups[0].mae  # the whole window in one period is the per-version MAE
