"""The dashboard over HTTP: viewer token, sessions, pages and JSON endpoints on a real server."""

from __future__ import annotations

import asyncio
import re
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import aiohttp
import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from edgeloop.collector.config import SpoolSettings
from edgeloop.collector.spool import Spool
from edgeloop.ingest import tallies
from edgeloop.ingest.aggregate import MAX_COUNT
from edgeloop.ingest.app import STORE
from edgeloop.ingest.charts import bars, interval_lines, lines, stacked_area
from edgeloop.ingest.dashboard import (
    MAX_DROP_REASONS_SHOWN,
    MAX_GROUPS_SHOWN,
    MAX_ROLLOUT_VERSIONS,
    MAX_VERSION_CHANGES,
    OTHER_REASONS,
    Dashboard,
    version_key,
)
from edgeloop.ingest.dashboard_app import SESSIONS
from edgeloop.ingest.dashboard_html import MAX_VERSIONS_SHOWN
from edgeloop.ingest.login_limit import FailedLogins
from edgeloop.ingest.report import MAX_PERIODS
from edgeloop.ingest.report_html import MAX_CLASSES_SHOWN
from edgeloop.ingest.session import COOKIE, Sessions
from edgeloop.schemas import EXAMPLES_DIR, ModelSchema, SchemaRegistry
from tests.ingest.conftest import make_table, seal

NOW = datetime.now(UTC).replace(microsecond=0)


def viewer_token(server) -> str:
    return server.config.server.viewer_token_path.read_text().strip()


async def land(server, tmp_path, schema, token: str, *, version: str, predictions: int, labelled: int = 0,
               days_ago: int = 0, weight: float = 1.0) -> str:
    start = NOW - timedelta(days=days_ago, hours=1)
    table, ids = make_table(schema, predictions=predictions, version=version, start=start, weight=weight)
    batch_id, body = seal(tmp_path / uuid.uuid4().hex, schema, table)
    status, receipt, _ = await server.put(batch_id, body, token)
    assert status == 201, receipt
    if labelled:
        feedback = [(record_id, "normal", start + timedelta(minutes=30)) for record_id in ids[:labelled]]
        table, _ = make_table(schema, feedback=feedback, version=version, start=start)
        fb_id, body = seal(tmp_path / uuid.uuid4().hex, schema, table)
        status, receipt, _ = await server.put(fb_id, body, token)
        assert status == 201, receipt
    return batch_id


async def login(server, session: aiohttp.ClientSession, token: str, **headers: str) -> aiohttp.ClientResponse:
    return await session.post(f"{server.url}/dashboard/login", data={"token": token, "next": "/dashboard"},
                              headers=headers, allow_redirects=False)


async def test_a_page_without_a_session_redirects_to_the_login_form(server):
    """GET /dashboard without a session is a 303 to /dashboard/login naming where to come back."""
    async with server.session.get(f"{server.url}/dashboard/devices/x?days=3", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/dashboard/login?next=%2Fdashboard%2Fdevices%2Fx%3Fdays%3D3"
    async with server.session.get(f"{server.url}/dashboard/login") as response:
        assert response.status == 200
        assert 'name="token"' in await response.text()


async def test_the_json_endpoints_need_a_session_or_a_reader_token(server):
    """/v1/dashboard/* answer 401 in the one error shape without auth, 200 with the viewer or admin bearer token."""
    for path in ("/v1/dashboard/overview", "/v1/dashboard/data", "/v1/dashboard/fleet"):
        async with server.session.get(server.url + path) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"
        async with server.session.get(server.url + path, headers={"Authorization": "Bearer nope"}) as response:
            assert response.status == 401
        for token in (viewer_token(server), server.admin_token):
            async with server.session.get(server.url + path, headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200, await response.text()


async def test_login_sets_an_httponly_strict_cookie_and_logout_ends_the_session(server):
    """A login with the viewer token sets an HttpOnly, SameSite=Strict cookie with an opaque id; logout ends it on the server."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        response = await login(server, session, viewer_token(server))
        assert response.status == 303 and response.headers["Location"] == "/dashboard"
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain HTTP here; TLS adds it
        session_id = response.cookies[COOKIE].value
        assert viewer_token(server) not in cookie and len(session_id) >= 40
        async with session.get(f"{server.url}/dashboard", allow_redirects=False) as page:
            assert page.status == 200
            assert "Content-Security-Policy" in page.headers and "script-src" not in page.headers["Content-Security-Policy"]
        async with session.post(f"{server.url}/dashboard/logout", allow_redirects=False) as out:
            assert out.status == 303
    # The old id is dead on the server even if a browser kept it.
    async with server.session.get(f"{server.url}/dashboard", cookies={COOKIE: session_id}, allow_redirects=False) as page:
        assert page.status == 303


async def test_a_wrong_token_is_refused_and_no_session_is_made(server):
    """A login with a token that is neither viewer nor admin answers 401 with the form again and sets no cookie."""
    async with aiohttp.ClientSession() as session:
        response = await login(server, session, "eld_not-a-token")
        assert response.status == 401
        assert "Set-Cookie" not in response.headers
        assert "neither the viewer nor the admin token" in await response.text()
        device_token = await server.add_device("pump-1")
        response = await login(server, session, device_token)
        assert response.status == 401  # a device token is not a dashboard login


async def test_a_login_posted_from_another_site_is_refused(server):
    """A cross-site form post to /dashboard/login (login CSRF) is 403 forbidden; the same origin is fine."""
    async with aiohttp.ClientSession() as session:
        response = await login(server, session, viewer_token(server), Origin="https://evil.example")
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "forbidden"
        response = await login(server, session, viewer_token(server), Origin=server.url)
        assert response.status == 303


@pytest.mark.parametrize("headers", [{"Origin": "null"}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "SERVER", "Sec-Fetch-Site": "cross-site"}, {"Origin": "http://[::1"}])
async def test_a_post_from_an_opaque_or_cross_site_sender_is_refused(server, headers):
    """Login and logout posted with Origin: null that no Sec-Fetch-Site: same-origin vouches for, that the browser
    says another site sent, or with an Origin that is no URL, are 403 forbidden in the error shape (Origin: null
    alone was accepted, an unparsable Origin was a 500)."""
    headers = {key: server.url if value == "SERVER" else value for key, value in headers.items()}
    async with aiohttp.ClientSession() as session:
        response = await login(server, session, viewer_token(server), **headers)
        assert response.status == 403, await response.text()
        assert (await response.json())["error"]["code"] == "forbidden" and "Set-Cookie" not in response.headers
        async with session.post(f"{server.url}/dashboard/logout", headers=headers, allow_redirects=False) as out:
            assert out.status == 403


@pytest.mark.parametrize("headers", [{}, {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
                                     {"Origin": "SERVER", "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}])
async def test_a_post_from_our_own_pages_or_a_client_that_is_no_browser_logs_in(server, headers):
    """A same-origin form post (Origin: null under our no-referrer policy, vouched for by Sec-Fetch-Site) and a client
    sending neither header (curl) log in."""
    headers = {key: server.url if value == "SERVER" else value for key, value in headers.items()}
    async with aiohttp.ClientSession() as session:
        response = await login(server, session, viewer_token(server), **headers)
        assert response.status == 303, await response.text()


@pytest.mark.parametrize("body", [b"a=1&b=2&c=3&d=4&token=x", b"&" * 40, b"token=x&next=/dashboard&" * 3])
async def test_a_login_form_with_more_fields_than_the_form_is_a_client_error(server, body):
    """A login body of more fields than the form's token and next is 400 bad_form in the error shape (it was a 500)."""
    async with server.session.post(f"{server.url}/dashboard/login", data=body, allow_redirects=False,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["code"] == "bad_form"
        assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("target", ["//evil.example/dashboard", "https://evil.example", "/dashboard\\@evil", "/v1/devices",
                                    "/dashboard\r\nSet-Cookie: edgeloop_session=fixed", "/dashboard\t/x", "/dashboardx",
                                    "/dashboard/../v1/devices", "/dashboard/\u2028"])
async def test_login_never_redirects_off_the_dashboard(server, target):
    """The ``next`` of a login is followed only when it is a dashboard path of this server in plain URL characters."""
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{server.url}/dashboard/login", data={"token": viewer_token(server), "next": target},
                                      allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/dashboard"


async def test_the_viewer_token_reads_sql_but_never_manages_devices_or_schemas(server, vibration):
    """The viewer token runs read-only SQL; device and schema management answer 403 forbidden; a write is refused."""
    headers = {"Authorization": f"Bearer {viewer_token(server)}", "Accept": "application/json"}
    async with server.session.post(f"{server.url}/v1/sql", json={"sql": "SELECT count(*) AS n FROM devices"}, headers=headers) as r:
        assert r.status == 200 and (await r.json())["rows"] == [{"n": 0}]
    async with server.session.post(f"{server.url}/v1/sql", json={"sql": "DELETE FROM devices"}, headers=headers) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "read_only"
    async with server.session.post(f"{server.url}/v1/devices", json={"name": "x"}, headers=headers) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    await server.add_device("pump-1")
    async with server.session.delete(f"{server.url}/v1/devices/pump-1", headers=headers) as r:
        assert r.status == 403
    async with server.session.post(f"{server.url}/v1/schemas", data=b"x", headers=headers) as r:
        assert r.status == 403
    async with server.session.get(f"{server.url}/v1/schemas", headers=headers) as r:
        assert r.status == 403
    rows = await server.sql("SELECT name, revoked_at FROM devices")
    assert rows == [{"name": "pump-1", "revoked_at": None}]


async def test_a_session_cookie_never_authorizes_the_admin_api(server):
    """Even a session made with the admin token cannot add devices: the admin API takes only the bearer token."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, server.admin_token)).status == 303
        async with session.post(f"{server.url}/v1/devices", json={"name": "x"}) as r:
            assert r.status == 401


async def test_rollout_and_data_match_sql(server, tmp_path, vibration):
    """The rollout shares, the devices behind, rows per day, coverage and weights equal what SQL says."""
    tokens = {name: await server.add_device(name) for name in ("pump-1", "pump-2", "pump-old")}
    await land(server, tmp_path, vibration, tokens["pump-1"], version="2.0.3", predictions=5, days_ago=3)
    await land(server, tmp_path, vibration, tokens["pump-1"], version="2.1.0", predictions=20, labelled=8)
    await land(server, tmp_path, vibration, tokens["pump-2"], version="2.1.0", predictions=10, weight=4.0)
    await land(server, tmp_path, vibration, tokens["pump-old"], version="2.0.3", predictions=6, labelled=6)
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    async with server.session.get(f"{server.url}/v1/dashboard/rollout/vibration?days=7", headers=headers) as r:
        rollout = await r.json()
    assert rollout["newest"] == "2.1.0" and rollout["upgraded"] is False
    assert [row["device"] for row in rollout["behind"]] == ["pump-old"]
    today = NOW.date().isoformat()
    day = rollout["days"].index(today)
    assert rollout["share_per_day"]["2.1.0"][day] == pytest.approx(2 / 3)
    assert rollout["share_per_day"]["2.0.3"][day] == pytest.approx(1 / 3)
    three_days_ago = rollout["days"].index((NOW - timedelta(days=3, hours=1)).date().isoformat())
    assert rollout["share_per_day"]["2.0.3"][three_days_ago] == 1.0 and rollout["devices"][three_days_ago] == 1
    async with server.session.get(f"{server.url}/v1/dashboard/data?days=7", headers=headers) as r:
        data = await r.json()
    landed = await server.sql("SELECT sum(rows - duplicates)::BIGINT AS n FROM batches WHERE model = 'vibration'")
    assert sum(data["rows_per_day"]["vibration"]) == landed[0]["n"] == 5 + 28 + 10 + 12
    expected = await server.sql(
        "SELECT model_version, count(*) AS n, count(feedback_id) AS l, sum(sample_weight) AS w "
        "FROM vibration_training GROUP BY 1 ORDER BY 1"
    )
    got = [(row["model_version"], row["predictions"], row["labelled"], row["weighted"]) for row in data["coverage"]]
    assert got == [(row["model_version"], row["n"], row["l"], row["w"]) for row in expected]
    assert got == [("2.0.3", 11, 6, 11.0), ("2.1.0", 30, 8, 60.0)]


async def test_hostile_names_are_escaped_on_every_page(server, tmp_path, vibration):
    """A model version sent by a device that is HTML is shown as text, never as markup, on the pages and in the SVG."""
    token = await server.add_device("pump-x")
    await land(server, tmp_path, vibration, token, version='<script>alert(1)</script>"', predictions=2)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        for path in ("/dashboard", "/dashboard/devices/pump-x"):
            async with session.get(server.url + path) as page:
                text = await page.text()
                assert page.status == 200
                assert "<script" not in text
                assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in text


async def test_bad_parameters_are_client_errors(server):
    """days out of range or not a number, an unknown model and an unknown device are 4xx in the one error shape."""
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    for path, status in (("/v1/dashboard/data?days=0", 400), ("/v1/dashboard/data?days=x", 400),
                         ("/v1/dashboard/data?days=100000", 400), ("/v1/dashboard/rollout/nope", 400),
                         ("/v1/dashboard/devices/nope", 404), ("/v1/dashboard/report/nope", 400)):
        async with server.session.get(server.url + path, headers=headers) as r:
            assert r.status == status, (path, await r.text())
            assert set((await r.json())["error"]) == {"code", "message", "details"}


async def test_device_page_lists_its_batches(server, tmp_path, vibration):
    """/v1/dashboard/devices/{name} lists the device's batches (as the ledger has them), its versions and its state."""
    token = await server.add_device("pump-1")
    first = await land(server, tmp_path, vibration, token, version="2.0.3", predictions=3, days_ago=1)
    second = await land(server, tmp_path, vibration, token, version="2.1.0", predictions=4)
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    async with server.session.get(f"{server.url}/v1/dashboard/devices/pump-1", headers=headers) as r:
        device = await r.json()
    assert [b["batch_id"] for b in device["recent_batches"]] == [second, first]
    assert sorted((v["model_version"], v["predictions"]) for v in device["versions"]) == [("2.0.3", 3), ("2.1.0", 4)]
    assert device["device"]["batches"] == 2 and device["device"]["rows"] == 7 and device["device"]["state"] == "ok"


def test_sessions_expire_on_the_server_and_stay_bounded():
    """A session id is unknown after its ttl, and past max_sessions the oldest session ends."""
    now = [0.0]
    sessions = Sessions(ttl_s=60, max_sessions=2, clock=lambda: now[0])
    first = sessions.create("viewer")
    assert sessions.get(first).role == "viewer"
    now[0] = 61
    assert sessions.get(first) is None
    a, b, c = (sessions.create("viewer") for _ in range(3))
    assert sessions.get(a) is None and sessions.get(b) and sessions.get(c)
    assert sessions.get("x" * 10_000) is None and sessions.get("") is None


def _from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address`` (any 127.x.y.z reaches the server on 127.0.0.1)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)),
                                 cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _logged_in(server, session: aiohttp.ClientSession) -> bool:
    async with session.get(f"{server.url}/dashboard/devices", allow_redirects=False) as page:
        return page.status == 200


async def test_logging_in_over_and_over_ends_only_ones_own_sessions(make_server):
    """A viewer logging in far past server.max_sessions from one address ends only that address's oldest sessions:
    an admin's session and another address's viewer session live on (they were evicted as the oldest)."""
    server = await make_server(server={"max_sessions": 4, "max_sessions_per_address": 2})
    async with _from("127.0.0.2") as other, _from("127.0.0.1") as admin:
        assert (await login(server, other, viewer_token(server))).status == 303
        assert (await login(server, admin, server.admin_token)).status == 303
        mine = []
        for _ in range(12):
            async with _from("127.0.0.1") as session:
                assert (await login(server, session, viewer_token(server))).status == 303
                mine.append(session.cookie_jar.filter_cookies(URL(server.url))[COOKIE].value)
        assert await _logged_in(server, other) and await _logged_in(server, admin)
        sessions = server.app[SESSIONS]
        assert [sessions.get(session_id) is not None for session_id in mine] == [False] * 10 + [True] * 2
        assert len(sessions) == 4


def test_sessions_stay_bounded_per_role_and_per_address():
    """Each role holds at most max_sessions, each address at most max_per_client of a role's; admin sessions never
    make room for viewer ones."""
    sessions = Sessions(ttl_s=60, max_sessions=3, max_per_client=2, clock=lambda: 0.0)
    admin = sessions.create("admin", "10.0.0.1")
    viewers = [sessions.create("viewer", f"10.0.0.{n}") for n in range(2, 8)]
    assert sessions.get(admin).role == "admin"
    assert [sessions.get(v) is not None for v in viewers] == [False, False, False, True, True, True]
    assert len(sessions) == 4


async def test_failed_logins_from_one_address_are_limited_and_never_block_another(make_server):
    """Past server.login_failures_burst wrong tokens an address gets the login form with 429 and Retry-After, a right
    token from it too, until a failure's worth refills; another address still logs in and has its own allowance."""
    server = await make_server(server={"login_failures_burst": 3, "login_failure_refill_s": 600})
    async with _from("127.0.0.3") as guesser, _from("127.0.0.1") as user:
        for _ in range(3):
            assert (await login(server, guesser, "eld_wrong")).status == 401
        for token in ("eld_wrong", viewer_token(server)):
            response = await login(server, guesser, token)
            assert response.status == 429 and 0 < int(response.headers["Retry-After"]) <= 600
            assert response.content_type == "text/html" and 'role="alert"' in await response.text()
            assert "Set-Cookie" not in response.headers
        assert (await login(server, user, "eld_wrong")).status == 401
        assert (await login(server, user, viewer_token(server))).status == 303


async def test_concurrent_wrong_logins_get_no_more_tries_than_the_burst(make_server):
    """Twenty wrong logins sent at once from one address get exactly login_failures_burst 401s; the rest are 429."""
    server = await make_server(server={"login_failures_burst": 3, "login_failure_refill_s": 600})
    async with _from("127.0.0.4") as guesser:
        responses = await asyncio.gather(*(login(server, guesser, f"eld_wrong{n}") for n in range(20)))
    assert sorted(r.status for r in responses) == [401] * 3 + [429] * 17


async def test_wrong_bearer_tokens_on_the_dashboard_api_share_the_limit(make_server):
    """Wrong bearer tokens on /v1/dashboard/* count as failed logins: past the burst 429 too_many_requests in the one error
    shape with Retry-After; the right token from another address is served."""
    server = await make_server(server={"login_failures_burst": 2, "login_failure_refill_s": 600})
    url = f"{server.url}/v1/dashboard/data"
    async with _from("127.0.0.5") as guesser, _from("127.0.0.1") as user:
        for status in (401, 401, 429, 429):
            async with guesser.get(url, headers={"Authorization": "Bearer eld_wrong"}) as response:
                assert response.status == status
                error = (await response.json())["error"]
        assert error["code"] == "too_many_requests" and error["details"]["retry_after_s"] == int(response.headers["Retry-After"])
        async with user.get(url, headers={"Authorization": f"Bearer {viewer_token(server)}"}) as response:
            assert response.status == 200


def test_failed_logins_refill_and_stay_bounded():
    """An address's failures refill one per refill_s up to the burst; a right login gives back its try; at most
    max_clients addresses are tracked."""
    now = [0.0]
    limit = FailedLogins(burst=2, refill_s=10, max_clients=3, clock=lambda: now[0])
    assert limit.attempt("a") == 0 and limit.attempt("a") == 0
    assert limit.attempt("a") == pytest.approx(10)
    now[0] = 4
    assert limit.attempt("a") == pytest.approx(6)
    now[0] = 10
    assert limit.attempt("a") == 0
    limit.succeeded("a")
    assert limit.attempt("a") == 0 and limit.attempt("a") > 0
    for client in "bcdefg":
        limit.attempt(client)
    assert len(limit) == 3


def test_charts_carry_their_numbers_and_escape_labels():
    """Each chart point carries its series, x and value, and a label that is markup is escaped."""
    svg = stacked_area("t", ["d1", "d2"], [("<b>", [0.25, 0.5]), ("v2", [0.75, 0.5])], percent=True)
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    points = re.findall(r'data-series="([^"]*)" data-x="([^"]*)" data-value="([^"]*)"', svg)
    assert ("v2", "d1", "0.75") in points and ("&lt;b&gt;", "d2", "0.5") in points
    assert 'data-value="3.0"' in bars("t", ["a"], [("s", [3.0])])
    assert 'data-value="2.0"' in lines("t", ["a", "b"], [("s", [1.0, 2.0])])
    assert "no data yet" in bars("t", [], [])


def test_versions_sort_as_people_read_them():
    """2.10.0 is newer than 2.9.1, and a release candidate sorts between the release before it and its own release."""
    ordered = ["2.1.0", "2.1.0.1", "2.2.0-rc1", "2.2.0-rc2", "2.2.0", "2.9.1", "2.10.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered


def test_rollout_carries_each_device_on_its_version_until_it_changes(tmp_path):
    """A device counts on the version of its newest prediction from the day it made its first one on it, on days
    without uploads too; late rows of an older version do not move it back; revoked devices are left out."""
    con = duckdb.connect(str(tmp_path / "r.duckdb"))
    con.execute("CREATE TABLE models (model VARCHAR)")
    con.execute("INSERT INTO models VALUES ('m')")
    con.execute("CREATE TABLE devices (name VARCHAR, revoked_at TIMESTAMPTZ)")
    con.execute("INSERT INTO devices VALUES ('a', NULL), ('b', NULL), ('c', NULL), ('gone', now())")
    tallies.ensure_tables(con)

    def land(*rows: tuple[str, str, str]) -> None:  # (device, version, created day); one group commit
        table = pa.table({
            "device": [r[0] for r in rows], "model_version": [r[1] for r in rows],
            "created_at": pa.array([datetime.fromisoformat(r[2] + "T12:00:00+00:00") for r in rows], pa.timestamp("us", tz="UTC")),
            "received_at": pa.array([datetime(2026, 11, 4, tzinfo=UTC)] * len(rows), pa.timestamp("us", tz="UTC")),
        })
        tallies.note_versions(con, "m", [table], datetime(2026, 11, 4, tzinfo=UTC))

    land(("c", "1.0", "2026-10-01"))
    land(("c", "2.0", "2026-10-05"), ("a", "1.0", "2026-11-01"), ("gone", "2.0", "2026-11-01"))
    land(("b", "1.0", "2026-11-02"))
    land(("a", "1.0", "2026-11-02"), ("a", "2.0", "2026-11-03"))
    land(("a", "1.0", "2026-11-02"))  # a late row of the old version

    def query(sql, params):
        return con.execute(sql, list(params) or None).to_arrow_table().to_pylist()

    board = Dashboard(query, now=lambda: datetime(2026, 11, 4, 9, tzinfo=UTC))
    rollout = board.rollout("m", days=4)  # 11-01 .. 11-04
    assert rollout["days"] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    assert rollout["devices_per_day"] == {"1.0": [1, 2, 1, 1], "2.0": [1, 1, 2, 2]}
    assert rollout["share_per_day"]["2.0"] == [0.5, 1 / 3, 2 / 3, 2 / 3]
    assert [row["device"] for row in rollout["behind"]] == ["b"] and rollout["newest"] == "2.0"


async def test_a_device_changing_versions_thousands_of_times_leaves_its_page_small(server, vibration):
    """A device with 3,000 version changes gets the newest MAX_VERSION_CHANGES of them, oldest first, and their count,
    on its JSON and its page (the JSON listed every change)."""
    await server.add_device("pump-1")
    store = server.app[STORE]
    base = datetime(2020, 1, 1, tzinfo=UTC)
    rows = [("pump-1", "vibration", (base + timedelta(hours=n)).date(), f"1.{n}" if n else None, f"1.{n + 1}",
             base + timedelta(hours=n)) for n in range(3000)]
    await asyncio.wrap_future(store.call(lambda con: con.executemany(  # as 3,000 landings that each changed its version
        "INSERT INTO version_changes (device, model, day, from_version, to_version, changed_at) VALUES (?, ?, ?, ?, ?, ?)",
        rows)))
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    async with server.session.get(f"{server.url}/v1/dashboard/devices/pump-1", headers=headers) as r:
        device = await r.json()
    assert device["version_changes_total"] == 3000
    assert [c["to_version"] for c in device["version_changes"]] == [f"1.{n + 1}" for n in range(3000 - MAX_VERSION_CHANGES, 3000)]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        async with session.get(f"{server.url}/dashboard/devices/pump-1") as page:
            text = await page.text()
    table = re.search(r'<table id="device-version-changes">.*?</table>', text, flags=re.DOTALL).group()
    assert table.count("<tr data-") == MAX_VERSION_CHANGES and f"the last {MAX_VERSION_CHANGES} of 3,000" in text


async def test_the_device_list_pages_and_filters_by_state(server, tmp_path, vibration):
    """/v1/dashboard/devices lists every device a page at a time, or those in one state; an unknown state is 400."""
    for name in ("pump-1", "pump-2", "pump-3"):
        await server.add_device(name)
    token = await server.add_device("pump-4")
    await land(server, tmp_path, vibration, token, version="2.1.0", predictions=2)
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    async with server.session.get(f"{server.url}/v1/dashboard/devices", headers=headers) as r:
        listing = await r.json()
    assert listing["total"] == 4 and [d["device"] for d in listing["devices"]] == ["pump-1", "pump-2", "pump-3", "pump-4"]
    async with server.session.get(f"{server.url}/v1/dashboard/devices?state=never_seen&offset=1", headers=headers) as r:
        listing = await r.json()
    assert listing["total"] == 3 and [d["device"] for d in listing["devices"]] == ["pump-2", "pump-3"]
    async with server.session.get(f"{server.url}/v1/dashboard/devices?state=bogus", headers=headers) as r:
        assert r.status == 400


def _svgs(page: str) -> list[ET.Element]:
    """Every inline SVG of a page, each parsed as XML (so each is well-formed on its own)."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


async def test_the_field_performance_page_has_the_series_the_calibration_plot_and_the_rollout(server, tmp_path, vibration):
    """/dashboard/report shows accuracy per version over time with intervals, the reliability diagram and the
    versions' rollout on one page, as well-formed SVG whose points are the JSON endpoint's numbers, versions escaped."""
    tokens = {name: await server.add_device(name) for name in ("pump-1", "pump-2")}
    hostile = '<script>alert(1)</script>"'
    await land(server, tmp_path, vibration, tokens["pump-1"], version="2.0.3", predictions=12, labelled=10, days_ago=3)
    await land(server, tmp_path, vibration, tokens["pump-1"], version="2.1.0", predictions=12, labelled=9)
    await land(server, tmp_path, vibration, tokens["pump-2"], version=hostile, predictions=6, labelled=6, days_ago=1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        async with session.get(f"{server.url}/dashboard/report?model=vibration&bucket=day") as page:
            assert page.status == 200
            text = await page.text()
        async with session.get(f"{server.url}/v1/dashboard/report/vibration?bucket=day") as r:
            report = await r.json()
        async with session.get(f"{server.url}/dashboard") as overview:
            assert '<a href="/dashboard/report?model=vibration">field performance: vibration</a>' in await overview.text()
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in text
    svgs = _svgs(text)
    kinds = [svg.get("class", "") + "|" + svg.get("aria-label", "") for svg in svgs]
    assert any("chart-intervals" in k for k in kinds)  # accuracy over time
    assert any("reliability diagram of 2.1.0" in k for k in kinds)  # the calibration plot
    assert 'id="rollout"' in text and any("chart-area" in k and "share of devices" in k for k in kinds)
    over = report["over_time"]
    assert over["period"] == "day" and over["metric"] == "accuracy"
    assert over["periods"][0] == (NOW - timedelta(days=3, hours=1)).date().isoformat()
    ns = "{http://www.w3.org/2000/svg}"
    (chart,) = [svg for svg in svgs if "chart-intervals" in svg.get("class", "")]
    drawn = {(g.get("data-series"), g.get("data-x")): (float(g.get("data-value")), g.find(f"{ns}title").text)
             for g in chart.iter(f"{ns}g") if g.get("class") == "point"}
    expected = {(s["version"], p["start"]): p for s in over["series"] for p in s["points"]}
    assert set(drawn) == set(expected) and (hostile, over["periods"][2]) in drawn
    for key, point in expected.items():
        value, title = drawn[key]
        assert value == point["estimate"]["value"]
        assert f"n={point['estimate']['n']:,} labelled" in title  # the labelled count behind each point


async def test_the_field_performance_page_refuses_bad_parameters_in_the_error_shape(server, tmp_path, vibration):
    """A bad bucket or days, or a model name that is markup, is a 400 in the one error shape, sent as JSON, never as a page."""
    token = await server.add_device("pump-1")
    await land(server, tmp_path, vibration, token, version="2.0.3", predictions=3, labelled=3)
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    for path in ("/v1/dashboard/report/vibration?bucket=hour", "/v1/dashboard/report/%3Cb%3E"):
        async with server.session.get(server.url + path, headers=headers) as r:
            assert r.status == 400, await r.text()
            body = await r.json()
            assert set(body["error"]) == {"code", "message", "details"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        for query in ("model=vibration&bucket=hour", "model=vibration&days=0", "model=%3Cscript%3E"):
            async with session.get(f"{server.url}/dashboard/report?{query}") as r:
                assert r.status == 400, (query, await r.text())
                assert r.content_type == "application/json"  # never rendered as a page, so nothing in it is markup
                assert set((await r.json())["error"]) == {"code", "message", "details"}


def test_interval_lines_break_at_gaps_and_carry_their_intervals():
    """The over-time chart draws a point per (series, x) with its interval and count, no line across a gap,
    escapes series names, and says so when there is nothing to draw."""
    svg = interval_lines("t", ["w1", "w2", "w3"], [
        ("<v1>", [(0.8, 0.75, 0.85, "n=100"), None, (0.82, 0.7, 0.9, "n=12")]),
        ("v2", [None, (0.9, 0.85, 0.95, "n=50"), (0.91, 0.88, 0.94, "n=80")]),
    ], percent=True)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    points = [(g.get("data-series"), g.get("data-x"), g.get("data-low"), g.get("data-high"))
              for g in root.iter(f"{ns}g") if g.get("class") == "point"]
    assert points == [("<v1>", "w1", "0.75", "0.85"), ("<v1>", "w3", "0.7", "0.9"),
                      ("v2", "w2", "0.85", "0.95"), ("v2", "w3", "0.88", "0.94")]
    assert [p.get("data-series") for p in root.iter(f"{ns}polyline")] == ["v2"]  # <v1> has no two points in a row
    assert "&lt;v1&gt;" in svg and "<v1>" not in svg.replace('data-series="&lt;v1&gt;"', "")
    assert "n=12" in svg
    assert "no data yet" in interval_lines("t", ["w1"], [("v", [None])])


REGRESSION = """
name = "eta"
version = 1
prediction_field = "eta_min"
truth_field = "actual_min"
[outputs.eta_min]
type = "float64"
required = true
[feedback.actual_min]
type = "float64"
"""


async def test_sums_past_the_largest_double_leave_every_page_drawable(server, tmp_path, vibration):
    """Finite values a device may send whose sums overflow (weights, errors near 1.8e308) never make a page a 500."""
    token = await server.add_device("pump-1")
    await land(server, tmp_path, vibration, token, version="1.0", predictions=3, weight=1.7e308)
    async with server.session.post(f"{server.url}/v1/schemas", data=REGRESSION.encode(),
                                   headers={"Authorization": f"Bearer {server.admin_token}"}) as r:
        assert r.status == 201, await r.text()
    schema = ModelSchema.from_toml(REGRESSION)
    blank = {spec.name: None for spec in schema.stored_fields}
    rows = []
    for index, (predicted, truth) in enumerate([(1.7e308, -1.7e308), (1.0, 2.0), (-1.7e308, 1.7e308)]):
        record_id, at = uuid.uuid4(), NOW - timedelta(hours=2, minutes=index)
        envelope = {"model": "eta", "model_version": "1.0", "sample_weight": 1.0}
        rows.append({**blank, **envelope, "record_id": record_id, "kind": "prediction", "created_at": at, "eta_min": predicted})
        rows.append({**blank, **envelope, "record_id": uuid.uuid4(), "kind": "feedback", "created_at": at + timedelta(minutes=1),
                     "prediction_id": record_id, "source": "gps", "actual_min": truth})
    batch_id, body = seal(tmp_path / "eta", schema, pa.Table.from_pylist(rows, schema=schema.arrow_schema))
    status, receipt, _ = await server.put(batch_id, body, token)
    assert status == 201, receipt
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        for path in ("/dashboard", "/dashboard/devices/pump-1", "/dashboard/report?model=vibration",
                     "/dashboard/report?model=eta", "/dashboard/report?model=eta&by=device"):
            async with session.get(server.url + path) as page:
                assert page.status == 200, (path, await page.text())
                for svg in _svgs(await page.text()):
                    _assert_finite_coordinates(svg)


def _assert_finite_coordinates(svg: ET.Element) -> None:
    for element in svg.iter():
        for name in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "width", "height", "points"):
            assert not re.search(r"nan|inf", element.get(name, ""), flags=re.IGNORECASE), ET.tostring(svg, encoding="unicode")


finite_or_not = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=5), st.lists(finite_or_not, min_size=3, max_size=3)), min_size=1, max_size=3))
def test_every_chart_draws_any_double(series):
    """Each chart draws any doubles (infinities, NaN, the largest finite ones) as well-formed SVG with no NaN in it."""
    labels = ["a", "b", "c"]
    intervals = [(name, [(v, v - 1, v + 1, "n") for v in values]) for name, values in series]
    for svg in (bars("t", labels, series), stacked_area("t", labels, series), lines("t", labels, series),
                interval_lines("t", labels, intervals), interval_lines("t", labels, intervals, percent=True)):
        _assert_finite_coordinates(ET.fromstring(svg))


async def test_drop_reasons_from_batches_are_bounded_like_a_status_documents(server, tmp_path, vibration):
    """A batch's drops keep at most 64 reasons named as a status document's are; the drops chart shows the largest few
    and folds the rest."""
    token = await server.add_device("pump-1")
    image = SchemaRegistry.from_dir(EXAMPLES_DIR)["image_classifier"]
    for index, schema in enumerate((vibration, image, vibration)):
        spool = Spool(tmp_path / f"spool{index}", SpoolSettings(), agent_version="test-1")
        for reason in range(100):
            spool.count_drop(f"r{index}-{reason}", reason + 1)
        spool.count_drop('<b onmouseover="x">', 5)
        spool.count_drop("spool_full", 2**63 - 1)
        batch = spool.write_batch(make_table(schema, predictions=1, start=NOW - timedelta(hours=1))[0], schema=schema)
        status, receipt, _ = await server.put(batch.batch_id, batch.path.read_bytes(), token)
        assert status == 201, receipt
    stored = await server.sql("SELECT DISTINCT reason FROM drops_daily")
    assert 64 < len(stored) <= 3 * 64 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}", row["reason"]) for row in stored)
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    async with server.session.get(f"{server.url}/v1/dashboard/fleet", headers=headers) as r:
        assert r.status == 200, await r.text()
        by_reason = (await r.json())["drops"]["by_reason"]
    assert len(by_reason) == MAX_DROP_REASONS_SHOWN + 1 and "spool_full" in by_reason and OTHER_REASONS in by_reason
    assert sum(by_reason["spool_full"]) == MAX_COUNT  # held at the tallies' largest, per model and day and summed
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        async with session.get(f"{server.url}/dashboard") as page:
            assert page.status == 200, await page.text()


async def test_a_device_sending_many_versions_leaves_the_pages_their_size(server, tmp_path, vibration):
    """One batch whose rows carry 500 model versions lists the newest few per model on the overview and the device page,
    says how many are left out, and the JSON keeps them all; each page stays small."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=500, start=NOW - timedelta(hours=2))
    index = table.schema.get_field_index("model_version")
    table = table.set_column(index, table.schema.field(index), pa.array([f"9.{n}" for n in range(500)], pa.string()))
    batch_id, body = seal(tmp_path / "many", vibration, table)
    status, receipt, _ = await server.put(batch_id, body, token)
    assert status == 201, receipt
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        for path, table_id in (("/dashboard", "coverage"), ("/dashboard/devices/pump-1", "device-versions")):
            async with session.get(server.url + path) as page:
                text = await page.text()
            assert page.status == 200 and len(text) < 200_000, (path, len(text))
            rows = re.search(rf'<table id="{table_id}">.*?</table>', text, flags=re.DOTALL).group()
            assert rows.count("<tr data-") == MAX_VERSIONS_SHOWN and 'data-version="9.499"' in rows, path
            assert f"{500 - MAX_VERSIONS_SHOWN} more versions" in text, path
        async with session.get(f"{server.url}/v1/dashboard/data") as response:
            assert len((await response.json())["coverage"]) == 500


async def test_a_fleet_on_many_versions_draws_the_largest_and_sums_the_rest(server, tmp_path, vibration):
    """With 30 devices each on its own version the rollout (JSON and chart) names the MAX_ROLLOUT_VERSIONS versions
    most devices run, the newest among them, and sums the others as one series, so each day's shares still add to 1."""
    tokens = {f"pump-{n:02}": await server.add_device(f"pump-{n:02}") for n in range(30)}
    for n, token in enumerate(tokens.values()):
        await land(server, tmp_path, vibration, token, version=f"3.{n % 27}.0", predictions=1)
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    async with server.session.get(f"{server.url}/v1/dashboard/rollout/vibration?days=3", headers=headers) as r:
        rollout = await r.json()
    assert len(rollout["versions"]) == MAX_ROLLOUT_VERSIONS and rollout["newest"] == "3.26.0" in rollout["versions"]
    assert {"3.0.0", "3.1.0", "3.2.0"} <= set(rollout["versions"])  # each runs on two devices
    other = rollout["other_versions"]
    assert other["versions"] == 27 - MAX_ROLLOUT_VERSIONS and rollout["versions_total"] == 27
    assert other["devices_now"] + sum(rollout["devices_on_version"].values()) == 30 == rollout["devices"][-1]
    assert sum(rollout["share_per_day"][v][-1] for v in rollout["versions"]) + other["share_per_day"][-1] == pytest.approx(1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        async with session.get(f"{server.url}/dashboard?days=3") as page:
            text = await page.text()
    (chart,) = [svg for svg in _svgs(text) if "chart-area" in svg.get("class", "")]
    series = {g.get("data-series") for g in chart.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "point"}
    assert len(series) == MAX_ROLLOUT_VERSIONS + 1 and f"({27 - MAX_ROLLOUT_VERSIONS} other versions)" in series
    rows = re.search(r'<table id="versions-vibration">.*?</table>', text, flags=re.DOTALL).group()
    assert rows.count("<tr data-") == MAX_ROLLOUT_VERSIONS + 1


async def test_a_model_predicting_hundreds_of_classes_leaves_the_report_page_small(server, tmp_path, vibration):
    """With 400 distinct predicted classes the report page lists the MAX_CLASSES_SHOWN largest classes and a confusion
    matrix of them plus one "(other)" row and column that keeps every count, and the JSON keeps all 401 classes."""
    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=400, start=NOW - timedelta(hours=3))
    index = table.schema.get_field_index("predicted_class")
    table = table.set_column(index, table.schema.field(index), pa.array([f"class-{n}" for n in range(400)], pa.string()))
    feedback, _ = make_table(vibration, feedback=[(record_id, "normal", NOW - timedelta(hours=2)) for record_id in ids])
    for name, rows in (("p", table), ("f", feedback)):
        status, receipt, _ = await server.put(*seal(tmp_path / name, vibration, rows), token)
        assert status == 201, receipt
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        async with session.get(f"{server.url}/dashboard/report?model=vibration") as page:
            text = await page.text()
        async with session.get(f"{server.url}/v1/dashboard/report/vibration") as response:
            (group,) = (await response.json())["groups"]
    assert page.status == 200 and len(text.encode()) < 200_000, len(text.encode())
    assert len(group["classes"]) == 401
    matrix = re.search(r"<table><thead><tr><th>truth \\ predicted</th>.*?</table>", text, flags=re.DOTALL).group()
    assert matrix.count("<tr>") == MAX_CLASSES_SHOWN + 2 and "(other)" in matrix  # the header, the classes, the rest
    cells = [int(n.replace(",", "")) for n in re.findall(r"<td[^>]*>([\d,]+)</td>", matrix)]
    assert sum(cells) == 400
    assert f"{401 - MAX_CLASSES_SHOWN} more classes" in text


async def _land_versions(server, tmp_path, schema, token: str, rows_per_version: dict[str, int]) -> None:
    """One batch of predictions, ``rows_per_version[v]`` on each version v over the last days, each one labelled."""
    versions = [v for v, n in rows_per_version.items() for _ in range(n)]
    table, ids = make_table(schema, predictions=len(versions), start=NOW - timedelta(days=3))
    classes = ["normal", "imbalance", "cavitation"]
    columns = {"model_version": versions, "confidence": [0.5 + (i % 50) / 100 for i in range(len(versions))],
               "predicted_class": [classes[i % 3] for i in range(len(versions))],
               "created_at": [NOW - timedelta(days=3) + timedelta(seconds=60 * i) for i in range(len(versions))]}
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))
    labels = [(record_id, classes[(i // 2) % 3], columns["created_at"][i] + timedelta(seconds=5)) for i, record_id in enumerate(ids)]
    feedback, _ = make_table(schema, feedback=labels)
    index = feedback.schema.get_field_index("model_version")
    feedback = feedback.set_column(index, feedback.schema.field(index), pa.array(versions, pa.string()))
    for name, rows in (("p", table), ("f", feedback)):
        status, receipt, _ = await server.put(*seal(tmp_path / name, schema, rows), token)
        assert status == 201, receipt


async def test_a_model_with_hundreds_of_versions_leaves_the_report_page_small(server, tmp_path, vibration):
    """With 300 versions the field-performance page and its JSON show the 20 with the most predictions, say how many
    more there are with a link to the next ones, keep the totals of all, and reach any version by offset or by name
    (the page held every version: 27 MB and 13 s for 5,000)."""
    token = await server.add_device("pump-1")
    rows = {f"1.{n}.0": 1 for n in range(295)} | {f"2.{n}.0": 10 + n for n in range(5)}
    await _land_versions(server, tmp_path, vibration, token, rows)
    big = sorted((v for v in rows if v.startswith("2.")), key=rows.get, reverse=True)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        async with session.get(f"{server.url}/dashboard/report?model=vibration") as page:
            text = await page.text()
        assert page.status == 200 and len(text.encode()) < 400_000, len(text.encode())
        assert text.count('aria-label="reliability diagram of ') == MAX_GROUPS_SHOWN
        assert "280 more versions" in text and "offset=20" in text
        async with session.get(f"{server.url}/v1/dashboard/report/vibration") as response:
            report = await response.json()
        assert [g["key"] for g in report["groups"]][:5] == big and len(report["groups"]) == MAX_GROUPS_SHOWN
        assert report["groups_total"] == 300 and report["groups_offset"] == 0
        assert report["collected_total"] == report["labelled_total"] == sum(rows.values())
        assert {s["version"] for s in report["over_time"]["series"]} == {g["key"] for g in report["groups"]}
        async with session.get(f"{server.url}/v1/dashboard/report/vibration?offset=290") as response:
            last = await response.json()
        assert len(last["groups"]) == 10 and last["groups_offset"] == 290 and last["groups_total"] == 300
        async with session.get(f"{server.url}/v1/dashboard/report/vibration?offset=300") as response:
            past = await response.json()
        assert past["groups"] == [] and past["notes"][0] == "offset 300 is past the last of the window's 300 versions"
        async with session.get(f"{server.url}/dashboard/report?model=vibration&version=1.7.0") as page:
            text = await page.text()
        assert page.status == 200 and text.count('aria-label="reliability diagram of ') == 1
        assert 'aria-label="reliability diagram of 1.7.0"' in text
        for query in ("offset=-1", "offset=x", "version=" + "v" * 300):
            async with session.get(f"{server.url}/v1/dashboard/report/vibration?{query}") as response:
                assert response.status == 400, query
                assert (await response.json())["error"]["code"] == "query_failed"


async def test_one_device_dating_rows_at_year_1_and_9999_leaves_the_default_report_page_drawable(server, tmp_path, vibration):
    """With labelled predictions created in years 1, now and 9999, the default field-performance page answers 200 with
    a series of at most 400 months ending this month, and says so (it was 400: "more than 400 months")."""
    token = await server.add_device("pump-1")
    for index, start in enumerate((datetime(1, 1, 2, tzinfo=UTC), NOW - timedelta(hours=2), datetime(9999, 12, 30, tzinfo=UTC))):
        table, ids = make_table(vibration, predictions=2, start=start)
        feedback, _ = make_table(vibration, feedback=[(ids[0], "normal", start + timedelta(seconds=5))], start=start)
        for name, rows in (("p", table), ("f", feedback)):
            status, receipt, _ = await server.put(*seal(tmp_path / f"{name}{index}", vibration, rows), token)
            assert status == 201, receipt
    headers = {"Authorization": f"Bearer {viewer_token(server)}"}
    async with server.session.get(f"{server.url}/v1/dashboard/report/vibration", headers=headers) as response:
        assert response.status == 200, await response.text()
        report = await response.json()
    periods = report["over_time"]["periods"]
    assert len(periods) <= MAX_PERIODS and periods[-1] == NOW.date().replace(day=1).isoformat()
    assert any("more than 400 months" in note for note in report["notes"])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await login(server, session, viewer_token(server))).status == 303
        async with session.get(f"{server.url}/dashboard/report?model=vibration") as page:
            assert page.status == 200, await page.text()
        async with session.get(f"{server.url}/dashboard/report?model=vibration&bucket=day") as page:
            assert page.status == 400  # a period the sender chose still has its bound
