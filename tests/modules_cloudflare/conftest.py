"""Fixtures for the Cloudflare module tests.

`plugins/module_utils/cloudflare.py` is imported the way Ansible imports it (as
`ansible.module_utils.cloudflare`), so the modules under test load unchanged.

`scripted_api` is a tiny HTTP server on an ephemeral port that answers from a script of canned responses;
it exercises the real SDK transport (retries, Retry-After, timeouts) without the lab. Everything that
needs Cloudflare semantics runs against the lab emulator instead (test_playbooks.py).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import ansible.module_utils
import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO / "plugins" / "module_utils"
MODULES = REPO / "plugins" / "modules"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_module_utils():
    if "ansible.module_utils.cloudflare" not in sys.modules:
        mod = _load("ansible.module_utils.cloudflare", MODULE_UTILS / "cloudflare.py")
        ansible.module_utils.cloudflare = mod
    return sys.modules["ansible.module_utils.cloudflare"]


def load_plugin(name: str):
    load_module_utils()
    return _load(f"cloudflare_plugin_{name}", MODULES / f"{name}.py")


@pytest.fixture(scope="session")
def cf_utils():
    return load_module_utils()


@pytest.fixture(scope="session")
def ingress():
    return load_plugin("cloudflare_tunnel_ingress")


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


@pytest.fixture
def scripted_api():
    api = ScriptedAPI()
    yield api
    api.close()
