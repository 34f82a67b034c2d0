"""The dashboard's routes: login and logout, the pages, and the JSON endpoints they are drawn from.

    GET  /dashboard/login            the login form
    POST /dashboard/login            form ``token`` (viewer or admin) → session cookie, 303 to /dashboard
    POST /dashboard/logout           ends the session
    GET  /dashboard                  overview: rollout per model, fleet health, data
    GET  /dashboard/devices?state=&offset=   every device (or one state's), 200 a page
    GET  /dashboard/devices/{name}   one device
    GET  /dashboard/report?model=&since=&until=&by=&bucket=&version=&offset=&days=
                                     field performance of a model: the report (accuracy or MAE per
                                     version over time, calibration, drift) and the versions' rollout;
                                     the 20 versions with the most predictions from offset on
    GET  /v1/dashboard/{overview,rollout/{model},data,fleet,devices,devices/{name},report/{model}}   the same as JSON

Pages need a session (else 303 to the login page); the JSON endpoints take the session cookie or
``Authorization: Bearer`` with the viewer or admin token (else 401). Nothing here changes data
but a session: state changes are POST only, the cookie is SameSite=Strict, and a POST another
site sent (by Origin or Sec-Fetch-Site) is refused (403), so another site cannot log a browser in or out.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from aiohttp import web

from edgeloop.errors import AuthError, BatchRejected, EdgeloopError, Forbidden, QueryFailed, StoreBusy, TooManyFailures
from edgeloop.ingest import dashboard_html as pages
from edgeloop.ingest.app import AUTH, CONFIG, FAILED_LOGINS, STATE, STORE, answer_expect
from edgeloop.ingest.dashboard import MAX_DAYS, MAX_GROUPS_SHOWN, Dashboard
from edgeloop.ingest.export import wide_ints_as_text
from edgeloop.ingest.fleet import STATES, StoreReader, device_detail, fleet_overview, fleet_summary
from edgeloop.ingest.report import GROUPINGS, PERIODS, Report, build_report, declare, model_schema
from edgeloop.ingest.session import COOKIE, Sessions, client_key
from edgeloop.runner import read_body
from edgeloop.times import utc_time

__all__ = ["FAILED_LOGINS", "SESSIONS", "add_dashboard_routes"]

log = logging.getLogger(__name__)

SESSIONS = web.AppKey("sessions", Sessions)
MAX_LOGIN_BODY_BYTES = 4096
MAX_LOGIN_FIELDS = 4
DEFAULT_DAYS = 30
MAX_OFFSET = 10_000_000
MAX_VERSION_CHARS = 256
REPORT_QUERY = ("since", "until", "by", "bucket", "version", "offset")
HEADERS = {
    # Pages are self-contained: inline CSS and SVG, no script, forms only to ourselves.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
T = TypeVar("T")


def _reader(app: web.Application) -> StoreReader:
    # Our own constant SQL (fleet's and the panels'), parameters bound: the allow-list is for SQL a user sends.
    return StoreReader(app[STORE], app[CONFIG].store.sql_timeout_s, trusted=True)


def _dashboard(app: web.Application) -> Dashboard:
    reader = _reader(app)
    return Dashboard(lambda sql, params: reader.query(sql, params).to_pylist())


async def _read(request: web.Request, work: Callable[[], T]) -> T:
    """Run ``work`` on the query pool (never the upload checkers), within ``store.sql_max_concurrent``."""
    app = request.app
    state, limit = app[STATE], app[CONFIG].store.sql_max_concurrent
    if state.sql_running >= limit:
        raise StoreBusy(f"{state.sql_running} queries are running, the most store.sql_max_concurrent allows; retry later")
    state.sql_running += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(state.sql_executor, work)
    finally:
        state.sql_running -= 1


def _take_try(request: web.Request) -> None:
    """Take one of the client's tries at a token, before the token is read: refused once its failures used them up."""
    if wait_s := request.app[FAILED_LOGINS].attempt(client_key(request.remote)):
        request.app[STATE].refused_log.log(logging.INFO, "login limited", "dashboard login limited", peer=request.remote,
                                           retry_after_s=round(wait_s, 1))
        raise TooManyFailures(wait_s)


def _check_token(request: web.Request, check: Callable[[], T]) -> T:
    """``check()`` (a token's role, or AuthError) as one of the client's tries; a right token gives its try back."""
    _take_try(request)
    result = check()
    request.app[FAILED_LOGINS].succeeded(client_key(request.remote))
    return result


def _too_many(exc: TooManyFailures) -> web.Response:
    body = orjson.dumps({"error": {
        "code": "too_many_requests", "details": {"retry_after_s": exc.retry_after_s},
        "message": f"too many failed logins from this address; retry in {exc.retry_after_s} s"}})
    return web.Response(status=429, body=body, content_type="application/json",
                        headers={"Retry-After": str(exc.retry_after_s), "Cache-Control": "no-store"})


def _role(request: web.Request) -> str | None:
    """The role of the request's session cookie or bearer token, or None; a wrong bearer token is a failed login."""
    session = request.app[SESSIONS].get(request.cookies.get(COOKIE))
    if session is not None:
        return session.role
    if header := request.headers.get("Authorization"):
        return _check_token(request, lambda: request.app[AUTH].reader(header))
    return None


def _require_reader(request: web.Request) -> str:
    role = _role(request)
    if role is None:
        raise AuthError("log in at /dashboard/login, or send Authorization: Bearer <viewer token>")
    return role


def _page_or_login(request: web.Request) -> web.Response | None:
    """None if the request may see pages, else the redirect to the login form (a bad bearer token gets it too)."""
    try:
        role = _role(request)
    except AuthError:
        role = None
    if role is not None:
        return None
    return _redirect("/dashboard/login?" + urllib.parse.urlencode({"next": request.path_qs}))


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8", headers=HEADERS)


def _json(value: Any) -> web.Response:
    try:
        body = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # a whole number past 64 bits, stored before the bounds: written as its digits
        body = orjson.dumps(wide_ints_as_text(value), default=str, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


def _days(request: web.Request) -> int:
    text = request.query.get("days", str(DEFAULT_DAYS))
    try:
        days = int(text)
    except ValueError:
        raise QueryFailed(f"days must be a whole number, got {text[:40]!r}") from None
    return Dashboard.check_days(days)


# Sec-Fetch-Site values a browser sends for our own pages' posts ("none": the user's own action, never a page's).
_OWN_SITE = ("same-origin", "none")


def _same_origin(request: web.Request) -> None:
    """Refuse a state-changing POST sent by a page of another site (login CSRF).

    A browser says who sent a post in ``Sec-Fetch-Site`` (current ones) and ``Origin``. Our pages'
    ``Referrer-Policy: no-referrer`` makes a browser send ``Origin: null`` for their own forms, and so do
    sandboxed frames and data: URLs of any site: ``null`` passes only when ``Sec-Fetch-Site`` vouches for it.
    Neither header: a client that is not a browser (curl), which no other site can drive.
    """
    origin, site = request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in _OWN_SITE:
        raise Forbidden(f"a form from another site (Sec-Fetch-Site: {site[:40]!r}) may not post to this server")
    if origin is None:
        return
    if origin == "null":
        if site is None:
            raise Forbidden("a form from an opaque origin (Origin: null, no Sec-Fetch-Site) may not post to this server")
        return
    try:
        netloc = urllib.parse.urlsplit(origin).netloc
    except ValueError:  # "http://[x": not an origin a browser sends
        netloc = None
    if netloc != request.host:
        raise Forbidden(f"a form from {origin[:100]!r} may not post to this server")


# A dashboard path in printable ASCII: a control character in a Location header made aiohttp drop the connection.
_NEXT_PATH = re.compile(r"/dashboard(?:[/?#][!-~]*)?")


def _next_path(value: str | None) -> str:
    # Only a path of our own: never another host (//evil, /\evil) or a way out of /dashboard (/..) after logging in.
    if value and _NEXT_PATH.fullmatch(value) and "//" not in value and "\\" not in value and "/." not in value:
        return value
    return "/dashboard"


async def login_form(request: web.Request) -> web.Response:
    return _html(pages.login_page(next_path=_next_path(request.query.get("next"))))


async def login(request: web.Request) -> web.Response:
    _same_origin(request)
    if request.content_type != "application/x-www-form-urlencoded":
        raise BatchRejected(415, "unsupported_media_type", "log in with a form (application/x-www-form-urlencoded)")
    try:
        _take_try(request)
    except TooManyFailures as exc:
        message = f"Too many failed logins from your address: try again in {exc.retry_after_s} s."
        response = _html(pages.login_page(error=message, next_path=_next_path(request.query.get("next"))), 429)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    body = await read_body(request, max_bytes=MAX_LOGIN_BODY_BYTES, timeout_s=request.app[CONFIG].server.body_timeout_s)
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_LOGIN_FIELDS)
    except ValueError:  # more fields than that: parse_qs refuses them, and it was an unhandled error (a 500)
        raise BatchRejected(400, "bad_form", f"a login form has at most {MAX_LOGIN_FIELDS} fields (token and next)") from None
    token = (form.get("token") or [""])[0].strip()
    next_path = _next_path((form.get("next") or [None])[0])
    role = request.app[AUTH].role(token)
    if role is None:
        request.app[STATE].refused_log.log(logging.INFO, "login refused", "dashboard login refused", peer=request.remote)
        return _html(pages.login_page(error="That token is neither the viewer nor the admin token.", next_path=next_path), 401)
    request.app[FAILED_LOGINS].succeeded(client_key(request.remote))
    sessions = request.app[SESSIONS]
    session_id = sessions.create(role, client_key(request.remote))
    log.info("dashboard login", extra={"role": role, "peer": request.remote})
    response = _redirect(next_path)
    response.set_cookie(
        COOKIE, session_id, max_age=int(sessions.ttl_s), path="/", httponly=True, samesite="Strict",
        secure=request.secure or request.app[CONFIG].server.tls_cert_file is not None,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    _same_origin(request)
    request.app[SESSIONS].end(request.cookies.get(COOKIE))
    response = _redirect("/dashboard/login")
    response.del_cookie(COOKIE, path="/")
    return response


CLOCK_OUTLIER_S = 300.0  # a device whose clock is off by more than this is listed (transit is seconds)
MAX_LISTED = 200  # devices one panel lists (the counts say how many in all)
ATTENTION = ("failing", "silent", "late", "never_seen")  # states a person should look at, worst first


def _rows(table: pa.Table, order: str | None = None, *, limit: int = MAX_LISTED, descending: bool = True) -> list[dict[str, Any]]:
    if order is not None and table.num_rows:
        # Nulls last: the default, and pyarrow 25 deprecates saying so in SortOptions.
        table = table.take(pc.sort_indices(table, [(order, "descending" if descending else "ascending")]))
    return table.slice(0, limit).to_pylist()


def _fleet(app: web.Application, board: Dashboard, days: int) -> dict[str, Any]:
    """Fleet health from ``fleet``'s one query (states, backlog, refusals, clocks), plus drops per day."""
    devices = fleet_overview(_reader(app), datetime.now(UTC), app[CONFIG].fleet)
    states = devices.column("state")
    counts = {state: 0 for state in ("ok", *ATTENTION, "revoked")}
    counts.update({row["values"]: row["counts"] for row in pc.value_counts(states).to_pylist()})
    attention = []
    for state in ATTENTION:
        attention += _rows(devices.filter(pc.equal(states, state)), "silent_for_s", limit=MAX_LISTED - len(attention))
    live = devices.filter(pc.not_equal(states, "revoked"))
    offsets = live.column("clock_offset_s")
    clocks = live.filter(pc.fill_null(pc.greater(pc.abs(offsets), CLOCK_OUTLIER_S), False))
    clocks = clocks.append_column("clock_offset_abs_s", pc.abs(clocks.column("clock_offset_s")))
    return {
        "devices": devices.num_rows,
        "states": counts,
        "attention": attention,
        "backlog": _rows(live.filter(pc.fill_null(pc.greater(live.column("backlog_bytes"), 0), False)), "backlog_bytes", limit=20),
        "refused": _rows(live.filter(pc.fill_null(pc.greater(live.column("refused"), 0), False)), "refused"),
        "clock_outliers": [{k: v for k, v in row.items() if k != "clock_offset_abs_s"}
                           for row in _rows(clocks, "clock_offset_abs_s")],
        "clock_outlier_s": CLOCK_OUTLIER_S,
        "drops": board.drops(days),
    }


def _overview(app: web.Application, board: Dashboard, days: int) -> dict[str, Any]:
    models = board.models()
    return {
        "generated_at": datetime.now(UTC),
        "models": models,
        "rollout": [board.rollout(model, days) for model in models],
        "fleet": _fleet(app, board, days),
        "data": board.data(days),
    }


async def overview(request: web.Request) -> web.Response:
    if (login_first := _page_or_login(request)) is not None:
        return login_first
    days, board = _days(request), _dashboard(request.app)
    facts = await _read(request, lambda: _overview(request.app, board, days))
    return _html(pages.overview_page(facts["models"], facts["rollout"], facts["fleet"], facts["data"]))


def _device(app: web.Application, board: Dashboard, name: str) -> dict[str, Any]:
    """``fleet``'s detail of one device (state, latest status, status history, refusals, versions) and its batches."""
    detail = device_detail(_reader(app), name, datetime.now(UTC), app[CONFIG].fleet)
    if detail is None:
        raise LookupError(name)
    changes, changes_total = board.version_changes(name)
    return {**detail, "version_changes": changes, "version_changes_total": changes_total, "recent_batches": board.batches(name)}


async def device_page(request: web.Request) -> web.Response:
    if (login_first := _page_or_login(request)) is not None:
        return login_first
    name, board = request.match_info["name"], _dashboard(request.app)
    try:
        models, device = await _read(request, lambda: (board.models(), _device(request.app, board, name)))
    except LookupError:
        raise web.HTTPNotFound(text=f"no device named {name[:80]!r}") from None
    return _html(pages.device_page(models, name, device))


def _report(app: web.Application, model: str, query: dict[str, str]) -> Any:
    reader = _reader(app)
    by = query.get("by") or "model_version"
    if by not in GROUPINGS:
        raise QueryFailed(f"by must be one of {', '.join(GROUPINGS)}")
    since, until = (_timestamp(query.get(key), key) for key in ("since", "until"))
    bucket = query.get("bucket") or "auto"
    if bucket not in PERIODS:
        raise QueryFailed(f"bucket must be one of {', '.join(PERIODS)}")
    version, offset = query.get("version") or None, _offset(query.get("offset"))
    if version is not None and len(version) > MAX_VERSION_CHARS:
        raise QueryFailed(f"version is at most {MAX_VERSION_CHARS} characters")
    try:
        schema = declare(model_schema(reader, model))
    except (QueryFailed, StoreBusy):
        raise
    except EdgeloopError as exc:
        raise QueryFailed(str(exc)) from exc
    return build_report(reader, schema, since=since, until=until, by=by, bucket=bucket,  # type: ignore[arg-type]
                        version=version, max_groups=MAX_GROUPS_SHOWN, offset=offset)


def _offset(text: str | None) -> int:
    try:
        offset = int(text or "0")
    except ValueError:
        raise QueryFailed("offset must be a whole number") from None
    if not 0 <= offset <= MAX_OFFSET:
        raise QueryFailed(f"offset must be 0 to {MAX_OFFSET:,}")
    return offset


def _timestamp(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        return utc_time(text)
    except ValueError as exc:
        raise QueryFailed(f"{name} must be a date or an ISO 8601 time: {exc}") from None


PAGE_SIZE = 200


def _listing(app: web.Application, state: str | None, offset: int) -> dict[str, Any]:
    reader, now, settings = _reader(app), datetime.now(UTC), app[CONFIG].fleet
    states = [state] if state else None
    rows = fleet_overview(reader, now, settings, states=states, limit=PAGE_SIZE, offset=offset).to_pylist()
    counts = fleet_summary(reader, now, settings)
    return {"state": state or "", "offset": offset, "limit": PAGE_SIZE, "devices": rows,
            "total": counts.get(state, 0) if state else sum(counts.values())}


def _listing_query(request: web.Request) -> tuple[str | None, int]:
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        raise QueryFailed(f"state must be one of {', '.join(STATES)}")
    return state, _offset(request.query.get("offset"))


async def devices_page(request: web.Request) -> web.Response:
    if (login_first := _page_or_login(request)) is not None:
        return login_first
    state, offset = _listing_query(request)
    board = _dashboard(request.app)
    models, listing = await _read(request, lambda: (board.models(), _listing(request.app, state, offset)))
    return _html(pages.devices_page(models, listing))


async def api_devices(request: web.Request) -> web.Response:
    _require_reader(request)
    state, offset = _listing_query(request)
    return _json(await _read(request, lambda: _listing(request.app, state, offset)))


def _rollout_days(request: web.Request, report: Report, today: date) -> int:
    """``days``, or the days from the first period of the report's series to today, so both charts cover the window."""
    if "days" in request.query:
        return _days(request)
    if report.over_time is None or not report.over_time.periods:
        return DEFAULT_DAYS
    days = (today - date.fromisoformat(report.over_time.periods[0])).days + 1
    return min(max(days, 1), MAX_DAYS)


async def report_page(request: web.Request) -> web.Response:
    if (login_first := _page_or_login(request)) is not None:
        return login_first
    model = request.query.get("model", "")
    query = {key: request.query.get(key, "") for key in REPORT_QUERY}
    board = _dashboard(request.app)
    if "days" in request.query:
        _days(request)  # a bad days is the sender's error before any work
        query["days"] = request.query["days"]

    def facts() -> tuple[list[str], Report, dict[str, Any]]:
        report = _report(request.app, model, query)
        return board.models(), report, board.rollout(report.model, _rollout_days(request, report, datetime.now(UTC).date()))

    models, report, rollout = await _read(request, facts)
    return _html(pages.report_page(models, report, query, rollout))


async def api_overview(request: web.Request) -> web.Response:
    _require_reader(request)
    days, board = _days(request), _dashboard(request.app)
    return _json(await _read(request, lambda: _overview(request.app, board, days)))


async def api_rollout(request: web.Request) -> web.Response:
    _require_reader(request)
    days, board, model = _days(request), _dashboard(request.app), request.match_info["model"]
    return _json(await _read(request, lambda: board.rollout(model, days)))


async def api_data(request: web.Request) -> web.Response:
    _require_reader(request)
    days, board = _days(request), _dashboard(request.app)
    return _json(await _read(request, lambda: board.data(days)))


async def api_fleet(request: web.Request) -> web.Response:
    _require_reader(request)
    days, board = _days(request), _dashboard(request.app)
    return _json(await _read(request, lambda: _fleet(request.app, board, days)))


async def api_device(request: web.Request) -> web.Response:
    _require_reader(request)
    name, board = request.match_info["name"], _dashboard(request.app)
    try:
        return _json(await _read(request, lambda: _device(request.app, board, name)))
    except LookupError:
        raise web.HTTPNotFound(text=f"no device named {name[:80]!r}") from None


async def api_report(request: web.Request) -> web.Response:
    _require_reader(request)
    model = request.match_info["model"]
    query = {key: request.query.get(key, "") for key in REPORT_QUERY}
    report = await _read(request, lambda: _report(request.app, model, query))
    return _json(report.to_dict())


async def dashboard_root(request: web.Request) -> web.Response:
    return _redirect("/dashboard")


def _limited(handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
    """``handler``, answering a client whose wrong tokens used up its tries 429 with Retry-After, in the one error shape."""
    async def limited(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except TooManyFailures as exc:
            return _too_many(exc)
    return limited


def add_dashboard_routes(app: web.Application) -> None:
    """The login, the pages and their JSON endpoints; sessions and failed logins live in the app's memory."""
    server = app[CONFIG].server
    app[SESSIONS] = Sessions(ttl_s=server.session_ttl_s, max_sessions=server.max_sessions,
                             max_per_client=server.max_sessions_per_address)
    app.router.add_get("/dashboard/login", _limited(login_form), expect_handler=answer_expect)
    app.router.add_post("/dashboard/login", _limited(login), expect_handler=answer_expect)
    app.router.add_post("/dashboard/logout", _limited(logout), expect_handler=answer_expect)
    app.router.add_get("/dashboard", _limited(overview), expect_handler=answer_expect)
    app.router.add_get("/dashboard/", _limited(dashboard_root), expect_handler=answer_expect)
    app.router.add_get("/dashboard/devices", _limited(devices_page), expect_handler=answer_expect)
    app.router.add_get("/dashboard/devices/{name}", _limited(device_page), expect_handler=answer_expect)
    app.router.add_get("/dashboard/report", _limited(report_page), expect_handler=answer_expect)
    app.router.add_get("/v1/dashboard/overview", _limited(api_overview), expect_handler=answer_expect)
    app.router.add_get("/v1/dashboard/rollout/{model}", _limited(api_rollout), expect_handler=answer_expect)
    app.router.add_get("/v1/dashboard/data", _limited(api_data), expect_handler=answer_expect)
    app.router.add_get("/v1/dashboard/fleet", _limited(api_fleet), expect_handler=answer_expect)
    app.router.add_get("/v1/dashboard/devices", _limited(api_devices), expect_handler=answer_expect)
    app.router.add_get("/v1/dashboard/devices/{name}", _limited(api_device), expect_handler=answer_expect)
    app.router.add_get("/v1/dashboard/report/{model}", _limited(api_report), expect_handler=answer_expect)
