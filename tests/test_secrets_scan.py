"""No credentials or secrets committed: a scan over every file git tracks (or would track)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}\b"),
    "generic secret assignment": re.compile(
        r"(?i)\b(secret_key|jwt_secret|api_key|aws_secret_access_key)\b\s*[:=]\s*['\"]?([A-Za-z0-9/+_\-]{24,})"
    ),
    "password in a URL": re.compile(r"[a-z+]+://[^:/\s'\"]+:([^@/\s'\"]+)@"),
}
# Credentials that are public on purpose: local emulators and loopback development databases.
ALLOWED_VALUES = {
    "testing",
    "postgres",
    "airflow",
    "admin",
    "drill",
    "drill_progress",
    "test",
    "password",
    "{password}",
    "{self.password}",
    "${POSTGRES_PASSWORD:-airflow}",
    "pw",
    "secret",
}


def _files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).is_file()]


def test_no_secrets_in_the_repository():
    findings = []
    for path in _files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for name, pattern in PATTERNS.items():
            for match in pattern.finditer(text):
                value = match.group(match.lastindex or 0)
                if value.strip("'\"") in ALLOWED_VALUES or value.startswith(("$", "{", "<")):
                    continue
                findings.append(f"{path.relative_to(ROOT)}: {name}: {match.group(0)[:60]}")
    assert not findings, "possible secrets committed:\n" + "\n".join(findings)


def test_scanner_catches_a_planted_secret():
    planted = "AWS_KEY=AKIA" + "ABCDEFGHIJKLMNOP"
    assert PATTERNS["AWS access key id"].search(planted)
    assert PATTERNS["password in a URL"].search("postgresql://u:" + "s3cr3tPassw0rd@db/x")
