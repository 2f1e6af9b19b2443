"""Fault-injection support for the chaos scenarios (tests/chaos, `make chaos`).

- **Command audit** (`read_commands`, `audit_commands`): what the command stream holds, by
  idempotency key: missing, unexpected, duplicated (and whether each duplicate is byte-identical).
- **Workers** that a test can SIGKILL: `python -m devtools.chaos ingest-worker|reminders-worker|
  schedule-worker ...` run the same package functions the DAG tasks call (one "DAG run" per
  process), print `READY` once imported and connected and `RESULT <json>` at the end. `--die-at`
  makes a worker SIGKILL itself at a chosen point: `before_enqueue_commit` (inside the transaction
  that records commands), `before_publish` (recorded, not yet sent), `after_put` (Kinesis accepted a
  PutRecords chunk, `published_at` not yet committed).
- `drive()`: the part of Airflow that retries a task — start a worker, optionally SIGKILL it (a
  delay after READY, or `KillAt` a chosen progress marker, so that every planned kill lands inside
  the run), restart it with a short backoff after a failure, until a run finds nothing left to do.
  Workers print `COMMIT <thread>` after each commit, `WAITER <shard>` when a shard's lease holder
  learns that the next consumer waits for it, and `PUT <thread> <n>` before each PutRecords
  call: `Attempt.unconfirmed_puts()` is then exactly what a killed attempt may have sent that a
  later attempt sends again (the outbox's at-least-once window), the bound the scenarios assert.
- `FaultProxy`: a loopback HTTP proxy in front of the moto server that can drop every request for
  N seconds (the emulator unreachable), answer a share of Kinesis calls with HTTP 400
  ProvisionedThroughputExceededException (which botocore retries), fail a share of the records of
  a PutRecords call (which `commands.publish` retries), or lose PutRecords responses after moto
  accepted them (a network failure on the way back).
- Synthetic traffic (`make_records`) from the simulator with a fixed seed and clock.

Only ever binds and connects to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devtools import streams
from devtools.services import boto3_client

log = logging.getLogger(__name__)


def scalar(engine, sql: str, params: dict | None = None):
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql, params or {}).scalar()


# --------------------------------------------------------------------------- the command stream


def read_stream(kinesis, stream: str) -> list[dict]:
    """Every record on a stream, shard by shard: {"partition_key", "data"}."""
    return [{"partition_key": r["PartitionKey"], "data": bytes(r["Data"])} for r in streams.read_all(kinesis, stream)]


def read_commands(kinesis, stream: str) -> list[dict]:
    """Command records (parsed JSON) with their partition key and raw bytes."""
    return [
        {**json.loads(r["data"]), "_partition_key": r["partition_key"], "_raw": r["data"]}
        for r in read_stream(kinesis, stream)
    ]


@dataclass
class CommandAudit:
    records: int
    unique_keys: int
    missing: list[str]
    unexpected: list[str]
    duplicates: int  # records beyond the first per key
    duplicated_keys: int
    duplicates_identical: bool  # every resend byte-identical to the first send (same key, same payload)
    payload_mismatch: list[str]  # keys whose payload differs from the expected command's

    @property
    def exactly_once(self) -> bool:
        return not (self.missing or self.unexpected or self.duplicates or self.payload_mismatch)

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "unique_keys": self.unique_keys,
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "duplicates": self.duplicates,
            "duplicated_keys": self.duplicated_keys,
            "duplicates_identical": self.duplicates_identical,
            "payload_mismatch": len(self.payload_mismatch),
        }


def audit_commands(commands: list[dict], expected: dict[str, dict] | None = None) -> CommandAudit:
    """Compare the stream's commands with `expected` ({idempotency_key: command}); None = no expectation."""
    by_key: dict[str, list[dict]] = {}
    for cmd in commands:
        by_key.setdefault(cmd.get("idempotency_key") or "<no key>", []).append(cmd)
    duplicates = sum(len(v) - 1 for v in by_key.values())
    identical = all(
        len({c["_raw"] for c in v}) == 1 and len({c["_partition_key"] for c in v}) == 1 for v in by_key.values()
    )
    missing = unexpected = mismatch = []
    if expected is not None:
        missing = sorted(set(expected) - set(by_key))
        unexpected = sorted(set(by_key) - set(expected))
        mismatch = sorted(k for k in set(expected) & set(by_key) if _strip(by_key[k][0]) != _strip(expected[k]))
    return CommandAudit(
        len(commands),
        len(by_key),
        missing,
        unexpected,
        duplicates,
        sum(1 for v in by_key.values() if len(v) > 1),
        identical,
        mismatch,
    )


def _strip(cmd: dict) -> dict:
    return {k: v for k, v in cmd.items() if not k.startswith("_")}


def commands_by_key(commands: list[dict]) -> dict[str, dict]:
    return {c["idempotency_key"]: c for c in commands}


# --------------------------------------------------------------------------- traffic


@dataclass
class Traffic:
    records: list  # simulator.Record
    events: int
    malformed: int


def make_records(events: int, *, seed: int = 8, malformed_rate: float = 0.0, users: int | None = None) -> Traffic:
    """About `events` events in simulator records (1-3 events per batch), reproducible for a seed."""
    from devtools.simulator import Simulator

    tick = itertools.count()
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    sim = Simulator(
        users=users or max(20, events // 40),
        seed=seed,
        malformed_rate=malformed_rate,
        clock=lambda: t0 + timedelta(seconds=next(tick)),
    )
    records, n, bad = [], 0, 0
    while n < events:
        rec = sim.next_record()
        records.append(rec)
        if rec.malformed:
            bad += 1
            n += 1
        else:
            n += len(rec.json()["events"])
    return Traffic(records, n, bad)


def put_records(kinesis, stream: str, records: list) -> None:
    """Publish simulator records in order (PutRecords chunks; raises if any record failed)."""
    from devtools import simulator

    stats = simulator.publish(kinesis, stream, list(records))
    if stats.failed:
        raise RuntimeError(f"{stats.failed} records could not be put on {stream}")


def put_records_paced(kinesis, stream: str, records: list, per_second: float) -> None:
    """`put_records` spread over time, in order: about `per_second` records a second (traffic that is
    still arriving while consumers come and go)."""
    chunk = max(1, round(per_second / 10))
    for start in range(0, len(records), chunk):
        put_records(kinesis, stream, records[start : start + chunk])
        time.sleep(0.1)


# --------------------------------------------------------------------------- driving killable workers


@dataclass
class Attempt:
    number: int
    outcome: str  # "ok", "killed", "failed"
    seconds: float
    killed_after: float | None = None
    result: dict | None = None
    stderr_tail: str = ""
    run_seconds: float | None = None  # from READY to the end (the "task" itself)
    markers: list[str] = field(default_factory=list)  # COMMIT / PUT / FAIL lines the worker printed
    returncode: int | None = None
    started_at: float = 0.0  # time.monotonic() of the start and the end of the attempt
    ended_at: float = 0.0

    def unconfirmed_puts(self) -> int:
        """Commands Kinesis accepted whose `published_at` this attempt never committed: per
        publishing thread, the records of its PutRecords calls after its last commit. Only they can
        be sent again by a later attempt (the outbox's at-least-once window)."""
        pending: dict[str, int] = {}
        lost = 0
        for line in self.markers:
            kind, thread, *rest = line.split()
            if kind == "PUT":
                pending[thread] = pending.get(thread, 0) + int(rest[0])
            elif kind == "COMMIT":  # the publish that made those calls committed: confirmed
                pending[thread] = 0
            elif kind == "FAIL":  # the publish failed after its calls: never confirmed
                lost += pending.pop(thread, 0)
        return lost + sum(pending.values())


@dataclass(frozen=True)
class KillAt:
    """SIGKILL a worker `delay` seconds after its `nth` marker line starting with `marker` (e.g. the
    2nd micro-batch commit): a kill that lands inside the run, wherever the run is slow or fast."""

    marker: str
    nth: int = 1
    delay: float = 0.0


@dataclass
class DriveReport:
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def kills(self) -> int:
        return sum(1 for a in self.attempts if a.outcome == "killed")

    @property
    def failures(self) -> int:
        return sum(1 for a in self.attempts if a.outcome == "failed")

    def unconfirmed_puts(self) -> int:
        """What the killed or failed attempts may have sent twice (see Attempt.unconfirmed_puts)."""
        return sum(a.unconfirmed_puts() for a in self.attempts if a.outcome != "ok")

    def summary(self) -> dict:
        return {
            "attempts": len(self.attempts),
            "kills": self.kills,
            "failures": self.failures,
            "kill_times_s": [round(a.killed_after, 3) for a in self.attempts if a.killed_after is not None],
            "seconds": round(self.seconds, 2),
        }


def worker_argv(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "devtools.chaos", command, *args]


class _WorkerLines:
    """What a worker printed, as it comes: READY, RESULT, the COMMIT / PUT markers; and when to kill it."""

    def __init__(self, kill_after, on_ready, on_marker):
        self.kill_after, self.on_ready, self.on_marker = kill_after, on_ready, on_marker
        self.result = self.ready_at = self.kill_at = None
        self.markers: list[str] = []
        self._seen = 0

    def take(self, line: str) -> None:
        if line == "READY":
            self.ready_at = time.monotonic()
            if isinstance(self.kill_after, int | float):
                self.kill_at = self.ready_at + self.kill_after
            if self.on_ready:
                self.on_ready()
        elif line.startswith("RESULT "):
            self.result = json.loads(line[7:])
        elif line.startswith(("COMMIT ", "PUT ", "FAIL ", "WAITER ")):
            self.markers.append(line)
            if self.on_marker:
                self.on_marker(line)
            kill = self.kill_after
            if isinstance(kill, KillAt) and self.kill_at is None and line.startswith(kill.marker):
                self._seen += 1
                if self._seen == kill.nth:
                    self.kill_at = time.monotonic() + kill.delay


def run_worker(
    argv: list[str],
    *,
    kill_after: float | KillAt | None = None,
    on_ready: Callable[[], None] | None = None,
    on_marker: Callable[[str], None] | None = None,
    timeout: float = 600,
    env: dict | None = None,
    number: int = 1,
    log_dir: Path | None = None,
) -> Attempt:
    """Run one worker process; SIGKILL it `kill_after` seconds after it printed READY, or as `KillAt`
    says. `on_marker` sees every COMMIT / PUT line as it comes."""
    import tempfile

    err_path = Path(tempfile.mkstemp(prefix="chaos-worker-", suffix=".log", dir=log_dir)[1])
    started = time.monotonic()
    seen = _WorkerLines(kill_after, on_ready, on_marker)
    killed_after = None
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        lines: queue.Queue = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.put(line.decode(errors="replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            now = time.monotonic()
            if seen.kill_at is not None and now >= seen.kill_at and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed_after = now - (seen.ready_at or started)
                proc.wait()
                for line in iter(lines.get, None):  # what it printed before it died counts too
                    seen.take(line)
                break
            if now > started + timeout:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                raise TimeoutError(f"worker did not finish in {timeout}s: {argv[3:5]}")
            try:
                line = lines.get(timeout=0.005 if seen.kill_at is not None else 0.05)
            except queue.Empty:
                continue
            if line is None:
                proc.wait()
                break
            seen.take(line)
    ended = time.monotonic()
    tail = err_path.read_text(errors="replace")[-3000:]
    err_path.unlink(missing_ok=True)
    if killed_after is not None or proc.returncode == -signal.SIGKILL:
        outcome = "killed"
    elif proc.returncode == 0 and seen.result is not None:
        outcome = "ok"
    else:
        outcome = "failed"
    return Attempt(
        number,
        outcome,
        ended - started,
        killed_after,
        seen.result,
        tail if outcome == "failed" else "",
        None if seen.ready_at is None else ended - seen.ready_at,
        seen.markers,
        started_at=started,
        ended_at=ended,
        returncode=proc.returncode,
    )


def drive(
    argv: list[str],
    *,
    done: Callable[[dict], bool],
    kill_plan: Iterable[float | KillAt | None] = (),
    on_ready: Callable[[int], None] | None = None,
    on_marker: Callable[[int, str], None] | None = None,
    retry_delay: float = 1.0,
    max_attempts: int = 60,
    timeout: float = 600,
    env: dict | None = None,
) -> DriveReport:
    """Run the worker again and again, as Airflow retries a task and the schedule re-runs a DAG,
    until a run that finished cleanly satisfies `done(result)`. The n-th attempt is SIGKILLed as the
    n-th entry of `kill_plan` says (seconds after READY, a KillAt, or None = let it run)."""
    report = DriveReport()
    started = time.monotonic()
    plan = iter(kill_plan)
    for number in itertools.count(1):
        if number > max_attempts:
            raise RuntimeError(
                f"not caught up after {max_attempts} attempts: {report.summary()}; "
                f"last stderr: {report.attempts[-1].stderr_tail if report.attempts else ''}"
            )
        kill_after = next(plan, None)
        ready = (lambda n=number: on_ready(n)) if on_ready else None
        marker = (lambda line, n=number: on_marker(n, line)) if on_marker else None
        attempt = run_worker(
            argv, kill_after=kill_after, on_ready=ready, on_marker=marker, timeout=timeout, env=env, number=number
        )
        report.attempts.append(attempt)
        if attempt.outcome == "ok" and done(attempt.result or {}):
            break
        if attempt.outcome == "failed":
            log.info("attempt %d failed; retrying in %.1fs: %s", number, retry_delay, attempt.stderr_tail[-300:])
            time.sleep(retry_delay)
    report.seconds = time.monotonic() - started
    return report


def ingest_caught_up(result: dict) -> bool:
    """A run of the ingest worker that read nothing and had nothing left to publish."""
    return (
        result.get("records_read", 1) == 0
        and result.get("commands_published", 1) == 0
        and result.get("pending_commands", 1) == 0
    )


# --------------------------------------------------------------------------- the fault proxy


THROTTLE_BODY = json.dumps(
    {
        "__type": "ProvisionedThroughputExceededException",
        "message": "Rate exceeded for shard (injected by the chaos proxy)",
    }
).encode()
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}


class FaultProxy:
    """A loopback HTTP proxy in front of the moto server, with switchable faults."""

    def __init__(self, upstream_port: int, *, seed: int = 3):
        self.upstream_port = upstream_port
        self.rng = random.Random(seed)  # noqa: S311 - fault injection, not security
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.outage_until = 0.0
        # Kinesis operation -> n: its 1st, (n+1)th, (2n+1)th... call is answered with HTTP 400 throttling.
        # A fixed pattern, not a chance: a run that makes a single call of the operation is still throttled.
        self.throttle: dict[str, int] = {}
        self.calls: Counter = Counter()  # Kinesis calls that reached the throttling check, per operation
        self.put_record_failure = 0.0  # share of PutRecords records failed with an ErrorCode
        self.lose_put_responses = 0  # the next n PutRecords responses are lost after moto accepted the call
        self.server: ThreadingHTTPServer | None = None

    # ---- control
    def start(self) -> FaultProxy:
        handler = type("Handler", (_ProxyHandler,), {"proxy": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="chaos-proxy").start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def endpoint_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def outage(self, seconds: float) -> None:
        """Drop every request (close the connection without an answer) for `seconds` from now."""
        with self.lock:
            self.outage_until = time.monotonic() + seconds
            self.counts["outages"] += 1

    def in_outage(self) -> bool:
        return time.monotonic() < self.outage_until

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def throttled(self, operation: str) -> bool:
        """Whether this call of `operation` is answered with throttling (see `throttle`)."""
        every = self.throttle.get(operation, 0)
        with self.lock:
            self.calls[operation] += 1
            return bool(every) and (self.calls[operation] - 1) % every == 0

    def chance(self, p: float) -> bool:
        with self.lock:
            return self.rng.random() < p

    # ---- forwarding
    def forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to moto on a new connection (never retried here: a retry could send twice)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            out_headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            out_headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=out_headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_HEADERS], data
        finally:
            conn.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _drop(self) -> None:
        self.close_connection = True
        import contextlib
        import socket

        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        proxy = self.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if proxy.in_outage():
            proxy.count("requests_dropped_in_outage")
            self._drop()
            return
        operation = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
        is_kinesis = (self.headers.get("X-Amz-Target") or "").startswith("Kinesis_")
        if is_kinesis and proxy.throttled(operation):
            proxy.count(f"throttled_{operation}")
            self._send(
                400,
                [
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("x-amzn-ErrorType", "ProvisionedThroughputExceededException"),
                ],
                THROTTLE_BODY,
            )
            return
        if is_kinesis and operation == "PutRecords":
            self._put_records(body)
            return
        status, headers, data = proxy.forward(self.command, self.path, self.headers, body)
        self._send(status, headers, data)

    def _put_records(self, body: bytes) -> None:
        proxy = self.proxy
        request = json.loads(body)
        records = request["Records"]
        failed = {i for i in range(len(records)) if proxy.put_record_failure and proxy.chance(proxy.put_record_failure)}
        kept = [r for i, r in enumerate(records) if i not in failed]
        answers: list[dict | None] = [None] * len(records)
        status, headers = 200, [("Content-Type", "application/x-amz-json-1.1")]
        if kept:
            status, headers, data = proxy.forward(
                self.command, self.path, self.headers, json.dumps({**request, "Records": kept}).encode()
            )
            if status != 200:
                self._send(status, headers, data)
                return
            accepted = iter(json.loads(data)["Records"])
            for i in range(len(records)):
                if i not in failed:
                    answers[i] = next(accepted)
            with proxy.lock:
                lose = proxy.lose_put_responses > 0
                if lose:
                    proxy.lose_put_responses -= 1
            if lose:
                proxy.count("put_responses_lost")
                proxy.count("put_records_in_lost_responses", len(kept))
                self._drop()
                return
        for i in failed:
            answers[i] = {
                "ErrorCode": "ProvisionedThroughputExceededException",
                "ErrorMessage": "Rate exceeded for shard (injected by the chaos proxy)",
            }
        if failed:
            proxy.count("put_records_failed", len(failed))
        response = {"FailedRecordCount": sum(1 for a in answers if a and "ErrorCode" in a), "Records": answers}
        self._send(status, headers, json.dumps(response).encode())


# --------------------------------------------------------------------------- worker entry points


def _die() -> None:
    with _STDOUT_LOCK:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class _KillAfterPut:
    """A kinesis client whose n-th successful PutRecords call is followed by SIGKILL of this process."""

    def __init__(self, client, n: int):
        self._client = client
        self._n = n

    def __getattr__(self, name):
        return getattr(self._client, name)

    def put_records(self, **kwargs):
        response = self._client.put_records(**kwargs)
        self._n -= 1
        if self._n <= 0:
            _die()
        return response


_STDOUT_LOCK = threading.Lock()


def _say_line(line: str) -> None:
    """One whole line on stdout (print() writes the text and its newline apart: threads interleave)."""
    with _STDOUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _print_markers(engine, kinesis) -> None:
    """Progress markers on stdout for the driver: `COMMIT <thread>` once a transaction of this
    worker has committed (after the database said so), `PUT <thread> <n>` before each PutRecords call
    of n records (so that what a kill may leave sent but unconfirmed is never under-counted), `FAIL
    <thread>` when a publish failed (its calls stay unconfirmed, whatever that thread commits next)."""
    dialect = engine.dialect
    commit, put_records = dialect.do_commit, kinesis.put_records

    def do_commit(dbapi_connection) -> None:
        commit(dbapi_connection)
        _say_line(f"COMMIT {threading.current_thread().name}")

    def counted_put_records(**kwargs):
        _say_line(f"PUT {threading.current_thread().name} {len(kwargs.get('Records', ()))}")
        return put_records(**kwargs)

    dialect.do_commit = do_commit
    kinesis.put_records = counted_put_records
    _say_waiters()


def _say_waiters() -> None:
    """`WAITER <shard>` the first time a shard lease's holder learns that another consumer waits for
    it: the hand-over begins (a kill timed from it lands in the hand-over)."""
    from drill_progress.ingest import lease

    renew = lease.ShardLease.renew

    def renew_and_say(self, conn) -> None:
        renew(self, conn)
        if self.waiter and not getattr(self, "_said_waiter", False):
            self._said_waiter = True
            _say_line(f"WAITER {self.shard_id}")

    lease.ShardLease.renew = renew_and_say

    from drill_progress import outbox

    publish_pending = outbox.publish_pending

    def publish_or_say_failed(*args, **kwargs):
        try:
            return publish_pending(*args, **kwargs)
        except BaseException:
            _say_line(f"FAIL {threading.current_thread().name}")
            raise

    outbox.publish_pending = publish_or_say_failed


def _install_fault(die_at: str | None, die_after: int, kinesis):
    """Arrange the chosen self-kill; return the (possibly wrapped) kinesis client."""
    from drill_progress import outbox

    if die_at == "after_put":
        return _KillAfterPut(kinesis, die_after)
    if die_at == "before_publish":

        def publish_pending(*args, **kwargs):
            _die()

        outbox.publish_pending = publish_pending
    elif die_at == "before_enqueue_commit":
        from drill_progress.ingest import store

        def dying(real):
            def enqueue(*args, **kwargs):
                real(*args, **kwargs)
                _die()  # inside the recording transaction: nothing is committed

            return enqueue

        outbox.enqueue = dying(outbox.enqueue)
        store.execute_write = dying(store.execute_write)  # ingestion's write, outbox rows included
    elif die_at:
        raise ValueError(f"unknown --die-at {die_at}")
    return kinesis


def _pending(engine, source: str) -> int:
    return int(
        scalar(
            engine, "SELECT count(*) FROM command_outbox WHERE published_at IS NULL AND source = %(s)s", {"s": source}
        )
    )


def _ingest_worker(args, engine, kinesis) -> dict:
    """One "DAG run" of ingestion: plan the shards, consume them concurrently (one thread per shard,
    as the DAG runs one task per shard), until caught up or, with --continuous, for that long; then
    publish what is left."""
    from concurrent.futures import ThreadPoolExecutor

    from drill_progress.ingest import consumer, runs, store

    bounds = (
        consumer.Bounds.continuous(args.continuous)
        if args.continuous
        else consumer.Bounds.catch_up(args.max_records, args.max_seconds)
    )
    shards = runs.plan_shards(engine, kinesis, args.stream)
    with ThreadPoolExecutor(max(1, len(shards)), thread_name_prefix="shard") as pool:
        results = list(
            pool.map(
                lambda shard: runs.run_shard(
                    engine,
                    kinesis,
                    args.stream,
                    args.command_stream,
                    shard,
                    bounds=bounds,
                    micro_batch_records=args.micro_batch,
                ),
                shards,
            )
        )
    published = runs.publish_commands(engine, kinesis, args.command_stream)
    summary = runs.summarize(results, published)
    summary["commands_published"] += sum(r["commands_published"] for r in results)
    summary.pop("per_shard", None)
    summary["pending_commands"] = _pending(engine, store.OUTBOX_SOURCE)
    return summary


def _reminders_worker(args, engine, kinesis) -> dict:
    from drill_progress.reminders import due as reminders

    result = reminders.trigger_reminders(engine, kinesis, args.stream, reference=datetime.fromisoformat(args.reference))
    result["pending_commands"] = _pending(engine, reminders.SOURCE)
    return result


def _schedule_worker(args, engine, kinesis) -> dict:
    from drill_progress.scheduling import planning as scheduling
    from drill_progress.scheduling import sending

    dynamodb = boto3_client("dynamodb", args.endpoint_url)
    reference = datetime.fromisoformat(args.reference)
    planned = scheduling.plan_run(
        engine,
        dynamodb,
        args.table,
        reference=reference,
        now=reference,
        spread_minutes=args.spread_minutes,
        inactivity_minutes=720,
    )
    sent = [
        sending.send_slot(engine, dynamodb, kinesis, table=args.table, stream=args.stream, slot=slot)
        for slot in planned["slots"]
    ]
    return {
        "slots": len(sent),
        "due_users": planned["summary"].get("due_users"),
        "enqueued": sum(s["enqueued"] for s in sent),
        "published": sum(s["published"] for s in sent),
        "pending_commands": _pending(engine, scheduling.SOURCE),
    }


WORKERS = {"ingest-worker": _ingest_worker, "reminders-worker": _reminders_worker, "schedule-worker": _schedule_worker}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.chaos")
    parser.add_argument("command", choices=sorted(WORKERS))
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--stream", required=True, help="dialog event stream (ingest) or command stream")
    parser.add_argument("--command-stream", default="dialog-commands")
    parser.add_argument("--table", default="drill-trigger-schedule")
    parser.add_argument("--reference", help="ISO 8601 reference time (reminders, scheduling)")
    parser.add_argument("--spread-minutes", type=int, default=3)
    parser.add_argument("--micro-batch", type=int, default=500)
    parser.add_argument("--max-records", type=int, default=20000)
    parser.add_argument("--max-seconds", type=float, default=45.0)
    parser.add_argument(
        "--continuous",
        type=float,
        default=0.0,
        help="ingest: consume continuously for this many seconds (the DAG's scheduled runs)",
    )
    parser.add_argument("--die-at", choices=("after_put", "before_publish", "before_enqueue_commit"))
    parser.add_argument("--die-after", type=int, default=1, help="with after_put: the n-th PutRecords call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    from drill_progress.db import make_engine

    engine = make_engine(args.db_url, "ingest", pool_size=8, max_overflow=8)
    kinesis = boto3_client("kinesis", args.endpoint_url)
    _print_markers(engine, kinesis)
    kinesis = _install_fault(args.die_at, args.die_after, kinesis)
    with engine.connect() as conn:  # connected: what follows is the "task"
        conn.exec_driver_sql("SELECT 1")
    _say_line("READY")
    result = WORKERS[args.command](args, engine, kinesis)
    _say_line("RESULT " + json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
