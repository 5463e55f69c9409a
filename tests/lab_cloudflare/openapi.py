"""Validation against the shared Cloudflare OpenAPI subset, with its documented defects corrected.

Corrections (see ../shared/api-schemas/README.md): the catch-all ingress rule has no hostname; DNS
request bodies do not carry the response-only `id`/`proxiable`/`created_on`/`modified_on`; OpenAPI 3.0
`nullable` becomes a JSON-Schema null type, and optional properties may be null (the live API sends
`"deleted_at": null`, `"comment": null` … where the schema omits `nullable`). Tunnel 4XX schemas are
`allOf` the success schema (which pins `success: true`) and the failure schema, which nothing can satisfy:
errors are validated against the family's `*_api-response-common-failure` schema instead.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

# A copy of ../shared/api-schemas/cloudflare-tunnel-dns-openapi.json, so a clean clone can run this.
SPEC_PATH = Path(__file__).with_name("cloudflare-openapi-subset.json")
RESPONSE_ONLY = {"id", "proxiable", "created_on", "modified_on"}


@cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k not in ("example", "nullable", "readOnly")}
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    elif isinstance(node.get("properties"), dict):
        required = set(node.get("required", []))
        for name, sub in out["properties"].items():
            if name not in required:
                out["properties"][name] = {"anyOf": [sub, {"type": "null"}]}
    return out


@cache
def components() -> dict[str, Any]:
    schemas = copy.deepcopy(spec()["components"]["schemas"])
    schemas["tunnel_ingressRule"]["required"] = ["service"]
    return {"schemas": _convert(schemas)}


def _schema(path: str, method: str, where: str) -> dict[str, Any]:
    op = spec()["paths"][path][method.lower()]
    if where == "request":
        raw = op["requestBody"]["content"]["application/json"]["schema"]
    else:
        responses = op["responses"]
        key = next(k for k in responses if k.lower() == where.lower())
        raw = responses[key]["content"]["application/json"]["schema"]
    return _convert(copy.deepcopy(raw)) | {"components": components()}


def validate_response(path: str, method: str, status: int, body: Any) -> None:
    """`path` is the OpenAPI template, e.g. "/accounts/{account_id}/cfd_tunnel"."""
    if status < 300:
        jsonschema.validate(body, _schema(path, method, "200"))
        return
    family = "zones" if path == "/zones" else "dns-records" if path.startswith("/zones/") else "tunnel"
    failure = {"$ref": f"#/components/schemas/{family}_api-response-common-failure"}
    jsonschema.validate(body, failure | {"components": components()})


def request_is_valid(path: str, method: str, body: Any) -> bool:
    try:
        validate_request(path, method, body)
    except jsonschema.ValidationError:
        return False
    return True


def validate_request(path: str, method: str, body: Any) -> None:
    schema = _schema(path, method, "request")
    if path.startswith("/zones/{zone_id}/dns_records"):
        name = schema.pop("$ref").rsplit("/", 1)[1]
        schema |= copy.deepcopy(components()["schemas"][name])
        schema["required"] = [r for r in schema.get("required", []) if r not in RESPONSE_ONLY]
    jsonschema.validate(body, schema, format_checker=jsonschema.FormatChecker())
