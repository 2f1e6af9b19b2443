"""Sending one time slot of a day's schedule (the deferred `send_slot` tasks of schedule_next_drills).

The slot's requests are read back from DynamoDB, re-checked against PostgreSQL (a request whose
drill is no longer the user's next drill, whose user opted out or whose number is no longer their
primary one is stale and dropped), and the rest are enqueued as START_DRILL commands in the outbox
(the idempotency key is unique there: a retry, a re-run or a backfill enqueues nothing new) and
published.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from drill_progress import outbox
from drill_progress.db import run
from drill_progress.next_drill import next_drills
from drill_progress.privacy import mask_phone
from drill_progress.scheduling.planning import SOURCE

log = logging.getLogger(__name__)

STALE_EXAMPLES = 5  # stale requests logged one by one per slot; the rest are counted


def read_slot(dynamodb, table: str, pk: str) -> list[dict]:
    """Every schedule item of a slot (strongly consistent query, all pages), as plain dicts."""
    items: list[dict] = []
    kwargs = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.query(**kwargs)
        items += [{name: next(iter(value.values())) for name, value in item.items()} for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def send_slot(
    engine: Engine, dynamodb, kinesis, *, table: str, stream: str, slot: dict, deferred: bool = False
) -> dict:
    """Send one slot: re-check each request against PostgreSQL, drop the stale ones, enqueue the
    rest in the outbox (a key already there enqueues nothing) and publish them."""
    items = read_slot(dynamodb, table, slot["pk"])
    result = {
        "slot": slot["slot"],
        "pk": slot["pk"],
        "deferred": deferred,
        "items": len(items),
        "stale": 0,
        "enqueued": 0,
        "already_enqueued": 0,
        "published": 0,
    }
    if not items:
        log.info("slot %s: no schedule items", slot["pk"])
        return result
    user_ids = [item["user_id"] for item in items]
    with engine.begin() as conn:
        next_now = next_drills(conn, user_ids)
        reachable = set(
            run(
                conn,
                "scheduling/reachable.sql",
                {"user_ids": user_ids, "phones": [item["phone_number"] for item in items]},
            ).scalars()
        )
        keep, stale = [], []
        for item in items:
            current = next_now.get(item["user_id"])
            if current == item["drill_slug"] and item["user_id"] in reachable:
                keep.append(item)
            else:
                stale.append(item)
                if len(stale) <= STALE_EXAMPLES:
                    why = (
                        "opted out or number changed" if current == item["drill_slug"] else f"next drill now {current}"
                    )
                    log.info(
                        "dropping stale request %s -> %s (%s)",
                        mask_phone(item["phone_number"]),
                        item["drill_slug"],
                        why,
                    )
        cmds = [outbox.start_drill(item["phone_number"], item["drill_slug"], item["idempotency_key"]) for item in keep]
        new_keys = outbox.enqueue(conn, cmds, SOURCE)
    published = {"published": 0, "failed": 0}
    if cmds:  # publishes this slot's pending commands: the new ones and any a failed attempt left
        published = outbox.publish_pending(
            engine, kinesis, stream, source=SOURCE, keys=[c.idempotency_key for c in cmds]
        )
    result.update(
        stale=len(stale),
        enqueued=len(new_keys),
        already_enqueued=len(cmds) - len(new_keys),
        published=published["published"],
    )
    log.info(
        "slot %s: %d requests, %d stale dropped, %d enqueued (%d were already), %d published",
        slot["pk"],
        len(items),
        len(stale),
        len(new_keys),
        result["already_enqueued"],
        result["published"],
    )
    if published["failed"]:
        raise outbox.PublishError(
            f"{published['failed']} START_DRILL commands of slot {slot['pk']} not published; "
            "they stay in the outbox and the retry publishes them"
        )
    return result
