"""The benchmark command's smoke test: `scripts/bench --quick` produces the table and numbers."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_quick_bench_prints_the_table_and_every_figure_is_a_number(tmp_path):
    """Every row of the quick run carries numeric figures (never checks a threshold)."""
    # Through the bash entry point, so the bench extras are installed the way users get them.
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bench"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=230,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "edgeloop" in result.stdout and "reference (same run)" in result.stdout
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["quick"] is True
    assert {"cpu", "cores", "memory_gib", "python", "pyarrow", "duckdb", "date"} <= report["machine"].keys()
    rows = report["rows"]
    assert {row["number"] for row in rows} == {1, 2, 3, 4, 5, 6, 7}
    for row in rows:
        assert not row["unavailable"], f"row {row['number']} {row['what']}: {row['unavailable']}"
        figures = [row["edgeloop"]] + ([row["reference"], row["ratio"]] if row["reference_name"] else [])
        for figure in figures:
            assert isinstance(figure, (int, float)) and math.isfinite(figure), (row, result.stdout)
    devices = [point["devices"] for point in report["scaling"]]
    assert len(devices) == 3 and devices == sorted(devices)
    assert Path(report["plot"]).is_file()
