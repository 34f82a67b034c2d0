"""The dashboard's pages as HTML: inline CSS, server-drawn SVG charts, no script, nothing fetched.

Every value that came from devices (names, versions, errors, drop reasons) is escaped.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from edgeloop import units
from edgeloop.ingest import charts
from edgeloop.ingest.dashboard import MAX_GROUPS_SHOWN, version_key
from edgeloop.ingest.report import GROUP_NAMES, PERIODS, Report
from edgeloop.ingest.report_html import CSS as REPORT_CSS
from edgeloop.ingest.report_html import render_fragment

__all__ = ["device_page", "devices_page", "login_page", "overview_page", "report_page"]

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

DASH = "—"  # what a cell shows for a value nobody reported
MAX_VERSIONS_SHOWN = 20  # per model in a version table: devices name versions, so there is no bound on how many


def _newest_versions(rows: Sequence[dict[str, Any]], version: str = "model_version") -> tuple[list[dict[str, Any]], str]:
    """Per model the ``MAX_VERSIONS_SHOWN`` newest versions' rows (in their order), and a note naming how many are left out."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        kept.setdefault(row["model"], []).append(row)
    shown: set[int] = set()
    notes = []
    for model, model_rows in kept.items():
        newest = sorted(model_rows, key=lambda row: version_key(row[version]), reverse=True)[:MAX_VERSIONS_SHOWN]
        shown.update(id(row) for row in newest)
        if len(model_rows) > len(newest):
            notes.append(f"{model}: {len(model_rows) - len(newest):,} more versions, older ones (the JSON endpoint lists all)")
    note = f'<p class="note">{_e("; ".join(notes))}</p>' if notes else ""
    return [row for row in rows if id(row) in shown], note


def _e(value: object) -> str:
    return units.html_text(value)


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):  # fleet's rows carry times as ISO text
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
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
        reports = "".join(f'<a href="/dashboard/report?model={urllib.parse.quote(m)}">field performance: {_e(m)}</a>' for m in models)
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
    series = [(v, rollout["share_per_day"][v][first:]) for v in versions]
    rows = [({"model": model, "version": v, "devices": str(n)}, [_e(v) + (" (newest)" if v == rollout["newest"] else ""), _num(n)])
            for v, n in sorted(rollout["devices_on_version"].items(), key=lambda item: item[0] == rollout["newest"], reverse=True)]
    if other := rollout.get("other_versions"):
        name = f"({other['versions']:,} other versions)"
        series.append((name, other["share_per_day"][first:]))
        rows.append(({"model": model, "other-versions": str(other["versions"]), "devices": str(other["devices_now"])},
                     [_e(name), _num(other["devices_now"])]))
    chart = charts.stacked_area(f"{model}: share of devices on each version", rollout["days"][first:], series, percent=True)
    counts = _table(f"versions-{model}", ["version", "devices now"], rows)
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


STATE_TEXT = {"ok": "syncing normally", "late": "late (missed a sync window)", "silent": "silent",
              "failing": "failing", "never_seen": "never seen", "revoked": "revoked"}


def _state(state: str) -> str:
    return f'<span class="state-{_e(state)}">{_e(STATE_TEXT.get(state, state))}</span>'


def fleet_section(fleet: dict[str, Any]) -> str:
    parts = ["<h2>Fleet health</h2>"]
    states = fleet["states"]
    parts.append(_table("states", ["state", "devices"], [
        ({"state": state, "devices": str(n)},
         [f'<a href="/dashboard/devices?state={_e(state)}">{_state(state)}</a>', _num(n)]) for state, n in states.items()
    ]))
    parts.append(f'<p class="note">{_num(fleet["devices"])} devices; silent: nothing heard for more than '
                 "fleet.silent_after_windows sync windows; late: more than one.</p>")
    parts.append('<h3>Devices to look at</h3><p class="note"><a href="/dashboard/devices">every device</a></p>')
    parts.append(_table("attention", ["device", "state", "last seen", "sync window", "last sync", "last error"], [
        ({"device": d["device"], "state": d["state"]},
         [_device_link(d["device"]), _state(d["state"]), _e(units.ago(d["silent_for_s"], missing=DASH)), _e(units.duration(d["sync_window_s"], missing=DASH)),
          _e(d["last_outcome"] or "—"), _e(d["last_error"] or "")])
        for d in fleet["attention"]
    ]))
    parts.append("<h3>Backlog per device (largest spools, from their last status)</h3>")
    backlog = fleet["backlog"]
    parts.append(charts.bars("spool backlog per device (bytes)", [d["device"] for d in backlog],
                             [("backlog bytes", [float(d["backlog_bytes"]) for d in backlog])]))
    parts.append(_table("backlog", ["device", "batches", "records", "bytes", "oldest record"], [
        ({"device": d["device"], "bytes": str(d["backlog_bytes"])},
         [_device_link(d["device"]), _num(d["backlog_batches"]), _num(d["backlog_records"]), _e(units.size(d["backlog_bytes"], missing=DASH)),
          _e(units.duration(d["oldest_record_age_s"], missing=DASH))])
        for d in backlog
    ]))
    parts.append("<h3>Rejected uploads per device</h3>")
    parts.append(_table("refused", ["device", "refused", "last refused", "last code"], [
        ({"device": d["device"], "refused": str(d["refused"])},
         [_device_link(d["device"]), _num(d["refused"]), _e(_when(d["last_refused_at"])), _e(d["last_refused_code"] or "")])
        for d in fleet["refused"]
    ]))
    drops = fleet["drops"]
    parts.append("<h3>Drops by reason (records the devices did not keep, per day)</h3>")
    parts.append(charts.bars("drops by reason per day", drops["days"], list(drops["by_reason"].items())))
    parts.append(f"<h3>Clock offset outliers (off by more than {fleet['clock_outlier_s']:g} s)</h3>")
    parts.append(_table("clock-outliers", ["device", "clock offset (s)", "last seen"], [
        ({"device": row["device"]}, [_device_link(row["device"]), _num(row["clock_offset_s"], 1), _e(_when(row["last_seen_at"]))])
        for row in fleet["clock_outliers"]
    ]))
    return "".join(parts)


def data_section(data: dict[str, Any]) -> str:
    parts = ["<h2>Data</h2><h3>Rows landed per model per day</h3>"]
    parts.append(charts.bars("rows landed per day", data["days"], list(data["rows_per_day"].items())))
    parts.append("<h3>Label coverage and sample weights per model and version</h3>")
    parts.append('<p class="note">coverage: share of predictions with feedback; weighted: sum of sample_weight, the '
                 "number of predictions the kept ones stand for.</p>")
    coverage, left_out = _newest_versions(data["coverage"])
    parts.append(_table("coverage", ["model", "version", "predictions", "labelled", "coverage", "weighted count",
                                     "weighted coverage"], [
        ({"model": row["model"], "version": row["model_version"], "predictions": str(row["predictions"]),
          "labelled": str(row["labelled"]), "weighted": repr(row["weighted"])},
         [_e(row["model"]), _e(row["model_version"]), _num(row["predictions"]), _num(row["labelled"]),
          _pct(row["coverage"]), _num(row["weighted"], 1), _pct(row["weighted_coverage"])])
        for row in coverage
    ]) + left_out)
    labels = [f'{row["model"]} {row["model_version"]}' for row in coverage]
    parts.append(charts.bars("raw vs sample-weighted count", labels, [
        ("raw count", [float(row["predictions"]) for row in coverage]),
        ("weighted beyond raw", [max(0.0, (row["weighted"] or 0.0) - row["predictions"]) for row in coverage]),
    ]))
    return "".join(parts)


def overview_page(models: Sequence[str], rollouts: Sequence[dict[str, Any]], fleet: dict[str, Any],
                  data: dict[str, Any]) -> str:
    body = ['<h1>Fleet overview</h1><section id="rollout"><h2>Rollout per model</h2>']
    body.extend(rollout_section(r) for r in rollouts)
    if not rollouts:
        body.append('<p class="note">no models registered yet</p>')
    body.append('</section><section id="fleet">')
    body.append(fleet_section(fleet))
    body.append('</section><section id="data">')
    body.append(data_section(data))
    body.append("</section>")
    return _page("edgeloop: fleet overview", "".join(body), models=models)


def device_page(models: Sequence[str], name: str, detail: dict[str, Any]) -> str:
    device = detail["device"]
    versions, _ = _newest_versions(detail["versions"])  # the detail holds only the newest: the note counts from its totals
    shown = {row["model"]: 0 for row in versions}
    for row in versions:
        shown[row["model"]] += 1
    notes = [f"{model}: {total - shown.get(model, 0):,} more versions, older ones"
             for model, total in detail.get("versions_total", {}).items() if total > shown.get(model, 0)]
    left_out = f'<p class="note">{_e("; ".join(notes))}</p>' if notes else ""
    changes, changes_total = detail["version_changes"], detail["version_changes_total"]
    body = [
        f'<h1>Device {_e(name)}</h1><dl id="device-facts">'
        f'<dt>state</dt><dd data-state="{_e(device["state"])}">{_state(device["state"])}</dd>'
        f"<dt>last seen</dt><dd>{_e(_when(device['last_seen_at']))} ({_e(units.ago(device['silent_for_s'], missing=DASH))})</dd>"
        f"<dt>sync window</dt><dd>{_e(units.duration(device['sync_window_s'], missing=DASH))}</dd>"
        f"<dt>last sync</dt><dd>{_e(device['last_outcome'] or '—')} {_e(device['last_error'] or '')}</dd>"
        f"<dt>agent</dt><dd>{_e(device['agent_version'] or '—')}</dd>"
        f"<dt>backlog</dt><dd>{_num(device['backlog_batches'])} batches, {_num(device['backlog_records'])} records, "
        f"{_e(units.size(device['backlog_bytes'], missing=DASH))}</dd>"
        f"<dt>clock offset</dt><dd>{_num(device['clock_offset_s'], 1)} s</dd>"
        f"<dt>registered</dt><dd>{_e(_when(device['created_at']))}</dd>"
        f"<dt>batches landed</dt><dd>{_num(device['batches'])}</dd><dt>rows landed</dt><dd>{_num(device['rows'])}</dd></dl>"
        + ('<p class="note" id="shared-token">Two agents\' runs alternate under this name (a state dir copied to another '
           "machine, e.g. one SD-card image on several devices?): give each its own name and token.</p>"
           if detail.get("shared_token") else ""),
        "<h2>Model versions</h2>",
        _table("device-versions", ["model", "version", "predictions", "feedback", "first landed", "last landed"], [
            ({"model": v["model"], "version": v["model_version"]},
             [_e(v["model"]), _e(v["model_version"]), _num(v["predictions"]), _num(v["feedback"]), _e(_when(v["first_seen"])),
              _e(_when(v["last_seen"]))])
            for v in versions
        ]) + left_out,
        "<h2>Version changes (by the day of the first prediction on the new version)</h2>",
        _table("device-version-changes", ["model", "day", "from", "to"], [
            ({"model": v["model"], "version": v["to_version"]},
             [_e(v["model"]), _e(v["day"]), _e(v["from_version"] or "—"), _e(v["to_version"])])
            for v in changes
        ]) + (f'<p class="note">the last {len(changes):,} of {changes_total:,}</p>' if len(changes) < changes_total else ""),
        "<h2>Errors: refused uploads</h2>",
        _table("device-refusals", ["status", "code", "count", "first", "last"], [
            ({"code": r["code"]}, [_num(r["status"]), _e(r["code"]), _num(r["count"]), _e(_when(r["first_at"])),
                                   _e(_when(r["last_at"]))])
            for r in detail["refusals"]
        ]),
        f"<h2>Status history (newest {len(detail['recent_statuses'])})</h2>",
        _table("device-statuses", ["received", "outcome", "error", "backlog batches", "backlog bytes", "dropped",
                                   "free disk", "clock offset (s)"], [
            ({"status": st["status_id"], "outcome": st["outcome"]},
             [_e(_when(st["received_at"])), _e(st["outcome"]), _e(st["error"] or ""), _num(st["backlog_batches"]),
              _e(units.size(st["backlog_bytes"], missing=DASH)), _num(st["dropped"]), _e(units.size(st["free_disk_bytes"], missing=DASH)),
              _num(st["clock_offset_s"], 1)])
            for st in detail["recent_statuses"]
        ]),
        f"<h2>Batches (newest {len(detail['recent_batches'])})</h2>",
        _table("device-batches", ["batch", "model", "rows", "duplicates", "bytes", "agent", "drops", "received",
                                  "clock offset (s)"], [
            ({"batch": b["batch_id"], "rows": str(b["rows"])},
             [f"<code>{_e(b['batch_id'])}</code>", _e(b["model"]), _num(b["rows"]), _num(b["duplicates"]), _num(b["bytes"]),
              _e(b["agent_version"]), _e(b["drops"]), _e(_when(b["received_at"])), _num(b["clock_offset_s"], 1)])
            for b in detail["recent_batches"]
        ]),
    ]
    return _page(f"edgeloop: device {name}", "".join(body), models=models)


def devices_page(models: Sequence[str], listing: dict[str, Any]) -> str:
    """Every device (or those in one state), a page at a time."""
    state, offset, limit, total = listing["state"], listing["offset"], listing["limit"], listing["total"]
    query = f"state={urllib.parse.quote(state)}&" if state else ""
    links = []
    if offset > 0:
        links.append(f'<a href="/dashboard/devices?{query}offset={max(0, offset - limit)}">previous</a>')
    if offset + limit < total:
        links.append(f'<a href="/dashboard/devices?{query}offset={offset + limit}">next</a>')
    shown = f"{offset + 1:,}–{offset + len(listing['devices']):,} of {total:,}" if listing["devices"] else f"0 of {total:,}"
    body = [
        f"<h1>Devices{' ' + _e(STATE_TEXT.get(state, state)) if state else ''}</h1>",
        f'<p class="note">{shown} {" · ".join(links)}</p>',
        _table("device-list", ["device", "state", "last seen", "agent", "last sync", "backlog", "refused", "batches", "rows"], [
            ({"device": d["device"], "state": d["state"]},
             [_device_link(d["device"]), _state(d["state"]), _e(units.ago(d["silent_for_s"], missing=DASH)), _e(d["agent_version"] or "—"),
              _e(d["last_outcome"] or "—"), _e(units.size(d["backlog_bytes"], missing=DASH)), _num(d["refused"]), _num(d["batches"]),
              _num(d["rows"])])
            for d in listing["devices"]
        ]),
    ]
    return _page("edgeloop: devices", "".join(body), models=models)


def report_page(models: Sequence[str], report: Report, query: dict[str, str], rollout: dict[str, Any]) -> str:
    """Field performance of one model on one page: the report drawn by the same code as ``edgeloop-ingest report
    --format html`` (accuracy or MAE per version over time, calibration, drift) with the versions' rollout."""
    fields = "".join(
        f'<label>{_e(label)} <input name="{name}" value="{_e(query.get(name, ""))}" placeholder="{_e(hint)}"></label> '
        for name, label, hint in (("since", "since", "2026-10-08"), ("until", "until", "now"),
                                  ("version", "version", "all"))
    )
    by = query.get("by", "model_version")
    options = "".join(f'<option value="{v}"{" selected" if v == by else ""}>{v}</option>' for v in ("model_version", "device", "none"))
    bucket = query.get("bucket") or "auto"
    periods = "".join(f'<option value="{v}"{" selected" if v == bucket else ""}>{v}</option>' for v in PERIODS)
    form = (f'<form method="get" action="/dashboard/report"><input type="hidden" name="model" value="{_e(report.model)}">'
            f'{fields}<label>by <select name="by">{options}</select></label> '
            f'<label>per <select name="bucket">{periods}</select></label> <button type="submit">show</button></form>')
    section = (f'<section id="rollout"><h2>Rollout: devices per version, last {len(rollout["days"])} days</h2>'
               f"{rollout_section(rollout)}</section>")
    return _page(f"edgeloop: field performance of {report.model}",
                 form + _more_groups(report, query) + render_fragment(report, after_over_time=section), models=models)


def _more_groups(report: Report, query: dict[str, str]) -> str:
    """How many groups this page leaves out, with links to the pages before and after (same query, another offset)."""
    shown, offset, total = len(report.groups), report.groups_offset, report.groups_total
    if offset == 0 and shown >= total:
        return ""
    names = GROUP_NAMES.get(report.by, "groups")

    def link(text: str, to: int) -> str:
        params = {"model": report.model, **{k: v for k, v in query.items() if v and k != "offset"}, "offset": str(to)}
        return f'<a href="/dashboard/report?{_e(urllib.parse.urlencode(params))}">{_e(text)}</a>'

    links = []
    if offset > 0:
        links.append(link(f"the previous {min(offset, MAX_GROUPS_SHOWN):,}", max(0, offset - MAX_GROUPS_SHOWN)))
    if offset + shown < total:
        links.append(link(f"the next {min(total - offset - shown, MAX_GROUPS_SHOWN):,}", offset + shown))
    more = total - shown
    return (f'<p class="note" id="more-groups">{names} {offset + 1 if shown else 0:,}-{offset + shown:,} of {total:,} '
            f'(most predictions first); {more:,} more {names} · {" · ".join(links)} · or name one in "version"</p>')
