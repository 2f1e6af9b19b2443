"""The aggregate's state as data, for comparing runs: ids are deterministic (UUIDv5), so an ordered
dump of every column that is not a `now()` stamp compares a crashed and retried run with a clean one
(the chaos scenarios) or two ways of applying the same stream (ingestion tests)."""

from __future__ import annotations

import hashlib

AGGREGATE_QUERIES: dict[str, str] = {
    "users": "SELECT user_id, seq, profile::text, last_interacted_time FROM users ORDER BY user_id",
    "phone_numbers": "SELECT id, phone_number, user_id, is_primary FROM phone_numbers ORDER BY id",
    "drill_statuses": (
        "SELECT id, user_id, drill_instance_id, drill_slug, place_in_sequence, started_time, "
        "completed_time FROM drill_statuses ORDER BY id"
    ),
    "drill_instances": (
        "SELECT drill_instance_id, user_id, phone_number, drill_slug, current_prompt_slug, "
        "current_prompt_start_time, current_prompt_last_response_time, completion_time, is_valid "
        "FROM drill_instances ORDER BY drill_instance_id"
    ),
}


# Every aggregate query selects user_id: the same rows, for the users of some phone numbers only.
_OF_PHONES = (
    "SELECT * FROM ({query}) AS t WHERE user_id IN "
    "(SELECT user_id FROM phone_numbers WHERE phone_number = ANY(%(phones)s)) ORDER BY 1"
)


def aggregate_rows(engine) -> dict[str, list[tuple]]:
    """{table: every row in order} for the four aggregate tables (tests compare them row by row)."""
    with engine.connect() as conn:
        return {table: [tuple(r) for r in conn.exec_driver_sql(sql).all()] for table, sql in AGGREGATE_QUERIES.items()}


def aggregate_checksum(engine, phones: list[str] | None = None) -> dict:
    """{table: {"rows": n, "sha256": hex}} for the four aggregate tables and "all": one digest.
    With `phones`, only the rows of the users those phone numbers belong to (a database that also
    holds other data, e.g. a whole stack's, compared with a reference that holds just them)."""
    out: dict = {}
    total = hashlib.sha256()
    with engine.connect() as conn:
        for table, sql in AGGREGATE_QUERIES.items():
            digest = hashlib.sha256()
            n = 0
            if phones is None:
                rows = conn.exec_driver_sql(sql)
            else:
                rows = conn.exec_driver_sql(_OF_PHONES.format(query=sql.rsplit(" ORDER BY ", 1)[0]), {"phones": phones})
            for row in rows:
                digest.update(repr(tuple(row)).encode())
                digest.update(b"\n")
                n += 1
            out[table] = {"rows": n, "sha256": digest.hexdigest()}
            total.update(f"{table}:{n}:{out[table]['sha256']};".encode())
    out["all"] = total.hexdigest()
    return out
