"""`drill_rollout` end to end via dag.test() against real PostgreSQL, and its trigger-form Params."""

from __future__ import annotations

import time

import pytest
from airflow_support import return_value
from airflow_support import run_state as _state
from rollout_seed import catalog, orders, seed_users, snapshot

from drill_progress.rollout import add_drill as rollout

MIDDLE = ["01-sample-drill", "04-new", "02-sample-drill", "03-sample-drill"]


def _summary(dag_run) -> dict:
    return return_value(dag_run, "roll_out_drill")


def _task_instance(dag_run):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
            .one()
        )


def test_dag_header_and_trigger_form(airflow_db):
    from airflow_support import load_dag

    dag = load_dag("drill_rollout")
    assert dag.schedule is None and dag.catchup is False and dag.max_active_runs == 1
    assert [t.task_id for t in dag.tasks] == ["roll_out_drill"]
    assert set(dag.params) == set(rollout.PARAM_NAMES)
    schemas = {name: dag.params.get_param(name).schema for name in rollout.PARAM_NAMES}
    for name in rollout.PARAM_NAMES:
        param = dag.params.get_param(name)
        assert param.schema.get("title") and param.description, name
    # the form validates what the package validates
    assert schemas["drill_slug"]["pattern"] == rollout.SLUG_PATTERN
    assert schemas["drill_name"]["pattern"] == rollout.NAME_PATTERN
    assert schemas["drill_name"]["maxLength"] == rollout.NAME_MAX_LENGTH
    assert schemas["place_in_sequence"]["maximum"] == rollout.MAX_PLACE
    assert schemas["only_employer_ids"]["maxItems"] == rollout.MAX_EMPLOYER_IDS
    # slug and name are required: no default
    assert not dag.params.get_param("drill_slug").has_value
    assert not dag.params.get_param("drill_name").has_value
    assert dag.params["dry_run"] is False and dag.params["place_in_sequence"] is None


def test_rollout_end_to_end_then_rerun_is_a_no_op(run_dag, airflow_env):
    db = airflow_env["db"]
    seed_users(db.engine, 40, employers=2)
    conf = {"drill_slug": "04-new", "drill_name": "New drill", "place_in_sequence": 1}

    first = run_dag("drill_rollout", conf=conf)
    assert _state(first) == "success"
    summary = _summary(first)
    assert {k: summary[k] for k in ("users_matched", "rows_inserted", "batches", "dry_run", "place_in_sequence")} == {
        "users_matched": 40,
        "rows_inserted": 40,
        "batches": 1,
        "dry_run": False,
        "place_in_sequence": 1,
    }
    assert "seconds" in summary
    assert [slug for slug, _, _ in catalog(db.engine)] == MIDDLE
    assert all(order == MIDDLE for order in orders(db.engine).values())

    before = snapshot(db.engine)
    second = run_dag("drill_rollout", conf=conf)
    assert _state(second) == "success" and _summary(second)["rows_inserted"] == 0
    assert snapshot(db.engine) == before


def test_dry_run_and_employer_filter_through_the_dag(run_dag, airflow_env):
    db = airflow_env["db"]
    seed_users(db.engine, 10, employers=2)
    before = snapshot(db.engine)
    dry = run_dag(
        "drill_rollout", conf={"drill_slug": "x", "drill_name": "X", "only_employer_ids": [1], "dry_run": True}
    )
    assert _state(dry) == "success"
    assert _summary(dry)["rows_would_insert"] == 5 and _summary(dry)["dry_run"] is True
    assert _summary(dry)["per_employer"] == {"1": {"users": 5, "would_insert": 5}}
    assert snapshot(db.engine) == before

    real = run_dag("drill_rollout", conf={"drill_slug": "x", "drill_name": "X", "only_employer_ids": [1]})
    assert _state(real) == "success" and _summary(real)["rows_inserted"] == 5
    assert _summary(real)["audience"] == ["1"]


@pytest.mark.parametrize(
    "conf",
    [
        pytest.param({"drill_name": "No slug"}, id="slug-missing"),
        pytest.param({"drill_slug": "x'; DROP TABLE users; --", "drill_name": "X"}, id="slug-sql-injection"),
        pytest.param({"drill_slug": "<script>", "drill_name": "X"}, id="slug-script"),
        pytest.param({"drill_slug": "Upper", "drill_name": "X"}, id="slug-upper"),
        pytest.param({"drill_slug": "s" * 65, "drill_name": "X"}, id="slug-too-long"),
        pytest.param({"drill_slug": "ok", "drill_name": ""}, id="name-empty"),
        pytest.param({"drill_slug": "ok", "drill_name": "<b>bold</b>"}, id="name-script"),
        pytest.param({"drill_slug": "ok", "drill_name": "X", "place_in_sequence": -1}, id="place-negative"),
        pytest.param({"drill_slug": "ok", "drill_name": "X", "only_employer_ids": ["1 OR 1=1"]}, id="employers-text"),
    ],
)
def test_the_form_schema_refuses_bad_params_before_a_run(run_dag, airflow_env, conf):
    from airflow.sdk.definitions.param import ParamValidationError

    db = airflow_env["db"]
    seed_users(db.engine, 3)
    before = snapshot(db.engine)
    with pytest.raises(ParamValidationError):
        run_dag("drill_rollout", conf=conf)
    assert snapshot(db.engine) == before


@pytest.mark.parametrize(
    "conf",
    [
        # passes the form's JSON-schema pattern (`$` matches before a final newline), not the package
        pytest.param({"drill_slug": "abc\n", "drill_name": "X"}, id="slug-trailing-newline"),
        # a valid form, but the slug is already in the catalog at another place
        pytest.param(
            {"drill_slug": "02-sample-drill", "drill_name": "02-sample-drill", "place_in_sequence": 0},
            id="catalog-conflict",
        ),
    ],
)
def test_a_refused_rollout_fails_at_once_without_retries(run_dag, airflow_env, conf):
    db = airflow_env["db"]
    seed_users(db.engine, 3)
    before = snapshot(db.engine)
    started = time.monotonic()
    dag_run = run_dag("drill_rollout", conf=conf)
    assert _state(dag_run) == "failed"
    ti = _task_instance(dag_run)
    assert _state(ti) == "failed" and ti.try_number == 1  # no retry: it would change nothing
    assert time.monotonic() - started < 25  # not waiting out retry delays
    assert snapshot(db.engine) == before
