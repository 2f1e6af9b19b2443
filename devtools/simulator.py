"""A simulated Dialog Context: realistic event traffic on the dialog event stream (contract §2).

    python -m devtools.simulator [--follow] [--users N] [--rate R] [--endpoint-url URL]
                                       [--stream NAME] [--seed S] [--batches B] [--malformed-rate F]

A pool of users (phone numbers +1555…) goes through the conversation the Dialog Context runs:
code validation (sometimes failing first), drills from the catalog started one after another,
prompts answered right or wrong (sometimes abandoned), reminders, requests for the next drill and
the occasional opt-out. Each Kinesis record is one event batch of 1-3 events, partition key = the
phone number, shaped like the real producer's batches (tests/ingest/data/real-producer: full drill
objects with their prompts and messages, profiles with the seven self ratings, employer and unit
names, microsecond timestamps, key order) with a 56-digit `seq` like the real one (a Kinesis
sequence number), strictly increasing over the stream and so per phone number. A small fraction of records
(`--malformed-rate`, default 0.5%) is deliberately bad input (not JSON, unknown event type, a
non-numeric seq, a missing drill instance id) so the pipeline's rejected-records path is visible.

Without `--follow` one burst of `--batches` records is published and the program exits; with
`--follow` it publishes about `--rate` batches per second until stopped (SIGINT/SIGTERM).

The generation (`Simulator`) is pure and deterministic given a seed and a clock; publishing
(`publish`) is separate. `seq` follows the clock in microseconds (and +1 when two batches fall in
the same microsecond, `KinesisSeq`), so a restarted simulator keeps every phone number's `seq`
increasing and its traffic is not skipped as late. The shape helpers (`profile`, `drill`, `event`,
`batch`, `KinesisSeq`) are what the benchmarks build their traffic with too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from drill_progress import config
from drill_progress.privacy import mask_phone

log = logging.getLogger("devtools.simulator")

DEFAULT_USERS = 50
DEFAULT_RATE = 2.0
DEFAULT_BATCHES = 200
DEFAULT_MALFORMED_RATE = 0.005
# employer_id -> unit numbers. As the real producer has it, a unit's id is the employer id times 100
# plus the unit's number (employer 1: unit_id 101 "Unit 1"; employer 10: unit_id 1003 "Unit 3").
EMPLOYERS = {1: (1, 2, 3), 2: (1, 2), 7: (1, 4), 12: (1,)}
MALFORMED_KINDS = ("not_json", "unknown_event_type", "seq_not_a_number", "missing_instance_id")
MAX_RECORDS_PER_PUT = 500
MAX_BYTES_PER_PUT = 4 * 1024 * 1024

# ---------------------------------------------------------------------- the real producer's shapes
# tests/ingest/data/real-producer/*.json are batches the real Dialog Context wrote; what follows
# writes the same shapes, key for key and in the same key order.

# `seq` is the Kinesis sequence number of the command that caused the batch: 56 digits today (up
# to 129 allowed). The real examples share their first 31 digits (the shard's part); the other 25
# grow with time. Here: those 31 digits, then the clock in microseconds (16 digits) and a counter
# (9 digits), strictly increasing over the whole stream like a shard's sequence numbers.
SEQ_PREFIX = 4960659383774440537232818328203
SEQ_DIGITS = 56
_SEQ_TAIL = 10 ** (SEQ_DIGITS - len(str(SEQ_PREFIX)))
_SEQ_PER_MICROSECOND = 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PROMPTS_PER_DRILL = 6  # five questions, then the drill's closing message (no correct response)
SELF_RATINGS = tuple(f"self_rating_{i}" for i in range(1, 8))
# The real producer's key orders (its serializer's, not alphabetical): every event's keys are a
# subsequence of _EVENT_KEYS, every profile's keys are _PROFILE_KEYS.
_EVENT_KEYS = (
    "first_prompt",
    "abandoned",
    "created_time",
    "code_validation_payload",
    "drill_instance_id",
    "user_profile",
    "drill",
    "prompt",
    "response",
    "event_id",
    "schema_version",
    "phone_number",
    "event_type",
)
_PROFILE_KEYS = (
    "validated",
    "is_demo",
    "self_rating_2",
    "name",
    "self_rating_3",
    "self_rating_4",
    "self_rating_6",
    "language",
    "self_rating_7",
    "opted_out",
    "self_rating_1",
    "account_info",
    "self_rating_5",
)


class KinesisSeq:
    """Sequence numbers as one Kinesis shard hands them out: 56 digits, strictly increasing over
    the whole stream (so per phone number too) and following the clock, so that a restarted
    generator goes on above every number the previous one gave in an earlier microsecond."""

    def __init__(self) -> None:
        self.last = 0

    def next(self, now: datetime) -> int:
        micros = (now - _EPOCH) // timedelta(microseconds=1)
        self.last = max(self.last + 1, micros * _SEQ_PER_MICROSECOND)
        if self.last >= _SEQ_TAIL:
            raise OverflowError("the clock is past what 56-digit sequence numbers hold")
        return SEQ_PREFIX * _SEQ_TAIL + self.last


def iso(moment: datetime) -> str:
    """The real producer's timestamps: microseconds and `+00:00` (2020-04-07T16:38:13.600722+00:00)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def account_info(employer_id: int, unit: int) -> dict:
    return {
        "employer_id": employer_id,
        "employer_name": f"Employer {employer_id}",
        "unit_id": employer_id * 100 + unit,
        "unit_name": f"Unit {unit}",
    }


def profile(
    *,
    validated: bool,
    opted_out: bool = False,
    is_demo: bool = False,
    account: dict | None = None,
    ratings: dict[str, int] | None = None,
) -> dict:
    """A user_profile as the real producer writes it: all seven self ratings (null until rated),
    name and language null, account_info `{}` until the user is validated."""
    values = dict.fromkeys(SELF_RATINGS)
    values.update(ratings or {})
    values.update(
        validated=validated, is_demo=is_demo, name=None, language=None, opted_out=opted_out, account_info=account or {}
    )
    return {key: values[key] for key in _PROFILE_KEYS}


def prompt_slug(index: int) -> str:
    """The real catalog's prompt slugs, spaces included: "1 - ", then "2 -", "3 -", ..."""
    return "1 - " if index == 0 else f"{index + 1} -"


def prompt(drill_number: int, index: int) -> dict:
    """Prompt `index` (0-based) of a catalog drill: two messages, a correct response (none for the
    closing message, the last prompt)."""
    n = index + 1
    closing = n == PROMPTS_PER_DRILL
    return {
        "response_user_profile_key": None,
        "slug": prompt_slug(index),
        "messages": [
            {"media_url": None, "text": f"{{{{drill_{drill_number}_fact_{n}}}}}"},
            {
                "media_url": None,
                "text": "{{open_source_drill_end}}" if closing else f"{{{{drill_{drill_number}_practice_{n}}}}}",
            },
        ],
        "correct_response": None
        if closing
        else f"{correct_letter(drill_number, index)}) {{{{drill_{drill_number}_answer_{n}}}}}",
    }


def correct_letter(drill_number: int, index: int) -> str:
    return "abcde"[(drill_number + index) % 5]


def drill(slug: str, drill_number: int) -> dict:
    return {
        "slug": slug,
        "name": f"Sample Drill {drill_number}",
        "prompts": [prompt(drill_number, i) for i in range(PROMPTS_PER_DRILL)],
    }


def event(event_type: str, event_id: str, phone_number: str, created_time: str, user_profile: dict, **fields) -> dict:
    """One event, its keys in the real producer's order."""
    values = {
        "created_time": created_time,
        "user_profile": user_profile,
        "event_id": event_id,
        "schema_version": 1,
        "phone_number": phone_number,
        "event_type": event_type,
        **fields,
    }
    unknown = set(values) - set(_EVENT_KEYS)
    if unknown:
        raise ValueError(f"not a field of the real producer's events: {sorted(unknown)}")
    return {key: values[key] for key in _EVENT_KEYS if key in values}


def batch(batch_id: str, seq: int | str, phone_number: str, created_time: str, events: list[dict]) -> dict:
    return {
        "batch_id": batch_id,
        "seq": str(seq),
        "phone_number": phone_number,
        "created_time": created_time,
        "events": events,
    }


def encode(document: dict) -> bytes:
    """The record's bytes: JSON as Python's json module writes it by default (", " and ": ")."""
    return json.dumps(document).encode()


# ---------------------------------------------------------------------- the simulation


@dataclass(frozen=True)
class Record:
    """One Kinesis record: the bytes, the partition key, and whether it is meant to be valid."""

    data: bytes
    partition_key: str
    malformed: str | None = None  # the kind of bad input, None for a good record

    def json(self) -> dict:
        return json.loads(self.data)


@dataclass
class User:
    phone_number: str
    employer_id: int
    unit: int
    is_demo: bool
    validated: bool = False
    opted_out: bool = False
    seq: int = 0
    completed: set[str] = field(default_factory=set)
    instance_id: str | None = None
    drill_slug: str | None = None
    prompt_index: int = 0  # index of the current prompt in the active drill
    answered: bool = False  # the current prompt has been answered correctly (or needs no answer)
    ratings: dict[str, int] = field(default_factory=dict)
    gone: bool = False  # leaves the simulated pool after its current batch

    def account(self) -> dict:
        return account_info(self.employer_id, self.unit)

    def profile(self) -> dict:
        return profile(
            validated=self.validated,
            opted_out=self.opted_out,
            is_demo=self.is_demo,
            account=self.account() if self.validated else None,
            ratings=self.ratings,
        )


def phone_number(index: int) -> str:
    """The i-th simulated phone number: +1555 then 7 digits (fictional range)."""
    return f"+1555{1_000_000 + index:07d}"


class Simulator:
    """Generates event batches for a pool of simulated users. Pure: no I/O."""

    def __init__(
        self,
        users: int = DEFAULT_USERS,
        seed: int | None = None,
        malformed_rate: float = DEFAULT_MALFORMED_RATE,
        drills: Iterable[str] = config.INITIAL_CATALOG,
        clock: Callable[[], datetime] | None = None,
    ):
        if users < 1:
            raise ValueError("at least one user is needed")
        self.rng = random.Random(seed)  # noqa: S311 - simulation, not cryptography
        self.malformed_rate = malformed_rate
        self.drills = tuple(drills)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sequence = KinesisSeq()
        self.joined = 0
        self.users: list[User] = [self._new_user() for _ in range(users)]

    def _new_user(self) -> User:
        employer = self.rng.choice(sorted(EMPLOYERS))
        user = User(
            phone_number=phone_number(self.joined),
            employer_id=employer,
            unit=self.rng.choice(EMPLOYERS[employer]),
            is_demo=self.rng.random() < 0.05,
        )
        self.joined += 1
        return user

    # ------------------------------------------------------------------ ids and times

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _next_seq(self, user: User, now: datetime) -> int:
        user.seq = self.sequence.next(now)
        return user.seq

    # ------------------------------------------------------------------ the conversation

    def _event(self, user: User, event_type: str, at: datetime, **extra) -> dict:
        return event(event_type, self._uuid(), user.phone_number, iso(at), user.profile(), **extra)

    def _drill_number(self, slug: str) -> int:
        return self.drills.index(slug) + 1 if slug in self.drills else 0

    def _prompt(self, user: User) -> dict:
        return prompt(self._drill_number(user.drill_slug or ""), user.prompt_index)

    def _next_drill_slug(self, user: User) -> str | None:
        return next((slug for slug in self.drills if slug not in user.completed), None)

    def _step(self, user: User, at: datetime) -> dict | None:  # noqa: PLR0911, PLR0912
        """The user's next event, and its effect on the simulated state; None = nothing to say.

        A user who is done (all drills completed, opted out, or gone quiet in the middle of a
        drill, which is what reminders and next-drill scheduling are for) leaves the pool and a
        new phone number joins it."""
        roll = self.rng.random()
        if not user.validated:
            if roll < 0.01:  # STOP before ever validating: an opt-out outside any drill
                user.opted_out, user.gone = True, True
                return self._event(user, "OPTED_OUT", at, drill_instance_id=None)
            if roll < 0.15:
                return self._event(user, "USER_VALIDATION_FAILED", at)
            return self._validated(user, at)
        if roll < 0.01:
            instance = user.instance_id
            user.opted_out, user.instance_id, user.drill_slug, user.gone = True, None, None, True
            return self._event(user, "OPTED_OUT", at, drill_instance_id=instance)
        if user.instance_id is None:
            slug = self._next_drill_slug(user)
            if slug is None:  # everything done: asks for more once in a while, then leaves
                user.gone = True
                return self._event(user, "NEXT_DRILL_REQUESTED", at) if roll < 0.3 else None
            if roll < 0.1:
                return self._event(user, "NEXT_DRILL_REQUESTED", at)
            user.instance_id, user.drill_slug, user.prompt_index, user.answered = self._uuid(), slug, 0, False
            full = drill(slug, self._drill_number(slug))
            return self._event(
                user,
                "DRILL_STARTED",
                at,
                first_prompt=full["prompts"][0],
                drill_instance_id=user.instance_id,
                drill=full,
            )
        if roll < 0.04:
            user.gone = True  # goes quiet in the middle of a drill
            return None
        if roll < 0.08:
            return self._event(user, "REMINDER_TRIGGERED", at)
        instance, current = user.instance_id, self._prompt(user)
        if user.answered:
            if user.prompt_index + 1 < PROMPTS_PER_DRILL:
                user.prompt_index += 1
                following = self._prompt(user)
                user.answered = following["correct_response"] is None  # the closing message asks nothing
                return self._event(user, "ADVANCED_TO_NEXT_PROMPT", at, drill_instance_id=instance, prompt=following)
            user.completed.add(user.drill_slug)
            user.instance_id, user.drill_slug = None, None
            if self.rng.random() < 0.3:
                user.ratings[self.rng.choice(SELF_RATINGS)] = self.rng.randint(1, 10)
            return self._event(user, "DRILL_COMPLETED", at, drill_instance_id=instance)
        letter = current["correct_response"][0]
        if roll < 0.75:
            user.answered = True
            return self._event(
                user, "COMPLETED_PROMPT", at, drill_instance_id=instance, prompt=current, response=f"{letter})"
            )
        abandoned = self.rng.random() < 0.1
        if abandoned:
            user.instance_id, user.drill_slug = None, None
        wrong = self.rng.choice([c for c in "abcde" if c != letter])
        return self._event(
            user,
            "FAILED_PROMPT",
            at,
            abandoned=abandoned,
            drill_instance_id=instance,
            prompt=current,
            response=self.rng.choice((wrong, f"{wrong})", "?")),
        )

    def _validated(self, user: User, at: datetime) -> dict:
        user.validated = True
        user.completed.clear()
        user.instance_id, user.drill_slug = None, None
        payload = {"is_demo": user.is_demo, "account_info": user.account(), "valid": True}
        return self._event(user, "USER_VALIDATED", at, code_validation_payload=payload)

    # ------------------------------------------------------------------ batches

    def next_record(self) -> Record:
        """One record for a random user: usually a good batch of 1-3 events, rarely bad input.
        The events of a batch are a few hundred microseconds apart and the batch is stamped just
        after its last event, as the real producer's are."""
        now = self.clock()
        if self.rng.random() < self.malformed_rate:
            return self._malformed(self.rng.choice(self.users), now)
        while True:
            slot = self.rng.randrange(len(self.users))
            user = self.users[slot]
            wanted = self.rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
            gaps = [self.rng.randint(50, 600) for _ in range(wanted)]  # microseconds between events
            events: list[dict] = []
            for i in range(wanted):
                if user.gone:
                    break
                at = now - timedelta(microseconds=sum(gaps[i:]))
                step = self._step(user, at)
                if step is not None:
                    events.append(step)
            if user.gone:
                self.users[slot] = self._new_user()
            if events:
                break
        doc = batch(self._uuid(), self._next_seq(user, now), user.phone_number, iso(now), events)
        return Record(encode(doc), user.phone_number)

    def _malformed(self, user: User, now: datetime) -> Record:
        """Bad input that does not change the simulated state (the pipeline sets it aside)."""
        kind = self.rng.choice(MALFORMED_KINDS)
        good_seq = str(user.seq + 1)  # not consumed: the user's next good batch has a greater one
        doc = batch(self._uuid(), good_seq, user.phone_number, iso(now), [])
        if kind == "not_json":
            data = b'{"batch_id": "' + doc["batch_id"].encode() + b'", "seq": '
            return Record(data, user.phone_number, kind)
        if kind == "unknown_event_type":
            doc["events"] = [self._event(user, "DRILL_EXPLODED", now)]
        elif kind == "seq_not_a_number":
            doc["seq"] = "abc"
            doc["events"] = [self._event(user, "REMINDER_TRIGGERED", now)]
        else:  # missing_instance_id
            doc["events"] = [self._event(user, "DRILL_COMPLETED", now)]
        return Record(encode(doc), user.phone_number, kind)

    def burst(self, n: int) -> list[Record]:
        return [self.next_record() for _ in range(n)]


# ---------------------------------------------------------------------- publishing


@dataclass
class PublishStats:
    records: int = 0
    events: int = 0
    malformed: int = 0
    failed: int = 0
    calls: int = 0

    def add(self, other: PublishStats) -> None:
        for name in ("records", "events", "malformed", "failed", "calls"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def chunks(records: list[Record]) -> list[list[Record]]:
    """PutRecords chunks (≤500 records, ≤4 MiB) holding at most one record per phone number, so
    retrying a failed record never lets a later batch of the same phone number overtake it."""
    out: list[list[Record]] = []
    chunk: list[Record] = []
    keys: set[str] = set()
    size = 0
    for rec in records:
        rec_size = len(rec.data) + len(rec.partition_key)
        if chunk and (
            len(chunk) == MAX_RECORDS_PER_PUT or size + rec_size > MAX_BYTES_PER_PUT or rec.partition_key in keys
        ):
            out.append(chunk)
            chunk, keys, size = [], set(), 0
        chunk.append(rec)
        keys.add(rec.partition_key)
        size += rec_size
    if chunk:
        out.append(chunk)
    return out


def publish(kinesis, stream: str, records: list[Record], max_attempts: int = 6) -> PublishStats:
    """Publish records in order; a chunk's failed records are retried before the next chunk."""
    stats = PublishStats()
    for chunk in chunks(records):
        pending = chunk
        for attempt in range(1, max_attempts + 1):
            stats.calls += 1
            response = kinesis.put_records(
                StreamName=stream, Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in pending]
            )
            failed = [r for r, res in zip(pending, response["Records"], strict=True) if res.get("ErrorCode")]
            failed_ids = {id(r) for r in failed}
            for rec in pending:
                if id(rec) not in failed_ids:
                    stats.records += 1
                    if rec.malformed:
                        stats.malformed += 1
                    else:
                        stats.events += len(rec.json()["events"])
            if not failed:
                break
            pending = failed
            if attempt == max_attempts:
                stats.failed += len(failed)
                log.warning(
                    "%d records not published after %d attempts (first for %s)",
                    len(failed),
                    attempt,
                    mask_phone(failed[0].partition_key),
                )
                break
            time.sleep(min(2.0, 0.1 * 2**attempt))
    return stats


def default_endpoint_url() -> str | None:
    """$DRILL_AWS_ENDPOINT_URL, else the `aws_default` connection's endpoint_url, else the local
    stack's emulator on $DRILL_AWS_PORT (5055)."""
    if os.environ.get("DRILL_AWS_ENDPOINT_URL"):
        return os.environ["DRILL_AWS_ENDPOINT_URL"]
    conn = os.environ.get("AIRFLOW_CONN_AWS_DEFAULT", "")
    if conn.startswith("{"):
        extra = json.loads(conn).get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra)
        if extra.get("endpoint_url"):
            return extra["endpoint_url"]
    return f"http://127.0.0.1:{os.environ.get('DRILL_AWS_PORT', '5055')}"


def kinesis_client(endpoint_url: str | None):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "kinesis",
        endpoint_url=endpoint_url or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION", config.DEFAULT_AWS_REGION),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )


def wait_for_stream(kinesis, stream: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"]
            if status in {"ACTIVE", "UPDATING"}:
                return
        except kinesis.exceptions.ResourceNotFoundException:
            pass
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"stream {stream!r} does not exist or is not active; run the drill_progress_setup "
                "DAG (make up does) or pass --stream"
            )
        time.sleep(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--follow", action="store_true", help="keep publishing until stopped")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="simulated users (default %(default)s)")
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="batches per second with --follow (default %(default)s)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=DEFAULT_BATCHES,
        help="records in the one burst without --follow (default %(default)s)",
    )
    parser.add_argument("--endpoint-url", default=None, help="Kinesis endpoint (default: the local emulator)")
    parser.add_argument(
        "--stream",
        default=os.environ.get("AIRFLOW_VAR_DIALOG_EVENT_STREAM", config.VARIABLE_DEFAULTS[config.DIALOG_EVENT_STREAM]),
        help="dialog event stream (default: $AIRFLOW_VAR_DIALOG_EVENT_STREAM or %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible traffic")
    parser.add_argument(
        "--malformed-rate",
        type=float,
        default=DEFAULT_MALFORMED_RATE,
        help="fraction of deliberately bad records (default %(default)s)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=None,
        help="seconds to wait for the stream to exist (default: 0, or 600 with --follow)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    endpoint = args.endpoint_url or default_endpoint_url()
    kinesis = kinesis_client(endpoint)
    wait_for_stream(kinesis, args.stream, args.wait if args.wait is not None else (600 if args.follow else 0))
    sim = Simulator(users=args.users, seed=args.seed, malformed_rate=args.malformed_rate)
    log.info("publishing to %s at %s for %d simulated users", args.stream, endpoint, args.users)
    if not args.follow:
        stats = publish(kinesis, args.stream, sim.burst(args.batches))
        log.info(
            "published %d records (%d events, %d malformed, %d failed) in %d PutRecords calls",
            stats.records,
            stats.events,
            stats.malformed,
            stats.failed,
            stats.calls,
        )
        return 1 if stats.failed else 0

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    total, tick, last_report = PublishStats(), 1.0, time.monotonic()
    carry = 0.0
    while not stopping:
        started = time.monotonic()
        carry += args.rate * tick
        n, carry = int(carry), carry - int(carry)
        if n:
            try:
                total.add(publish(kinesis, args.stream, sim.burst(n)))
            except Exception as exc:  # the emulator restarting, the stream being recreated: keep going
                log.warning("publishing failed (%s: %s); retrying", type(exc).__name__, exc)
                time.sleep(5)
        if time.monotonic() - last_report >= 60:
            log.info(
                "so far %d records (%d events, %d malformed, %d failed)",
                total.records,
                total.events,
                total.malformed,
                total.failed,
            )
            last_report = time.monotonic()
        time.sleep(max(0.0, tick - (time.monotonic() - started)))
    log.info(
        "stopped after %d records (%d events, %d malformed, %d failed)",
        total.records,
        total.events,
        total.malformed,
        total.failed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
