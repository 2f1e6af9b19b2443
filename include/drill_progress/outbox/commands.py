"""Commands to the Dialog Context (contract §5) and publishing them to the command stream.

A command is one Kinesis record, UTF-8 JSON, partition key = phone number, carrying an
`idempotency_key` that is the same on every resend of the same command.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from drill_progress.privacy import mask_phone
from drill_progress.retry import backoff

log = logging.getLogger(__name__)

START_DRILL = "START_DRILL"
TRIGGER_REMINDER = "TRIGGER_REMINDER"
MAX_RECORDS_PER_PUT = 500  # Kinesis PutRecords limit
MAX_BYTES_PER_PUT = 5 * 1024 * 1024


@dataclass(frozen=True)
class Command:
    command_type: str
    phone_number: str
    payload: dict
    idempotency_key: str

    def record(self) -> dict:
        return {"type": self.command_type, "payload": self.payload, "idempotency_key": self.idempotency_key}

    def data(self) -> bytes:
        return json.dumps(self.record(), separators=(",", ":"), sort_keys=True).encode()


def start_drill(phone_number: str, drill_slug: str, idempotency_key: str) -> Command:
    payload = {"phone_number": phone_number, "drill_slug": drill_slug}
    return Command(START_DRILL, phone_number, payload, idempotency_key)


def trigger_reminder(phone_number: str, drill_instance_id: str, prompt_slug: str, idempotency_key: str) -> Command:
    payload = {"phone_number": phone_number, "drill_instance_id": str(drill_instance_id), "prompt_slug": prompt_slug}
    return Command(TRIGGER_REMINDER, phone_number, payload, idempotency_key)


@dataclass
class PublishResult:
    sent: list[Command] = field(default_factory=list)
    failed: list[tuple[Command, str]] = field(default_factory=list)  # (command, last error code)
    attempts: int = 0


def _chunks(commands: list[Command]):
    chunk: list[Command] = []
    size = 0
    for cmd in commands:
        rec_size = len(cmd.data()) + len(cmd.phone_number.encode())
        if chunk and (len(chunk) == MAX_RECORDS_PER_PUT or size + rec_size > MAX_BYTES_PER_PUT):
            yield chunk
            chunk, size = [], 0
        chunk.append(cmd)
        size += rec_size
    if chunk:
        yield chunk


def publish(
    kinesis,
    stream: str,
    commands: list[Command],
    *,
    max_attempts: int = 8,
    base_delay: float = 0.1,
    max_delay: float = 5.0,
) -> PublishResult:
    """PutRecords in chunks of <= 500, retrying only the records that failed (throttling,
    internal errors) with jittered exponential backoff. Records still failing after
    `max_attempts` are returned in `failed`, never dropped silently."""
    result = PublishResult()
    for chunk in _chunks(commands):
        pending = chunk
        for attempt in range(1, max_attempts + 1):
            result.attempts += 1
            errors = _put_once(kinesis, stream, pending)
            failed_now = [(cmd, err) for cmd, err in zip(pending, errors, strict=True) if err]
            result.sent += [cmd for cmd, err in zip(pending, errors, strict=True) if not err]
            if not failed_now:
                break
            pending = [cmd for cmd, _ in failed_now]
            if attempt == max_attempts:
                result.failed += failed_now
                log.warning(
                    "%d commands still failing after %d attempts (first: %s to %s)",
                    len(failed_now),
                    attempt,
                    failed_now[0][1],
                    mask_phone(failed_now[0][0].phone_number),
                )
                break
            delay = backoff(attempt, base=base_delay, cap=max_delay)
            log.info(
                "%d of %d records failed (%s); retrying in %.2fs", len(pending), len(chunk), failed_now[0][1], delay
            )
            time.sleep(delay)
    return result


def _put_once(kinesis, stream: str, commands: list[Command]) -> list[str | None]:
    """One PutRecords call; per-record error code or None. A whole-call error fails every record."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": cmd.data(), "PartitionKey": cmd.phone_number} for cmd in commands],
        )
    except (ClientError, BotoCoreError) as exc:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
        return [code] * len(commands)
    return [rec.get("ErrorCode") for rec in response["Records"]]
