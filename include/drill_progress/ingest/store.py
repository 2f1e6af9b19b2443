"""Set-based load and write of the user trees a micro-batch touches (templates in include/sql/ingest).

Per micro-batch, whatever its size: four loads (users locked FOR UPDATE, their statuses, their
instances, the catalog) and at most eleven writes (new users, changed users, phone numbers, new statuses,
changed statuses, new instances, changed instances, outbox, rejected records, checkpoint). Never a round trip per
event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from drill_progress import ids
from drill_progress.commands import Command
from drill_progress.db import run
from drill_progress.ingest import events as ev
from drill_progress.ingest.fold import CatalogDrill, Instance, Status, User

OUTBOX_SOURCE = "ingest"


def _write(conn: Connection, template: str, params: dict) -> None:
    """Run a write template whose array parameters are PostgreSQL array literals built here.

    Building `{a,b,NULL}` with one join is an order of magnitude cheaper than letting the
    driver escape every element; the template casts each literal (`%(ids)s::uuid[]`)."""
    run(conn, template, params)


def _array(values) -> str:
    """Array literal of values that need no quoting: uuids, numbers, booleans, timestamps."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def _text_array(values) -> str:
    """Array literal of arbitrary strings (quoted and escaped)."""
    return "{" + ",".join(
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


@dataclass(frozen=True, slots=True)
class Rejection:
    sequence_number: str
    partition_key: str | None
    raw_data: bytes
    reason: str
    attempts: int = 1


def load_catalog(conn: Connection) -> list[CatalogDrill]:
    return [CatalogDrill(slug, place) for slug, place in run(conn, "ingest/load_catalog.sql").all()]


def load_users(conn: Connection, batches: Sequence[ev.Batch]) -> dict[str, User]:
    """Trees of the existing users among the batches' phone numbers (locked), by phone number."""
    phones = list({b.phone_number for b in batches})
    if not phones:
        return {}
    users: dict[str, User] = {}
    by_id: dict[str, User] = {}
    for phone, user_id, seq in run(conn, "ingest/load_users.sql", {"phones": phones}).all():
        user = User(user_id, phone, int(seq))
        users[phone] = by_id[user_id] = user
    if not by_id:
        return users
    user_ids = list(by_id)
    for user_id, sid, slug, place, instance_id, started, completed in run(
            conn, "ingest/load_statuses.sql", {"user_ids": user_ids}).all():
        status = Status(sid, slug, place, instance_id, started, completed)
        status.loaded = status.values()
        by_id[user_id].statuses.append(status)
    referenced = list({e.drill_instance_id for b in batches for e in b.events if e.drill_instance_id is not None})
    for row in run(conn, "ingest/load_instances.sql", {"user_ids": user_ids, "instance_ids": referenced}).all():
        instance = Instance(row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])
        instance.loaded = instance.values()
        by_id[row[0]].instances[row[1]] = instance
    return users


def write_users(conn: Connection, users: dict[str, User]) -> dict[str, int]:
    """Write back every changed row of the trees; returns row counts per table."""
    changed = [u for u in users.values() if u.changed]
    counts = {"users": len(changed), "phone_numbers": 0, "drill_statuses": 0, "drill_instances": 0}
    if not changed:
        return counts
    new_users = [u for u in changed if u.is_new]
    old_users = [u for u in changed if not u.is_new]
    for template, group in (("ingest/insert_users.sql", new_users), ("ingest/update_users.sql", old_users)):
        if group:
            _write(conn, template, {
                "user_ids": _array(u.user_id for u in group),
                "seqs": _array(u.seq for u in group),
                "profiles": _text_array(json.dumps(u.profile) for u in group),
                "times": _array(u.last_interacted_time for u in group),
            })
    if new_users:
        _write(conn, "ingest/insert_phone_numbers.sql", {
            "ids": _array(ids.phone_number_id(u.phone_number) for u in new_users),
            "phones": _text_array(u.phone_number for u in new_users),
            "user_ids": _array(u.user_id for u in new_users),
        })
        counts["phone_numbers"] = len(new_users)

    counts["drill_statuses"] = _write_statuses(conn, changed)
    counts["drill_instances"] = _write_instances(conn, changed)
    return counts


def _write_statuses(conn: Connection, changed: list[User]) -> int:
    st_new: list[tuple[str, Status]] = []
    st_upd: list[Status] = []
    for u in changed:
        for st in u.statuses:
            if st.is_new:
                st_new.append((u.user_id, st))
            elif st.values() != st.loaded:
                st_upd.append(st)
    if st_new:
        _write(conn, "ingest/insert_statuses.sql", {
            "ids": _array(st.id for _, st in st_new),
            "user_ids": _array(uid for uid, _ in st_new),
            "instance_ids": _array(st.drill_instance_id for _, st in st_new),
            "slugs": _text_array(st.drill_slug for _, st in st_new),
            "places": _array(st.place_in_sequence for _, st in st_new),
            "started": _array(st.started_time for _, st in st_new),
            "completed": _array(st.completed_time for _, st in st_new),
        })
    if st_upd:
        _write(conn, "ingest/update_statuses.sql", {
            "ids": _array(st.id for st in st_upd),
            "instance_ids": _array(st.drill_instance_id for st in st_upd),
            "started": _array(st.started_time for st in st_upd),
            "completed": _array(st.completed_time for st in st_upd),
        })
    return len(st_new) + len(st_upd)


def _write_instances(conn: Connection, changed: list[User]) -> int:
    new_inst: list[tuple[User, Instance]] = []
    upd_inst: list[tuple[User, Instance]] = []
    for u in changed:
        for i in u.instances.values():
            if i.is_new:
                new_inst.append((u, i))
            elif i.values() != i.loaded:
                upd_inst.append((u, i))
    if new_inst:
        _write(conn, "ingest/insert_instances.sql", {
            "ids": _array(i.drill_instance_id for _, i in new_inst),
            "user_ids": _array(u.user_id for u, _ in new_inst),
            "phones": _text_array(i.phone_number for _, i in new_inst),
            **_instance_values([i for _, i in new_inst]),
        })
    if upd_inst:
        _write(conn, "ingest/update_instances.sql", {
            "ids": _array(i.drill_instance_id for _, i in upd_inst),
            "user_ids": _array(u.user_id for u, _ in upd_inst),
            **_instance_values([i for _, i in upd_inst]),
        })
    return len(new_inst) + len(upd_inst)


def _instance_values(instances: list[Instance]) -> dict[str, str]:
    return {
        "slugs": _text_array(i.drill_slug for i in instances),
        "prompts": _text_array(i.current_prompt_slug for i in instances),
        "prompt_starts": _array(i.current_prompt_start_time for i in instances),
        "responses": _array(i.current_prompt_last_response_time for i in instances),
        "completions": _array(i.completion_time for i in instances),
        "valid": _array(i.is_valid for i in instances),
    }


def enqueue_commands(conn: Connection, cmds: list[Command]) -> list[str]:
    """Outbox rows for the commands (same transaction); returns the keys that are new.

    The same statement as `drill_progress.outbox.enqueue` (template outbox/enqueue.sql, ON
    CONFLICT (idempotency_key) DO NOTHING), with the arrays passed as literals: encoding
    thousands of JSON payloads element by element cost more than the rest of the write."""
    if not cmds:
        return []
    params = {
        "source": OUTBOX_SOURCE,
        "keys": _text_array(c.idempotency_key for c in cmds),
        "types": _text_array(c.command_type for c in cmds),
        "phones": _text_array(c.phone_number for c in cmds),
        "payloads": _text_array(json.dumps(c.payload) for c in cmds),
    }
    return [row[0] for row in run(conn, "outbox/enqueue.sql", params).all()]


def write_rejections(conn: Connection, stream: str, shard_id: str, rejections: Sequence[Rejection]) -> None:
    if not rejections:
        return
    run(conn, "ingest/insert_rejected.sql", {
        "stream": stream, "shard_id": shard_id,
        "sequence_numbers": [r.sequence_number for r in rejections],
        "partition_keys": [r.partition_key for r in rejections],
        "raw": [r.raw_data for r in rejections],
        "reasons": [r.reason for r in rejections],
        "attempts": [r.attempts for r in rejections],
    })


def save_checkpoint(conn: Connection, stream: str, shard_id: str, sequence_number: str, *, records: int,
                    behind_ms: int | None, parents: Sequence[str] = ()) -> None:
    run(conn, "ingest/save_checkpoint.sql", {
        "stream": stream, "shard_id": shard_id, "sequence_number": sequence_number,
        "parents": list(parents), "records": records, "behind_ms": behind_ms})


def close_shard(conn: Connection, stream: str, shard_id: str, parents: Sequence[str] = ()) -> None:
    run(conn, "ingest/close_shard.sql", {"stream": stream, "shard_id": shard_id, "parents": list(parents)})


def load_checkpoints(conn: Connection, stream: str) -> dict[str, dict]:
    rows = run(conn, "ingest/load_checkpoints.sql", {"stream": stream}).mappings().all()
    return {row["shard_id"]: dict(row) for row in rows}
