"""Parse time of each DAG file in dags/, the way the dag-processor parses it (a DagBag of one file).

Each file is parsed in a fresh Python process, so no module is already imported: the figure
includes whatever the DAG file imports at parse time (its share of drill_progress, airflow.sdk
pieces beyond `import airflow`). `import airflow` itself is measured once, apart, because every
parse pays it once per dag-processor process, not per file. The median of DAG_PARSE_RUNS (default
3) fresh processes per file is reported.

Env: DAG_PARSE_RUNS (3).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow  # noqa: F401
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_airflow_ms": (t1 - t0) * 1000, "parse_ms": (t2 - t1) * 1000,
                  "dags": sorted(bag.dag_ids), "errors": {k: str(v)[:300] for k, v in bag.import_errors.items()}}))
"""


def _env(home: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    return env


def parse_once(path: Path, env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"parsing {path.name} failed: {proc.stderr[-1000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ctx) -> list[dict]:
    runs = ctx.size("DAG_PARSE_RUNS", 3)
    out: list[dict] = []
    imports: list[float] = []
    with tempfile.TemporaryDirectory(prefix="drill-bench-airflow-") as home:
        env = _env(home)
        for path in sorted(DAGS.glob("*.py")):
            samples = [parse_once(path, env) for _ in range(runs)]
            imports += [s["import_airflow_ms"] for s in samples]
            errors = samples[-1]["errors"]
            out.append(
                {
                    "metric": f"dags.parse_ms.{path.stem}",
                    "value": round(statistics.median(s["parse_ms"] for s in samples), 1),
                    "unit": "ms",
                    "dags": samples[-1]["dags"],
                    "runs": runs,
                    "import_errors": len(errors),
                    **({"errors": errors} if errors else {}),
                }
            )
    parse = [r["value"] for r in out]
    out.append({"metric": "dags.parse_ms.max", "value": max(parse), "unit": "ms"})
    out.append({"metric": "dags.parse_ms.total", "value": round(sum(parse), 1), "unit": "ms", "files": len(parse)})
    out.append(
        {
            "metric": "dags.import_airflow_ms",
            "value": round(statistics.median(imports), 1),
            "unit": "ms",
            "note": "paid once per parsing process, not per file",
        }
    )
    return out
