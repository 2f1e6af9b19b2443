"""Parse and validate one record of the dialog event stream (contract §2) at the edge.

A record is bytes. It is *bad input* when it is not UTF-8, not JSON, fails the JSON schema
`schemas/dialog-event-batch.schema.json` (Draft 2020-12, with the `uuid` and `date-time`
formats checked) or names an unknown `event_type`. `parse_record` returns a `Batch` or raises
`BadRecord` whose reason names the field and the problem (never a value, so never a phone
number).

Timestamps stay text: `created_time` is the validated RFC 3339 date-time (upper-cased, offset
included), which PostgreSQL reads as the same instant. Ingestion only copies event times into
rows, never computes with them, so no `datetime` is built for the hundred thousand times a
benchmark run carries (nor formatted back into text for the database).

The validator here is hand-written for speed (the JSON-schema library costs more than the whole
rest of the apply path). It mirrors the schema rule for rule; `tests/ingest/test_events.py`
checks it against `jsonschema` on the contract's examples and on thousands of mutations, so it
rejects everything the schema rejects. `schema_validator()` gives the reference validator.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from uuid import UUID

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
EVENT_TYPES = frozenset({
    USER_VALIDATED, USER_VALIDATION_FAILED, DRILL_STARTED, ADVANCED_TO_NEXT_PROMPT, COMPLETED_PROMPT,
    FAILED_PROMPT, DRILL_COMPLETED, REMINDER_TRIGGERED, NEXT_DRILL_REQUESTED, OPTED_OUT,
})


class BadRecord(ValueError):
    """The record is bad input; str(exc) is the reason stored in rejected_records."""


@dataclass(slots=True)
class Event:
    event_id: str
    event_type: str
    created_time: str  # RFC 3339 date-time with offset, validated (see _timestamp)
    user_profile: dict
    drill_instance_id: str | None = None
    drill_slug: str | None = None      # DRILL_STARTED: drill.slug
    prompt_slug: str | None = None     # DRILL_STARTED: first_prompt.slug; others: prompt.slug


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


# ---- format checks, the same as jsonschema's (uuid: UUID() + dashes; date-time: RFC 3339) ----
# Error paths are formatted only when raising: the success path builds no strings.

_RFC3339 = re.compile(
    r"^(\d{4})-(0[1-9]|1[0-2])-(\d{2})T(?:[01]\d|2[0123]):(?:[0-5]\d):(?:[0-5]\d)(?:\.\d+)?"
    r"(?:Z|[+-](?:[01]\d|2[0123]):[0-5]\d)$", re.ASCII)
_BEYOND_MICROSECONDS = re.compile(r"(\.\d{6})\d+")
_SEQ = re.compile(r"^[0-9]{1,30}$")
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _path(where: str, key: str | None) -> str:
    return f"{where}.{key}" if where and key else (key or where)


def _canonical_uuid(value: str) -> str | None:
    """The lowercase canonical form if jsonschema's uuid check accepts `value`, else None."""
    if _CANONICAL_UUID.fullmatch(value) is not None:
        return value.lower()  # the usual form: accepted by the jsonschema check too
    try:
        parsed = UUID(value)
    except ValueError:
        return None
    if value[8] == "-" and value[13] == "-" and value[18] == "-" and value[23] == "-":
        return str(parsed)
    return None


def _timestamp(value: object, where: str, key: str) -> str:
    """The date-time as validated text (RFC 3339, with an offset; upper-cased 'T' and 'Z')."""
    if not isinstance(value, str):
        raise BadRecord(f"{_path(where, key)}: must be a string (ISO 8601 date-time)")
    upper = value.upper()
    match = _RFC3339.fullmatch(upper)
    if match is None:
        raise BadRecord(f"{_path(where, key)}: not an RFC 3339 date-time with offset")
    day = int(match[3])
    if day > 28 or day < 1 or match[1] == "0000":
        year, month = int(match[1]), int(match[2])
        if not year or not 1 <= day <= calendar.monthrange(year, month)[1]:
            raise BadRecord(f"{_path(where, key)}: not a valid calendar date")
    if len(upper) > 27 and "." in upper:  # beyond microseconds: truncated, as datetime does
        upper = _BEYOND_MICROSECONDS.sub(r"\1", upper, 1)
    return upper


def _uuid(value: object, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise BadRecord(f"{_path(where, key)}: must be a string (UUID)")
    canonical = _canonical_uuid(value)
    if canonical is None:
        raise BadRecord(f"{_path(where, key)}: not a UUID")
    return canonical


def _string(obj: dict, key: str, where: str, *, min_len: int = 0, max_len: int | None = None,
            required: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise BadRecord(f"{_path(where, key)}: required")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise BadRecord(f"{_path(where, key)}: must be a string")
    if len(value) < min_len or (max_len is not None and len(value) > max_len):
        raise BadRecord(f"{_path(where, key)}: length must be {min_len}..{max_len}")
    return value


def _object(value: object, where: str, key: str | None = None) -> dict:
    if type(value) is not dict:
        raise BadRecord(f"{_path(where, key)}: must be an object")
    return value


def _phone(obj: dict, where: str) -> str | None:
    return _string(obj, "phone_number", where, min_len=3, max_len=32, required=False)


def _prompt(value: object, where: str, key: str) -> str:
    prompt = _object(value, where, key)
    slug = prompt.get("slug")
    if type(slug) is str and 1 <= len(slug) <= 200:
        return slug
    return _string(prompt, "slug", _path(where, key), min_len=1, max_len=200)  # type: ignore[return-value]


def _is_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def _profile(value: object, where: str) -> dict:
    profile = _object(value, where, "user_profile")
    if "validated" not in profile:
        raise BadRecord(f"{where}.user_profile.validated: required")
    for key, item in profile.items():
        if key in _PROFILE_BOOL_KEYS:
            if item is not True and item is not False:
                raise BadRecord(f"{where}.user_profile.{key}: must be a boolean")
        elif key in _PROFILE_STR_KEYS:
            if item is not None and not isinstance(item, str):
                raise BadRecord(f"{where}.user_profile.{key}: must be a string or null")
        elif key == "account_info" and item is not None and type(item) is not dict:
            raise BadRecord(f"{where}.user_profile.account_info: must be an object or null")
    return profile


_PROFILE_BOOL_KEYS = frozenset({"validated", "opted_out", "is_demo"})
_PROFILE_STR_KEYS = frozenset({"name", "language"})
_EVENT_REQUIRED = ("event_id", "event_type", "phone_number", "created_time", "user_profile")


def _instance(event: dict, where: str) -> str:
    if "drill_instance_id" not in event:
        raise BadRecord(f"{where}.drill_instance_id: required")
    return _uuid(event["drill_instance_id"], where, "drill_instance_id")


def _event(value: object, where: str) -> Event:
    event = _object(value, where)
    for key in _EVENT_REQUIRED:
        if key not in event:
            raise BadRecord(f"{where}.{key}: required")
    event_type = event["event_type"]
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise BadRecord(f"{where}.event_type: unknown event type")
    event_id = _uuid(event["event_id"], where, "event_id")
    _phone(event, where)
    created = _timestamp(event["created_time"], where, "created_time")
    profile = _profile(event["user_profile"], where)
    if "schema_version" in event and not _is_integer(event["schema_version"]):
        raise BadRecord(f"{where}.schema_version: must be an integer")
    parsed = Event(event_id, event_type, created, profile)
    rule = _TYPE_RULES.get(event_type)
    if rule is not None:
        rule(event, parsed, where)
    return parsed


def _drill_started(event: dict, parsed: Event, where: str) -> None:
    for key in ("drill", "drill_instance_id", "first_prompt"):
        if key not in event:
            raise BadRecord(f"{where}.{key}: required for {DRILL_STARTED}")
    drill = _object(event["drill"], where, "drill")
    parsed.drill_slug = _prompt(drill, where, "drill")  # the same rule: slug of 1..200 characters
    if not isinstance(drill.get("name"), str):
        _string(drill, "name", f"{where}.drill")
    if "prompts" in drill:
        prompts = drill["prompts"]
        if type(prompts) is not list:
            raise BadRecord(f"{where}.drill.prompts: must be an array")
        for i, prompt in enumerate(prompts):
            _prompt(prompt, f"{where}.drill", f"prompts[{i}]")
    parsed.drill_instance_id = _instance(event, where)
    parsed.prompt_slug = _prompt(event["first_prompt"], where, "first_prompt")


def _prompt_event(event: dict, parsed: Event, where: str) -> None:
    kind = parsed.event_type
    if "prompt" not in event:
        raise BadRecord(f"{where}.prompt: required for {kind}")
    if kind != ADVANCED_TO_NEXT_PROMPT:
        if "response" not in event:
            raise BadRecord(f"{where}.response: required for {kind}")
        _string(event, "response", where)
    if kind == FAILED_PROMPT:
        if "abandoned" not in event:
            raise BadRecord(f"{where}.abandoned: required for {kind}")
        if not isinstance(event["abandoned"], bool):
            raise BadRecord(f"{where}.abandoned: must be a boolean")
    parsed.drill_instance_id = _instance(event, where)
    parsed.prompt_slug = _prompt(event["prompt"], where, "prompt")


def _drill_completed(event: dict, parsed: Event, where: str) -> None:
    parsed.drill_instance_id = _instance(event, where)


def _opted_out(event: dict, parsed: Event, where: str) -> None:
    instance = event.get("drill_instance_id")
    if instance is not None:
        parsed.drill_instance_id = _uuid(instance, where, "drill_instance_id")


def _user_validated(event: dict, parsed: Event, where: str) -> None:
    if "code_validation_payload" not in event:
        raise BadRecord(f"{where}.code_validation_payload: required for {USER_VALIDATED}")
    payload = _object(event["code_validation_payload"], where, "code_validation_payload")
    if "valid" not in payload:
        raise BadRecord(f"{where}.code_validation_payload.valid: required")


# USER_VALIDATION_FAILED, REMINDER_TRIGGERED, NEXT_DRILL_REQUESTED have no extra fields.
_TYPE_RULES = {
    DRILL_STARTED: _drill_started,
    ADVANCED_TO_NEXT_PROMPT: _prompt_event,
    COMPLETED_PROMPT: _prompt_event,
    FAILED_PROMPT: _prompt_event,
    DRILL_COMPLETED: _drill_completed,
    OPTED_OUT: _opted_out,
    USER_VALIDATED: _user_validated,
}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def validate(doc: object) -> Batch:
    """The batch in a decoded JSON document, or BadRecord naming the first schema violation."""
    batch = _object(doc, "batch")
    for key in ("batch_id", "seq", "phone_number", "created_time", "events"):
        if key not in batch:
            raise BadRecord(f"{key}: required")
    batch_id = _uuid(batch["batch_id"], "", "batch_id")
    seq = batch["seq"]
    if not isinstance(seq, str):
        raise BadRecord("seq: must be a string of decimal digits")
    if _SEQ.search(seq) is None:
        raise BadRecord("seq: must be 1 to 30 decimal digits")
    phone = _phone(batch, "")
    created = _timestamp(batch["created_time"], "", "created_time")
    events = batch["events"]
    if type(events) is not list:
        raise BadRecord("events: must be an array")
    if not events:
        raise BadRecord("events: must not be empty")
    parsed = [_event(event, f"events[{i}]") for i, event in enumerate(events)]
    return Batch(batch_id, int(seq), phone, created, parsed)  # type: ignore[arg-type]


try:  # a C JSON decoder shipped with Airflow's task SDK; the stdlib is the fallback
    import msgspec
    from msgspec import DecodeError as _FastDecodeError
    from msgspec import ValidationError as _FastValidationError
    from msgspec.json import decode as _fast_decode
except ImportError:  # pragma: no cover
    msgspec = None  # type: ignore[assignment]
    _fast_decode = None


def _stdlib_decode(data: bytes) -> object:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecord(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        detail = f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "bad token"
        raise BadRecord(f"not valid JSON ({detail})") from None


def decode(data: bytes) -> object:
    """Strict UTF-8 JSON -> Python objects; BadRecord with a precise reason otherwise."""
    if _fast_decode is None:
        return _stdlib_decode(data)
    try:
        return _fast_decode(data)
    except (_FastDecodeError, _FastValidationError, UnicodeDecodeError):
        # (the fast decoder raises UnicodeDecodeError for invalid UTF-8 inside a string)
        _stdlib_decode(data)  # raises with the precise reason (UTF-8 or JSON position)
        # the stdlib accepts what the fast decoder refuses: a number out of range or a lone
        # surrogate escape, neither of which PostgreSQL's jsonb would store
        raise BadRecord("not valid JSON (number out of range or invalid unicode escape)") from None


# ---- fast path: the same rules as typed msgspec structs, checked in C ----
# `msgspec.convert` of the decoded document into these structs accepts a subset of what
# `validate` accepts (uuids must be in the canonical 8-4-4-4-12 form, schema_version a JSON
# integer, ...); timestamps and the profile are then checked by the very functions `validate`
# uses. Whenever the fast path refuses a document, `validate` decides, so the outcome and the
# reason are always `validate`'s; tests/ingest/test_ingest_events.py checks that both give
# equal results on the examples and thousands of mutations.

if msgspec is not None:
    from typing import Annotated, Any

    _Uuid = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
                                                r"-[0-9a-fA-F]{12}\Z")]
    _Phone = Annotated[str, msgspec.Meta(min_length=3, max_length=32)]
    _Slug = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]

    class _FPrompt(msgspec.Struct):
        slug: _Slug

    class _FDrill(msgspec.Struct):
        slug: _Slug
        name: str
        prompts: list[_FPrompt] = []

    class _FPayload(msgspec.Struct):
        valid: Any

    class _FProfile(msgspec.Struct):
        """Checks a user_profile (the profile itself stays the decoded dict, every key kept)."""
        validated: bool
        opted_out: bool = False
        is_demo: bool = False
        name: str | None = None
        language: str | None = None
        account_info: dict | None = None

    class _FEvent(msgspec.Struct, tag_field="event_type", kw_only=True):
        event_id: _Uuid
        phone_number: _Phone
        created_time: str
        user_profile: dict
        schema_version: int = 1

    class _FUserValidated(_FEvent, tag=USER_VALIDATED):
        code_validation_payload: _FPayload

    class _FUserValidationFailed(_FEvent, tag=USER_VALIDATION_FAILED):
        pass

    class _FDrillStarted(_FEvent, tag=DRILL_STARTED):
        drill: _FDrill
        drill_instance_id: _Uuid
        first_prompt: _FPrompt

    class _FAdvanced(_FEvent, tag=ADVANCED_TO_NEXT_PROMPT):
        prompt: _FPrompt
        drill_instance_id: _Uuid

    class _FCompleted(_FEvent, tag=COMPLETED_PROMPT):
        prompt: _FPrompt
        response: str
        drill_instance_id: _Uuid

    class _FFailed(_FEvent, tag=FAILED_PROMPT):
        prompt: _FPrompt
        response: str
        abandoned: bool
        drill_instance_id: _Uuid

    class _FDrillCompleted(_FEvent, tag=DRILL_COMPLETED):
        drill_instance_id: _Uuid

    class _FReminder(_FEvent, tag=REMINDER_TRIGGERED):
        pass

    class _FNextDrill(_FEvent, tag=NEXT_DRILL_REQUESTED):
        pass

    class _FOptedOut(_FEvent, tag=OPTED_OUT):
        drill_instance_id: _Uuid | None = None

    _FAnyEvent = (_FUserValidated | _FUserValidationFailed | _FDrillStarted | _FAdvanced | _FCompleted | _FFailed
                  | _FDrillCompleted | _FReminder | _FNextDrill | _FOptedOut)

    class _FBatch(msgspec.Struct):
        batch_id: _Uuid
        seq: Annotated[str, msgspec.Meta(pattern=_SEQ.pattern)]
        phone_number: _Phone
        created_time: str
        events: Annotated[list[_FAnyEvent], msgspec.Meta(min_length=1)]  # type: ignore[valid-type]

    _FAST_TYPES = {cls: cls.__struct_config__.tag for cls in (  # type: ignore[attr-defined]
        _FUserValidated, _FUserValidationFailed, _FDrillStarted, _FAdvanced, _FCompleted, _FFailed,
        _FDrillCompleted, _FReminder, _FNextDrill, _FOptedOut)}
    _PROMPT_TYPES = (_FAdvanced, _FCompleted, _FFailed)
    _convert = msgspec.convert


def _fast_validate(doc: object) -> Batch:
    """`validate(doc)` for documents the typed structs accept; raises when they don't."""
    fast = _convert(doc, _FBatch)
    events = []
    for e in fast.events:
        kind = type(e)
        profile = e.user_profile
        _convert(profile, _FProfile)
        event = Event(e.event_id.lower(), _FAST_TYPES[kind], _timestamp(e.created_time, "", "created_time"), profile)
        if kind in _PROMPT_TYPES:
            event.drill_instance_id = e.drill_instance_id.lower()
            event.prompt_slug = e.prompt.slug
        elif kind is _FDrillStarted:
            event.drill_instance_id = e.drill_instance_id.lower()
            event.drill_slug = e.drill.slug
            event.prompt_slug = e.first_prompt.slug
        elif kind is _FDrillCompleted or (kind is _FOptedOut and e.drill_instance_id is not None):
            event.drill_instance_id = e.drill_instance_id.lower()
        events.append(event)
    created = _timestamp(fast.created_time, "", "created_time")
    return Batch(fast.batch_id.lower(), int(fast.seq), fast.phone_number, created, events)


def parse_record(data: bytes) -> Batch:
    """bytes of one stream record -> Batch; BadRecord (with the reason) for bad input."""
    doc = decode(data)
    if msgspec is not None:
        try:
            return _fast_validate(doc)
        except (_FastValidationError, BadRecord):
            pass  # validate() decides, and gives the reason
    return validate(doc)
