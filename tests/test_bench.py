"""The benchmark command's smoke test: `scripts/bench --quick` produces the table and numbers."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest

from bench import readme
from bench.harness import Goal, Row
from bench.report import fold, render
from bench.rows import ROWS

ROOT = Path(__file__).resolve().parent.parent


# Rows that take seconds in --quick; every row's quick run (~3 minutes on 2 cores) is a soak.
SMOKE_ROWS = (1, 3, 7, 8)


def quick_bench(out: Path, only: tuple[int, ...] = ()) -> dict:
    """``scripts/bench --quick`` through its bash entry point (so the bench extras install as users get them)."""
    command = ["bash", str(ROOT / "scripts" / "bench"), "--quick", "--out", str(out)]
    if only:
        command += ["--only", ",".join(map(str, only))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=590, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "edgeloop" in result.stdout and "reference (same run)" in result.stdout
    report = json.loads((out / "latest.json").read_text())
    assert report["quick"] is True and report["repeats"] == 1
    assert {"cpu", "cores", "memory_gib", "python", "pyarrow", "duckdb", "date"} <= report["machine"].keys()
    for row in report["rows"]:
        assert not row["unavailable"], f"row {row['number']} {row['what']}: {row['unavailable']}"
        figures = [row["edgeloop"]] + ([row["reference"], row["ratio"]] if row["reference_name"] else [])
        for figure in figures:
            assert isinstance(figure, (int, float)) and math.isfinite(figure), (row, result.stdout)
        assert len(row["runs"]) == 1 and row["runs"][0]["edgeloop"] == row["edgeloop"]
    return report


def assert_scaling_curve(report: dict) -> None:
    points = report["summaries"]["scaling"]["points"]
    devices = [point["devices"] for point in points]
    assert len(devices) == 3 and devices == sorted(devices)
    assert all(point["accepted_p99_ms"] > 0 for point in points)
    assert Path(report["summaries"]["scaling"]["plot"]).is_file()


@pytest.mark.timeout(300)
def test_quick_bench_of_the_quick_rows_prints_the_table_and_every_figure_is_a_number(tmp_path):
    """Rows 1, 3, 7 and 8 of a quick run carry numeric figures and the scaling curve (never checks a threshold)."""
    report = quick_bench(tmp_path, SMOKE_ROWS)
    assert {row["number"] for row in report["rows"]} == set(SMOKE_ROWS)
    assert_scaling_curve(report)


@pytest.mark.soak
@pytest.mark.timeout(600)  # every row, each starting real servers (row 13 a PostgreSQL too)
def test_quick_bench_prints_the_table_and_every_figure_is_a_number(tmp_path):
    """Every row of the quick run carries numeric figures (never checks a threshold)."""
    report = quick_bench(tmp_path)
    assert {row["number"] for row in report["rows"]} == {number for module in ROWS for number in module.NUMBERS}
    assert_scaling_curve(report)


def test_every_run_is_kept_and_the_table_shows_the_median_with_min_and_max():
    """Three runs of a row fold into their median with min–max, every run kept, and the target judged on the median."""
    runs = [
        [Row(4, "ingest", "/s", edgeloop, "DuckDB", reference, goals=(Goal("ratio", ">=", 0.7),))]
        for edgeloop, reference in ((60.0, 100.0), (90.0, 100.0), (80.0, 100.0))
    ]
    (entry,) = fold(runs)
    assert entry["edgeloop"] == 80.0 and entry["edgeloop_range"] == [60.0, 90.0]
    assert entry["ratio"] == pytest.approx(0.8) and entry["met"] is True
    assert [run["edgeloop"] for run in entry["runs"]] == [60.0, 90.0, 80.0]
    line = render([entry]).splitlines()[-1]
    assert "80.0 /s (60.0–90.0)" in line and "0.80x (0.60–0.90)" in line and "≥ 0.7x" in line and line.endswith("yes")


def test_the_device_package_does_not_ship_the_simulator():
    """The simulated models live in bench/, which a device install does not carry."""
    assert importlib.util.find_spec("edgeloop.collector.simulator") is None
    assert importlib.util.find_spec("bench.simulator") is not None


def test_the_readme_figures_are_what_the_renderer_makes_of_the_committed_runs():
    """README.md's benchmark figures are exactly what `scripts/bench --readme` renders from bench/readme-run.json, full-size runs only."""
    figures = json.loads(readme.RUN.read_text())
    # One repetition is allowed: on the shared machine a row is run once at a time, and the README says so.
    assert figures["sources"] and all(not source["quick"] and source["repeats"] >= 1 for source in figures["sources"])
    assert figures["rows"] and all(row["runs"] for row in figures["rows"])
    assert readme.render_block(figures) in readme.README.read_text()

def test_a_fresh_run_replaces_only_its_own_rows_in_the_readme_figures(tmp_path, monkeypatch):
    """`--readme` over the committed figures and a run of one row keeps every other row and the one row's new figures."""
    committed = json.loads(readme.RUN.read_text())
    number = committed["rows"][0]["number"]
    row = {**committed["rows"][0], "edgeloop": 123456.0, "runs": [{"run": 1}]}
    fresh = {"quick": False, "repeats": 3, "complete": True, "duration_s": 60.0,
             "machine": committed["sources"][0]["machine"], "rows": [row], "summaries": {}}
    (tmp_path / "figures.json").write_text(json.dumps(committed))
    (tmp_path / "latest.json").write_text(json.dumps(fresh))
    (tmp_path / "README.md").write_text(f"before\n{readme.START}\nold\n{readme.END}\nafter\n")
    monkeypatch.setattr(readme, "RUN", tmp_path / "out.json")
    monkeypatch.setattr(readme, "README", tmp_path / "README.md")
    assert readme.regenerate([tmp_path / "figures.json", tmp_path / "latest.json"]) == 0
    figures = json.loads((tmp_path / "out.json").read_text())
    assert [r["edgeloop"] for r in figures["rows"] if r["number"] == number] == [123456.0]
    others = sorted((r["number"], r["what"]) for r in committed["rows"] if r["number"] != number)
    assert sorted((r["number"], r["what"]) for r in figures["rows"] if r["number"] != number) == others
    assert figures["sources"][-1]["numbers"] == [number] and figures["sources"][-1]["repeats"] == 3
    assert number not in {n for source in figures["sources"][:-1] for n in source["numbers"]}
    assert figures["summaries"] == committed["summaries"]
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "123,456" in text


def test_the_readme_refuses_a_quick_run(tmp_path, capsys):
    """A --quick run's figures never reach the README: the renderer refuses them with a one-line reason."""
    quick = tmp_path / "latest.json"
    quick.write_text(json.dumps({"quick": True, "rows": []}))
    assert readme.regenerate([quick]) == 1
    assert "refusing a --quick run" in capsys.readouterr().err
