"""The "Drill Progress" page of the Airflow UI (registered by plugins/drill_progress_plugin.py).

This package module is imported whenever Airflow loads plugins (any `airflow` command may), so
it imports nothing heavy and touches no database or connection: `lazy_app` is a tiny ASGI
callable that builds the real FastAPI app (drill_progress.ui.app) on its first request.
"""

from __future__ import annotations

import threading
from typing import Any

URL_PREFIX = "/drill-progress"
PAGE_NAME = "Drill Progress"


class LazyASGIApp:
    """An ASGI app whose FastAPI application is created on first use (in the api-server only)."""

    def __init__(self, factory: str = "drill_progress.ui.app:create_app") -> None:
        self._factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._app is None:
                import importlib

                module, _, name = self._factory.partition(":")
                self._app = getattr(importlib.import_module(module), name)()
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        app = self._app if self._app is not None else self._load()
        await app(scope, receive, send)

    def __repr__(self) -> str:  # shown by `airflow plugins` and the /api/v2/plugins endpoint
        return f"LazyASGIApp({self._factory})"


lazy_app = LazyASGIApp()
