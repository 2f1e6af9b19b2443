"""Set-based load and write of the user trees a micro-batch touches (templates in include/sql/ingest).

Per micro-batch, whatever its size, three statements (round trips) before COMMIT:
1. lock_users.sql: the existing users, locked FOR UPDATE, and the drill catalog;
2. load_trees.sql: their statuses and instances (only when some user exists; a separate statement
   so that its snapshot is taken after the locks are granted);
3. write_trees.sql: every changed row (new/changed users, phone numbers, new/changed statuses,
   new/changed instances), the set-aside bad records, the checkpoint and the outbox rows of the
   commands the micro-batch caused, as one statement of data-modifying CTEs.
Never a round trip per event or per table. The write is planned (`plan_write`: every parameter
built in Python) apart from being executed (`execute_write`), so that the ingestion loop can
build the next micro-batch's write while the database executes this one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from drill_progress import ids
from drill_progress.db import run
from drill_progress.ingest import events as ev
from drill_progress.ingest.fold import CatalogDrill, Instance, Status, TreeNeeds, User, tree_needs
from drill_progress.outbox.commands import Command
from drill_progress.privacy import safe_text

OUTBOX_SOURCE = "ingest"


# Array parameters are Python lists sent in PostgreSQL's binary format (the templates' `%(ids)b`
# placeholders, then a cast such as `::uuid[]`): no array literal to build here or to parse there,
# and no value escaped (bytea as text was hex-escaped byte by byte; timestamps went through str()).


def _array(values) -> list:
    """An array parameter (uuids, numbers, booleans, timestamps, text), NULL for None."""
    return list(values)


try:  # a C JSON encoder shipped with Airflow's task SDK (events.py decodes with it too)
    from msgspec.json import Encoder as _Encoder

    _encode = _Encoder().encode

    def _json(value) -> str:
        """JSON text of a decoded document (for a jsonb parameter): 10x cheaper than json.dumps."""
        return _encode(value).decode()
except ImportError:  # pragma: no cover
    _json = json.dumps


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """A record as the event history keeps it (event_history: docs/history.md)."""

    phone_number: str  # the batch's; for a record set aside, its partition key (made valid text)
    sequence_number: str
    raw_data: bytes
    arrival: datetime | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    sequence_number: str
    partition_key: str | None
    raw_data: bytes
    reason: str
    attempts: int = 1


def load_catalog(conn: Connection) -> list[CatalogDrill]:
    return [_catalog_drill(*row) for row in run(conn, "ingest/load_catalog.sql").all()]


def _catalog_drill(slug: str, place: int, employer_ids: list[str] | None) -> CatalogDrill:
    return CatalogDrill(slug, place, None if employer_ids is None else tuple(employer_ids))


def load_micro_batch(conn: Connection, batches: Sequence[ev.Batch]) -> tuple[list[CatalogDrill], dict[str, User]]:
    """The drill catalog and the trees of the existing users among the batches' phone numbers
    (locked), by phone number: two statements, the second only when some user exists. Only the
    parts of the trees the events' rules read are loaded (`fold.tree_needs`)."""
    phones = list({b.phone_number for b in batches})
    catalog: list[CatalogDrill] = []
    users: dict[str, User] = {}
    by_id: dict[str, User] = {}
    for kind, name, user_id, seq, place, employer_ids in run(
        conn, "ingest/lock_users.sql", {"phones": _array(phones)}
    ).all():
        if kind == "c":
            catalog.append(_catalog_drill(name, place, employer_ids))
        else:
            users[name] = by_id[user_id] = User(user_id, name, int(seq))
    catalog.sort(key=lambda d: d.place_in_sequence)
    if by_id:
        _load_trees(conn, users, by_id, tree_needs(batches))
    return catalog, users


def _load_trees(conn: Connection, users: dict[str, User], by_id: dict[str, User], needs: TreeNeeds) -> None:
    for phone, user in users.items():
        user.statuses_loaded = phone in needs.statuses
        user.valid_instances_loaded = phone in needs.valid_instances
    rows = run(
        conn,
        "ingest/load_trees.sql",
        {
            "status_user_ids": _array(u.user_id for u in by_id.values() if u.statuses_loaded),
            "valid_instance_user_ids": _array(u.user_id for u in by_id.values() if u.valid_instances_loaded),
            "instance_ids": _array(needs.instance_ids),
        },
    )
    for kind, user_id, row_id, slug, place, text1, text2, time1, time2, time3, flag in rows.all():
        if kind == "s":
            status = Status(row_id, slug, place, text1, time1, time2)
            status.loaded = (text1, time1, time2)
            by_id[user_id].statuses.append(status)
        elif (owner := by_id.get(user_id)) is not None:  # an instance named by an event, of a user not ours: left out
            instance = Instance(row_id, slug, text1, text2, time1, time2, time3, flag)
            instance.loaded = (slug, text2, time1, time2, time3, flag)
            owner.instances[row_id] = instance
    for user in by_id.values():
        user.statuses.sort(key=_place)


def _place(status: Status) -> int:
    return status.place_in_sequence


@dataclass(frozen=True, slots=True)
class Position:
    """Where a micro-batch ends in its shard: the checkpoint written with its state changes."""

    stream: str
    shard_id: str
    sequence_number: str
    records: int
    behind_ms: int | None = None
    parents: tuple[str, ...] = ()
    arrival: datetime | None = None  # when its last record reached Kinesis (replays start at or before it)


_EMPTY: list = []
_REJECTION_KEYS = ("rj_sequence_numbers", "rj_partition_keys", "rj_raw", "rj_reasons", "rj_attempts")


@dataclass(frozen=True, slots=True)
class WritePlan:
    """The bound parameters of one write_trees.sql execution and the row counts it writes."""

    params: dict
    counts: dict[str, int]


def plan_write(
    users: dict[str, User],
    *,
    rejections: Sequence[Rejection] = (),
    position: Position | None = None,
    commands: Sequence[Command] = (),
    history: Sequence[HistoryRecord] = (),
) -> WritePlan | None:
    """Parameters writing back every changed row of the trees and (in a micro-batch) its set-aside
    records, its records for the event history, its checkpoint and its commands' outbox rows; None
    when there is nothing to write."""
    changed = [u for u in users.values() if u.changed]
    counts = {"users": len(changed), "phone_numbers": 0, "drill_statuses": 0, "drill_instances": 0}
    if not changed and not rejections and position is None and not commands and not history:
        return None
    params: dict = {}
    new_users = [u for u in changed if u.is_new]
    old_users = [u for u in changed if not u.is_new]
    for prefix, group in (("nu", new_users), ("cu", old_users)):
        params.update(
            {
                f"{prefix}_ids": _array(u.user_id for u in group),
                f"{prefix}_seqs": _array(u.seq for u in group),
                f"{prefix}_profiles": _array([_json(u.profile) for u in group]),
                f"{prefix}_times": _array(u.last_interacted_time for u in group),
            }
        )
    params.update(
        {
            "pn_ids": _array(ids.phone_number_id_text(u.phone_number) for u in new_users),
            "pn_phones": _array(u.phone_number for u in new_users),
            "pn_user_ids": _array(u.user_id for u in new_users),
        }
    )
    counts["phone_numbers"] = len(new_users)
    counts["drill_statuses"] = _status_params(params, changed)
    counts["drill_instances"] = _instance_params(params, changed)
    _rejection_params(params, rejections)
    _history_params(params, history)
    _position_params(params, position)
    _outbox_params(params, commands)
    return WritePlan(params, counts)


def execute_write(conn: Connection, plan: WritePlan | None) -> list[str]:
    """Run a planned write (ONE statement, ingest/write_trees.sql); returns the outbox keys that
    are new (a command already in the outbox, from a re-delivered cause, is not written again)."""
    if plan is None:
        return []
    return [row[0] for row in run(conn, "ingest/write_trees.sql", plan.params).all()]


def write_users(
    conn: Connection, users: dict[str, User], *, rejections: Sequence[Rejection] = (), position: Position | None = None
) -> dict[str, int]:
    """Plan and execute the write of the trees (and set-aside records and checkpoint); row counts."""
    plan = plan_write(users, rejections=rejections, position=position)
    execute_write(conn, plan)
    return plan.counts if plan else {"users": 0, "phone_numbers": 0, "drill_statuses": 0, "drill_instances": 0}


# A partition key is at most 256 characters on Kinesis; reasons are summaries.
PARTITION_KEY_LIMIT, REASON_LIMIT = 256, 1000


def _rejection_params(params: dict, rejections: Sequence[Rejection]) -> None:
    """Set-aside records, storable whatever they hold: the raw data is bytea (any bytes), the
    partition key and the reason are made valid text (no NUL, no lone surrogate) and cut."""
    if not rejections:
        params.update(dict.fromkeys(_REJECTION_KEYS, _EMPTY))
        return
    params.update(
        {
            "rj_sequence_numbers": [r.sequence_number for r in rejections],
            "rj_partition_keys": [safe_text(r.partition_key, PARTITION_KEY_LIMIT) for r in rejections],
            "rj_raw": [bytes(r.raw_data) for r in rejections],
            "rj_reasons": [safe_text(r.reason, REASON_LIMIT) or "unknown" for r in rejections],
            "rj_attempts": [r.attempts for r in rejections],
        }
    )


_HISTORY_KEYS = ("hi_phones", "hi_sequence_numbers", "hi_arrivals", "hi_raw")


def history_records(records: Sequence, phones: Sequence[str | None]) -> list[HistoryRecord]:
    """History rows of raw records (pipeline.RawRecord) with the phone number each belongs to
    (None: unknown, the record's partition key is used), made storable whatever they hold (a
    record set aside because the database refused its phone number is kept too)."""
    return [
        HistoryRecord(
            safe_text(phone if phone is not None else r.partition_key, PARTITION_KEY_LIMIT) or "",
            r.sequence_number,
            bytes(r.data),
            r.arrival,
        )
        for r, phone in zip(records, phones, strict=True)
    ]


def _history_params(params: dict, history: Sequence[HistoryRecord]) -> None:
    if not history:
        params.update(dict.fromkeys(_HISTORY_KEYS, _EMPTY))
        return
    params.update(
        {
            "hi_phones": _array(h.phone_number for h in history),
            "hi_sequence_numbers": _array(h.sequence_number for h in history),
            "hi_arrivals": _array(h.arrival for h in history),
            "hi_raw": [h.raw_data for h in history],
        }
    )


def _position_params(params: dict, position: Position | None) -> None:
    if position is None:
        params.update(
            {
                "stream": None,
                "shard_id": None,
                "sequence_number": None,
                "parents": _EMPTY,
                "records": 0,
                "behind_ms": None,
                "arrival": None,
            }
        )
    else:
        params.update(
            {
                "stream": position.stream,
                "shard_id": position.shard_id,
                "sequence_number": position.sequence_number,
                "parents": list(position.parents),
                "records": position.records,
                "behind_ms": position.behind_ms,
                "arrival": position.arrival,
            }
        )


def _outbox_params(params: dict, commands: Sequence[Command]) -> None:
    """The outbox rows, as `drill_progress.outbox.enqueue` writes them, with the arrays passed as
    literals: encoding thousands of JSON payloads element by element cost more than the rest."""
    params.update(
        {
            "source": OUTBOX_SOURCE,
            "ob_keys": _array(c.idempotency_key for c in commands),
            "ob_types": _array(c.command_type for c in commands),
            "ob_phones": _array(c.phone_number for c in commands),
            "ob_payloads": _array([_json(c.payload) for c in commands]),
        }
    )


def _status_params(params: dict, changed: list[User]) -> int:
    st_new: list[tuple[str, Status]] = []
    st_upd: list[Status] = []
    for u in changed:
        for st in u.statuses:
            if st.is_new:
                st_new.append((u.user_id, st))
            elif st.values() != st.loaded:
                st_upd.append(st)
    params.update(
        {
            "ns_ids": _array(st.id for _, st in st_new),
            "ns_user_ids": _array(uid for uid, _ in st_new),
            "ns_instance_ids": _array(st.drill_instance_id for _, st in st_new),
            "ns_slugs": _array(st.drill_slug for _, st in st_new),
            "ns_places": _array(st.place_in_sequence for _, st in st_new),
            "ns_started": _array(st.started_time for _, st in st_new),
            "ns_completed": _array(st.completed_time for _, st in st_new),
            "cs_ids": _array(st.id for st in st_upd),
            "cs_instance_ids": _array(st.drill_instance_id for st in st_upd),
            "cs_started": _array(st.started_time for st in st_upd),
            "cs_completed": _array(st.completed_time for st in st_upd),
        }
    )
    return len(st_new) + len(st_upd)


def _instance_params(params: dict, changed: list[User]) -> int:
    new_inst: list[tuple[User, Instance]] = []
    upd_inst: list[tuple[User, Instance]] = []
    for u in changed:
        for i in u.instances.values():
            if i.is_new:
                new_inst.append((u, i))
            elif i.values() != i.loaded:
                upd_inst.append((u, i))
    params.update(
        {
            "ni_ids": _array(i.drill_instance_id for _, i in new_inst),
            "ni_user_ids": _array(u.user_id for u, _ in new_inst),
            "ni_phones": _array(i.phone_number for _, i in new_inst),
            **_instance_values("ni", [i for _, i in new_inst]),
            "ci_ids": _array(i.drill_instance_id for _, i in upd_inst),
            "ci_user_ids": _array(u.user_id for u, _ in upd_inst),
            **_instance_values("ci", [i for _, i in upd_inst]),
        }
    )
    return len(new_inst) + len(upd_inst)


def _instance_values(prefix: str, instances: list[Instance]) -> dict[str, str]:
    return {
        f"{prefix}_slugs": _array(i.drill_slug for i in instances),
        f"{prefix}_prompts": _array(i.current_prompt_slug for i in instances),
        f"{prefix}_prompt_starts": _array(i.current_prompt_start_time for i in instances),
        f"{prefix}_responses": _array(i.current_prompt_last_response_time for i in instances),
        f"{prefix}_completions": _array(i.completion_time for i in instances),
        f"{prefix}_valid": _array(i.is_valid for i in instances),
    }


def close_shard(conn: Connection, stream: str, shard_id: str, parents: Sequence[str] = ()) -> None:
    run(conn, "ingest/close_shard.sql", {"stream": stream, "shard_id": shard_id, "parents": list(parents)})


def load_checkpoints(conn: Connection, stream: str) -> dict[str, dict]:
    rows = run(conn, "ingest/load_checkpoints.sql", {"stream": stream}).mappings().all()
    return {row["shard_id"]: dict(row) for row in rows}
