"""Charts as SVG strings, drawn on the server: stacked areas, bars and lines, no script, nothing fetched.

Every data point is an element carrying ``data-series``, ``data-x`` and ``data-value`` and a
``<title>`` (the browser's tooltip), so a reader, a screen reader and a test all see the numbers
the chart was drawn from. Every label is escaped: versions and device names come from devices.
A value that is not a finite number (a sum of huge finite weights overflows to infinity) is
left out of the drawing and of the axis; the tables beside the charts show it as it is.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from edgeloop.units import html_text

__all__ = ["PALETTE", "bars", "interval_lines", "lines", "stacked_area"]

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d")
INK, MUTED, GRID = "#1f2933", "#6b7280", "#e5e7eb"
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28
LEGEND_ROW_PX = 18

Series = Sequence[tuple[str, Sequence[float]]]
# Per x: (value, low, high, note for the tooltip), or None where the series has no point.
Interval = tuple[float, float | None, float | None, str]
IntervalSeries = Sequence[tuple[str, Sequence[Interval | None]]]


def _e(text: object) -> str:
    return html_text(str(text))


def _drawn(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _down(fraction: float) -> float:
    """How far down the plot a point is (0 top, 1 bottom), held within a plot's height of it: a value far
    below the axis (a huge negative error) would put it at an infinite coordinate."""
    return min(max(fraction, -1.0), 2.0)


def _stack(total: float) -> float:
    """A stacked total held at the largest double: huge finite values may sum past it."""
    return min(total, sys.float_info.max)


def _fmt(value: float, percent: bool) -> str:
    if not math.isfinite(value):
        return str(value)
    if percent:
        return f"{100 * value:.1f}%"
    if abs(value) >= 1e15:
        return f"{value:.3g}"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above value (axis tops that read well)."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return value  # past the largest double's 1, 2, 5 step: the value itself tops the axis


def _frame(kind: str, title: str, width: int, height: int, names: Sequence[str], body: list[str],
           y_top: float, percent: bool, x_labels: Sequence[str], y_bottom: float = 0.0) -> str:
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    legend_h = LEGEND_ROW_PX * ((len(names) + 3) // 4) if names else 0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" role="img" width="{width}" '
        f'height="{height + legend_h}" viewBox="0 0 {width} {height + legend_h}" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}" font-size="11">'
                   f"{_e(_fmt(y_bottom + (y_top - y_bottom) * fraction, percent))}</text>")
    if x_labels:
        step = max(1, math.ceil(len(x_labels) / 6))
        for index in range(0, len(x_labels), step):
            x = LEFT + _x(index, len(x_labels), plot_w)
            anchor = "end" if index == len(x_labels) - 1 and len(x_labels) > 1 else "middle"  # stays inside the frame
            out.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}" fill="{MUTED}" font-size="11">'
                       f"{_e(x_labels[index])}</text>")
    out.extend(body)
    for index, name in enumerate(names):
        x, y = LEFT + (index % 4) * (plot_w / 4), height + (index // 4) * LEGEND_ROW_PX + 4
        out.append(f'<rect x="{x:.1f}" y="{y}" width="10" height="10" fill="{PALETTE[index % len(PALETTE)]}"/>')
        out.append(f'<text x="{x + 14:.1f}" y="{y + 9}" font-size="12" fill="{INK}">{_e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _x(index: int, count: int, plot_w: float) -> float:
    return plot_w / 2 if count <= 1 else plot_w * index / (count - 1)


def _empty(title: str, width: int, height: int) -> str:
    height = min(height, 48)  # nothing to draw: a line of text, not a blank plot
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-empty" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>{_e(title)}</title>'
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{MUTED}">no data yet</text></svg>')


def _point(series: str, x_label: str, value: float, percent: bool, shape: str) -> str:
    text = f"{series} · {x_label}: {_fmt(value, percent)}"
    return (f'<g class="point" data-series="{_e(series)}" data-x="{_e(x_label)}" data-value="{value!r}">'
            f"<title>{_e(text)}</title>{shape}</g>")


def stacked_area(title: str, x_labels: Sequence[str], series: Series, *, percent: bool = False,
                 width: int = 720, height: int = 220) -> str:
    """Series stacked on each other over x (shares of a whole with ``percent``: the top is 100%)."""
    if not x_labels or not series:
        return _empty(title, width, height)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    shown = [(name, [v if _drawn(v) and v > 0 else 0.0 for v in values]) for name, values in series]
    totals = [_stack(sum(values[i] for _, values in shown)) for i in range(len(x_labels))]
    y_top = 1.0 if percent else _nice_max(max(totals))
    below = [0.0] * len(x_labels)
    body: list[str] = []
    points: list[str] = []
    for index, ((name, values), (_, heights)) in enumerate(zip(series, shown)):
        colour = PALETTE[index % len(PALETTE)]
        above = [_stack(b + v) for b, v in zip(below, heights)]
        xs = [LEFT + _x(i, len(x_labels), plot_w) for i in range(len(x_labels))]
        top = [TOP + plot_h * (1 - a / y_top) for a in above]
        bottom = [TOP + plot_h * (1 - b / y_top) for b in below]
        if len(x_labels) == 1:  # one day: a band as wide as the plot
            xs_top, xs_bottom = [LEFT, LEFT + plot_w], [LEFT + plot_w, LEFT]
            top, bottom = top * 2, bottom * 2
        else:
            xs_top, xs_bottom = xs, xs[::-1]
            bottom = bottom[::-1]
        outline = [f"{x:.1f},{y:.1f}" for x, y in zip(xs_top, top)] + [f"{x:.1f},{y:.1f}" for x, y in zip(xs_bottom, bottom)]
        body.append(f'<polygon class="band" data-series="{_e(name)}" points="{" ".join(outline)}" fill="{colour}" '
                    f'fill-opacity="0.75" stroke="{colour}"/>')
        for i, value in enumerate(values):
            if not _drawn(value):
                continue
            y = TOP + plot_h * (1 - above[i] / y_top)
            points.append(_point(name, x_labels[i], value, percent,
                                 f'<circle cx="{xs[i]:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'))
        below = above
    return _frame("area", title, width, height, [name for name, _ in series], body + points, y_top, percent, x_labels)


def bars(title: str, x_labels: Sequence[str], series: Series, *, width: int = 720, height: int = 220) -> str:
    """Series stacked in one bar per x."""
    if not x_labels or not series:
        return _empty(title, width, height)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    totals = [_stack(sum(values[i] for _, values in series if _drawn(values[i]) and values[i] > 0)) for i in range(len(x_labels))]
    y_top = _nice_max(max(totals))
    slot = plot_w / len(x_labels)
    bar_w = max(2.0, slot * 0.7)
    below = [0.0] * len(x_labels)
    body: list[str] = []
    for index, (name, values) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        for i, value in enumerate(values):
            if not _drawn(value) or value <= 0:
                continue
            top = _stack(below[i] + value)
            h = plot_h * ((top - below[i]) / y_top)
            y = TOP + plot_h * (1 - top / y_top)
            x = LEFT + slot * i + (slot - bar_w) / 2
            body.append(_point(name, x_labels[i], value, False,
                               f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"/>'))
            below[i] = top
    # Bar labels sit under each slot's centre, not on the line chart's grid.
    labels = [f'<text x="{LEFT + slot * (i + 0.5):.1f}" y="{height - 8}" text-anchor="middle" fill="{MUTED}" '
              f'font-size="11">{_e(label)}</text>'
              for i, label in enumerate(x_labels) if i % max(1, math.ceil(len(x_labels) / 6)) == 0]
    return _frame("bars", title, width, height, [name for name, _ in series], body + labels, y_top, False, [])


def lines(title: str, x_labels: Sequence[str], series: Series, *, percent: bool = False,
          width: int = 720, height: int = 220) -> str:
    """One line per series over x."""
    if not x_labels or not series:
        return _empty(title, width, height)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    y_top = 1.0 if percent else _nice_max(max((v for _, values in series for v in values if _drawn(v)), default=0))
    body: list[str] = []
    points: list[str] = []
    for index, (name, values) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        xy = [(i, LEFT + _x(i, len(x_labels), plot_w), TOP + plot_h * _down(1 - v / y_top))
              for i, v in enumerate(values) if _drawn(v)]
        body.append(f'<polyline data-series="{_e(name)}" fill="none" stroke="{colour}" stroke-width="2" '
                    f'points="{" ".join(f"{x:.1f},{y:.1f}" for _, x, y in xy)}"/>')
        points.extend(_point(name, x_labels[i], values[i], percent, f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
                      for i, x, y in xy)
    return _frame("lines", title, width, height, [name for name, _ in series], body + points, y_top, percent, x_labels)


def _finite_interval(point: Interval | None) -> Interval | None:
    """The point with its non-finite bounds dropped, or None (no point) if its value is not finite."""
    if point is None or not _drawn(point[0]):
        return None
    value, low, high, note = point
    return value, low if _drawn(low) else None, high if _drawn(high) else None, note


def interval_lines(title: str, x_labels: Sequence[str], series: IntervalSeries, *, percent: bool = False,
                   width: int = 720, height: int = 240) -> str:
    """One line per series over x with its interval as a shaded band; a gap where a series has no point.

    With ``percent`` the axis spans from the lowest interval (rounded down to 10%) to 100%, so
    0.80 against 0.90 is not a hair's breadth apart; otherwise from 0 to the highest interval.
    """
    series = [(name, [_finite_interval(p) for p in points]) for name, points in series]
    present = [p for _, points in series for p in points if p is not None]
    if not x_labels or not present:
        return _empty(title, width, height)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    extremes = [v for value, low, high, _ in present for v in (value, low, high) if v is not None]
    if percent:
        lowest = min(extremes)
        y_bottom = min(math.floor(lowest * 10) / 10 if math.isfinite(lowest * 10) else lowest, 0.9)
        y_top = max(1.0, max(extremes))  # a share is at most 1; a value past it widens the axis, never leaves it
    else:
        y_bottom, y_top = 0.0, _nice_max(max(extremes))

    def y(v: float) -> float:
        # Halved so that no difference of two doubles overflows.
        return TOP + plot_h * _down(1 - (v / 2 - y_bottom / 2) / ((y_top / 2 - y_bottom / 2) or 1.0))

    def runs(points: Sequence[Interval | None]) -> list[list[tuple[float, Interval]]]:
        """Consecutive x positions that have a point: each is drawn as one line and one band."""
        out: list[list[tuple[float, Interval]]] = [[]]
        for i, point in enumerate(points):
            if point is None:
                out.append([])
            else:
                out[-1].append((LEFT + _x(i, len(x_labels), plot_w), point))
        return [run for run in out if run]

    bands: list[str] = []
    body: list[str] = []
    marks: list[str] = []
    for index, (name, points) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        for run in runs(points):
            bounded = [(x, p) for x, p in run if p[1] is not None and p[2] is not None]
            if len(bounded) > 1:
                outline = [f"{x:.1f},{y(p[2]):.1f}" for x, p in bounded]  # type: ignore[arg-type]
                outline += [f"{x:.1f},{y(p[1]):.1f}" for x, p in reversed(bounded)]  # type: ignore[arg-type]
                bands.append(f'<polygon class="band" data-series="{_e(name)}" points="{" ".join(outline)}" '
                             f'fill="{colour}" fill-opacity="0.15" stroke="none"/>')
            if len(run) > 1:
                body.append(f'<polyline data-series="{_e(name)}" fill="none" stroke="{colour}" stroke-width="2" '
                            f'points="{" ".join(f"{x:.1f},{y(p[0]):.1f}" for x, p in run)}"/>')
        for i, point in enumerate(points):
            if point is None:
                continue
            value, low, high, note = point
            x = LEFT + _x(i, len(x_labels), plot_w)
            whisker = (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" stroke="{colour}" '
                       f'stroke-width="1.5"/>' if low is not None and high is not None else "")
            text = f"{name} · {x_labels[i]}: {_fmt(value, percent)}"
            if low is not None and high is not None:
                text += f" [{_fmt(low, percent)}, {_fmt(high, percent)}]"
            text += f" · {note}" if note else ""
            marks.append(
                f'<g class="point" data-series="{_e(name)}" data-x="{_e(x_labels[i])}" data-value="{value!r}" '
                f'data-low="{"" if low is None else repr(low)}" data-high="{"" if high is None else repr(high)}"><title>{_e(text)}</title>{whisker}'
                f'<circle cx="{x:.1f}" cy="{y(value):.1f}" r="3.5" fill="{colour}"/></g>'
            )
    return _frame("intervals", title, width, height, [name for name, _ in series], bands + body + marks, y_top,
                  percent, x_labels, y_bottom)
