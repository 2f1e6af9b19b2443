"""The local stack behind `make up` / `make down` / `make status`: no Docker, embedded defaults.

    python -m devtools.devstack up|down|status

`up` starts, each only if it is not already running:

- PostgreSQL (data in .local/pgdata, kept across restarts) with two databases: `drill_progress`
  (the pipeline's data, owner `drill`) and `airflow` (Airflow's metadata, owner `airflow`);
- the moto AWS emulator (Kinesis, DynamoDB) on loopback; it keeps its state in memory, so every
  `up` runs the setup DAG, which re-creates missing streams and tables;
- Airflow 3 as separate processes: api-server, scheduler (LocalExecutor), dag-processor, triggerer,
  with AIRFLOW_HOME=.local/airflow, the repository's dags/ and plugins/, and the contract's
  connections `drill_progress_db` and `aws_default` as AIRFLOW_CONN_* environment variables;
- the simulated Dialog Context (devtools.simulator --follow);
- a StatsD receiver (devtools.metrics_sink) on UDP 127.0.0.1:DRILL_STATSD_PORT (58125): Airflow's
  metrics are on (`[metrics] statsd_on`), its own and the pipeline's (docs/metrics.md), and every
  line that arrives is appended to .local/metrics.log.

With EXECUTOR=celery (`EXECUTOR=celery make up`) the same stack runs on CeleryExecutor: a Redis
server (Debian's redis-server, installed when missing and we are root; in memory, loopback) as the
broker, Celery results in Airflow's metadata database, and DRILL_CELERY_WORKERS (2) Celery worker
processes of DRILL_CELERY_CONCURRENCY task slots each, named celery-worker-1, celery-worker-2,
... beside the scheduler, triggerer, dag-processor and api-server. The slots default to what
ingestion's hand-over needs with room for the other DAGs (`celery_slots_needed`: 2 x shards + 4,
spread over the workers, at least 2 each). docs/celery.md says more.

It migrates Airflow's database, runs `airflow dags test drill_progress_setup`, waits for the
dag-processor to have parsed every file in dags/, unpauses every DAG and prints the UI address
and login. Every process is detached in its own session with a pid file in .local/run and a log in
.local/logs; `down` stops exactly those (and PostgreSQL's cluster in .local/pgdata), leaving data.
`.local/env.sh` exports the same environment for running `airflow` by hand.

Ports: DRILL_PG_PORT (54329), DRILL_AWS_PORT (5055), AIRFLOW_PORT (8080), and the log servers
AIRFLOW_WORKER_LOG_PORT (8793), AIRFLOW_TRIGGER_LOG_PORT (8794); with EXECUTOR=celery also
DRILL_REDIS_PORT (63799) and DRILL_CELERY_LOG_PORT (8795: the log server of worker 2, then 3, ...;
worker 1 serves on AIRFLOW_WORKER_LOG_PORT, which the scheduler does not use then). State folder:
DRILL_STATE_DIR (default <repo>/.local).

Shape: DRILL_DIALOG_SHARDS (2) is the shard count of the dialog event stream when the setup DAG
creates it (an existing stream keeps its shards); DRILL_KEEP_PAUSED (empty) is a comma-separated
list of DAG ids `up` leaves paused, e.g. dialog_event_ingest to load a backlog before ingestion.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devtools.services import (
    PostgresServer,
    RedisServer,
    ServiceError,
    boto3_client,
    find_redis_server,
    port_in_use,
    require_free_port,
    stable_free_port,
    wait_for,
)
from drill_progress import config
from drill_progress.alerting import ALERT_TOPIC_VARIABLE
from drill_progress.maintenance.airflow_metadata import METADATA_CONN_ID

REPO = Path(__file__).resolve().parents[1]
SETUP_DAG_ID = "drill_progress_setup"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # noqa: S105 - local development login, printed by `make up`
DRILL_DB, DRILL_DB_USER, DRILL_DB_PASSWORD = "drill_progress", "drill", "drill"
AIRFLOW_DB, AIRFLOW_DB_USER, AIRFLOW_DB_PASSWORD = "airflow", "airflow", "airflow"
AWS_DUMMY_KEY = "testing"  # the emulator accepts any credentials
LOCAL_ALERT_TOPIC_ARN = f"arn:aws:sns:{config.DEFAULT_AWS_REGION}:123456789012:drill-progress-alerts"  # moto's account
AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
WORKER_PREFIX = "celery-worker-"  # component names celery-worker-1, -2, ...; also their Celery node names
# A task's broker message is redelivered after this long unacknowledged; a lost worker's tasks are
# recovered sooner by the scheduler (task_instance_heartbeat_timeout), see docs/celery.md.
CELERY_VISIBILITY_TIMEOUT = 86400
METRICS_PREFIX = "airflow"  # [metrics] statsd_prefix: Airflow's default, as in the Helm chart


def parse_executor(value: str) -> str:
    """EXECUTOR=local|celery (also LocalExecutor / CeleryExecutor, any case) -> 'local' or 'celery'."""
    key = value.strip().lower().removesuffix("executor") or "local"
    if key not in EXECUTORS:
        raise ServiceError(f"EXECUTOR must be 'local' (the default) or 'celery', not {value!r}")
    return key


def celery_slots_needed(shards: int) -> int:
    """Worker slots ingestion needs to hand over with room to spare: the running run's shard tasks,
    the next run's waiting beside them for about a second, and 4 for the other DAGs (a rollout,
    a rebuild, a report, the reminders) that must never queue behind ingestion; the LocalExecutor
    stack's parallelism is the same."""
    return 2 * shards + 4


def celery_concurrency_for(workers: int, shards: int) -> int:
    """Slots per worker when DRILL_CELERY_CONCURRENCY is not set: `celery_slots_needed` spread over
    the workers, at least 2 each."""
    return max(2, -(-celery_slots_needed(shards) // max(1, workers)))


@dataclass(frozen=True)
class Settings:
    """Everything `up` needs to know; computed from the environment, nothing started."""

    repo: Path
    state: Path
    pg_port: int
    aws_port: int
    airflow_port: int
    worker_log_port: int
    trigger_log_port: int
    airflow_host: str = "127.0.0.1"
    simulator_rate: float = 2.0
    simulator_users: int = 50
    executor: str = "local"  # "local" or "celery" (EXECUTOR)
    redis_port: int = 63799
    celery_workers: int = 2
    celery_concurrency: int = 0  # task slots per worker; 0: celery_concurrency_for(celery_workers, dialog_shards)
    celery_log_port: int = 8795
    dialog_shards: int = 2  # shards of a dialog event stream the setup DAG creates (DRILL_DIALOG_SHARDS)
    statsd_port: int = 58125  # UDP: the local StatsD receiver Airflow's metrics go to (DRILL_STATSD_PORT)
    keep_paused: tuple[str, ...] = ()  # DAGs `up` leaves paused (DRILL_KEEP_PAUSED, comma-separated)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        repo = Path(env.get("DRILL_REPO", REPO)).resolve()
        workers = int(env.get("DRILL_CELERY_WORKERS", 2))
        shards = int(env.get("DRILL_DIALOG_SHARDS", 2))
        return cls(
            repo=repo,
            state=Path(env.get("DRILL_STATE_DIR", repo / ".local")).resolve(),
            pg_port=int(env.get("DRILL_PG_PORT", 54329)),
            aws_port=int(env.get("DRILL_AWS_PORT", 5055)),
            airflow_port=int(env.get("AIRFLOW_PORT", 8080)),
            worker_log_port=int(env.get("AIRFLOW_WORKER_LOG_PORT", 8793)),
            trigger_log_port=int(env.get("AIRFLOW_TRIGGER_LOG_PORT", 8794)),
            airflow_host=env.get("AIRFLOW_HOST", "127.0.0.1"),
            simulator_rate=float(env.get("DRILL_SIM_RATE", 2.0)),
            simulator_users=int(env.get("DRILL_SIM_USERS", 50)),
            executor=parse_executor(env.get("EXECUTOR", "local")),
            redis_port=int(env.get("DRILL_REDIS_PORT", 63799)),
            celery_workers=workers,
            celery_concurrency=int(env.get("DRILL_CELERY_CONCURRENCY") or 0),
            celery_log_port=int(env.get("DRILL_CELERY_LOG_PORT", 8795)),
            dialog_shards=shards,
            statsd_port=int(env.get("DRILL_STATSD_PORT", 58125)),
            keep_paused=tuple(d.strip() for d in env.get("DRILL_KEEP_PAUSED", "").split(",") if d.strip()),
        )

    def __post_init__(self) -> None:
        if self.celery_concurrency <= 0:
            derived = celery_concurrency_for(self.celery_workers, self.dialog_shards)
            object.__setattr__(self, "celery_concurrency", derived)

    @property
    def celery(self) -> bool:
        return self.executor == "celery"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def worker_names(self) -> tuple[str, ...]:
        """The Celery workers' component names (none with LocalExecutor)."""
        return tuple(f"{WORKER_PREFIX}{i}" for i in range(1, self.celery_workers + 1)) if self.celery else ()

    def log_port_of(self, name: str) -> int:
        """Worker 1 serves its task logs on AIRFLOW_WORKER_LOG_PORT (the port the api-server asks),
        worker n > 1 on DRILL_CELERY_LOG_PORT + n - 2."""
        number = int(name.removeprefix(WORKER_PREFIX))
        return self.worker_log_port if number == 1 else self.celery_log_port + number - 2

    # folders
    @property
    def pgdata(self) -> Path:
        return self.state / "pgdata"

    @property
    def airflow_home(self) -> Path:
        return self.state / "airflow"

    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    @property
    def log_dir(self) -> Path:
        return self.state / "logs"

    @property
    def lineage_file(self) -> Path:
        """Where the stack's OpenLineage events go (file transport, one JSON event per line)."""
        return self.state / "openlineage" / "events.jsonl"

    @property
    def dags_folder(self) -> Path:
        return self.repo / "dags"

    @property
    def plugins_folder(self) -> Path:
        return self.repo / "plugins"

    @property
    def metrics_log(self) -> Path:
        """Where the local StatsD receiver writes the metrics it gets."""
        return self.state / "metrics.log"

    @property
    def aws_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def ui_url(self) -> str:
        host = "localhost" if self.airflow_host in {"0.0.0.0", "127.0.0.1"} else self.airflow_host  # noqa: S104
        return f"http://{host}:{self.airflow_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def python(self) -> Path:
        return Path(sys.executable)

    @property
    def airflow_bin(self) -> Path:
        return Path(sys.executable).parent / "airflow"

    def ports(self) -> dict[str, tuple[int, str]]:
        """component -> (port, the env var that changes it)"""
        ports = {
            "postgres": (self.pg_port, "DRILL_PG_PORT"),
            "moto": (self.aws_port, "DRILL_AWS_PORT"),
            "api-server": (self.airflow_port, "AIRFLOW_PORT"),
            "scheduler": (self.worker_log_port, "AIRFLOW_WORKER_LOG_PORT"),
            "triggerer": (self.trigger_log_port, "AIRFLOW_TRIGGER_LOG_PORT"),
        }
        if self.celery:  # the scheduler serves no logs then: the workers do
            del ports["scheduler"]
            ports["redis"] = (self.redis_port, "DRILL_REDIS_PORT")
            for name in self.worker_names:
                var = "AIRFLOW_WORKER_LOG_PORT" if name.endswith("-1") else "DRILL_CELERY_LOG_PORT"
                ports[name] = (self.log_port_of(name), var)
        return ports


# ---------------------------------------------------------------------- configuration


def drill_db_uri(s: Settings) -> str:
    return f"postgresql://{DRILL_DB_USER}:{DRILL_DB_PASSWORD}@127.0.0.1:{s.pg_port}/{DRILL_DB}"


def airflow_db_uri(s: Settings) -> str:
    return f"postgresql+psycopg2://{AIRFLOW_DB_USER}:{AIRFLOW_DB_PASSWORD}@127.0.0.1:{s.pg_port}/{AIRFLOW_DB}"


def celery_result_backend(s: Settings) -> str:
    """Celery's results in Airflow's metadata database (a `db+` SQLAlchemy URL)."""
    return f"db+postgresql+psycopg://{AIRFLOW_DB_USER}:{AIRFLOW_DB_PASSWORD}@127.0.0.1:{s.pg_port}/{AIRFLOW_DB}"


def aws_conn(s: Settings) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": AWS_DUMMY_KEY,
            "password": AWS_DUMMY_KEY,
            "extra": {"region_name": config.DEFAULT_AWS_REGION, "endpoint_url": s.aws_endpoint_url},
        }
    )


def load_secrets(s: Settings) -> dict[str, str]:
    """Generated once per state folder and kept in .local/secrets.json (mode 600)."""
    path = s.state / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    values = {
        "api_secret_key": secrets.token_urlsafe(32),
        "jwt_secret": secrets.token_urlsafe(48),
        "fernet_key": Fernet.generate_key().decode(),
    }
    s.state.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(values, indent=2) + "\n")
    return values


def conn_env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


PORT_VARIABLES = (
    "DRILL_PG_PORT",
    "DRILL_AWS_PORT",
    "AIRFLOW_PORT",
    "AIRFLOW_WORKER_LOG_PORT",
    "AIRFLOW_TRIGGER_LOG_PORT",
    "DRILL_REDIS_PORT",
    "DRILL_CELERY_LOG_PORT",
    "DRILL_STATSD_PORT",
)


def spare_stack_environment(state_dir: Path, environ: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a second stack beside any other (tests, benchmarks): every port a free
    loopback port, its state in `state_dir`, the caller's own Airflow settings left out; `extra`
    (e.g. EXECUTOR="celery", DRILL_DIALOG_SHARDS="4") on top."""
    env = {
        k: v
        for k, v in (os.environ if environ is None else environ).items()
        if not (k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) or k == "AIRFLOW_HOME")
    }
    env.update({name: str(stable_free_port()) for name in PORT_VARIABLES})
    env.update({"DRILL_STATE_DIR": str(state_dir), "DRILL_REPO": str(REPO)})
    env.update(extra)
    return env


def var_env_var(name: str) -> str:
    return f"AIRFLOW_VAR_{name.upper()}"


def airflow_env(s: Settings, secret_values: dict[str, str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """The AIRFLOW_* (and AWS_*) variables every Airflow process of the stack gets. Variables
    already set in the caller's environment win for the contract's Variables."""
    outer = os.environ if environ is None else environ
    env = {
        "AIRFLOW_HOME": str(s.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(s.dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(s.plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # ingestion holds one slot per shard, two for a second at each hand-over between its runs;
        # four more for everything else
        "AIRFLOW__CORE__PARALLELISM": str(celery_slots_needed(s.dialog_shards)),
        "AIRFLOW__CORE__FERNET_KEY": secret_values["fernet_key"],
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(s.airflow_home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{s.api_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db_uri(s),
        "AIRFLOW__API__HOST": s.airflow_host,
        "AIRFLOW__API__PORT": str(s.airflow_port),
        "AIRFLOW__API__SECRET_KEY": secret_values["api_secret_key"],
        "AIRFLOW__API__EXPOSE_CONFIG": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_values["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(s.log_dir / "airflow"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(s.log_dir / "dag-processor"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(s.worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(s.trigger_log_port),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # Airflow's metrics (its own and the pipeline's, docs/metrics.md) to the local StatsD receiver
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(s.statsd_port),
        "AIRFLOW__METRICS__STATSD_PREFIX": METRICS_PREFIX,
        conn_env_var(config.DB_CONN_ID): drill_db_uri(s),
        conn_env_var(config.AWS_CONN_ID): aws_conn(s),
        # drill_progress_maintenance prunes Airflow's metadata through this connection
        conn_env_var(METADATA_CONN_ID): airflow_db_uri(s),
        "AWS_DEFAULT_REGION": config.DEFAULT_AWS_REGION,
        "AWS_ACCESS_KEY_ID": AWS_DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_DUMMY_KEY,
        "DRILL_AWS_ENDPOINT_URL": s.aws_endpoint_url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    if s.celery:
        env.update(celery_env(s))
    env.update(openlineage_env(s, outer))
    for name, default in config.VARIABLE_DEFAULTS.items():
        env[var_env_var(name)] = outer.get(var_env_var(name), default)
    # alerts go to a topic on the emulator (created by `up`) unless the caller names another
    env[var_env_var(ALERT_TOPIC_VARIABLE)] = outer.get(var_env_var(ALERT_TOPIC_VARIABLE), LOCAL_ALERT_TOPIC_ARN)
    return env


def openlineage_env(s: Settings, outer: dict[str, str]) -> dict[str, str]:
    """OpenLineage (docs/lineage.md): every DAG run's events to the file transport in
    .local/openlineage/events.jsonl, or to the transport the caller's AIRFLOW__OPENLINEAGE__TRANSPORT
    names (e.g. Marquez over HTTP). The extractor gives the project's tasks their datasets; it reads
    Connections and Variables, which is safe in a thread of the task's process, not in the forked
    child the provider uses by default."""
    transport = {"type": "file", "log_file_path": str(s.lineage_file), "append": True}
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": outer.get("AIRFLOW__OPENLINEAGE__TRANSPORT") or json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": outer.get("AIRFLOW__OPENLINEAGE__NAMESPACE") or config.OPENLINEAGE_NAMESPACE,
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": config.OPENLINEAGE_EXTRACTORS,
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }


def lineage_destination(env: dict[str, str]) -> str:
    """Where the stack's lineage goes, in a few words (`make up`, `make status`)."""
    try:
        transport = json.loads(env.get("AIRFLOW__OPENLINEAGE__TRANSPORT") or "{}")
    except ValueError:
        return "OpenLineage transport: not valid JSON"
    kind = transport.get("type", "?")
    if kind == "file":
        path = Path(transport.get("log_file_path", ""))
        count = sum(1 for _ in path.open()) if path.is_file() else 0
        return f"OpenLineage file transport -> {path} ({count} events so far)"
    return f"OpenLineage {kind} transport -> {transport.get('url', '(see AIRFLOW__OPENLINEAGE__TRANSPORT)')}"


def _ensure_alert_topic(s: Settings, env: dict[str, str]) -> None:
    """The local alert topic exists on the emulator (which forgets everything when it stops)."""
    if env[var_env_var(ALERT_TOPIC_VARIABLE)] != LOCAL_ALERT_TOPIC_ARN:
        return
    sns = boto3_client("sns", s.aws_endpoint_url)  # dummy credentials: the caller's environment may have none
    sns.create_topic(Name=LOCAL_ALERT_TOPIC_ARN.rsplit(":", 1)[-1])  # idempotent


def celery_env(s: Settings) -> dict[str, str]:
    """CeleryExecutor: Redis as broker, results in Airflow's database, one queue (`default`)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": EXECUTORS["celery"],
        # the scheduler's cap on queued + running tasks: every worker slot usable
        "AIRFLOW__CORE__PARALLELISM": str(max(4, s.celery_workers * s.celery_concurrency)),
        "AIRFLOW__CELERY__BROKER_URL": s.redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": celery_result_backend(s),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(s.celery_concurrency),
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(CELERY_VISIBILITY_TIMEOUT),
    }


def worker_env(s: Settings, env: dict[str, str], name: str) -> dict[str, str]:
    """One Celery worker's environment: the stack's, with its own log server port."""
    return {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(s.log_port_of(name))}


def write_env_sh(s: Settings, env: dict[str, str]) -> Path:
    """.local/env.sh: `source .local/env.sh && .venv/bin/airflow dags test <dag_id>`."""
    lines = [
        "# Generated by `make up` (devtools.devstack). Source it to run airflow by hand:",
        "#   source .local/env.sh && .venv/bin/airflow dags test <dag_id>",
        "# Local development values only (loopback services, dummy AWS keys).",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    path = s.state / "env.sh"
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------- processes


def _pid_file(s: Settings, name: str) -> Path:
    return s.run_dir / f"{name}.pid"


def _log_file(s: Settings, name: str) -> Path:
    return s.log_dir / f"{name}.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) is not running
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, identifies one process."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(s: Settings, name: str) -> int | None:
    """The pid recorded for `name` if that process still runs and is still the one we started
    (the pid file records its start time, so a recycled pid is not mistaken for it)."""
    path = _pid_file(s, name)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        pid, started = int(record["pid"]), record.get("start_ticks")
    except (ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    if started is not None and _start_ticks(pid) != started:
        return None
    return pid


def spawn(s: Settings, name: str, cmd: list[str], env: dict[str, str], marker: str) -> int:
    """Start a detached process (own session, so `down` can stop its whole group) with a pid file."""
    s.run_dir.mkdir(parents=True, exist_ok=True)
    s.log_dir.mkdir(parents=True, exist_ok=True)
    with open(_log_file(s, name), "ab") as log, open(os.devnull, "rb") as devnull:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, env=env, cwd=s.repo, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    record = {"pid": proc.pid, "start_ticks": _start_ticks(proc.pid), "marker": marker, "cmd": cmd}
    _pid_file(s, name).write_text(json.dumps(record) + "\n")
    return proc.pid


def stop_process(s: Settings, name: str, timeout: float = 30) -> bool:
    """SIGTERM the process group recorded in the pid file, SIGKILL it after `timeout`."""
    pid = running_pid(s, name)
    _pid_file(s, name).unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # only zombies left?
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _http_ok(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status < 500
    except (OSError, urllib.error.URLError):
        return False


# ---------------------------------------------------------------------- the REST API


class Api:
    """A tiny client of Airflow's public REST API, authenticated as the stack's admin."""

    def __init__(self, base_url: str, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD):
        self.base_url = base_url.rstrip("/")
        self.username, self.password = username, password
        self._token: str | None = None

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback only
            return json.loads(resp.read() or b"{}")

    def token(self) -> str:
        if self._token is None:
            body = {"username": self.username, "password": self.password}
            self._token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
        return self._token

    def health(self) -> dict:
        return self._request("GET", "/api/v2/monitor/health", auth=False)

    def dags(self) -> list[dict]:
        return self._request("GET", "/api/v2/dags?limit=1000")["dags"]

    def import_errors(self) -> list[dict]:
        return self._request("GET", "/api/v2/importErrors?limit=1000")["import_errors"]

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": False})


def dag_files(s: Settings) -> list[Path]:
    return sorted(p for p in s.dags_folder.glob("*.py") if not p.name.startswith(("_", ".")))


def parsed_state(api: Api, s: Settings) -> tuple[list[dict], list[dict], list[Path]]:
    """(DAGs, import errors, DAG files neither yielded a DAG nor an import error yet)."""
    dags, errors = api.dags(), api.import_errors()
    seen = {Path(d.get("fileloc") or "").name for d in dags} | {Path(e.get("filename") or "").name for e in errors}
    missing = [p for p in dag_files(s) if p.name not in seen]
    return dags, errors, missing


# ---------------------------------------------------------------------- up / down / status


_T0 = time.monotonic()


def _say(msg: str) -> None:
    print(f"[drill-stack {time.monotonic() - _T0:5.1f}s] {msg}", flush=True)


def postgres(s: Settings) -> PostgresServer:
    return PostgresServer(s.pgdata, s.pg_port)


def _check_ports(s: Settings, running: set[str]) -> None:
    """Before starting anything: every port of a component that is not running must be free."""
    busy = [(comp, port, var) for comp, (port, var) in s.ports().items() if comp not in running and port_in_use(port)]
    if busy:
        lines = [
            f"  port {port} ({comp}) is already in use; stop whatever holds it or set {var}=<port>"
            for comp, port, var in busy
        ]
        raise ServiceError("cannot start the local stack, ports are busy:\n" + "\n".join(lines))


def _run_airflow(s: Settings, env: dict[str, str], args: list[str], what: str, timeout: float = 600) -> str:
    log_path = _log_file(s, "airflow-cli")
    proc = subprocess.run(
        [str(s.airflow_bin), *args], env=env, cwd=s.repo, capture_output=True, text=True, timeout=timeout, check=False
    )
    with open(log_path, "a") as log:
        log.write(f"\n==== airflow {' '.join(args)} (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ServiceError(f"{what} failed (exit {proc.returncode}); full output in {log_path}\n{tail}")
    return proc.stdout


def _prepare_state(s: Settings) -> None:
    s.state.mkdir(parents=True, exist_ok=True)
    # PostgreSQL runs as an unprivileged user when we are root: it must reach .local/pgdata.
    s.state.chmod(0o755)
    for folder in (s.airflow_home, s.run_dir, s.log_dir, s.lineage_file.parent):
        folder.mkdir(parents=True, exist_ok=True)
    passwords = s.airflow_home / "passwords.json"
    passwords.touch(mode=0o600)
    passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}) + "\n")


def component_states(s: Settings) -> dict[str, int | None]:
    """component -> pid if running else None."""
    states: dict[str, int | None] = {}
    pg = postgres(s)
    pg_pid = None
    if pg.is_running():
        with contextlib.suppress(OSError, ValueError, IndexError):
            pg_pid = int((s.pgdata / "postmaster.pid").read_text().split()[0])
    states["postgres"] = pg_pid
    redis, workers = celery_components(s)
    for name in ("metrics", "moto", *redis, *AIRFLOW_COMPONENTS, *workers, "simulator"):
        states[name] = running_pid(s, name)
    return states


def _worker_number(name: str) -> int:
    return int(name.removeprefix(WORKER_PREFIX))


def celery_components(s: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(("redis",) or (), the Celery workers): the configured ones with EXECUTOR=celery, and any
    that has a pid file (a Celery stack started earlier shows in `status` and stops on `down`
    whatever EXECUTOR says now)."""
    workers = set(s.worker_names)
    if s.run_dir.is_dir():
        workers |= {p.stem for p in s.run_dir.glob(f"{WORKER_PREFIX}*.pid") if p.stem[len(WORKER_PREFIX) :].isdigit()}
    redis = ("redis",) if s.celery or _pid_file(s, "redis").exists() else ()
    return redis, tuple(sorted(workers, key=_worker_number))


def _executor_file(s: Settings) -> Path:
    return s.run_dir / "executor"


def running_executor(s: Settings, states: dict[str, int | None]) -> str | None:
    """The executor the running Airflow components were started with (None when none runs)."""
    if not any(pid for name, pid in states.items() if name in AIRFLOW_COMPONENTS or name.startswith(WORKER_PREFIX)):
        return None
    try:
        return parse_executor(_executor_file(s).read_text())
    except (OSError, ServiceError):
        return "local"  # started before the file existed: only LocalExecutor stacks did


def _check_executor(s: Settings, states: dict[str, int | None]) -> None:
    running = running_executor(s, states)
    if running is not None and running != s.executor:
        hint = "" if s.executor == "local" else f"EXECUTOR={s.executor} "
        raise ServiceError(
            f"the local stack already runs on {EXECUTORS[running]}, not {EXECUTORS[s.executor]}: "
            f"stop it first (`make down`), then `{hint}make up`"
        )


def _start_postgres(s: Settings, running: set[str]) -> None:
    pg = postgres(s)
    if "postgres" in running:
        _say(f"PostgreSQL already running on 127.0.0.1:{s.pg_port}")
    else:
        _say(f"starting PostgreSQL on 127.0.0.1:{s.pg_port} (data in {s.pgdata})")
        pg.start()
    pg.create_database(DRILL_DB, owner=DRILL_DB_USER, owner_password=DRILL_DB_PASSWORD)
    pg.create_database(AIRFLOW_DB, owner=AIRFLOW_DB_USER, owner_password=AIRFLOW_DB_PASSWORD)


def _start_moto(s: Settings, running: set[str], env: dict[str, str]) -> None:
    if "moto" in running:
        _say(f"AWS emulator already running on {s.aws_endpoint_url}")
        return
    _say(f"starting the AWS emulator (moto) on {s.aws_endpoint_url}")
    require_free_port(s.aws_port, "the AWS emulator (moto)", "DRILL_AWS_PORT")
    spawn(
        s,
        "moto",
        [str(s.python), "-m", "devtools.moto_server", "-H", "127.0.0.1", "-p", str(s.aws_port)],
        env,
        marker="devtools.moto_server",
    )
    wait_for(lambda: _http_ok(f"{s.aws_endpoint_url}/moto-api/"), 60, f"moto on {s.aws_endpoint_url}")


def udp_port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _start_metrics_sink(s: Settings, running: set[str], env: dict[str, str]) -> None:
    where = f"udp 127.0.0.1:{s.statsd_port}"
    if "metrics" in running:
        _say(f"StatsD receiver already running on {where}")
        return
    if udp_port_in_use(s.statsd_port):
        raise ServiceError(
            f"port {s.statsd_port} (udp, the local StatsD receiver) is already in use on 127.0.0.1; stop whatever "
            "holds it or choose another port with DRILL_STATSD_PORT=<port>"
        )
    cmd = [str(s.python), "-m", "devtools.metrics_sink", "--port", str(s.statsd_port), "--out", str(s.metrics_log)]
    pid = spawn(s, "metrics", cmd, env, marker="devtools.metrics_sink")
    wait_for(lambda: udp_port_in_use(s.statsd_port), 30, f"the StatsD receiver on {where}", interval=0.2)
    _say(f"started the StatsD receiver (pid {pid}) on {where}: Airflow's metrics go to {s.metrics_log}")


def metrics_summary(s: Settings, prefix: str = f"{METRICS_PREFIX}.drill_progress.", tail_bytes: int = 1 << 20) -> str:
    """Where the metrics go, and what the last MiB of the metrics log holds of the pipeline's."""
    where = f"Airflow's StatsD metrics ([metrics] statsd_on) -> udp 127.0.0.1:{s.statsd_port} -> {s.metrics_log}"
    try:
        with open(s.metrics_log, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - tail_bytes))
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return f"{where} (nothing received yet)"
    ours = [line for line in lines if f" {prefix}" in line]
    last = f", the latest at {ours[-1].split(' ', 1)[0]}" if ours else ""
    return f"{where}: {len(lines)} recent lines, {len(ours)} of them the pipeline's ({prefix}*){last}"


def redis_server(s: Settings) -> RedisServer:
    return RedisServer(s.redis_port, s.state / "redis", logfile=_log_file(s, "redis"))


def _start_redis(s: Settings, running: set[str], env: dict[str, str]) -> None:
    server = redis_server(s)
    if "redis" in running:
        _say(f"Redis already running on 127.0.0.1:{s.redis_port}")
        return
    server.binary = find_redis_server(install=True)
    _say(f"starting Redis (the Celery broker) on 127.0.0.1:{s.redis_port}")
    require_free_port(s.redis_port, "Redis", "DRILL_REDIS_PORT")
    server.datadir.mkdir(parents=True, exist_ok=True)
    s.log_dir.mkdir(parents=True, exist_ok=True)
    spawn(s, "redis", server.command(), env, marker="redis-server")

    def healthy() -> bool:
        if running_pid(s, "redis") is None:
            raise ServiceError(f"redis-server exited; see {_log_file(s, 'redis')}")
        return server.healthy()

    wait_for(healthy, 30, f"Redis on 127.0.0.1:{s.redis_port}")


def _start_workers(s: Settings, states: dict[str, int | None], env: dict[str, str]) -> None:
    for name in s.worker_names:
        if states.get(name):
            _say(f"{name} already running (pid {states[name]})")
            continue
        cmd = [str(s.airflow_bin), "celery", "worker", "--concurrency", str(s.celery_concurrency)]
        cmd += ["--celery-hostname", f"{name}@%h"]
        pid = spawn(s, name, cmd, worker_env(s, env, name), marker="airflow celery worker")
        _say(f"started {name} (pid {pid}, log server port {s.log_port_of(name)}, log {_log_file(s, name)})")


def celery_workers(s: Settings, timeout: float = 1.0) -> dict[str, dict]:
    """The Celery workers answering on the stack's broker: node name -> {"active": tasks running}.
    Empty when the broker is down or no worker replies within `timeout`."""
    from celery import Celery

    app = Celery("drill-stack-status", broker=s.redis_url)
    try:
        inspect = app.control.inspect(timeout=timeout)
        pongs = inspect.ping() or {}
        active = (inspect.active() or {}) if pongs else {}
    except Exception:  # any broker trouble means: no worker seen
        return {}
    finally:
        app.close()
    return {node: {"active": len(active.get(node) or [])} for node in sorted(pongs)}


def _wait_workers_online(s: Settings, timeout: float = 120) -> dict[str, dict]:
    _say(f"waiting for {len(s.worker_names)} Celery workers to answer on {s.redis_url}")
    seen: dict[str, dict] = {}

    def online() -> bool:
        nonlocal seen
        for name in s.worker_names:
            if running_pid(s, name) is None:
                raise ServiceError(f"{name} exited; see {_log_file(s, name)}")
        seen = celery_workers(s)
        return all(any(node.startswith(f"{name}@") for node in seen) for name in s.worker_names)

    wait_for(online, timeout, "the Celery workers", interval=1)
    return seen


def _start_airflow(s: Settings, states: dict[str, int | None], env: dict[str, str], components) -> None:
    for comp in components:
        if states.get(comp):
            _say(f"airflow {comp} already running (pid {states[comp]})")
            continue
        args = [comp, "--port", str(s.airflow_port), "--host", s.airflow_host] if comp == "api-server" else [comp]
        pid = spawn(s, comp, [str(s.airflow_bin), *args], env, marker=f"airflow {comp}")
        _say(f"started airflow {comp} (pid {pid}, log {_log_file(s, comp)})")


def _wait_api_healthy(s: Settings) -> None:
    def healthy() -> bool:
        if running_pid(s, "api-server") is None:
            raise ServiceError(f"the api-server exited; see {_log_file(s, 'api-server')}")
        return _http_ok(f"{s.api_url}/api/v2/monitor/health")

    wait_for(healthy, 180, f"the Airflow api-server on {s.api_url}", interval=1)


def _wait_parsed_and_unpause(s: Settings, api: Api, parse_timeout: float) -> tuple[list[dict], list[dict]]:
    _say("waiting for the dag-processor to parse every file in dags/")
    deadline = time.monotonic() + parse_timeout
    while True:
        try:
            dags, errors, missing = parsed_state(api, s)
        except (OSError, urllib.error.URLError, KeyError):
            dags, errors, missing = [], [], dag_files(s)
        if not missing:
            break
        if time.monotonic() > deadline:
            _say("warning: not parsed yet: " + ", ".join(p.name for p in missing))
            break
        if running_pid(s, "dag-processor") is None:
            raise ServiceError(f"the dag-processor exited; see {_log_file(s, 'dag-processor')}")
        time.sleep(2)
    unpaused = [d["dag_id"] for d in dags if d["dag_id"] not in s.keep_paused]
    for dag in dags:
        if dag.get("is_paused") and dag["dag_id"] in unpaused:
            api.unpause(dag["dag_id"])
    _say(
        f"unpaused {len(unpaused)} DAGs: {', '.join(sorted(unpaused))}"
        + (f"; left paused: {', '.join(s.keep_paused)}" if s.keep_paused else "")
    )
    return dags, errors


def forget_emulator_checkpoints(db_uri: str, stream: str) -> int:
    """A freshly started emulator has new, empty streams: checkpoints (sequence numbers) kept in
    the drill database from the previous emulator would skip its first records. Drop them so
    ingestion reads the new stream from its start (the per-user seq guard makes that safe)."""
    import psycopg

    with psycopg.connect(db_uri, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.stream_checkpoints')").fetchone()[0] is None:
            return 0
        return conn.execute("DELETE FROM stream_checkpoints WHERE stream = %s", (stream,)).rowcount


def _start_simulator(s: Settings, env: dict[str, str]) -> None:
    if running_pid(s, "simulator"):
        _say("simulator already running")
        return
    cmd = [
        str(s.python),
        "-m",
        "devtools.simulator",
        "--follow",
        "--endpoint-url",
        s.aws_endpoint_url,
        "--rate",
        str(s.simulator_rate),
        "--users",
        str(s.simulator_users),
    ]
    pid = spawn(s, "simulator", cmd, env, marker="devtools.simulator")
    _say(f"started the simulated Dialog Context (pid {pid}, log {_log_file(s, 'simulator')})")


def _warn_few_slots(s: Settings) -> None:
    slots, needed = s.celery_workers * s.celery_concurrency, celery_slots_needed(s.dialog_shards)
    if slots < needed:
        _say(
            f"WARNING: {slots} Celery task slots for {s.dialog_shards} shards: ingestion holds one slot per "
            f"shard and two at a hand-over, so other DAGs may wait for a slot; {needed} or more advised "
            "(unset DRILL_CELERY_CONCURRENCY to get them)"
        )


def up(s: Settings, with_simulator: bool = True, parse_timeout: float = 180) -> dict:
    """Start whatever of the stack is not running yet; return the DAG ids and import errors."""
    started_at = time.monotonic()
    _prepare_state(s)
    states = component_states(s)
    _check_executor(s, states)
    running = {name for name, pid in states.items() if pid}
    _check_ports(s, running)
    stack_env = airflow_env(s, load_secrets(s))
    env = {**os.environ, **stack_env}
    env_sh = write_env_sh(s, stack_env)
    _executor_file(s).write_text(s.executor + "\n")

    _start_postgres(s, running)
    _start_metrics_sink(s, running, env)
    _start_moto(s, running, env)
    _ensure_alert_topic(s, env)
    if s.celery:
        _warn_few_slots(s)
        _start_redis(s, running, env)
    if not any(states.get(comp) for comp in AIRFLOW_COMPONENTS):
        _say("migrating Airflow's metadata database (airflow db migrate)")
        _run_airflow(s, env, ["db", "migrate"], "airflow db migrate")
    # The components that run no task boot while the setup DAG runs (idempotent: new drill
    # migrations, and the streams and tables the emulator lost when it stopped); the scheduler
    # starts after it, so no DAG runs against a database or stream that is not there yet. So does
    # the dag-processor: `dags test` writes every DAG (and its Assets) into the metadata database
    # too, and a fresh database written by both at once failed `up` once with a duplicate-key
    # IntegrityError on the new DAG rows.
    _start_airflow(s, states, env, ("triggerer", "api-server"))
    _say(f"running the {SETUP_DAG_ID} DAG (migrations, catalog, streams and tables)")
    setup_conf = json.dumps({"dialog_stream_shards": s.dialog_shards})
    _run_airflow(s, env, ["dags", "test", SETUP_DAG_ID, "-c", setup_conf], f"airflow dags test {SETUP_DAG_ID}")
    if not states.get("moto"):
        stream = env[var_env_var(config.DIALOG_EVENT_STREAM)]
        if forget_emulator_checkpoints(drill_db_uri(s), stream):
            _say(f"the emulator started empty: ingestion of {stream} starts from the stream's beginning")
    _start_airflow(s, states, env, ("dag-processor", "scheduler"))
    _start_workers(s, states, env)
    _wait_api_healthy(s)
    dags, errors = _wait_parsed_and_unpause(s, Api(s.api_url), parse_timeout)
    workers = _wait_workers_online(s) if s.celery else {}
    if with_simulator:
        _start_simulator(s, env)

    for err in errors:
        _say(f"IMPORT ERROR in {err.get('filename')}:\n{err.get('stack_trace', '').strip()[-1500:]}")
    print(
        f"\nDrill Progress is up ({time.monotonic() - started_at:.0f}s).\n"
        f"  Airflow UI     {s.ui_url}   login {ADMIN_USER} / {ADMIN_PASSWORD}\n"
        f"  DAGs           {len(dags)} listed, {len(errors)} import errors\n"
        f"  executor       {EXECUTORS[s.executor]}"
        + (f": {len(workers)} Celery workers online ({', '.join(workers)}), broker {s.redis_url}" if s.celery else "")
        + "\n"
        f"  PostgreSQL     {drill_db_uri(s)}\n"
        f"  AWS emulator   {s.aws_endpoint_url}\n"
        f"  metrics        StatsD on udp 127.0.0.1:{s.statsd_port} -> {s.metrics_log} (docs/metrics.md)\n"
        f"  logs           {s.log_dir}\n"
        f"  lineage        {lineage_destination(env)}\n"
        f"  by hand        source {env_sh} && .venv/bin/airflow dags test <dag_id>\n"
        f"  stop           make down\n",
        flush=True,
    )
    return {"dags": sorted(d["dag_id"] for d in dags), "import_errors": errors, "workers": sorted(workers)}


def down(s: Settings) -> list[str]:
    stopped = []
    redis, workers = celery_components(s)
    # the scheduler before the workers (nothing new is queued), the broker after them
    order = ("simulator", "api-server", "triggerer", "dag-processor", "scheduler", *workers, *redis, "moto", "metrics")
    for name in order:
        if stop_process(s, name):
            stopped.append(name)
            _say(f"stopped {name}")
    _executor_file(s).unlink(missing_ok=True)
    if s.pgdata.exists() and (s.pgdata / "postmaster.pid").exists():
        postgres(s).stop()
        stopped.append("postgres")
        _say("stopped PostgreSQL (data kept in " + str(s.pgdata) + ")")
    if not stopped:
        _say("nothing was running")
    return stopped


def status(s: Settings) -> dict[str, int | None]:
    states = component_states(s)
    executor = running_executor(s, states) or s.executor
    if executor != s.executor:
        s = dataclasses.replace(s, executor=executor)
    ports = s.ports()
    width = max(14, *(len(name) + 1 for name in states))
    for name, pid in states.items():
        shown = name in ports and name not in {"scheduler", "triggerer"} and not name.startswith(WORKER_PREFIX)
        where = f"port {ports[name][0]}" if shown else ""
        if name == "metrics":
            where = f"udp {s.statsd_port}"
        state = f"running (pid {pid})" if pid else "stopped"
        log = postgres(s).logfile if name == "postgres" else _log_file(s, name)
        print(f"  {name:<{width}} {state:<22} {where:<11} log {log}")
    print(f"\n  metrics: {metrics_summary(s)}")
    if executor == "celery":
        _print_celery_workers(s, states)
    print(f"\n  lineage: {lineage_destination(_running_openlineage_env(s))}")
    if states.get("api-server"):
        try:
            api = Api(s.api_url)
            dags, errors, missing = parsed_state(api, s)
            paused = sum(1 for d in dags if d.get("is_paused"))
            print(
                f"\n  UI {s.ui_url} (login {ADMIN_USER} / {ADMIN_PASSWORD}): {len(dags)} DAGs "
                f"({paused} paused), {len(errors)} import errors"
                + (f", not parsed yet: {', '.join(p.name for p in missing)}" if missing else "")
            )
            for err in errors:
                print(f"  import error: {err.get('filename')}")
        except (OSError, urllib.error.URLError, KeyError) as exc:
            print(f"\n  UI {s.ui_url} not answering yet ({exc})")
    return states


def _running_openlineage_env(s: Settings) -> dict[str, str]:
    """The OpenLineage settings `up` gave the stack (its .local/env.sh), else today's defaults."""
    env_sh = s.state / "env.sh"
    if not env_sh.is_file():
        return openlineage_env(s, dict(os.environ))
    found = {}
    for line in env_sh.read_text().splitlines():
        if line.startswith("export AIRFLOW__OPENLINEAGE__"):
            key, _, value = line.removeprefix("export ").partition("=")
            found[key] = shlex.split(value)[0] if value else ""
    return found


def _print_celery_workers(s: Settings, states: dict[str, int | None]) -> None:
    _, names = celery_components(s)
    seen = celery_workers(s) if states.get("redis") else {}
    print(f"\n  celery workers (CeleryExecutor, broker {s.redis_url}, {s.celery_concurrency} task slots each):")
    for name in names:
        nodes = [node for node in seen if node.startswith(f"{name}@")]
        if nodes:
            active = seen[nodes[0]]["active"]
            print(f"    {nodes[0]:<36} online, {active} task{'s' if active != 1 else ''} running")
        else:
            why = "process running, not answering" if states.get(name) else "process stopped"
            print(f"    {name + '@…':<36} offline ({why})")
    for node in sorted(set(seen) - {n for n in seen for name in names if n.startswith(f"{name}@")}):
        print(f"    {node:<36} online (not started by this stack)")


def load_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (the same file docker compose reads), read by python-dotenv:
    comments, quotes, `export` and ${VAR} references handled; a key without a value is skipped."""
    from dotenv import dotenv_values

    if not path.is_file():
        return {}
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.devstack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--no-simulator", action="store_true", help="up: do not start the simulator")
    args = parser.parse_args(argv)
    for key, value in load_dotenv(Path(os.environ.get("DRILL_REPO", REPO)) / ".env").items():
        os.environ.setdefault(key, value)  # the shell's environment wins over .env
    try:
        s = Settings.from_env()
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "up":
            up(s, with_simulator=not args.no_simulator)
        elif args.command == "down":
            down(s)
        elif args.command == "status":
            status(s)
        else:
            for key, value in sorted(airflow_env(s, load_secrets(s)).items()):
                print(f"export {key}={shlex.quote(value)}")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            print(f"(logs in {s.log_dir}; `make down` stops what was started)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
