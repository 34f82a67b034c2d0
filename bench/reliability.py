"""``./scripts/bench --only reliability``: the fault-injection soaks and their figures.

Not a row of the table: there is no reference to divide by. Runs ``pytest -m soak
tests/reliability`` (the long versions of the suite's fault tests); each soak writes its
figures (faults injected per kind, records acknowledged, lost, landed twice) to
``DIR/reliability.json``, printed here as one table. README "Reliability" quotes the last run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.harness import ROOT

REPORT_ENV = "EDGELOOP_RELIABILITY_REPORT"  # read by tests/reliability/report.py


def run(out: Path) -> int:
    """Run the soaks; print their figures; the exit code is pytest's (0: every soak held)."""
    report = out / "reliability.json"
    report.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "soak", "-p", "no:cacheprovider", "-q", "-rA",
               str(ROOT / "tests" / "reliability"), str(ROOT / "tests" / "ingest" / "lake")]
    code = subprocess.run(command, cwd=ROOT, env={**os.environ, REPORT_ENV: str(report)}).returncode
    runs = json.loads(report.read_text()) if report.exists() else []
    print(render(runs))
    return code


def render(runs: list[dict]) -> str:
    """One line per soak: what was injected, how many records were acknowledged, lost and landed twice."""
    lines = [f"{'soak':<40}  {'faults injected':<62}  {'acknowledged':>12}  {'lost':>4}  {'twice':>5}"]
    for entry in runs:
        faults = ", ".join(f"{kind} {count:,}" for kind, count in entry["faults"].items())
        lines.append(
            f"{entry['name']:<40}  {faults:<62}  {entry['acknowledged']:>12,}  {entry['lost']:>4}  {entry['duplicated']:>5}"
        )
    return "\n".join(lines)
