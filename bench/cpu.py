"""CPU time of a PostgreSQL server's processes (Linux /proc), to split a benchmark's CPU between
Python and PostgreSQL: on a machine where both share the cores, the CPU each spends per event says
how many cores a throughput needs, whatever the machine the figure was measured on."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((Path(datadir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def server_cpu_seconds(datadir: Path) -> float | None:
    """User + system CPU seconds of the server (postmaster and every process it started, alive now);
    None where /proc is not there. Processes that ended since are not counted: sample around work
    done by connections that stay open (a pool's) and by the server's own processes."""
    root = postmaster_pid(datadir)
    if root is None or not Path("/proc").is_dir():
        return None
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if fields is None or (int(entry.name) != root and fields[1] != str(root)):
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return total
