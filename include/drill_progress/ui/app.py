"""FastAPI app of the Drill Progress page, mounted by the plugin under /drill-progress.

Built on the api-server's first request to the prefix (see drill_progress.ui.LazyASGIApp), so
Airflow's server modules are imported here freely.

Authentication: Airflow does not protect plugin routes, so the page and every data route depend
on Airflow's own checks: the caller must present the JWT the api-server issued, as
`Authorization: Bearer <token>` or as the `_token` cookie the Airflow UI keeps (the same two ways
Airflow's own API accepts), be allowed to see the UI (`requires_access_view(AccessView.WEBSITE)`)
**and** be allowed to read every DAG whose data the page shows (`PAGE_DAG_IDS`, checked with the
auth manager's `batch_is_authorized_dag`, method GET: the same permission as opening those DAGs
in the UI). Missing credentials -> 401, an invalid token or a missing permission -> 403.

**User lookup** (`POST api/lookup`, a JSON body `{"phone_number": "..."}`): one user's whole story
(drill_progress.ui.lookup). It is personal data, so besides the page's permission it requires
**read access to the Airflow connection `drill_progress_db`** (the auth manager's
`is_authorized_connection`, method GET, for that conn_id; with FAB "can read on Connections", the
Op and Admin roles; with the SimpleAuthManager the op and admin roles). Why that permission: whoever
may read that connection holds the credentials of the drill database and can already read every
user's rows with SQL, so the lookup shows personal data to nobody who could not already see it,
while the page's own permission (reading DAGs, which Viewers have) shows only figures. Each lookup
writes a row to Airflow's audit log (table `log`, Browse -> Audit Log; event
`drill_progress.user_lookup`, owner = the user, `dttm` = when, `extra` = the number masked to its
last 4 digits at most and the outcome), as the api-server's own `action_logging` does (which is not
used as is: it would copy the request body, the full number, into the row). The number travels
only in the POST body: never in a path or query string, which the api-server's access log keeps;
a GET is refused (405). A number without a user answers 404 `no user with this phone number`,
with the records set aside for that number.

The login bridge (`login`, `login.js`, `POST session`) is off unless the Airflow setting
`[drill_progress] ui_login_bridge` is true (environment variable
`AIRFLOW__DRILL_PROGRESS__UI_LOGIN_BRIDGE=true`); off, its routes answer 404. It exists for
screenshots (scripts/screenshot_ui.py): a static page without data that trades a token from the
URL *fragment* (never sent to the server, never logged) for Airflow's `_token` cookie via
`POST session`, which itself requires the token as a Bearer header (so it cannot be driven
cross-site).

The drill database is read through the `drill_progress_db` connection, resolved at request
time (never at import) by `drill_progress.connections` (the package's one engine cache).

No `from __future__ import annotations` here: FastAPI must see the real dependency types of the
routes defined inside create_app(), whose Airflow imports are local to it.
"""

import html
import json
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from drill_progress.privacy import mask_phone
from drill_progress.ui import PAGE_NAME, lookup, queries

# The DAGs whose data the page shows (progress report, today's figures, ingestion health,
# commands): reading the page requires read access to each of them.
PAGE_DAG_IDS = (
    "dialog_event_ingest",
    "drill_progress_monitor",
    "drill_progress_report",
    "schedule_next_drills",
    "trigger_reminders",
)
LOGIN_BRIDGE_SETTING = ("drill_progress", "ui_login_bridge")
# The user lookup shows personal data: it needs read access to the connection whose credentials
# already give every user's rows (see the module's docstring).
LOOKUP_CONN_ID = "drill_progress_db"
AUDIT_EVENT = "drill_progress.user_lookup"
LOOKUP_PATH = "/api/lookup"
LOOKUP_BODY_HINT = 'send the number as a JSON body: {"phone_number": "+15551230001"}'

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PUBLIC_ASSETS = {"login.js": "text/javascript"}
PRIVATE_ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def default_engine() -> Engine:
    """The drill database for the page: connection `drill_progress_db`, role "ui" (short timeouts),
    the package's one engine cache (re-checked against the connection every minute)."""
    from drill_progress import connections

    return connections.db_engine("ui")


def _login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    try:
        return get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # a login link is a convenience: never fail the error page
        return "/"


def login_bridge_enabled() -> bool:
    """`[drill_progress] ui_login_bridge` (AIRFLOW__DRILL_PROGRESS__UI_LOGIN_BRIDGE), read on each request."""
    from airflow.configuration import conf

    return conf.getboolean(*LOGIN_BRIDGE_SETTING, fallback=False)


def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def create_app(engine_provider: Callable[[], Engine] | None = None) -> FastAPI:
    from airflow.api_fastapi.app import get_auth_manager, get_cookie_path
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView, DagDetails
    from airflow.api_fastapi.core_api.security import GetUserDep, bearer_scheme, requires_access_view
    from airflow.configuration import conf

    get_engine = engine_provider or default_engine
    assets = {name: _asset(name) for name in (*PUBLIC_ASSETS, *PRIVATE_ASSETS, "page.html", "login.html")}

    app = FastAPI(title=f"{PAGE_NAME} (Airflow plugin)", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def auth_error_page(request: Request, exc: StarletteHTTPException):
        wants_html = "text/html" in request.headers.get("accept", "") and "/api/" not in request.url.path
        if exc.status_code in (401, 403) and wants_html:
            link = html.escape(_login_url(request), quote=True)
            body = (
                f"<!doctype html><title>{PAGE_NAME}: sign in</title><p>{html.escape(str(exc.detail))}. "
                f'<a href="{link}">Sign in to Airflow</a> and open {PAGE_NAME} again.</p>'
            )
            return HTMLResponse(body, status_code=exc.status_code)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def lookup_body_refused(request: Request, exc: RequestValidationError):
        # FastAPI's own answer quotes the input back: for the lookup that may be a phone number
        if request.url.path.endswith(LOOKUP_PATH):
            return JSONResponse({"detail": LOOKUP_BODY_HINT}, status_code=422)
        return await request_validation_exception_handler(request, exc)

    # ---- public, when enabled: the static login bridge (no data) -----------------------------
    def login_bridge_on() -> None:
        if not login_bridge_enabled():
            raise HTTPException(404, "not found")

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False, dependencies=[Depends(login_bridge_on)])
    def login_page(request: Request) -> HTMLResponse:
        link = html.escape(_login_url(request), quote=True)
        return HTMLResponse(assets["login.html"].replace("{{LOGIN_URL}}", link))

    @app.get("/login.js", include_in_schema=False, dependencies=[Depends(login_bridge_on)])
    def login_js() -> Response:
        return Response(assets["login.js"], media_type=PUBLIC_ASSETS["login.js"])

    @app.post("/session", status_code=204, dependencies=[Depends(login_bridge_on)])
    def session(
        request: Request,
        user: GetUserDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Response:
        """Trade a valid Bearer token for Airflow's own `_token` cookie (as Airflow's login does)."""
        if bearer is None:
            raise HTTPException(400, "send the token as an Authorization: Bearer header")
        response = Response(status_code=204)
        secure = request.base_url.scheme == "https" or bool(conf.get("api", "ssl_cert", fallback=""))
        response.set_cookie(
            COOKIE_NAME_JWT_TOKEN,
            bearer.credentials,
            path=get_cookie_path(),
            httponly=True,
            secure=secure,
            samesite="lax",
        )
        return response

    # ---- everything else: an authenticated Airflow user allowed to see the UI and to read the
    # ---- DAGs whose data the page shows --------------------------------------------------------
    def requires_page_dags(user: GetUserDep) -> None:
        wanted = [{"method": "GET", "details": DagDetails(id=dag_id)} for dag_id in PAGE_DAG_IDS]
        if not get_auth_manager().batch_is_authorized_dag(wanted, user=user):
            raise HTTPException(403, f"Forbidden: {PAGE_NAME} needs read access to the DAGs {', '.join(PAGE_DAG_IDS)}")

    private = APIRouter(dependencies=[Depends(requires_access_view(AccessView.WEBSITE)), Depends(requires_page_dags)])

    @private.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(assets["page.html"])

    @private.get("/static/{name}", include_in_schema=False)
    def private_asset(name: str) -> Response:
        if name not in PRIVATE_ASSETS:
            raise HTTPException(404, "not found")
        return Response(assets[name], media_type=PRIVATE_ASSETS[name])

    @private.get("/api/whoami")
    def whoami(user: GetUserDep) -> dict:
        return {"username": user.get_name()}

    @private.get("/api/employers")
    def employers() -> JSONResponse:
        return JSONResponse({"employers": queries.employers(get_engine())})

    @private.get("/api/completions")
    def completions(
        employer_id: Annotated[str, Query(min_length=1, max_length=200)],
        days: Annotated[int, Query(ge=1, le=366)] = 30,
        until: date | None = None,
    ) -> JSONResponse:
        return JSONResponse(queries.completions(get_engine(), employer_id, days, until))

    @private.get("/api/funnel")
    def funnel(
        employer_id: Annotated[str, Query(min_length=1, max_length=200)], report_date: date | None = None
    ) -> JSONResponse:
        return JSONResponse(queries.funnel(get_engine(), employer_id, report_date))

    @private.get("/api/health/checkpoints")
    def checkpoints() -> JSONResponse:
        return JSONResponse({"checkpoints": queries.checkpoints(get_engine())})

    @private.get("/api/health/rejections")
    def rejections(
        hours: Annotated[int, Query(ge=1, le=24 * 14)] = 24, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> JSONResponse:
        return JSONResponse(queries.rejections(get_engine(), hours, limit))

    @private.get("/api/health/lag")
    def ingestion_lag(hours: Annotated[int, Query(ge=1, le=48)] = 6) -> JSONResponse:
        return JSONResponse(queries.lag(get_engine(), hours))

    @private.get("/api/health/commands")
    def commands(days: Annotated[int, Query(ge=1, le=90)] = 14) -> JSONResponse:
        return JSONResponse(queries.commands(get_engine(), days))

    add_user_lookup(private, get_engine)
    app.include_router(private)
    return app


def add_user_lookup(router: APIRouter, get_engine: Callable[[], Engine]) -> None:
    """`POST api/lookup` on the page's router (its permission, plus read access to the connection
    drill_progress_db), audit-logged (see the module's docstring)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import GetUserDep

    def requires_lookup_permission(user: GetUserDep) -> None:
        details = ConnectionDetails(conn_id=LOOKUP_CONN_ID)
        if not get_auth_manager().is_authorized_connection(method="GET", details=details, user=user):
            raise HTTPException(
                403, f"Forbidden: the user lookup needs read access to the Airflow connection {LOOKUP_CONN_ID}"
            )

    @router.post(LOOKUP_PATH, dependencies=[Depends(requires_lookup_permission)])
    def user_lookup(
        user: GetUserDep,
        session: SessionDep,
        phone_number: Annotated[str, Body(embed=True, min_length=1, max_length=lookup.MAX_INPUT)],
    ) -> JSONResponse:
        masked = mask_phone(phone_number)
        outcome = "error"
        try:
            story = lookup.lookup(get_engine(), phone_number)
            if story is None:
                outcome = "not found"
                return JSONResponse(lookup.not_found(get_engine(), phone_number), status_code=404)
            outcome = "found"
            return JSONResponse(story)
        except lookup.NotAPhoneNumber as exc:
            outcome = "not a phone number"
            raise HTTPException(422, str(exc)) from None
        finally:
            audit(session, user.get_name(), masked, outcome)


def audit(session, username: str, masked_phone: str, outcome: str) -> None:
    """One row of Airflow's audit log (Browse -> Audit Log) for a user lookup, written the way the
    api-server's `action_logging` writes its own: the Log model through the request's session."""
    from airflow.models import Log

    extra = {"phone_number": masked_phone, "outcome": outcome, "method": "POST"}
    session.add(Log(event=AUDIT_EVENT, owner=username, owner_display_name=username, extra=json.dumps(extra)))
    session.commit()
    log.info("user lookup by %s for %s: %s", username, masked_phone, outcome)
