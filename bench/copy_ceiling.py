"""The ceiling the apply path is measured against: the rows it writes, written by `COPY`.

`record_writes()` captures, per micro-batch, every row the apply path writes (a row inserted or a
new version of an updated row) in the tables of the aggregate, the outbox and the event history:
`users`, `phone_numbers`, `drill_statuses`, `drill_instances`, `command_outbox`, `event_history`. It wraps
`store.plan_write`, where the apply path turns a folded micro-batch into its write; the row images
are the ones that write carries (ids, seq, the profile jsonb, times, slugs, payloads).

`copy_micro_batches()` then writes exactly those rows into the same tables (same indexes,
constraints, foreign keys and the outbox's trigger) of a fresh database on the same server: per
micro-batch one transaction of one binary COPY per table, committed like the apply path commits (one
commit per micro-batch, with the session's synchronous_commit). COPY only inserts, so a new
version of an updated row is inserted as a row of its own: the updated user gets a fresh user_id
(one per user and micro-batch) and that micro-batch's changed statuses and instances of the user
get fresh ids and point to it, which keeps every unique constraint and foreign key satisfied with
rows of the same width. A COPY insert also adds index entries that an UPDATE of non-key columns
(a HOT update) does not: the ceiling does somewhat more index work than the apply path for those
rows, never less of the table work.

Not in the ceiling: the stream checkpoint (one upserted row per micro-batch, which COPY cannot do)
and the reads of the apply path (locking and loading the users' trees): the ceiling is the cost of
putting the rows in, nothing else.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.copy import FileWriter
from psycopg.types.json import Jsonb

from bench.urls import libpq_uri
from drill_progress import ids
from drill_progress.ingest import store

NS = uuid.UUID("5d0c7c1e-4c1b-4c57-9f4e-1f6a2b3c4d5e")

COLUMNS = {
    "users": ("user_id", "seq", "profile", "last_interacted_time"),
    "phone_numbers": ("id", "phone_number", "user_id", "is_primary"),
    "drill_statuses": (
        "id",
        "user_id",
        "drill_instance_id",
        "drill_slug",
        "place_in_sequence",
        "started_time",
        "completed_time",
    ),
    "drill_instances": (
        "drill_instance_id",
        "user_id",
        "phone_number",
        "drill_slug",
        "current_prompt_slug",
        "current_prompt_start_time",
        "current_prompt_last_response_time",
        "completion_time",
        "is_valid",
    ),
    "command_outbox": ("idempotency_key", "command_type", "partition_key", "payload", "source"),
    "event_history": ("phone_number", "stream", "shard_id", "sequence_number", "arrival", "raw_data"),
}
TABLES = tuple(COLUMNS)  # parents first: the foreign keys are checked per row


@dataclass
class MicroBatchRows:
    rows: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in TABLES})


def _version_id(row_id: str, micro_batch: int) -> str:
    """A fresh id for the version of row `row_id` written by micro-batch `micro_batch`."""
    return str(uuid.uuid5(NS, f"{row_id}:{micro_batch}"))


def _rows_of(n: int, users: dict, commands, history=(), position=None) -> MicroBatchRows:
    out = MicroBatchRows()
    rows = out.rows
    for u in users.values():
        if not u.changed:
            continue
        user_id = u.user_id if u.is_new else _version_id(u.user_id, n)
        rows["users"].append((user_id, u.seq, json.dumps(u.profile), u.last_interacted_time))
        if u.is_new:
            rows["phone_numbers"].append((ids.phone_number_id_text(u.phone_number), u.phone_number, u.user_id, True))
        for st in u.statuses:
            if st.is_new:
                rows["drill_statuses"].append(
                    (
                        st.id,
                        u.user_id,
                        st.drill_instance_id,
                        st.drill_slug,
                        st.place_in_sequence,
                        st.started_time,
                        st.completed_time,
                    )
                )
            elif st.values() != st.loaded:
                rows["drill_statuses"].append(
                    (
                        _version_id(st.id, n),
                        user_id,
                        st.drill_instance_id,
                        st.drill_slug,
                        st.place_in_sequence,
                        st.started_time,
                        st.completed_time,
                    )
                )
        for i in u.instances.values():
            if i.is_new or i.values() != i.loaded:
                rows["drill_instances"].append(
                    (
                        i.drill_instance_id if i.is_new else _version_id(i.drill_instance_id, n),
                        u.user_id if i.is_new else user_id,
                        i.phone_number,
                        i.drill_slug,
                        i.current_prompt_slug,
                        i.current_prompt_start_time,
                        i.current_prompt_last_response_time,
                        i.completion_time,
                        i.is_valid,
                    )
                )
    for c in commands:
        rows["command_outbox"].append(
            (c.idempotency_key, c.command_type, c.phone_number, json.dumps(c.payload), store.OUTBOX_SOURCE)
        )
    for h in history:
        rows["event_history"].append(
            (h.phone_number, position.stream, position.shard_id, h.sequence_number, h.arrival, h.raw_data)
        )
    return out


@contextlib.contextmanager
def record_writes() -> Iterator[list[MicroBatchRows]]:
    """While open, every micro-batch's written rows are appended to the yielded list (the apply
    path runs slower meanwhile: record in a run that is not timed)."""
    captured: list[MicroBatchRows] = []
    original = store.plan_write

    def recording(users, *, rejections=(), position=None, commands=(), history=()):
        plan = original(users, rejections=rejections, position=position, commands=commands, history=history)
        if plan is not None and position is not None:
            captured.append(_rows_of(len(captured), users, commands, history, position))
        return plan

    store.plan_write = recording
    try:
        yield captured
    finally:
        store.plan_write = original


def row_counts(captured: list[MicroBatchRows]) -> dict[str, int]:
    return {t: sum(len(mb.rows[t]) for mb in captured) for t in TABLES}


# Each column's PostgreSQL type, in COLUMNS' order: COPY's binary format carries typed values.
TYPES = {
    "users": ("uuid", "numeric", "jsonb", "timestamptz"),
    "phone_numbers": ("uuid", "text", "uuid", "bool"),
    "drill_statuses": ("uuid", "uuid", "uuid", "text", "int4", "timestamptz", "timestamptz"),
    "drill_instances": ("uuid", "uuid", "text", "text", "text", "timestamptz", "timestamptz", "timestamptz", "bool"),
    "command_outbox": ("text", "text", "text", "jsonb", "text"),
    "event_history": ("text", "text", "text", "text", "timestamptz", "bytea"),
}


def _typed(kind: str, value):
    """A recorded value as the Python object psycopg dumps in binary for a column of type `kind`."""
    if value is None:
        return None
    if kind == "uuid":
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    if kind == "numeric":
        return Decimal(str(value))
    if kind == "timestamptz" and isinstance(value, str):
        return datetime.fromisoformat(value)
    if kind == "jsonb":
        return Jsonb(json.loads(value) if isinstance(value, str) else value)
    return value


def render(captured: list[MicroBatchRows], url: str) -> list[list[tuple[sql.Composed, bytes]]]:
    """Per micro-batch: (COPY statement, data in COPY's binary format) per table that has rows.
    Binary, like the apply path's parameters: in COPY's text format the server parsed every raw
    record back from hex, which cost the ceiling about a fifth of its time (19,000 events/s in
    binary against 15,700 in text, same rows). `url` is only used for psycopg's type adapters."""
    statements = {
        t: sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(t), sql.SQL(", ").join(map(sql.Identifier, COLUMNS[t]))
        )
        for t in TABLES
    }
    out = []
    with psycopg.connect(libpq_uri(url)) as conn:
        for mb in captured:
            block = []
            for t in TABLES:
                if mb.rows[t]:
                    buffer = io.BytesIO()
                    with psycopg.Copy(conn.cursor(), binary=True, writer=FileWriter(buffer)) as copy:
                        copy.set_types(list(TYPES[t]))
                        for row in mb.rows[t]:
                            copy.write_row([_typed(kind, v) for kind, v in zip(TYPES[t], row, strict=True)])
                    block.append((statements[t], buffer.getvalue()))
            out.append(block)
    return out


def copy_micro_batches(url: str, blocks: list[list[tuple[sql.Composed, bytes]]]) -> tuple[float, str]:
    """COPY every micro-batch's rows, one transaction and one commit per micro-batch, on one
    connection; (wall seconds, the session's synchronous_commit). The data is rendered beforehand:
    what is timed is PostgreSQL taking the rows in and committing them."""
    with psycopg.connect(libpq_uri(url)) as conn:
        mode = conn.execute("SHOW synchronous_commit").fetchone()[0]
        conn.commit()
        started = time.perf_counter()
        for block in blocks:
            with conn.cursor() as cur:
                for statement, data in block:
                    with cur.copy(statement) as copy:
                        copy.write(data)
            conn.commit()
        return time.perf_counter() - started, mode
