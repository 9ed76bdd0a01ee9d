#!/usr/bin/env python3
"""A fast webhook receiver for tests/bench/pipeline.sh --webhook: answers every POST 204 at
once and writes the number of events received so far to a file.

    webhook_receiver.py PORT COUNT_FILE
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, out = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
total = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global total
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        n = len(json.loads(body).get("events", []))
        self.send_response(204)
        self.end_headers()
        with lock:
            total += n
            with open(out, "w") as f:
                f.write(str(total))

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
