"""Only the parts of a tree the events' rules read are loaded (fold.tree_needs): the end state is
the one loading whole trees reaches, whatever the events."""

from __future__ import annotations

import random
import time

import pytest
from ingest_support import PHONE, batch, checksum, event, instance_id, raw_records

from drill_progress.db import make_engine
from drill_progress.ingest import events as ev
from drill_progress.ingest import fold as fold_module
from drill_progress.ingest import pipeline, store
from drill_progress.ingest.fold import CatalogDrill, User, apply_batch, tree_needs

STREAM = "dialog-events"
SHARD = "shardId-000000000000"
CATALOG = [CatalogDrill("01-sample-drill", 0), CatalogDrill("02-sample-drill", 1), CatalogDrill("03-sample-drill", 2)]
PHONES = [f"+1555300{n:04d}" for n in range(5)]
SLUGS = [d.drill_slug for d in CATALOG]


def random_stream(seed: int, batches_per_phone: int = 12) -> list[dict]:
    """Random batches of every event type, for a few users, instances shared across batches."""
    rng = random.Random(seed)
    per_phone = {}
    for phone in PHONES:
        docs = []
        for seq in range(1, batches_per_phone + 1):
            events = []
            for _ in range(rng.randint(1, 3)):
                minute = seq * 10 + len(events)
                kind = rng.choice(sorted(ev.EVENT_TYPES))
                instance = instance_id(phone, rng.randint(1, 3))
                if kind == "DRILL_STARTED":
                    events.append(event(kind, minute, phone, instance, drill_slug=rng.choice(SLUGS)))
                elif kind in ("ADVANCED_TO_NEXT_PROMPT", "COMPLETED_PROMPT", "FAILED_PROMPT", "DRILL_COMPLETED"):
                    events.append(event(kind, minute, phone, instance))
                elif kind == "OPTED_OUT":
                    events.append(event(kind, minute, phone, rng.choice([instance, None])))
                else:
                    events.append(event(kind, minute, phone))
            docs.append(batch(seq, events, phone))
        per_phone[phone] = docs
    return [per_phone[p][i] for i in range(batches_per_phone) for p in PHONES]


def whole_trees(batches):
    needs = fold_module.TreeNeeds()
    for b in batches:
        needs.statuses.add(b.phone_number)
        needs.valid_instances.add(b.phone_number)
        needs.instance_ids.update(e.drill_instance_id for e in b.events if e.drill_instance_id)
    return needs


def _checksum(pg_server, docs, size) -> str:
    name = f"ingest_needs_{time.monotonic_ns()}"
    pg_server.create_database(name, template="drill_template")
    engine = make_engine(pg_server.uri(name))
    try:
        applier = pipeline.Applier(engine, STREAM, SHARD)
        raws = raw_records(docs)
        applier.apply_pages((raws[i : i + size], 0) for i in range(0, len(raws), size))
        return checksum(engine)
    finally:
        engine.dispose()
        pg_server.drop_database(name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loading_only_what_the_rules_read_ends_where_whole_trees_end(pg_server, migrated_template, monkeypatch, seed):
    docs = random_stream(seed)
    selective = _checksum(pg_server, docs, 4)
    monkeypatch.setattr(store, "tree_needs", whole_trees)
    assert selective == _checksum(pg_server, docs, 4)


def test_prompt_answers_load_no_statuses(drill_db):
    i1 = instance_id(PHONE, 1)
    pipeline.apply_micro_batch(
        drill_db.engine,
        STREAM,
        SHARD,
        raw_records(
            [batch(1, [event("USER_VALIDATED", 1), event("DRILL_STARTED", 2, instance=i1, drill_slug=SLUGS[0])])]
        ),
    )
    answers = ev.parse_record(raw_records([batch(2, [event("COMPLETED_PROMPT", 3, instance=i1)])])[0].data)
    with drill_db.engine.begin() as conn:
        _catalog, users = store.load_micro_batch(conn, [answers])
    user = users[PHONE]
    assert (user.statuses_loaded, user.valid_instances_loaded, user.statuses) == (False, False, [])
    assert list(user.instances) == [i1]


@pytest.mark.parametrize("kind", sorted(fold_module.READS_STATUSES))
def test_a_rule_reading_statuses_that_were_not_loaded_raises(kind):
    user = User("u", PHONE, 1, statuses_loaded=False, valid_instances_loaded=kind != "USER_VALIDATED")
    extra = {"drill_slug": SLUGS[0]} if kind == "DRILL_STARTED" else {}
    doc = batch(2, [event(kind, 1, instance=instance_id(PHONE, 1), **extra)])
    parsed = ev.parse_record(raw_records([doc])[0].data)
    with pytest.raises(AssertionError, match="not loaded"):
        apply_batch(user, parsed, CATALOG)


def test_tree_needs_names_users_and_instances():
    i1 = instance_id(PHONE, 1)
    docs = [
        batch(1, [event("COMPLETED_PROMPT", 1, instance=i1)]),
        batch(1, [event("USER_VALIDATED", 1, PHONES[0])], PHONES[0]),
        batch(1, [event("NEXT_DRILL_REQUESTED", 1, PHONES[1])], PHONES[1]),
    ]
    needs = tree_needs([ev.parse_record(r.data) for r in raw_records(docs)])
    assert needs.statuses == {PHONES[0], PHONES[1]}
    assert needs.valid_instances == {PHONES[0]}
    assert needs.instance_ids == {i1}
