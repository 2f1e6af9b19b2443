"""The moto AWS emulator, as `python -m moto.server` runs it, with two fixes to its Kinesis shards.

    python -m devtools.moto_server -H 127.0.0.1 -p 5055

moto's server is threaded, but `Shard.put_record` is not safe for concurrency (its own comment
says so): two PutRecords calls on one shard at the same time can take the same sequence number, and
one record silently replaces the other (measured: 2 threads x 10,000 records kept 19,733). Our
pipeline publishes from several threads and processes at once, as it would against AWS, so the
emulator must not lose records. The fix serialises `put_record` per process. It also finds the last
sequence number in O(1) (moto copied every key of the shard on every record) and serves GetRecords
by sequence number instead of scanning the shard from its start; a shard's sequence numbers are
consecutive integers in moto, so the results are the same.
"""

from __future__ import annotations

import threading

from moto.kinesis import models

_PUT_LOCK = threading.Lock()


def _last_sequence_number(self) -> int:
    return next(reversed(self.records)) if self.records else 0


def _put_record(self, partition_key: str, data: str, explicit_hash_key: str) -> str:
    with _PUT_LOCK:
        sequence_number = _last_sequence_number(self) + 1
        self.records[sequence_number] = models.Record(partition_key, data, sequence_number, explicit_hash_key)
    return str(sequence_number)


def _get_records(self, last_sequence_id: str, limit: int | None):
    last = int(last_sequence_id)
    if not self.records:
        return [], last, 0
    latest = next(reversed(self.records))
    sequence_number = max(last + 1, next(iter(self.records)))
    results = []
    while sequence_number <= latest and (limit is None or len(results) < limit):
        record = self.records.get(sequence_number)
        if record is not None:
            results.append(record)
            last = sequence_number
        sequence_number += 1
    behind = self.records[latest].created_at - results[-1].created_at if results else 0.0
    return results, last, int(behind * 1000)


models.Shard.put_record = _put_record
models.Shard.get_max_sequence_number = _last_sequence_number
models.Shard.get_records = _get_records


if __name__ == "__main__":
    from moto.server import main

    main()
