"""Rebuild users' aggregates from the event history (DAG `drill_progress_rebuild`, docs/history.md).

For a chunk of phone numbers, in ONE transaction:
1. lock their users (rebuild/lock_users.sql: the rows ingestion locks before changing a tree);
2. read their history in the order ingestion applied it (rebuild/history.sql), parse each record
   with the ingestion edge and fold the batches into fresh trees with the ingestion fold
   (`drill_progress.ingest.fold.fold`: one implementation of the rules);
3. compare each fresh tree with the stored one, row by row and field by field;
4. unless `dry_run`, write the differences with the ingestion write statement
   (ingest/write_trees.sql through `store.plan_write`) and delete the instances the history does
   not produce. The commands the fold asks for are dropped: a rebuild never sends a command.

A batch that ingestion applies during the rebuild waits for the lock of step 1 and lands on top of
the rebuilt tree (or was committed before it, and is then in the history of step 2): never lost,
never applied twice. Running the rebuild again finds nothing to change.

A user created before the history was complete (`event_history_coverage.complete_since`: users of
before the history existed, or whose oldest records were pruned) is reported and left alone: their
history lacks batches, and a rebuild from it would lose progress.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from drill_progress.db import run
from drill_progress.ingest import events as ev
from drill_progress.ingest import store
from drill_progress.ingest.fold import Instance, Status, User, fold
from drill_progress.privacy import mask_phone

log = logging.getLogger(__name__)

CHUNK = 200  # phone numbers per transaction
MAX_REPORTED = 200  # users whose differences are listed in the result (all are counted)

USER_FIELDS = ("seq", "profile", "last_interacted_time")
STATUS_FIELDS = ("drill_instance_id", "started_time", "completed_time")
INSTANCE_FIELDS = (
    "drill_slug",
    "current_prompt_slug",
    "current_prompt_start_time",
    "current_prompt_last_response_time",
    "completion_time",
    "is_valid",
)


@dataclass
class TableDiff:
    added: int = 0
    removed: int = 0
    changed: int = 0
    fields: set[str] = field(default_factory=set)

    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict:
        return {"added": self.added, "removed": self.removed, "changed": self.changed, "fields": sorted(self.fields)}


@dataclass
class UserDiff:
    phone_number: str
    tables: dict[str, TableDiff] = field(
        default_factory=lambda: {t: TableDiff() for t in ("users", "drill_statuses", "drill_instances")}
    )

    def any(self) -> bool:
        return any(t.any() for t in self.tables.values())

    def as_dict(self) -> dict:
        return {
            "phone_number": mask_phone(self.phone_number),
            **{name: t.as_dict() for name, t in self.tables.items() if t.any()},
        }


@dataclass
class Summary:
    dry_run: bool
    examined: int = 0
    changed: int = 0  # users whose tree differs from their history's (rebuilt unless dry_run)
    unchanged: int = 0
    no_history: int = 0  # phone numbers without any record in the history
    incomplete_history: int = 0  # users created before the history was complete: left alone
    records_read: int = 0
    records_bad: int = 0  # records the current edge still refuses (they were set aside)
    rows: dict[str, dict[str, int]] = field(
        default_factory=lambda: {
            t: {"added": 0, "removed": 0, "changed": 0} for t in ("users", "drill_statuses", "drill_instances")
        }
    )
    users: list[dict] = field(default_factory=list)

    def add(self, diff: UserDiff) -> None:
        self.changed += 1
        for name, t in diff.tables.items():
            for kind in ("added", "removed", "changed"):
                self.rows[name][kind] += getattr(t, kind)
        if len(self.users) < MAX_REPORTED:
            self.users.append(diff.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "examined": self.examined,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "no_history": self.no_history,
            "incomplete_history": self.incomplete_history,
            "records_read": self.records_read,
            "records_bad": self.records_bad,
            "rows": self.rows,
            "users": self.users,
        }


# ---- one chunk ---------------------------------------------------------------------------------


@dataclass
class _Stored:
    """A user's tree as stored (values as PostgreSQL returns them)."""

    user_id: str
    seq: int
    profile: Any
    last_interacted_time: datetime | None
    history_complete: bool
    statuses: dict[str, tuple] = field(default_factory=dict)  # id -> (slug, place, *STATUS_FIELDS)
    instances: dict[str, tuple] = field(default_factory=dict)  # id -> (phone, *INSTANCE_FIELDS)


def _load_stored(conn: Connection, phones: Sequence[str]) -> dict[str, _Stored]:
    stored: dict[str, _Stored] = {}
    for phone, user_id, seq, profile, last, complete in run(
        conn, "rebuild/lock_users.sql", {"phones": list(phones)}
    ).all():
        stored[phone] = _Stored(user_id, int(seq), profile, last, bool(complete))
    by_id = {s.user_id: s for s in stored.values()}
    if by_id:
        for kind, user_id, row_id, slug, place, instance_id, phone, prompt, t1, t2, t3, flag in run(
            conn, "rebuild/load_trees.sql", {"user_ids": list(by_id)}
        ).all():
            if kind == "s":
                by_id[user_id].statuses[row_id] = (slug, place, instance_id, t1, t2)
            else:
                by_id[user_id].instances[row_id] = (phone, slug, prompt, t1, t2, t3, flag)
    return stored


def _history(conn: Connection, phones: Sequence[str], summary: Summary) -> list[ev.Batch]:
    batches = []
    for (raw,) in run(conn, "rebuild/history.sql", {"phones": list(phones)}).all():
        summary.records_read += 1
        try:
            batches.append(ev.parse_record(bytes(raw)))
        except ev.BadRecord:
            summary.records_bad += 1
    return batches


def _instants(conn: Connection, users: dict[str, User]) -> dict[str, datetime]:
    """Every event time of the fresh trees, read as PostgreSQL stores it."""
    texts: set[str] = set()
    for user in users.values():
        texts.add(user.last_interacted_time)  # type: ignore[arg-type]
        for s in user.statuses:
            texts.update((s.started_time, s.completed_time))  # type: ignore[arg-type]
        for i in user.instances.values():
            texts.update(
                (i.current_prompt_start_time, i.current_prompt_last_response_time, i.completion_time)  # type: ignore[arg-type]
            )
    texts.discard(None)  # type: ignore[arg-type]
    if not texts:
        return {}
    return dict(run(conn, "rebuild/timestamps.sql", {"texts": sorted(texts)}).all())


def _diff(fresh: User, stored: _Stored | None, at: dict) -> UserDiff:
    diff = UserDiff(fresh.phone_number)
    t = diff.tables
    if stored is None:
        t["users"].added = 1
        t["drill_statuses"].added = len(fresh.statuses)
        t["drill_instances"].added = len(fresh.instances)
        return diff
    for name, now, was in (
        ("seq", fresh.seq, stored.seq),
        ("profile", fresh.profile, stored.profile),
        ("last_interacted_time", at.get(fresh.last_interacted_time), stored.last_interacted_time),  # type: ignore[arg-type]
    ):
        if now != was:
            t["users"].fields.add(name)
    t["users"].changed = int(bool(t["users"].fields))
    _diff_rows(
        t["drill_statuses"],
        {s.id: (s.drill_instance_id, at.get(s.started_time), at.get(s.completed_time)) for s in fresh.statuses},  # type: ignore[arg-type]
        {k: v[2:] for k, v in stored.statuses.items()},
        STATUS_FIELDS,
        count_removed=False,  # a row the history does not produce (a rollout's) is kept
    )
    _diff_rows(
        t["drill_instances"],
        {
            i.drill_instance_id: (
                i.drill_slug,
                i.current_prompt_slug,
                at.get(i.current_prompt_start_time),  # type: ignore[arg-type]
                at.get(i.current_prompt_last_response_time),  # type: ignore[arg-type]
                at.get(i.completion_time),  # type: ignore[arg-type]
                i.is_valid,
            )
            for i in fresh.instances.values()
        },
        {k: v[1:] for k, v in stored.instances.items()},
        INSTANCE_FIELDS,
    )
    return diff


def _diff_rows(out: TableDiff, fresh: dict, stored: dict, names: tuple, count_removed: bool = True) -> None:
    for key, values in fresh.items():
        was = stored.get(key)
        if was is None:
            out.added += 1
            continue
        changed = [name for name, a, b in zip(names, values, was, strict=True) if a != b]
        if changed:
            out.changed += 1
            out.fields.update(changed)
    if count_removed:
        out.removed += len(set(stored) - set(fresh))


def _to_write(fresh: User, stored: _Stored | None) -> User:
    """The fresh tree marked for store.plan_write: rows already stored are updates, the others
    inserts; a status whose place is taken by a stored row of another drill is left out."""
    if stored is None:
        return fresh
    fresh.is_new = False
    fresh.changed = True
    taken = {v[1]: k for k, v in stored.statuses.items()}
    statuses: list[Status] = []
    for s in fresh.statuses:
        s.is_new = s.id not in stored.statuses
        s.loaded = None
        if s.is_new and s.place_in_sequence in taken:
            continue
        statuses.append(s)
    fresh.statuses = statuses
    instances: dict[str, Instance] = {}
    for key, i in fresh.instances.items():
        i.is_new = key not in stored.instances
        i.loaded = None
        instances[key] = i
    fresh.instances = instances
    return fresh


def rebuild_chunk(engine: Engine, phones: Sequence[str], summary: Summary) -> None:
    """Compare (and unless dry_run replace) the trees of `phones`, in one transaction."""
    with engine.begin() as conn:
        stored = _load_stored(conn, phones)
        summary.examined += len(phones)
        incomplete = {p for p, s in stored.items() if not s.history_complete}
        summary.incomplete_history += len(incomplete)
        wanted = [p for p in phones if p not in incomplete]
        batches = _history(conn, wanted, summary)
        catalog = store.load_catalog(conn)
        fresh: dict[str, User] = {}
        fold(fresh, batches, catalog)  # its commands are dropped: a rebuild sends nothing
        summary.no_history += len([p for p in wanted if p not in fresh])
        at = _instants(conn, fresh)
        changed: dict[str, User] = {}
        for phone, user in fresh.items():
            diff = _diff(user, stored.get(phone), at)
            if not diff.any():
                summary.unchanged += 1
                continue
            summary.add(diff)
            log.info("%s: %s", mask_phone(phone), diff.as_dict())
            changed[phone] = user
        if summary.dry_run or not changed:
            return
        for phone, user in changed.items():
            _to_write(user, stored.get(phone))
        store.execute_write(conn, store.plan_write(changed))
        gone = [
            (user.user_id, instance_id)
            for phone, user in changed.items()
            if (before := stored.get(phone)) is not None
            for instance_id in before.instances
            if instance_id not in user.instances
        ]
        if gone:
            run(
                conn,
                "rebuild/delete_instances.sql",
                {"user_ids": [u for u, _ in gone], "instance_ids": [i for _, i in gone]},
            )


def all_phone_numbers(engine: Engine, page: int = 10_000) -> Iterator[list[str]]:
    after = ""
    while True:
        with engine.connect() as conn:
            phones = [r[0] for r in run(conn, "rebuild/user_page.sql", {"after": after, "limit": page}).all()]
        if not phones:
            return
        yield phones
        after = phones[-1]


def rebuild(
    engine: Engine, phone_numbers: Sequence[str] = (), *, all_users: bool = False, dry_run: bool = True
) -> Summary:
    """Rebuild the given phone numbers' users, or every user, from the event history."""
    if bool(phone_numbers) == bool(all_users):
        raise ValueError("give either phone_numbers (a non-empty list) or all_users, not both")
    summary = Summary(dry_run=dry_run)
    pages = all_phone_numbers(engine) if all_users else iter([sorted(set(phone_numbers))])
    for page in pages:
        for start in range(0, len(page), CHUNK):
            rebuild_chunk(engine, page[start : start + CHUNK], summary)
    log.info(
        "rebuild%s: %s",
        " (dry run)" if dry_run else "",
        {k: v for k, v in summary.as_dict().items() if k != "users"},
    )
    return summary
