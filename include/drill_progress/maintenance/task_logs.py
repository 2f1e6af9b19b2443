"""Pruning local task log files: Airflow has no built-in cleanup of `[logging] base_log_folder`.

Regular files older than the cutoff (by modification time) are deleted, then directories left
empty; symlinks are never followed nor deleted. A log being written has a fresh modification
time, and the cutoff is never later than the start of the maintenance run, so the logs of
running tasks (this one included) stay. In the Docker stack the workers share the mounted
`logs/` folder, so one run cleans them all; with remote logging, only the local copies go.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

from drill_progress import metrics

log = logging.getLogger(__name__)


def base_log_folder() -> Path:
    from airflow.sdk.configuration import conf

    return Path(conf.get("logging", "base_log_folder")).expanduser()


def prune_logs(folder: Path, cutoff: datetime, *, dry_run: bool) -> dict:
    """Delete files under `folder` last modified before `cutoff`, then emptied directories."""
    limit = cutoff.timestamp()
    files = size = directories = 0
    if not folder.is_dir():
        return {"folder": str(folder), "files": 0, "bytes": 0, "directories": 0, "dry_run": dry_run}
    touched: set[Path] = set()  # directories this run deleted something from
    for root, _dirnames, filenames in os.walk(folder, topdown=False, followlinks=False):
        directory = Path(root)
        for name in filenames:
            path = directory / name
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue  # gone meanwhile
            if path.is_symlink() or stat.st_mtime >= limit:
                continue
            files += 1
            size += stat.st_size
            if not dry_run:
                path.unlink(missing_ok=True)
                touched.add(directory)
        if dry_run or directory == folder:
            continue
        if directory in touched or directory.lstat().st_mtime < limit:
            try:
                directory.rmdir()  # only if empty: a directory a task just filled stays
            except OSError:
                continue
            directories += 1
            touched.add(directory.parent)
    verb = "would delete" if dry_run else "deleted"
    log.info("task logs under %s older than %s: %s %d files (%d bytes)", folder, cutoff.isoformat(), verb, files, size)
    if not dry_run:
        metrics.log_files_pruned(files)
    return {"folder": str(folder), "files": files, "bytes": size, "directories": directories, "dry_run": dry_run}
