"""The Drill Progress plugin over HTTP, mounted in Airflow's own api-server app (create_app) from
the repository's plugins/ folder: authentication on every route, the JSON endpoints' data, and
no full phone numbers anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import report_dataset as dataset

from drill_progress.report import daily as report

PHONE = "+15551230001"
PREFIX = "/drill-progress"
PRIVATE_ROUTES = [
    "/",
    "/static/page.js",
    "/static/page.css",
    "/api/whoami",
    "/api/employers",
    "/api/completions?employer_id=7",
    "/api/funnel?employer_id=7",
    "/api/health/checkpoints",
    "/api/health/rejections",
    "/api/health/commands",
    "/api/health/lag",
]
BRIDGE_SETTING = "AIRFLOW__DRILL_PROGRESS__UI_LOGIN_BRIDGE"


def mint_token(username="admin", role="admin", **kwargs) -> str:
    """A JWT exactly as the api-server issues it (the auth manager's signer and secret)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role), **kwargs)


def auth(token: str | None = None) -> dict:
    return {"Authorization": f"Bearer {token or mint_token()}"}


@pytest.fixture
def report_db(drill_db):
    """The hand-built aggregate, its report for 03-10 and 03-11, and pipeline-health rows."""
    dataset.load(drill_db.engine)
    report.build_day(drill_db.engine, report.ReportDay(dataset.DAY))
    report.build_day(drill_db.engine, report.ReportDay(dataset.NEXT_DAY))
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO stream_checkpoints (stream, shard_id, sequence_number, behind_ms, records_applied, "
            "updated_at) VALUES ('dialog-events', 'shardId-000000000000', '49', 1500, 120, now()), "
            "('dialog-events', 'shardId-000000000001', '77', 0, 80, now() - interval '10 minutes')"
        )
        conn.exec_driver_sql(
            "INSERT INTO rejected_records (stream, shard_id, sequence_number, partition_key, raw_data, reason, "
            "rejected_at) VALUES "
            "('dialog-events', 'shardId-000000000000', '101', %(p)s, convert_to(%(raw)s, 'UTF8'), "
            " 'unknown event_type', now() - interval '1 hour'), "
            "('dialog-events', 'shardId-000000000000', '102', %(p)s, convert_to(%(raw)s, 'UTF8'), "
            " %(reason)s, now() - interval '2 hours'), "
            "('dialog-events', 'shardId-000000000001', '103', NULL, convert_to('not json', 'UTF8'), "
            " 'not valid JSON', now() - interval '3 hours'), "
            "('dialog-events', 'shardId-000000000001', '9', %(p)s, convert_to(%(raw)s, 'UTF8'), "
            " 'not valid JSON', now() - interval '30 hours')",
            {
                "p": PHONE,
                "raw": json.dumps({"phone_number": PHONE}),
                "reason": f"schema: seq of {PHONE} is not a number",
            },
        )
        conn.exec_driver_sql(
            "INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, "
            "created_at, published_at) "
            "SELECT 'k' || g, CASE WHEN g %% 3 = 0 THEN 'TRIGGER_REMINDER' ELSE 'START_DRILL' END, %(p)s, "
            "       jsonb_build_object('phone_number', %(p)s::text), 'test', "
            "       CASE WHEN g <= 6 THEN now() - interval '1 minute' WHEN g <= 9 THEN now() - interval '1 day 1 minute' "
            "            ELSE now() - interval '3 days' END, "
            "       CASE WHEN g <= 6 THEN now() WHEN g <= 9 THEN now() - interval '1 day' END "
            "FROM generate_series(1, 10) AS g",
            {"p": PHONE},
        )
    return drill_db


# ---------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("route", PRIVATE_ROUTES)
def test_every_route_refuses_requests_without_credentials(client, route):
    response = client.get(PREFIX + route)
    assert response.status_code == 401, response.text


def test_page_without_credentials_offers_the_airflow_login(client):
    response = client.get(PREFIX + "/", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert "text/html" in response.headers["content-type"]
    assert "/auth/login" in response.text and "Sign in to Airflow" in response.text


@pytest.mark.parametrize("route", ["/api/employers", "/"])
def test_invalid_or_expired_tokens_are_refused(client, route):
    assert client.get(PREFIX + route, headers=auth("not-a-jwt")).status_code == 403
    forged = mint_token()[:-4] + "AAAA"
    assert client.get(PREFIX + route, headers=auth(forged)).status_code == 403
    assert client.get(PREFIX + route, cookies={"_token": "garbage"}).status_code in (401, 403)
    expired = mint_token(expiration_time_in_seconds=-60)
    assert client.get(PREFIX + route, headers=auth(expired)).status_code == 401


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_valid_airflow_credentials_are_accepted_as_bearer_or_cookie(client, report_db, role):
    token = mint_token(username=f"someone-{role}", role=role)
    by_header = client.get(PREFIX + "/api/whoami", headers=auth(token))
    assert by_header.status_code == 200 and by_header.json() == {"username": f"someone-{role}"}
    client.cookies.set("_token", token)
    try:
        assert client.get(PREFIX + "/api/employers").status_code == 200
        page = client.get(PREFIX + "/")
    finally:
        client.cookies.clear()
    assert page.status_code == 200
    assert "<title>Drill Progress</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


class _DagPermissions:
    """The auth manager's is_authorized_dag, except that `user` may not read `dag_id`; records the
    DAG ids it was asked about."""

    def __init__(self, original, user: str, dag_id: str):
        self.original, self.user, self.dag_id = original, user, dag_id
        self.asked: set[str] = set()

    def __call__(self, *, method, user, access_entity=None, details=None):
        self.asked.add(details.id if details else None)
        if user.get_name() == self.user and details is not None and details.id == self.dag_id:
            return False
        return self.original(method=method, user=user, access_entity=access_entity, details=details)


@pytest.mark.parametrize("route", PRIVATE_ROUTES)
def test_every_route_needs_read_access_to_the_pages_dags(client, report_db, monkeypatch, route):
    from airflow.api_fastapi.app import get_auth_manager

    from drill_progress.ui.app import PAGE_DAG_IDS

    manager = get_auth_manager()
    permissions = _DagPermissions(manager.is_authorized_dag, "no-ingest", "dialog_event_ingest")
    monkeypatch.setattr(manager, "is_authorized_dag", permissions)
    # a viewer may see the UI, but not one of the DAGs whose data the page shows: refused
    refused = client.get(PREFIX + route, headers=auth(mint_token(username="no-ingest", role="viewer")))
    assert refused.status_code == 403, refused.text
    assert "read access to the DAGs" in refused.text
    # the same role with every DAG readable: served, after asking about each of the page's DAGs
    permissions.asked.clear()
    allowed = client.get(PREFIX + route, headers=auth(mint_token(username="reader", role="viewer")))
    assert allowed.status_code == 200, allowed.text
    assert permissions.asked == set(PAGE_DAG_IDS)


@pytest.mark.parametrize(("method", "route"), [("GET", "/login"), ("GET", "/login.js"), ("POST", "/session")])
def test_login_bridge_is_off_unless_the_setting_turns_it_on(client, monkeypatch, method, route):
    monkeypatch.delenv(BRIDGE_SETTING, raising=False)
    assert client.request(method, PREFIX + route, headers=auth()).status_code == 404
    assert "_token" not in client.cookies
    monkeypatch.setenv(BRIDGE_SETTING, "False")
    assert client.request(method, PREFIX + route, headers=auth()).status_code == 404
    monkeypatch.setenv(BRIDGE_SETTING, "True")
    assert client.request(method, PREFIX + route, headers=auth()).status_code in (200, 204)
    client.cookies.clear()


def test_login_bridge_is_static_and_session_needs_a_bearer_token(client, monkeypatch):
    monkeypatch.setenv(BRIDGE_SETTING, "True")
    page = client.get(PREFIX + "/login")
    assert page.status_code == 200 and "login.js" in page.text
    assert client.get(PREFIX + "/login.js").status_code == 200
    assert client.post(PREFIX + "/session").status_code == 401
    assert client.post(PREFIX + "/session", headers=auth("forged")).status_code == 403
    token = mint_token()
    response = client.post(PREFIX + "/session", headers=auth(token))
    assert response.status_code == 204
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith(f"_token={token};") and "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
    # the cookie now set by the session call is what the page's own requests carry
    assert client.get(PREFIX + "/api/whoami").json() == {"username": "admin"}
    client.cookies.clear()


# ---------------------------------------------------------------------------- data


def test_employers(client, report_db):
    body = client.get(PREFIX + "/api/employers", headers=auth()).json()
    assert body == {
        "employers": [
            {"employer_id": "7", "first_report_date": "2026-03-10", "latest_report_date": "2026-03-11"},
            {"employer_id": "8", "first_report_date": "2026-03-10", "latest_report_date": "2026-03-11"},
            {"employer_id": "unknown", "first_report_date": "2026-03-10", "latest_report_date": "2026-03-11"},
        ]
    }


def test_completions_over_time(client, report_db):
    body = client.get(PREFIX + "/api/completions?employer_id=7", headers=auth()).json()
    assert body == {
        "employer_id": "7",
        "dates": ["2026-03-10", "2026-03-11"],
        "completed": [2, 0],  # C's 01 and A's 02 on 03-10
        "completed_cumulative": [4, 4],  # 01: A, C, E; 02: A
        "by_drill": {"01-sample-drill": [1, 0], "02-sample-drill": [1, 0], "03-sample-drill": [0, 0]},
        "live": None,  # both days were computed after they ended
    }
    one = client.get(PREFIX + "/api/completions?employer_id=unknown&days=1", headers=auth()).json()
    assert one["dates"] == ["2026-03-11"] and one["completed"] == [1]
    until = client.get(PREFIX + "/api/completions?employer_id=unknown&until=2026-03-10", headers=auth()).json()
    assert until["dates"] == ["2026-03-10"] and until["completed"] == [0]
    assert client.get(PREFIX + "/api/completions?employer_id=7&days=0", headers=auth()).status_code == 422
    empty = client.get(PREFIX + "/api/completions?employer_id=nobody", headers=auth()).json()
    assert empty["dates"] == [] and empty["by_drill"] == {}


def test_funnel_per_drill(client, report_db):
    latest = client.get(PREFIX + "/api/funnel?employer_id=7", headers=auth()).json()
    assert latest["report_date"] == "2026-03-11"
    assert [
        (d["drill_slug"], d["drill_name"], d["users_enrolled"], d["started_cumulative"], d["completed_cumulative"])
        for d in latest["drills"]
    ] == [
        ("01-sample-drill", "01-sample-drill", 4, 4, 3),
        ("02-sample-drill", "02-sample-drill", 4, 1, 1),
        ("03-sample-drill", "03-sample-drill", 4, 0, 0),
    ]
    first = latest["drills"][0]
    assert first["completion_rate"] == 0.75 and first["median_completion_seconds"] == 172800.0
    assert (first["inactive_7d"], first["stalled_7d"]) == (1, 1)
    day = client.get(PREFIX + "/api/funnel?employer_id=unknown&report_date=2026-03-10", headers=auth()).json()
    assert day["report_date"] == "2026-03-10"
    assert [(d["started_day"], d["completed_day"]) for d in day["drills"]] == [(1, 0), (0, 0), (0, 0)]


def test_today_so_far_is_shown_live_until_the_day_is_reported(client, report_db):
    """drill_progress_monitor writes today's report rows before the day ends: the page shows
    that day as live; the same rows computed after the day ended are a whole day."""
    today = datetime.now(UTC).date()
    report.build_day(report_db.engine, report.ReportDay(today))
    body = client.get(PREFIX + "/api/completions?employer_id=7&days=1", headers=auth()).json()
    assert body["dates"] == [today.isoformat()]
    assert (body["completed"], body["completed_cumulative"]) == ([0], [4])  # nothing new since 03-11
    assert body["live"]["date"] == today.isoformat()
    assert datetime.fromisoformat(body["live"]["computed_at"]) > datetime.now(UTC) - timedelta(minutes=5)
    funnel = client.get(PREFIX + "/api/funnel?employer_id=7", headers=auth()).json()
    assert (funnel["report_date"], funnel["live"]) == (today.isoformat(), True)
    assert [d["completed_cumulative"] for d in funnel["drills"]] == [3, 1, 0]
    employers = client.get(PREFIX + "/api/employers", headers=auth()).json()["employers"]
    assert {e["latest_report_date"] for e in employers} == {today.isoformat()}

    # once the day is over its rows are recomputed (drill_progress_report): no longer live
    with report_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE drill_progress_daily SET computed_at = report_date + interval '1 day 5 minutes' "
            "WHERE report_date = %(d)s",
            {"d": today},
        )
    assert client.get(PREFIX + "/api/completions?employer_id=7&days=1", headers=auth()).json()["live"] is None
    assert client.get(PREFIX + "/api/funnel?employer_id=7", headers=auth()).json()["live"] is False


def test_ingestion_lag_of_the_last_hours(client, drill_db):
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ingestion_lag_samples (stream, sampled_at, lag_seconds, shards, threshold_seconds, above, "
            "alerted) SELECT 'dialog-events', now() - g * interval '5 minutes', g * 60, '{}'::jsonb, 300, g * 60 > 300, "
            "g = 7 FROM generate_series(0, 100) AS g"
        )
    body = client.get(PREFIX + "/api/health/lag?hours=1", headers=auth()).json()
    samples = body["streams"]["dialog-events"]
    assert body["hours"] == 1 and len(samples) == 12  # 0, 5, ..., 55 minutes ago
    assert [s["lag_seconds"] for s in samples] == [g * 60.0 for g in range(11, -1, -1)]  # oldest first
    assert [s["above"] for s in samples] == [g > 5 for g in range(11, -1, -1)]
    assert [s["alerted"] for s in samples].count(True) == 1
    assert {s["threshold_seconds"] for s in samples} == {300.0}
    assert len(client.get(PREFIX + "/api/health/lag", headers=auth()).json()["streams"]["dialog-events"]) == 72
    assert client.get(PREFIX + "/api/health/lag?hours=49", headers=auth()).status_code == 422
    assert client.get(PREFIX + "/api/health/lag", headers=auth()).status_code == 200


def test_employer_ids_are_query_values_of_any_shape(client, drill_db):
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO drill_progress_daily (report_date, employer_id, drill_slug, users_enrolled, started_day, "
            "started_cumulative, completed_day, completed_cumulative, inactive_7d, stalled_7d) "
            "VALUES ('2026-03-10', 'acme/north & co', '01-sample-drill', 3, 1, 2, 1, 1, 0, 0)"
        )
    body = client.get(PREFIX + "/api/completions", params={"employer_id": "acme/north & co"}, headers=auth()).json()
    assert body["completed"] == [1] and body["employer_id"] == "acme/north & co"
    assert client.get(PREFIX + "/api/funnel", headers=auth()).status_code == 422  # employer_id is required


def test_checkpoint_lag_per_shard(client, report_db):
    rows = client.get(PREFIX + "/api/health/checkpoints", headers=auth()).json()["checkpoints"]
    assert [(r["shard_id"], r["behind_ms"], r["records_applied"], r["shard_closed"]) for r in rows] == [
        ("shardId-000000000000", 1500, 120, False),
        ("shardId-000000000001", 0, 80, False),
    ]
    assert rows[0]["age_seconds"] < 60 <= 590 < rows[1]["age_seconds"] < 700
    assert [(r["lease_holder_kind"], r["handovers"]) for r in rows] == [(None, 0), (None, 0)]  # no lease yet


def test_checkpoints_show_who_holds_each_shards_lease(client, report_db, drill_db):
    """A held lease shows its holder's kind, run id and time left; one let go or expired shows none."""
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO shard_leases (stream, shard_id, owner, owner_kind, owner_run_id, acquired_at, expires_at, "
            "handovers) VALUES "
            "('dialog-events', 'shardId-000000000000', 'token-a', 'continuous', 'scheduled__2026-03-11T10:00', "
            " now(), now() + interval '30 seconds', 7), "
            "('dialog-events', 'shardId-000000000001', 'token-b', 'catch_up', 'manual__x', "
            " now() - interval '2 minutes', now() - interval '1 minute', 2)"
        )
    rows = client.get(PREFIX + "/api/health/checkpoints", headers=auth()).json()["checkpoints"]
    held, expired = rows
    assert (held["lease_holder_kind"], held["lease_holder_run_id"], held["handovers"]) == (
        "continuous",
        "scheduled__2026-03-11T10:00",
        7,
    )
    assert 20 < held["lease_expires_in_seconds"] <= 30
    assert (expired["lease_holder_kind"], expired["lease_holder_run_id"], expired["handovers"]) == (None, None, 2)
    assert expired["lease_expires_in_seconds"] is None
    with drill_db.engine.begin() as conn:  # let go, as a consumer does at a hand-over
        conn.exec_driver_sql(
            "UPDATE shard_leases SET owner = NULL, owner_kind = NULL, owner_run_id = NULL, expires_at = NULL"
        )
    rows = client.get(PREFIX + "/api/health/checkpoints", headers=auth()).json()["checkpoints"]
    assert [(r["lease_holder_kind"], r["handovers"]) for r in rows] == [(None, 7), (None, 2)]


def test_rejections_of_the_last_24_hours_are_masked(client, report_db):
    response = client.get(PREFIX + "/api/health/rejections", headers=auth())
    body = response.json()
    assert body["total"] == 3  # the 30-hour-old record is outside the window
    masked_reason = "schema: seq of ***0001 is not a number"
    assert [(r["reason"], r["records"]) for r in body["by_reason"]] == [
        ("not valid JSON", 1),
        (masked_reason, 1),
        ("unknown event_type", 1),
    ]
    assert [(r["sequence_number"], r["partition_key"]) for r in body["recent"]] == [
        ("101", "***0001"),
        ("102", "***0001"),
        ("103", None),
    ]
    assert PHONE not in response.text and "raw_data" not in response.text
    wider = client.get(PREFIX + "/api/health/rejections?hours=48", headers=auth()).json()
    assert wider["total"] == 4


def test_commands_sent_per_day(client, report_db):
    response = client.get(PREFIX + "/api/health/commands", headers=auth())
    body = response.json()
    published = {(r["day"], r["command_type"]): r["commands"] for r in body["published"]}
    assert sorted(published.values()) == [1, 2, 2, 4]  # today: g=1..6, yesterday: g=7..9
    today = max(day for day, _ in published)
    assert published[(today, "START_DRILL")] == 4 and published[(today, "TRIGGER_REMINDER")] == 2
    assert [(p["command_type"], p["pending"]) for p in body["pending"]] == [("START_DRILL", 1)]  # g=10
    assert PHONE not in response.text
    assert len(client.get(PREFIX + "/api/health/commands?days=1", headers=auth()).json()["published"]) == 2


def test_empty_database_renders_empty_answers(client):
    assert client.get(PREFIX + "/api/employers", headers=auth()).json() == {"employers": []}
    assert client.get(PREFIX + "/api/funnel?employer_id=7", headers=auth()).json()["drills"] == []
    assert client.get(PREFIX + "/api/health/rejections", headers=auth()).json()["total"] == 0


# ---------------------------------------------------------------------------- registration


def test_plugin_is_registered_with_a_nav_view(client):
    plugins = client.get("/api/v2/plugins", headers=auth()).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "drill_progress")
    assert ours["fastapi_apps"][0]["url_prefix"] == PREFIX
    view = ours["external_views"][0]
    assert (view["name"], view["href"], view["url_route"], view["destination"]) == (
        "Drill Progress",
        "drill-progress/",
        "drill-progress",
        "nav",
    )


def test_plugin_module_imports_cheaply_and_touches_no_database():
    code = (
        "import importlib.util, sys\n"
        "import airflow.plugins_manager, sqlalchemy, psycopg  # Airflow's own metadata engine is not ours\n"
        "def refuse(*a, **k): raise SystemExit('database touched at import')\n"
        "sqlalchemy.create_engine = refuse; psycopg.connect = refuse\n"
        "spec = importlib.util.spec_from_file_location('p', 'plugins/drill_progress_plugin.py')\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert module.DrillProgressPlugin.fastapi_apps[0]['app']._app is None\n"
        "assert 'drill_progress.ui.app' not in sys.modules and 'fastapi' not in sys.modules\n"
        "print('ok')\n"
    )
    from airflow_support import ROOT

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
