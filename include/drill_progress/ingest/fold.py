"""The state rules of contract §3 as a pure fold: event batches applied to in-memory user trees.

No database here. `store.py` loads the trees of the users a micro-batch touches, `fold()`
applies the micro-batch's batches to them in stream order, and `store.py` writes back exactly
the rows that changed. Unit-tested rule by rule without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from drill_progress import ids
from drill_progress.ingest import events as ev
from drill_progress.next_drill import admits, employer_of, next_drill
from drill_progress.outbox import commands
from drill_progress.outbox.commands import Command

# A timestamptz as text: an event's validated RFC 3339 created_time, or PostgreSQL's text output
# for a value loaded from the database. Times are only copied into rows here, never computed
# with, and the database reads either form as the same instant.
Timestamp = str


@dataclass(slots=True)
class Status:
    id: str
    drill_slug: str
    place_in_sequence: int
    drill_instance_id: str | None = None
    started_time: Timestamp | None = None
    completed_time: Timestamp | None = None
    is_new: bool = False
    loaded: tuple | None = None  # values as loaded, to write only what changed

    def values(self) -> tuple:
        return (self.drill_instance_id, self.started_time, self.completed_time)


@dataclass(slots=True)
class Instance:
    drill_instance_id: str
    drill_slug: str
    phone_number: str
    current_prompt_slug: str | None = None
    current_prompt_start_time: Timestamp | None = None
    current_prompt_last_response_time: Timestamp | None = None
    completion_time: Timestamp | None = None
    is_valid: bool = True
    is_new: bool = False
    loaded: tuple | None = None

    def values(self) -> tuple:
        return (
            self.drill_slug,
            self.current_prompt_slug,
            self.current_prompt_start_time,
            self.current_prompt_last_response_time,
            self.completion_time,
            self.is_valid,
        )


@dataclass(slots=True)
class User:
    user_id: str
    phone_number: str
    seq: int | None  # None: not stored yet (a new user)
    is_new: bool = False
    changed: bool = False
    profile: dict | None = None
    last_interacted_time: Timestamp | None = None
    statuses: list[Status] = field(default_factory=list)  # in place_in_sequence order
    instances: dict[str, Instance] = field(default_factory=dict)
    # what was loaded of an existing user's tree (see tree_needs): a rule that reads a part that
    # was not loaded raises instead of silently changing nothing
    statuses_loaded: bool = True
    valid_instances_loaded: bool = True


@dataclass(frozen=True, slots=True)
class CatalogDrill:
    drill_slug: str
    place_in_sequence: int
    employer_ids: tuple[str, ...] | None = None  # the drill's audience (drill_progress.next_drill); None: everyone


@dataclass(slots=True)
class FoldResult:
    applied: int = 0  # event batches applied
    events: int = 0  # events in the batches applied
    skipped: int = 0  # event batches skipped by the seq guard
    commands: list[Command] = field(default_factory=list)


# The event types whose rules read the user's drill statuses, and those that read every valid
# instance of the user (beyond the instances the events name, which are always loaded).
READS_STATUSES = frozenset(
    {ev.USER_VALIDATED, ev.DRILL_STARTED, ev.DRILL_COMPLETED, ev.NEXT_DRILL_REQUESTED, ev.OPTED_OUT}
)
READS_VALID_INSTANCES = frozenset({ev.USER_VALIDATED})


@dataclass(slots=True)
class TreeNeeds:
    """What of the users' trees the rules of a micro-batch's events read, by phone number."""

    statuses: set[str] = field(default_factory=set)
    valid_instances: set[str] = field(default_factory=set)
    instance_ids: set[str] = field(default_factory=set)


def tree_needs(batches: Iterable[ev.Batch]) -> TreeNeeds:
    """Most batches only answer prompts: their users' statuses need not be loaded at all."""
    needs = TreeNeeds()
    for batch in batches:
        for event in batch.events:
            kind = event.event_type
            if kind in READS_STATUSES:
                needs.statuses.add(batch.phone_number)
                if kind in READS_VALID_INSTANCES:
                    needs.valid_instances.add(batch.phone_number)
            if event.drill_instance_id is not None:
                needs.instance_ids.add(event.drill_instance_id)
    return needs


def _statuses(user: User) -> list[Status]:
    if not user.statuses_loaded:
        raise AssertionError(f"user {user.user_id}: statuses read but not loaded (READS_STATUSES is wrong)")
    return user.statuses


def new_user(phone_number: str, catalog: Sequence[CatalogDrill], employer: str | None = None) -> User:
    """A user seen for the first time: deterministic ids, one status row per catalog drill whose
    audience admits the user's employer (the others leave a gap at their place)."""
    user_id = ids.user_id_text(phone_number)
    statuses = [
        Status(ids.status_id_text(user_id, d.drill_slug), d.drill_slug, d.place_in_sequence, is_new=True)
        for d in sorted(catalog, key=lambda d: d.place_in_sequence)
        if admits(d.employer_ids, employer)
    ]
    return User(user_id, phone_number, None, is_new=True, statuses=statuses)


def _own_statuses(user: User, catalog: Sequence[CatalogDrill], employer: str | None) -> list[Status]:
    """The user's rows of drills whose audience admits `employer` (a row of a drill outside it is
    history, never a drill to start)."""
    audience = {d.drill_slug: d.employer_ids for d in catalog}
    return [s for s in _statuses(user) if admits(audience.get(s.drill_slug), employer)]


def _add_own_drills(user: User, catalog: Sequence[CatalogDrill], employer: str | None) -> None:
    """Give a (re)validated user a not-started row for each catalog drill of its employer it lacks
    (a user created before its employer was known, e.g. after a failed validation, lacks the
    targeted ones), at the drill's catalog place. A place still taken by another drill (a rollout
    shifting drills right now) is left alone: that rollout's re-run completes it."""
    have = {s.drill_slug for s in _statuses(user)}
    taken = {s.place_in_sequence for s in user.statuses}
    added = [
        Status(ids.status_id_text(user.user_id, d.drill_slug), d.drill_slug, d.place_in_sequence, is_new=True)
        for d in catalog
        if d.drill_slug not in have and d.place_in_sequence not in taken and admits(d.employer_ids, employer)
    ]
    if added:
        user.statuses = sorted(user.statuses + added, key=lambda s: s.place_in_sequence)


def _command_key(event_id: str) -> str:
    return f"ingest:{event_id}"


def _drill_started(user: User, batch: ev.Batch, event: ev.Event, out: list) -> None:
    for status in _statuses(user):
        if status.drill_slug == event.drill_slug:
            status.started_time = event.created_time
            status.drill_instance_id = event.drill_instance_id
            break
    instance = user.instances.get(event.drill_instance_id)  # type: ignore[arg-type]
    if instance is None:
        instance = Instance(
            event.drill_instance_id,
            event.drill_slug,
            batch.phone_number,  # type: ignore[arg-type]
            is_new=True,
        )
        user.instances[event.drill_instance_id] = instance  # type: ignore[index]
    instance.drill_slug = event.drill_slug  # type: ignore[assignment]
    instance.current_prompt_slug = event.prompt_slug
    instance.current_prompt_start_time = event.created_time
    instance.current_prompt_last_response_time = None
    instance.completion_time = None
    instance.is_valid = True


def _prompt_answered(user: User, batch: ev.Batch, event: ev.Event, out: list) -> None:
    instance = user.instances.get(event.drill_instance_id)  # type: ignore[arg-type]
    if instance is not None:
        instance.current_prompt_last_response_time = event.created_time


def _advanced(user: User, batch: ev.Batch, event: ev.Event, out: list) -> None:
    instance = user.instances.get(event.drill_instance_id)  # type: ignore[arg-type]
    if instance is not None:
        instance.current_prompt_slug = event.prompt_slug
        instance.current_prompt_start_time = event.created_time
        instance.current_prompt_last_response_time = None


def _drill_completed(user: User, batch: ev.Batch, event: ev.Event, out: list) -> None:
    for status in _statuses(user):
        if status.drill_instance_id == event.drill_instance_id:
            status.completed_time = event.created_time
    instance = user.instances.get(event.drill_instance_id)  # type: ignore[arg-type]
    if instance is not None:
        instance.completion_time = event.created_time
        instance.current_prompt_slug = None
        instance.current_prompt_start_time = None
        instance.current_prompt_last_response_time = None


def _user_validated(user: User, batch: ev.Batch, event: ev.Event, out: list) -> None:
    if not user.valid_instances_loaded:
        raise AssertionError(f"user {user.user_id}: valid instances read but not loaded (READS_VALID_INSTANCES)")
    for status in _statuses(user):
        status.started_time = None
        status.completed_time = None
        status.drill_instance_id = None
    for instance in user.instances.values():
        instance.is_valid = False
    out.append(("first", event.event_id, None))  # the drill: apply_batch (it reads the catalog)


def _opted_out(user: User, batch: ev.Batch, event: ev.Event, out: list) -> None:
    if event.drill_instance_id is None:
        return
    for status in _statuses(user):
        if status.drill_instance_id == event.drill_instance_id:
            status.started_time = None
    instance = user.instances.get(event.drill_instance_id)
    if instance is not None:
        instance.is_valid = False


def _next_drill_requested(user: User, batch: ev.Batch, event: ev.Event, out: list) -> None:
    out.append(("next", event.event_id, None))


def _nothing_more(user: User, batch: ev.Batch, event: ev.Event, out: list) -> None:
    """REMINDER_TRIGGERED, USER_VALIDATION_FAILED: only the updates every event makes."""


RULES = {
    ev.USER_VALIDATED: _user_validated,
    ev.USER_VALIDATION_FAILED: _nothing_more,
    ev.DRILL_STARTED: _drill_started,
    ev.ADVANCED_TO_NEXT_PROMPT: _advanced,
    ev.COMPLETED_PROMPT: _prompt_answered,
    ev.FAILED_PROMPT: _prompt_answered,
    ev.DRILL_COMPLETED: _drill_completed,
    ev.REMINDER_TRIGGERED: _nothing_more,
    ev.NEXT_DRILL_REQUESTED: _next_drill_requested,
    ev.OPTED_OUT: _opted_out,
}


def apply_batch(user: User, batch: ev.Batch, catalog: Sequence[CatalogDrill]) -> list[Command] | None:
    """Apply one event batch to `user` in place. None if the seq guard skips it, else the
    commands it causes: for each USER_VALIDATED, a START_DRILL of the user's first own drill (the
    first by place of the drills whose audience admits the employer of the event's profile; the
    user gets the rows of those it lacked), in event order; then, if the batch has a
    NEXT_DRILL_REQUESTED, one START_DRILL of the user's next drill computed after the whole batch
    (keyed by the first such event). At most one START_DRILL per drill in a batch, keyed by its
    first cause: two USER_VALIDATED, or USER_VALIDATED then NEXT_DRILL_REQUESTED, ask for the same
    drill once."""
    if user.seq is not None and batch.seq <= user.seq:
        return None
    requests: list[tuple[str, str, str | None]] = []
    for event in batch.events:
        RULES[event.event_type](user, batch, event, requests)
        if event.event_type == ev.USER_VALIDATED:
            requests[-1] = ("first", event.event_id, _first_own_drill(user, catalog, employer_of(event.user_profile)))
    last = batch.events[-1]
    user.seq = batch.seq
    user.profile = last.user_profile
    user.last_interacted_time = last.created_time
    user.changed = True
    if not requests:
        return []
    wanted: dict[str, str] = {}  # drill slug -> event id of its first cause, in order
    next_request = None
    for kind, event_id, slug in requests:
        if kind == "first":
            if slug is not None:
                wanted.setdefault(slug, event_id)
        elif next_request is None:
            next_request = event_id
    if next_request is not None:
        slug = next_drill(_own_statuses(user, catalog, employer_of(user.profile)))
        if slug is not None:
            wanted.setdefault(slug, next_request)
    return [commands.start_drill(batch.phone_number, slug, _command_key(key)) for slug, key in wanted.items()]


def _first_own_drill(user: User, catalog: Sequence[CatalogDrill], employer: str | None) -> str | None:
    """After USER_VALIDATED's reset: the user's first own drill, the rows it lacked added first."""
    _add_own_drills(user, catalog, employer)
    own = _own_statuses(user, catalog, employer)
    return own[0].drill_slug if own else None


def fold(users: dict[str, User], batches: Iterable[ev.Batch], catalog: Sequence[CatalogDrill]) -> FoldResult:
    """Apply batches in order; `users` maps phone number -> tree and gains the new users."""
    result = FoldResult()
    for batch in batches:
        user = users.get(batch.phone_number)
        if user is None:
            profile = batch.events[-1].user_profile  # the profile a new user is stored with
            user = users[batch.phone_number] = new_user(batch.phone_number, catalog, employer_of(profile))
        produced = apply_batch(user, batch, catalog)
        if produced is None:
            result.skipped += 1
        else:
            result.applied += 1
            result.events += len(batch.events)
            result.commands += produced
    return result
