"""The runs' rows folded into one table: the median of each figure with its min–max, and whether the target is met."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Goal, Row


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fold(runs: list[list[Row]]) -> list[dict[str, Any]]:
    """One entry per row (in first-seen order, by number): every run's figures and their median, min and max."""
    keys: dict[tuple[int, str, str], list[tuple[int, Row]]] = {}
    for index, rows in enumerate(runs):
        for row in rows:
            keys.setdefault(row.key, []).append((index, row))
    folded = []
    for (number, what, reference_name), seen in keys.items():
        first = seen[0][1]
        measured = [row for _, row in seen if row.edgeloop is not None]
        edgeloop = _spread([row.edgeloop for row in measured])
        reference = _spread([row.reference for row in measured if row.reference is not None])
        ratio = _spread([row.ratio for row in measured if row.ratio is not None])
        goals = [Goal(**goal) if isinstance(goal, dict) else goal for goal in first.goals]
        median_edgeloop = edgeloop["median"] if edgeloop else None
        median_ratio = ratio["median"] if ratio else None
        verdicts = [goal.met(median_edgeloop, median_ratio) for goal in goals]
        failed = [row.unavailable for _, row in seen if row.edgeloop is None and row.unavailable]
        folded.append(
            {
                "number": number,
                "what": what,
                "unit": first.unit,
                "reference_name": reference_name,
                "edgeloop": median_edgeloop,
                "edgeloop_range": [edgeloop["min"], edgeloop["max"]] if edgeloop else None,
                "reference": reference["median"] if reference else None,
                "reference_range": [reference["min"], reference["max"]] if reference else None,
                "ratio": median_ratio,
                "ratio_range": [ratio["min"], ratio["max"]] if ratio else None,
                "target": ", ".join(goal.text(first.unit) for goal in goals),
                "goals": [vars(goal) for goal in goals],
                "met": None if not goals or None in verdicts else all(verdicts),
                "note": measured[-1].note if measured else first.note,
                "unavailable": "" if measured else (failed[0] if failed else "no run measured it"),
                "failed_runs": len(seen) - len(measured),
                "runs": [{"run": index + 1, **row.as_dict()} for index, row in seen],
            }
        )
    return sorted(folded, key=lambda entry: entry["number"])


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def _figure(value: float | None, spread: list[float] | None, unit: str) -> str:
    text = f"{fmt(value)}{f' {unit}' if unit else ''}"
    if spread and fmt(spread[0]) != fmt(spread[1]):
        text += f" ({fmt(spread[0])}–{fmt(spread[1])})"
    return text


def _ratio(value: float | None, spread: list[float] | None) -> str:
    if value is None:
        return "—"
    text = f"{value:.2f}x"
    if spread and f"{spread[0]:.2f}" != f"{spread[1]:.2f}":
        text += f" ({spread[0]:.2f}–{spread[1]:.2f})"
    return text


def cells(entry: dict[str, Any], *, width: int = 110) -> tuple[str, ...]:
    """The table's cells for one folded row: #, measured, edgeloop, reference, ratio, target, met."""
    unit = entry["unit"]
    reason = " ".join(entry["unavailable"].split())
    reason = reason if len(reason) <= width else reason[: width - 3] + "..."  # the whole reason is in the JSON
    if entry["edgeloop"] is None:
        edgeloop = f"not available: {reason}"
    else:
        edgeloop = _figure(entry["edgeloop"], entry["edgeloop_range"], unit)
    if not entry["reference_name"]:
        reference = "—"
    elif entry["reference"] is None:
        reference = f"{entry['reference_name']}: not available" + (f" ({reason})" if entry["edgeloop"] is not None else "")
    else:
        reference = f"{entry['reference_name']}: {_figure(entry['reference'], entry['reference_range'], unit)}"
    ratio = _ratio(entry["ratio"], entry["ratio_range"])
    met = {True: "yes", False: "no", None: ""}[entry["met"]]
    return (str(entry["number"]), entry["what"], edgeloop, reference, ratio, entry["target"], met)


HEADER = ("#", "measured", "edgeloop", "reference (same run)", "ratio", "target", "met")


def render(entries: list[dict[str, Any]]) -> str:
    """The table as aligned text, for the terminal."""
    lines = [cells(entry) for entry in entries]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(HEADER)]
    out = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    return "\n".join(out)


def render_markdown(entries: list[dict[str, Any]]) -> str:
    """The table as Markdown, for the README."""
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for entry in entries:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(entry, width=400)) + " |")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    import duckdb
    import psutil
    import pyarrow as pa

    from bench.simulator import thumbnails_are_jpeg

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__,
        "edgeloop_commit": commit.stdout.strip() or None,
        "thumbnails": "JPEG (Pillow)" if thumbnails_are_jpeg() else "synthetic (no Pillow)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def describe(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}, {m['cores_usable']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"pyarrow {m['pyarrow']}, DuckDB {m['duckdb']}, {m['date'][:10]}"
    )
