"""The field report as one self-contained HTML file: inline CSS and SVG, no script, nothing fetched.

Every value that came from the data (class labels, versions, device names, field values) is
escaped: they were sent by devices and are not trusted.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from edgeloop.ingest import charts
from edgeloop.ingest.report import Estimate, FieldDrift, Group, Report
from edgeloop.ingest.report_view import drift_rows, escape, estimate_text, headline, over_time_rows, overview_rows

__all__ = ["CSS", "render_fragment", "render_html"]

INK, MUTED, GRID = "#1f2933", "#6b7280", "#e5e7eb"
BLUE, ORANGE, RED, AMBER, GREEN = "#2563eb", "#ea580c", "#dc2626", "#d97706", "#16a34a"
MAX_CLASSES_SHOWN = 20  # per version, the largest classes by support: a device's predictions name the classes
OTHER = "(other)"
FLAG_COLOURS = {"drift": RED, "watch": AMBER, "stable": GREEN, "too few": MUTED}

CSS = f"""
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: {INK}; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; margin-bottom: .2rem; }} h2 {{ font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid {GRID}; }}
h3 {{ font-size: 1rem; margin-top: 1.5rem; }}
.sub {{ color: {MUTED}; margin-top: 0; }}
table {{ border-collapse: collapse; margin: .6rem 0; font-variant-numeric: tabular-nums; }}
th, td {{ padding: .25rem .6rem; border-bottom: 1px solid {GRID}; text-align: right; white-space: nowrap; }}
th {{ background: #f9fafb; font-weight: 600; }}
td:first-child, th:first-child {{ text-align: left; }}
.flag {{ font-weight: 600; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }}
.card {{ border: 1px solid {GRID}; border-radius: 6px; padding: .5rem .8rem; }}
.note {{ color: {MUTED}; font-size: .9rem; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }} dt {{ font-weight: 600; }} dd {{ margin: 0; }}
svg {{ display: block; margin: .4rem 0; }} svg text {{ font: 12px system-ui, sans-serif; fill: {INK}; }}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval_chart(report: Report) -> str:
    """Each group's headline figure as a dot with its 95% interval as a bar."""
    classification = report.task == "classification"
    points: list[tuple[str, Estimate, int]] = []
    for group in report.groups:
        estimate = group.accuracy if classification else group.mae
        # Not drawn: an error that overflowed (a device's huge finite values); the table shows it.
        if estimate is not None and estimate.value is not None and math.isfinite(estimate.value):
            points.append((group.key, estimate, group.labelled))
    if not points:
        return ""
    if classification:
        smallest = min(v for _, e, _ in points for v in (e.low, e.value) if v is not None)
        low_x, high_x = math.floor(smallest * 10) / 10, 1.0
    else:
        values = [v for _, e, _ in points for v in (e.low, e.value, e.high) if v is not None and math.isfinite(v)]
        low_x, high_x = 0.0, min(max(values) * 1.1, sys.float_info.max) or 1.0
    label_w, width, row_h = 170, 800, 30
    plot_w = width - label_w - 160
    height = row_h * len(points) + 40

    def x(v: float) -> float:
        return label_w + min(max((v - low_x) / ((high_x - low_x) or 1.0), -0.1), 1.1) * plot_w

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{"accuracy" if classification else "MAE"} per {escape(report.by)} with 95% intervals">']
    for i in range(11):
        v = low_x + (high_x - low_x) * i / 10
        parts.append(f'<line x1="{x(v):.1f}" y1="10" x2="{x(v):.1f}" y2="{height - 25}" stroke="{GRID}"/>')
        parts.append(f'<text x="{x(v):.1f}" y="{height - 10}" text-anchor="middle">{v:.2f}</text>')
    for index, (key, estimate, labelled) in enumerate(points):
        y = 25 + index * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 4}" text-anchor="end">{escape(key)}</text>')
        if estimate.low is not None and estimate.high is not None and math.isfinite(estimate.low) and math.isfinite(estimate.high):
            parts.append(f'<line x1="{x(estimate.low):.1f}" y1="{y}" x2="{x(estimate.high):.1f}" y2="{y}" '
                         f'stroke="{BLUE}" stroke-width="6" stroke-opacity=".3" stroke-linecap="round"/>')
        parts.append(f'<circle cx="{x(estimate.value or 0):.1f}" cy="{y}" r="5" fill="{BLUE}"/>')
        parts.append(f'<text x="{label_w + plot_w + 8}" y="{y + 4}">{estimate.value:.3f} · n={labelled:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _over_time_html(report: Report) -> str:
    """The headline figure per version per period as lines with 95% bands, and the same numbers as a table."""
    over = report.over_time
    if over is None:
        return ""
    index = {start: i for i, start in enumerate(over.periods)}
    series = []
    for line in over.series:
        points: list[charts.Interval | None] = [None] * len(over.periods)
        for point in line.points:
            e = point.estimate
            if e.value is not None and point.start in index:
                points[index[point.start]] = (e.value, e.low, e.high, f"n={e.n:,} labelled of {point.collected:,}")
        series.append((line.version, points))
    percent = over.metric == "accuracy"
    title = f"{over.metric} per version per {over.period} (UTC) with 95% intervals"
    headers, rows = over_time_rows(report)
    return (f'<h2 id="over-time">{escape(over.metric.capitalize() if percent else over.metric)} over time</h2>'
            f'<div class="over-time">{charts.interval_lines(title, over.periods, series, percent=percent)}</div>'
            f"<p class=note>Each point: the {escape(over.metric)} of the version's labelled predictions created in that "
            f"{escape(over.period)}, weighted as above; band and whisker: its 95% interval (wide where few labels); "
            "the tooltip gives the counts.</p>"
            f"<details><summary>the numbers</summary>{_table(headers, rows)}</details>")


def _reliability_chart(group: Group) -> str:
    """Accuracy against mean confidence per bucket, with intervals, the diagonal, and each bucket's share."""
    size, pad = 300, 46
    plot = size - 2 * pad

    def px(v: float) -> float:
        return pad + v * plot

    def py(v: float) -> float:
        return size - pad - v * plot

    parts = [f'<svg width="{size}" height="{size}" viewBox="0 0 {size} {size}" role="img" '
             f'aria-label="reliability diagram of {escape(group.key)}">']
    for i in range(11):
        v = i / 10
        parts.append(f'<line x1="{px(v):.1f}" y1="{py(0):.1f}" x2="{px(v):.1f}" y2="{py(1):.1f}" stroke="{GRID}"/>')
        parts.append(f'<line x1="{px(0):.1f}" y1="{py(v):.1f}" x2="{px(1):.1f}" y2="{py(v):.1f}" stroke="{GRID}"/>')
        if i % 2 == 0:
            parts.append(f'<text x="{px(v):.1f}" y="{size - pad + 14}" text-anchor="middle">{v:.1f}</text>')
            parts.append(f'<text x="{pad - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    parts.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="{MUTED}" stroke-dasharray="4 3"/>')
    for bucket in group.reliability:
        if bucket.share > 0:  # the bucket's share of labelled weight, as a bar along the bottom
            height = bucket.share * plot * 0.5
            parts.append(f'<rect x="{px(bucket.low) + 2:.1f}" y="{py(0) - height:.1f}" width="{plot / 10 - 4:.1f}" '
                         f'height="{height:.1f}" fill="{ORANGE}" fill-opacity=".25"/>')
    for bucket in group.reliability:
        a, c = bucket.accuracy, bucket.confidence
        if a.value is None or c is None:
            continue
        if a.low is not None and a.high is not None:
            parts.append(f'<line x1="{px(c):.1f}" y1="{py(a.low):.1f}" x2="{px(c):.1f}" y2="{py(a.high):.1f}" '
                         f'stroke="{BLUE}" stroke-width="2"/>')
        parts.append(f'<circle cx="{px(c):.1f}" cy="{py(a.value):.1f}" r="4" fill="{BLUE}"/>')
    parts.append(f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle">mean confidence</text>')
    parts.append(f'<text x="11" y="{size / 2}" text-anchor="middle" transform="rotate(-90 11 {size / 2})">accuracy</text>')
    parts.append("</svg>")
    return "".join(parts)


def _drift_chart(drift: FieldDrift) -> str:
    """Reference and window shares per bin as paired horizontal bars."""
    bins = drift.bins[:21]
    label_w, bar_w, row_h = 150, 220, 16
    width, height = label_w + bar_w + 60, row_h * len(bins) + 30
    top = max([max(b.reference, b.current) for b in bins] + [1e-9])
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="distribution of {escape(drift.field)}: reference and window">']
    parts.append(f'<rect x="{label_w}" y="4" width="10" height="8" fill="{MUTED}"/><text x="{label_w + 14}" y="12">reference</text>')
    parts.append(f'<rect x="{label_w + 90}" y="4" width="10" height="8" fill="{BLUE}"/><text x="{label_w + 104}" y="12">window</text>')
    for index, b in enumerate(bins):
        y = 22 + index * row_h
        label = b.label if len(b.label) <= 24 else b.label[:23] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 10}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 1}" width="{b.reference / top * bar_w:.1f}" height="6" fill="{MUTED}"/>')
        parts.append(f'<rect x="{label_w}" y="{y + 7}" width="{b.current / top * bar_w:.1f}" height="6" fill="{BLUE}"/>')
        parts.append(f'<text x="{label_w + bar_w + 6}" y="{y + 10}">{100 * b.current:.1f}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def _confusion_html(group: Group) -> str:
    """The confusion matrix of the largest classes, the rest summed as one row and column, each cell shaded by its
    share of its true class's row: a square over every label grows with the square of a device's class names."""
    support = {c.label: c.support for c in group.classes}
    ranked = sorted(group.confusion, key=lambda label: (-support.get(label, 0), label))
    labels, rest = ranked[:MAX_CLASSES_SHOWN], set(ranked[MAX_CLASSES_SHOWN:])

    def counts(truths: list[str]) -> list[int]:
        """The row of these true classes: a count per shown prediction, then the rest's."""
        row = [0] * (len(labels) + 1) if rest else [0] * len(labels)
        column = {label: i for i, label in enumerate(labels)}
        for truth in truths:
            for pred, count in group.confusion.get(truth, {}).items():
                row[column.get(pred, len(labels))] += count
        return row

    head = "".join(f"<th>{escape(p)}</th>" for p in labels) + (f"<th>{escape(OTHER)}</th>" if rest else "")
    rows = []
    named = [(truth, [truth]) for truth in labels] + ([(OTHER, sorted(rest))] if rest else [])
    for index, (name, truths) in enumerate(named):
        row = counts(truths)
        total = sum(row) or 1
        cells = []
        for column, count in enumerate(row):
            colour = "22,163,74" if column == index and name != OTHER else "220,38,38"
            cells.append(f'<td style="background: rgba({colour},{0.75 * count / total:.2f})">{count:,}</td>')
        rows.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th>truth \\ predicted</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _group_html(group: Group) -> str:
    parts = [f"<h3>{escape(group.key)}</h3>"]
    ranked = sorted(group.classes, key=lambda c: (-c.support, c.label))
    rows = [[c.label, f"{c.support:,}", estimate_text(c.precision), estimate_text(c.recall), estimate_text(c.f1)]
            for c in ranked[:MAX_CLASSES_SHOWN]]
    parts.append('<div class="grid"><div>')
    parts.append(_table(["class", "support", "precision", "recall", "F1"], rows))
    if len(ranked) > MAX_CLASSES_SHOWN:
        parts.append(f"<p class=note>the {MAX_CLASSES_SHOWN} classes with the most labelled records; "
                     f"{len(ranked) - MAX_CLASSES_SHOWN:,} more classes in the JSON (--format json)</p>")
    parts.append("<p class=note>Confusion matrix, labelled records (rows: truth, columns: prediction):</p>")
    parts.append(_confusion_html(group))
    parts.append("</div>")
    if group.reliability:
        parts.append(f'<div class="card"><div><b>Calibration</b> — ECE {escape(estimate_text(group.ece))}</div>')
        parts.append(_reliability_chart(group))
        parts.append("<p class=note>Dots: accuracy per confidence bucket with its 95% interval;<br>"
                     "dashed: perfect calibration; bars: share of labelled weight.</p></div>")
    parts.append("</div>")
    if group.reliability:
        rows = [[f"{b.low:.1f}–{b.high:.1f}", f"{b.collected:,}", f"{b.labelled:,}", f"{100 * b.share:.1f}%",
                 "—" if b.confidence is None else f"{b.confidence:.3f}", estimate_text(b.accuracy)]
                for b in group.reliability if b.collected]
        parts.append(_table(["confidence", "collected", "labelled", "share", "mean confidence", "accuracy"], rows))
    return "".join(parts)


EXPLAINED = (
    ("collected / labelled", "predictions stored in the window, and those whose truth has arrived as feedback"),
    ("coverage", "labelled ÷ collected; the figures describe the labelled part"),
    ("weighted", "each record counts sample_weight = 1/p times, p the chance the device kept it, so figures estimate "
                 "all predictions made, not the sample"),
    ("over time", "the same figure per version per day, week or month of created_at (UTC), from the same sums and "
                  "interval; a period with few labels gets a wide band"),
    ("[low, high]", "95% interval: Wilson's for shares, normal for means, on the effective sample size (Σw)²/Σw²"),
    ("accuracy", "share of labelled predictions equal to the truth"),
    ("precision / recall / F1", "per class: right among predicted as it / found among truly it / their harmonic mean"),
    ("ECE", "expected calibration error: the share-weighted mean gap between confidence and accuracy over ten buckets"),
    ("MAE / RMSE / bias", "mean absolute error, root mean squared error, mean of prediction − truth"),
    ("PSI", "population stability index of a field's distribution against the reference: ≥ 0.1 watch, ≥ 0.25 drift; "
            "'noise' is the PSI sampling alone would give"),
    ("chi² p", "chi-square test of a categorical field's share changes (on effective counts)"),
)


def render_html(report: Report) -> str:
    title, _ = headline(report)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{render_fragment(report)}</body></html>\n"
    )


def render_fragment(report: Report, *, after_over_time: str = "") -> str:
    """The report's body (headings, tables, charts), for the file and for the dashboard's report page, which puts
    the versions' rollout (``after_over_time``, already escaped) next to their figures over time."""
    title, sub = headline(report)
    parts = [f"<h1>{escape(title)}</h1><p class=sub>{escape(sub)}</p>"]
    headers, rows = overview_rows(report)
    parts.append(_table(headers, rows))
    parts.append(_interval_chart(report))
    parts.append(_over_time_html(report))
    parts.append(after_over_time)
    if report.task == "classification":
        parts.append("<h2>Per version: classes, confusion and calibration</h2>")
        for group in report.groups:
            if group.accuracy is not None:
                parts.append(_group_html(group))
    if report.drift:
        parts.append(f"<h2>Drift against {escape(report.reference)}</h2>")
        headers, rows = drift_rows(report.drift)
        flagged = []
        for d, row in zip(report.drift, rows):
            cells = [escape(c) for c in row]
            cells[7] = f'<span class=flag style="color:{FLAG_COLOURS[d.flag]}">{escape(d.flag)}</span>'
            flagged.append(cells)
        parts.append(_table(headers, flagged, raw=True))
        parts.append('<div class="grid">')
        for d in report.drift:
            parts.append(f'<div class="card"><div><b>{escape(d.field)}</b> — PSI '
                         f'{"—" if d.psi is None else f"{d.psi:.3f}"} ({escape(d.flag)})</div>{_drift_chart(d)}</div>')
        parts.append("</div>")
    for note in report.notes:
        parts.append(f"<p class=note>note: {escape(note)}</p>")
    parts.append("<h2>How to read this</h2><dl>")
    parts.extend(f"<dt>{escape(term)}</dt><dd>{escape(text)}</dd>" for term, text in EXPLAINED)
    parts.append("</dl>")
    return "".join(parts)
