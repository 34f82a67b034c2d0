"""The dashboard in a real headless Chromium (Debian's), against a real server with a few devices.

Playwright drives /usr/bin/chromium; no browser is downloaded. Screenshots go to the test's
tmp_path; with EDGELOOP_DASHBOARD_SCREENSHOT=path the overview is also saved there (how
docs/dashboard.png is made).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.ingest.conftest import (
    call_json,
    free_port,
    make_table,
    put_batch,
    seal,
    spawn_server,
    stop_server,
    write_config,
)
from tests.ingest.test_health import status_document

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
    pytest.mark.timeout(300),
]


def _sql(base: str, token: str, sql: str) -> list[dict[str, Any]]:
    status, body = call_json(f"{base}/v1/sql", token, "POST", {"sql": sql})
    assert status == 200, body
    return body["rows"]


SYNC_WINDOW_S = 10  # the server's default window for devices that declared none; silent after 2 windows


def _land(port: int, tmp_path: Path, schema: Any, token: str, version: str, predictions: int, labelled: int,
          start: datetime, weight: float) -> None:
    table, ids = make_table(schema, predictions=predictions, version=version, start=start, weight=weight)
    batch_id, data = seal(tmp_path / uuid.uuid4().hex, schema, table)
    assert put_batch(port, batch_id, data, token) == 201
    if labelled:
        feedback = [(record_id, "cavitation", start + timedelta(minutes=5)) for record_id in ids[:labelled]]
        table, _ = make_table(schema, feedback=feedback, version=version, start=start)
        batch_id, data = seal(tmp_path / uuid.uuid4().hex, schema, table)
        assert put_batch(port, batch_id, data, token) == 201


def _state(base: str, token: str, device: str) -> str:
    status, body = call_json(f"{base}/v1/dashboard/devices/{device}", token)
    assert status == 200, body
    return body["device"]["state"]


@pytest.fixture
def fleet(tmp_path):
    """A server with four devices: two on 2.1.0, one still on 2.0.3, one gone silent (nothing for 2 sync windows)."""
    schema = SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]
    port = free_port()
    fleet_settings = f"[fleet]\ndefault_sync_window_s = {SYNC_WINDOW_S}\nsilent_after_windows = 2\ngrace_s = 0\n"
    process = spawn_server(write_config(tmp_path, port, fleet_settings), tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    admin = (tmp_path / "admin.token").read_text().strip()
    now = datetime.now(UTC).replace(microsecond=0)
    plan = {  # device → [(version, predictions, labelled, days ago, sample weight)]; the silent one lands first
        "pump-silent": [("2.1.0", 25, 5, 9, 1.0)],
        "pump-01": [("2.0.3", 40, 10, 6, 1.0), ("2.1.0", 60, 30, 1, 1.0), ("2.1.0", 50, 20, 0, 2.0)],
        "pump-02": [("2.0.3", 30, 0, 5, 1.0), ("2.1.0", 80, 40, 0, 1.0)],
        "pump-old": [("2.0.3", 70, 35, 4, 1.0), ("2.0.3", 45, 5, 0, 4.0)],
    }
    try:
        tokens = {}
        viewer = (tmp_path / "viewer.token").read_text().strip()
        for device, batches in plan.items():
            status, body = call_json(f"{base}/v1/devices", admin, "POST", {"name": device})
            assert status == 201, body
            tokens[device] = body["token"]
            for version, predictions, labelled, days_ago, weight in batches[:-1] if device != "pump-silent" else batches:
                _land(port, tmp_path, schema, tokens[device], version, predictions, labelled,
                      now - timedelta(days=days_ago, hours=2), weight)
        deadline = time.monotonic() + 90
        while _state(base, viewer, "pump-silent") != "silent":
            assert time.monotonic() < deadline, "pump-silent never turned silent"
            time.sleep(0.5)
        # The others' last batches arrive now, and each declares an hour's sync window: they stay heard from
        # however long a loaded machine takes to start Chromium and walk the pages (the default window is 10 s).
        for device, batches in plan.items():
            if device != "pump-silent":
                version, predictions, labelled, days_ago, weight = batches[-1]
                _land(port, tmp_path, schema, tokens[device], version, predictions, labelled,
                      now - timedelta(days=days_ago, hours=2), weight)
                document = status_document(drops={})
                status, body = call_json(f"{base}/v1/status/{document['status_id']}", tokens[device], "PUT", document)
                assert status == 201, body
        yield base, admin, viewer, now
    finally:
        stop_server(process)


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def _points(page, model: str, series: str) -> dict[str, float]:
    """x → value of one series in a model's rollout chart, read from the drawn SVG."""
    found = page.eval_on_selector_all(
        f'#rollout-{model} svg g.point[data-series="{series}"]',
        "nodes => nodes.map(n => [n.getAttribute('data-x'), Number(n.getAttribute('data-value'))])",
    )
    return dict(found)


def test_the_dashboard_in_chromium_shows_what_sql_says(fleet, browser, tmp_path):
    """Without a session the page redirects to login; after logging in with the viewer token the charts and tables
    show the numbers SQL gives, the silent device is flagged, the device on the old version is listed, and its page
    lists its batches."""
    base, admin, viewer, now = fleet
    page = browser.new_page()
    page.goto(f"{base}/dashboard")
    assert page.url.startswith(f"{base}/dashboard/login?next=")
    page.screenshot(path=str(tmp_path / "login.png"))

    page.fill("#token", "eld_wrong")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text().startswith("That token is neither")

    page.fill("#token", viewer)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard")
    cookie = next(c for c in browser.cookies() if c["name"] == "edgeloop_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and viewer not in cookie["value"]
    assert viewer not in page.url
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    if target := os.environ.get("EDGELOOP_DASHBOARD_SCREENSHOT"):
        page.screenshot(path=target, full_page=False)

    # Rollout: the share of devices on each version, per day, as SQL counts it (each device on the
    # version of its newest prediction made up to that day).
    for days_ago in (0, 3, 5):
        day = (now - timedelta(days=days_ago)).date().isoformat()
        per_version = _sql(base, viewer, (
            "WITH last AS (SELECT device, arg_max(model_version, created_at) AS v FROM vibration "
            f"WHERE CAST(timezone('UTC', created_at) AS DATE) <= DATE '{day}' GROUP BY device) "
            "SELECT v, count(*) AS n FROM last GROUP BY v"
        ))
        active = sum(row["n"] for row in per_version)
        for row in per_version:
            assert _points(page, "vibration", row["v"])[day] == pytest.approx(row["n"] / active), (day, row)
        if days_ago == 0:
            assert {row["v"]: row["n"] for row in per_version} == {"2.1.0": 3, "2.0.3": 1}
    behind = page.eval_on_selector_all("#behind-vibration tbody tr", "rows => rows.map(r => r.dataset.device)")
    assert behind == ["pump-old"]

    # Fleet health: the silent device is flagged, the others are not; the counts per state add up.
    flagged = dict(page.eval_on_selector_all("#attention tbody tr", "rows => rows.map(r => [r.dataset.device, r.dataset.state])"))
    assert flagged.get("pump-silent") == "silent"
    assert all(state != "silent" for device, state in flagged.items() if device != "pump-silent")
    counts = dict(page.eval_on_selector_all("#states tbody tr", "rows => rows.map(r => [r.dataset.state, Number(r.dataset.devices)])"))
    assert sum(counts.values()) == 4 and counts["silent"] == 1
    assert page.locator("#rollout-vibration [data-upgraded=false]").count() == 1

    # Data: rows landed today per model, and coverage and weights per version.
    today = now.date().isoformat()
    landed = _sql(base, viewer, f"SELECT sum(rows - duplicates)::BIGINT AS n FROM batches WHERE model = 'vibration' "
                                f"AND CAST(timezone('UTC', received_at) AS DATE) = DATE '{today}'")[0]["n"]
    drawn = page.eval_on_selector_all(
        f'#data svg.chart-bars g.point[data-series="vibration"][data-x="{today}"]',
        "nodes => nodes.map(n => Number(n.getAttribute('data-value')))",
    )
    assert drawn == [landed]
    coverage = _sql(base, viewer, "SELECT model_version, count(*) AS n, count(feedback_id) AS l, sum(sample_weight) AS w "
                                  "FROM vibration_training GROUP BY 1 ORDER BY 1")
    rows = page.eval_on_selector_all("#coverage tbody tr", "rows => rows.map(r => ({...r.dataset}))")
    assert [(r["version"], int(r["predictions"]), int(r["labelled"]), float(r["weighted"])) for r in rows] == [
        (c["model_version"], c["n"], c["l"], c["w"]) for c in coverage
    ]
    cells = page.locator('#coverage tr[data-version="2.0.3"] td').all_inner_texts()
    assert cells[4] == f"{100 * coverage[0]['l'] / coverage[0]['n']:.1f}%"

    # The device page of the device left behind lists its batches as the ledger has them.
    page.click('#behind-vibration a:text("pump-old")')
    page.wait_for_url(f"{base}/dashboard/devices/pump-old")
    listed = page.eval_on_selector_all("#device-batches tbody tr", "rows => rows.map(r => r.dataset.batch)")
    ledger = _sql(base, viewer, "SELECT batch_id FROM batches WHERE device = 'pump-old' ORDER BY received_at DESC")
    assert listed == [row["batch_id"] for row in ledger] and len(listed) == 4
    assert page.locator("#device-facts [data-state]").get_attribute("data-state") in ("ok", "late")
    page.screenshot(path=str(tmp_path / "device.png"), full_page=True)

    # The field report page is the CLI's report, drawn by the same code.
    # With accuracy per version per day drawn as the JSON endpoint computes it, the calibration plot and the rollout.
    page.goto(f"{base}/dashboard/report?model=vibration")
    assert page.locator("h1").first.inner_text().startswith("Field performance of vibration")
    over_time = page.locator("svg.chart-intervals")
    box = over_time.bounding_box()
    assert over_time.is_visible() and box is not None and box["width"] > 300 and box["height"] > 100
    drawn = page.eval_on_selector_all("svg.chart-intervals g.point", "nodes => nodes.map(n => "
                                      "[n.dataset.series, n.dataset.x, Number(n.dataset.value)])")
    status, report = call_json(f"{base}/v1/dashboard/report/vibration", viewer)
    assert status == 200, report
    expected = [[s["version"], p["start"], p["estimate"]["value"]] for s in report["over_time"]["series"]
                for p in s["points"] if p["estimate"]["value"] is not None]
    assert sorted(drawn) == sorted(expected) and {v for v, _, _ in drawn} == {"2.0.3", "2.1.0"}
    assert page.locator('svg[aria-label^="reliability diagram of"]').count() == 2
    assert page.locator("#rollout svg.chart-area").is_visible()
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)

    # The viewer reads but never manages devices; logging out ends the session.
    assert call_json(f"{base}/v1/devices", viewer, "POST", {"name": "intruder"})[0] == 403
    page.goto(f"{base}/dashboard")
    page.click("header button[type=submit]")
    page.wait_for_url(f"{base}/dashboard/login")
    page.goto(f"{base}/dashboard")
    assert page.url.startswith(f"{base}/dashboard/login")
    for name in ("login", "overview", "device", "report"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
