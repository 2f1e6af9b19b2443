"""The local stack (`make up` / `make down` / `make status`): its configuration, its process
handling, busy ports, and (slow) a real up -> status -> down on free ports in a temporary folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from devtools import devstack, services
from devtools.services import free_port
from drill_progress import config

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def _settings(tmp: Path, **ports) -> devstack.Settings:
    env = {"DRILL_STATE_DIR": str(tmp), "DRILL_REPO": str(ROOT)}
    env.update({k: str(v) for k, v in ports.items()})
    return devstack.Settings.from_env(env)


@pytest.fixture
def state_dir():
    # PostgreSQL runs as an unprivileged user when we are root: it must reach the folder.
    path = Path(tempfile.mkdtemp(prefix="drill-stack-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_stack_shape_settings_default_to_two_shards_and_every_dag_unpaused(tmp_path):
    s = _settings(tmp_path)
    assert (s.dialog_shards, s.keep_paused) == (2, ())
    s = _settings(tmp_path, DRILL_DIALOG_SHARDS=4, DRILL_KEEP_PAUSED=" dialog_event_ingest, trigger_reminders ,")
    assert (s.dialog_shards, s.keep_paused) == (4, ("dialog_event_ingest", "trigger_reminders"))


SECRETS = {"api_secret_key": "k", "jwt_secret": "j", "fernet_key": "f"}


def test_env_has_the_contract_connections_variables_and_folders(tmp_path):
    s = _settings(tmp_path, DRILL_PG_PORT=6001, DRILL_AWS_PORT=6002, AIRFLOW_PORT=6003)
    env = devstack.airflow_env(s, SECRETS, environ={})
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(ROOT / "plugins")
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # the contract's connections (§7) by their ids
    db = env[f"AIRFLOW_CONN_{config.DB_CONN_ID.upper()}"]
    assert db == "postgresql://drill:drill@127.0.0.1:6001/drill_progress"
    aws = json.loads(env[f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}"])
    assert aws["conn_type"] == "aws"
    assert aws["extra"] == {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:6002"}
    # the contract's Variables with their defaults; a value from the caller's environment wins
    for name, default in config.VARIABLE_DEFAULTS.items():
        assert env[f"AIRFLOW_VAR_{name.upper()}"] == default
    custom = devstack.airflow_env(s, SECRETS, environ={"AIRFLOW_VAR_DIALOG_EVENT_STREAM": "mine"})
    assert custom["AIRFLOW_VAR_DIALOG_EVENT_STREAM"] == "mine"
    # Airflow's metadata in the same server, its own database; tasks reach the api-server
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@127.0.0.1:6001/airflow")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:6003/execution/"
    assert env["AIRFLOW__API__PORT"] == "6003"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    # maintenance reaches the metadata database through its connection; alerts go to the emulator's topic
    assert env["AIRFLOW_CONN_AIRFLOW_METADATA_DB"] == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW_VAR_ALERT_TOPIC_ARN"] == "arn:aws:sns:us-east-1:123456789012:drill-progress-alerts"
    mine = "arn:aws:sns:eu-west-1:000000000000:ops"
    assert (
        devstack.airflow_env(s, SECRETS, environ={"AIRFLOW_VAR_ALERT_TOPIC_ARN": mine})["AIRFLOW_VAR_ALERT_TOPIC_ARN"]
        == mine
    )


def test_every_airflow_option_set_exists_in_the_installed_airflow(tmp_path):
    """AIRFLOW__SECTION__KEY names are checked against Airflow's own config template, so a
    misspelt or renamed option cannot be silently ignored."""
    import airflow
    from airflow.providers.celery.get_provider_info import get_provider_info
    from airflow.providers.openlineage.get_provider_info import get_provider_info as openlineage_info

    template = Path(airflow.__file__).parent / "config_templates" / "config.yml"
    sections = {
        **yaml.safe_load(template.read_text()),
        **get_provider_info()["config"],
        **openlineage_info()["config"],
    }
    options = {(section, key) for section, body in sections.items() for key in (body.get("options") or {})}
    for executor in ("local", "celery"):
        env = devstack.airflow_env(_settings(tmp_path, EXECUTOR=executor), SECRETS, environ={})
        set_options = [name for name in env if name.startswith("AIRFLOW__")]
        assert len(set_options) > 15
        for name in set_options:
            _, section, key = name.split("__", 2)
            assert (section.lower(), key.lower()) in options, name


def test_env_sh_exports_the_same_environment(tmp_path):
    s = _settings(tmp_path, DRILL_AWS_PORT=6002)
    env = devstack.airflow_env(s, SECRETS, environ={})
    path = devstack.write_env_sh(s, env)
    out = subprocess.run(
        ["bash", "-c", f"source {path} && env -0"], capture_output=True, check=True, env={"PATH": os.environ["PATH"]}
    ).stdout
    exported = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    for key, value in env.items():
        assert exported[key] == value, key
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_lineage_goes_to_a_file_transport_in_the_state_folder_unless_the_caller_names_another(tmp_path, capsys):
    s = _settings(tmp_path)
    env = devstack.airflow_env(s, SECRETS, environ={})
    events = tmp_path / "openlineage" / "events.jsonl"
    assert s.lineage_file == events
    assert {k: v for k, v in env.items() if k.startswith("AIRFLOW__OPENLINEAGE__")} == {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "drill-progress",
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": "drill_progress.lineage.DeclaredAssetsExtractor",
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }
    assert devstack.lineage_destination(env) == f"OpenLineage file transport -> {events} (0 events so far)"
    events.parent.mkdir()
    events.write_text('{"eventType": "START"}\n{"eventType": "COMPLETE"}\n')
    assert devstack.lineage_destination(env) == f"OpenLineage file transport -> {events} (2 events so far)"
    marquez = json.dumps({"type": "http", "url": "http://marquez:5000", "endpoint": "api/v1/lineage"})
    custom = devstack.airflow_env(s, SECRETS, environ={"AIRFLOW__OPENLINEAGE__TRANSPORT": marquez})
    assert custom["AIRFLOW__OPENLINEAGE__TRANSPORT"] == marquez
    assert devstack.lineage_destination(custom) == "OpenLineage http transport -> http://marquez:5000"
    # `make status` says where the running stack's lineage goes (what `up` wrote into env.sh)
    devstack.write_env_sh(s, custom)
    devstack.status(s)
    assert "lineage: OpenLineage http transport -> http://marquez:5000" in capsys.readouterr().out


def test_secrets_are_generated_once_and_kept(tmp_path):
    s = _settings(tmp_path)
    first = devstack.load_secrets(s)
    assert devstack.load_secrets(s) == first
    assert len(first["jwt_secret"]) > 30 and first["fernet_key"] != first["api_secret_key"]


def test_a_busy_port_is_reported_clearly_and_nothing_starts(state_dir):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        env = {
            **os.environ,
            "DRILL_STATE_DIR": str(state_dir),
            "DRILL_PG_PORT": str(free_port()),
            "DRILL_AWS_PORT": str(busy),
            "AIRFLOW_PORT": str(free_port()),
            "AIRFLOW_WORKER_LOG_PORT": str(free_port()),
            "AIRFLOW_TRIGGER_LOG_PORT": str(free_port()),
        }
        proc = subprocess.run(
            [PY, "-m", "devtools.devstack", "up"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert proc.returncode == 1
    assert f"port {busy}" in proc.stderr and "DRILL_AWS_PORT" in proc.stderr and "in use" in proc.stderr
    assert not (state_dir / "pgdata").exists()  # failed before starting anything
    assert not list((state_dir / "run").glob("*.pid"))


def test_spawned_process_group_is_tracked_and_stopped(tmp_path):
    s = _settings(tmp_path)
    # a parent with a child in its group, like the scheduler and its LocalExecutor workers
    cmd = ["bash", "-c", "sleep 300 & sleep 300; wait"]
    pid = devstack.spawn(s, "dummy", cmd, dict(os.environ), marker="sleep")
    assert devstack.running_pid(s, "dummy") == pid
    time.sleep(0.3)
    assert devstack._group_alive(pid)
    assert devstack.stop_process(s, "dummy", timeout=10)
    assert not devstack._group_alive(pid)
    assert devstack.running_pid(s, "dummy") is None
    assert not (tmp_path / "run" / "dummy.pid").exists()
    assert devstack.stop_process(s, "dummy") is False  # stopping twice is harmless


def test_a_recycled_pid_is_not_mistaken_for_ours(tmp_path):
    s = _settings(tmp_path)
    s.run_dir.mkdir(parents=True)
    # our own pid is alive, but it did not start at the recorded time: not the stack's process
    record = {"pid": os.getpid(), "start_ticks": 1, "marker": "x", "cmd": []}
    (s.run_dir / "ghost.pid").write_text(json.dumps(record))
    assert devstack.running_pid(s, "ghost") is None
    assert devstack.stop_process(s, "ghost") is False  # and `down` leaves it alone
    os.kill(os.getpid(), 0)


def test_status_and_down_on_an_empty_state_folder(tmp_path, capsys):
    s = _settings(tmp_path, DRILL_PG_PORT=free_port())
    states = devstack.status(s)
    assert set(states) == {
        *("postgres", "metrics", "moto", "scheduler", "dag-processor", "triggerer", "api-server", "simulator")
    }
    assert not any(states.values())
    assert devstack.down(s) == []
    assert "nothing was running" in capsys.readouterr().out


def test_the_default_stack_stays_on_local_executor(tmp_path):
    s = _settings(tmp_path, DRILL_PG_PORT=6001, DRILL_AWS_PORT=6002, AIRFLOW_PORT=6003)
    assert s.executor == "local" and s.worker_names == ()
    env = devstack.airflow_env(s, SECRETS, environ={})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor" and env["AIRFLOW__CORE__PARALLELISM"] == "8"
    # one slot per shard held by ingestion, two at a hand-over between its runs, and four more
    more_shards = _settings(tmp_path, DRILL_DIALOG_SHARDS=4)
    assert devstack.airflow_env(more_shards, SECRETS, environ={})["AIRFLOW__CORE__PARALLELISM"] == "12"
    assert not [k for k in env if "CELERY" in k]
    assert s.ports() == {
        "postgres": (6001, "DRILL_PG_PORT"),
        "moto": (6002, "DRILL_AWS_PORT"),
        "api-server": (6003, "AIRFLOW_PORT"),
        "scheduler": (8793, "AIRFLOW_WORKER_LOG_PORT"),
        "triggerer": (8794, "AIRFLOW_TRIGGER_LOG_PORT"),
    }


def test_celery_stack_uses_redis_and_airflows_database(tmp_path):
    s = _settings(tmp_path, EXECUTOR="celery", DRILL_PG_PORT=6001, DRILL_REDIS_PORT=6009, DRILL_CELERY_CONCURRENCY=3)
    assert s.worker_names == ("celery-worker-1", "celery-worker-2")
    env = devstack.airflow_env(s, SECRETS, environ={})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6009/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg://airflow:airflow@127.0.0.1:6001/airflow"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "3"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "6"  # every worker slot usable
    assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"] == "86400"
    # the workers reach the api-server; tokens and served logs need the same secrets everywhere
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert env["AIRFLOW__API__SECRET_KEY"] == "k" and env["AIRFLOW__API_AUTH__JWT_SECRET"] == "j"


@pytest.mark.parametrize(
    ("shards", "workers", "per_worker"),
    [(2, 2, 4), (4, 2, 6), (4, 3, 4), (1, 8, 2), (2, 1, 8)],
)
def test_celery_slots_default_to_what_the_hand_over_needs(tmp_path, shards, workers, per_worker):
    """Unset, the slots per worker make 2 x shards + 4 in all: the running ingest run's shard tasks,
    the next run's beside them at a hand-over, and 4 for the other DAGs (at least 2 per worker)."""
    s = _settings(tmp_path, EXECUTOR="celery", DRILL_DIALOG_SHARDS=shards, DRILL_CELERY_WORKERS=workers)
    assert s.celery_concurrency == per_worker
    assert s.celery_workers * s.celery_concurrency >= 2 * shards + 4
    assert devstack.airflow_env(s, SECRETS, environ={})["AIRFLOW__CORE__PARALLELISM"] == str(workers * per_worker)
    blank = _settings(
        tmp_path,
        EXECUTOR="celery",
        DRILL_DIALOG_SHARDS=shards,
        DRILL_CELERY_WORKERS=workers,
        DRILL_CELERY_CONCURRENCY="",
    )
    assert blank.celery_concurrency == per_worker
    # built directly (no environment), the same default follows the workers and shards given
    direct = devstack.Settings(
        repo=tmp_path, state=tmp_path, pg_port=1, aws_port=2, airflow_port=3, worker_log_port=4,
        trigger_log_port=5, celery_workers=workers, dialog_shards=shards,
    )  # fmt: skip
    assert direct.celery_concurrency == per_worker


def test_up_warns_when_celery_slots_are_too_few_for_the_hand_over(tmp_path, capsys):
    few = _settings(tmp_path, EXECUTOR="celery", DRILL_DIALOG_SHARDS=4, DRILL_CELERY_CONCURRENCY=2)
    devstack._warn_few_slots(few)
    out = capsys.readouterr().out
    assert "WARNING: 4 Celery task slots for 4 shards" in out and "12 or more advised" in out
    enough = _settings(tmp_path, EXECUTOR="celery", DRILL_DIALOG_SHARDS=4, DRILL_CELERY_CONCURRENCY=6)
    devstack._warn_few_slots(enough)
    assert capsys.readouterr().out == ""


def test_each_celery_worker_serves_its_logs_on_its_own_port(tmp_path):
    s = _settings(
        tmp_path,
        EXECUTOR="CeleryExecutor",
        DRILL_CELERY_WORKERS=3,
        AIRFLOW_WORKER_LOG_PORT=7001,
        DRILL_CELERY_LOG_PORT=7101,
        DRILL_REDIS_PORT=7201,
    )
    ports = s.ports()
    assert "scheduler" not in ports  # it serves no task logs on Celery
    assert ports["redis"] == (7201, "DRILL_REDIS_PORT")
    assert ports["celery-worker-1"] == (7001, "AIRFLOW_WORKER_LOG_PORT")  # the port the api-server asks
    assert ports["celery-worker-2"] == (7101, "DRILL_CELERY_LOG_PORT")
    assert ports["celery-worker-3"] == (7102, "DRILL_CELERY_LOG_PORT")
    env = devstack.airflow_env(s, SECRETS, environ={})
    assert devstack.worker_env(s, env, "celery-worker-3")["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "7102"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "7001"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "local"), ("local", "local"), ("LocalExecutor", "local"), ("celery", "celery"), ("CELERYEXECUTOR", "celery")],
)
def test_executor_names(value, expected):
    assert devstack.parse_executor(value) == expected


def _isolated_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of `devstack up` in `state_dir` on free ports: a regression that starts
    something does not take the default ports of a developer's stack."""
    env = {**os.environ, "DRILL_STATE_DIR": str(state_dir), "DRILL_REPO": str(ROOT)}
    env.update({name: str(free_port()) for name in devstack.PORT_VARIABLES})
    env.update(extra)
    return env


def test_an_unknown_executor_is_refused_before_anything_starts(state_dir):
    env = _isolated_env(state_dir, EXECUTOR="kubernetes")
    proc = subprocess.run(
        [PY, "-m", "devtools.devstack", "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "EXECUTOR must be 'local' (the default) or 'celery', not 'kubernetes'" in proc.stderr
    assert not (state_dir / "run").exists()


def test_up_refuses_to_switch_the_executor_of_a_running_stack(state_dir):
    env = _isolated_env(state_dir, EXECUTOR="celery")
    local = devstack.Settings.from_env({**env, "EXECUTOR": "local"})
    pid = devstack.spawn(local, "scheduler", ["sleep", "300"], dict(os.environ), marker="sleep")
    try:
        proc = subprocess.run(
            [PY, "-m", "devtools.devstack", "up"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 1
        assert "already runs on LocalExecutor, not CeleryExecutor" in proc.stderr and "make down" in proc.stderr
        assert not (state_dir / "pgdata").exists() and not (state_dir / "run" / "redis.pid").exists()
    finally:
        devstack.down(devstack.Settings.from_env(env))  # whatever a regression started, and the dummy
    assert not devstack._alive(pid)


def test_status_of_a_stopped_celery_stack_lists_its_workers(tmp_path, capsys):
    s = _settings(tmp_path, EXECUTOR="celery", DRILL_PG_PORT=free_port(), DRILL_REDIS_PORT=free_port())
    states = devstack.status(s)
    assert set(states) == {
        *("postgres", "metrics", "moto", "redis", "scheduler", "dag-processor", "triggerer", "api-server"),
        *("simulator", "celery-worker-1", "celery-worker-2"),
    }
    assert not any(states.values())
    out = capsys.readouterr().out
    assert "celery workers (CeleryExecutor" in out
    assert "celery-worker-1@… " in out and "offline (process stopped)" in out


def test_down_stops_celery_processes_whatever_executor_is_set_now(tmp_path):
    """A Celery stack's workers and Redis stop on a plain `make down` (EXECUTOR unset)."""
    celery = _settings(tmp_path, EXECUTOR="celery")
    pids = {
        name: devstack.spawn(celery, name, ["sleep", "300"], dict(os.environ), marker="sleep")
        for name in ("redis", "celery-worker-1", "celery-worker-2")
    }
    plain = _settings(tmp_path)
    assert devstack.celery_components(plain) == (("redis",), ("celery-worker-1", "celery-worker-2"))
    stopped = devstack.down(plain)
    assert stopped == ["celery-worker-1", "celery-worker-2", "redis"]
    assert not any(devstack._group_alive(pid) for pid in pids.values())
    assert devstack.celery_components(plain) == ((), ())


def test_redis_runs_on_loopback_in_memory_only(tmp_path):
    try:
        services.find_redis_server()
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    server = services.RedisServer(free_port(), tmp_path / "redis")
    server.start()
    try:
        assert server.healthy()
        for setting, value in (("bind", "127.0.0.1"), ("save", ""), ("appendonly", "no"), ("protected-mode", "yes")):
            assert _redis_config(server.port, setting) == value, setting
    finally:
        server.stop()
    assert not server.healthy()
    assert not list((tmp_path / "redis").iterdir())  # nothing written


def _redis_config(port: int, setting: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(f"CONFIG GET {setting}\r\n".encode())
        time.sleep(0.2)
        reply = sock.recv(4096).decode().split("\r\n")
    return reply[4]  # *2, $len, name, $len, value


def test_a_missing_redis_server_says_how_to_install_it(monkeypatch):
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    monkeypatch.setattr(services.os, "access", lambda path, mode: False)
    with pytest.raises(services.ServiceError, match="apt-get install --no-install-recommends redis-server"):
        services.find_redis_server(install=False)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_metrics_are_on_towards_the_local_statsd_receiver(tmp_path):
    s = _settings(tmp_path, DRILL_STATSD_PORT=6011)
    env = devstack.airflow_env(s, SECRETS, environ={})
    assert {k: v for k, v in env.items() if k.startswith("AIRFLOW__METRICS__")} == {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": "6011",
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    assert devstack.Settings.from_env({}).statsd_port == 58125
    assert "DRILL_STATSD_PORT" in devstack.PORT_VARIABLES


def test_the_statsd_receiver_writes_what_it_gets_and_status_says_where(state_dir, capsys):
    s = _settings(state_dir, DRILL_STATSD_PORT=_free_udp_port())
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"}
    devstack._prepare_state(s)
    devstack._start_metrics_sink(s, set(), env)
    try:
        pid = devstack.running_pid(s, "metrics")
        assert pid
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(
                b"airflow.drill_progress.reminders.enqueued:3|c\nairflow.scheduler_heartbeat:1|c",
                ("127.0.0.1", s.statsd_port),
            )
        devstack.wait_for(lambda: s.metrics_log.exists() and "heartbeat" in s.metrics_log.read_text(), 10, "the log")
        lines = s.metrics_log.read_text().splitlines()
        assert [line.split(" ", 1)[1] for line in lines] == [
            "airflow.drill_progress.reminders.enqueued:3|c",
            "airflow.scheduler_heartbeat:1|c",
        ]
        with pytest.raises(services.ServiceError, match="DRILL_STATSD_PORT"):  # the port is taken now
            devstack._start_metrics_sink(s, set(), env)
        devstack.status(s)
        out = capsys.readouterr().out
        assert any(line.split()[:3] == ["metrics", "running", "(pid"] for line in out.splitlines()), out
        assert f"-> udp 127.0.0.1:{s.statsd_port} -> {s.metrics_log}: 2 recent lines, 1 of them the pipeline's" in out
    finally:
        devstack.stop_process(s, "metrics")
    assert devstack.running_pid(s, "metrics") is None


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_up_status_down_for_real(state_dir):
    """`up` on free ports serves the UI with every DAG file parsed, no import errors and every
    DAG unpaused; a second `up` starts nothing new; `down` stops exactly what `up` started."""
    ports = {
        "DRILL_PG_PORT": free_port(),
        "DRILL_AWS_PORT": free_port(),
        "AIRFLOW_PORT": free_port(),
        "AIRFLOW_WORKER_LOG_PORT": free_port(),
        "AIRFLOW_TRIGGER_LOG_PORT": free_port(),
        "DRILL_STATSD_PORT": _free_udp_port(),
    }
    env = {**os.environ, "DRILL_STATE_DIR": str(state_dir), **{k: str(v) for k, v in ports.items()}}
    for name in list(env):  # the test session's Airflow settings must not leak into the stack
        if name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) or name == "AIRFLOW_HOME":
            env.pop(name)
    s = devstack.Settings.from_env(env)

    def stack(*args, timeout=300):
        return subprocess.run(
            [PY, "-m", "devtools.devstack", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    try:
        first = stack("up")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert f"http://localhost:{ports['AIRFLOW_PORT']}" in first.stdout and "admin / admin" in first.stdout
        pids = {
            name: devstack.running_pid(s, name)
            for name in ("metrics", "moto", "scheduler", "dag-processor", "triggerer", "api-server", "simulator")
        }
        assert all(pids.values()), pids

        api = devstack.Api(s.api_url)
        dags, errors, missing = devstack.parsed_state(api, s)
        assert not errors, errors
        assert not missing
        dag_ids = {d["dag_id"] for d in dags}
        assert "drill_progress_setup" in dag_ids
        assert len(dags) >= len(devstack.dag_files(s))
        assert not any(d["is_paused"] for d in dags)
        # the setup DAG ran: the drill database has the catalog
        import psycopg

        with psycopg.connect(devstack.drill_db_uri(s)) as conn:
            slugs = [r[0] for r in conn.execute("SELECT drill_slug FROM drills ORDER BY place_in_sequence")]
        assert slugs[:3] == list(config.INITIAL_CATALOG)
        # the login works in the UI's way too
        req = urllib.request.Request(f"{s.api_url}/api/v2/version", headers={"Authorization": f"Bearer {api.token()}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["version"].startswith("3.3")

        # the continuous ingestion run applies the simulator's traffic: its metrics reach the receiver
        ours = f"{devstack.METRICS_PREFIX}.drill_progress.ingest.events_applied."
        devstack.wait_for(
            lambda: s.metrics_log.exists() and ours in s.metrics_log.read_text(), 180, "ingest metrics", interval=2
        )
        # issue 22 on the running stack: the lookup, the history and the rebuild (through the scheduler)
        from celery_support import CeleryStack
        from operator_tools import check_operator_tools

        print("\noperator tools on LocalExecutor:", check_operator_tools(CeleryStack(env)))

        status = stack("status", timeout=60)
        assert status.returncode == 0
        assert f"-> udp 127.0.0.1:{ports['DRILL_STATSD_PORT']} -> {s.metrics_log}" in status.stdout, status.stdout
        assert "the pipeline's (airflow.drill_progress.*), the latest at" in status.stdout, status.stdout
        for name in (
            "metrics",
            "postgres",
            "moto",
            "scheduler",
            "dag-processor",
            "triggerer",
            "api-server",
            "simulator",
        ):
            assert any(line.split()[:2] == [name, "running"] for line in status.stdout.splitlines()), status.stdout
        assert "0 import errors" in status.stdout
        assert f"lineage: OpenLineage file transport -> {s.lineage_file}" in status.stdout
        # the setup DAG that `up` ran sent its lineage to the stack's file transport
        events = [json.loads(line) for line in s.lineage_file.read_text().splitlines()]
        complete = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
        pg = (f"postgres://127.0.0.1:{ports['DRILL_PG_PORT']}", "drill_progress.public.")
        aws = "arn:aws:{}:us-east-1:123456789012"  # the emulator's account
        setup = {
            task: {(d["namespace"], d["name"]) for d in complete[f"drill_progress_setup.{task}"]["outputs"]}
            for task in ("apply_migrations", "create_aws_resources")
        }
        assert setup == {
            "apply_migrations": {
                (pg[0], pg[1] + table)
                for table in (
                    "users",
                    "phone_numbers",
                    "drill_statuses",
                    "drill_instances",
                    "drills",
                    "event_history",
                    "drill_progress_daily",
                )
            },
            "create_aws_resources": {
                (aws.format("kinesis"), "stream/dialog-events"),
                (aws.format("kinesis"), "stream/dialog-commands"),
                (aws.format("dynamodb"), "table/drill-trigger-schedule"),
            },
        }
        assert complete["drill_progress_setup"]["job"]["namespace"] == "drill-progress"
        env_sh = (state_dir / "env.sh").read_text()
        assert "AIRFLOW_CONN_DRILL_PROGRESS_DB" in env_sh and str(ROOT / "dags") in env_sh

        again = stack("up")
        assert again.returncode == 0, again.stderr[-3000:]
        assert "already running" in again.stdout
        assert {name: devstack.running_pid(s, name) for name in pids} == pids  # no second copy
    finally:
        down = stack("down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert not any(devstack._group_alive(pid) for pid in pids.values())  # whole process groups gone
    assert devstack.postgres(s).is_running() is False
    assert (state_dir / "pgdata" / "PG_VERSION").exists()  # data kept
    assert not any(devstack.component_states(s).values())


def test_a_fresh_emulator_resets_the_dialog_stream_checkpoints(drill_db, empty_db):
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO stream_checkpoints (stream, shard_id, sequence_number) VALUES "
            "('dialog-events', 'shardId-000000000000', '312'), ('other', 'shardId-000000000000', '9')"
        )
    assert devstack.forget_emulator_checkpoints(drill_db.url, "dialog-events") == 1
    with drill_db.engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT stream FROM stream_checkpoints").scalars().all()
    assert left == ["other"]
    assert devstack.forget_emulator_checkpoints(empty_db.url, "dialog-events") == 0  # no schema yet: no-op


def test_dotenv_is_read_as_docker_compose_reads_it(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# a comment\nA=1\nexport B=\"two words\"\nC='x'  # trailing\nD\nE=${A}2\n")
    assert devstack.load_dotenv(env_file) == {"A": "1", "B": "two words", "C": "x", "E": "12"}
    assert devstack.load_dotenv(tmp_path / "missing.env") == {}


def test_the_local_alert_topic_is_created_without_aws_credentials_in_the_environment(
    tmp_path, moto_server, monkeypatch
):
    """`make up` on a machine with no AWS credentials at all: the stack's dummy ones are used."""
    from urllib.parse import urlparse

    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    moto_server.reset()
    s = _settings(tmp_path, DRILL_AWS_PORT=urlparse(moto_server.endpoint_url).port)
    env = devstack.airflow_env(s, SECRETS, environ={})

    devstack._ensure_alert_topic(s, env)
    devstack._ensure_alert_topic(s, env)  # again: idempotent

    sns = boto3.client(
        "sns",
        endpoint_url=moto_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert [t["TopicArn"] for t in sns.list_topics()["Topics"]] == [devstack.LOCAL_ALERT_TOPIC_ARN]
