"""helm/values.yaml (the official Airflow chart's values for production) agrees with the contract
and the local stacks, keeps every secret out of the file, only sets Airflow options that exist, and
uses the key names of the chart version it pins (no key the chart renamed or deprecated).
No cluster, helm binary or network needed: the file is read as YAML. The chart's own
values.schema.json is not copied here; _RENAMED below is taken from its release notes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from drill_progress import config

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "helm" / "values.yaml"

# The official chart release the values are written for (docs/sizing.md says why this one).
CHART_VERSION = "1.22.0"

# Keys the official chart renamed or deprecated, up to CHART_VERSION: old path -> (new path, the
# chart release whose release notes deprecate it, the chart PR or 0 if none is named). From the
# chart's RELEASE_NOTES.rst (1.22.0 deprecates no key), checked against its values.schema.json:
# every key the schema describes as deprecated is here, only the top of each deprecated section
# (what is under it goes with it). The deprecated keys "are still working, but are deprecated and
# will be removed in a future version".
_RENAMED: dict[str, tuple[str, str, int]] = {
    # chart 1.19.0: the Celery worker settings (pod-template ones: also workers.kubernetes)
    "workers.replicas": ("workers.celery.replicas", "1.19.0", 59730),
    "workers.revisionHistoryLimit": ("workers.celery.revisionHistoryLimit", "1.19.0", 60056),
    "workers.args": ("workers.celery.args", "1.19.0", 60163),
    "workers.livenessProbe": ("workers.celery.livenessProbe", "1.19.0", 60186),
    "workers.updateStrategy": ("workers.celery.updateStrategy", "1.19.0", 60351),
    "workers.strategy": ("workers.celery.strategy", "1.19.0", 60354),
    "workers.podManagementPolicy": ("workers.celery.podManagementPolicy", "1.19.0", 60359),
    "workers.persistence": ("workers.celery.persistence", "1.19.0", 60238),
    # chart 1.20.0: the Celery worker settings (pod-template ones: also workers.kubernetes)
    "workers.command": ("workers.celery.command", "1.20.0", 60067),
    "workers.securityContexts": ("workers.celery.securityContexts", "1.20.0", 60396),
    "workers.containerLifecycleHooks": ("workers.celery.containerLifecycleHooks", "1.20.0", 61369),
    "workers.kerberosSidecar": ("workers.celery.kerberosSidecar", "1.20.0", 61881),
    "workers.kerberosInitContainer": ("workers.celery.kerberosInitContainer", "1.20.0", 60751),
    "workers.terminationGracePeriodSeconds": ("workers.celery.terminationGracePeriodSeconds", "1.20.0", 61892),
    "workers.nodeSelector": ("workers.celery.nodeSelector", "1.20.0", 61957),
    "workers.podDisruptionBudget": ("workers.celery.podDisruptionBudget", "1.20.0", 61414),
    "workers.keda": ("workers.celery.keda", "1.20.0", 61820),
    "workers.resources": ("workers.celery.resources", "1.20.0", 61890),
    # chart 1.21.0: the Celery worker settings (pod-template ones: also workers.kubernetes)
    "workers.safeToEvict": ("workers.celery.safeToEvict", "1.21.0", 61915),
    "workers.hostAliases": ("workers.celery.hostAliases", "1.21.0", 61960),
    "workers.priorityClassName": ("workers.celery.priorityClassName", "1.21.0", 61961),
    "workers.runtimeClassName": ("workers.celery.runtimeClassName", "1.21.0", 61962),
    "workers.schedulerName": ("workers.celery.schedulerName", "1.21.0", 62030),
    "workers.serviceAccount": ("workers.celery.serviceAccount", "1.21.0", 64730),
    "workers.extraContainers": ("workers.celery.extraContainers", "1.21.0", 64739),
    "workers.extraInitContainers": ("workers.celery.extraInitContainers", "1.21.0", 64741),
    "workers.extraVolumes": ("workers.celery.extraVolumes", "1.21.0", 64746),
    "workers.affinity": ("workers.celery.affinity", "1.21.0", 64860),
    "workers.tolerations": ("workers.celery.tolerations", "1.21.0", 64976),
    "workers.topologySpreadConstraints": ("workers.celery.topologySpreadConstraints", "1.21.0", 64980),
    "workers.podAnnotations": ("workers.celery.podAnnotations", "1.21.0", 65027),
    "workers.labels": ("workers.celery.labels", "1.21.0", 65030),
    "workers.env": ("workers.celery.env", "1.21.0", 65056),
    "workers.extraVolumeMounts": ("workers.celery.extraVolumeMounts", "1.21.0", 65059),
    "workers.extraPorts": ("workers.celery.extraPorts", "1.21.0", 61919),
    "workers.volumeClaimTemplates": ("workers.celery.volumeClaimTemplates", "1.21.0", 62048),
    "workers.waitForMigrations": ("workers.celery.waitForMigrations", "1.21.0", 62054),
    "workers.hpa": ("workers.celery.hpa", "1.21.0", 64734),
    "workers.annotations": ("workers.celery.annotations", "1.21.0", 64982),
    "workers.logGroomerSidecar": ("workers.celery.logGroomerSidecar", "1.21.0", 65033),
    # other sections
    "workers.securityContext": ("workers.celery.securityContexts", "1.20.0", 62729),
    "webserver.defaultUser": ("createUserJob", "1.19.0", 59767),
    "registry.secretName": ("imagePullSecrets", "1.19.0", 58094),
    "registry.connection": ("imagePullSecrets (a Secret made beforehand)", "1.19.0", 58094),
    "dags.gitSync.readinessProbe": ("dags.gitSync.recommendedProbeSetting", "1.20.0", 62334),
    "ingress.enabled": ("ingress.web.enabled / ingress.flower.enabled", "1.6.0", 0),
    "ingress.web.host": ("ingress.web.hosts", "1.2.0", 0),
    "ingress.flower.host": ("ingress.flower.hosts", "1.2.0", 0),
    "ingress.web.tls": ("ingress.web.hosts[*].tls", "1.4.0", 0),
    "ingress.flower.tls": ("ingress.flower.hosts[*].tls", "1.4.0", 0),
    "ingress.apiServer.host": ("ingress.apiServer.hosts", "1.20.0", 62490),
    "ingress.apiServer.tls": ("ingress.apiServer.hosts[*].tls", "1.20.0", 62490),
    "ingress.statsd.host": ("ingress.statsd.hosts", "1.20.0", 62490),
    "ingress.pgbouncer.host": ("ingress.pgbouncer.hosts", "1.20.0", 62490),
    "webserver.extraNetworkPolicies": ("webserver.networkPolicy.ingress.from", "1.1.0", 0),
    "flower.extraNetworkPolicies": ("flower.networkPolicy.ingress.from", "1.1.0", 0),
    # every pod's securityContext: securityContexts (.pod / .container) instead (warned since 1.20.0)
    "securityContext": ("securityContexts", "1.20.0", 62729),
    "scheduler.securityContext": ("scheduler.securityContexts", "1.20.0", 62729),
    "triggerer.securityContext": ("triggerer.securityContexts", "1.20.0", 62729),
    "dagProcessor.securityContext": ("dagProcessor.securityContexts", "1.20.0", 62729),
    "webserver.securityContext": ("webserver.securityContexts", "1.20.0", 62729),
    "flower.securityContext": ("flower.securityContexts", "1.20.0", 62729),
    "statsd.securityContext": ("statsd.securityContexts", "1.20.0", 62729),
    "redis.securityContext": ("redis.securityContexts", "1.20.0", 62729),
    "cleanup.securityContext": ("cleanup.securityContexts", "1.20.0", 62729),
    "createUserJob.securityContext": ("createUserJob.securityContexts", "1.20.0", 62729),
    "migrateDatabaseJob.securityContext": ("migrateDatabaseJob.securityContexts", "1.20.0", 62729),
    "dags.gitSync.securityContext": ("dags.gitSync.securityContexts", "1.20.0", 62729),
}


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _env(values: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in values["env"]}


def _key_paths(node: dict, prefix: str = "") -> set[str]:
    """Every mapping key's dotted path (lists are values: their items are not keys of the chart)."""
    paths = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict):
            paths |= _key_paths(value, f"{path}.")
    return paths


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
    keda = values["workers"]["celery"]["keda"]  # not workers.keda, deprecated
    assert keda["enabled"] is True and keda["minReplicaCount"] == 2 and keda["maxReplicaCount"] == 8
    assert keda["usePgbouncer"] is True
    cfg = values["config"]
    # every slot KEDA can add is usable: the scheduler's cap covers the largest fleet
    assert int(cfg["core"]["parallelism"]) >= keda["maxReplicaCount"] * int(cfg["celery"]["worker_concurrency"])
    assert values["triggerer"]["replicas"] >= 2 and values["dagProcessor"]["enabled"] is True
    assert values["pgbouncer"]["enabled"] is True
    assert cfg["logging"]["remote_logging"] == "True"  # workers come and go


def test_no_key_the_pinned_chart_renamed_or_deprecated(values):
    used = _key_paths(values)
    stale = {
        old: f"{old} -> {new} (chart {release}" + (f", apache/airflow#{pr})" if pr else ")")
        for old, (new, release, pr) in _RENAMED.items()
        if old in used
    }
    assert stale == {}


def test_every_worker_setting_is_a_celery_workers(values):
    # the chart >= 1.20 layout: workers.celery for the Celery workers (workers.kubernetes would be
    # KubernetesExecutor's pod template, which the values do not use)
    assert set(values["workers"]) == {"celery"}
    celery = values["workers"]["celery"]
    assert set(celery) == {"keda", "persistence", "resources", "terminationGracePeriodSeconds", "serviceAccount"}
    assert celery["persistence"] == {"enabled": False}  # a Deployment, which KEDA scales
    assert celery["resources"] == {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "4Gi"}}
    assert celery["terminationGracePeriodSeconds"] == 900  # a stopping worker finishes its tasks first
    # the workers and the triggerer run tasks and triggers against AWS: both assume the tasks' role
    # (IRSA); only annotations, no custom name (chart 1.22.0's role bindings ignore it, #67261)
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/drill-progress-airflow-tasks"}
    assert celery["serviceAccount"] == {"annotations": role}
    assert values["triggerer"]["serviceAccount"] == {"annotations": role}


def test_the_chart_version_is_pinned_where_operators_read_it():
    install = f"apache-airflow/airflow --version {CHART_VERSION}"
    assert install in VALUES.read_text()
    assert install in (ROOT / "docs" / "sizing.md").read_text()


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
    from airflow.providers.openlineage.get_provider_info import get_provider_info as openlineage_info

    template = Path(airflow.__file__).parent / "config_templates" / "config.yml"
    sections = {
        **yaml.safe_load(template.read_text()),
        **get_provider_info()["config"],
        **openlineage_info()["config"],
    }
    for section, options in values["config"].items():
        for key in options:
            assert key in (sections[section].get("options") or {}), f"[{section}] {key}"


def test_lineage_is_configured_as_in_the_local_stack(values, tmp_path):
    from devtools import devstack

    local = devstack.openlineage_env(devstack.Settings.from_env({"DRILL_STATE_DIR": str(tmp_path)}), {})
    assert {k: str(v).lower() for k, v in values["config"]["openlineage"].items()} == {
        key.removeprefix("AIRFLOW__OPENLINEAGE__").lower(): value.lower()
        for key, value in local.items()
        if key != "AIRFLOW__OPENLINEAGE__TRANSPORT"  # production: the lineage team's backend, from a Secret
    }


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
