"""Validation against the Access part of Cloudflare's OpenAPI schema (cloudflare-access-openapi-subset.json).

The subset is cut from the same api-schemas copy (2024-08-06) as the tunnel/DNS one, with the same
conversion (openapi._convert: OpenAPI 3.0 `nullable`, optional properties that the live API sends as
null). It lives in its own file so the Access paths can be added without rewriting the tunnel/DNS one.
Known gap of that copy: `POST …/service_tokens/{id}/rotate` has no request body there; the current API
reference and SDK (5.x) send `previous_client_secret_expires_at`, which the emulator takes.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from .openapi import _convert

SPEC_PATH = Path(__file__).with_name("cloudflare-access-openapi-subset.json")
FAILURE = {"$ref": "#/components/schemas/access_api-response-common-failure"}


@cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


@cache
def components() -> dict[str, Any]:
    return {"schemas": _convert(copy.deepcopy(spec()["components"]["schemas"]))}


def _schema(path: str, method: str, where: str) -> dict[str, Any]:
    op = spec()["paths"][path][method.lower()]
    if where == "request":
        raw = op["requestBody"]["content"]["application/json"]["schema"]
    else:
        raw = op["responses"][where]["content"]["application/json"]["schema"]
    return _convert(copy.deepcopy(raw)) | {"components": components()}


def documented_status(path: str, method: str) -> int:
    """The success status the schema declares (201 for creates, 202 for some deletes, else 200)."""
    return next(int(k) for k in spec()["paths"][path][method.lower()]["responses"] if k.startswith("2"))


def validate_response(path: str, method: str, status: int, body: Any) -> None:
    """`path` is the OpenAPI template, e.g. "/accounts/{account_id}/access/apps"."""
    if status < 300:
        assert status == documented_status(path, method), (path, method, status)
        jsonschema.validate(body, _schema(path, method, str(status)))
        return
    jsonschema.validate(body, FAILURE | {"components": components()})


def request_is_valid(path: str, method: str, body: Any) -> bool:
    try:
        jsonschema.validate(body, _schema(path, method, "request"), format_checker=jsonschema.FormatChecker())
    except jsonschema.ValidationError:
        return False
    return True
