"""Figures of a fault-injection run, for ``./scripts/bench --only reliability`` and the README's "Reliability" section.

Each soak appends one entry (faults injected per kind, records acknowledged, lost, landed
twice) to the JSON file named by ``EDGELOOP_RELIABILITY_REPORT``, which the benchmark
command sets; without it (a plain pytest run) nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPORT_ENV = "EDGELOOP_RELIABILITY_REPORT"  # set by bench/reliability.py


def record(name: str, faults: dict[str, int], *, acknowledged: int, lost: int, duplicated: int) -> None:
    """Append one run's figures to the report file, if the benchmark command asked for one."""
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append({"name": name, "faults": faults, "acknowledged": acknowledged, "lost": lost, "duplicated": duplicated})
    path.write_text(json.dumps(runs, indent=2) + "\n")
