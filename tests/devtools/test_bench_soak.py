"""The soak benchmark's figures, without a stack: percentiles that keep unanswered probes, growth
slopes, hand-overs counted from run times, the RSS of a process tree read from /proc."""

from __future__ import annotations

import pytest

from bench import bench_soak, urls

T0 = 1_000_000.0


def _run(run_id, start, end, consume_start=None, consume_end=None):
    return {"run_id": run_id, "start": start, "end": end, "consume_start": consume_start, "consume_end": consume_end}


def test_unanswered_probes_count_as_the_timeout_and_flag_the_max():
    summary = bench_soak.latency_summary([0.2] * 98 + [None, 5.0], timeout=60.0)
    assert summary["probes"] == 100 and summary["unanswered"] == 1
    assert summary["p50"] == pytest.approx(0.2)
    assert summary["p99"] >= 5.0  # the unanswered probe is in the tail, not dropped
    assert summary["max"] == 60.0 and summary["max_is_lower_bound"]


def test_all_answered_max_is_the_slowest():
    summary = bench_soak.latency_summary([0.3, 0.1, 7.5, 0.2])
    assert summary["unanswered"] == 0 and summary["max"] == 7.5 and not summary["max_is_lower_bound"]
    assert bench_soak.latency_summary([])["p50"] is None


def test_slope_per_hour_is_least_squares():
    assert bench_soak.slope_per_hour([(0, 100), (1800, 110), (3600, 120)]) == pytest.approx(20)
    # noisy but flat: no growth
    assert bench_soak.slope_per_hour([(0, 10), (60, 12), (120, 10), (180, 12), (240, 10)]) == pytest.approx(0, abs=1)
    assert bench_soak.slope_per_hour([(0, 5)]) is None
    assert bench_soak.slope_per_hour([(10, 5), (10, 6)]) is None


def test_back_to_back_runs_are_handovers_inside_the_window_only():
    runs = [
        _run("r1", T0 - 100, T0 + 20, T0 - 95, T0 + 15),  # started before the soak: not a hand-over
        _run("r2", T0 + 25, T0 + 145, T0 + 32, T0 + 140),  # 5 s after r1 ended
        _run("r3", T0 + 150, None, T0 + 158, None),  # still running at the end
        _run("r4", T0 + 400, None),  # after the window
    ]
    found = bench_soak.handovers(runs, (T0, T0 + 300))
    assert [h["run_id"] for h in found] == ["r2", "r3"]
    assert found[0]["previous_run_id"] == "r1" and found[0]["overlap_s"] == pytest.approx(-5)
    # no shard task consumed from r1's last shard task end to r2's first shard task start
    assert found[0]["stall_window"] == (T0 + 15, T0 + 32)
    assert found[0]["consumers_gap_s"] == pytest.approx(17)


def test_overlapping_runs_are_handovers_and_a_late_restart_is_not():
    runs = [
        _run("a", T0 - 10, T0 + 121, T0 - 9, T0 + 120.5),
        _run("b", T0 + 119, T0 + 241, T0 + 120, T0 + 240),  # overlaps a: lease handed over in 0.5 s
        _run("c", T0 + 600, None),  # 359 s after b ended: a restart, not a hand-over
    ]
    found = bench_soak.handovers(runs, (T0, T0 + 900))
    assert [h["run_id"] for h in found] == ["b"]
    assert found[0]["overlap_s"] == pytest.approx(2)
    assert found[0]["consumers_gap_s"] == pytest.approx(-0.5)  # consumers overlapped
    assert found[0]["stall_window"] == (T0 + 120, T0 + 120.5)


def test_handover_without_task_times_falls_back_to_run_times():
    found = bench_soak.handovers([_run("a", T0 - 60, T0 + 10), _run("b", T0 + 12, None)], (T0, T0 + 60))
    assert found[0]["stall_window"] == (T0 + 10, T0 + 12)
    assert bench_soak.handovers([_run("a", None, None), _run("b", T0 + 1, None)], (T0, T0 + 60)) == []


def test_distance_to_the_nearest_handover_and_the_worst_probes():
    found = [{"stall_window": (T0 + 100, T0 + 105)}, {"stall_window": (T0 + 220, T0 + 222)}]
    assert bench_soak.distance_to_handover(T0 + 102, found) == 0
    assert bench_soak.distance_to_handover(T0 + 97, found) == pytest.approx(-3)
    assert bench_soak.distance_to_handover(T0 + 110, found) == pytest.approx(5)
    assert bench_soak.distance_to_handover(T0 + 200, found) == pytest.approx(-20)
    assert bench_soak.distance_to_handover(T0, []) is None
    probes = [
        {"put_at": T0 + 3, "latency": 0.2},
        {"put_at": T0 + 99, "latency": 6.5},
        {"put_at": T0 + 102, "latency": None},
        {"put_at": T0 + 150, "latency": 0.3},
    ]
    worst = bench_soak.worst_probes(probes, found, T0, count=2)
    assert worst == [
        {"offset_s": 102.0, "latency_s": None, "from_handover_s": 0.0},  # unanswered first
        {"offset_s": 99.0, "latency_s": 6.5, "from_handover_s": -1.0},
    ]


STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
Tgid:\t{pid}
Pid:\t{pid}
PPid:\t{ppid}
VmPeak:\t  300000 kB
VmRSS:\t   {rss} kB
Threads:\t4
"""


def _fake_proc(root, processes):
    for pid, (ppid, rss) in processes.items():
        (root / str(pid)).mkdir()
        text = STATUS.format(pid=pid, ppid=ppid, rss=rss)
        if rss is None:  # a kernel thread has no VmRSS line
            text = "\n".join(line for line in text.splitlines() if not line.startswith("VmRSS"))
        (root / str(pid) / "status").write_text(text)
    (root / "self").mkdir()  # not a pid
    (root / "meminfo").write_text("MemTotal: 1 kB\n")


def test_rss_of_a_process_tree_from_proc(tmp_path):
    # 10 (postmaster) -> 11, 12 (backends) -> 13; 20 another component; 2 a kernel thread
    _fake_proc(tmp_path, {10: (1, 1000), 11: (10, 200), 12: (10, 300), 13: (12, 50), 20: (1, 4000), 2: (0, None)})
    table = bench_soak._proc_table(tmp_path)
    assert table[10] == (1, 1000) and table[2] == (0, 0)
    assert bench_soak.tree_rss_kib(10, table) == 1550
    assert bench_soak.tree_rss_kib(12, table) == 350
    assert bench_soak.tree_rss_kib(20, table) == 4000
    assert bench_soak.tree_rss_kib(99, table) == 0  # gone since


def test_pss_of_a_process_tree_from_smaps_rollup(tmp_path):
    _fake_proc(tmp_path, {10: (1, 1000), 11: (10, 200), 12: (10, 300)})
    for pid, pss in ((10, 400), (11, 60)):  # 12 has gone since the table was read
        (tmp_path / str(pid) / "smaps_rollup").write_text(
            f"55d0-7ffe ---p 00000000 00:00 0  [rollup]\nRss:  {pid * 100} kB\nPss:  {pss} kB\nPss_Anon:  1 kB\n"
        )
    table = bench_soak._proc_table(tmp_path)
    assert bench_soak.tree_pss_kib(10, table, tmp_path) == 460
    assert bench_soak.tree_pss_kib(12, table, tmp_path) is None
    assert bench_soak.parse_pss_kib("Rss: 5 kB\n") is None


def test_the_live_process_table_holds_this_process():
    import os

    table = bench_soak.process_table()
    assert table[os.getpid()][0] == os.getppid()
    assert bench_soak.tree_rss_kib(os.getpid(), table) > 1000
    assert 0 < bench_soak.tree_pss_kib(os.getpid(), table) <= bench_soak.tree_rss_kib(os.getpid(), table)


def test_growth_figures_per_process_database_and_metadata_tables():
    samples = [
        {
            "t": 0,
            "rss_mib": {"scheduler": 300.0, "moto": 100},
            "pss_mib": {"scheduler": 100.0},
            "drill_db_mib": 10.0,
            "metadata_rows": {"dag_run": 2, "log": 100, "ab_user": 1},
        },
        {
            "t": 1800,
            "rss_mib": {"scheduler": 310.0, "moto": 100},
            "drill_db_mib": 15.0,
            "metadata_rows": {"dag_run": 3, "log": 150, "ab_user": 1},
        },
        {
            "t": 3600,
            "rss_mib": {"scheduler": 320.0},
            "pss_mib": {"scheduler": 130.0},
            "drill_db_mib": 20.0,
            "metadata_rows": {"dag_run": 4, "log": 200, "ab_user": 1},
        },
    ]
    rows = bench_soak.growth_figures(samples, "soak.celery", {"executor": "celery"})
    rss = {r["process"]: r for r in rows if r["metric"] == "soak.celery.rss_growth_mib_per_hour"}
    assert rss["scheduler"]["value"] == pytest.approx(20) and rss["scheduler"]["first_mib"] == 300
    assert rss["moto"]["value"] == 0 and rss["moto"]["samples"] == 2
    assert rss["scheduler"]["pss_mib_per_hour"] == pytest.approx(30) and rss["scheduler"]["pss_last_mib"] == 130
    assert "pss_mib_per_hour" not in rss["moto"]
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["soak.celery.drill_db_growth_mib_per_hour"]["value"] == pytest.approx(10)
    meta = by_metric["soak.celery.metadata_rows_per_hour"]
    assert meta["value"] == pytest.approx(102) and meta["first_rows"] == 103 and meta["last_rows"] == 205
    assert set(meta["tables"]) == {"dag_run", "log"}  # only the tables that changed
    assert meta["tables"]["log"] == {"per_hour": 100, "first": 100, "last": 200}
    assert all(r["executor"] == "celery" for r in rows)


def test_figures_name_celery_metrics_and_report_handovers():
    record = {
        "t0": T0,
        "t_end": T0 + 300,
        "probes": [{"put_at": T0 + 3 * i, "latency": 0.2} for i in range(99)] + [{"put_at": T0 + 130, "latency": 8.0}],
        "runs": [_run("a", T0 - 50, T0 + 125, T0 - 45, T0 + 124), _run("b", T0 + 128, None, T0 + 133, None)],
        "samples": [
            {"t": 0, "rss_mib": {"scheduler": 1.0}},
            {"t": 300, "rss_mib": {"scheduler": 1.0}, "errors": ["x"]},
        ],
    }
    rows = {r["metric"]: r for r in bench_soak.figures("celery", record, {"run_minutes": 2}, "bench/results/x.json")}
    assert rows["soak.celery.handovers"]["value"] == 1
    assert rows["soak.celery.handovers"]["scheduled_runs_started"] == 1
    assert rows["soak.celery.handovers"]["sample_errors"] == ["x"]
    worst = rows["soak.celery.latency.max_s"]["worst"][0]
    assert worst == {"offset_s": 130.0, "latency_s": 8.0, "from_handover_s": 0.0}
    assert rows["soak.celery.latency.p50_s"]["unanswered"] == 0
    assert rows["soak.celery.latency.p99_s"]["results_file"] == "bench/results/x.json"
    local = bench_soak.figures("local", record, {"run_minutes": 2}, "f")
    assert {r["metric"] for r in local} >= {"soak.latency.p50_s", "soak.handovers", "soak.rss_growth_mib_per_hour"}


def test_plain_uri_for_libpq():
    assert (
        urls.libpq_uri("postgresql+psycopg2://airflow:airflow@h:1/airflow")
        == "postgresql://airflow:airflow@h:1/airflow"
    )
