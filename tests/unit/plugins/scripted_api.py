"""A scripted Cloudflare API for unit tests: a tiny HTTP server on an ephemeral port (127.0.0.1) that answers
from a script of canned responses and records what it was sent. It exercises the real Cloudflare SDK
transport (retries, Retry-After, timeouts) without the lab.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def envelope(result=None, errors=None, result_info=None):
    body = {"success": not errors, "errors": errors or [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


class ScriptedAPI:
    """Answers each request with the next scripted (status, headers, body, delay) and records requests."""

    def __init__(self):
        self.script = []
        self.requests = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with api.lock:
                    api.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "time": time.monotonic(),
                            "body": body,
                            "auth": self.headers.get("Authorization"),
                        }
                    )
                    step = (
                        api.script.pop(0)
                        if api.script
                        else (500, {}, envelope(errors=[{"code": 0, "message": "script exhausted"}]), 0)
                    )
                status, headers, payload, delay = step
                if delay:
                    time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/client/v4"

    def push(self, status, payload, headers=None, delay=0):
        self.script.append((status, headers or {}, payload, delay))

    def close(self):
        self.server.shutdown()
        self.server.server_close()
