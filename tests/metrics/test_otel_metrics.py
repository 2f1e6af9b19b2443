"""The same metrics through Airflow's OpenTelemetry backend (`[metrics] otel_on`), to a real OTLP/HTTP
receiver on loopback: names under the prefix, the shard id as an attribute, exact values (what the
SDK exports on a flush, decoded from the OTLP protobuf)."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from statsd_support import reinitialize_stats

from drill_progress import metrics


class _Receiver(BaseHTTPRequestHandler):
    requests: list[bytes] = []

    def do_POST(self):  # the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def otlp_receiver():
    _Receiver.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings = {
        "AIRFLOW__METRICS__OTEL_ON": "True",
        "AIRFLOW__METRICS__OTEL_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__OTEL_PORT": str(server.server_address[1]),
        "AIRFLOW__METRICS__OTEL_PREFIX": "airflow",
        "AIRFLOW__METRICS__OTEL_INTERVAL_MILLISECONDS": "600000",  # exported when flushed below
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    reinitialize_stats()
    yield _Receiver
    from opentelemetry import metrics as otel_metrics

    provider = otel_metrics.get_meter_provider()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reinitialize_stats()
    if hasattr(provider, "shutdown"):
        import atexit

        from airflow.sdk._shared.observability.metrics.otel_logger import flush_otel_metrics

        provider.shutdown()  # its reader thread stops; Airflow's exit-time flush has nothing left to do
        atexit.unregister(flush_otel_metrics)
    server.shutdown()
    server.server_close()


def _exported(requests: list[bytes]) -> dict[tuple[str, tuple], float]:
    """(metric name, attributes) -> value: sums' and gauges' last data point, histograms' sum."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    out: dict[tuple[str, tuple], float] = {}
    for body in requests:
        request = ExportMetricsServiceRequest.FromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    for point in data.data_points:
                        attrs = tuple(sorted((a.key, a.value.string_value) for a in point.attributes))
                        if kind == "exponential_histogram" or kind == "histogram":
                            value = point.count
                        else:
                            value = point.as_int if point.HasField("as_int") else point.as_double
                        out[(metric.name, attrs)] = value
    return out


def test_the_metrics_reach_an_otlp_receiver_with_the_shard_as_an_attribute(otlp_receiver):
    from airflow.sdk.observability import stats  # noqa: F401 - the facade the helpers call
    from opentelemetry import metrics as otel_metrics

    shard = metrics.ShardMetrics("shardId-000000000003")
    shard.behind(1500)
    shard.committed(events=40, set_aside=2, seconds=0.012)
    shard.committed(events=2, set_aside=0, seconds=0.010)
    shard.behind(0)
    shard.published(published=7, failed=1)
    metrics.reminders_enqueued(5)
    metrics.scheduling_run({"recorded": 9, "sent": 8, "late_dropped": 1, "max_lateness_s": 0.75})
    otel_metrics.get_meter_provider().force_flush()

    got = _exported(otlp_receiver.requests)
    tag = (("shard_id", "shardId-000000000003"),)  # the attribute keeps the shard id as it is
    head = "airflow.drill_progress."
    # OpenTelemetry instrument names are case-insensitive: the SDK lowercases them
    assert got[(f"{head}ingest.events_applied.shardid-000000000003", tag)] == 42
    assert got[(f"{head}ingest.records_set_aside.shardid-000000000003", tag)] == 2
    assert got[(f"{head}ingest.ms_behind_tip.shardid-000000000003", tag)] == 0
    assert got[(f"{head}ingest.micro_batch_duration.shardid-000000000003", tag)] == 2  # two observations
    assert got[(f"{head}ingest.commands_published.shardid-000000000003", tag)] == 7
    assert got[(f"{head}ingest.publish_failures.shardid-000000000003", tag)] == 1
    assert got[(f"{head}reminders.enqueued", ())] == 5
    assert got[(f"{head}scheduling.planned", ())] == 9
    assert got[(f"{head}scheduling.pacing_error_max_ms", ())] == 750
