"""A simulated Dialog Context: realistic event traffic on the dialog event stream (contract §2).

    python -m devtools.simulator [--follow] [--users N] [--rate R] [--endpoint-url URL]
                                       [--stream NAME] [--seed S] [--batches B] [--malformed-rate F]

A pool of users (phone numbers +1555…) goes through the conversation the Dialog Context runs:
code validation (sometimes failing first), drills from the catalog started one after another,
prompts answered right or wrong (sometimes abandoned), reminders, requests for the next drill and
the occasional opt-out. Each Kinesis record is one event batch of 1-3 events with a strictly
increasing `seq` per phone number, partition key = the phone number. A small fraction of records
(`--malformed-rate`, default 0.5%) is deliberately bad input (not JSON, unknown event type, a
non-numeric seq, a missing drill instance id) so the pipeline's rejected-records path is visible.

Without `--follow` one burst of `--batches` records is published and the program exits; with
`--follow` it publishes about `--rate` batches per second until stopped (SIGINT/SIGTERM).

The generation (`Simulator`) is pure and deterministic given a seed and a clock; publishing
(`publish`) is separate. `seq` follows the clock in microseconds (and +1 when two batches of one
phone number fall in the same microsecond), so a restarted simulator keeps every phone number's
`seq` increasing and its traffic is not skipped as late.
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
PROMPTS_PER_DRILL = 3
EMPLOYERS = {1: (1, 2, 3), 2: (1, 2), 7: (1, 4), 12: (1,)}  # employer_id -> unit ids
NAMES = ("Ana", "Ben", "Chloé", "Dev", "Eun-ji", "Farah", "Gus", "Hana", "Ivan", "Joy", None, None)
LANGUAGES = ("en", "en", "en", "es", "fr")
MALFORMED_KINDS = ("not_json", "unknown_event_type", "seq_not_a_number", "missing_instance_id")
MAX_RECORDS_PER_PUT = 500
MAX_BYTES_PER_PUT = 4 * 1024 * 1024


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
    unit_id: int
    name: str | None
    language: str
    is_demo: bool
    validated: bool = False
    opted_out: bool = False
    seq: int = 0
    completed: set[str] = field(default_factory=set)
    instance_id: str | None = None
    drill_slug: str | None = None
    prompt_index: int = 0  # index of the current prompt in the active drill
    answered: bool = False  # the current prompt has been answered correctly
    ratings: dict[str, int] = field(default_factory=dict)
    gone: bool = False  # leaves the simulated pool after its current batch

    def profile(self) -> dict:
        prof = {
            "validated": self.validated,
            "opted_out": self.opted_out,
            "is_demo": self.is_demo,
            "name": self.name,
            "language": self.language,
            "account_info": ({"employer_id": self.employer_id, "unit_id": self.unit_id} if self.validated else None),
        }
        prof.update(self.ratings)
        return prof


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
        self.joined = 0
        self.users: list[User] = [self._new_user() for _ in range(users)]

    def _new_user(self) -> User:
        employer = self.rng.choice(sorted(EMPLOYERS))
        user = User(
            phone_number=phone_number(self.joined),
            employer_id=employer,
            unit_id=self.rng.choice(EMPLOYERS[employer]),
            name=self.rng.choice(NAMES),
            language=self.rng.choice(LANGUAGES),
            is_demo=self.rng.random() < 0.05,
        )
        self.joined += 1
        return user

    # ------------------------------------------------------------------ ids and times

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    @staticmethod
    def _iso(moment: datetime) -> str:
        return moment.isoformat(timespec="milliseconds")

    def _next_seq(self, user: User, now: datetime) -> int:
        micros = int(now.timestamp() * 1_000_000)
        user.seq = max(user.seq + 1, micros)
        return user.seq

    # ------------------------------------------------------------------ the conversation

    def _event(self, user: User, event_type: str, at: datetime, **extra) -> dict:
        event = {
            "event_id": self._uuid(),
            "event_type": event_type,
            "phone_number": user.phone_number,
            "created_time": self._iso(at),
            "schema_version": 1,
            "user_profile": user.profile(),
        }
        event.update(extra)
        return event

    @staticmethod
    def _prompt(index: int) -> dict:
        return {"slug": f"q{index + 1}", "messages": [{"text": f"Question {index + 1}?"}]}

    def _drill(self, slug: str) -> dict:
        number = self.drills.index(slug) + 1 if slug in self.drills else 0
        return {
            "slug": slug,
            "name": f"Sample drill {number}" if number else slug,
            "prompts": [self._prompt(i) for i in range(PROMPTS_PER_DRILL)],
        }

    def _next_drill_slug(self, user: User) -> str | None:
        return next((slug for slug in self.drills if slug not in user.completed), None)

    def _step(self, user: User, at: datetime) -> dict | None:  # noqa: PLR0911, PLR0912
        """The user's next event, and its effect on the simulated state; None = nothing to say.

        A user who is done (all drills completed, opted out, or gone quiet in the middle of a
        drill, which is what reminders and next-drill scheduling are for) leaves the pool and a
        new phone number joins it."""
        roll = self.rng.random()
        if not user.validated:
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
            return self._event(
                user,
                "DRILL_STARTED",
                at,
                drill=self._drill(slug),
                drill_instance_id=user.instance_id,
                first_prompt=self._prompt(0),
            )
        if roll < 0.04:
            user.gone = True  # goes quiet in the middle of a drill
            return None
        if roll < 0.08:
            return self._event(user, "REMINDER_TRIGGERED", at)
        instance, prompt = user.instance_id, self._prompt(user.prompt_index)
        if user.answered:
            if user.prompt_index + 1 < PROMPTS_PER_DRILL:
                user.prompt_index += 1
                user.answered = False
                return self._event(
                    user,
                    "ADVANCED_TO_NEXT_PROMPT",
                    at,
                    prompt=self._prompt(user.prompt_index),
                    drill_instance_id=instance,
                )
            user.completed.add(user.drill_slug)
            user.instance_id, user.drill_slug = None, None
            if self.rng.random() < 0.3:
                user.ratings[f"self_rating_{self.rng.randint(1, 7)}"] = self.rng.randint(1, 10)
            return self._event(user, "DRILL_COMPLETED", at, drill_instance_id=instance)
        if roll < 0.75:
            user.answered = True
            return self._event(
                user,
                "COMPLETED_PROMPT",
                at,
                prompt=prompt,
                response=self.rng.choice("abcd"),
                drill_instance_id=instance,
            )
        abandoned = self.rng.random() < 0.1
        if abandoned:
            user.instance_id, user.drill_slug = None, None
        return self._event(
            user,
            "FAILED_PROMPT",
            at,
            prompt=prompt,
            response=self.rng.choice(("zzz", "?", "e")),
            abandoned=abandoned,
            drill_instance_id=instance,
        )

    def _validated(self, user: User, at: datetime) -> dict:
        user.validated = True
        user.completed.clear()
        user.instance_id, user.drill_slug = None, None
        payload = {"valid": True, "is_demo": user.is_demo, "account_info": {"employer_id": user.employer_id}}
        return self._event(user, "USER_VALIDATED", at, code_validation_payload=payload)

    # ------------------------------------------------------------------ batches

    def next_record(self) -> Record:
        """One record for a random user: usually a good batch of 1-3 events, rarely bad input."""
        now = self.clock()
        if self.rng.random() < self.malformed_rate:
            return self._malformed(self.rng.choice(self.users), now)
        while True:
            slot = self.rng.randrange(len(self.users))
            user = self.users[slot]
            wanted = self.rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
            events: list[dict] = []
            for i in range(wanted):
                if user.gone:
                    break
                event = self._step(user, now - timedelta(seconds=wanted - 1 - i))
                if event is not None:
                    events.append(event)
            if user.gone:
                self.users[slot] = self._new_user()
            if events:
                break
        batch = {
            "batch_id": self._uuid(),
            "seq": str(self._next_seq(user, now)),
            "phone_number": user.phone_number,
            "created_time": events[-1]["created_time"],
            "events": events,
        }
        return Record(json.dumps(batch, separators=(",", ":")).encode(), user.phone_number)

    def _malformed(self, user: User, now: datetime) -> Record:
        """Bad input that does not change the simulated state (the pipeline sets it aside)."""
        kind = self.rng.choice(MALFORMED_KINDS)
        good_seq = str(user.seq + 1)  # not consumed: the user's next good batch may reuse it
        batch = {
            "batch_id": self._uuid(),
            "seq": good_seq,
            "phone_number": user.phone_number,
            "created_time": self._iso(now),
            "events": [],
        }
        if kind == "not_json":
            data = b'{"batch_id": "' + batch["batch_id"].encode() + b'", "seq": '
            return Record(data, user.phone_number, kind)
        if kind == "unknown_event_type":
            batch["events"] = [self._event(user, "DRILL_EXPLODED", now)]
        elif kind == "seq_not_a_number":
            batch["seq"] = "abc"
            batch["events"] = [self._event(user, "REMINDER_TRIGGERED", now)]
        else:  # missing_instance_id
            batch["events"] = [self._event(user, "DRILL_COMPLETED", now)]
        return Record(json.dumps(batch, separators=(",", ":")).encode(), user.phone_number, kind)

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
