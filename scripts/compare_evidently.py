"""edgeloop's field report beside Evidently's classification and drift presets, on the same rows.

Run by ./scripts/compare-evidently (a throw-away venv with Evidently; it is heavy and not a
dependency of edgeloop). The rows are the tests' generated field data (tests/ingest/report_data.py),
whose true figures are known: version 2.0.3 is 80% accurate and 0.05 over-confident, 2.1.0
is 90% accurate and calibrated, uncertainty sampling kept every prediction under 0.8
confidence and one in four of the rest (sample_weight 4), and in the second week the
temperature rose by one standard deviation and one operator took 60% of the shifts.
Prints Markdown tables: the README's "Field performance" section shows them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
from evidently import DataDefinition, Dataset, MulticlassClassification, Report  # noqa: E402
from evidently.presets import ClassificationPreset, DataDriftPreset  # noqa: E402

from edgeloop.ingest.admin import LocalAdmin  # noqa: E402
from edgeloop.ingest.export import training_query  # noqa: E402
from edgeloop.ingest.report import build_report, declare, model_schema  # noqa: E402
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry  # noqa: E402
from tests.ingest.report_data import START, VERSIONS, WEEK, land, vibration_rows  # noqa: E402

DRIFT_COLUMNS = ("temperature_c", "rpm", "operator_email", "lat", "lon", "predicted_class", "confidence")
CATEGORICAL = ("operator_email", "predicted_class")


def _metrics(snapshot: Any) -> dict[str, Any]:
    return {m["metric_name"]: m["value"] for m in snapshot.dict()["metrics"]}


def _frame(admin: LocalAdmin, since, until, labelled: bool) -> pd.DataFrame:
    sql, params = training_query("vibration", since=since, until=until, labeled_only=labelled, truth="true_class")
    table = admin.query(sql, params)
    keep = ["model_version", "sample_weight", "true_class", *DRIFT_COLUMNS]
    return table.select(keep).to_pandas()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="keep the generated DuckDB file here")
    args = parser.parse_args()
    schema = SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]
    with tempfile.TemporaryDirectory() as folder:
        predictions, feedback = vibration_rows(schema)
        db = land(Path(folder), schema, predictions + feedback)
        if args.keep:
            args.keep.write_bytes(db.read_bytes())
        admin = LocalAdmin(db, read_only=True)
        try:
            since, until = START + WEEK, START + 2 * WEEK
            report = build_report(admin, declare(model_schema(admin, "vibration")), since=since, until=until)
            current = _frame(admin, since, until, labelled=False)
            reference = _frame(admin, START, since, labelled=False)
        finally:
            admin.close()

    definition = DataDefinition(
        classification=[MulticlassClassification(target="true_class", prediction_labels="predicted_class")],
        numerical_columns=[c for c in DRIFT_COLUMNS if c not in CATEGORICAL],
        categorical_columns=[*CATEGORICAL, "true_class"],
    )
    known = {v.name: v.accuracy for v in VERSIONS}
    print("### Classification, second week, per version\n")
    print("| version | labelled | true accuracy | edgeloop accuracy [95%] | Evidently accuracy | edgeloop F1 `normal` | Evidently F1 `normal` |")
    print("|---|---|---|---|---|---|---|")
    for group in report.groups:
        rows = current[(current.model_version == group.key) & current.true_class.notna()]
        evidently = _metrics(Report([ClassificationPreset()]).run(current_data=Dataset.from_pandas(rows, data_definition=definition)))
        accuracy = next(v for k, v in evidently.items() if k.startswith("Accuracy"))
        f1 = next(v for k, v in evidently.items() if k.startswith("F1ByLabel"))
        mine_f1 = next((c.f1.value for c in group.classes if c.label == "normal"), None)
        a = group.accuracy
        print(f"| {group.key} | {group.labelled} | {known[group.key]:.2f} | {a.value:.3f} [{a.low:.3f}, {a.high:.3f}] | "
              f"{accuracy:.3f} | {mine_f1:.3f} | {f1.get('normal', float('nan')):.3f} |")

    ref_ds = Dataset.from_pandas(reference, data_definition=definition)
    cur_ds = Dataset.from_pandas(current, data_definition=definition)
    default = _metrics(Report([DataDriftPreset(columns=list(DRIFT_COLUMNS))]).run(current_data=cur_ds, reference_data=ref_ds))
    by_psi = _metrics(Report([DataDriftPreset(columns=list(DRIFT_COLUMNS), method="psi")]).run(current_data=cur_ds, reference_data=ref_ds))
    drift = {d.field: d for d in report.drift}
    print("\n### Drift, second week against the first\n")
    print("| field | edgeloop PSI (flag) | Evidently default: method, value (drift?) | Evidently PSI (drift?) |")
    print("|---|---|---|---|")
    for column in DRIFT_COLUMNS:
        name, value = next((k, v) for k, v in default.items() if k.startswith(f"ValueDrift(column={column},"))
        method, threshold = name.split("method=")[1].split(",threshold=")
        threshold = float(threshold.rstrip(")"))
        drifted = value < threshold if "p_value" in method else value >= threshold
        psi_name, psi_value = next((k, v) for k, v in by_psi.items() if k.startswith(f"ValueDrift(column={column},"))
        psi_threshold = float(psi_name.split(",threshold=")[1].rstrip(")"))
        mine = drift[column]
        print(f"| {column} | {mine.psi:.3f} ({mine.flag}) | {method}: {value:.3g} ({'yes' if drifted else 'no'}) | "
              f"{psi_value:.3f} ({'yes' if psi_value >= psi_threshold else 'no'}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
