"""The work of the `drill_rollout` DAG: add a new drill to the catalog and to every existing user.

Steps (`roll_out`):

1. **Validate** the operator's params again (the trigger form validates too, but the CLI, the
   REST API and `dag.test()` can pass anything): a bad or hostile value raises `RolloutRefused`
   before anything is touched.
2. **Catalog** (own transaction, committed first): the drill goes in at its place, with its
   **audience** (`drills.employer_ids`: the `only_employer_ids` as text, NULL = everyone). A
   place before existing drills shifts those drills one place on; no place, or a place past the
   end, appends. From the commit on, users created by ingestion get the drill from the catalog
   if its audience admits their employer. A slug already in the catalog is not added again;
   re-rolling it with another place or another name is refused; re-rolling it for more
   employers (or for everyone) extends its audience, never narrows it.
3. **Users**, in batches of about `batch_size` users: consecutive `users.user_id` key ranges
   computed up front from the primary key (keyset pagination; a user created meanwhile falls
   into some range too), `workers` batch transactions at a time on disjoint users. In each:
   the range's status rows of drills *after* the new one take their catalog place (after a
   shift this moves them one on, each user's order kept, and frees the new drill's place;
   `drill_statuses_user_place_unique` is deferred to commit so there is no transient
   collision; when appending there is nothing to move), then each user of the drill's audience
   gets a not-started row (`ON CONFLICT (user_id, drill_slug) DO NOTHING`: a re-run inserts
   nothing).
4. **Sweep**: waits (bounded) for transactions that began before the catalog commit — an
   ingestion transaction that read the old catalog — then one set-based pass fixes whoever
   slipped between the catalog commit and their batch.

Invariant kept: a user's status row for a drill sits at that drill's catalog place, so the
catalog's order is every user's order. Users outside the drill's audience have a gap where the
drill is (order is all that matters to the next-drill rule), and every rule that reads rows
ignores a drill whose audience leaves the user out (drill_progress.next_drill).

Status row ids are the project's deterministic ones, `drill_progress.ids.status_id(user_id, slug)`
(the ids ingestion gives a new user's rows), computed here per batch and bound as arrays.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from drill_progress import ids
from drill_progress.db import run
from drill_progress.next_drill import Audience

log = logging.getLogger(__name__)

# Limits shared with the DAG's Params (tests/rollout checks that they agree).
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
NAME_MAX_LENGTH = 120
NAME_PATTERN = r"^[\w.,:'()&/+!?-][\w .,:'()&/+!?-]{0,119}$"  # letters, digits, space, - _ . , : ' ( ) & / + ! ?
MAX_PLACE = 9_999
MAX_EMPLOYER_IDS = 1_000
MAX_EMPLOYER_ID = 2**63 - 1

BATCH_SIZE = 10_000
WORKERS = 2  # batch transactions at a time
SETTLE_TIMEOUT_S = 60.0
ADVISORY_LOCK_KEY = 7_316_006  # arbitrary, constant: "drill rollout"
PARAM_NAMES = ("drill_slug", "drill_name", "place_in_sequence", "only_employer_ids", "dry_run")

_SLUG = re.compile(SLUG_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_NIL = uuid.UUID(int=0)
_MAX_UUID = (1 << 128) - 1
_RETRYABLE_SQLSTATES = {"40P01", "40001", "55P03"}  # deadlock, serialization failure, lock not available


class RolloutRefused(ValueError):
    """The params are invalid or conflict with the catalog; nothing was changed."""


@dataclass(frozen=True)
class RolloutRequest:
    slug: str
    name: str
    place: int | None
    employer_ids: tuple[int, ...] | None
    dry_run: bool

    @property
    def employer_filter(self) -> list[str] | None:
        """Employer ids as text, compared with profile->account_info->>employer_id (1 and "1" alike)."""
        return None if self.employer_ids is None else [str(i) for i in self.employer_ids]


@dataclass(frozen=True)
class Placement:
    place: int
    action: str  # "append" | "insert" (shifts later drills) | "present" (already in the catalog)


def _employer_order(employer_id: str) -> tuple[int, str]:
    return (len(employer_id), employer_id)  # numeric order for the integers a rollout names


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def validate(
    drill_slug: Any, drill_name: Any, place_in_sequence: Any = None, only_employer_ids: Any = None, dry_run: Any = False
) -> RolloutRequest:
    """Check every param; raise RolloutRefused naming each problem. Pure: touches nothing."""
    problems: list[str] = []
    slug = drill_slug
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        problems.append(
            f"drill_slug {_shown(slug)} must match {SLUG_PATTERN} "
            "(lower-case letters, digits and '-', at most 64 characters)"
        )
    name = drill_name.strip() if isinstance(drill_name, str) else drill_name
    if not isinstance(name, str) or not name:
        problems.append("drill_name is required (a non-empty string)")
    elif len(name) > NAME_MAX_LENGTH:
        problems.append(f"drill_name is {len(name)} characters long; at most {NAME_MAX_LENGTH}")
    elif not _NAME.fullmatch(name):
        problems.append(
            f"drill_name {_shown(name)} may hold only letters, digits, spaces and - _ . , : ' ( ) & / + ! ?"
        )
    place = place_in_sequence
    if place is not None and (not _is_int(place) or not 0 <= place <= MAX_PLACE):
        problems.append(
            f"place_in_sequence {_shown(place)} must be empty (= after the last drill) "
            f"or an integer from 0 to {MAX_PLACE} (0 = first drill)"
        )
    employer_ids: tuple[int, ...] | None = None
    if only_employer_ids is not None:
        ids = only_employer_ids
        if not isinstance(ids, list | tuple) or not all(_is_int(i) and 0 <= i <= MAX_EMPLOYER_ID for i in ids):
            problems.append(f"only_employer_ids {_shown(ids)} must be a list of non-negative integers")
        elif len(ids) > MAX_EMPLOYER_IDS:
            problems.append(f"only_employer_ids lists {len(ids)} employers; at most {MAX_EMPLOYER_IDS}")
        elif ids:  # an empty list means no filter, like an empty field in the trigger form
            employer_ids = tuple(sorted(set(ids)))
    if not isinstance(dry_run, bool):
        problems.append(f"dry_run {_shown(dry_run)} must be true or false")
    if problems:
        raise RolloutRefused("drill rollout refused, nothing was changed: " + "; ".join(problems))
    return RolloutRequest(slug, name, place, employer_ids, dry_run)


def from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The rollout's keyword arguments from a DAG run's params (other keys are ignored)."""
    return {name: params.get(name) for name in PARAM_NAMES if params.get(name) is not None}


def resolve_placement(
    request: RolloutRequest, existing_name: str | None, existing_place: int | None, last_place: int | None
) -> Placement:
    """Where the drill goes, given the catalog. Pure.

    New slug: no place, or a place after the last drill -> appended at last + 1; a place at or
    before the last drill -> inserted there, shifting the drills from that place on.
    Slug already in the catalog: the same name and the same place (or none, or a place past
    the end when the drill is last — what appending resolved to) -> 'present'; else refused."""
    if existing_place is not None:
        if existing_name != request.name:
            raise RolloutRefused(
                f"drill rollout refused, nothing was changed: {request.slug!r} is already in the catalog "
                f"named {existing_name!r}, not {request.name!r}; re-run with the catalog's name"
            )
        same_place = (
            request.place is None
            or request.place == existing_place
            or (request.place > existing_place and existing_place == last_place)
        )
        if not same_place:
            raise RolloutRefused(
                f"drill rollout refused, nothing was changed: {request.slug!r} is already in the catalog at "
                f"place {existing_place} (0-based), not {request.place}; a drill is never moved by a rollout"
            )
        return Placement(existing_place, "present")
    end = 0 if last_place is None else last_place + 1
    if request.place is None or request.place >= end:
        return Placement(end, "append")
    return Placement(request.place, "insert")


def resolve_audience(request: RolloutRequest, placement: Placement, existing: Audience) -> Audience:
    """The drill's audience after this rollout (None = everyone). Pure.

    A new drill gets the request's employers (none listed: everyone). A drill already in the
    catalog keeps its audience extended by the request's employers, or becomes everyone's when no
    employer is listed; narrowing (employers named for a drill that is everyone's) is refused."""
    wanted = request.employer_filter
    if placement.action != "present":
        return None if wanted is None else tuple(sorted(wanted, key=_employer_order))
    if wanted is None or existing is None:
        if existing is None and wanted is not None:
            raise RolloutRefused(
                f"drill rollout refused, nothing was changed: {request.slug!r} is already rolled out to every "
                "employer; a rollout never narrows a drill's audience (leave only_employer_ids empty)"
            )
        return None
    return tuple(sorted(set(existing) | set(wanted), key=_employer_order))


def _shown_audience(audience: Audience) -> list[str] | None:
    return None if audience is None else list(audience)


# --------------------------------------------------------------------------- the rollout


def roll_out(
    engine: Engine,
    *,
    drill_slug: Any = None,
    drill_name: Any = None,
    place_in_sequence: Any = None,
    only_employer_ids: Any = None,
    dry_run: Any = False,
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    settle_timeout: float = SETTLE_TIMEOUT_S,
) -> dict:
    """Add the drill to the catalog and to every matching user; return the summary."""
    request = validate(drill_slug, drill_name, place_in_sequence, only_employer_ids, dry_run)
    started = time.monotonic()
    who = "all users" if request.employer_ids is None else f"users of employers {list(request.employer_ids)}"
    log.info("rollout of %r (%r) to %s%s", request.slug, request.name, who, " — DRY RUN" if request.dry_run else "")
    if request.dry_run:
        return _dry_run(engine, request, started)
    with _exclusive(engine):
        target, before, shifted, committed_at = _add_to_catalog(engine, request)
        totals = _add_to_users(engine, request, target, batch_size=batch_size, workers=workers, started=started)
        swept, moved_in_sweep = _sweep(engine, request, target, committed_at, settle_timeout)
    placement = target.placement
    summary = {
        "drill_slug": request.slug,
        "drill_name": request.name,
        "place_in_sequence": placement.place,
        "catalog": "already present" if placement.action == "present" else "added",
        "catalog_drills_shifted": shifted,
        "only_employer_ids": None if request.employer_ids is None else list(request.employer_ids),
        "audience": _shown_audience(target.audience),
        "audience_before": _shown_audience(before) if placement.action == "present" else None,
        "users_scanned": totals["users"],
        "users_matched": totals["matched"],
        "rows_inserted": totals["inserted"] + swept,
        "rows_inserted_by_sweep": swept,
        "statuses_moved": totals["moved"] + moved_in_sweep,
        "batches": totals["batches"],
        "seconds": round(time.monotonic() - started, 3),
        "dry_run": False,
    }
    log.info("rollout of %r done: %s", request.slug, summary)
    return summary


def _dry_run(engine: Engine, request: RolloutRequest, started: float) -> dict:
    with engine.connect() as conn:
        name, existing, audience_before, _, last = run(conn, "rollout/catalog_state.sql", {"slug": request.slug}).one()
        placement = resolve_placement(request, name, existing, last)
        audience = resolve_audience(request, placement, _audience(audience_before))
        per_employer = {
            employer_id: {"users": users, "would_insert": would_insert}
            for employer_id, users, would_insert in run(
                conn, "rollout/dry_run_counts.sql", {"slug": request.slug, "employer_ids": _shown_audience(audience)}
            ).all()
        }
        to_move = 0
        if placement.action == "insert":
            to_move = run(conn, "rollout/dry_run_shift_count.sql", {"place": placement.place}).scalar_one()
        conn.rollback()
    matched = sum(c["users"] for c in per_employer.values())
    missing = sum(c["would_insert"] for c in per_employer.values())
    summary = {
        "drill_slug": request.slug,
        "drill_name": request.name,
        "place_in_sequence": placement.place,
        "catalog": "already present" if placement.action == "present" else f"would {placement.action}",
        "only_employer_ids": None if request.employer_ids is None else list(request.employer_ids),
        "audience": _shown_audience(audience),
        "audience_before": _shown_audience(_audience(audience_before)) if placement.action == "present" else None,
        "users_matched": matched,
        "rows_inserted": 0,
        "rows_would_insert": missing,
        "per_employer": per_employer,
        "statuses_would_move": to_move,
        "seconds": round(time.monotonic() - started, 3),
        "dry_run": True,
    }
    log.info(
        "DRY RUN, nothing changed: audience %s; %d matching users, %d would get %r at place %d, "
        "%d status rows would move; per employer (users, would get it): %s",
        "everyone" if audience is None else list(audience),
        matched,
        missing,
        request.slug,
        placement.place,
        to_move,
        {employer: (c["users"], c["would_insert"]) for employer, c in per_employer.items()},
    )
    return summary


def _audience(employer_ids: list[str] | None) -> Audience:
    return None if employer_ids is None else tuple(employer_ids)


@contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    """One rollout at a time: a session-level advisory lock held on its own, idle connection."""
    with engine.connect() as conn:
        got = run(conn, "rollout/try_lock.sql", {"key": ADVISORY_LOCK_KEY}).scalar_one()
        conn.commit()  # stay out of a transaction: the sweep waits for open transactions
        if not got:
            raise RuntimeError("another drill rollout is running on this database; wait for it and re-run")
        try:
            yield
        finally:
            run(conn, "rollout/unlock.sql", {"key": ADVISORY_LOCK_KEY})
            conn.commit()


@dataclass(frozen=True)
class Target:
    """Where the drill sits and whom it is for, once the catalog is committed."""

    placement: Placement
    audience: Audience

    @property
    def employer_filter(self) -> list[str] | None:
        return _shown_audience(self.audience)


def _add_to_catalog(engine: Engine, request: RolloutRequest) -> tuple[Target, Audience, int, Any]:
    shifted = 0
    with engine.begin() as conn:
        run(conn, "rollout/catalog_lock.sql")
        name, existing, before, drills, last = run(conn, "rollout/catalog_state.sql", {"slug": request.slug}).one()
        placement = resolve_placement(request, name, existing, last)
        before = _audience(before)
        audience = resolve_audience(request, placement, before)
        if placement.action == "insert":
            run(conn, "rollout/defer_place_constraints.sql")
            shifted = run(conn, "rollout/catalog_shift.sql", {"place": placement.place}).rowcount
        if placement.action != "present":
            run(
                conn,
                "rollout/catalog_insert.sql",
                {
                    "slug": request.slug,
                    "name": request.name,
                    "place": placement.place,
                    "employer_ids": _shown_audience(audience),
                },
            )
        elif audience != before:
            run(conn, "rollout/catalog_audience.sql", {"slug": request.slug, "employer_ids": _shown_audience(audience)})
    with engine.connect() as conn:
        committed_at = run(conn, "rollout/server_time.sql").scalar_one()
        conn.rollback()
    whom = "everyone" if audience is None else f"employers {list(audience)}"
    if placement.action == "present":
        log.info(
            "catalog: %r already at place %d, now for %s (was %s); completing it for users who lack it",
            request.slug,
            placement.place,
            whom,
            "everyone" if before is None else f"employers {list(before)}",
        )
    else:
        log.info(
            "catalog: %r added at place %d of %d for %s (%d later drills shifted one on); committed",
            request.slug,
            placement.place,
            drills + 1,
            whom,
            shifted,
        )
    return Target(placement, audience), before, shifted, committed_at


def _retrying(what: str, attempts: int = 5):
    """Run a transaction function again after a deadlock or serialization failure (rolled back whole)."""

    def wrap(fn):
        def call(*args, **kwargs):
            for attempt in range(1, attempts + 1):
                try:
                    return fn(*args, **kwargs)
                except DBAPIError as error:
                    sqlstate = getattr(error.orig, "sqlstate", None)
                    if sqlstate not in _RETRYABLE_SQLSTATES or attempt == attempts:
                        raise
                    log.warning(
                        "%s: %s (sqlstate %s), retrying (%d/%d)",
                        what,
                        type(error.orig).__name__,
                        sqlstate,
                        attempt,
                        attempts,
                    )
                    time.sleep(0.2 * attempt)
            raise AssertionError("unreachable")

        return call

    return wrap


def _insert_statuses(conn: Connection, request: RolloutRequest, user_ids: list) -> int:
    """Rows for the users who lack the drill; ON CONFLICT skips those who have it (re-runs, new users)."""
    if not user_ids:
        return 0
    return run(
        conn,
        "rollout/insert_statuses.sql",
        {
            "slug": request.slug,
            "ids": [ids.status_id(u, request.slug) for u in user_ids],
            "user_ids": user_ids,
        },
    ).rowcount


def _key_ranges(engine: Engine, batch_size: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Consecutive user_id ranges of about batch_size users each, covering the whole key space
    (so users created meanwhile fall into some range too)."""
    with engine.connect() as conn:
        bounds = [
            uuid.UUID(str(b)) for b in run(conn, "rollout/batch_bounds.sql", {"batch": batch_size}).scalars().all()
        ]
        conn.rollback()
    ranges, lo = [], _NIL
    for hi in bounds:
        ranges.append((lo, hi))
        if hi.int == _MAX_UUID:
            return ranges
        lo = uuid.UUID(int=hi.int + 1)
    ranges.append((lo, uuid.UUID(int=_MAX_UUID)))
    return ranges


@_retrying("user batch")
def _batch(engine: Engine, request: RolloutRequest, target: Target, lo: uuid.UUID, hi: uuid.UUID) -> dict:
    """One transaction: the range's status rows after the drill take their catalog place, then the
    range's users of the drill's audience get the drill."""
    params = {
        "lo": str(lo),
        "hi": str(hi),
        "place": target.placement.place,
        "slug": request.slug,
        "employer_ids": target.employer_filter,
    }
    with engine.begin() as conn:
        users = run(conn, "rollout/batch_users.sql", params).all()
        if not users:
            return {"users": 0, "matched": 0, "inserted": 0, "moved": 0}
        run(conn, "rollout/defer_place_constraints.sql")
        moved = run(conn, "rollout/sync_places.sql", params).rowcount
        matched = [(user_id, has_drill) for user_id, matches, has_drill in users if matches]
        inserted = _insert_statuses(conn, request, [user_id for user_id, has_drill in matched if not has_drill])
    return {"users": len(users), "matched": len(matched), "inserted": inserted, "moved": moved}


def _add_to_users(
    engine: Engine, request: RolloutRequest, target: Target, *, batch_size: int, workers: int, started: float
) -> dict:
    """All key ranges, `workers` transactions at a time (disjoint users: they never wait on each other)."""
    ranges = _key_ranges(engine, batch_size)
    totals = {"users": 0, "matched": 0, "inserted": 0, "moved": 0, "batches": 0}
    progress = threading.Lock()
    stop = threading.Event()

    def one(lo: uuid.UUID, hi: uuid.UUID) -> None:
        if stop.is_set():
            return
        t0 = time.monotonic()
        try:
            batch = _batch(engine, request, target, lo, hi)
        except BaseException:
            stop.set()  # the other workers start no new batch
            raise
        if not batch["users"]:
            return
        with progress:
            totals["batches"] += 1
            for key in ("users", "matched", "inserted", "moved"):
                totals[key] += batch[key]
            log.info(
                "batch %d of ~%d: %d users, %d matched, %d rows inserted, %d statuses moved, %.2fs "
                "(so far %d users, %d inserted, %.1fs)",
                totals["batches"],
                len(ranges),
                batch["users"],
                batch["matched"],
                batch["inserted"],
                batch["moved"],
                time.monotonic() - t0,
                totals["users"],
                totals["inserted"],
                time.monotonic() - started,
            )

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="rollout") as pool:
        futures = [pool.submit(one, lo, hi) for lo, hi in ranges]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return totals


def _wait_for_older_transactions(engine: Engine, since: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:  # a new transaction per look: pg_stat_activity is snapshotted
            older = run(conn, "rollout/older_transactions.sql", {"since": since}).scalar_one()
            conn.rollback()
        if not older:
            return True
        if time.monotonic() >= deadline:
            log.warning(
                "%d transactions older than the catalog change still open after %.0fs; sweeping "
                "anyway (re-run the rollout later to catch users they create)",
                older,
                timeout,
            )
            return False
        time.sleep(0.5)


@_retrying("sweep")
def _sweep_once(engine: Engine, request: RolloutRequest, target: Target, chunk: int) -> tuple[int, int]:
    with engine.begin() as conn:
        run(conn, "rollout/defer_place_constraints.sql")
        moved = run(conn, "rollout/sweep_sync_places.sql", {"place": target.placement.place}).rowcount
        lacking = (
            run(conn, "rollout/sweep_lacking.sql", {"slug": request.slug, "employer_ids": target.employer_filter})
            .scalars()
            .all()
        )
        inserted = sum(
            _insert_statuses(conn, request, list(lacking[i : i + chunk])) for i in range(0, len(lacking), chunk)
        )
    return inserted, moved


def _sweep(
    engine: Engine, request: RolloutRequest, target: Target, committed_at: Any, timeout: float
) -> tuple[int, int]:
    t0 = time.monotonic()
    _wait_for_older_transactions(engine, committed_at, timeout)
    inserted, moved = _sweep_once(engine, request, target, BATCH_SIZE)
    log.info(
        "sweep: %d rows inserted, %d statuses moved for users created during the rollout, %.2fs",
        inserted,
        moved,
        time.monotonic() - t0,
    )
    return inserted, moved
