"""Shared fixtures: a real PostgreSQL server and the moto AWS emulator on free loopback ports,
a migrated template database cloned per test, and an initialised Airflow home (SQLite metadata)
so DAGs run end to end with `dag.test()`.

Airflow reads its configuration when first imported, so the environment is set here, at import.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow_support import ROOT, load_dag

_HOME = Path(tempfile.mkdtemp(prefix="drill-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # the emulator's dummy credentials
    }
)
for _name in ("AIRFLOW_CONN_DRILL_PROGRESS_DB", "AIRFLOW_CONN_AWS_DEFAULT"):
    os.environ.pop(_name, None)


from devtools.services import MotoServer, PostgresServer, free_port  # noqa: E402
from drill_progress.db import make_engine  # noqa: E402
from drill_progress.setup import migrations  # noqa: E402

_db_counter = itertools.count(1)


def _world_traversable_tmpdir(prefix: str) -> Path:
    # PostgreSQL runs as an unprivileged user when we are root: it must reach its data dir.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def pg_server():
    base = _world_traversable_tmpdir("drill-pg-")
    server = PostgresServer(base / "data", free_port())
    server.start({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    yield server
    server.stop(mode="immediate")
    subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture(scope="session")
def migrated_template(pg_server) -> str:
    name = "drill_template"
    pg_server.create_database(name)
    engine = make_engine(pg_server.uri(name))
    migrations.apply_migrations(engine)
    engine.dispose()
    return name


@dataclass
class Database:
    name: str
    url: str  # postgresql://user:password@host:port/name, as an Airflow connection URI
    engine: object


def _new_database(pg_server, template: str | None):
    name = f"drill_test_{os.getpid()}_{next(_db_counter)}"
    pg_server.create_database(name, template=template)
    url = pg_server.uri(name)
    db = Database(name, url, make_engine(url))
    return db


@pytest.fixture
def drill_db(pg_server, migrated_template):
    """A fresh, fully migrated drill database for one test."""
    db = _new_database(pg_server, migrated_template)
    yield db
    db.engine.dispose()
    pg_server.drop_database(db.name)


@pytest.fixture
def empty_db(pg_server):
    """A fresh database with no schema at all."""
    db = _new_database(pg_server, None)
    yield db
    db.engine.dispose()
    pg_server.drop_database(db.name)


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer(free_port())
    server.start()
    yield server
    server.stop()


@dataclass
class Aws:
    endpoint_url: str
    kinesis: object
    dynamodb: object

    @property
    def airflow_conn(self) -> str:
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"region_name": "us-east-1", "endpoint_url": self.endpoint_url},
            }
        )


@pytest.fixture
def aws(moto_server):
    """The AWS emulator, emptied for this test, with boto3 clients pointed at it."""
    import boto3

    moto_server.reset()
    kwargs = {
        "endpoint_url": moto_server.endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return Aws(moto_server.endpoint_url, boto3.client("kinesis", **kwargs), boto3.client("dynamodb", **kwargs))


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's own metadata database (SQLite, local only), migrated once per session."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)
    return _HOME


@pytest.fixture
def airflow_env(monkeypatch, airflow_db, drill_db, aws):
    """The contract's connections pointed at this test's database and the emulator."""
    from drill_progress import connections

    monkeypatch.setenv("AIRFLOW_CONN_DRILL_PROGRESS_DB", drill_db.url)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws.airflow_conn)
    yield {"db": drill_db, "aws": aws}
    connections.dispose_engines()


@pytest.fixture
def run_dag(airflow_env):
    """Run a DAG end to end in-process with dag.test(); returns the DagRun."""

    def _run(dag_id: str, conf: dict | None = None, logical_date=None):
        dag = load_dag(dag_id)
        return dag.test(run_conf=conf, logical_date=logical_date)

    return _run


@pytest.fixture
def statsd_metrics():
    """Airflow's metrics on (StatsD) towards a real UDP listener on loopback, for this test only;
    yields the listener (statsd_support.StatsdListener)."""
    from statsd_support import MetricsOn

    on = MetricsOn()
    yield on.listener
    on.close()


# Hypothesis: the same examples on every run (CI must not flake), no example database written
# into the repository. HYPOTHESIS_PROFILE=explore draws new, more examples.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
_hypothesis_settings.register_profile("explore", max_examples=5000, database=None, deadline=None)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
