#!/usr/bin/env python3
"""A real OTLP/HTTP receiver for the telemetry tests (issue 14).

Accepts `POST /v1/traces`, `/v1/metrics` and `/v1/logs` with protobuf bodies (the default
encoding of the OTLP exporter specification), decodes each with the `opentelemetry-proto`
package (the protocol's own generated classes: a body that is not a valid export request is
answered 400 and recorded as such), and appends one JSON line per request to OUT_DIR/<signal>.jsonl
(the request as protobuf's canonical JSON mapping) and the raw bytes to OUT_DIR/<signal>.bin, so
that a test can search the bytes on the wire. Any GET is recorded in OUT_DIR/outbound.jsonl (its
path and headers) and answered 404. Prints {"port": N} on stdout once listening;
SIGTERM stops it. With OTLP_RECEIVER_DISCARD=1 it answers without decoding or writing (the
load script's collector, which must not take the CPU the server is measured on).

Usage: receiver.py OUT_DIR [PORT]     (PORT 0 or absent: a free port)
"""
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

SIGNALS = {
    "/v1/traces": ("traces", trace_service_pb2.ExportTraceServiceRequest,
                   trace_service_pb2.ExportTraceServiceResponse),
    "/v1/metrics": ("metrics", metrics_service_pb2.ExportMetricsServiceRequest,
                    metrics_service_pb2.ExportMetricsServiceResponse),
    "/v1/logs": ("logs", logs_service_pb2.ExportLogsServiceRequest,
                 logs_service_pb2.ExportLogsServiceResponse),
}
LOCK = threading.Lock()
DISCARD = os.environ.get("OTLP_RECEIVER_DISCARD") == "1"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        known = SIGNALS.get(self.path)
        if known is None:
            self.send_error(404)
            return
        name, request_type, response_type = known
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if DISCARD:
            self.answer(response_type().SerializeToString())
            return
        if self.headers.get("content-type") != "application/x-protobuf":
            self.send_error(415)
            return
        request = request_type()
        try:
            request.ParseFromString(body)
        except DecodeError:
            self.send_error(400)
            return
        line = json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()},
                           "request": MessageToDict(request)})
        with LOCK:
            with open(os.path.join(OUT, name + ".jsonl"), "a") as f:
                f.write(line + "\n")
            with open(os.path.join(OUT, name + ".bin"), "ab") as f:
                f.write(body)
        self.answer(response_type().SerializeToString())

    def answer(self, answer):
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self):
        """Records what any other client sent (the trace context of Flowgate's outbound calls,
        when a test points an identity provider here) and answers 404."""
        line = json.dumps({"path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}})
        with LOCK:
            with open(os.path.join(OUT, "outbound.jsonl"), "a") as f:
                f.write(line + "\n")
        self.send_error(404)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    OUT = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
