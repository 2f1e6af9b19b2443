"""Database URLs as the benchmarks' direct psycopg connections take them."""

from __future__ import annotations

import re


def libpq_uri(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://..., postgresql+psycopg2://...) as libpq takes it."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)
