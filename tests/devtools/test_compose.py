"""docker-compose.yaml agrees with the local stack (devtools.devstack) and the contract.

Docker is not needed: the file is parsed with PyYAML (anchors and `<<` merges resolved) and its
`${VAR:-default}` interpolations are resolved to their defaults, as `docker compose config` would
with no .env file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from devtools import devstack
from drill_progress import config

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
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value):
    """Resolve compose interpolation to defaults ($$ is a literal $)."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: m.group(2) or "", value.replace("$$", "\0")).replace("\0", "$")
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
                assert dep == "airflow-init"
    for name in (*AIRFLOW_SERVICES, "simulator"):
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    for backing in ("postgres", "drill-db", "aws", "redis"):
        assert services["airflow-init"]["depends_on"][backing]["condition"] == "service_healthy"


def test_connections_and_variables_are_the_local_stacks(services, local_env):
    """Same AIRFLOW_CONN_* / AIRFLOW_VAR_* names as `make up`, the contract's defaults, and
    connections that point at the compose services."""
    wanted = {k for k in local_env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    assert wanted == {f"AIRFLOW_CONN_{config.DB_CONN_ID.upper()}", f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}"} | {
        f"AIRFLOW_VAR_{name.upper()}" for name in config.VARIABLE_DEFAULTS
    }
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


def test_airflow_settings_match_the_local_stack_and_exist(services, local_env):
    import airflow

    template = Path(airflow.__file__).parent / "config_templates" / "config.yml"
    options = {
        (section, key)
        for section, body in yaml.safe_load(template.read_text()).items()
        for key in (body.get("options") or {})
    }
    env = _env(services["airflow-apiserver"])
    for name in env:
        if name.startswith("AIRFLOW__"):
            _, section, key = name.split("__", 2)
            if section == "CELERY":  # the celery provider's options: in the image, not in .venv
                continue
            assert (section.lower(), key.lower()) in options, name
    for same in ("AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"):
        assert env[same] == local_env[same]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == local_env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower()
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    # the passwords file the init service writes is the one the api-server reads
    init_script = _command(services["airflow-init"])
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] in init_script


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
