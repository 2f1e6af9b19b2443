"""The Drill Progress page in a real browser: a real `airflow api-server` (this repository's
plugins/ folder, SimpleAuthManager with a password), a drill database with two weeks of report
rows and pipeline-health rows, and headless Chromium (Debian's `chromium`) that logs in through
the page's login bridge, renders the page and keeps a screenshot under tests/_artifacts/."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import report_dataset as dataset

from devtools.services import free_port, wait_for
from drill_progress import ids
from drill_progress.db import make_engine
from drill_progress.report import daily as report
from drill_progress.scheduling import planning

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "_artifacts"
PHONE = "+15551239876"
# two weeks of finished report days up to yesterday, and today in progress (drill_progress_monitor);
# the days are fixed by `page_db` when it seeds (the session may have started on the day before)
MIDNIGHT_GUARD_SECONDS = 300  # seeding to the last check takes about a minute


class Days:
    today: date
    first: date
    last: date

    @classmethod
    def set(cls) -> None:
        """The page computes "today" when it renders: seed for the day the checks will see, waiting
        out the last minutes of a UTC day rather than seeding a day that ends before the page renders."""
        now = datetime.now(UTC)
        to_midnight = (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now).total_seconds()
        if to_midnight < MIDNIGHT_GUARD_SECONDS:
            time.sleep(to_midnight + 1)
        cls.today = datetime.now(UTC).date()
        cls.first, cls.last = cls.today - timedelta(days=14), cls.today - timedelta(days=1)


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


def _screenshot_tool():
    spec = importlib.util.spec_from_file_location("screenshot_ui", ROOT / "scripts" / "screenshot_ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _at(day: date, hour: float) -> str:
    return (datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=hour)).isoformat()


def synthetic_users(seed: int = 7) -> dict:
    """Two weeks of progress for employers 7 and 12 and a few users without an employer."""
    rng = random.Random(seed)
    users = {}
    for employer, count in (("7", 24), ("12", 14), (None, 5)):
        for i in range(count):
            created = Days.first + timedelta(days=rng.randrange(0, 5))
            profile = (
                {"validated": True, "account_info": {"employer_id": int(employer), "unit_id": 1}}
                if employer
                else {"validated": True}
            )
            drills, moment = {}, created
            last = _at(created, rng.uniform(8, 20))
            for slug in dataset.CATALOG:
                if rng.random() > 0.8:
                    break
                start_day = moment + timedelta(days=rng.randrange(0, 3))
                if start_day > Days.last:
                    break
                started = _at(start_day, rng.uniform(8, 20))
                completed = None
                if rng.random() < 0.75:
                    done_day = start_day + timedelta(days=rng.randrange(0, 3))
                    if done_day <= Days.last:
                        completed = _at(done_day, rng.uniform(20.5, 23.5))
                drills[slug] = (started, completed)
                last = completed or started
                if completed is None:
                    break
                moment = datetime.fromisoformat(completed).date()
            users[f"{employer or 'x'}-{i:02d}"] = (profile, _at(created, 7), last, drills)
    return users


@pytest.fixture(scope="module")
def page_db(pg_server, migrated_template):
    name = f"drill_browser_{os.getpid()}"
    pg_server.create_database(name, template=migrated_template)
    url = pg_server.uri(name)
    engine = make_engine(url)
    Days.set()
    dataset.load(engine, synthetic_users())
    day = Days.first
    with engine.begin() as conn:  # a few drills completed in the last hour: today's live bars
        conn.exec_driver_sql(
            "UPDATE drill_statuses SET completed_time = now() - interval '20 minutes' WHERE id IN ("
            "SELECT id FROM drill_statuses WHERE started_time IS NOT NULL AND completed_time IS NULL "
            "ORDER BY id LIMIT 6)"
        )
    while day <= Days.today:  # today's rows are computed before it ends: the page shows them live
        report.build_day(engine, report.ReportDay(day))
        day += timedelta(days=1)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO stream_checkpoints (stream, shard_id, sequence_number, behind_ms, records_applied, "
            "updated_at) VALUES ('dialog-events', 'shardId-000000000000', '4901', 850, 18234, now()), "
            "('dialog-events', 'shardId-000000000001', '4977', 92000, 17120, now() - interval '7 minutes')"
        )
        conn.exec_driver_sql(  # shard 0 consumed by a continuous run, shard 1's lease expired
            "INSERT INTO shard_leases (stream, shard_id, owner, owner_kind, owner_run_id, acquired_at, expires_at, "
            "handovers) VALUES ('dialog-events', 'shardId-000000000000', 't0', 'continuous', "
            "'scheduled__2026-03-11T10:00:00+00:00', now(), now() + interval '10 minutes', 41), "
            "('dialog-events', 'shardId-000000000001', 't1', 'catch_up', 'manual__1', now() - interval '1 hour', "
            "now() - interval '30 minutes', 3)"
        )
        conn.exec_driver_sql(
            "INSERT INTO rejected_records (stream, shard_id, sequence_number, partition_key, raw_data, reason, "
            "rejected_at) SELECT 'dialog-events', 'shardId-000000000000', (1000 + g)::text, %(p)s, "
            "convert_to(%(raw)s, 'UTF8'), CASE WHEN g %% 2 = 0 THEN 'unknown event_type: SURVEY_SENT' "
            "ELSE 'schema: ' || %(p)s || ' seq is not a decimal string' END, now() - g * interval '2 hours' "
            "FROM generate_series(1, 5) AS g",
            {"p": PHONE, "raw": json.dumps({"phone_number": PHONE})},
        )
        conn.exec_driver_sql(  # six hours of lag samples with a 25-minute episode above 5 minutes
            "INSERT INTO ingestion_lag_samples (stream, sampled_at, lag_seconds, shards, threshold_seconds, above, "
            "alerted) SELECT 'dialog-events', now() - g * interval '5 minutes', lag, '{}'::jsonb, 300, lag > 300, "
            "g = 30 FROM (SELECT g, CASE WHEN g BETWEEN 27 AND 31 THEN 420 + (31 - g) * 40 ELSE 4 + g %% 7 END AS lag "
            "FROM generate_series(0, 71) AS g) AS s"
        )
        conn.exec_driver_sql(
            "INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, "
            "created_at, published_at) "
            "SELECT 'k' || g, CASE WHEN g %% 4 = 0 THEN 'TRIGGER_REMINDER' ELSE 'START_DRILL' END, %(p)s, "
            "       jsonb_build_object('phone_number', %(p)s::text), 'test', now() - (g %% 6) * interval '1 day', "
            "       CASE WHEN g <= 55 THEN now() - (g %% 6) * interval '1 day' END "
            "FROM generate_series(1, 60) AS g",
            {"p": PHONE},
        )
    seed_lookup_user(engine)  # after the report: the report's figures stay those of synthetic_users
    engine.dispose()
    yield url
    pg_server.drop_database(name)


LOOKUP_USER = ids.user_id_text(PHONE)
NOBODY = "+15557770000"


def seed_lookup_user(engine) -> None:
    """The user of PHONE (whose commands and set-aside records page_db seeds): 01 completed,
    02 under way on prompt q3 with q1 and q2 reminded, 03 not started (its next drill), quiet since
    yesterday morning."""
    yesterday = Days.today - timedelta(days=1)
    instances = {
        "01-sample-drill": "11111111-1111-4111-8111-111111111111",
        "02-sample-drill": "22222222-2222-4222-8222-222222222222",
    }
    with engine.begin() as conn:
        sql = conn.exec_driver_sql
        sql(
            "INSERT INTO users (user_id, seq, profile, last_interacted_time, created_at) "
            "VALUES (%(u)s, 4242, %(profile)s::jsonb, %(last)s, %(created)s)",
            {
                "u": LOOKUP_USER,
                "profile": json.dumps(
                    {"validated": True, "name": "Ana", "language": "en", "account_info": {"employer_id": 7}}
                ),
                "last": _at(yesterday, 9),
                "created": _at(Days.first, 7),
            },
        )
        sql(
            "INSERT INTO phone_numbers (id, phone_number, user_id, is_primary) VALUES (%(id)s, %(p)s, %(u)s, true)",
            {"id": ids.phone_number_id_text(PHONE), "p": PHONE, "u": LOOKUP_USER},
        )
        for place, slug in enumerate(dataset.CATALOG):
            started = {0: _at(Days.first, 10), 1: _at(yesterday, 8)}.get(place)
            sql(
                "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, completed_time, "
                "drill_instance_id) VALUES (%(id)s, %(u)s, %(slug)s, %(place)s, %(s)s, %(c)s, %(i)s)",
                {"id": ids.status_id_text(LOOKUP_USER, slug), "u": LOOKUP_USER, "slug": slug, "place": place}
                | {"s": started, "c": _at(Days.first, 11) if place == 0 else None, "i": instances.get(slug)},
            )
        sql(
            "INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, current_prompt_slug, "
            "current_prompt_start_time, completion_time, reminded_prompts, created_at) VALUES "
            "(%(i1)s, %(u)s, %(p)s, '01-sample-drill', NULL, NULL, %(done)s, NULL, %(s1)s), "
            "(%(i2)s, %(u)s, %(p)s, '02-sample-drill', 'q3', %(q3)s, NULL, '{q1,q2}', %(s2)s)",
            {"u": LOOKUP_USER, "p": PHONE, "i1": instances["01-sample-drill"], "i2": instances["02-sample-drill"]}
            | {
                "done": _at(Days.first, 11),
                "s1": _at(Days.first, 10),
                "q3": _at(yesterday, 8.5),
                "s2": _at(yesterday, 8),
            },
        )
        sql(
            "INSERT INTO sent_start_drills (idempotency_key, send_date) VALUES (%(k)s, %(d)s)",
            {"k": planning.idempotency_key(LOOKUP_USER, "02-sample-drill", yesterday), "d": yesterday},
        )


SERVER: dict = {}  # the running api-server's log file


@pytest.fixture(scope="module")
def api_server(airflow_db, page_db, tmp_path_factory):
    """A real `airflow api-server` subprocess on a free port, stopped (its own process group) after."""
    tmp = tmp_path_factory.mktemp("api-server")
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({"admin": "admin"}))
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_CONN_DRILL_PROGRESS_DB": page_db,
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__DRILL_PROGRESS__UI_LOGIN_BRIDGE": "True",  # the screenshots sign in through it
        }
    )
    SERVER["log"] = tmp / "api-server.log"
    log = SERVER["log"].open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "airflow"),
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"api-server exited with {proc.returncode}: {(tmp / 'api-server.log').read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(base_url + "/api/v2/monitor/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(healthy, 180, "the Airflow api-server", interval=1)
        yield base_url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_real_api_server_protects_the_plugin_routes(api_server):
    tool = _screenshot_tool()
    status, _ = _get(api_server + "/drill-progress/api/employers")
    assert status == 401
    status, _ = _get(api_server + "/drill-progress/")
    assert status == 401
    with pytest.raises(urllib.error.HTTPError) as refused:
        tool.get_token(api_server, "admin", "wrong-password")
    assert refused.value.code == 401
    token = tool.get_token(api_server, "admin", "admin")
    status, body = _get(api_server + "/drill-progress/api/employers", token)
    assert status == 200
    assert [e["employer_id"] for e in json.loads(body)["employers"]] == ["7", "12", "unknown"]


def test_page_renders_with_data_in_chromium(api_server):
    tool = _screenshot_tool()
    token = tool.get_token(api_server, "admin", "admin")

    shot = tool.screenshot(api_server, token, ARTIFACTS / "drill_progress_page.png", window=(1400, 1000))
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    full = tool.screenshot(api_server, token, ARTIFACTS / "drill_progress_page_full.png", window=(1400, 2600))
    assert full.stat().st_size > 20_000

    dom = tool.dump_dom(api_server, token)
    (ARTIFACTS / "drill_progress_page.html").write_text(dom)
    assert 'data-ready="true"' in dom, dom[-3000:]
    for text in (
        "signed in as admin",
        "Employer 7",
        "Employer 12",
        "Unknown employer",
        "01-sample-drill",
        "02-sample-drill",
        "03-sample-drill",
        "completion rate",
        "shardId-000000000001",
        "continuous run scheduled__2026-03-11T10:00:00+00:00 (lease 10 min left)",  # who consumes shard 0
        "Hand-overs",
        "record(s) set aside in the last 24 h",
        "unknown event_type: SURVEY_SENT",
        "***9876",
        "START_DRILL",
        "TRIGGER_REMINDER",
        f"framed: {Days.today.isoformat()}, today so far (live, updated",
        f"Funnel on {Days.today.isoformat()} (today so far, live)",
        "Ingestion lag behind the stream, last 6 h",
        "dialog-events: ",
        "(alert above 5 min)",
        "(alert sent)",
    ):
        assert text in dom, text
    assert dom.count("<rect") >= 10  # the completion bars were drawn
    assert dom.count('class="live-day"') == 3  # today's column framed in each employer's chart (7, 12, unknown)
    assert 'class="lag-line"' in dom and dom.count("<circle") >= 72
    assert PHONE not in dom
    assert "#token=" not in dom  # the bridge removed the token from the address


def test_user_lookup_typed_in_chromium(api_server):
    """An operator types a number nobody has, then the user's: the page says so plainly, then shows
    the story; the number is in no URL (the api-server's access log has the POST, not the number)
    and on no screen (the field is cleared, the answer masks it)."""
    tool = _screenshot_tool()
    token = tool.get_token(api_server, "admin", "admin")
    shot = ARTIFACTS / "drill_progress_user_lookup.png"
    if shot.exists():
        shot.unlink()
    not_found, found = tool.lookup(api_server, token, [NOBODY, f" {PHONE[:5]} {PHONE[5:8]}-{PHONE[8:]} "], shot)
    (ARTIFACTS / "drill_progress_user_lookup.html").write_text(found)
    assert 'data-state="not-found"' in not_found and "No user with this phone number (***0000)." in not_found
    assert "Records set aside for this number" in not_found and "None." in not_found
    assert 'data-state="found"' in found, found[-3000:]
    yesterday = Days.today - timedelta(days=1)
    for text in (
        f"User {LOOKUP_USER}",
        "***9876 (primary) ← looked up",
        "4242",
        '"employer_id":7',
        "Ana",
        "Next drill (scheduling's rule, its own query): <strong>03-sample-drill</strong>",
        f"Due at today's run ({Days.today.isoformat()} 17:05:00 UTC): START_DRILL 03-sample-drill planned at ",
        planning.idempotency_key(LOOKUP_USER, "02-sample-drill", yesterday),
        "q1, q2",
        "q3",
        "TRIGGER_REMINDER",
        "pending",
        "schema: ***9876 seq is not a decimal string",
        "unknown event_type: SURVEY_SENT",
    ):
        assert text in found, text
    # statuses, instances, commands (15 shown, the 45 older ones folded away), set-aside records
    assert found.count("<tr>") == (1 + 3) + (1 + 2) + (1 + 15) + (1 + 45) + (1 + 5) + (1 + 1)  # + sent keys
    assert "<summary>45 older command(s)</summary>" in found
    for full in (PHONE, PHONE.lstrip("+"), NOBODY, NOBODY.lstrip("+")):
        assert full not in found and full not in not_found
    assert shot.stat().st_size > 20_000
    access_log = SERVER["log"].read_text()
    # Airflow's access log keeps each request's method, path and query string
    assert "method=POST path=/drill-progress/api/lookup query= status_code=404" in access_log
    assert "method=POST path=/drill-progress/api/lookup query= status_code=200" in access_log
    for full in (PHONE.lstrip("+"), NOBODY.lstrip("+"), PHONE[5:8] + "-" + PHONE[8:]):
        assert full not in access_log


def test_page_is_embedded_in_airflow_ui_navigation(api_server):
    """The external view: Airflow's own UI shows the page at /plugin/drill-progress (an iframe of
    drill-progress/) with a "Drill Progress" entry in its navigation."""
    tool = _screenshot_tool()
    token = tool.get_token(api_server, "admin", "admin")
    tool.screenshot(
        api_server,
        token,
        ARTIFACTS / "drill_progress_in_airflow_ui.png",
        window=(1400, 1000),
        next_path="/plugin/drill-progress",
    )
    dom = tool.dump_dom(api_server, token, next_path="/plugin/drill-progress")
    assert "<iframe" in dom and "drill-progress/" in dom, dom[-3000:]


def test_page_without_login_shows_no_data_in_chromium(api_server):
    tool = _screenshot_tool()
    result = tool.run_chromium(api_server + "/drill-progress/", "--dump-dom")
    assert "Sign in to Airflow" in result.stdout
    assert "Employer 7" not in result.stdout
