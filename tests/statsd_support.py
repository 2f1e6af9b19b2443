"""A real StatsD receiver for tests: a UDP socket on 127.0.0.1 that keeps every datagram it gets,
and the `[metrics]` settings that point Airflow's metrics facade at it.

StatsD lines are `<name>:<value>|<type>[|@<rate>]` (type `c` counter, `g` gauge, `ms` timing);
a datagram may hold several lines. Import as `from statsd_support import ...`."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    kind: str  # "c", "g" or "ms"


def parse_line(line: str) -> Sample:
    name, rest = line.split(":", 1)
    value, kind = rest.split("|")[:2]
    return Sample(name, float(value), kind)


class StatsdListener:
    """Receives StatsD datagrams on a free loopback port from a thread of its own."""

    def __init__(self, host: str = "127.0.0.1"):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.1)
        self.host, self.port = self._sock.getsockname()
        self._lines: list[str] = []
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._lines += [line for line in data.decode().splitlines() if line]
                self._last = time.monotonic()

    def settle(self, quiet: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until nothing arrived for `quiet` seconds, counted from now at the earliest: what was
        sent before the call is then received (loopback datagrams are already in the socket's
        buffer; the receiving thread only has to get its turn)."""
        called = time.monotonic()
        deadline = called + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if time.monotonic() - max(self._last, called) >= quiet:
                    return
            time.sleep(0.05)

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()

    def samples(self, prefix: str = "") -> list[Sample]:
        with self._lock:
            lines = list(self._lines)
        return [s for s in map(parse_line, lines) if s.name.startswith(prefix)]

    def counters(self, prefix: str = "") -> dict[str, float]:
        """Every counter's sum."""
        sums: dict[str, float] = defaultdict(float)
        for s in self.samples(prefix):
            if s.kind == "c":
                sums[s.name] += s.value
        return dict(sums)

    def gauges(self, prefix: str = "") -> dict[str, float]:
        """Every gauge's last value."""
        return {s.name: s.value for s in self.samples(prefix) if s.kind == "g"}

    def timings(self, prefix: str = "") -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(list)
        for s in self.samples(prefix):
            if s.kind == "ms":
                out[s.name].append(s.value)
        return dict(out)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def statsd_settings(listener: StatsdListener, prefix: str = "airflow") -> dict[str, str]:
    """The environment that turns Airflow's StatsD metrics on, towards `listener`."""
    return {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": listener.host,
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": prefix,
    }


def reinitialize_stats() -> None:
    """Make this process's Airflow metrics facade read `[metrics]` again. The task runner does this
    once at the start of each task process; `dag.test()` runs tasks inside the test process, whose
    facade was set up when Airflow was first imported (metrics off)."""
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    stats.initialize(
        factory=stats_utils.get_stats_factory(),
        export_legacy_names=conf.getboolean("metrics", "legacy_names_on"),
    )


class MetricsOn:
    """Airflow's StatsD metrics on, towards a fresh listener, until `close()` (then off again)."""

    def __init__(self, prefix: str = "airflow"):
        self.listener = StatsdListener()
        self.prefix = prefix
        self.env = statsd_settings(self.listener, prefix)
        self._saved = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        reinitialize_stats()

    def close(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reinitialize_stats()
        self.listener.close()
