#!/usr/bin/env python3
"""A small HTTP service the e2e test runs INSIDE a lab container (stdlib only: python3 alone there).

GET /            "e2e origin <marker> in <hostname>" (the marker is argv[2])
GET /sse?n=&delay=   text/event-stream; each event carries the wall-clock time it was written
                 (containers share the host's kernel clock, so the test compares times directly)
"""

import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/sse":
            self.stream(parse_qs(url.query))
            return
        body = f"e2e origin {sys.argv[2]} in {socket.gethostname()}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, query):
        count, delay = int(query.get("n", ["5"])[0]), float(query.get("delay", ["0.3"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for i in range(count):
            if i:
                time.sleep(delay)
            self.wfile.write(f"data: event {i} t={time.time():.6f}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
