"""Fixtures of the chaos scenarios: fresh databases, the emulator's Kinesis client, the traffic and
the clean reference run that every faulty run is compared with (computed once per session)."""

from __future__ import annotations

import pytest
from chaos_support import EVENTS, SEED, Db, Reference, ingest_argv, new_db, new_streams

from devtools import aggregate, chaos


@pytest.fixture
def make_db(pg_server, migrated_template):
    created: list[Db] = []
    yield lambda: new_db(pg_server, migrated_template, created)
    for db in created:
        db.engine.dispose()
        pg_server.drop_database(db.name)


@pytest.fixture(scope="session")
def kinesis(moto_server):
    return chaos.boto3_client("kinesis", moto_server.endpoint_url)


@pytest.fixture(scope="session")
def traffic():
    return chaos.make_records(EVENTS, seed=SEED)


@pytest.fixture(scope="session")
def clean_run(pg_server, migrated_template, moto_server, kinesis, traffic) -> Reference:
    """The whole traffic ingested once, without faults: the state and commands to compare with."""
    created: list[Db] = []
    db = new_db(pg_server, migrated_template, created)
    try:
        events, commands = new_streams(kinesis, "clean")
        chaos.put_records(kinesis, events, traffic.records)
        report = chaos.drive(
            ingest_argv(db.url, moto_server.endpoint_url, events, commands),
            done=chaos.ingest_caught_up,
            max_attempts=10,
        )
        assert report.failures == 0, report.attempts[-1].stderr_tail
        stream = chaos.read_commands(kinesis, commands)
        audit = chaos.audit_commands(stream)
        assert audit.duplicates == 0 and audit.records > 0, audit.as_dict()
        ref = Reference(
            aggregate.aggregate_checksum(db.engine),
            chaos.commands_by_key(stream),
            report.attempts[0].run_seconds or 1.0,
            len(traffic.records),
            traffic.events,
        )
        print(
            f"\n[clean run] {ref.events} events in {ref.records} records -> "
            f"{ {t: v['rows'] for t, v in ref.checksum.items() if t != 'all'} }, {len(ref.commands)} commands; "
            f"first run {ref.run_seconds:.2f}s; checksum {ref.checksum['all'][:16]}"
        )
        return ref
    finally:
        for d in created:
            d.engine.dispose()
            pg_server.drop_database(d.name)
