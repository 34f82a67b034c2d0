"""Run edgeloop's benchmarks and print one table: ``./scripts/bench [--quick] [--only 3,6] [--repeat N] [--out DIR]``.

Every row is measured ``--repeat`` times (3; once with ``--quick``) and the table shows the
median with min–max. The figures of every run, the machine's description and each row's
details go to ``DIR/latest.json`` (default ``bench/results/``, not committed);
``./scripts/bench --readme`` then renders the README's table from that file.
A row that cannot be measured here says "not available" and why.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.harness import ROOT, Bench, Row, Unavailable
from bench.report import describe, fold, machine, render
from bench.rows import ROWS


def measure(module: ModuleType, *, quick: bool, repeats: int, work: Path) -> tuple[list[list[Row]], list[dict[str, Any]], list[str]]:
    """Every run of one row module: its rows, its details and why any run failed."""
    name = module.__name__.rsplit(".", 1)[-1]
    runs: list[list[Row]] = []
    details: list[dict[str, Any]] = []
    failures: list[str] = []
    for index in range(repeats):
        bench = Bench(quick=quick, work=work / f"{name}-{index + 1}")
        bench.log(f"row {'/'.join(map(str, module.NUMBERS))} ({module.TITLE}): run {index + 1} of {repeats}")
        started = time.perf_counter()
        try:
            runs.append(module.measure(bench))
        except Unavailable as exc:  # a property of the machine: repeating will not help
            failures.append(str(exc))
            break
        except Exception as exc:  # one broken row must not hide the others' figures
            traceback.print_exc()
            failures.append(f"failed: {type(exc).__name__}: {exc}")
        bench.details["seconds"] = round(time.perf_counter() - started, 1)
        details.append(bench.details)
        bench.log(f"row {'/'.join(map(str, module.NUMBERS))}: {bench.details['seconds']} s")
    if not runs:
        runs.append([Row(number, module.TITLE, "", None, unavailable=failures[-1]) for number in module.NUMBERS])
    return runs, details, failures


def write(out: Path, quick: bool, repeats: int, info: dict[str, Any], duration_s: float, entries: list[dict[str, Any]],
          summaries: dict[str, Any], details: dict[str, Any], *, complete: bool) -> None:
    """DIR/latest.json: every run's figures so far, folded rows, summaries, the machine."""
    result = {
        "quick": quick,
        "repeats": repeats,
        "complete": complete,
        "machine": info,
        "duration_s": round(duration_s, 1),
        "rows": sorted(entries, key=lambda entry: entry["number"]),
        "summaries": summaries,
        "details": details,
    }
    (out / "latest.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description="Run edgeloop's benchmarks and print one table.")
    parser.add_argument("--quick", action="store_true", help="a small version, each row once (the suite's smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where latest.json and the plot go")
    parser.add_argument("--only", default="", help="comma-separated row numbers to run, e.g. 3,6; 'reliability' runs the fault soaks, 'dashboard' times the dashboard at fleet scale")
    parser.add_argument("--repeat", type=int, help="runs per row (default 3, 1 with --quick)")
    parser.add_argument(
        "--readme", nargs="*", type=Path, metavar="JSON",
        help="only render README.md's figures from these runs' JSON, later rows replacing earlier ones of the same "
        "number (default: the committed bench/readme-run.json, then DIR/latest.json)",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server and agent a row started is stopped by its block.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.readme is not None:
        from bench.readme import RUN, regenerate

        return regenerate(args.readme or [RUN, args.out / "latest.json"])
    names = {n.strip() for n in args.only.split(",") if n.strip()}
    if "dashboard" in names:
        from bench.dashboard import run as run_dashboard

        args.out.mkdir(parents=True, exist_ok=True)
        code = run_dashboard(args.out)
        names.discard("dashboard")
        if code or not names:
            return code
    if "reliability" in names:
        from bench.reliability import run

        args.out.mkdir(parents=True, exist_ok=True)
        code = run(args.out)
        names.discard("reliability")
        if code or not names:
            return code
    only = {int(n) for n in names} or None
    repeats = args.repeat or (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeat must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = machine()
    entries: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    summaries: dict[str, Any] = {}
    selected = [module for module in ROWS if not only or only & set(module.NUMBERS)]
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as work:
        for done, module in enumerate(selected, 1):
            name = module.__name__.rsplit(".", 1)[-1]
            runs, module_details, failures = measure(module, quick=args.quick, repeats=repeats, work=Path(work))
            for entry in fold(runs):
                entries.append({**entry, "failed_runs": len(failures), "failures": failures})
            details[name] = module_details
            if hasattr(module, "summarize") and module_details:
                summaries[name] = module.summarize(module_details, args.out, describe(info))
            # Written after every row, so a long run that is stopped keeps what it measured.
            write(args.out, args.quick, repeats, info, time.perf_counter() - started, entries, summaries, details,
                  complete=done == len(selected))
    entries.sort(key=lambda entry: entry["number"])
    duration = time.perf_counter() - started
    title = f"edgeloop bench{' --quick' if args.quick else ''} on {describe(info)} ({duration:.0f} s, {repeats} run{'s' * (repeats > 1)} per row)"
    print(f"\n{title}\n")
    print(render(entries))
    for summary in summaries.values():
        if summary.get("text"):
            print(f"\n{summary['text']}")
    print(f"bench: wrote {args.out / 'latest.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
