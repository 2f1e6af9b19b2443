"""Run every benchmark module against real services and print the figures.

`python -m bench [name ...]` runs bench/bench_<name>.py (all by default). Each module's
`run(ctx)` returns metric dicts: {"metric": str, "value": number, "unit": str, ...extra}.
Prints one JSON object per line as they come, a readable table at the end, and writes all
results to bench/results/<UTC timestamp>.json so two runs can be compared.
Sizes are set by environment variables read through `ctx.size(NAME, default)`.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from devtools.services import MotoServer, PostgresServer, free_port
from drill_progress.db import make_engine
from drill_progress.setup import migrations

HERE = Path(__file__).resolve().parent


class Context:
    """What a benchmark gets: running PostgreSQL and moto servers, fresh databases, sizes."""

    def __init__(self, pg: PostgresServer, moto: MotoServer):
        self.pg = pg
        self.moto = moto
        self._n = 0

    def size(self, name: str, default: int) -> int:
        return int(os.environ.get(name, default))

    def new_database(self, label: str, migrated: bool = True, settings: dict[str, str] | None = None):
        """A fresh database; `settings` (e.g. {"synchronous_commit": "on"}) are set on the database
        (ALTER DATABASE ... SET) before anything connects to it, so every session of it has them."""
        self._n += 1
        name = f"bench_{label}_{self._n}"
        self.pg.drop_database(name)
        self.pg.create_database(name)
        if settings:
            import psycopg
            from psycopg import sql

            with psycopg.connect(self.pg.uri(), autocommit=True) as conn:
                for setting, value in settings.items():
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                            sql.Identifier(name), sql.Identifier(setting), sql.Literal(value)
                        )
                    )
        url = self.pg.uri(name)
        engine = make_engine(url)
        if migrated:
            migrations.apply_migrations(engine)
        return url, engine

    def boto3_client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def _modules(names: list[str]) -> list[str]:
    found = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if names:
        found = [f"bench_{n.removeprefix('bench_')}" for n in names]
    return found


def _table(results: list[dict]) -> str:
    lines = [f"{'metric':<48} {'value':>14}  unit", "-" * 72]
    for r in results:
        value = r["value"]
        shown = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
        name = f"{r['metric']} [{r['process']}]" if "process" in r else r["metric"]  # one figure per process
        lines.append(f"{name:<48} {shown:>14}  {r.get('unit', '')}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    base = Path(tempfile.mkdtemp(prefix="drill-bench-pg-"))
    base.chmod(0o755)
    pg = PostgresServer(base / "data", free_port())
    pg.start(
        {
            "shared_buffers": "1GB",
            "work_mem": "64MB",
            "maintenance_work_mem": "512MB",
            "max_wal_size": "4GB",
            "synchronous_commit": "off",
        }
    )
    moto = MotoServer(free_port())
    moto.start()
    ctx = Context(pg, moto)
    results: list[dict] = []
    failures = 0
    try:
        for name in _modules(argv):
            started = time.perf_counter()
            try:
                module = importlib.import_module(f"bench.{name}")
                for metric in module.run(ctx):
                    metric.setdefault("bench", name)
                    print(json.dumps(metric, default=str), flush=True)
                    results.append(metric)
            except Exception:
                failures += 1
                traceback.print_exc()
                print(json.dumps({"metric": f"{name}.error", "value": 1, "unit": "error"}), flush=True)
            print(f"# {name} took {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    finally:
        moto.stop()
        pg.stop(mode="immediate")
        if not os.environ.get("BENCH_KEEP_DATA"):  # a 1,000,000-user run leaves gigabytes behind
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(_table(results))
    out = HERE / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "results": results},
            indent=2,
            default=str,
        )
    )
    print(f"\nresults written to {out.relative_to(HERE.parent)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
