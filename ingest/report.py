"""The field report: how each model version does in the field, from ``<model>_training``.

Every figure is aggregated by SQL in DuckDB and sent through the ``Admin`` protocol, the
same checked read-only path as ``edgeloop-ingest sql``: against the file when the server is
stopped, through ``POST /v1/sql`` when it runs. Python only does arithmetic on the
aggregates (a few rows per group, class pair or bin), never on the records themselves.

Weights. Each stored prediction carries ``sample_weight = 1/p``, p the probability the
device kept it. Every figure is a weighted (Hájek) estimate, so it estimates the figure over
all predictions the model made, not over the sample: uncertainty sampling keeps the
low-confidence predictions at p = 1 and thins the rest, and an unweighted accuracy would be
biased low. Weights cannot undo a labeller's own choice of which predictions to label; the
reliability table shows label coverage per confidence bucket so that choice is visible.

Intervals (95%). Proportions (accuracy, precision, recall, per-bucket accuracy) use Wilson's
score interval on Kish's effective sample size n_eff = (Σw)² / Σw², which is the plain Wilson
interval when all weights are 1 and widens as weights grow unequal; F1 is a monotone
function of the share q = TP / (TP+FP+FN), so its interval is Wilson's on q mapped through
2q/(1+q). Means (bias, MAE, MSE) use the normal interval with the weighted standard
deviation over sqrt(n_eff); RMSE's is the square root of MSE's. ECE's comes from a
parametric bootstrap over its buckets (fixed seed, so a report is reproducible).

Over time. The headline figure (accuracy, or MAE for a regression) per model version per day,
week or month of ``created_at`` (UTC), with the same SQL aggregate and the same interval as the
per-version figure: one definition (``_summary`` grouped by one more key, then ``headline``).
``auto`` picks the period from the window's span: days up to 31 days, weeks up to a year, then
months. Each point carries its labelled count, so a week with a dozen labels shows its wide
interval instead of a confident line.

Drift. Each input field (and the prediction and confidence) in the report window against a
reference window (a date range of the same table, or a named export file read locally):
numeric fields by the population stability index over ten bins cut at the reference
window's deciles, categorical ones by PSI over their 20 most common values plus the rest,
with a chi-square test of the share changes. PSI flags: >= 0.1 "watch", >= 0.25 "drift".
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from edgeloop.errors import EdgeloopError, QueryFailed
from edgeloop.ingest.admin import Admin
from edgeloop.ingest.choices import GROUPINGS, PERIODS
from edgeloop.ingest.connection import quote
from edgeloop.schemas.model_schema import NAME_PATTERN, NUMERIC_TYPES, ModelSchema
from edgeloop.times import EARLIEST

__all__ = ["GROUPINGS", "PERIODS", "Report", "build_report", "model_schema"]

Grouping = Literal["model_version", "device", "none"]
Z95 = 1.959963984540054
BUCKETS = 10
DRIFT_BINS = 10
TOP_VALUES = 20
WATCH_PSI = 0.1
DRIFT_PSI = 0.25
MIN_DRIFT_RECORDS = 100
PSI_FLOOR = 1e-4  # an empty bin counts as this share, or PSI would be infinite
MAX_CONFUSION_CELLS = 100_000
MAX_VALUES = 1_000
BOOTSTRAP_DRAWS = 1_000
Period = Literal["auto", "day", "week", "month"]
MAX_PERIODS = 400  # points on one line: more than a chart can show, so a narrower window or a longer period
MONTHS_DAYS = 30 * (MAX_PERIODS - 2)  # a span of days that holds fewer than MAX_PERIODS months
MAX_POINTS = 20_000  # versions × periods
DRIFT_TYPES = NUMERIC_TYPES | {"string", "bool"}
# 1/p with p <= 1: anything else (a device's bug or a forgery) is left out and counted, not trusted.
WEIGHT = "CASE WHEN isfinite(sample_weight) AND sample_weight >= 1 THEN sample_weight::DOUBLE END"

Query = Callable[[str, Sequence[Any]], pa.Table]


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95% interval and the labelled records behind it (n, and Kish's n_eff)."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    n_eff: float


@dataclass(frozen=True)
class ClassFigures:
    label: str
    support: int
    precision: Estimate
    recall: Estimate
    f1: Estimate


@dataclass(frozen=True)
class Bucket:
    """One confidence bucket of the reliability table."""

    low: float
    high: float
    collected: int
    labelled: int
    share: float  # of the labelled weight, which is what ECE averages over
    confidence: float | None
    accuracy: Estimate


@dataclass
class Group:
    """Figures for one model version (or device, or everything)."""

    key: str
    collected: int
    labelled: int
    coverage: float | None
    weighted_coverage: float | None
    devices: int
    first_at: str | None
    last_at: str | None
    accuracy: Estimate | None = None
    macro_f1: float | None = None
    classes: list[ClassFigures] = field(default_factory=list)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    ece: Estimate | None = None
    reliability: list[Bucket] = field(default_factory=list)
    mae: Estimate | None = None
    rmse: Estimate | None = None
    bias: Estimate | None = None


@dataclass(frozen=True)
class DriftBin:
    label: str
    reference: float
    current: float


@dataclass(frozen=True)
class FieldDrift:
    field: str
    section: str
    kind: Literal["numeric", "categorical"]
    reference_n: int
    current_n: int
    psi: float | None
    psi_noise: float | None  # PSI expected from sampling alone: (bins-1)(1/n_ref + 1/n_cur)
    flag: Literal["stable", "watch", "drift", "too few"]
    chi2: float | None = None
    chi2_df: int | None = None
    p_value: float | None = None
    bins: list[DriftBin] = field(default_factory=list)


@dataclass(frozen=True)
class Point:
    """One period of one version's line: its first day (UTC), predictions collected, and the figure."""

    start: str
    collected: int
    estimate: Estimate


@dataclass(frozen=True)
class Series:
    version: str
    points: list[Point]


@dataclass(frozen=True)
class OverTime:
    """The headline figure per version per period; ``periods`` lists every period of the window, gaps included."""

    period: Literal["day", "week", "month"]
    metric: Literal["accuracy", "MAE"]
    periods: list[str]
    series: list[Series]


@dataclass
class Report:
    model: str
    task: str
    prediction_field: str
    truth_field: str
    confidence_field: str | None
    by: str
    since: str | None
    until: str | None
    weighted: bool
    groups: list[Group]
    reference: str | None = None
    drift: list[FieldDrift] = field(default_factory=list)
    over_time: OverTime | None = None
    notes: list[str] = field(default_factory=list)
    version: str | None = None  # the one model version asked for, or None for all
    groups_total: int = 0  # groups in the window; ``groups`` holds those from ``groups_offset`` on, at most max_groups
    groups_offset: int = 0
    collected_total: int = 0  # over every group, shown or not
    labelled_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- statistics on aggregates -------------------------------------------------------------


def n_eff(weight: float, weight2: float) -> float:
    """Kish's effective sample size of a weighted sample."""
    return weight * weight / weight2 if weight2 > 0 else 0.0


def wilson(p: float, n: float) -> tuple[float | None, float | None]:
    """Wilson's 95% score interval for a proportion p observed on n (effective) trials."""
    if n <= 0:
        return None, None
    z2 = Z95 * Z95
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = Z95 * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(hits_w: float, weight: float, weight2: float, n: int) -> Estimate:
    """A weighted share with its Wilson interval on n_eff."""
    if weight <= 0 or n == 0:
        return Estimate(None, None, None, n, 0.0)
    p = min(1.0, max(0.0, hits_w / weight))
    effective = n_eff(weight, weight2)
    low, high = wilson(p, effective)
    return Estimate(p, low, high, n, effective)


def mean(sum_wx: float, sum_wx2: float, weight: float, weight2: float, n: int) -> Estimate:
    """A weighted mean with a normal interval: weighted SD over sqrt(n_eff)."""
    if weight <= 0 or n == 0:
        return Estimate(None, None, None, n, 0.0)
    value = sum_wx / weight
    effective = n_eff(weight, weight2)
    variance = max(sum_wx2 / weight - value * value, 0.0)
    if effective <= 1:
        return Estimate(value, None, None, n, effective)
    half = Z95 * math.sqrt(variance / (effective - 1))
    return Estimate(value, value - half, value + half, n, effective)


def chi2_p_value(statistic: float, df: int) -> float:
    """Upper tail of chi-square (Wilson–Hilferty cube-root normal approximation, good to ~1e-3)."""
    if df <= 0:
        return 1.0
    if statistic <= 0:
        return 1.0
    k = float(df)
    z = ((statistic / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index of two share vectors over the same bins."""
    total = 0.0
    for r, c in zip(reference, current):
        r, c = max(r, PSI_FLOOR), max(c, PSI_FLOOR)
        total += (c - r) * math.log(c / r)
    return total


# -- what to compare ----------------------------------------------------------------------


def model_schema(admin: Admin, model: str) -> ModelSchema:
    """The schema the server holds for ``model`` (the latest one landed)."""
    if not NAME_PATTERN.match(model):
        raise QueryFailed(f"{model!r} is not a model name")
    rows = admin.query("SELECT model, schema_json FROM models ORDER BY model").to_pylist()
    for row in rows:
        if row["model"] == model:
            return ModelSchema.from_canonical_json(row["schema_json"])
    known = ", ".join(row["model"] for row in rows) or "none"
    raise EdgeloopError(f"no model named {model!r} has landed (known: {known})")


def declare(schema: ModelSchema, *, prediction: str | None = None, truth: str | None = None,
            confidence: str | None = None, task: str | None = None) -> ModelSchema:
    """The schema with the CLI's declarations in place of its own; refused if they cannot be compared."""
    raw = schema.model_dump(exclude={"fields", "source"})
    for key, value in (("prediction_field", prediction), ("truth_field", truth),
                       ("confidence_field", confidence), ("task", task)):
        if value is not None:
            raw[key] = value
    try:
        declared = ModelSchema(**raw, fields=schema.fields, source=schema.source)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise EdgeloopError(f"model {schema.name!r}: {message}") from exc
    if declared.prediction_field is None or declared.truth_field is None:
        raise EdgeloopError(
            f"model {schema.name!r} does not declare what to compare: set prediction_field and truth_field "
            "in its schema, or pass --prediction and --truth"
        )
    return declared


# -- the window of rows -------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """Rows of one relation in a time window, reachable through one query function."""

    query: Query
    relation: str
    since: datetime | None = None
    until: datetime | None = None
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (our column name, the values it may hold)

    def only(self, column: str, values: Sequence[str]) -> Rows:
        """These rows where ``column`` (a name of ours, never the sender's) is one of ``values``."""
        return replace(self, filters=(*self.filters, (column, tuple(values))))

    def where(self, *more: str) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.since is not None:
            clauses.append("created_at >= ?::TIMESTAMPTZ")
            params.append(self.since.isoformat())
        if self.until is not None:
            clauses.append("created_at < ?::TIMESTAMPTZ")
            params.append(self.until.isoformat())
        for column, values in self.filters:
            clauses.append(f"list_contains(?::VARCHAR[], {column}::VARCHAR)")
            params.append(list(values))
        clauses.extend(more)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _group_expression(by: str) -> str:
    return {"model_version": "model_version", "device": "device", "none": "'all'"}[by]


def _base(schema: ModelSchema, rows: Rows, by: str) -> tuple[str, list[Any]]:
    """One row per prediction in the window: group, weight, prediction, truth, confidence, labelled."""
    regression = schema.comparison_task == "regression"
    cast = "DOUBLE" if regression else "VARCHAR"
    prediction = f"{quote(schema.prediction_field or '')}::{cast}"
    truth = f"{quote(schema.truth_field or '')}::{cast}"
    confidence = f"{quote(schema.confidence_field)}::DOUBLE" if schema.confidence_field else "NULL::DOUBLE"
    where, params = rows.where()
    labelled = "w IS NOT NULL AND pred IS NOT NULL AND truth IS NOT NULL"
    if regression:
        labelled += " AND isfinite(pred) AND isfinite(truth)"
    sql = (
        f"SELECT *, ({labelled}) AS labelled FROM ("
        f"SELECT {_group_expression(by)}::VARCHAR AS grp, {WEIGHT} AS w, "
        f"{prediction} AS pred, {truth} AS truth, {confidence} AS conf, device, created_at "
        f"FROM {rows.relation}{where})"
    )
    return sql, params


def _summary(schema: ModelSchema, rows: Rows, by: str, period: str | None = None) -> list[dict[str, Any]]:
    """Per group (and per ``period`` of created_at, UTC, if given): counts and the sums every headline figure needs."""
    base, params = _base(schema, rows, by)
    keys = "grp"
    if period is not None:
        keys += f", date_trunc('{period}', timezone('UTC', created_at))::DATE AS period"
    error = "(pred - truth)"
    regression = (
        f", sum(w * {error}) FILTER (WHERE labelled) AS sum_e, sum(w * abs{error}) FILTER (WHERE labelled) AS sum_abs, "
        f"sum(w * {error} * {error}) FILTER (WHERE labelled) AS sum_e2, "
        f"sum(w * {error} * {error} * {error} * {error}) FILTER (WHERE labelled) AS sum_e4"
        if schema.comparison_task == "regression" else ""
    )
    sql = (
        f"SELECT {keys}, count(w) AS collected, sum(w) AS collected_w, count(*) FILTER (WHERE labelled) AS labelled, "
        f"count(*) FILTER (WHERE w IS NULL) AS bad_weights, "
        f"coalesce(sum(w) FILTER (WHERE labelled), 0) AS labelled_w, "
        f"coalesce(sum(w * w) FILTER (WHERE labelled), 0) AS labelled_w2, count(DISTINCT device) AS devices, "
        f"coalesce(sum(w) FILTER (WHERE labelled AND pred = truth), 0) AS correct_w, "
        f"min(created_at) AS first_at, max(created_at) AS last_at{regression} "
        f"FROM ({base}) GROUP BY ALL ORDER BY ALL{f' LIMIT {MAX_POINTS + 1}' if period else ''}"
    )
    result = rows.query(sql, params).to_pylist()
    if period and len(result) > MAX_POINTS:
        raise QueryFailed(f"more than {MAX_POINTS} (version, {period}) points: narrow the window or choose a longer period")
    return result


def headline(task: str, row: dict[str, Any]) -> Estimate:
    """The headline figure of a summary row: weighted accuracy (Wilson) or MAE (normal), on n_eff."""
    weight, weight2, n = row["labelled_w"], row["labelled_w2"], row["labelled"]
    if task == "regression":
        if not n:
            return Estimate(None, None, None, 0, 0.0)
        return mean(row["sum_abs"], row["sum_e2"], weight, weight2, n)
    return proportion(row["correct_w"], weight, weight2, n)


def _confusion(schema: ModelSchema, rows: Rows, by: str) -> list[dict[str, Any]]:
    base, params = _base(schema, rows, by)
    sql = (
        f"SELECT grp, truth, pred, count(*) AS n, sum(w) AS w, sum(w * w) AS w2 FROM ({base}) "
        f"WHERE labelled GROUP BY ALL ORDER BY grp, truth, pred LIMIT {MAX_CONFUSION_CELLS + 1}"
    )
    cells = rows.query(sql, params).to_pylist()
    if len(cells) > MAX_CONFUSION_CELLS:
        raise QueryFailed(
            f"more than {MAX_CONFUSION_CELLS} (truth, prediction) pairs: narrow the window or group by less"
        )
    return cells


def _calibration(schema: ModelSchema, rows: Rows, by: str) -> list[dict[str, Any]]:
    base, params = _base(schema, rows, by)
    sql = (
        f"SELECT grp, least(greatest(floor(conf * {BUCKETS}), 0), {BUCKETS - 1})::INTEGER AS bucket, "
        f"count(w) AS collected, count(*) FILTER (WHERE labelled) AS labelled, "
        f"coalesce(sum(w) FILTER (WHERE labelled), 0) AS w, coalesce(sum(w * w) FILTER (WHERE labelled), 0) AS w2, "
        f"coalesce(sum(w * conf) FILTER (WHERE labelled), 0) AS w_conf, "
        f"coalesce(sum(w * conf * conf) FILTER (WHERE labelled), 0) AS w_conf2, "
        f"coalesce(sum(w) FILTER (WHERE labelled AND pred = truth), 0) AS w_correct "
        f"FROM ({base}) WHERE conf IS NOT NULL AND isfinite(conf) GROUP BY ALL ORDER BY grp, bucket"
    )
    return rows.query(sql, params).to_pylist()


def _timestamp_text(value: Any) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)


def _classification(group: Group, cells: list[dict[str, Any]]) -> None:
    """Per-class figures and the confusion matrix from a group's (truth, prediction) cells (accuracy is ``headline``'s)."""
    labels = sorted({c["truth"] for c in cells} | {c["pred"] for c in cells})
    group.confusion = {truth: {} for truth in labels}
    for c in cells:
        group.confusion[c["truth"]][c["pred"]] = c["n"]
    f1s = []
    for label in labels:
        predicted = [c for c in cells if c["pred"] == label]
        actual = [c for c in cells if c["truth"] == label]
        either = [c for c in cells if c["pred"] == label or c["truth"] == label]
        tp = [c for c in cells if c["pred"] == label and c["truth"] == label]
        tp_w = sum(c["w"] for c in tp)
        precision = proportion(tp_w, *_sums(predicted))
        recall = proportion(tp_w, *_sums(actual))
        share = proportion(tp_w, *_sums(either))  # q = TP/(TP+FP+FN); F1 = 2q/(1+q)
        f1 = Estimate(*(None if v is None else 2 * v / (1 + v) for v in (share.value, share.low, share.high)),
                      share.n, share.n_eff)
        if actual:
            f1s.append(f1.value or 0.0)
        group.classes.append(ClassFigures(label, sum(c["n"] for c in actual), precision, recall, f1))
    group.macro_f1 = sum(f1s) / len(f1s) if f1s else None


def _sums(cells: list[dict[str, Any]]) -> tuple[float, float, int]:
    return sum(c["w"] for c in cells), sum(c["w2"] for c in cells), sum(c["n"] for c in cells)


def _reliability(group: Group, buckets: list[dict[str, Any]], seed: str) -> None:
    """The reliability table, ECE, and ECE's interval by a parametric bootstrap over the buckets."""
    by_index = {b["bucket"]: b for b in buckets}
    total_w = sum(b["w"] for b in buckets)
    total_n = sum(b["labelled"] for b in buckets)
    parts = []  # (share, accuracy, its sd, confidence, its sd)
    for index in range(BUCKETS):
        b = by_index.get(index, {"collected": 0, "labelled": 0, "w": 0.0, "w2": 0.0, "w_conf": 0.0, "w_conf2": 0.0, "w_correct": 0.0})
        accuracy = proportion(b["w_correct"], b["w"], b["w2"], b["labelled"])
        confidence = b["w_conf"] / b["w"] if b["w"] > 0 else None
        share = b["w"] / total_w if total_w > 0 else 0.0
        group.reliability.append(Bucket(index / BUCKETS, (index + 1) / BUCKETS, b["collected"], b["labelled"],
                                        share, confidence, accuracy))
        if accuracy.value is not None and confidence is not None and accuracy.low is not None and accuracy.high is not None:
            effective = max(accuracy.n_eff, 1.0)
            conf_var = max(b["w_conf2"] / b["w"] - confidence * confidence, 0.0)
            # Wilson's width, not p(1-p)/n: a bucket with 5 of 5 right is not certain.
            parts.append((share, accuracy.value, (accuracy.high - accuracy.low) / (2 * Z95),
                          confidence, math.sqrt(conf_var / effective)))
    if not parts:
        return
    value = sum(share * abs(acc - conf) for share, acc, _, conf, _ in parts)
    rng = random.Random(seed)
    draws = sorted(
        sum(share * abs(min(1.0, max(0.0, rng.gauss(acc, acc_sd))) - rng.gauss(conf, conf_sd))
            for share, acc, acc_sd, conf, conf_sd in parts)
        for _ in range(BOOTSTRAP_DRAWS)
    )
    low, high = draws[int(0.025 * BOOTSTRAP_DRAWS)], draws[int(0.975 * BOOTSTRAP_DRAWS) - 1]
    total_w2 = sum(b["w2"] for b in buckets)
    group.ece = Estimate(value, min(low, value), max(high, value), total_n, n_eff(total_w, total_w2))


def _regression(group: Group, row: dict[str, Any]) -> None:
    weight, weight2, n = row["labelled_w"], row["labelled_w2"], row["labelled"]
    if not n:
        return
    group.bias = mean(row["sum_e"], row["sum_e2"], weight, weight2, n)
    group.mae = headline("regression", row)
    mse = mean(row["sum_e2"], row["sum_e4"], weight, weight2, n)

    def root(v: float | None) -> float | None:
        return None if v is None else math.sqrt(max(v, 0.0))

    group.rmse = Estimate(root(mse.value), root(mse.low), root(mse.high), n, mse.n_eff)


# -- over time ----------------------------------------------------------------------------


def choose_period(period: str, first: datetime | None, last: datetime | None) -> Literal["day", "week", "month"]:
    """``period``, or for ``auto`` the one that suits the span of the data: days to 31 days, weeks to a year, months."""
    if period not in PERIODS:
        raise QueryFailed(f"bucket must be one of {', '.join(PERIODS)}")
    if period != "auto":
        return period  # type: ignore[return-value]
    span_days = (last - first).total_seconds() / 86_400 if first is not None and last is not None else 0.0
    return "day" if span_days <= 31 else "week" if span_days <= 366 else "month"


def _period_start(day: date, period: str) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday, as DuckDB's date_trunc
    if period == "month":
        return day.replace(day=1)
    return day


def period_starts(period: str, first: date, last: date) -> list[date]:
    """The first day of every period from the one holding ``first`` to the one holding ``last``."""
    out, current = [], _period_start(first, period)
    while current <= last:
        out.append(current)
        if len(out) > MAX_PERIODS:
            raise QueryFailed(f"more than {MAX_PERIODS} {period}s in the window: narrow it or choose a longer period")
        if period == "month":
            current = (current.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            current += timedelta(days=7 if period == "week" else 1)
    return out


def _over_time(schema: ModelSchema, rows: Rows, task: str, period: Literal["day", "week", "month"],
               first: datetime, last: datetime) -> OverTime:
    """The headline figure per version per period, from the same aggregate and interval as the per-version one."""
    def utc_day(value: datetime) -> date:
        return value.astimezone(UTC).date()

    axis = period_starts(period, utc_day(first), utc_day(last))  # bounds the work before the query runs
    by_version: dict[str, list[Point]] = {}
    for row in _summary(schema, rows, "model_version", period):
        point = Point(row["period"].isoformat(), row["collected"], headline(task, row))
        by_version.setdefault(row["grp"], []).append(point)
    ordered = sorted(by_version.items(), key=lambda item: (item[1][0].start, item[0]))  # in order of appearance
    return OverTime(period, "accuracy" if task == "classification" else "MAE", [d.isoformat() for d in axis],
                    [Series(version, points) for version, points in ordered])


# -- drift --------------------------------------------------------------------------------


def _drift_fields(schema: ModelSchema) -> list[tuple[str, str, str]]:
    """(name, section, kind) of each field drift is measured on: inputs, then prediction and confidence."""
    chosen = [spec for spec in schema.stored_fields if spec.section == "inputs"]
    for name in (schema.prediction_field, schema.confidence_field):
        spec = schema.field(name) if name else None
        if spec is not None and spec.stored and spec not in chosen:
            chosen.append(spec)
    out = []
    for spec in chosen:
        if spec.type not in DRIFT_TYPES:
            continue  # vectors, blobs and timestamps: no per-field distribution to compare
        numeric = spec.type in NUMERIC_TYPES and spec.privacy.action != "hash"
        class_ids = spec.name == schema.prediction_field and schema.comparison_task == "classification"
        out.append((spec.name, spec.section, "numeric" if numeric and not class_ids else "categorical"))
    return out


def _numeric_bins(rows: Rows, name: str, edges: list[float]) -> tuple[list[float], int, float]:
    """Weighted shares of the bins (missing first, then one per gap between edges), n, n_eff."""
    column = f"{quote(name)}::DOUBLE"
    cases = " ".join(f"WHEN x <= ? THEN {i + 1}" for i in range(len(edges)))
    where, params = rows.where()
    sql = (
        f"SELECT CASE WHEN x IS NULL OR NOT isfinite(x) THEN 0 {cases} ELSE {len(edges) + 1} END AS bin, "
        f"count(*) AS n, sum(w) AS w, sum(w * w) AS w2 FROM ("
        f"SELECT {column} AS x, {WEIGHT} AS w FROM {rows.relation}{where}) WHERE w IS NOT NULL GROUP BY bin"
    )
    result = rows.query(sql, [*edges, *params]).to_pylist()
    weights = [0.0] * (len(edges) + 2)
    for row in result:
        weights[row["bin"]] = row["w"] or 0.0
    total = sum(weights)
    n = sum(row["n"] for row in result)
    effective = n_eff(total, sum(row["w2"] or 0.0 for row in result))
    return [w / total if total else 0.0 for w in weights], n, effective


def _values(rows: Rows, name: str) -> tuple[dict[str, float], int, float]:
    """Weighted share per value (the most common MAX_VALUES; the rest as '(other)'), n, n_eff."""
    where, params = rows.where()
    sql = (
        f"SELECT value, n, w, sum(n) OVER () AS total_n, sum(w) OVER () AS total_w, sum(w2) OVER () AS total_w2 FROM ("
        f"SELECT coalesce(x, '(missing)') AS value, count(*) AS n, sum(w) AS w, sum(w * w) AS w2 FROM ("
        f"SELECT {quote(name)}::VARCHAR AS x, {WEIGHT} AS w FROM {rows.relation}{where}) WHERE w IS NOT NULL GROUP BY 1"
        f") ORDER BY w DESC, value LIMIT {MAX_VALUES}"
    )
    result = rows.query(sql, params).to_pylist()
    if not result:
        return {}, 0, 0.0
    total = result[0]["total_w"] or 0.0
    shares = {row["value"]: row["w"] / total for row in result} if total else {}
    rest = 1.0 - sum(shares.values())
    if rest > 1e-12:
        shares["(other)"] = shares.get("(other)", 0.0) + rest
    return shares, int(result[0]["total_n"]), n_eff(total, result[0]["total_w2"] or 0.0)


def _flag(value: float | None, reference_n: float, current_n: float) -> str:
    if value is None or min(reference_n, current_n) < MIN_DRIFT_RECORDS:
        return "too few"
    return "drift" if value >= DRIFT_PSI else "watch" if value >= WATCH_PSI else "stable"


def _numeric_drift(reference: Rows, current: Rows, name: str, section: str) -> FieldDrift:
    where, params = reference.where(f"{quote(name)} IS NOT NULL", f"isfinite({quote(name)}::DOUBLE)")
    points = [i / DRIFT_BINS for i in range(1, DRIFT_BINS)]
    sql = f"SELECT quantile_disc({quote(name)}::DOUBLE, ?) AS edges FROM {reference.relation}{where}"
    found = reference.query(sql, [points, *params]).column("edges").to_pylist()[0] or []
    edges = sorted({float(e) for e in found if e is not None})
    ref, ref_n, ref_eff = _numeric_bins(reference, name, edges)
    cur, cur_n, cur_eff = _numeric_bins(current, name, edges)
    labels = ["missing"] + [f"<= {e:.6g}" for e in edges] + [f"> {edges[-1]:.6g}" if edges else "all"]
    keep = [i for i in range(len(labels)) if ref[i] > 0 or cur[i] > 0]
    bins = [DriftBin(labels[i], ref[i], cur[i]) for i in keep]
    return _drift_result(name, section, "numeric", bins, ref_n, ref_eff, cur_n, cur_eff)


def _categorical_drift(reference: Rows, current: Rows, name: str, section: str) -> FieldDrift:
    ref, ref_n, ref_eff = _values(reference, name)
    cur, cur_n, cur_eff = _values(current, name)
    ranked = sorted(set(ref) | set(cur), key=lambda v: (-max(ref.get(v, 0.0), cur.get(v, 0.0)), v))
    top = [v for v in ranked if v != "(other)"][:TOP_VALUES]
    bins = [DriftBin(v, ref.get(v, 0.0), cur.get(v, 0.0)) for v in top]
    rest_ref = 1.0 - sum(b.reference for b in bins) if ref else 0.0  # an empty window has no rest either
    rest_cur = 1.0 - sum(b.current for b in bins) if cur else 0.0
    if rest_ref > 1e-9 or rest_cur > 1e-9:
        bins.append(DriftBin("(other)", max(rest_ref, 0.0), max(rest_cur, 0.0)))
    result = _drift_result(name, section, "categorical", bins, ref_n, ref_eff, cur_n, cur_eff)
    if ref_eff > 0 and cur_eff > 0 and len(bins) > 1:
        # Chi-square test of homogeneity on counts scaled to each window's effective size.
        statistic, used = 0.0, 0
        for b in bins:
            pooled = (b.reference * ref_eff + b.current * cur_eff) / (ref_eff + cur_eff)
            if pooled <= 0:
                continue
            used += 1
            for share, size in ((b.reference, ref_eff), (b.current, cur_eff)):
                expected = pooled * size
                statistic += (share * size - expected) ** 2 / expected
        df = max(used - 1, 0)
        result = FieldDrift(**{**asdict(result), "bins": bins, "chi2": statistic, "chi2_df": df,
                               "p_value": chi2_p_value(statistic, df)})
    return result


def _drift_result(name: str, section: str, kind: Any, bins: list[DriftBin], ref_n: int, ref_eff: float,
                  cur_n: int, cur_eff: float) -> FieldDrift:
    value = psi([b.reference for b in bins], [b.current for b in bins]) if ref_n and cur_n else None
    noise = (len(bins) - 1) * (1 / ref_eff + 1 / cur_eff) if ref_eff > 0 and cur_eff > 0 else None
    return FieldDrift(name, section, kind, ref_n, cur_n, value, noise, _flag(value, ref_eff, cur_eff), bins=bins)


def reference_file(path: Path, columns: Sequence[str]) -> tuple[Query, duckdb.DuckDBPyConnection]:
    """A named export as a relation ``reference`` in a private in-memory DuckDB (only the columns drift needs)."""
    try:
        present = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise EdgeloopError(f"{path}: cannot read the reference export: {exc}") from exc
    wanted = [name for name in ("created_at", "sample_weight", *columns) if name in present]
    try:
        table = pq.read_table(path, columns=wanted)
    except (OSError, pa.ArrowException) as exc:
        raise EdgeloopError(f"{path}: cannot read the reference export: {exc}") from exc
    if "sample_weight" not in present:
        table = table.append_column("sample_weight", pa.repeat(pa.scalar(1.0), table.num_rows))
    for name in columns:
        if name not in present:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("reference", table)

    def query(sql: str, params: Sequence[Any]) -> pa.Table:
        try:
            return con.execute(sql, list(params) if params else None).to_arrow_table()
        except duckdb.Error as exc:
            raise QueryFailed(f"{path}: {str(exc).splitlines()[0]}") from exc

    return query, con


# -- the report ---------------------------------------------------------------------------


def build_report(
    admin: Admin,
    schema: ModelSchema,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Grouping = "model_version",
    reference_since: datetime | None = None,
    reference_until: datetime | None = None,
    reference_path: Path | None = None,
    now: datetime | None = None,
    bucket: Period = "auto",
    version: str | None = None,
    max_groups: int | None = None,
    offset: int = 0,
) -> Report:
    """Compute the field report of a model whose schema declares what to compare (see ``declare``).

    ``version``: only that model version's rows. ``max_groups``: only that many groups from ``offset`` on, those
    with the most predictions first, and the series over time of only their versions (of the versions with the
    most predictions when not grouped by version); the totals still count every group.
    """
    if by not in GROUPINGS:
        raise QueryFailed(f"--by must be one of {', '.join(GROUPINGS)}")
    if bucket not in PERIODS:
        raise QueryFailed(f"--bucket must be one of {', '.join(PERIODS)}")
    if since is not None and until is not None and since >= until:
        raise QueryFailed(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    training = quote(schema.name + "_training")
    scope: tuple[tuple[str, tuple[str, ...]], ...] = (("model_version", (version,)),) if version is not None else ()
    rows = Rows(admin.query, training, since, until, scope)
    task = schema.comparison_task or "classification"
    report = Report(
        model=schema.name, task=task, prediction_field=schema.prediction_field or "",
        truth_field=schema.truth_field or "", confidence_field=schema.confidence_field if task == "classification" else None,
        by=by, since=_timestamp_text(since), until=_timestamp_text(until), weighted=True, groups=[], version=version,
    )
    every = _summary(schema, rows, by)
    report.groups_total, report.groups_offset = len(every), offset
    report.collected_total = sum(row["collected"] for row in every)
    report.labelled_total = sum(row["labelled"] for row in every)
    bad_weights = sum(row["bad_weights"] for row in every)
    summary = every[offset:]
    if max_groups is not None:
        summary = sorted(every, key=lambda row: (-row["collected"], row["grp"] or ""))[offset:offset + max_groups]
        _shown_note(report, by, summary)
    if len(summary) < len(every) and by != "none":
        rows = rows.only(_group_expression(by), [row["grp"] for row in summary])
    groups: dict[str, Group] = {}
    for row in summary:
        group = Group(
            key=row["grp"], collected=row["collected"], labelled=row["labelled"],
            coverage=row["labelled"] / row["collected"] if row["collected"] else None,
            weighted_coverage=row["labelled_w"] / row["collected_w"] if row["collected_w"] else None,
            devices=row["devices"], first_at=_timestamp_text(row["first_at"]), last_at=_timestamp_text(row["last_at"]),
        )
        groups[group.key] = group
        if task == "regression":
            _regression(group, row)
        elif row["labelled"]:
            group.accuracy = headline(task, row)
    if task == "classification" and groups:
        cells: dict[str, list[dict[str, Any]]] = {}
        for cell in _confusion(schema, rows, by):
            cells.setdefault(cell["grp"], []).append(cell)
        for key, group in groups.items():
            if cells.get(key):
                _classification(group, cells[key])
        if schema.confidence_field:
            buckets: dict[str, list[dict[str, Any]]] = {}
            for row in _calibration(schema, rows, by):
                buckets.setdefault(row["grp"], []).append(row)
            for key, group in groups.items():
                if buckets.get(key):
                    _reliability(group, buckets[key], seed=f"{schema.name}/{key}")
    report.groups = list(groups.values())
    firsts = [row["first_at"] for row in summary if row["first_at"] is not None]
    lasts = [row["last_at"] for row in summary if row["last_at"] is not None]
    if firsts and lasts:
        first, last = min(firsts), max(lasts)
        if bucket == "auto" and since is None and (last - first).days > MONTHS_DAYS:
            # Devices date their rows (year 1, year 9999): without a --since the series is the latest months to now.
            end = min(last, until or now or datetime.now(UTC))
            start = max(first, end - timedelta(days=MONTHS_DAYS))
            report.notes.append(
                f"the data spans {first.date()} to {last.date()}, more than {MAX_PERIODS} months: the series over time "
                f"shows {start.date()} to {end.date()} (give --since and --until, or since and until, for another span)")
            first, last = start, end
        series_rows = rows
        if max_groups is not None and by != "model_version":
            series_rows = rows.only("model_version", _top_versions(rows, max_groups))
        report.over_time = _over_time(schema, series_rows, task, choose_period(bucket, first, last), first, last)
    if bad_weights:
        report.notes.append(f"{bad_weights} predictions with a sample_weight that is not a finite number >= 1 were left out")
    if not every:
        report.notes.append("no predictions in this window")

    # Drift needs no labels: read the predictions table, not the view that joins each one to its feedback.
    predictions = quote(schema.name)
    reference, closer = _reference(schema, admin, predictions, since, until, reference_since, reference_until,
                                   reference_path, now, report, scope)
    try:
        if reference is not None:
            window = Rows(admin.query, predictions, since, until, scope)
            for name, section, kind in _drift_fields(schema):
                measure = _numeric_drift if kind == "numeric" else _categorical_drift
                report.drift.append(measure(reference, window, name, section))
    finally:
        if closer is not None:
            closer.close()
    return report


def _reference(schema: ModelSchema, admin: Admin, relation: str, since: datetime | None, until: datetime | None,
               reference_since: datetime | None, reference_until: datetime | None, reference_path: Path | None,
               now: datetime | None, report: Report,
               scope: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> tuple[Rows | None, duckdb.DuckDBPyConnection | None]:
    """Where drift compares against: a named export, a date range, or the window of equal length before --since."""
    if reference_path is not None:
        if reference_since or reference_until:
            raise QueryFailed("give a reference file or a reference date range, not both")
        query, con = reference_file(reference_path, [name for name, _, _ in _drift_fields(schema)])
        report.reference = f"export file {reference_path.name}"
        return Rows(query, "reference"), con
    if reference_since is None and reference_until is None:
        if since is None:
            report.notes.append(
                "no drift: give a reference (--reference FILE, or --reference-since/--reference-until), "
                "or --since to compare with the window of equal length before it"
            )
            return None, None
        end = until or now or datetime.now(UTC)
        try:
            reference_since = since - (end - since)
        except OverflowError:  # the window before a --since near year 1 starts at year 1
            reference_since = EARLIEST
        reference_until = since
    report.reference = f"{_timestamp_text(reference_since) or 'the start'} .. {_timestamp_text(reference_until) or 'now'}"
    return Rows(admin.query, relation, reference_since, reference_until, scope), None


GROUP_NAMES = {"model_version": "versions", "device": "devices", "none": "groups"}


def _shown_note(report: Report, by: str, shown: list[dict[str, Any]]) -> None:
    """Say which groups a capped report shows, and what the others hold, so its totals stay those of all."""
    if len(shown) == report.groups_total:
        return
    if not shown:
        report.notes.append(f"offset {report.groups_offset:,} is past the last of the window's "
                            f"{report.groups_total:,} {GROUP_NAMES[by]}")
        return
    collected = sum(row["collected"] for row in shown)
    first = report.groups_offset + 1
    report.notes.append(
        f"showing {GROUP_NAMES[by]} {first:,}-{report.groups_offset + len(shown):,} of {report.groups_total:,} "
        f"(those with the most predictions first): they hold {collected:,} of the window's "
        f"{report.collected_total:,} predictions")


def _top_versions(rows: Rows, limit: int) -> list[str]:
    """The ``limit`` model versions with the most rows."""
    where, params = rows.where()
    sql = (f"SELECT model_version::VARCHAR AS version FROM {rows.relation}{where} GROUP BY 1 "
           f"ORDER BY count(*) DESC, 1 LIMIT {int(limit)}")
    return rows.query(sql, params).column("version").to_pylist()

