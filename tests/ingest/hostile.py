"""Hypothesis strategies for hostile stream records: any bytes, and JSON shaped like an event batch
whose every field may be wrong in every way (deep nesting, every Unicode category including control
characters, NUL and lone surrogates, huge and negative numbers, extreme dates and offsets, strings
up to the 1 MiB record limit), next to the fields' valid forms so that many records get deep into
validation and some are accepted.
"""

from __future__ import annotations

import json
import operator
import uuid

from hypothesis import strategies as st

from drill_progress.ingest import events as ev

# Any character at all: every category, control characters, U+0000 and lone surrogates (the
# characters that break storage or encoding drawn often, not left to chance).
SPECIAL_CHARS = st.sampled_from(
    ["\x00", "\ud800", "\x00", "\udfff", "\x00", "\x1f", "\x7f", "\u2028", "\ufeff", "\uffff", '"', "\\"]
)
ANY_CHAR = st.characters()
EVENT_TYPES = sorted(ev.EVENT_TYPES)
# Drill instance ids never drawn twice: an instance id that another user already owns is a real
# (and handled) conflict in the database, not something the edge can see.
UNIQUE_UUIDS = st.builds(lambda: str(uuid.uuid4()))
DROPS = st.sampled_from([None] * 30 + list(range(12)))  # which key drop_one drops (mostly none)


def texts(max_size: int = 40, min_size: int = 0) -> st.SearchStrategy[str]:
    """Any text, half of the time with one of SPECIAL_CHARS in it."""
    plain = st.text(ANY_CHAR, min_size=min_size, max_size=max_size)
    half = max(0, (max_size - 1) // 2)
    poisoned = st.builds(
        lambda a, c, b: (a + c + b)[:max_size] if len(a + c + b) >= min_size else c * min_size,
        st.text(ANY_CHAR, max_size=half),
        SPECIAL_CHARS,
        st.text(ANY_CHAR, max_size=half),
    )
    return st.one_of(plain, poisoned)


def big_texts() -> st.SearchStrategy[str]:
    """One character repeated up to past the 1 MiB record limit (Hypothesis draws characters one
    by one, so long strings are built rather than drawn)."""
    return st.builds(operator.mul, ANY_CHAR, st.sampled_from([1_000, 100_000, 500_000, 1_100_000]))


def numbers() -> st.SearchStrategy[object]:
    return st.one_of(
        st.integers(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def scalars() -> st.SearchStrategy[object]:
    return st.one_of(st.none(), st.booleans(), numbers(), texts())


def json_values(max_leaves: int = 12) -> st.SearchStrategy[object]:
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts(8), inner, max_size=4)),
        max_leaves=max_leaves,
    )


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def deep_values() -> st.SearchStrategy[object]:
    return st.builds(nested, st.integers(min_value=1, max_value=1_500), scalars())


def maybe(valid: st.SearchStrategy[object], *, rarely: st.SearchStrategy[object] | None = None) -> st.SearchStrategy:
    """Mostly (29 times in 30) the valid form; else anything at all, or a targeted hostile form."""
    hostile = json_values(4) if rarely is None else st.one_of(json_values(4), rarely)
    return st.sampled_from([valid] * 29 + [hostile]).flatmap(lambda chosen: chosen)  # shrinks towards valid


def drop_one(doc: object, n: int | None) -> object:
    """`doc` without its n-th key, when it has one (a required field missing, now and then)."""
    if isinstance(doc, dict) and n is not None and n < len(doc):
        doc = dict(doc)
        del doc[list(doc)[n]]
    return doc


def with_unknown_keys(known: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    """`known` plus up to two keys of any text holding any value (the known keys win)."""
    unknown = st.dictionaries(texts(8), maybe(json_values(6), rarely=deep_values()), max_size=2)
    return st.builds(lambda k, u: {**u, **k} if isinstance(k, dict) else k, known, unknown)


def uuids() -> st.SearchStrategy[str]:
    valid = st.uuids().map(str)
    return maybe(
        valid,
        rarely=st.one_of(
            valid.map(str.upper),
            st.uuids().map(lambda u: u.hex),
            st.uuids().map(lambda u: "{" + str(u) + "}"),
            texts(40),
        ),
    )


def timestamps() -> st.SearchStrategy[str]:
    """RFC 3339-ish text over the whole range: years 0000-9999, impossible days, extreme offsets."""

    def build(year, month, day, hour, minute, second, fraction, offset):
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{offset}"

    offsets = st.one_of(
        st.sampled_from(["Z", "z", "+00:00", "-23:59", "+23:59", "+24:00", "", "+5"]),
        st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 99), st.integers(0, 99)),
    )
    fractions = st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=30).map(lambda d: "." + d))
    extreme = st.builds(
        build,
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        fractions,
        offsets,
    )
    usual = st.builds(
        build,
        st.integers(2020, 2030),
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        fractions,
        st.sampled_from(["Z", "+00:00", "-05:00"]),
    )
    return maybe(usual, rarely=extreme)


def phones() -> st.SearchStrategy[str]:
    usual = st.integers(15550000000, 15559999999).map(lambda n: f"+{n}")
    return maybe(usual, rarely=st.one_of(texts(40), big_texts()))


def slugs() -> st.SearchStrategy[str]:
    usual = st.sampled_from(["01-sample-drill", "02-sample-drill", "03-sample-drill", "q1", "q2"])
    return maybe(usual, rarely=st.one_of(texts(210), big_texts()))


def profiles() -> st.SearchStrategy[object]:
    account = st.fixed_dictionaries(
        {},
        optional={
            "employer_id": maybe(st.integers(0, 20), rarely=json_values()),
            "unit_id": maybe(st.integers(0, 9), rarely=deep_values()),
        },
    )
    usual = st.fixed_dictionaries(
        {"validated": maybe(st.booleans())},
        optional={
            "opted_out": maybe(st.booleans()),
            "is_demo": maybe(st.booleans()),
            "name": maybe(st.one_of(st.none(), texts(20)), rarely=big_texts()),
            "language": maybe(st.sampled_from(["en", "es", None])),
            "account_info": maybe(st.one_of(st.none(), account)),
        },
    )
    return maybe(with_unknown_keys(usual), rarely=deep_values())


def prompts() -> st.SearchStrategy[object]:
    return maybe(st.fixed_dictionaries({"slug": slugs()}, optional={"messages": json_values(3)}))


def events() -> st.SearchStrategy[object]:
    def build(kind, fields):
        return {**fields, "event_type": kind}

    fields = st.fixed_dictionaries(
        {
            "event_id": uuids(),
            "phone_number": phones(),
            "created_time": timestamps(),
            "user_profile": profiles(),
            "drill_instance_id": maybe(UNIQUE_UUIDS, rarely=st.none()),
            "drill": maybe(
                st.fixed_dictionaries(
                    {"slug": slugs(), "name": maybe(texts(20))},
                    optional={"prompts": maybe(st.lists(prompts(), max_size=3))},
                )
            ),
            "first_prompt": prompts(),
            "prompt": prompts(),
            "response": maybe(texts(30), rarely=big_texts()),
            "abandoned": maybe(st.booleans()),
            "code_validation_payload": maybe(st.fixed_dictionaries({"valid": st.booleans()})),
        },
        optional={"schema_version": maybe(st.just(1), rarely=numbers())},
    )
    kinds = maybe(st.sampled_from(EVENT_TYPES), rarely=texts(20))
    return st.builds(drop_one, st.builds(build, kinds, with_unknown_keys(fields)), DROPS)


def batch_docs() -> st.SearchStrategy[object]:
    """JSON documents shaped like an event batch (and sometimes not shaped at all)."""
    batch = st.fixed_dictionaries(
        {
            "batch_id": uuids(),
            "seq": maybe(st.integers(1, 10**6).map(str), rarely=texts(35)),
            "phone_number": phones(),
            "created_time": timestamps(),
            "events": maybe(st.lists(events(), min_size=1, max_size=3), rarely=st.lists(events(), max_size=0)),
        }
    )
    batch = st.builds(drop_one, with_unknown_keys(batch), DROPS)
    other = st.one_of(json_values(), deep_values())
    return st.sampled_from([batch] * 5 + [schema_valid_docs()] * 4 + [other]).flatmap(lambda chosen: chosen)


CLEAN_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)


def _place(doc: dict, field: str, value: object) -> dict:
    """`doc` with one field of its first event (or the batch) set to `value`."""
    event = doc["events"][0]
    if field == "phone_number":
        doc["phone_number"] = value
    elif field in ("drill.slug", "drill.name"):
        event["drill"][field.split(".")[1]] = value
    elif field in ("first_prompt.slug", "prompt.slug"):
        event[field.split(".", maxsplit=1)[0]]["slug"] = value
    elif field == "response":
        event["response"] = value
    elif field == "profile key":
        event["user_profile"][value if isinstance(value, str) else "k"] = 1
    else:  # a profile value, known or not
        event["user_profile"][field.removeprefix("profile.")] = value
    return doc


def schema_valid_docs() -> st.SearchStrategy[dict]:
    """Batches the JSON Schema accepts, clean but for ONE field holding something PostgreSQL or
    Python may refuse: a string with NUL, a surrogate or controls, a deep or huge JSON value. The
    line between what the schema allows and what can be stored, which the edge must police."""

    def clean(kind, phone, when, name, instance, drill, prompt, seq):
        event = {
            "event_id": str(uuid.uuid4()),
            "event_type": kind,
            "phone_number": phone,
            "created_time": when,
            "user_profile": {"validated": True, "name": name, "account_info": {"employer_id": 1}},
            "drill_instance_id": instance,
            "response": name,
            "abandoned": False,
            "drill": {"slug": drill, "name": name},
            "first_prompt": {"slug": prompt},
            "prompt": {"slug": prompt},
            "code_validation_payload": {"valid": True},
        }
        return {
            "batch_id": str(uuid.uuid4()),
            "seq": str(seq),
            "phone_number": phone,
            "created_time": when,
            "events": [event],
        }

    slug = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=20)
    docs = st.builds(
        clean,
        st.sampled_from(EVENT_TYPES),
        st.integers(15550000000, 15559999999).map("+{}".format),
        st.just("2026-03-02T15:00:00Z"),
        CLEAN_TEXT,
        UNIQUE_UUIDS,
        slug,
        slug,
        st.integers(1, 10**9),
    )
    fields = st.sampled_from(
        [
            "phone_number",
            "drill.slug",
            "drill.name",
            "first_prompt.slug",
            "prompt.slug",
            "response",
            "profile key",
            "profile.name",
            "profile.language",
            "profile.extra",
        ]
    )
    bad_strings = st.builds(lambda a, c, b: f"+1{a[:10]}{c}{b[:10]}5", CLEAN_TEXT, SPECIAL_CHARS, CLEAN_TEXT)
    bad_values = st.sampled_from([bad_strings] * 6 + [deep_values(), numbers(), json_values(8)]).flatmap(
        lambda chosen: chosen
    )
    return st.builds(_place, docs, fields, bad_values)


def encode(doc: object, ascii_only: bool) -> bytes:
    """JSON bytes of `doc`, as a producer might write them: ASCII escapes (so a lone surrogate is
    a \\udxxx escape), or raw UTF-8 (so a lone surrogate becomes invalid UTF-8); NaN and Infinity
    as Python writes them (not JSON)."""
    text = json.dumps(doc, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def corrupt(data: bytes, where: int, byte: int) -> bytes:
    if not data:
        return bytes([byte])
    i = where % len(data)
    return data[:i] + bytes([byte]) + data[i + 1 :]


def records() -> st.SearchStrategy[bytes]:
    """Any bytes at all, weighted towards bytes that look like a batch."""
    docs = st.builds(encode, batch_docs(), st.booleans())
    junk = st.one_of(
        st.binary(max_size=512),
        st.builds(corrupt, docs, st.integers(0, 10**6), st.integers(0, 255)),
        st.builds(lambda n, c: c * n, st.integers(1, 200_000), st.sampled_from([b"[", b'{"a":', b"\xff", b" "])),
        st.builds(lambda n: b'"' + b"x" * n + b'"', st.sampled_from([2**20, 2**20 + 1])),
    )
    return st.sampled_from([docs, docs, junk]).flatmap(lambda chosen: chosen)


def partition_keys() -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), texts(256), phones().filter(lambda p: isinstance(p, str)))


def a_valid_batch(phone: str, seq: int, minute: int) -> dict:
    """A good batch (USER_VALIDATED) for the corpus tests."""
    return {
        "batch_id": str(uuid.uuid4()),
        "seq": str(seq),
        "phone_number": phone,
        "created_time": f"2026-03-02T15:{minute % 60:02d}:00+00:00",
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "USER_VALIDATED",
                "phone_number": phone,
                "created_time": f"2026-03-02T15:{minute % 60:02d}:00+00:00",
                "user_profile": {"validated": True, "account_info": {"employer_id": 1}},
                "code_validation_payload": {"valid": True},
            }
        ],
    }
