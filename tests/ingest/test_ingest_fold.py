"""The state rules of contract §3, one by one, on in-memory user trees (no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from ingest_support import PHONE, batch, event, example, example_bytes, instance_id

from drill_progress import ids
from drill_progress.ingest import events as ev
from drill_progress.ingest.fold import CatalogDrill, apply_batch, fold, new_user

CATALOG = [CatalogDrill("01-sample-drill", 0), CatalogDrill("02-sample-drill", 1), CatalogDrill("03-sample-drill", 2)]
INSTANCE = "12174c1f-8d4a-4982-ad38-8a4ea5e13050"


def parsed(name_or_doc) -> ev.Batch:
    if isinstance(name_or_doc, str):
        return ev.parse_record(example_bytes(name_or_doc))
    return ev.parse_record(json.dumps(name_or_doc).encode())


def at(doc_name: str) -> str:
    """The last event's time as the fold copies it: the validated RFC 3339 text."""
    return ev._timestamp(example(doc_name)["events"][-1]["created_time"], "created_time")


def instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def run(*names):
    users: dict = {}
    result = fold(users, [parsed(n) for n in names], CATALOG)
    return users.get(PHONE), result


def status(user, slug):
    return next(s for s in user.statuses if s.drill_slug == slug)


def test_new_user_gets_profile_seq_and_one_status_per_catalog_drill():
    user, result = run("user_validation_failed")
    assert result.applied == 1 and result.skipped == 0
    assert user.is_new and user.changed
    assert user.user_id == str(ids.user_id(PHONE))
    assert user.seq == 2
    assert user.profile == example("user_validation_failed")["events"][0]["user_profile"]
    assert user.last_interacted_time == at("user_validation_failed")
    assert [(s.drill_slug, s.place_in_sequence) for s in user.statuses] == [
        ("01-sample-drill", 0),
        ("02-sample-drill", 1),
        ("03-sample-drill", 2),
    ]
    assert [s.id for s in user.statuses] == [str(ids.status_id(user.user_id, d.drill_slug)) for d in CATALOG]
    assert all(s.started_time is None and s.completed_time is None for s in user.statuses)
    assert result.commands == []


def test_new_user_statuses_follow_catalog_order_not_list_order():
    user = new_user(PHONE, list(reversed(CATALOG)))
    assert [s.place_in_sequence for s in user.statuses] == [0, 1, 2]


def test_user_validated_commands_first_catalog_drill_with_event_key():
    _user, result = run("user_validated")
    [cmd] = result.commands
    assert cmd.command_type == "START_DRILL"
    assert cmd.payload == {"phone_number": PHONE, "drill_slug": "01-sample-drill"}
    assert cmd.idempotency_key == "ingest:" + example("user_validated")["events"][0]["event_id"]


def test_drill_started_sets_status_and_adds_instance():
    user, _ = run("user_validated", "drill_started")
    s = status(user, "01-sample-drill")
    assert s.started_time == at("drill_started") and s.drill_instance_id == INSTANCE
    inst = user.instances[INSTANCE]
    assert inst.is_new and inst.is_valid and inst.drill_slug == "01-sample-drill"
    assert inst.current_prompt_slug == "q1" and inst.current_prompt_start_time == at("drill_started")
    assert inst.current_prompt_last_response_time is None and inst.completion_time is None
    assert inst.phone_number == PHONE


def test_completed_prompt_sets_last_response_time():
    user, _ = run("drill_started", "completed_prompt")
    assert user.instances[INSTANCE].current_prompt_last_response_time == at("completed_prompt")
    assert user.instances[INSTANCE].current_prompt_slug == "q1"


def test_advanced_to_next_prompt_moves_prompt_and_clears_response():
    user, _ = run("drill_started", "completed_prompt", "advanced_to_next_prompt")
    inst = user.instances[INSTANCE]
    assert inst.current_prompt_slug == "q2"
    assert inst.current_prompt_start_time == at("advanced_to_next_prompt")
    assert inst.current_prompt_last_response_time is None


def test_failed_prompt_sets_last_response_time():
    user, _ = run("drill_started", "advanced_to_next_prompt", "failed_prompt")
    assert user.instances[INSTANCE].current_prompt_last_response_time == at("failed_prompt")


def test_reminder_triggered_only_touches_user():
    user, result = run("drill_started", "reminder_triggered")
    assert user.seq == 7 and user.last_interacted_time == at("reminder_triggered")
    assert user.instances[INSTANCE].current_prompt_slug == "q1"
    assert result.commands == []


def test_drill_completed_completes_status_and_instance():
    user, _ = run("drill_started", "completed_prompt", "drill_completed")
    assert status(user, "01-sample-drill").completed_time == at("drill_completed")
    inst = user.instances[INSTANCE]
    assert inst.completion_time == at("drill_completed")
    assert (inst.current_prompt_slug, inst.current_prompt_start_time, inst.current_prompt_last_response_time) == (
        None,
        None,
        None,
    )
    assert inst.is_valid


def test_next_drill_requested_commands_next_drill_after_the_batch():
    _user, result = run("drill_started", "drill_completed", "next_drill_requested")
    [cmd] = result.commands
    assert cmd.payload["drill_slug"] == "02-sample-drill"
    assert cmd.idempotency_key == "ingest:" + example("next_drill_requested")["events"][0]["event_id"]


def test_next_drill_requested_uses_state_after_whole_batch():
    i1, i2 = instance_id(PHONE, 1), instance_id(PHONE, 2)
    b = batch(
        1,
        [
            event("DRILL_STARTED", 1, instance=i1, drill_slug="01-sample-drill"),
            event("NEXT_DRILL_REQUESTED", 2),
            event("DRILL_STARTED", 3, instance=i2, drill_slug="02-sample-drill"),
        ],
    )
    user = new_user(PHONE, CATALOG)
    [cmd] = apply_batch(user, parsed(b), CATALOG)
    assert cmd.payload["drill_slug"] == "03-sample-drill"


def test_next_drill_when_all_started_is_first_incomplete_and_none_when_all_complete():
    user = new_user(PHONE, CATALOG)
    seq = 0
    events = []
    for n, d in enumerate(CATALOG):
        i = instance_id(PHONE, n)
        events += [event("DRILL_STARTED", 10 * n, instance=i, drill_slug=d.drill_slug)]
        if n != 1:
            events += [event("DRILL_COMPLETED", 10 * n + 1, instance=i)]
    seq += 1
    apply_batch(user, parsed(batch(seq, events)), CATALOG)
    [cmd] = apply_batch(user, parsed(batch(2, [event("NEXT_DRILL_REQUESTED", 50)])), CATALOG)
    assert cmd.payload["drill_slug"] == "02-sample-drill"
    apply_batch(user, parsed(batch(3, [event("DRILL_COMPLETED", 51, instance=instance_id(PHONE, 1))])), CATALOG)
    assert apply_batch(user, parsed(batch(4, [event("NEXT_DRILL_REQUESTED", 52)])), CATALOG) == []


def test_opted_out_with_instance_clears_start_and_invalidates():
    doc = example("opted_out")
    doc["events"][0]["drill_instance_id"] = INSTANCE
    user = new_user(PHONE, CATALOG)
    apply_batch(user, parsed("drill_started"), CATALOG)
    apply_batch(user, parsed(doc), CATALOG)
    s = status(user, "01-sample-drill")
    assert s.started_time is None and s.drill_instance_id == INSTANCE
    assert user.instances[INSTANCE].is_valid is False


def test_opted_out_without_instance_changes_nothing_more():
    user, result = run("drill_started", "opted_out")
    assert status(user, "01-sample-drill").started_time == at("drill_started")
    assert user.instances[INSTANCE].is_valid
    assert user.seq == 10 and result.commands == []


def test_user_validated_resets_statuses_and_invalidates_earlier_instances_only():
    i1, i2, i3 = (instance_id(PHONE, n) for n in (1, 2, 3))
    user = new_user(PHONE, CATALOG)
    apply_batch(
        user,
        parsed(
            batch(
                1,
                [
                    event("DRILL_STARTED", 1, instance=i1, drill_slug="01-sample-drill"),
                    event("DRILL_COMPLETED", 2, instance=i1),
                ],
            )
        ),
        CATALOG,
    )
    cmds = apply_batch(
        user,
        parsed(
            batch(
                2,
                [
                    event("DRILL_STARTED", 3, instance=i2, drill_slug="02-sample-drill"),
                    event("USER_VALIDATED", 4),
                    event("DRILL_STARTED", 5, instance=i3, drill_slug="03-sample-drill"),
                ],
            )
        ),
        CATALOG,
    )
    assert [c.payload["drill_slug"] for c in cmds] == ["01-sample-drill"]
    assert status(user, "01-sample-drill").values() == (None, None, None)
    assert status(user, "02-sample-drill").values() == (None, None, None)
    assert status(user, "03-sample-drill").drill_instance_id == i3
    assert not user.instances[i1].is_valid and not user.instances[i2].is_valid
    assert user.instances[i3].is_valid


def test_events_on_unknown_instance_are_noops_for_that_part():
    other = instance_id("+19990000000", 1)
    user = new_user(PHONE, CATALOG)
    apply_batch(
        user,
        parsed(
            batch(
                1,
                [
                    event("COMPLETED_PROMPT", 1, instance=other),
                    event("ADVANCED_TO_NEXT_PROMPT", 2, instance=other),
                    event("DRILL_COMPLETED", 3, instance=other),
                    event("OPTED_OUT", 4, instance=other),
                ],
            )
        ),
        CATALOG,
    )
    assert user.instances == {}
    assert all(s.values() == (None, None, None) for s in user.statuses)
    assert user.seq == 1 and instant(user.last_interacted_time) == datetime(2026, 3, 2, 15, 4, tzinfo=UTC)


def test_every_event_sets_last_interacted_to_last_events_time_and_profile_to_last_events():
    b = batch(1, [event("REMINDER_TRIGGERED", 9), event("REMINDER_TRIGGERED", 3)])
    b["events"][1]["user_profile"] = {"validated": False, "name": "Ann"}
    user = new_user(PHONE, CATALOG)
    apply_batch(user, parsed(b), CATALOG)
    assert instant(user.last_interacted_time) == datetime(2026, 3, 2, 15, 3, tzinfo=UTC)
    assert user.profile == {"validated": False, "name": "Ann"}


def test_seq_guard_skips_duplicates_and_late_batches_whole():
    users: dict = {}
    stream = [
        parsed(n)
        for n in (
            "user_validated",
            "drill_started",
            "user_validated",
            "drill_started",
            "completed_prompt",
            "user_validation_failed",
        )
    ]
    result = fold(users, stream, CATALOG)
    assert (result.applied, result.skipped) == (3, 3)
    user = users[PHONE]
    assert user.seq == 4
    assert len(result.commands) == 1  # the duplicate USER_VALIDATED commands nothing
    assert user.instances[INSTANCE].current_prompt_last_response_time == at("completed_prompt")


def test_seq_guard_against_stored_seq():
    user = new_user(PHONE, CATALOG)
    user.is_new = False
    user.seq = 9
    assert apply_batch(user, parsed("drill_completed"), CATALOG) is None  # seq 8
    assert apply_batch(user, parsed("next_drill_requested"), CATALOG) is None  # seq 9: equal
    assert not user.changed
    assert apply_batch(user, parsed("opted_out"), CATALOG) == []  # seq 10
    assert user.seq == 10 and user.changed


def test_seq_compares_as_numbers_not_strings():
    user = new_user(PHONE, CATALOG)
    apply_batch(user, parsed(batch(9, [event("REMINDER_TRIGGERED", 1)])), CATALOG)
    assert apply_batch(user, parsed(batch(10, [event("REMINDER_TRIGGERED", 2)])), CATALOG) == []
    big = batch(1, [event("REMINDER_TRIGGERED", 3)])
    big["seq"] = "9" * 30
    assert apply_batch(user, parsed(big), CATALOG) == []
    assert user.seq == int("9" * 30)


def test_the_whole_contract_story():
    user, result = run(
        *[
            "user_validated",
            "user_validation_failed",
            "drill_started",
            "completed_prompt",
            "advanced_to_next_prompt",
            "failed_prompt",
            "reminder_triggered",
            "drill_completed",
            "next_drill_requested",
            "opted_out",
            "multi_event_batch",
        ]
    )
    assert result.applied == 11
    assert [c.payload["drill_slug"] for c in result.commands] == ["01-sample-drill", "02-sample-drill"]
    assert status(user, "01-sample-drill").completed_time == at("drill_completed")
    assert status(user, "02-sample-drill").completed_time == at("multi_event_batch")
    assert status(user, "03-sample-drill").started_time is None
    assert len(user.instances) == 2 and user.seq == 11


# --- one START_DRILL per drill and batch; drills for some employers only (issue 14) -------------------

TARGETED = [  # a drill for employer 7 only, placed first
    CatalogDrill("00-special", 0, ("7", "9")),
    CatalogDrill("01-sample-drill", 1),
    CatalogDrill("02-sample-drill", 2),
    CatalogDrill("03-sample-drill", 3),
]


def _profile(employer) -> dict:
    account = None if employer is None else {"employer_id": employer, "unit_id": 1}
    return {**example("user_validated")["events"][0]["user_profile"], "account_info": account}


def _starts(commands) -> list[tuple[str, str]]:
    return [(c.payload["drill_slug"], c.idempotency_key) for c in commands]


def test_one_start_drill_per_drill_and_batch_keyed_by_its_first_cause():
    validated_then_next = batch(1, [event("USER_VALIDATED", 1), event("NEXT_DRILL_REQUESTED", 2)])
    user = new_user(PHONE, CATALOG)
    first_key = "ingest:" + validated_then_next["events"][0]["event_id"]
    assert _starts(apply_batch(user, parsed(validated_then_next), CATALOG)) == [("01-sample-drill", first_key)]

    twice = batch(2, [event("USER_VALIDATED", 3), event("USER_VALIDATED", 4), event("NEXT_DRILL_REQUESTED", 5)])
    first_key = "ingest:" + twice["events"][0]["event_id"]
    assert _starts(apply_batch(user, parsed(twice), CATALOG)) == [("01-sample-drill", first_key)]

    # different drills are still each asked for once
    i1 = instance_id(PHONE, 1)
    moved_on = batch(
        3,
        [
            event("USER_VALIDATED", 6),
            event("DRILL_STARTED", 7, instance=i1, drill_slug="01-sample-drill"),
            event("NEXT_DRILL_REQUESTED", 8),
        ],
    )
    keys = ["ingest:" + moved_on["events"][i]["event_id"] for i in (0, 2)]
    assert _starts(apply_batch(user, parsed(moved_on), CATALOG)) == [
        ("01-sample-drill", keys[0]),
        ("02-sample-drill", keys[1]),
    ]


@pytest.mark.parametrize(
    ("employer", "rows", "first"),
    [
        (7, ["00-special", "01-sample-drill", "02-sample-drill", "03-sample-drill"], "00-special"),
        ("9", ["00-special", "01-sample-drill", "02-sample-drill", "03-sample-drill"], "00-special"),  # 9 and "9"
        (8, ["01-sample-drill", "02-sample-drill", "03-sample-drill"], "01-sample-drill"),
        (None, ["01-sample-drill", "02-sample-drill", "03-sample-drill"], "01-sample-drill"),
        ("7x", ["01-sample-drill", "02-sample-drill", "03-sample-drill"], "01-sample-drill"),
    ],
)
def test_a_new_user_gets_a_targeted_drill_only_in_its_audience_and_it_first_only_then(employer, rows, first):
    users: dict = {}
    doc = batch(1, [event("USER_VALIDATED", 1, user_profile=_profile(employer))])
    result = fold(users, [parsed(doc)], TARGETED)
    user = users[PHONE]
    assert [s.drill_slug for s in user.statuses] == rows
    assert [s.place_in_sequence for s in user.statuses] == [
        d.place_in_sequence for d in TARGETED if d.drill_slug in rows
    ]
    assert _starts(result.commands) == [(first, "ingest:" + doc["events"][0]["event_id"])]


def test_a_user_created_before_its_employer_was_known_gets_its_targeted_drill_when_validated():
    users: dict = {}
    failed = batch(1, [event("USER_VALIDATION_FAILED", 1, user_profile=_profile(None))])
    fold(users, [parsed(failed)], TARGETED)
    assert [s.drill_slug for s in users[PHONE].statuses] == ["01-sample-drill", "02-sample-drill", "03-sample-drill"]
    users[PHONE].is_new = False  # written: the next micro-batch loads it back
    for status in users[PHONE].statuses:
        status.is_new = False
    validated = batch(2, [event("USER_VALIDATED", 2, user_profile=_profile(7))])
    result = fold(users, [parsed(validated)], TARGETED)
    user = users[PHONE]
    assert [(s.drill_slug, s.place_in_sequence, s.is_new) for s in user.statuses] == [
        ("00-special", 0, True),
        ("01-sample-drill", 1, False),
        ("02-sample-drill", 2, False),
        ("03-sample-drill", 3, False),
    ]
    assert user.statuses[0].id == str(ids.status_id(user.user_id, "00-special"))
    assert _starts(result.commands) == [("00-special", "ingest:" + validated["events"][0]["event_id"])]


def test_the_next_drill_ignores_a_row_of_a_drill_outside_the_users_audience():
    """A stray row (the drill's audience recorded later, or the user changed employer) is history."""
    everyone = [CatalogDrill(d.drill_slug, d.place_in_sequence) for d in TARGETED]
    user = new_user(PHONE, everyone, "8")  # got the row before the audience was recorded
    assert user.statuses[0].drill_slug == "00-special"
    doc = batch(1, [event("NEXT_DRILL_REQUESTED", 1, user_profile=_profile(8))])
    assert _starts(apply_batch(user, parsed(doc), TARGETED)) == [
        ("01-sample-drill", "ingest:" + doc["events"][0]["event_id"])
    ]
    again = batch(2, [event("NEXT_DRILL_REQUESTED", 2, user_profile=_profile(7))])  # now employer 7's
    assert _starts(apply_batch(user, parsed(again), TARGETED))[0][0] == "00-special"
