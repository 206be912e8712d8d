#!/usr/bin/env python3
"""A webhook receiver for Herald's tests: verifies every request with the `standardwebhooks`
package (an independent implementation of the Standard Webhooks specification) and appends
one JSON line per request to OUT.

usage: webhook_receiver.py PORT OUT SECRETS_FILE [CERT KEY]
  (SECRETS_FILE: one whsec_ secret a line, re-read per request; CERT and KEY: serve HTTPS)

Paths: /ok answers 204 (200 with an empty body for /ok200), /gone answers 410, /slow waits
30 s. Each line: {"path", "webhook_id", "timestamp", "verified": [indices of the secrets
whose signature verified], "type", "message_id", "received_at"}. A request that no secret
verifies gets 400 (and is still recorded, with "verified": []). Prints "ready PORT" once
listening.
"""

import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT, OUT, SECRETS = int(sys.argv[1]), sys.argv[2], sys.argv[3]
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        with open(SECRETS) as f:
            hooks = [Webhook(line.strip()) for line in f if line.strip()]
        verified = []
        for i, hook in enumerate(hooks):
            try:
                hook.verify(body, headers)
                verified.append(i)
            except WebhookVerificationError:
                pass
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        line = {
            "path": self.path,
            "webhook_id": headers.get("webhook-id") or headers.get("Webhook-Id"),
            "timestamp": headers.get("webhook-timestamp") or headers.get("Webhook-Timestamp"),
            "verified": verified,
            "type": doc.get("type"),
            "event_timestamp": doc.get("timestamp"),
            "message_id": (doc.get("data") or {}).get("message_id"),
            "received_at": time.time(),
        }
        with LOCK:
            with open(OUT, "a") as f:
                f.write(json.dumps(line) + "\n")
        if self.path == "/slow":
            time.sleep(30)
        status = 204 if verified else 400
        if self.path == "/gone":
            status = 410
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
if len(sys.argv) > 5:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", server.server_address[1], flush=True)
server.serve_forever()
