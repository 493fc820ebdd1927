#!/usr/bin/env python3
"""An alert-webhook receiver for the signals tests (issue 14): every POST is verified with the
reference Standard Webhooks library (`standardwebhooks`, PyPI) under the secret in SECRET_FILE,
read at each request (the test writes it once Flowgate has made it). A delivery that verifies is
answered 204; any other 400. Each is appended to OUT_FILE as one JSON line:
{"verified": bool, "payload": <the JSON body, or null>, "headers": {...}}.
Prints {"port": N} on stdout once listening; SIGTERM stops it.

Usage: receiver.py SECRET_FILE OUT_FILE
"""
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            with open(SECRET_FILE) as f:
                secret = f.read().strip()
            payload = Webhook(secret).verify(body, headers)
            verified = True
        except (OSError, WebhookVerificationError, ValueError):
            payload, verified = None, False
        with LOCK, open(OUT_FILE, "a") as f:
            f.write(json.dumps({"verified": verified, "payload": payload, "headers": headers}) + "\n")
        self.send_response(204 if verified else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    SECRET_FILE, OUT_FILE = sys.argv[1], sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
