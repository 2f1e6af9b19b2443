"""Deterministic ids: the text fast path is exactly uuid.uuid5 of the same names."""

from __future__ import annotations

import random
import uuid

from drill_progress import ids


def test_uuid5_text_is_uuid5():
    rng = random.Random(7)
    names = [
        "",
        "user:+15551234567",
        "ü:é",
        *("".join(rng.choice("ab+09:-ü") for _ in range(rng.randint(0, 40))) for _ in range(5000)),
    ]
    for name in names:
        assert ids.uuid5_text(name) == str(uuid.uuid5(ids.NAMESPACE, name))


def test_text_ids_match_the_uuid_ids():
    phone, user = "+15551234567", "9d5ed678-fe57-4cca-b6b9-5b5cd3c9b3c4"
    assert ids.user_id_text(phone) == str(ids.user_id(phone))
    assert ids.phone_number_id_text(phone) == str(ids.phone_number_id(phone))
    assert ids.status_id_text(user, "01-sample-drill") == str(ids.status_id(user, "01-sample-drill"))
    assert ids.status_id_text(uuid.UUID(user), "x") == str(ids.status_id(user, "x"))


def test_the_naming_rules_are_fixed():
    """Changing a name would change every id the pipeline has written."""
    phone, user = "+15551234567", "9d5ed678-fe57-4cca-b6b9-5b5cd3c9b3c4"
    assert ids.user_id(phone) == uuid.uuid5(ids.NAMESPACE, "user:" + phone)
    assert ids.phone_number_id(phone) == uuid.uuid5(ids.NAMESPACE, "phone:" + phone)
    assert ids.status_id(user, "01-sample-drill") == uuid.uuid5(ids.NAMESPACE, f"{user}:01-sample-drill")
