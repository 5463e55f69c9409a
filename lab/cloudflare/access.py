"""`/accounts/{account_id}/access/…`: Cloudflare Access applications, reusable policies, service tokens.

Shapes from Cloudflare's OpenAPI schema (api-schemas, 2024-08-06 copy: tests/lab_cloudflare/
cloudflare-access-openapi-subset.json) and the current SDK/API reference (service token rotation with
`previous_client_secret_expires_at`, `enabled`). Creates answer 201, app/policy deletes 202 with `{"id"}`,
as the schema declares. State lives in the store's persisted state (`CloudflareState.access`), so a
restarted daemon keeps it; service token secrets are kept only as SHA-256 digests.

Errors (public reports of the live API; the exact wording of some details is ours):
    400 / 12130 "access.api.error.invalid_request: <detail>"   bad body ("app type is missing or invalid",
                                                               "domain does not belong to zone", ...)
    404 / 11021 "access.api.error.unknown_application"         unknown application id
    404 / 12135 "access.api.error.not_found"                   unknown policy or service token id
    400 / 12091 "access.api.error.invalid_url_parameter_value" per_page outside the values Access accepts
    403 / 10000 "Authentication error"                         token without the permission / account
Not verified, chosen and said so: deleting a reusable policy still linked to an application is refused
(400 / 12130); two applications may share a domain (no public report of a refusal).
Only `self_hosted` applications and reusable (linked) policies are emulated: other app types and inline
application policies get 400 / 12130 naming the limitation.

For the lab edge (later): `application_for_host(state, host)`, `service_token_for(state, id, secret)` and
`app_admits_token(state, app, token)` answer what Access decides for a service-token request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from .auth import require_account
from .envelope import CloudflareError, json_object, ok
from .keys import state, token
from .store import CloudflareState, now

APPS_RESOURCE = "Access: Apps and Policies"
TOKENS_RESOURCE = "Access: Service Tokens"
PER_PAGE_ACCEPTED = (1, 5, 10, 20, 25, 50, 100, 1000)
DEFAULT_TOKEN_DURATION = "8760h"
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
DECISIONS = ("allow", "deny", "non_identity", "bypass")
# Rule selectors of the schema's access_rule (one key per rule object).
SELECTORS = {
    "email", "email_list", "email_domain", "everyone", "ip", "ip_list", "certificate", "group",
    "azureAD", "github-organization", "gsuite", "okta", "saml", "service_token",
    "any_valid_service_token", "external_evaluation", "geo", "auth_method", "device_posture",
}  # fmt: skip
APP_BOOLS = {
    "allow_authenticate_via_warp": None,
    "app_launcher_visible": True,
    "auto_redirect_to_identity": False,
    "enable_binding_cookie": False,
    "http_only_cookie_attribute": True,
    "options_preflight_bypass": False,
    "path_cookie_attribute": False,
    "service_auth_401_redirect": False,
    "skip_interstitial": False,
}
APP_STRINGS = ("custom_deny_message", "custom_deny_url", "custom_non_identity_deny_url", "logo_url")
APP_LISTS = ("allowed_idps", "tags", "custom_pages")


# -- errors and helpers ---------------------------------------------------------------------------------
def invalid(detail: str) -> CloudflareError:
    return CloudflareError(400, 12130, f"access.api.error.invalid_request: {detail}")


def not_found() -> CloudflareError:
    return CloudflareError(404, 12135, "access.api.error.not_found")


def unknown_application() -> CloudflareError:
    return CloudflareError(404, 11021, "access.api.error.unknown_application")


def objects(store: CloudflareState, kind: str) -> dict[str, dict[str, Any]]:
    return store.access.setdefault(kind, {})


def check_account(request: web.Request, resource: str, write: bool) -> None:
    account_id = request.match_info["account_id"]
    require_account(token(request), account_id, resource, write)
    if account_id != state(request).account_id:
        raise CloudflareError(403, 10000, "Authentication error")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration_seconds(value: str) -> float:
    return sum(
        float(number) * DURATION_UNITS[unit]
        for number, _, unit in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    )


def check_duration(value: Any, field: str, *, forever: bool = False) -> str:
    if not isinstance(value, str) or not (GO_DURATION.match(value) or (forever and value == "forever")):
        raise invalid(
            f"{field} must be a duration such as 300ms or 2h45m" + (" or forever" if forever else "")
        )
    return value


def check_bool(body: dict[str, Any], field: str, default: Any) -> Any:
    value = body.get(field, default)
    if value is not None and not isinstance(value, bool):
        raise invalid(f"{field} must be a boolean")
    return value


def listed(request: web.Request, items: list[dict[str, Any]]) -> web.Response:
    """One page; Access list endpoints accept only some per_page values (12091 otherwise)."""
    try:
        page = int(request.query.get("page", 1))
        per_page = int(request.query.get("per_page", 20))
    except ValueError as exc:
        raise CloudflareError(400, 12091, "access.api.error.invalid_url_parameter_value") from exc
    if page < 1 or per_page not in PER_PAGE_ACCEPTED:
        raise CloudflareError(400, 12091, "access.api.error.invalid_url_parameter_value")
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": max(1, -(-len(items) // per_page)),
    }
    return ok(chunk, info)


def ordered(items: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items.values(), key=lambda o: (o["created_at"], o["id"]))


# -- service tokens ---------------------------------------------------------------------------------
def token_view(tok: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "client_id", "duration", "expires_at", "created_at", "updated_at", "enabled")
    return {k: tok[k] for k in keys} | {"last_seen_at": tok.get("last_seen_at")}


def new_secret(tok: dict[str, Any]) -> str:
    secret = secrets.token_hex(32)
    tok["secret_sha256"] = digest(secret)
    return secret


def expiry(duration: str, start: datetime) -> str | None:
    return None if duration == "forever" else stamp(start + timedelta(seconds=duration_seconds(duration)))


def find_token(request: web.Request, write: bool) -> dict[str, Any]:
    check_account(request, TOKENS_RESOURCE, write)
    tok = objects(state(request), "service_tokens").get(request.match_info["token_id"])
    if tok is None:
        raise not_found()
    return tok


def check_token_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid("name is required")
    return value


async def list_tokens(request: web.Request) -> web.Response:
    check_account(request, TOKENS_RESOURCE, write=False)
    items = ordered(objects(state(request), "service_tokens"))
    if "name" in request.query:
        items = [t for t in items if t["name"] == request.query["name"]]
    if "search" in request.query:
        items = [t for t in items if request.query["search"].lower() in t["name"].lower()]
    return listed(request, [token_view(t) for t in items])


async def create_token(request: web.Request) -> web.Response:
    check_account(request, TOKENS_RESOURCE, write=True)
    body = await json_object(request)
    created = datetime.now(UTC)
    duration = check_duration(body.get("duration", DEFAULT_TOKEN_DURATION), "duration", forever=True)
    tok = {
        "id": str(uuid.uuid4()),
        "name": check_token_name(body.get("name")),
        "client_id": f"{secrets.token_hex(16)}.access",
        "duration": duration,
        "expires_at": expiry(duration, created),
        "enabled": check_bool(body, "enabled", True),
        "created_at": stamp(created),
        "updated_at": stamp(created),
        "client_secret_version": 1,
        "previous_secret_sha256": None,
        "previous_client_secret_expires_at": None,
    }
    secret = new_secret(tok)
    store = state(request)
    objects(store, "service_tokens")[tok["id"]] = tok
    store.save()
    return ok(token_view(tok) | {"client_secret": secret}, status=201)


async def get_token(request: web.Request) -> web.Response:
    return ok(token_view(find_token(request, write=False)))


async def update_token(request: web.Request) -> web.Response:
    tok = find_token(request, write=True)
    body = await json_object(request)
    if "name" in body:
        tok["name"] = check_token_name(body["name"])
    if "duration" in body:
        tok["duration"] = check_duration(body["duration"], "duration", forever=True)
        tok["expires_at"] = expiry(tok["duration"], parse_time(tok["created_at"]))
    tok["enabled"] = check_bool(body, "enabled", tok["enabled"])
    if "previous_client_secret_expires_at" in body:
        tok["previous_client_secret_expires_at"] = check_time(body["previous_client_secret_expires_at"])
    tok["updated_at"] = now()
    state(request).save()
    return ok(token_view(tok))


def check_time(value: Any) -> str:
    try:
        return stamp(parse_time(value))
    except (TypeError, ValueError, AttributeError) as exc:
        raise invalid("previous_client_secret_expires_at must be an RFC 3339 date-time") from exc


async def rotate_token(request: web.Request) -> web.Response:
    """A new secret; the old one keeps working until previous_client_secret_expires_at (default: now)."""
    tok = find_token(request, write=True)
    body = await json_object(request, required=False)
    until = (
        check_time(body["previous_client_secret_expires_at"])
        if "previous_client_secret_expires_at" in body
        else now()
    )
    tok["previous_secret_sha256"] = tok["secret_sha256"]
    tok["previous_client_secret_expires_at"] = until
    tok["client_secret_version"] += 1
    secret = new_secret(tok)
    tok["updated_at"] = now()
    state(request).save()
    return ok(token_view(tok) | {"client_secret": secret})


async def refresh_token(request: web.Request) -> web.Response:
    tok = find_token(request, write=True)
    tok["expires_at"] = expiry(tok["duration"], datetime.now(UTC))
    tok["updated_at"] = now()
    state(request).save()
    return ok(token_view(tok))


async def delete_token(request: web.Request) -> web.Response:
    tok = find_token(request, write=True)
    store = state(request)
    del objects(store, "service_tokens")[tok["id"]]
    store.save()
    return ok(token_view(tok))


# -- reusable policies ---------------------------------------------------------------------------------
def check_rules(store: CloudflareState, value: Any, field: str, *, required: bool) -> list[dict[str, Any]]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise invalid(f"{field} must be a non-empty list of rules" if required else f"{field} must be a list")
    for rule in value:
        if not isinstance(rule, dict) or len(rule) != 1 or next(iter(rule)) not in SELECTORS:
            raise invalid(f"{field}: each rule is an object with exactly one known selector")
        selector, spec = next(iter(rule.items()))
        if not isinstance(spec, dict):
            raise invalid(f"{field}: {selector} must be an object")
        if selector == "service_token":
            token_id = spec.get("token_id")
            if not isinstance(token_id, str) or token_id not in objects(store, "service_tokens"):
                raise invalid(
                    f"{field}: service_token.token_id {token_id!r} is not a service token of this account"
                )
    return value


def policy_from_body(store: CloudflareState, body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("name is required")
    if body.get("decision") not in DECISIONS:
        raise invalid(f"decision must be one of {', '.join(DECISIONS)}")
    policy = {
        "name": name,
        "decision": body["decision"],
        "include": check_rules(store, body.get("include"), "include", required=True),
        "exclude": check_rules(store, body.get("exclude"), "exclude", required=False),
        "require": check_rules(store, body.get("require"), "require", required=False),
        "session_duration": check_duration(body.get("session_duration", "24h"), "session_duration"),
    }
    for flag in ("approval_required", "isolation_required", "purpose_justification_required"):
        policy[flag] = check_bool(body, flag, False)
    return policy


def policy_view(store: CloudflareState, policy: dict[str, Any]) -> dict[str, Any]:
    apps = objects(store, "apps").values()
    count = sum(1 for app in apps if any(link["id"] == policy["id"] for link in app["policies"]))
    return policy | {"reusable": True, "app_count": count}


def find_policy(request: web.Request, write: bool) -> dict[str, Any]:
    check_account(request, APPS_RESOURCE, write)
    policy = objects(state(request), "policies").get(request.match_info["policy_id"])
    if policy is None:
        raise not_found()
    return policy


async def list_policies(request: web.Request) -> web.Response:
    check_account(request, APPS_RESOURCE, write=False)
    store = state(request)
    return listed(request, [policy_view(store, p) for p in ordered(objects(store, "policies"))])


async def create_policy(request: web.Request) -> web.Response:
    check_account(request, APPS_RESOURCE, write=True)
    store = state(request)
    policy = policy_from_body(store, await json_object(request))
    policy |= {"id": str(uuid.uuid4()), "created_at": now(), "updated_at": now()}
    objects(store, "policies")[policy["id"]] = policy
    store.save()
    return ok(policy_view(store, policy), status=201)


async def get_policy(request: web.Request) -> web.Response:
    return ok(policy_view(state(request), find_policy(request, write=False)))


async def update_policy(request: web.Request) -> web.Response:
    policy = find_policy(request, write=True)
    store = state(request)
    policy |= policy_from_body(store, await json_object(request)) | {"updated_at": now()}
    store.save()
    return ok(policy_view(store, policy))


async def delete_policy(request: web.Request) -> web.Response:
    policy = find_policy(request, write=True)
    store = state(request)
    users = policy_view(store, policy)["app_count"]
    if users:
        raise invalid(f"policy is used by {users} application(s); remove it from them first")
    del objects(store, "policies")[policy["id"]]
    store.save()
    return ok({"id": policy["id"]}, status=202)


# -- applications ---------------------------------------------------------------------------------
def check_domain(store: CloudflareState, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid("domain is required for a self_hosted application")
    host = value.split("/", 1)[0].lower().rstrip(".")
    if not any(host == z["name"] or host.endswith("." + z["name"]) for z in store.zones):
        raise invalid("domain does not belong to zone")
    return value


def check_links(store: CloudflareState, value: Any) -> list[dict[str, Any]]:
    """`policies`: reusable policy ids, bare or as {id, precedence}; precedence defaults to the position."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("policies must be a list")
    links = []
    for position, item in enumerate(value, start=1):
        link = {"id": item} if isinstance(item, str) else item
        if not isinstance(link, dict) or any(k in link for k in ("decision", "include")):
            raise invalid("inline application policies are not emulated by the lab: link reusable policies")
        if link.get("id") not in objects(store, "policies"):
            raise invalid(f"policy {link.get('id')!r} does not exist")
        precedence = link.get("precedence", position)
        if not isinstance(precedence, int) or isinstance(precedence, bool):
            raise invalid("policies[].precedence must be an integer")
        links.append({"id": link["id"], "precedence": precedence})
    if len({link["precedence"] for link in links}) != len(links):
        raise invalid("policies[].precedence must be unique within an application")
    return sorted(links, key=lambda link: link["precedence"])


def app_from_body(store: CloudflareState, body: dict[str, Any]) -> dict[str, Any]:
    app_type = body.get("type")
    if not isinstance(app_type, str) or not app_type:
        raise invalid("app type is missing or invalid")
    if app_type != "self_hosted":
        raise invalid(f"app type {app_type} is not emulated by the lab (self_hosted only)")
    domain = check_domain(store, body.get("domain"))
    name = body.get("name", domain)
    if not isinstance(name, str):
        raise invalid("name must be a string")
    app = {"type": app_type, "domain": domain, "name": name}
    app["session_duration"] = check_duration(body.get("session_duration", "24h"), "session_duration")
    app |= {field: check_bool(body, field, default) for field, default in APP_BOOLS.items()}
    for field in APP_STRINGS:
        if field in body and not isinstance(body[field], str):
            raise invalid(f"{field} must be a string")
        app[field] = body.get(field)
    for field in APP_LISTS:
        if not isinstance(body.get(field, []), list):
            raise invalid(f"{field} must be a list")
        app[field] = body.get(field, [])
    app["self_hosted_domains"] = body.get("self_hosted_domains") or [domain]
    app["policies"] = check_links(store, body.get("policies"))
    return {k: v for k, v in app.items() if v is not None}


def app_view(store: CloudflareState, app: dict[str, Any]) -> dict[str, Any]:
    linked = []
    for link in app["policies"]:
        policy = objects(store, "policies").get(link["id"])
        if policy is not None:
            linked.append(policy_view(store, policy) | {"precedence": link["precedence"]})
    destinations = [{"type": "public", "uri": d} for d in app["self_hosted_domains"]]
    return app | {"uid": app["id"], "policies": linked, "destinations": destinations}


def find_app(request: web.Request, write: bool) -> dict[str, Any]:
    check_account(request, APPS_RESOURCE, write)
    app = objects(state(request), "apps").get(request.match_info["app_id"])
    if app is None:
        raise unknown_application()
    return app


async def list_apps(request: web.Request) -> web.Response:
    check_account(request, APPS_RESOURCE, write=False)
    store = state(request)
    items = ordered(objects(store, "apps"))
    for field in ("name", "domain", "aud"):
        if field in request.query:
            items = [a for a in items if a[field] == request.query[field]]
    return listed(request, [app_view(store, a) for a in items])


async def create_app(request: web.Request) -> web.Response:
    check_account(request, APPS_RESOURCE, write=True)
    store = state(request)
    app = app_from_body(store, await json_object(request))
    app |= {"id": str(uuid.uuid4()), "aud": secrets.token_hex(32), "created_at": now(), "updated_at": now()}
    objects(store, "apps")[app["id"]] = app
    store.save()
    return ok(app_view(store, app), status=201)


async def get_app(request: web.Request) -> web.Response:
    return ok(app_view(state(request), find_app(request, write=False)))


async def update_app(request: web.Request) -> web.Response:
    """PUT replaces the application: what the body leaves out returns to its default."""
    app = find_app(request, write=True)
    store = state(request)
    fresh = app_from_body(store, await json_object(request))
    kept = {k: app[k] for k in ("id", "aud", "created_at")}
    app.clear()
    app |= fresh | kept | {"updated_at": now()}
    store.save()
    return ok(app_view(store, app))


async def delete_app(request: web.Request) -> web.Response:
    app = find_app(request, write=True)
    store = state(request)
    del objects(store, "apps")[app["id"]]
    store.save()
    return ok({"id": app["id"]}, status=202)


# -- what the lab edge asks ---------------------------------------------------------------------------------
def application_for_host(store: CloudflareState, host: str) -> dict[str, Any] | None:
    """The self-hosted application protecting a hostname (a path-less domain or one of its domains)."""
    host = host.lower().rstrip(".")
    for app in ordered(objects(store, "apps")):
        if any(d.split("/", 1)[0].lower().rstrip(".") == host for d in app["self_hosted_domains"]):
            return app
    return None


def service_token_for(store: CloudflareState, client_id: str, client_secret: str) -> dict[str, Any] | None:
    """The enabled, unexpired service token these headers name (current secret, or the old one until it
    expires), or None."""
    at = datetime.now(UTC)
    for tok in objects(store, "service_tokens").values():
        if not hmac.compare_digest(tok["client_id"], client_id) or not tok["enabled"]:
            continue
        if tok["expires_at"] and parse_time(tok["expires_at"]) <= at:
            return None
        if hmac.compare_digest(tok["secret_sha256"], digest(client_secret)):
            return tok
        previous = tok.get("previous_secret_sha256")
        until = tok.get("previous_client_secret_expires_at")
        if (
            previous
            and until
            and parse_time(until) > at
            and hmac.compare_digest(previous, digest(client_secret))
        ):
            return tok
        return None
    return None


def app_admits_token(store: CloudflareState, app: dict[str, Any], tok: dict[str, Any]) -> bool:
    """Whether a non_identity/allow policy of the app includes this token (exclude rules win)."""

    def names(rules: list[dict[str, Any]]) -> bool:
        return any(
            "any_valid_service_token" in r or r.get("service_token", {}).get("token_id") == tok["id"]
            for r in rules
        )

    for link in app["policies"]:
        policy = objects(store, "policies").get(link["id"])
        if policy is None or policy["decision"] not in ("non_identity", "allow"):
            continue
        if names(policy["include"]) and not names(policy["exclude"]):
            return True
    return False


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    base = f"{prefix}/accounts/{{account_id}}/access"
    router.add_get(f"{base}/apps", list_apps)
    router.add_post(f"{base}/apps", create_app)
    router.add_get(f"{base}/apps/{{app_id}}", get_app)
    router.add_put(f"{base}/apps/{{app_id}}", update_app)
    router.add_delete(f"{base}/apps/{{app_id}}", delete_app)
    router.add_get(f"{base}/policies", list_policies)
    router.add_post(f"{base}/policies", create_policy)
    router.add_get(f"{base}/policies/{{policy_id}}", get_policy)
    router.add_put(f"{base}/policies/{{policy_id}}", update_policy)
    router.add_delete(f"{base}/policies/{{policy_id}}", delete_policy)
    tokens = f"{base}/service_tokens"
    router.add_get(tokens, list_tokens)
    router.add_post(tokens, create_token)
    router.add_get(f"{tokens}/{{token_id}}", get_token)
    router.add_put(f"{tokens}/{{token_id}}", update_token)
    router.add_delete(f"{tokens}/{{token_id}}", delete_token)
    router.add_post(f"{tokens}/{{token_id}}/rotate", rotate_token)
    router.add_post(f"{tokens}/{{token_id}}/refresh", refresh_token)
