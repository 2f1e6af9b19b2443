"""Shared by the chaos scenarios: sizes from the environment, fresh databases and streams."""

from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass

from devtools import chaos
from drill_progress.db import make_engine
from drill_progress.setup.aws_resources import ensure_stream

EVENTS = int(os.environ.get("CHAOS_EVENTS", "1500"))
KILLS = int(os.environ.get("CHAOS_KILLS", "5"))
OUTAGE_SECONDS = float(os.environ.get("CHAOS_OUTAGE_SECONDS", "5"))
MICRO_BATCH = int(os.environ.get("CHAOS_MICRO_BATCH", "100"))
COMMANDS = int(os.environ.get("CHAOS_COMMANDS", "700"))  # reminders / scheduled drills per scenario 6 run
SEED = int(os.environ.get("CHAOS_SEED", "8"))
SHARDS = 2

_counter = itertools.count(1)


@dataclass
class Db:
    name: str
    url: str
    engine: object


def new_db(pg_server, template: str, created: list) -> Db:
    name = f"chaos_{os.getpid()}_{next(_counter)}"
    pg_server.create_database(name, template=template)
    db = Db(name, pg_server.uri(name), make_engine(pg_server.uri(name)))
    created.append(db)
    return db


def new_streams(kinesis, label: str) -> tuple[str, str]:
    """A fresh dialog event stream (2 shards) and command stream (1 shard)."""
    tag = uuid.uuid4().hex[:8]
    events, commands = f"chaos-{label}-events-{tag}", f"chaos-{label}-commands-{tag}"
    ensure_stream(kinesis, events, SHARDS)
    ensure_stream(kinesis, commands, 1)
    return events, commands


def ingest_argv(
    db_url: str, endpoint_url: str, events: str, commands: str, *extra: str, micro_batch: int = MICRO_BATCH
) -> list[str]:
    return chaos.worker_argv(
        "ingest-worker",
        "--db-url",
        db_url,
        "--endpoint-url",
        endpoint_url,
        "--stream",
        events,
        "--command-stream",
        commands,
        "--micro-batch",
        str(micro_batch),
        *extra,
    )


@dataclass
class Reference:
    checksum: dict
    commands: dict  # idempotency_key -> command
    run_seconds: float
    records: int
    events: int
