"""Pure rules of the rollout, without a database or Airflow: param validation and placement."""

from __future__ import annotations

import uuid

import pytest

from drill_progress import ids
from drill_progress.rollout import add_drill as rollout
from drill_progress.rollout.add_drill import Placement, RolloutRefused, RolloutRequest, resolve_placement, validate

GOOD = {"drill_slug": "04-breathing", "drill_name": "Breathing: 5 minutes (advanced)"}


def test_valid_params_make_a_request():
    request = validate(**GOOD, place_in_sequence=1, only_employer_ids=[3, 1, 3], dry_run=True)
    assert request == RolloutRequest("04-breathing", "Breathing: 5 minutes (advanced)", 1, (1, 3), True)
    assert request.employer_filter == ["1", "3"]


def test_defaults_and_lenient_forms():
    request = validate("a", "  Übung für Anfänger  ")
    assert request == RolloutRequest("a", "Übung für Anfänger", None, None, False)
    assert validate("x" * 64, "n", only_employer_ids=[]).employer_ids is None  # empty list = no filter
    assert validate("0-1", "n", place_in_sequence=0).place == 0


HOSTILE = [
    pytest.param({"drill_slug": "x'; DROP TABLE users; --"}, "drill_slug", id="slug-sql-injection"),
    pytest.param({"drill_slug": "<script>alert(1)</script>"}, "drill_slug", id="slug-script"),
    pytest.param({"drill_slug": "New-Drill"}, "drill_slug", id="slug-upper-case"),
    pytest.param({"drill_slug": "a" * 65}, "drill_slug", id="slug-too-long"),
    pytest.param({"drill_slug": ""}, "drill_slug", id="slug-empty"),
    pytest.param({"drill_slug": "-lead"}, "drill_slug", id="slug-leading-dash"),
    pytest.param({"drill_slug": "abc\n"}, "drill_slug", id="slug-trailing-newline"),
    pytest.param({"drill_slug": "a b"}, "drill_slug", id="slug-space"),
    pytest.param({"drill_slug": None}, "drill_slug", id="slug-missing"),
    pytest.param({"drill_slug": 4}, "drill_slug", id="slug-not-a-string"),
    pytest.param({"drill_name": "x'; DROP TABLE users; --"}, "drill_name", id="name-sql-injection"),
    pytest.param({"drill_name": "<script>alert(1)</script>"}, "drill_name", id="name-script"),
    pytest.param({"drill_name": "n" * 121}, "drill_name", id="name-too-long"),
    pytest.param({"drill_name": ""}, "drill_name", id="name-empty"),
    pytest.param({"drill_name": "   "}, "drill_name", id="name-blank"),
    pytest.param({"drill_name": None}, "drill_name", id="name-missing"),
    pytest.param({"drill_name": "tab\there"}, "drill_name", id="name-control-char"),
    pytest.param({"drill_name": ["list"]}, "drill_name", id="name-not-a-string"),
    pytest.param({"place_in_sequence": -1}, "place_in_sequence", id="place-negative"),
    pytest.param({"place_in_sequence": 10_000}, "place_in_sequence", id="place-huge"),
    pytest.param({"place_in_sequence": "1"}, "place_in_sequence", id="place-string"),
    pytest.param({"place_in_sequence": 1.5}, "place_in_sequence", id="place-float"),
    pytest.param({"place_in_sequence": True}, "place_in_sequence", id="place-bool"),
    pytest.param({"only_employer_ids": "1,2"}, "only_employer_ids", id="employers-string"),
    pytest.param({"only_employer_ids": [1, "2"]}, "only_employer_ids", id="employers-mixed"),
    pytest.param({"only_employer_ids": [-1]}, "only_employer_ids", id="employers-negative"),
    pytest.param({"only_employer_ids": [True]}, "only_employer_ids", id="employers-bool"),
    pytest.param({"only_employer_ids": list(range(1001))}, "only_employer_ids", id="employers-too-many"),
    pytest.param({"dry_run": "false"}, "dry_run", id="dry-run-string"),
    pytest.param({"dry_run": 0}, "dry_run", id="dry-run-int"),
]


@pytest.mark.parametrize(("change", "named"), HOSTILE)
def test_invalid_or_hostile_params_are_refused_with_a_clear_message(change, named):
    with pytest.raises(RolloutRefused) as refused:
        validate(**{**GOOD, **change})
    message = str(refused.value)
    assert message.startswith("drill rollout refused, nothing was changed:")
    assert named in message
    assert len(message) < 400  # a hostile value is shown truncated


def test_all_problems_are_named_at_once():
    with pytest.raises(RolloutRefused) as refused:
        validate("BAD", "", place_in_sequence=-2)
    assert all(name in str(refused.value) for name in ("drill_slug", "drill_name", "place_in_sequence"))


def _req(place=None, name="Drill"):
    return RolloutRequest("new", name, place, None, False)


@pytest.mark.parametrize(
    ("place", "last", "expected"),
    [
        (None, 2, Placement(3, "append")),
        (3, 2, Placement(3, "append")),
        (99, 2, Placement(3, "append")),  # past the end: appended, no gap
        (2, 2, Placement(2, "insert")),  # before the last drill: shifts it
        (0, 2, Placement(0, "insert")),
        (None, None, Placement(0, "append")),  # empty catalog
        (5, None, Placement(0, "append")),
    ],
)
def test_placement_of_a_new_drill(place, last, expected):
    assert resolve_placement(_req(place), None, None, last) == expected


@pytest.mark.parametrize(
    ("place", "existing", "last"),
    [
        (None, 1, 3),
        (1, 1, 3),
        (None, 3, 3),
        (3, 3, 3),
        (99, 3, 3),
    ],
)
def test_a_drill_already_in_the_catalog_is_present(place, existing, last):
    assert resolve_placement(_req(place), "Drill", existing, last) == Placement(existing, "present")


@pytest.mark.parametrize(("place", "existing", "last"), [(0, 1, 3), (2, 1, 3), (99, 1, 3)])
def test_a_drill_is_never_moved(place, existing, last):
    with pytest.raises(RolloutRefused, match="already in the catalog at place"):
        resolve_placement(_req(place), "Drill", existing, last)


def test_a_drill_is_never_renamed():
    with pytest.raises(RolloutRefused, match="already in the catalog named 'Old'"):
        resolve_placement(_req(), "Old", 1, 3)


def test_from_params_takes_only_the_rollout_params():
    params = {"drill_slug": "s", "drill_name": "n", "place_in_sequence": None, "dry_run": False, "other": 1}
    assert rollout.from_params(params) == {"drill_slug": "s", "drill_name": "n", "dry_run": False}


def test_status_ids_are_the_projects_deterministic_ids():
    user_id = uuid.uuid4()
    assert ids.status_id(user_id, "s") == ids.status_id(str(user_id), "s") != ids.status_id(user_id, "t")
