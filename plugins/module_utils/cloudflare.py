"""One Cloudflare API client for every cloudflare_* module of this project.

Transport, authentication, retries (429 honouring Retry-After, 5xx/timeouts with exponential backoff)
and typed HTTP errors come from the official ``cloudflare`` SDK. We call its generic request methods
(``client.get/post/put/patch/delete`` with ``cast_to=object``) instead of the typed resources: touching
``client.zero_trust`` imports hundreds of generated modules (seconds per Ansible task), the generic path
costs only the SDK's base import.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys

from ansible.module_utils.basic import env_fallback, missing_required_lib

# On import, httpx loads its command-line client (rich, click, pygments) when those happen to be installed.
# Modules never use it and it is a third of the SDK's import time, paid by every task. A None entry in
# sys.modules makes httpx take its own ImportError fallback; it is removed again right after.
_SKIP_HTTPX_CLI = "httpx" not in sys.modules and "httpx._main" not in sys.modules
if _SKIP_HTTPX_CLI:
    sys.modules["httpx._main"] = None
try:
    import cloudflare

    HAS_CLOUDFLARE = True
    CLOUDFLARE_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without the SDK
    HAS_CLOUDFLARE = False
    CLOUDFLARE_IMPORT_ERROR = exc
finally:
    if _SKIP_HTTPX_CLI:
        del sys.modules["httpx._main"]

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
PAGE_SIZE = 100

CLOUDFLARE_AUTH_SPEC = {
    "api_token": {"type": "str", "no_log": True, "fallback": (env_fallback, ["CLOUDFLARE_API_TOKEN"])},
    "account_id": {"type": "str", "fallback": (env_fallback, ["CLOUDFLARE_ACCOUNT_ID"])},
    "api_base_url": {
        "type": "str",
        "default": DEFAULT_BASE_URL,
        "fallback": (env_fallback, ["CLOUDFLARE_BASE_URL"]),
    },
    "ca_path": {"type": "path"},
    "timeout": {"type": "float", "default": 30.0},
    "max_retries": {"type": "int", "default": 2},
}


def cloudflare_argument_spec(**module_spec):
    """The shared auth options merged with a module's own options."""
    spec = {name: dict(opts) for name, opts in CLOUDFLARE_AUTH_SPEC.items()}
    spec.update(module_spec)
    return spec


class CloudflareAPIError(Exception):
    """A failed API call, carrying what Cloudflare said (code + message) and the HTTP status."""

    def __init__(self, message, code=None, status=None, errors=None, request=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.errors = errors or []
        self.request = request

    def describe(self):
        parts = []
        if self.code is not None:
            parts.append(f"Cloudflare error {self.code}: {self.message}")
        else:
            parts.append(self.message)
        if self.status is not None:
            parts.append(f"(HTTP {self.status}" + (f", {self.request})" if self.request else ")"))
        elif self.request:
            parts.append(f"({self.request})")
        return " ".join(parts)


def _envelope_errors(body):
    """The ``errors`` list of a Cloudflare envelope, or [] when the body is not one."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [e for e in body["errors"] if isinstance(e, dict)]
    return []


def _error_from_status(exc, request):
    body = exc.body
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    errors = _envelope_errors(body)
    if errors:
        first = errors[0]
        message = first.get("message") or "no message"
        chain = [e for e in first.get("error_chain") or [] if isinstance(e, dict)]
        if chain:
            details = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in chain)
            message = f"{message} ({details})"
        return CloudflareAPIError(
            message,
            code=first.get("code"),
            status=exc.status_code,
            errors=errors,
            request=request,
        )
    return CloudflareAPIError(
        f"HTTP {exc.status_code} without a Cloudflare error envelope",
        status=exc.status_code,
        request=request,
    )


if HAS_CLOUDFLARE:

    class _SDKClient(cloudflare.Cloudflare):
        """The SDK client minus one retry rule that is wrong for us.

        The SDK retries HTTP 409 as a "lock timeout"; Cloudflare answers 409 for a duplicate tunnel name
        (code 1013), which retrying cannot fix. Everything else (429 with Retry-After, 408, 5xx,
        connection errors and timeouts with backoff) is the SDK's own machinery.
        """

        def _should_retry(self, response):
            if response.status_code == 409 and "x-should-retry" not in response.headers:
                return False
            return super()._should_retry(response)


class CloudflareClient:
    """Thin wrapper: one SDK client, envelope unwrapping, paging and errors as CloudflareAPIError."""

    def __init__(
        self, api_token, base_url=DEFAULT_BASE_URL, ca_path=None, timeout=30.0, max_retries=2, account_id=None
    ):
        self.account_id = account_id
        self.timeout = timeout
        self.max_retries = max_retries
        # Verification always on: the system store, or the CA bundle the caller names.
        ssl_context = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        http_client = cloudflare.DefaultHttpxClient(verify=ssl_context)
        self._sdk = _SDKClient(
            api_token=api_token,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
        )
        # The SDK falls back to CLOUDFLARE_API_KEY/CLOUDFLARE_EMAIL from the environment and prefers them
        # over a token; the token the task was given must be the only credential sent.
        self._sdk.api_key = None
        self._sdk.api_email = None
        self._sdk.user_service_key = None

    @classmethod
    def from_module(cls, module):
        if not HAS_CLOUDFLARE:
            module.fail_json(msg=missing_required_lib("cloudflare"), exception=str(CLOUDFLARE_IMPORT_ERROR))
        params = module.params
        if not params.get("api_token"):
            module.fail_json(msg="api_token is required (or set CLOUDFLARE_API_TOKEN)")
        if params.get("ca_path") and not os.path.isfile(params["ca_path"]):
            module.fail_json(msg=f"ca_path {params['ca_path']} is not a readable file")
        try:
            return cls(
                api_token=params["api_token"],
                base_url=params.get("api_base_url") or DEFAULT_BASE_URL,
                ca_path=params.get("ca_path"),
                timeout=params.get("timeout") or 30.0,
                max_retries=params.get("max_retries", 2),
                account_id=params.get("account_id"),
            )
        except (ssl.SSLError, OSError) as exc:
            module.fail_json(msg=f"cannot load ca_path {params.get('ca_path')}: {exc}")

    def require_account(self):
        if not self.account_id:
            raise CloudflareAPIError("account_id is required (or set CLOUDFLARE_ACCOUNT_ID)")
        return self.account_id

    # -- transport ---------------------------------------------------------------------------------------
    def request(self, method, path, body=None, params=None):
        """One API call; returns the envelope's ``result`` (plus ``result_info`` via request_page)."""
        return self._call(method, path, body, params)["result"]

    def _call(self, method, path, body=None, params=None):
        label = f"{method.upper()} {path}"
        options = {"params": params} if params else {}
        call = getattr(self._sdk, method.lower())
        kwargs = {"cast_to": object, "options": options}
        if body is not None:
            kwargs["body"] = body
        try:
            envelope = call(path, **kwargs)
        except cloudflare.APITimeoutError as exc:
            raise CloudflareAPIError(
                f"no answer from the Cloudflare API within timeout={self.timeout}s, "
                f"{self.max_retries + 1} attempt(s) made "
                "(raise timeout or max_retries, or check api_base_url)",
                request=label,
            ) from exc
        except cloudflare.APIStatusError as exc:
            raise _error_from_status(exc, label) from exc
        except cloudflare.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            hint = (
                " (check ca_path)" if isinstance(cause, ssl.SSLError) or "CERTIFICATE" in str(cause) else ""
            )
            raise CloudflareAPIError(
                f"cannot connect to the Cloudflare API: {cause}{hint}", request=label
            ) from exc
        if not isinstance(envelope, dict) or "result" not in envelope:
            raise CloudflareAPIError("unexpected answer (not a Cloudflare envelope)", request=label)
        if envelope.get("success") is False:
            errors = _envelope_errors(envelope)
            first = errors[0] if errors else {}
            raise CloudflareAPIError(
                first.get("message", "success=false"), code=first.get("code"), errors=errors, request=label
            )
        return envelope

    def list_all(self, path, params=None, per_page=PAGE_SIZE):
        """Every item of a paged list endpoint.

        Stops on the first short page or when result_info says there are no more pages, so a server that
        ignores ``page`` cannot make us loop forever.
        """
        items = []
        seen = set()
        page = 1
        while True:
            query = dict(params or {}, page=page, per_page=per_page)
            envelope = self._call("get", path, params=query)
            result = envelope.get("result") or []
            fresh = [item for item in result if item.get("id") not in seen]
            if result and not fresh:
                return items  # the server repeated a page: it ignores `page`
            seen.update(item.get("id") for item in fresh)
            items.extend(fresh)
            info = envelope.get("result_info") or {}
            total_pages = info.get("total_pages")
            if len(result) < per_page or (total_pages is not None and page >= total_pages):
                return items
            page += 1

    # -- tunnels -----------------------------------------------------------------------------------------
    def tunnels_path(self, tunnel_id=None, suffix=None):
        path = f"/accounts/{self.require_account()}/cfd_tunnel"
        if tunnel_id:
            path += f"/{tunnel_id}"
        if suffix:
            path += f"/{suffix}"
        return path

    def find_tunnels(self, name):
        """Non-deleted tunnels with exactly this name (filters again locally: names are exact here)."""
        found = self.list_all(self.tunnels_path(), params={"name": name, "is_deleted": "false"})
        return [t for t in found if t.get("name") == name and not t.get("deleted_at")]

    def get_tunnel(self, tunnel_id):
        return self.request("get", self.tunnels_path(tunnel_id))

    def tunnel_token(self, tunnel_id):
        return self.request("get", self.tunnels_path(tunnel_id, "token"))

    # -- zones -------------------------------------------------------------------------------------------
    def resolve_zone(self, zone):
        """(zone_id, zone_name or None) for a zone given by name or by id."""
        if is_cloudflare_id(zone):
            return zone.lower(), None
        params = {"name": zone.rstrip(".").lower()}
        if self.account_id:
            params["account.id"] = self.account_id
        zones = self.list_all("/zones", params=params, per_page=50)
        zones = [z for z in zones if z.get("name", "").lower() == params["name"]]
        if not zones:
            raise CloudflareAPIError(
                "zone {!r} not found: GET /zones?name={} returned no zone this token can see".format(
                    zone, params["name"]
                )
            )
        return zones[0]["id"], zones[0]["name"]


# -- Cloudflare Access (Zero Trust) ------------------------------------------------------------------------
# Account-level paths (/accounts/{account_id}/access/...). Policies are the reusable kind
# (/access/policies), linked to an application through its `policies` array: the SDK's and the API
# reference's text for the app-scoped /access/apps/{app_id}/policies recommends a reusable policy
# referenced from the application instead, and a reusable policy outlives an application re-creation.
class AccessPaths:
    """Paths and lookups of the Access objects the cloudflare_access_* modules manage."""

    def __init__(self, client):
        self.client = client

    def path(self, kind, object_id=None, suffix=None):
        """kind: apps | policies | service_tokens."""
        path = f"/accounts/{self.client.require_account()}/access/{kind}"
        if object_id:
            path += f"/{object_id}"
        if suffix:
            path += f"/{suffix}"
        return path

    def find(self, kind, what, match):
        """The objects of ``kind`` for which ``match(obj)`` holds; more than one is an error (no guessing)."""
        found = [
            obj for obj in self.client.list_all(self.path(kind), per_page=ACCESS_PAGE_SIZE) if match(obj)
        ]
        if len(found) > 1:
            raise CloudflareAPIError(
                f"{what} matches {len(found)} Access {kind.replace('_', ' ')} "
                f"({', '.join(str(o.get('id')) for o in found)}); "
                "delete the extra ones, the module will not guess"
            )
        return found[0] if found else None

    def ids_for(self, module, option, kind, plural, singular):
        """Ids of the ``kind`` objects O(option) names (by id or name), in order; None when one named in
        check mode does not exist yet (it may be created by an earlier task of the same run)."""
        refs = module.params[option]
        if not refs:
            return []
        known = self.client.list_all(self.path(kind), per_page=ACCESS_PAGE_SIZE)
        ids = []
        for ref in refs:
            found = [obj for obj in known if ref in (obj.get("id"), obj.get("name"))]
            if len(found) > 1:
                raise CloudflareAPIError(f"{option}: {ref!r} names {len(found)} {plural}; use its id")
            if not found:
                if module.check_mode:
                    module.warn(f"{option}: {ref!r} does not exist yet (check mode): reporting a change")
                    return None
                raise CloudflareAPIError(f"{option}: no {singular} is named (or has the id) {ref!r}")
            ids.append(found[0]["id"])
        return ids


# Access list endpoints are reported to accept only some page sizes (1, 5, 10, 20, 25, 50, 100, 1000),
# answering others with 400 / 12091; 100 is one of them.
ACCESS_PAGE_SIZE = 100

# Access refusals: what they most likely point at.
ACCESS_HINTS = {
    11021: "the application id (it does not exist)",
    12130: "the module options (Cloudflare's message names the field)",
    12135: "the object id (it does not exist, or was deleted)",
}


def is_cloudflare_id(value):
    """Cloudflare object ids are 32 lowercase hex characters."""
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdefABCDEF" for c in value)


def new_tunnel_secret():
    """A fresh tunnel secret: 32 random bytes, base64 (the API's documented minimum and format)."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


# Which option to look at for Cloudflare's auth and routing refusals (the message alone names none).
PARAMETER_HINTS = {
    6003: "api_token",
    6111: "api_token",
    9106: "api_token",
    9109: "api_token",
    10000: "api_token (its permissions and the account/zone it covers)",
}


def fail_api(module, exc, what, hints=None):
    """fail_json with Cloudflare's own code and message, naming what we were doing and what to check."""
    hint = {**PARAMETER_HINTS, **(hints or {})}.get(exc.code)
    msg = f"{what}: {exc.describe()}" + (f"; check {hint}" if hint else "")
    module.fail_json(msg=msg, cloudflare_code=exc.code, cloudflare_errors=exc.errors, status_code=exc.status)


def run_module(module, run, what, hints=None):
    """Common tail of every module: build the client, run, map API errors to fail_json, exit.

    ``hints`` maps Cloudflare error codes to the module option that most likely caused them.
    """
    client = CloudflareClient.from_module(module)
    try:
        result = run(module, client)
    except CloudflareAPIError as exc:
        fail_api(module, exc, what, hints)
    module.exit_json(**result)
