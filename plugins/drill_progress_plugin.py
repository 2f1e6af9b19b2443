"""Registers the "Drill Progress" page in the Airflow 3 UI. Registration only: the app lives in
drill_progress.ui and is built lazily on its first request (this module is imported by every
process that loads plugins, so it imports nothing heavy and touches no database).

- fastapi_apps: the page and its JSON endpoints, mounted by the api-server under /drill-progress.
  Every route requires an authenticated Airflow user (Airflow does not protect plugin routes).
- external_views: a "Drill Progress" entry in the UI's navigation (Browse menu); with url_route
  set, the UI embeds the page at /plugin/drill-progress.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from drill_progress.ui import PAGE_NAME, URL_PREFIX, lazy_app


class DrillProgressPlugin(AirflowPlugin):
    name = "drill_progress"
    fastapi_apps = [{"app": lazy_app, "url_prefix": URL_PREFIX, "name": PAGE_NAME}]
    external_views = [
        {
            "name": PAGE_NAME,
            "href": URL_PREFIX.lstrip("/") + "/",  # relative to the UI's base URL
            "url_route": "drill-progress",
            "destination": "nav",
            "category": "browse",
        }
    ]
