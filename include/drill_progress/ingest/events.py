"""The edge of ingestion: one record of the dialog event stream (contract §2), bytes in, a `Batch`
or a `BadRecord` out, whatever the bytes.

**One source of truth.** The record format is the JSON Schema `schemas/dialog-event-batch.schema.json`.
The typed msgspec structs below are its fast path (checked in C); `tests/ingest/test_ingest_edge.py`
cross-checks them against `jsonschema` (Draft 2020-12, formats checked) on the contract's examples,
thousands of mutations and generated documents: the edge never accepts what the schema rejects.

**What the edge accepts** is what the schema accepts, within limits that keep every accepted record
storable in PostgreSQL and readable again in Python (docs/edge.md lists each refusal and its reason):

- at most `MAX_RECORD_BYTES` (1 MiB, the Kinesis record limit), strict UTF-8, one JSON document;
- JSON nested at most ~1,000 levels anywhere, and a `user_profile` (stored whole as jsonb) nested at
  most `MAX_STORED_DEPTH` levels, with integers within 64 bits (Python reads jsonb back with `json`,
  which refuses deeper nesting and integers past 4,300 digits);
- no U+0000 in anything stored (phone number, drill and prompt slugs, profile keys and values):
  PostgreSQL text and jsonb cannot hold it; lone surrogates are not valid JSON text;
- UUIDs in their canonical 8-4-4-4-12 form (any case);
- date-times per RFC 3339 with an offset and a year from 1900 to 9998 (PostgreSQL and Python then
  agree on every instant; the schema's `date-time` allows years 0000-9999);
- `account_info.employer_id` / `unit_id` at most 256 characters as text (the daily report keys
  its rows, in a btree index, by employer id).

`parse_record` raises nothing but `BadRecord`, whose message is the reason stored in
`rejected_records`: it names the field and the problem, never a value of the record.

Timestamps stay text: `created_time` is the validated RFC 3339 date-time (upper-cased, offset
included), which PostgreSQL reads as the same instant. Ingestion only copies event times into rows,
never computes with them.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import msgspec

from drill_progress.privacy import mask_phones_in

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "dialog-event-batch.schema.json"

USER_VALIDATED = "USER_VALIDATED"
USER_VALIDATION_FAILED = "USER_VALIDATION_FAILED"
DRILL_STARTED = "DRILL_STARTED"
ADVANCED_TO_NEXT_PROMPT = "ADVANCED_TO_NEXT_PROMPT"
COMPLETED_PROMPT = "COMPLETED_PROMPT"
FAILED_PROMPT = "FAILED_PROMPT"
DRILL_COMPLETED = "DRILL_COMPLETED"
REMINDER_TRIGGERED = "REMINDER_TRIGGERED"
NEXT_DRILL_REQUESTED = "NEXT_DRILL_REQUESTED"
OPTED_OUT = "OPTED_OUT"
EVENT_TYPES = frozenset(
    {
        USER_VALIDATED,
        USER_VALIDATION_FAILED,
        DRILL_STARTED,
        ADVANCED_TO_NEXT_PROMPT,
        COMPLETED_PROMPT,
        FAILED_PROMPT,
        DRILL_COMPLETED,
        REMINDER_TRIGGERED,
        NEXT_DRILL_REQUESTED,
        OPTED_OUT,
    }
)

# ---- the edge's limits (docs/edge.md) ----
MAX_RECORD_BYTES = 1024 * 1024
MAX_STORED_DEPTH = 32
MAX_INT = 2**63 - 1
MIN_YEAR, MAX_YEAR = 1900, 9998
MAX_ID_LENGTH = 256  # account_info.employer_id / unit_id as text (the report's key)
MAX_REASON_LENGTH = 500


class BadRecord(ValueError):
    """The record is bad input; str(exc) is the reason stored in rejected_records."""


@dataclass(slots=True)
class Event:
    event_id: str
    event_type: str
    created_time: str  # RFC 3339 date-time with offset, validated (see _timestamp)
    user_profile: dict
    drill_instance_id: str | None = None
    drill_slug: str | None = None  # DRILL_STARTED: drill.slug
    prompt_slug: str | None = None  # DRILL_STARTED: first_prompt.slug; others: prompt.slug


@dataclass(slots=True)
class Batch:
    batch_id: str
    seq: int
    phone_number: str
    created_time: str
    events: list[Event]


@cache
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def schema_validator():
    """The reference validator: jsonschema Draft 2020-12 with format checking (tests, tooling)."""
    import jsonschema

    return jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


# ---- decoding: bytes -> Python objects ---------------------------------------------------------


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _why_not_json(data: bytes) -> str:
    """The precise reason the C decoder refused `data` (asked of the stdlib, only on failure)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start})"
    try:
        json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return "not valid JSON (nested too deeply)"
    except json.JSONDecodeError as exc:
        return f"not valid JSON (line {exc.lineno} column {exc.colno})"
    except ValueError:
        return "not valid JSON (bad token)"
    # the stdlib accepts what the C decoder refuses: a number out of range or a lone surrogate
    # escape, neither of which PostgreSQL's jsonb would store
    return "not valid JSON (number out of range or invalid unicode escape)"


def decode(data: bytes) -> object:
    """Strict UTF-8 JSON of at most MAX_RECORD_BYTES -> Python objects; BadRecord otherwise."""
    if len(data) > MAX_RECORD_BYTES:
        raise BadRecord(f"record of {len(data)} bytes is larger than {MAX_RECORD_BYTES} bytes (1 MiB)")
    try:
        return _decode(data)
    except RecursionError:
        raise BadRecord("not valid JSON (nested too deeply)") from None
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        # (the C decoder raises UnicodeDecodeError for invalid UTF-8 inside a string)
        raise BadRecord(_why_not_json(data)) from None


_decode = msgspec.json.Decoder().decode


# ---- the schema as typed structs (fast path, checked in C) -------------------------------------

_UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
# 1 to 129 digits: in production a Kinesis sequence number (56 digits today, up to 129). \Z, not $:
# Python's $ also matches before a final newline, which JSON Schema's (ECMA 262) $ does not.
MAX_SEQ_DIGITS = 129
_SEQ_PATTERN = rf"^[0-9]{{1,{MAX_SEQ_DIGITS}}}\Z"
_Uuid = Annotated[str, msgspec.Meta(pattern=_UUID_PATTERN)]
_Phone = Annotated[str, msgspec.Meta(min_length=3, max_length=32)]
_Slug = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Seq = Annotated[str, msgspec.Meta(pattern=_SEQ_PATTERN)]
# msgspec's messages name the regex; operators read what it means instead
_PATTERN_WORDS = {
    f"`str` matching regex {_UUID_PATTERN!r}": "a UUID (8-4-4-4-12 hexadecimal digits)",
    f"`str` matching regex {_SEQ_PATTERN!r}": f"a string of 1 to {MAX_SEQ_DIGITS} decimal digits",
}


class _Prompt(msgspec.Struct):
    slug: _Slug


class _Drill(msgspec.Struct):
    slug: _Slug
    name: str
    prompts: list[_Prompt] = []


class _Payload(msgspec.Struct):
    valid: Any


class _Profile(msgspec.Struct):
    """Checks a user_profile's known keys (the profile itself stays the decoded dict, every key kept)."""

    validated: bool
    opted_out: bool = False
    is_demo: bool = False
    name: str | None = None
    language: str | None = None
    account_info: dict | None = None


class _Event(msgspec.Struct, tag_field="event_type", kw_only=True):
    event_id: _Uuid
    phone_number: _Phone
    created_time: str
    user_profile: dict
    schema_version: int | float = 1  # JSON Schema's integer: 1.0 too (checked below)


class _UserValidated(_Event, tag=USER_VALIDATED):
    code_validation_payload: _Payload


class _UserValidationFailed(_Event, tag=USER_VALIDATION_FAILED):
    pass


class _DrillStarted(_Event, tag=DRILL_STARTED):
    drill: _Drill
    drill_instance_id: _Uuid
    first_prompt: _Prompt


class _Advanced(_Event, tag=ADVANCED_TO_NEXT_PROMPT):
    prompt: _Prompt
    drill_instance_id: _Uuid


class _Completed(_Event, tag=COMPLETED_PROMPT):
    prompt: _Prompt
    response: str
    drill_instance_id: _Uuid


class _Failed(_Event, tag=FAILED_PROMPT):
    prompt: _Prompt
    response: str
    abandoned: bool
    drill_instance_id: _Uuid


class _DrillCompleted(_Event, tag=DRILL_COMPLETED):
    drill_instance_id: _Uuid


class _Reminder(_Event, tag=REMINDER_TRIGGERED):
    pass


class _NextDrill(_Event, tag=NEXT_DRILL_REQUESTED):
    pass


class _OptedOut(_Event, tag=OPTED_OUT):
    drill_instance_id: _Uuid | None = None


_EVENT_STRUCTS = (
    _UserValidated,
    _UserValidationFailed,
    _DrillStarted,
    _Advanced,
    _Completed,
    _Failed,
    _DrillCompleted,
    _Reminder,
    _NextDrill,
    _OptedOut,
)
_AnyEvent = (
    _UserValidated
    | _UserValidationFailed
    | _DrillStarted
    | _Advanced
    | _Completed
    | _Failed
    | _DrillCompleted
    | _Reminder
    | _NextDrill
    | _OptedOut
)


class _Batch(msgspec.Struct):
    batch_id: _Uuid
    seq: _Seq
    phone_number: _Phone
    created_time: str
    events: Annotated[list[_AnyEvent], msgspec.Meta(min_length=1)]  # type: ignore[valid-type]


_TYPE_OF = {cls: cls.__struct_config__.tag for cls in _EVENT_STRUCTS}  # type: ignore[attr-defined]
# msgspec builds a type's internal description on its first use, which is not safe while another
# thread uses the same type (seen: a segfault with two shard consumers in one process). Building the
# typed decoders here, at import, does that work once, before any thread runs.
_DESCRIBED = (msgspec.json.Decoder(_Batch), msgspec.json.Decoder(_Profile))
_PROMPT_EVENTS = (_Advanced, _Completed, _Failed)
_convert = msgspec.convert


def _schema_reason(exc: msgspec.ValidationError, prefix: str = "") -> str:
    """msgspec's message ("Expected `str`, got `int` - at `$.events[0].event_id`") as a reason."""
    message, _, where = mask_phones_in(str(exc)).partition(" - at `$")
    location = prefix + where.rstrip("`").lstrip(".")
    if message.startswith("Invalid value"):  # a value outside an enumeration: never echoed back
        message = "unknown event type" if location.endswith("event_type") else "not an allowed value"
    for pattern, words in _PATTERN_WORDS.items():
        message = message.replace(pattern, words)
    return (f"{location}: {message}" if location else message)[:MAX_REASON_LENGTH]


def _clip(reason: str) -> str:
    return mask_phones_in(reason)[:MAX_REASON_LENGTH]


# ---- checks beyond the types: formats and storability -------------------------------------------

_RFC3339 = re.compile(
    r"^(\d{4})-(0[1-9]|1[0-2])-(\d{2})T(?:[01]\d|2[0123]):(?:[0-5]\d):(?:[0-5]\d)(?:\.\d+)?"
    r"(?:Z|[+-](?:[01]\d|2[0123]):[0-5]\d)$",
    re.ASCII,
)
_BEYOND_MICROSECONDS = re.compile(r"(\.\d{6})\d+")


_YEARS = (f"{MIN_YEAR:04d}", f"{MAX_YEAR:04d}")


def _timestamp(value: str, where: str) -> str:
    """The date-time as validated text (RFC 3339, with an offset; upper-cased 'T' and 'Z')."""
    upper = value.upper()
    match = _RFC3339.fullmatch(upper)
    if match is None:
        raise BadRecord(f"{where}: not an RFC 3339 date-time with offset")
    year = match[1]
    if not _YEARS[0] <= year <= _YEARS[1]:
        raise BadRecord(f"{where}: year must be from {MIN_YEAR} to {MAX_YEAR}")
    day = int(match[3])
    if (day > 28 and day > calendar.monthrange(int(year), int(match[2]))[1]) or day < 1:
        raise BadRecord(f"{where}: not a valid calendar date")
    # beyond microseconds: truncated, as datetime does. Looked for at the fraction's 7th digit: the
    # real producer's timestamps (microseconds and "+00:00", 32 characters) have none to cut, and
    # the substitution on each of them was a fifth of the edge's time on real traffic.
    dot = upper.find(".")
    if dot != -1 and upper[dot + 7 : dot + 8].isdigit():
        upper = _BEYOND_MICROSECONDS.sub(r"\1", upper, 1)
    return upper


def _stored(value: object, depth: int, nul: bool) -> None:
    """A JSON value stored in jsonb (and read back by Python): depth at most MAX_STORED_DEPTH,
    integers within 64 bits, no U+0000 (looked for only when the record holds a `\\u0000` escape,
    the only way JSON text can carry one). The common scalars are checked inline: this runs for
    every event's profile. Reasons are relative to the profile."""
    if depth > MAX_STORED_DEPTH:
        raise BadRecord(f"nested deeper than {MAX_STORED_DEPTH} levels")
    items = value.items() if type(value) is dict else enumerate(value)  # type: ignore[attr-defined]
    for key, item in items:
        kind = type(item)
        if kind is str:
            if nul and "\x00" in item:
                raise BadRecord("contains U+0000")
        elif kind is int:
            if not -MAX_INT <= item <= MAX_INT:
                raise BadRecord("integer out of the 64-bit range")
        elif kind is dict or kind is list:
            _stored(item, depth + 1, nul)
        if nul and type(key) is str and "\x00" in key:
            raise BadRecord("a key contains U+0000")


def _profile(profile: dict, nul: bool) -> None:
    """A user_profile: the schema's rules for its known keys, then storability of the whole
    (reasons relative to the event)."""
    try:
        _convert(profile, _Profile)
    except msgspec.ValidationError as exc:
        raise BadRecord(_schema_reason(exc, "user_profile.")) from None
    if profile == _last_stored_profile[0]:
        # The events of a batch usually carry the same profile. Python's == equates 1, 1.0 and true,
        # which cannot matter here: the known keys' types were checked just above, and an integer
        # equal to a float is one Python and PostgreSQL store and read back alike.
        return
    try:
        _stored(profile, 1, nul)
    except BadRecord as bad:
        raise BadRecord(f"user_profile: {bad}") from None
    account = profile.get("account_info")
    if account:
        for key in ("employer_id", "unit_id"):
            value = account.get(key)
            if value is None or type(value) in (int, bool, float):
                continue
            text = value if type(value) is str else json.dumps(value, separators=(", ", ": "))
            if len(text) > MAX_ID_LENGTH:
                raise BadRecord(f"user_profile.account_info.{key}: longer than {MAX_ID_LENGTH} characters as text")
    _last_stored_profile[0] = profile


# The last profile found storable. Parsing runs on one thread per shard task; were two threads to
# share it, what one reads is still a profile found storable.
_last_stored_profile: list[dict | None] = [None]


def _no_nul(value: str | None, where: str) -> None:
    if value is not None and "\x00" in value:
        raise BadRecord(f"{where}: contains U+0000")


def _event(e: _Event, nul: bool) -> Event:
    """One event; BadRecord reasons relative to the event (validate() names which one)."""
    kind = type(e)
    if type(e.schema_version) is float and not e.schema_version.is_integer():
        raise BadRecord("schema_version: must be an integer")
    _profile(e.user_profile, nul)
    event = Event(e.event_id.lower(), _TYPE_OF[kind], _timestamp(e.created_time, "created_time"), e.user_profile)
    if kind in _PROMPT_EVENTS:
        event.drill_instance_id = e.drill_instance_id.lower()  # type: ignore[attr-defined]
        event.prompt_slug = e.prompt.slug  # type: ignore[attr-defined]
        if nul:
            _no_nul(event.prompt_slug, "prompt.slug")
    elif kind is _DrillStarted:
        event.drill_instance_id = e.drill_instance_id.lower()  # type: ignore[attr-defined]
        event.drill_slug = e.drill.slug  # type: ignore[attr-defined]
        event.prompt_slug = e.first_prompt.slug  # type: ignore[attr-defined]
        if nul:
            _no_nul(event.drill_slug, "drill.slug")
            _no_nul(event.prompt_slug, "first_prompt.slug")
    elif kind is _DrillCompleted or (kind is _OptedOut and e.drill_instance_id is not None):  # type: ignore[attr-defined]
        event.drill_instance_id = e.drill_instance_id.lower()  # type: ignore[attr-defined]
    return event


def validate(doc: object, nul: bool = True) -> Batch:
    """The batch in a decoded JSON document, or BadRecord naming the first problem. `nul`: whether
    the document may hold U+0000 anywhere (see `parse_record`)."""
    try:
        batch = _convert(doc, _Batch)
    except msgspec.ValidationError as exc:
        raise BadRecord(_schema_reason(exc)) from None
    if nul:
        _no_nul(batch.phone_number, "phone_number")
    created = _timestamp(batch.created_time, "created_time")
    events = []
    for i, e in enumerate(batch.events):
        try:
            events.append(_event(e, nul))
        except BadRecord as bad:  # paths are built only for a bad record
            raise BadRecord(f"events[{i}].{bad}") from None
    return Batch(batch.batch_id.lower(), int(batch.seq), batch.phone_number, created, events)


def parse_record(data: bytes) -> Batch:
    """bytes of one stream record -> Batch; BadRecord (with the reason) for anything else.

    Nothing else is ever raised: an unexpected error while validating is a bad record too (its
    reason names the error), so that no record can stop its shard."""
    try:
        return validate(decode(data), b"\\u0000" in data)
    except BadRecord:
        raise
    except RecursionError:
        raise BadRecord("not valid JSON (nested too deeply)") from None
    except Exception as exc:
        raise BadRecord(_clip(f"could not be validated ({type(exc).__name__})")) from None
