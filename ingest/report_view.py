"""Views of a field Report: aligned text for a terminal, JSON, and one self-contained HTML file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson

from edgeloop.ingest.choices import REPORT_FORMATS
from edgeloop.ingest.report import Estimate, FieldDrift, Group, Report
from edgeloop.units import html_text, printable

__all__ = ["REPORT_FORMATS", "render_report"]

ReportFormat = Literal["table", "json", "html"]
TEXT_CLASSES = 12  # per-class rows and confusion columns shown in a terminal (HTML: 20); JSON has all


def render_report(report: Report, fmt: ReportFormat) -> bytes:
    if fmt == "json":
        return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"
    if fmt == "html":
        from edgeloop.ingest.report_html import render_html

        return render_html(report).encode()
    return render_text(report).encode()


# -- text ---------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def estimate_text(estimate: Estimate | None, digits: int = 3) -> str:
    """'0.812 [0.790, 0.832]' or '—'."""
    if estimate is None or estimate.value is None:
        return "—"
    if estimate.low is None or estimate.high is None:
        return _num(estimate.value, digits)
    return f"{estimate.value:.{digits}f} [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None) -> list[str]:
    right = right if right is not None else set(range(1, len(headers)))
    headers, rows = [printable(h) for h in headers], [[printable(c) for c in row] for row in rows]  # aligned as shown
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def headline(report: Report) -> list[str]:
    what = f"{report.task}: {report.prediction_field} vs {report.truth_field}"
    if report.confidence_field:
        what += f", confidence field {report.confidence_field}"
    window = f"{report.since or 'the start'} .. {report.until or 'now'}"
    by = "everything together" if report.by == "none" else f"by {report.by}"
    return [
        f"Field performance of {report.model} ({what})",
        f"window {window}, {by}; figures weighted by sample_weight; [95% interval]; n = labelled records behind a figure",
    ]


def overview_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    classification = report.task == "classification"
    headers = [report.by if report.by != "none" else "group", "devices", "collected", "labelled", "coverage"]
    headers += ["accuracy", "macro F1", "ECE"] if classification else ["MAE", "RMSE", "bias"]
    rows = []
    for g in report.groups:
        row = [g.key, f"{g.devices:,}", f"{g.collected:,}", f"{g.labelled:,}", _pct(g.coverage)]
        if classification:
            row += [estimate_text(g.accuracy), _num(g.macro_f1), estimate_text(g.ece)]
        else:
            row += [estimate_text(g.mae), estimate_text(g.rmse), estimate_text(g.bias)]
        rows.append(row)
    return headers, rows


def over_time_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """One row per period and version: predictions collected, labelled, and the headline figure with its interval."""
    over = report.over_time
    if over is None:
        return [], []
    rows = [[point.start, series.version, f"{point.collected:,}", f"{point.estimate.n:,}", estimate_text(point.estimate)]
            for series in over.series for point in series.points]
    rows.sort(key=lambda row: row[0])
    return [over.period, "model_version", "collected", "labelled", over.metric], rows


def _classes_text(group: Group) -> list[str]:
    ranked = sorted(group.classes, key=lambda c: (-c.support, c.label))
    rows = [[c.label, f"{c.support:,}", estimate_text(c.precision), estimate_text(c.recall), estimate_text(c.f1)]
            for c in ranked[:TEXT_CLASSES]]
    lines = _table(["class", "support", "precision", "recall", "F1"], rows)
    if len(ranked) > TEXT_CLASSES:
        lines.append(f"({len(ranked) - TEXT_CLASSES} more classes in --format json)")
    return lines


def _confusion_text(group: Group) -> list[str]:
    support = {c.label: c.support for c in group.classes}
    labels = sorted(group.confusion, key=lambda label: (-support.get(label, 0), label))[:TEXT_CLASSES]
    rows = [[truth, *(f"{group.confusion.get(truth, {}).get(pred, 0):,}" for pred in labels)] for truth in labels]
    return _table(["truth \\ predicted", *labels], rows)


def _reliability_text(group: Group) -> list[str]:
    rows = [
        [f"{b.low:.1f}-{b.high:.1f}", f"{b.collected:,}", f"{b.labelled:,}", _pct(b.share), _num(b.confidence),
         estimate_text(b.accuracy), _num(None if b.confidence is None or b.accuracy.value is None else b.accuracy.value - b.confidence)]
        for b in group.reliability if b.collected
    ]
    return _table(["confidence", "collected", "labelled", "share", "mean conf", "accuracy", "gap"], rows)


def drift_rows(drift: Sequence[FieldDrift]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for d in drift:
        change = max(d.bins, key=lambda b: abs(b.current - b.reference), default=None)
        label = "" if change is None else change.label if len(change.label) <= 28 else change.label[:27] + "…"
        moved = f"{label}: {_pct(change.reference)} → {_pct(change.current)}" if change else ""
        p = "" if d.p_value is None else ("< 0.001" if d.p_value < 0.001 else f"{d.p_value:.3f}")
        rows.append([d.field, d.kind, f"{d.reference_n:,}", f"{d.current_n:,}", _num(d.psi), _num(d.psi_noise), p, d.flag, moved])
    return ["field", "kind", "reference n", "window n", "PSI", "noise", "chi² p", "flag", "largest share change"], rows


def render_text(report: Report) -> str:
    lines = headline(report) + [""]
    headers, rows = overview_rows(report)
    lines += _table(headers, rows)
    if report.over_time is not None:
        lines += ["", f"{report.over_time.metric} per version per {report.over_time.period} (UTC)"]
        headers, rows = over_time_rows(report)
        lines += _table(headers, rows, right={2, 3, 4})
    if report.task == "classification":
        for group in report.groups:
            if group.accuracy is None:
                continue
            lines += ["", f"{group.key}: per class"] + _classes_text(group)
            lines += ["", f"{group.key}: confusion matrix (labelled records)"] + _confusion_text(group)
            if group.reliability:
                lines += ["", f"{group.key}: reliability by confidence bucket (ECE {estimate_text(group.ece)})"]
                lines += _reliability_text(group)
    if report.drift:
        lines += ["", f"Drift: this window against {report.reference} (PSI >= 0.1 watch, >= 0.25 drift)"]
        headers, rows = drift_rows(report.drift)
        lines += _table(headers, rows, right={2, 3, 4, 5, 6})
    for note in report.notes:
        lines += ["", f"note: {note}"]
    return "\n".join(printable(line) for line in lines) + "\n"  # group keys and notes carry device text


def escape(value: Any) -> str:
    return html_text(str(value))
