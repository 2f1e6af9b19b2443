"""Fixtures of the UI tests: Airflow's own api-server app (create_app, with this repository's
plugins/ folder) and a test client whose drill database is the test's."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def airflow_app(airflow_db):
    from airflow.api_fastapi.app import create_app, purge_cached_app

    app = create_app("core")
    yield app
    purge_cached_app()


@pytest.fixture
def client(airflow_app, drill_db, monkeypatch):
    from fastapi.testclient import TestClient

    from drill_progress import connections

    monkeypatch.setenv("AIRFLOW_CONN_DRILL_PROGRESS_DB", drill_db.url)
    connections.dispose_engines()
    with TestClient(airflow_app, base_url="http://testserver") as test_client:
        yield test_client
    connections.dispose_engines()
