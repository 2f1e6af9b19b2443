"""helm/values.yaml (the official Airflow chart's values for production) agrees with the contract
and the local stacks, keeps every secret out of the file, and only sets Airflow options that exist.
No cluster or helm binary needed: the file is read as YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from drill_progress import config

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "helm" / "values.yaml"


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _env(values: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in values["env"]}


def _pinned_airflow() -> str:
    line = next(x for x in (ROOT / "requirements.txt").read_text().splitlines() if x.startswith("apache-airflow=="))
    return line.split("==", 1)[1]


def test_the_contract_connections_and_variables_are_the_local_stacks(values):
    env = _env(values)
    for name, default in config.VARIABLE_DEFAULTS.items():
        assert env[f"AIRFLOW_VAR_{name.upper()}"] == default, name
    aws = json.loads(env[f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}"])
    assert aws["conn_type"] == "aws" and set(aws["extra"]) == {"region_name"}  # a role, no keys, no emulator
    assert not {"login", "password"} & set(aws)
    secret_envs = {item["envName"]: item for item in values["secret"]}
    db = secret_envs[f"AIRFLOW_CONN_{config.DB_CONN_ID.upper()}"]  # a password inside: from a Secret
    assert db["secretName"] and db["secretKey"]
    assert f"AIRFLOW_CONN_{config.DB_CONN_ID.upper()}" not in env
    assert "/opt/airflow/include" in env["PYTHONPATH"]


def test_celery_executor_autoscaled_by_keda_never_to_zero(values):
    assert values["executor"] == "CeleryExecutor"
    keda = values["workers"]["keda"]
    assert keda["enabled"] is True and keda["minReplicaCount"] >= 1
    cfg = values["config"]
    # every slot KEDA can add is usable: the scheduler's cap covers the largest fleet
    assert int(cfg["core"]["parallelism"]) >= keda["maxReplicaCount"] * int(cfg["celery"]["worker_concurrency"])
    assert values["triggerer"]["replicas"] >= 2 and values["dagProcessor"]["enabled"] is True
    assert values["pgbouncer"]["enabled"] is True
    assert cfg["logging"]["remote_logging"] == "True"  # workers come and go


_SECRET_VALUE_KEYS = {"fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey", "password", "pass", "brokerUrl"}


def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    else:
        yield path, node


def test_no_secret_is_written_in_the_values(values):
    for path, value in _leaves(values):
        if path and path[-1] in _SECRET_VALUE_KEYS:
            assert value in (None, ""), path
        if isinstance(value, str):
            assert not re.search(r"://[^:/@\s]+:[^@\s]+@", value), path  # no password inside a URL
    # Airflow's secrets and the metadata / broker URLs come from named Secrets
    assert (
        values["fernetKeySecretName"] and values["data"]["metadataSecretName"] and values["data"]["brokerUrlSecretName"]
    )
    from_secrets = {item["envName"] for item in values["secret"]}
    assert {"AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"} <= from_secrets
    for name in ("AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
        assert values["enableBuiltInSecretEnvVars"][name] is False  # ours, not a chart-generated one
    assert values["createUserJob"]["enabled"] is False  # its password would be a value
    assert values["apiServer"]["service"]["type"] == "ClusterIP"


def test_every_airflow_option_set_exists(values):
    import airflow
    from airflow.providers.celery.get_provider_info import get_provider_info

    template = Path(airflow.__file__).parent / "config_templates" / "config.yml"
    sections = {**yaml.safe_load(template.read_text()), **get_provider_info()["config"]}
    for section, options in values["config"].items():
        for key in options:
            assert key in (sections[section].get("options") or {}), f"[{section}] {key}"


def test_the_image_is_the_pinned_airflow(values):
    pinned = _pinned_airflow()
    assert values["airflowVersion"] == pinned
    assert values["images"]["airflow"]["tag"].startswith(f"{pinned}-")


def test_the_pipelines_metrics_get_the_statsd_exporter_mappings_compose_uses(values):
    """statsd.extraMappings turn the shard id, outbox source and table segments of the pipeline's
    metric names into labels (docs/metrics.md); docker-compose.yaml mounts the same rules."""
    from drill_progress import metrics

    assert values["statsd"]["enabled"] is True
    mapped = yaml.safe_load((ROOT / "helm" / "statsd-mappings.yaml").read_text())["mappings"]
    assert values["statsd"]["extraMappings"] == mapped
    assert [m["match"] for m in mapped][:3] == [
        f"airflow.{metrics.PREFIX}.ingest.*.*",
        f"airflow.{metrics.PREFIX}.outbox.*.*",
        f"airflow.{metrics.PREFIX}.maintenance.*.*",
    ]
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    exporter = compose["services"]["statsd-exporter"]
    assert "./helm/statsd-mappings.yaml:/etc/statsd-exporter/mappings.yaml:ro" in exporter["volumes"]
