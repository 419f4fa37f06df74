"""Send log records to the gateway as an application instrumented with the official
OpenTelemetry Python SDK does: stdlib `logging` -> LoggingHandler -> BatchLogRecordProcessor ->
the OTLP exporter (HTTP/protobuf on :4318 or gRPC on :4317).

    $(deploy/local/otel-python/venv) deploy/local/otel-python/send_logs.py \
        --protocol http --endpoint http://127.0.0.1:4318 --count 1000 [--stream S] [--gzip]

Prints one JSON line: how many records were logged, how many the exporter reported exported
(the gateway's 200 / OK) and how many failed. Exits 1 unless every record was exported.
"""

import argparse
import json
import logging
import sys

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource


class CountingExporter(LogRecordExporter):
    """Delegates to the real exporter and counts what it reports exported or failed."""

    def __init__(self, inner):
        self.inner = inner
        self.exported = 0
        self.failed = 0

    def export(self, batch):
        result = self.inner.export(batch)
        if result == LogRecordExportResult.SUCCESS:
            self.exported += len(batch)
        else:
            self.failed += len(batch)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def exporter(args):
    headers = {}
    if args.stream:
        headers["x-tlake-stream"] = args.stream
    if args.token:
        headers["authorization"] = f"Bearer {args.token}"
    if args.protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        return OTLPLogExporter(
            endpoint=f"{args.endpoint}/v1/logs",
            headers=headers,
            timeout=30,
            compression=Compression.Gzip if args.gzip else Compression.NoCompression,
        )
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter(
        endpoint=args.endpoint,
        insecure=True,
        headers=headers,
        timeout=30,
        compression=grpc.Compression.Gzip if args.gzip else grpc.Compression.NoCompression,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["http", "grpc"], required=True)
    parser.add_argument("--endpoint", required=True, help="http://HOST:PORT")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--stream", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--service", default="otel-python")
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()

    provider = LoggerProvider(
        resource=Resource.create({"service.name": args.service, "deployment.environment": "test"})
    )
    counting = CountingExporter(exporter(args))
    # The queue holds every record: the SDK drops what overflows it, and this client must be
    # able to say that all it logged was exported.
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            counting,
            max_queue_size=args.count + 1,
            max_export_batch_size=512,
            schedule_delay_millis=200,
        )
    )
    log = logging.getLogger("otel.python.sender")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
    for seq in range(args.count):
        level = logging.WARNING if seq % 10 == 0 else logging.INFO
        log.log(level, "otel-python record %d", seq, extra={"seq": seq, "protocol": args.protocol})
    provider.force_flush(60_000)
    provider.shutdown()
    print(
        json.dumps(
            {
                "protocol": args.protocol,
                "logged": args.count,
                "exported": counting.exported,
                "failed": counting.failed,
            }
        )
    )
    return 0 if counting.exported == args.count and counting.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
