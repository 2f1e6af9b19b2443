"""Task log files under [logging] base_log_folder: old files and the directories they leave empty go;
fresh files, symlinks and the folder itself stay."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from drill_progress.maintenance.task_logs import prune_logs


def _file(path, size: int, age_days: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    moment = time.time() - age_days * 86400
    os.utime(path, (moment, moment))


def test_old_files_and_emptied_directories_go(tmp_path):
    run = tmp_path / "dag_id=a" / "run_id=old" / "task_id=t"
    _file(run / "attempt=1.log", 100, 40)
    _file(run / "attempt=2.log", 20, 35)
    _file(tmp_path / "dag_id=a" / "run_id=new" / "task_id=t" / "attempt=1.log", 7, 1)
    _file(tmp_path / "dag_processor" / "2026-01-01" / "dags.log", 50, 60)
    (tmp_path / "dag_processor" / "latest").symlink_to(tmp_path / "dag_processor" / "2026-01-01")
    os.utime(tmp_path / "dag_processor" / "latest", (0, 0), follow_symlinks=False)
    cutoff = datetime.now(UTC) - timedelta(days=30)

    dry = prune_logs(tmp_path, cutoff, dry_run=True)
    assert (dry["files"], dry["bytes"], dry["directories"]) == (3, 170, 0)
    assert (run / "attempt=1.log").exists()

    done = prune_logs(tmp_path, cutoff, dry_run=False)
    assert (done["files"], done["bytes"]) == (3, 170)
    assert not (tmp_path / "dag_id=a" / "run_id=old").exists()  # task_id=t and run_id=old: 2 directories
    assert not (tmp_path / "dag_processor" / "2026-01-01").exists()
    assert done["directories"] == 3
    assert (tmp_path / "dag_id=a" / "run_id=new" / "task_id=t" / "attempt=1.log").exists()
    assert (tmp_path / "dag_processor" / "latest").is_symlink()  # never deleted nor followed
    assert tmp_path.exists()
    assert prune_logs(tmp_path, cutoff, dry_run=False)["files"] == 0


def test_a_fresh_empty_directory_stays_and_a_missing_folder_is_nothing_to_do(tmp_path):
    (tmp_path / "dag_id=b" / "run_id=just-created").mkdir(parents=True)  # a task about to write its log
    assert prune_logs(tmp_path, datetime.now(UTC) - timedelta(days=1), dry_run=False)["directories"] == 0
    assert (tmp_path / "dag_id=b" / "run_id=just-created").exists()
    assert prune_logs(tmp_path / "nope", datetime.now(UTC), dry_run=False)["files"] == 0
