"""The rebuild tests reuse the ingestion tests' helpers (tests/ingest/ingest_support.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))
