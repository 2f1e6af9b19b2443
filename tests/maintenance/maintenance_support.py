"""Helpers for the maintenance, monitoring and alerting tests: an SNS topic on the emulator with an
SQS queue subscribed (to read alerts back), dialog event batches, stream and table reads."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from devtools import services
from devtools.streams import read_all

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
PROFILE = {"validated": True, "opted_out": False, "is_demo": False, "name": None, "language": "en",
           "account_info": {"employer_id": 7, "unit_id": 1}}  # fmt: skip


@dataclass
class AlertTopic:
    """An SNS topic with an SQS queue subscribed: what is published can be read back."""

    arn: str
    sqs: object
    queue_url: str

    def received(self, wait: int = 1) -> list[dict]:
        """The alerts delivered so far: [{"Subject": ..., "Message": ...}], oldest first."""
        out = []
        while True:
            response = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
            messages = response.get("Messages", [])
            if not messages:
                return out
            for message in messages:
                out.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            wait = 0


def alert_topic(moto_server, name: str = "drill-alerts") -> AlertTopic:
    sns, sqs = (services.boto3_client(name, moto_server.endpoint_url) for name in ("sns", "sqs"))
    arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    return AlertTopic(arn, sqs, queue_url)


def _uuid(*parts) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def _event(event_type: str, phone: str, at: datetime, **fields) -> dict:
    return {
        "event_id": _uuid("maintenance-test", phone, event_type, at.isoformat()),
        "event_type": event_type,
        "phone_number": phone,
        "created_time": at.isoformat(),
        "schema_version": 1,
        "user_profile": dict(PROFILE),
        **fields,
    }


def _batch(seq: int, phone: str, events: list[dict]) -> bytes:
    doc = {
        "batch_id": _uuid("maintenance-test-batch", phone, seq),
        "seq": str(seq),
        "phone_number": phone,
        "created_time": events[-1]["created_time"],
        "events": events,
    }
    return json.dumps(doc).encode()


def instance_of(phone: str) -> str:
    return _uuid("maintenance-test-instance", phone)


def validated_then_started(phone: str, started: datetime = T0) -> list[bytes]:
    """Two batches: USER_VALIDATED (-> a START_DRILL), then DRILL_STARTED on prompt q1 at `started`."""
    validated = _event(
        "USER_VALIDATED",
        phone,
        started - timedelta(minutes=1),
        code_validation_payload={"valid": True, "is_demo": False, "account_info": {"employer_id": 7}},
    )
    drill_started = _event(
        "DRILL_STARTED",
        phone,
        started,
        drill={"slug": "01-sample-drill", "name": "01-sample-drill", "prompts": []},
        drill_instance_id=instance_of(phone),
        first_prompt={"slug": "q1", "messages": []},
    )
    return [_batch(1, phone, [validated]), _batch(2, phone, [drill_started])]


def put(kinesis, stream: str, records: list[bytes], key: str) -> None:
    for data in records:
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)


def commands(kinesis, stream: str = "dialog-commands") -> list[dict]:
    return [json.loads(r["Data"]) for r in read_all(kinesis, stream)]


def rows(engine, sql: str, params: dict | None = None) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql, params or {}).all()]
