"""A tiny StatsD receiver for the local stack (`make up`): where Airflow's metrics go locally.

    python -m devtools.metrics_sink --port 58125 --out .local/metrics.log

Listens on UDP 127.0.0.1:<port> and appends every StatsD line it receives, with the time it
arrived, to the file, e.g.
`2026-03-02T17:05:01.123Z airflow.drill_progress.ingest.events_applied.shardId-000000000000:24|c`.
Airflow's own metrics arrive too; `grep drill_progress .local/metrics.log` shows the pipeline's.
The file is rotated once it passes --max-bytes (the previous one kept as metrics.log.1).
Not shipped: in production the metrics go to the deployment's StatsD (the Helm chart's
statsd-exporter) or OpenTelemetry collector (docs/metrics.md).
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_MAX_BYTES = 50 * 1024 * 1024


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def serve(sock: socket.socket, out: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    log = open(out, "a", buffering=1)  # noqa: SIM115 - reopened on rotation
    try:
        while True:
            data = sock.recv(65535)
            stamp = _stamp()
            log.write("".join(f"{stamp} {line}\n" for line in data.decode(errors="replace").splitlines() if line))
            if log.tell() > max_bytes:
                log.close()
                out.replace(out.with_name(out.name + ".1"))
                log = open(out, "a", buffering=1)  # noqa: SIM115
    finally:
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.metrics_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"error: cannot listen on udp {args.host}:{args.port} ({exc}); set DRILL_STATSD_PORT", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"StatsD sink listening on udp {args.host}:{args.port}, writing {args.out}", flush=True)
    serve(sock, args.out, args.max_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
