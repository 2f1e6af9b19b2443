"""The project's one retry helper: bounded attempts, exponential backoff with jitter.

Every retry loop of the package uses `backoff` for its pauses, and `retrying` where it retries a
whole call on an exception: ingestion's micro-batches, the outbox's PutRecords, the schedule's
BatchWriteItem, the rollout's batch transactions, GetRecords throttling.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff(attempt: int, *, base: float = 0.1, cap: float = 5.0) -> float:
    """Seconds to wait after failed attempt `attempt` (1, 2, ...): base * 2^(attempt-1), capped,
    times a random factor in [0.5, 1) so that workers failing together do not retry together."""
    return min(cap, base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security


def retrying(
    what: str,
    *,
    attempts: int,
    retry_on: Callable[[BaseException], bool],
    base: float = 0.1,
    cap: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
):
    """Decorator: call again (up to `attempts` calls in all) while `retry_on(exc)` says the error is
    worth retrying; the last error, or one not worth retrying, propagates."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> T:
            for attempt in range(1, attempts + 1):
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    if attempt == attempts or not retry_on(exc):
                        raise
                    delay = backoff(attempt, base=base, cap=cap)
                    log.warning(
                        "%s: %s, retrying in %.2fs (attempt %d of %d)",
                        what,
                        type(exc).__name__,
                        delay,
                        attempt,
                        attempts,
                    )
                    sleep(delay)
            raise AssertionError("unreachable")

        return call

    return wrap
