"""Issue 22's operator tools on a running stack (`make up`, `EXECUTOR=celery make up`), through the
api-server and the scheduler, not `dag.test()`: a user's story arrives on the dialog stream and is
applied by the running ingestion; the event history holds its records; the User lookup shows it;
the aggregate is corrupted; `drill_progress_rebuild` reports the damage (dry run), then repairs it.

`check_operator_tools(stack)` takes a `celery_support.CeleryStack` (a REST client of any stack of
devtools.devstack, whatever its executor) and returns what it saw.
"""

from __future__ import annotations

import json
import random
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devtools import aggregate, chaos
from drill_progress import config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))
from ingest_support import user_story

REBUILD = "drill_progress_rebuild"


def _lookup(stack, phone: str) -> tuple[int, dict]:
    """POST the Drill Progress page's lookup as the stack's admin: (status, body)."""
    req = urllib.request.Request(
        f"{stack.s.api_url}/drill-progress/api/lookup",
        data=json.dumps({"phone_number": phone}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {stack.api.token()}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _scalar(engine, sql: str, phone: str):
    return chaos.scalar(engine, sql, {"p": phone})


def _wait_applied(engine, phone: str, seq: int, timeout: float = 180) -> float:
    started = time.monotonic()
    sql = "SELECT u.seq FROM users u JOIN phone_numbers p USING (user_id) WHERE p.phone_number = %(p)s"
    while time.monotonic() < started + timeout:
        if _scalar(engine, sql, phone) == seq:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"the story of {phone[:-4]}**** was not applied within {timeout:.0f}s")


def _rebuild(stack, conf: dict) -> dict:
    run_id = stack.trigger(REBUILD, conf)
    state = stack.wait_for_run(REBUILD, run_id, timeout=240)
    assert state == "success", stack.describe(REBUILD, run_id)
    return stack.xcom(REBUILD, run_id, "rebuild_users")


def check_operator_tools(stack) -> dict:
    phone = f"+1555{random.randrange(10**7):07d}"
    docs = user_story(phone)
    stream = config.VARIABLE_DEFAULTS[config.DIALOG_EVENT_STREAM]
    kinesis = stack.kinesis()
    for doc in docs:
        kinesis.put_record(StreamName=stream, Data=json.dumps(doc).encode(), PartitionKey=phone)
    engine = stack.drill_engine()
    try:
        applied_s = _wait_applied(engine, phone, len(docs))
        before = aggregate.aggregate_checksum(engine, [phone])
        history = _scalar(engine, "SELECT count(*) FROM event_history WHERE phone_number = %(p)s", phone)
        assert history == len(docs), f"{history} history rows for {len(docs)} records"

        status, story = _lookup(stack, phone)
        assert status == 200, story
        assert story["user"]["seq"] == str(len(docs)) and story["phone_number"] == "***" + phone[-4:]
        assert len(story["drill_instances"]) == 2 and len(story["commands"]) == 2
        missing, body = _lookup(stack, "+15550000000")
        assert missing == 404, body

        with engine.begin() as conn:  # a fold bug's damage
            conn.exec_driver_sql(
                "UPDATE drill_instances SET current_prompt_slug = 'corrupted' WHERE user_id = "
                "(SELECT user_id FROM phone_numbers WHERE phone_number = %(p)s)",
                {"p": phone},
            )
        report = _rebuild(stack, {"phone_numbers": [phone]})
        assert (report["dry_run"], report["changed"]) == (True, 1), report
        assert aggregate.aggregate_checksum(engine, [phone]) != before  # a dry run changes nothing
        repaired = _rebuild(stack, {"phone_numbers": [phone], "dry_run": False})
        assert (repaired["dry_run"], repaired["changed"]) == (False, 1), repaired
        assert aggregate.aggregate_checksum(engine, [phone]) == before
        return {
            "applied_within_s": round(applied_s, 1),
            "history_rows": history,
            "dry_run": report["users"],
            "repaired": repaired["rows"],
        }
    finally:
        engine.dispose()
