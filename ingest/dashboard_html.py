"""The dashboard's pages as HTML: inline CSS, server-drawn SVG charts, no script, nothing fetched.

Every value that came from devices (names, versions, errors, drop reasons) is escaped.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from edgeloop.ingest import charts
from edgeloop.ingest.report import Report
from edgeloop.ingest.report_html import CSS as REPORT_CSS
from edgeloop.ingest.report_html import render_fragment

__all__ = ["device_page", "login_page", "overview_page", "report_page"]

CSS = REPORT_CSS + """
body { max-width: 1180px; }
header { display: flex; align-items: center; gap: 1.2rem; border-bottom: 1px solid #e5e7eb; padding-bottom: .5rem; }
header a { color: #2563eb; text-decoration: none; } header .grow { flex: 1; }
header form { margin: 0; } button { font: inherit; padding: .3rem .8rem; cursor: pointer; }
.state-silent, .state-failing, .bad { color: #dc2626; font-weight: 600; } .state-late { color: #d97706; font-weight: 600; }
.state-normal, .good { color: #16a34a; font-weight: 600; }
.login { max-width: 26rem; margin: 6rem auto; } .login input { width: 100%; font: inherit; padding: .4rem; margin: .4rem 0 .8rem; }
.error { color: #dc2626; }
section { margin-bottom: 2.5rem; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value.utcoffset() is not None else value.isoformat()
    return str(value)


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}" if isinstance(value, float) or digits else f"{value:,}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _table(table_id: str, headers: Sequence[str], rows: Sequence[tuple[dict[str, str], Sequence[str]]]) -> str:
    """A table whose cells are already escaped HTML; each row carries its data attributes."""
    out = [f'<table id="{_e(table_id)}"><thead><tr>', *(f"<th>{_e(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for attributes, cells in rows:
        attrs = "".join(f' data-{key}="{_e(value)}"' for key, value in attributes.items())
        out.append(f"<tr{attrs}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    if not rows:
        out.append(f'<tr><td colspan="{len(headers)}" class="note">none</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _page(title: str, body: str, *, nav: bool = True, models: Sequence[str] = ()) -> str:
    header = ""
    if nav:
        reports = "".join(f'<a href="/dashboard/report?model={urllib.parse.quote(m)}">report: {_e(m)}</a>' for m in models)
        header = (
            '<header><b>edgeloop</b><a href="/dashboard">overview</a>' + reports + '<span class="grow"></span>'
            '<form method="post" action="/dashboard/logout"><button type="submit">log out</button></form></header>'
        )
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{header}{body}</body></html>")


def login_page(*, error: str | None = None, next_path: str = "/dashboard") -> str:
    message = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    body = (
        '<div class="login"><h1>edgeloop dashboard</h1>'
        "<p class=sub>Log in with the viewer token (the file <code>server.viewer_token_file</code>) "
        "or the admin token.</p>" + message +
        '<form method="post" action="/dashboard/login">'
        f'<input type="hidden" name="next" value="{_e(next_path)}">'
        '<label for="token">token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        '<button type="submit">log in</button></form></div>'
    )
    return _page("edgeloop: log in", body, nav=False)


def _device_link(name: str) -> str:
    return f'<a href="/dashboard/devices/{urllib.parse.quote(name, safe="")}">{_e(name)}</a>'


def rollout_section(rollout: dict[str, Any]) -> str:
    model = rollout["model"]
    versions = rollout["versions"]
    if not versions:
        return f'<div class="model" id="rollout-{_e(model)}"><h3>{_e(model)}</h3><p class="note">no predictions yet</p></div>'
    # The chart starts on the first day a device ran the model: the days before it have no share to show.
    first = next((i for i, n in enumerate(rollout["devices"]) if n), len(rollout["days"]) - 1)
    chart = charts.stacked_area(
        f"{model}: share of devices on each version", rollout["days"][first:],
        [(v, rollout["share_per_day"][v][first:]) for v in versions], percent=True,
    )
    counts = _table(f"versions-{model}", ["version", "devices now"], [
        ({"model": model, "version": v, "devices": str(n)}, [_e(v) + (" (newest)" if v == rollout["newest"] else ""), _num(n)])
        for v, n in sorted(rollout["devices_on_version"].items(), key=lambda item: item[0] == rollout["newest"], reverse=True)
    ])
    if rollout["upgraded"]:
        verdict = f'<p class="good" data-upgraded="true">every active device runs {_e(rollout["newest"])}</p>'
    else:
        verdict = (f'<p class="bad" data-upgraded="false">{rollout["behind_total"]:,} device(s) not on '
                   f'{_e(rollout["newest"])}</p>')
    behind = _table(f"behind-{model}", ["device", "version", "since", "last prediction", "last landed"], [
        ({"device": row["device"], "version": row["version"]},
         [_device_link(row["device"]), _e(row["version"]), _e(_when(row["since"])), _e(_when(row["last_prediction"])),
          _e(_when(row["last_seen"]))])
        for row in rollout["behind"]
    ])
    if rollout["behind_total"] > len(rollout["behind"]):
        behind += f'<p class="note">the {len(rollout["behind"])} seen longest ago of {rollout["behind_total"]:,}</p>'

    return (f'<div class="model" id="rollout-{_e(model)}"><h3>{_e(model)}</h3>{verdict}{chart}'
            f'<div class="grid"><div>{counts}</div><div><b>still on an older version</b>{behind}</div></div></div>')


def fleet_section(fleet: dict[str, Any], drops: dict[str, Any], outliers: list[dict[str, Any]]) -> str:
    parts = ["<h2>Fleet health</h2>"]
    devices = fleet["devices"]
    parts.append(_table("devices", ["device", "status", "state", "last seen", "batches", "rows"], [
        ({"device": d["name"], "status": d["status"], "state": d["state"]},
         [_device_link(d["name"]), _e(d["status"]), _e(d["state"]), _e(_when(d["last_seen"])), _num(d["batches"]),
          _num(d["rows"])])
        for d in devices
    ]))
    parts.append("<h3>Drops by reason (records the devices did not keep, per day)</h3>")
    parts.append(charts.bars("drops by reason per day", drops["days"], list(drops["by_reason"].items())))
    parts.append(f"<h3>Clock offset outliers (latest batch off by more than {fleet['clock_outlier_s']:g} s)</h3>")
    parts.append(_table("clock-outliers", ["device", "clock offset (s)", "last seen"], [
        ({"device": row["device"]}, [_device_link(row["device"]), _num(row["clock_offset_s"], 1), _e(_when(row["last_seen"]))])
        for row in outliers
    ]))
    return "".join(parts)


def data_section(data: dict[str, Any]) -> str:
    parts = ["<h2>Data</h2><h3>Rows landed per model per day</h3>"]
    parts.append(charts.bars("rows landed per day", data["days"], list(data["rows_per_day"].items())))
    parts.append("<h3>Label coverage and sample weights per model and version</h3>")
    parts.append('<p class="note">coverage: share of predictions with feedback; weighted: sum of sample_weight, the '
                 "number of predictions the kept ones stand for.</p>")
    parts.append(_table("coverage", ["model", "version", "predictions", "labelled", "coverage", "weighted count",
                                     "weighted coverage"], [
        ({"model": row["model"], "version": row["model_version"], "predictions": str(row["predictions"]),
          "labelled": str(row["labelled"]), "weighted": repr(row["weighted"])},
         [_e(row["model"]), _e(row["model_version"]), _num(row["predictions"]), _num(row["labelled"]),
          _pct(row["coverage"]), _num(row["weighted"], 1), _pct(row["weighted_coverage"])])
        for row in data["coverage"]
    ]))
    labels = [f'{row["model"]} {row["model_version"]}' for row in data["coverage"]]
    parts.append(charts.bars("raw vs sample-weighted count", labels, [
        ("raw count", [float(row["predictions"]) for row in data["coverage"]]),
        ("weighted beyond raw", [max(0.0, (row["weighted"] or 0.0) - row["predictions"]) for row in data["coverage"]]),
    ]))
    return "".join(parts)


def overview_page(models: Sequence[str], rollouts: Sequence[dict[str, Any]], fleet: dict[str, Any],
                  drops: dict[str, Any], outliers: list[dict[str, Any]], data: dict[str, Any]) -> str:
    body = ['<h1>Fleet overview</h1><section id="rollout"><h2>Rollout per model</h2>']
    body.extend(rollout_section(r) for r in rollouts)
    if not rollouts:
        body.append('<p class="note">no models registered yet</p>')
    body.append('</section><section id="fleet">')
    body.append(fleet_section(fleet, drops, outliers))
    body.append('</section><section id="data">')
    body.append(data_section(data))
    body.append("</section>")
    return _page("edgeloop: fleet overview", "".join(body), models=models)


def device_page(models: Sequence[str], device: dict[str, Any]) -> str:
    name = device["name"]
    status = "revoked" if device["revoked_at"] else "active"
    body = [
        f'<h1>Device {_e(name)}</h1><dl id="device-facts">'
        f"<dt>status</dt><dd>{_e(status)}</dd><dt>registered</dt><dd>{_e(_when(device['created_at']))}</dd>"
        f"<dt>last seen</dt><dd>{_e(_when(device['last_seen']))}</dd><dt>batches</dt><dd>{_num(device['batches'])}</dd>"
        f"<dt>rows landed</dt><dd>{_num(device['rows'])}</dd></dl>",
        "<h2>Model versions (each change, by the day of its first prediction on the new version)</h2>",
        _table("device-versions", ["model", "day", "from", "to"], [
            ({"model": v["model"], "version": v["to_version"]},
             [_e(v["model"]), _e(v["day"]), _e(v["from_version"] or "—"), _e(v["to_version"])])
            for v in device["version_changes"]
        ]),
        f"<h2>Batches (newest {len(device['recent_batches'])})</h2>",
        _table("device-batches", ["batch", "model", "rows", "duplicates", "bytes", "agent", "drops", "received",
                                  "clock offset (s)"], [
            ({"batch": b["batch_id"], "rows": str(b["rows"])},
             [f"<code>{_e(b['batch_id'])}</code>", _e(b["model"]), _num(b["rows"]), _num(b["duplicates"]), _num(b["bytes"]),
              _e(b["agent_version"]), _e(b["drops"]), _e(_when(b["received_at"])), _num(b["clock_offset_s"], 1)])
            for b in device["recent_batches"]
        ]),
    ]
    return _page(f"edgeloop: device {name}", "".join(body), models=models)


def report_page(models: Sequence[str], report: Report, query: dict[str, str]) -> str:
    """The field report of one model, drawn by the same code as ``edgeloop-ingest report --format html``."""
    fields = "".join(
        f'<label>{_e(label)} <input name="{name}" value="{_e(query.get(name, ""))}" placeholder="{_e(hint)}"></label> '
        for name, label, hint in (("since", "since", "2026-10-08"), ("until", "until", "now"))
    )
    by = query.get("by", "model_version")
    options = "".join(f'<option value="{v}"{" selected" if v == by else ""}>{v}</option>' for v in ("model_version", "device", "none"))
    form = (f'<form method="get" action="/dashboard/report"><input type="hidden" name="model" value="{_e(report.model)}">'
            f'{fields}<label>by <select name="by">{options}</select></label> <button type="submit">show</button></form>')
    return _page(f"edgeloop: field performance of {report.model}", form + render_fragment(report), models=models)
