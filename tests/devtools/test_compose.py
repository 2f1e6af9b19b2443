"""docker-compose.yaml agrees with the local stack (devtools.devstack) and the contract, is safe
by default, and is accepted by `docker-compose config`.

No Docker engine is needed: the file is parsed with PyYAML (anchors and `<<` merges resolved) and
its `${VAR:-default}` interpolations are resolved to their defaults and `${VAR:?message}` ones to
the values of a minimal .env (REQUIRED), as `docker compose config` would. Debian's docker-compose
(installed by .ci/run, no engine) validates the file itself; those tests are skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devtools import devstack
from drill_progress import config
from drill_progress.alerting import ALERT_TOPIC_VARIABLE
from drill_progress.maintenance.airflow_metadata import METADATA_CONN_ID

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")
# what a minimal .env gives: the values compose requires (`${VAR:?message}`)
REQUIRED = {"AIRFLOW_DB_PASSWORD": "pw-airflow-db", "DRILL_DB_PASSWORD": "pw-drill-db"}
SECRETS_DIR = "/opt/airflow/config/secrets"


def _resolve(match: re.Match) -> str:
    name, kind, rest = match.groups()
    if kind == "?":
        return REQUIRED[name]
    return rest or ""


def interpolate(value):
    """Resolve compose interpolation to defaults and REQUIRED ($$ is a literal $)."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(_resolve, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return interpolate(yaml.safe_load(raw))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def local_env(tmp_path_factory) -> dict[str, str]:
    s = devstack.Settings.from_env({"DRILL_STATE_DIR": str(tmp_path_factory.mktemp("state"))})
    return devstack.airflow_env(s, {"api_secret_key": "k", "jwt_secret": "j", "fernet_key": "f"}, environ={})


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> str:
    cmd = service.get("command") or ""
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def _pinned_airflow() -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith("apache-airflow=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError("apache-airflow is not pinned in requirements.txt")


def test_every_airflow_component_and_backing_service_is_there(services):
    for name, command in AIRFLOW_SERVICES.items():
        assert name in services, name
        assert _command(services[name]) == command
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "airflow-init" in services and "simulator" in services
    # Airflow's metadata, the drill database, the AWS emulator, the Celery broker
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["drill-db"]["image"].startswith("postgres:")
    assert services["aws"]["image"].startswith("motoserver/moto:")
    assert services["redis"]["image"].startswith("redis:")
    for name in ("postgres", "drill-db", "aws", "redis"):
        assert services[name]["healthcheck"]["test"], name


def test_celery_executor_with_broker_and_worker(services):
    env = _env(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert (
        env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
        or "@redis:" in env["AIRFLOW__CELERY__BROKER_URL"]
    )


def test_depends_on_conditions_are_consistent(services):
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{dep} needs a healthcheck"
            elif condition == "service_completed_successfully":
                assert dep in {"airflow-init", "airflow-secrets"}
    for name in (*AIRFLOW_SERVICES, "simulator"):
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    for backing in ("postgres", "drill-db", "aws", "redis"):
        assert services["airflow-init"]["depends_on"][backing]["condition"] == "service_healthy"
    # the secrets exist before anything reads them
    assert services["airflow-init"]["depends_on"]["airflow-secrets"]["condition"] == "service_completed_successfully"


def test_connections_and_variables_are_the_local_stacks(services, local_env):
    """Same AIRFLOW_CONN_* / AIRFLOW_VAR_* names as `make up`, the contract's defaults, and
    connections that point at the compose services."""
    wanted = {k for k in local_env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    assert wanted == {
        f"AIRFLOW_CONN_{config.DB_CONN_ID.upper()}",
        f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}",
        f"AIRFLOW_CONN_{METADATA_CONN_ID.upper()}",
        f"AIRFLOW_VAR_{ALERT_TOPIC_VARIABLE.upper()}",
    } | {f"AIRFLOW_VAR_{name.upper()}" for name in config.VARIABLE_DEFAULTS}
    drill_db = _env(services["drill-db"])
    for name in (*AIRFLOW_SERVICES, "airflow-init", "simulator"):
        env = _env(services[name])
        assert {k for k in env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))} == wanted, name
        for var, default in config.VARIABLE_DEFAULTS.items():
            assert env[f"AIRFLOW_VAR_{var.upper()}"] == default == local_env[f"AIRFLOW_VAR_{var.upper()}"]
        db = env[f"AIRFLOW_CONN_{config.DB_CONN_ID.upper()}"]
        assert db == (
            f"postgresql://{drill_db['POSTGRES_USER']}:{drill_db['POSTGRES_PASSWORD']}"
            f"@drill-db:5432/{drill_db['POSTGRES_DB']}"
        )
        assert drill_db["POSTGRES_DB"] == devstack.DRILL_DB
        aws = json.loads(env[f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}"])
        local_aws = json.loads(local_env[f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}"])
        assert aws["conn_type"] == local_aws["conn_type"] == "aws"
        assert set(aws["extra"]) == set(local_aws["extra"]) == {"region_name", "endpoint_url"}
        assert aws["extra"]["region_name"] == local_aws["extra"]["region_name"]
        assert aws["extra"]["endpoint_url"] == "http://aws:5000"
        airflow_db = _env(services["postgres"])
        assert (
            env[f"AIRFLOW_CONN_{METADATA_CONN_ID.upper()}"]
            == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
            == (
                f"postgresql+psycopg2://{airflow_db['POSTGRES_USER']}:{airflow_db['POSTGRES_PASSWORD']}"
                f"@postgres/{airflow_db['POSTGRES_DB']}"
            )
        )
        topic = f"AIRFLOW_VAR_{ALERT_TOPIC_VARIABLE.upper()}"
        assert env[topic] == local_env[topic] == devstack.LOCAL_ALERT_TOPIC_ARN


def test_airflow_settings_match_the_local_stack_and_exist(services, local_env):
    import airflow
    from airflow.providers.celery.get_provider_info import get_provider_info
    from airflow.providers.openlineage.get_provider_info import get_provider_info as openlineage_info

    template = Path(airflow.__file__).parent / "config_templates" / "config.yml"
    sections = {
        **yaml.safe_load(template.read_text()),
        **get_provider_info()["config"],
        **openlineage_info()["config"],
    }
    options = {
        (section, key): body["options"][key] for section, body in sections.items() for key in body.get("options") or {}
    }
    env = _env(services["airflow-apiserver"])
    for name in env:
        if name.startswith("AIRFLOW__"):
            _, section, key = name.lower().split("__", 2)
            if key.endswith("_cmd"):  # read from a command: allowed for sensitive options only
                key = key.removesuffix("_cmd")
                assert options[(section, key)].get("sensitive"), name
            assert (section, key) in options, name
    for same in ("AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"):
        assert env[same] == local_env[same]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == local_env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower()
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    # lineage as in the local stack: the same extractor, thread and job namespace; a file transport
    for same in ("NAMESPACE", "EXTRACTORS", "EXECUTE_IN_THREAD"):
        name = f"AIRFLOW__OPENLINEAGE__{same}"
        assert env[name].lower() == local_env[name].lower(), name
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport == {"type": "file", "log_file_path": "/opt/airflow/logs/openlineage-events.jsonl", "append": True}
    assert json.loads(local_env["AIRFLOW__OPENLINEAGE__TRANSPORT"])["type"] == "file"
    # the passwords file the init service writes is the one the api-server reads
    init_script = _command(services["airflow-init"])
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] in init_script


def test_metrics_are_on_in_both_stacks_towards_a_statsd_receiver(services, local_env):
    """Airflow's StatsD metrics (its own and the pipeline's, docs/metrics.md): to the statsd-exporter
    service here, to the local stack's receiver there; the same prefix, which the exporter's
    mappings (helm/statsd-mappings.yaml) expect."""
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__METRICS__STATSD_ON"].lower() == local_env["AIRFLOW__METRICS__STATSD_ON"].lower() == "true"
        assert env["AIRFLOW__METRICS__STATSD_PREFIX"] == local_env["AIRFLOW__METRICS__STATSD_PREFIX"] == "airflow"
        assert (env["AIRFLOW__METRICS__STATSD_HOST"], env["AIRFLOW__METRICS__STATSD_PORT"]) == (
            "statsd-exporter",
            "9125",
        )
    exporter = services["statsd-exporter"]
    assert exporter["image"].startswith("prom/statsd-exporter:")
    assert "--statsd.listen-udp=:9125" in exporter["command"]
    assert exporter["ports"] == ["127.0.0.1:9102:9102"]  # DRILL_STATSD_EXPORTER_PORT, loopback only


def test_project_folders_are_mounted_into_every_airflow_container(services):
    for folder in ("dags", "include", "plugins"):
        assert (ROOT / folder).is_dir(), folder
    for name in (*AIRFLOW_SERVICES, "airflow-init", "simulator"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"] if v.startswith("./")}
        for folder in ("dags", "include", "plugins", "logs"):
            assert mounts.get(f"/opt/airflow/{folder}") == f"./{folder}", (name, folder)
        env = _env(services[name])
        assert "/opt/airflow/include" in env.get("PYTHONPATH", ""), name
    assert "ENV PYTHONPATH=/opt/airflow/include" in DOCKERFILE.read_text()


def test_airflow_version_is_the_pinned_one(compose, raw):
    pinned = _pinned_airflow()
    assert pinned.startswith("3.3.")
    build = compose["x-airflow-common"]["build"]
    assert build["args"]["AIRFLOW_VERSION"] == pinned
    assert build["args"]["PYTHON_VERSION"] == "3.11"
    dockerfile = DOCKERFILE.read_text()
    assert f"ARG AIRFLOW_VERSION={pinned}" in dockerfile
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}" in dockerfile
    assert "-r /opt/airflow/requirements/requirements.txt -c /opt/airflow/requirements/constraints.txt" in dockerfile
    assert compose["x-airflow-common"]["image"].endswith(f":{pinned}")
    moto_pin = next(
        line.split("==")[1] for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("moto")
    )
    assert compose["services"]["aws"]["image"] == f"motoserver/moto:{moto_pin}"


def test_init_service_migrates_airflow_and_runs_the_setup_dag(services):
    init = services["airflow-init"]
    script = _command(init)
    env = _env(init)
    assert env.get("_AIRFLOW_DB_MIGRATE") == "true" or "airflow db migrate" in script
    assert f"airflow dags test {devstack.SETUP_DAG_ID}" in script
    assert "set -e" in script  # a failed setup fails the init service, and nothing starts


def test_simulator_publishes_to_the_emulator(services):
    cmd = _command(services["simulator"])
    assert "devtools.simulator" in cmd and "--follow" in cmd
    assert "--endpoint-url http://aws:5000" in cmd


def test_host_ports_use_the_local_stacks_variables_and_defaults(raw):
    s = devstack.Settings.from_env({})
    for var, default in (
        ("DRILL_PG_PORT", s.pg_port),
        ("DRILL_AWS_PORT", s.aws_port),
        ("AIRFLOW_PORT", s.airflow_port),
    ):
        assert f"${{{var}:-{default}}}:" in raw, var


def test_env_example_documents_every_interpolated_variable(raw):
    example = (ROOT / ".env.example").read_text()
    documented = {line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line}
    used = {m.group(1) for m in _INTERPOLATION.finditer(raw.replace("$$", ""))}
    assert used <= documented, used - documented
    for name in config.VARIABLE_DEFAULTS:
        assert f"AIRFLOW_VAR_{name.upper()}" in documented
    for conn in (config.DB_CONN_ID, config.AWS_CONN_ID):
        assert f"AIRFLOW_CONN_{conn.upper()}" in documented


# --------------------------------------------------------------------------- safe by default


def _docker_compose(*args: str, env_file: dict[str, str]) -> subprocess.CompletedProcess:
    """Debian's docker-compose (no engine needed for `config`) on this file, with `env_file` as
    its .env and nothing else from the environment."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
    path = ROOT / "tests" / "_artifacts" / f"compose-{os.getpid()}.env"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in env_file.items()))
    try:
        return subprocess.run(
            [binary, "--env-file", str(path), "-f", str(COMPOSE), "--project-directory", str(ROOT), *args],
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        path.unlink(missing_ok=True)


def _published(resolved: dict) -> dict[str, list[str]]:
    """service -> its published ports as `docker-compose config` prints them (host_ip:port:target)."""
    out: dict[str, list[str]] = {}
    for name, service in resolved["services"].items():
        for port in service.get("ports") or []:
            text = f"{port.get('host_ip', '')}:{port['published']}:{port['target']}" if isinstance(port, dict) else port
            out.setdefault(name, []).append(str(text))
    return out


def test_docker_compose_config_accepts_the_file():
    proc = _docker_compose("config", "-q", env_file=REQUIRED)
    assert proc.returncode == 0, proc.stderr


def test_a_missing_database_password_stops_compose_with_a_clear_message():
    for missing in REQUIRED:
        given = {k: v for k, v in REQUIRED.items() if k != missing}
        proc = _docker_compose("config", "-q", env_file=given)
        assert proc.returncode != 0
        assert f"set {missing} in .env, see .env.example" in proc.stderr, proc.stderr
    empty = _docker_compose("config", "-q", env_file={**REQUIRED, "DRILL_DB_PASSWORD": ""})
    assert empty.returncode != 0 and "set DRILL_DB_PASSWORD in .env" in empty.stderr


def test_every_published_port_is_on_loopback_unless_the_ui_is_opened():
    default = _docker_compose("config", env_file=REQUIRED)
    assert default.returncode == 0, default.stderr
    published = _published(yaml.safe_load(default.stdout))
    assert published == {
        "airflow-apiserver": ["127.0.0.1:8080:8080/tcp"],
        "aws": ["127.0.0.1:5055:5000/tcp"],
        "drill-db": ["127.0.0.1:54329:5432/tcp"],
        "statsd-exporter": ["127.0.0.1:9102:9102/tcp"],
    }
    opened = _docker_compose("config", env_file={**REQUIRED, "AIRFLOW_HOST": "0.0.0.0", "AIRFLOW_PORT": "8081"})
    assert _published(yaml.safe_load(opened.stdout))["airflow-apiserver"] == ["0.0.0.0:8081:8080/tcp"]


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|JWT|TOKEN|_KEY", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]*)@")
# the emulator's dummy AWS credentials (moto accepts any): not a secret of anything
_EMULATOR_DUMMIES = {("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")}


def test_no_secret_is_written_in_the_file():
    """Every secret-looking setting is required from .env (`${VAR:?...}`), optional from .env with
    an empty default (the generator's overrides), or read from the generated secrets (`_CMD`)."""
    uninterpolated = yaml.safe_load(COMPOSE.read_text())
    checked = 0
    for name, service in uninterpolated["services"].items():
        for key, value in _env(service).items():
            for password in _URL_PASSWORD.findall(value):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", password), (name, key)
                checked += 1
            if not _SECRET_NAME.search(key) or (key, value) in _EMULATOR_DUMMIES:
                continue
            if key.endswith(("_FILE", "_DIR", "_OWNER")) and not _URL_PASSWORD.search(value):
                continue  # where the generated secrets are kept and who owns them: not secrets
            checked += 1
            required = re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value)
            optional = re.fullmatch(r"\$\{[A-Z_]+:-\}", value) and name == "airflow-secrets"
            generated = key.endswith("_CMD") and value.startswith(f"cat {SECRETS_DIR}/")
            assert required or optional or generated, (name, key, value)
    assert checked > 20
    raw = COMPOSE.read_text()
    assert '"admin": "admin"' not in raw and "local-only" not in raw


def _secrets_script(services) -> str:
    return services["airflow-secrets"]["command"][1]


def _run_secrets(services, folder: Path, **given: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # `python` with cryptography
        "DRILL_SECRETS_DIR": str(folder),
        "SECRETS_OWNER": f"{os.getuid()}:{os.getgid()}",
        **given,
    }
    return subprocess.run(
        ["bash", "-c", _secrets_script(services)], env=env, capture_output=True, text=True, check=False
    )


def test_the_secrets_service_generates_each_secret_once(services, tmp_path):
    from cryptography.fernet import Fernet

    folder = tmp_path / "secrets"
    first = _run_secrets(services, folder)
    assert first.returncode == 0, first.stderr
    values = {p.name: p.read_text() for p in folder.iterdir()}
    assert set(values) == {"fernet_key", "api_secret_key", "jwt_secret", "admin_password"}
    Fernet(values["fernet_key"].encode())  # a real, non-empty Fernet key
    assert len(values["jwt_secret"]) >= 64 and len(values["api_secret_key"]) >= 40
    assert len(values["admin_password"]) >= 24 and len(set(values.values())) == 4
    for value in values.values():  # nothing printed, no trailing newline for `cat` to hand over
        assert value not in first.stdout + first.stderr and value == value.strip()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}

    again = _run_secrets(services, folder)
    assert again.returncode == 0 and again.stdout == ""
    assert {p.name: p.read_text() for p in folder.iterdir()} == values  # kept across `up`s

    own_key = Fernet.generate_key().decode()
    given = _run_secrets(services, folder, FERNET_KEY=own_key, ADMIN_PASSWORD="chosen-in-dot-env")
    assert given.returncode == 0
    assert (folder / "fernet_key").read_text() == own_key
    assert (folder / "admin_password").read_text() == "chosen-in-dot-env"
    assert (folder / "jwt_secret").read_text() == values["jwt_secret"]


def test_airflow_reads_exactly_the_generated_secrets(services):
    written = set(re.findall(r"^keep (\w+) ", _secrets_script(services), re.MULTILINE))
    assert written == {"fernet_key", "api_secret_key", "jwt_secret", "admin_password"}
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        env = _env(services[name])
        assert env["AIRFLOW__CORE__FERNET_KEY_CMD"] == f"cat {SECRETS_DIR}/fernet_key", name
        assert env["AIRFLOW__API__SECRET_KEY_CMD"] == f"cat {SECRETS_DIR}/api_secret_key", name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET_CMD"] == f"cat {SECRETS_DIR}/jwt_secret", name
        for plain in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
            assert plain not in env, (name, plain)  # a plain variable, even empty, would win over _CMD
    assert _env(services["airflow-secrets"])["DRILL_SECRETS_DIR"] == SECRETS_DIR
    assert f"{SECRETS_DIR}/admin_password" in _command(services["airflow-init"])  # the UI login


def test_the_image_ships_only_the_product(services):
    sources = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY"):
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources.update(parts[:-1])
    assert sources == {"requirements.txt", "constraints.txt", "include", "dags", "plugins"}
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"devtools/", "tests/", "bench/", ".env"} <= ignored
    # the simulator is dev tooling: mounted from the working copy, importable there
    simulator = services["simulator"]
    assert "./devtools:/opt/airflow/devtools:ro" in simulator["volumes"]
    assert "/opt/airflow" in _env(simulator)["PYTHONPATH"].split(":")
    for name in AIRFLOW_SERVICES:
        assert not any("devtools" in v for v in services[name]["volumes"]), name
