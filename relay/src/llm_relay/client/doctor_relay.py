"""doctor's relay checks: /healthz, envelope round trip, token, upstream (models + a 1-token completion).

They go through the same HTTP clients as `ask` and `serve-local`, so they test the real code path. Who
refused a request is told apart by who could have: the relay answers envelope and token failures itself
(OpenAI-shaped body with a string `code`), the upstream's own 401 reaches us only after both passed.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from llm_relay import envelope, envelope_v2

from ._http import httpx
from .codec_v2 import AccessRefused, is_v2_answer
from .config import Profile
from .doctor_access import edge_refusal, relay_refusal
from .doctor_net import Check, Timer
from .factory import http_client, openai_client, raw_http_client
from .transport import ENVELOPE_PATH, RelayCodec

# The relay's own codes for a refused client token (llm_relay.server.app); any other 401 is the upstream's.
RELAY_TOKEN_CODES = ("missing_token", "invalid_token")
# Server clocks further apart than this eat into the envelope TTL (120 s by default).
MAX_CLOCK_SKEW = 30


def error_of(response: Any) -> tuple[str, str]:
    """(code, message) of an OpenAI/OpenRouter-shaped error body; codes may be strings or numbers."""
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return "", response.text[:200] if hasattr(response, "text") else ""
    if not isinstance(error, dict):
        return "", str(error)[:200]
    return str(error.get("code") or error.get("type") or ""), str(error.get("message", ""))[:200]


def _transport_failure(name: str, exc: Exception) -> Check:
    if isinstance(exc, AccessRefused):  # a sealed request refused at the edge (access.py)
        return Check(name, "fail", str(exc), "access_refused")
    if isinstance(exc, httpx.ProxyError):
        return Check(name, "fail", f"proxy refused the request: {exc}", "proxy_error")
    if isinstance(exc, httpx.TimeoutException):
        return Check(
            name, "fail", f"timed out: {exc!r}", "relay_timeout", "raise `timeout`; is the relay up?"
        )
    return Check(name, "fail", f"cannot reach the relay: {exc!r}", "relay_unreachable")


def check_health(profile: Profile) -> Check:
    with Timer() as timer, raw_http_client(profile) as client:
        try:
            response = client.get(profile.root + "/healthz")
        except httpx.HTTPError as exc:
            return _transport_failure("healthz", exc)
    refused = edge_refusal(profile, response, "access")
    if refused is not None:
        return refused
    if response.status_code != 200:
        return Check(
            "healthz",
            "fail",
            f"/healthz answered {response.status_code}: {response.text[:120]}",
            "relay_unhealthy",
            "is `url` the relay (and not some other site)? check the relay logs",
        )
    detail = "relay is up"
    check = Check("healthz", "ok", detail, ms=timer.ms)
    date = response.headers.get("date")
    if date:
        skew = time.time() - email.utils.parsedate_to_datetime(date).timestamp()
        if abs(skew) > MAX_CLOCK_SKEW and profile.encrypting:
            check.status, check.code = "warn", "clock_skew"
            check.detail = f"relay is up, but clocks differ by {skew:+.0f} s (envelopes expire after 120 s)"
            check.hint = "synchronise this PC's clock (NTP)"
    return check


def check_envelope(profile: Profile) -> Check:
    """Which envelope version this client speaks with the relay, and whether the relay opens it.

    Seals `GET /healthz` without a token (any sealed answer proves the key works) in the configured
    version: v2 unless `envelope = "v1"`. A plain answer to v2 is a failure, never a reason to try v1: it
    is what a proxy forging refusals would send (the client refuses it the same way).
    """
    if not profile.fernet_key:
        return Check("envelope", "skip", "no fernet_key configured (encrypt off)")
    codec = RelayCodec(profile.with_overrides(encrypt=True))
    probe = httpx.Request("GET", profile.root + "/healthz")
    v2 = codec.sealed_v2(probe, b"")
    with Timer() as timer, raw_http_client(profile) as raw:
        try:
            if v2 is not None:
                response = raw.send(v2[0])
            else:
                inner = envelope.InnerRequest(method="GET", path="/healthz")
                headers = {"Content-Type": envelope.CONTENT_TYPE, "Accept": "*/*"}
                sealed = envelope.seal_request(codec.fernet, inner)
                response = raw.post(profile.root + ENVELOPE_PATH, content=sealed, headers=headers)
        except httpx.HTTPError as exc:
            return _transport_failure("envelope", exc)
    refused = edge_refusal(profile, response, "envelope") or relay_refusal(response, "envelope")
    if refused is not None:
        return refused
    if v2 is not None:
        if is_v2_answer(response):
            return _v2_opened(codec, response, v2[1], timer)
        return _refused(response, "v2")
    if codec.kind(response) != "sealed":
        return _refused(response, "v1")
    try:
        inner_response = envelope.open_response(codec.fernet, response.content)
    except envelope.EnvelopeError as exc:
        return Check(
            "envelope",
            "fail",
            f"relay answered with a key we cannot open: {exc}",
            "fernet_key_rejected",
            "the relay encrypts answers with its newest key: update fernet_key",
        )
    detail = f"envelope v1 ({codec.reason}); relay opened it (inner status {inner_response.status})"
    hint = "v1 shows the proxy more (a named content type, no reply binding, no padding): add this "
    hint += "client's key to the relay's client-keys (site.yml does) and remove `envelope = \"v1\"`"
    return Check("envelope", "warn", detail, "envelope_v1", hint, ms=timer.ms)


def _v2_opened(codec: RelayCodec, response: Any, nonce: bytes, timer: Timer) -> Check:
    opener = envelope_v2.ReplyOpener(codec.v2.key, nonce)
    try:
        opener.feed(response.content)
        opener.close()
    except envelope.EnvelopeError as exc:
        return Check("envelope", "fail", f"relay's sealed answer is unusable: {exc}", "sealed_reply_invalid")
    status = opener.head[0] if opener.head else 0
    detail = f"envelope v2 ({codec.reason}); relay opened it and sealed its answer (inner status {status})"
    return Check("envelope", "ok", detail, ms=timer.ms)


def _refused(response: Any, version: str) -> Check:
    code, message = error_of(response)
    if response.status_code == 403 and "replay" not in code:
        return Check(
            "envelope",
            "fail",
            f"relay could not open the {version} envelope ({response.status_code} {code}: {message})",
            "fernet_key_rejected",
            "fernet_key differs from the relay's keys (or the clocks differ by more than the TTL)",
        )
    if code == "envelope_disabled":
        return Check(
            "envelope",
            "fail",
            "the relay does not accept envelope v1 and has no v2 key for this client",
            "envelope_disabled",
            "add the client's key to the relay's vault (llm-relay keygen)",
        )
    if version == "v2":
        return Check(
            "envelope",
            "fail",
            f"the envelope v2 probe got a plain answer ({response.status_code} {code}: {message}); the "
            "relay seals every answer to an envelope it can open, so either it has no v2 key for this "
            "client (its client-keys) or something on the path answered in its place (a proxy)",
            "envelope_not_sealed",
            "compare with the relay's access log: no line for this probe means the proxy answered; "
            "the client never falls back to v1 on such an answer",
        )
    return Check(
        "envelope", "fail", f"unexpected answer {response.status_code} {code}: {message}", "envelope_failed"
    )


def check_auth(profile: Profile) -> Check:
    """`GET /v1/providers` with the token (sealed when encrypting): answered by the relay itself."""
    with Timer() as timer, http_client(profile) as client:
        try:
            response = client.get(profile.root + "/v1/providers")
        except httpx.HTTPError as exc:
            return _transport_failure("auth", exc)
    refused = edge_refusal(profile, response, "auth", "/v1/providers") or relay_refusal(response, "auth")
    if refused is not None:
        return refused
    channel = "envelope" if profile.encrypting else f"token via {profile.token_channel}"
    if response.status_code in (401, 403):
        code, message = error_of(response)
        hint = "the token is not in the relay's client-tokens (or was rotated): run keygen, update both sides"
        if profile.token_channel == "bearer" and not profile.encrypting:  # noqa: S105
            hint += '; a proxy that strips Authorization causes this too: use token_channel = "path"'
        return Check(
            "auth",
            "fail",
            f"relay rejected the token ({response.status_code} {code}: {message})",
            "token_rejected",
            hint,
        )
    if response.status_code >= 400:
        code, message = error_of(response)
        return Check("auth", "fail", f"{response.status_code} {code}: {message}", "auth_failed")
    return Check("auth", "ok", f"token accepted ({channel})", ms=timer.ms)


def _api_failure(profile: Profile, name: str, exc: Exception) -> Check:
    import openai

    if isinstance(exc, openai.APIStatusError):
        refused = edge_refusal(profile, exc.response, name, "/v1/models") or relay_refusal(exc.response, name)
        if refused is not None:
            return refused
        code, message = error_of(exc.response)
        if code in RELAY_TOKEN_CODES:
            return Check(name, "fail", f"relay rejected the token ({code}: {message})", "token_rejected")
        if exc.status_code == 401:
            return Check(
                name,
                "fail",
                f"upstream rejected the relay's API key (401: {message})",
                "upstream_key_rejected",
                "the provider key in the relay's vault is wrong or revoked: "
                "update it and run the rotation playbook",
            )
        return Check(name, "fail", f"{exc.status_code} {code}: {message}", "upstream_error")
    if isinstance(exc, openai.APIConnectionError):
        if isinstance(exc.__cause__, AccessRefused):
            return Check(name, "fail", str(exc.__cause__), "access_refused")
        return Check(name, "fail", f"cannot reach the relay: {exc.__cause__ or exc}", "relay_unreachable")
    raise exc


def check_upstream(profile: Profile) -> list[Check]:
    import openai

    client = openai_client(profile, max_retries=0)
    checks: list[Check] = []
    with Timer() as timer:
        try:
            models = [m.id for m in client.models.list().data]
        except openai.OpenAIError as exc:
            return [_api_failure(profile, "models", exc)]
    checks.append(Check("models", "ok", f"{len(models)} models listed", ms=timer.ms))
    model = profile.model if profile.model in models or not models else models[0]
    with Timer() as timer:
        try:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "ping"}], max_tokens=1
            )
        except openai.OpenAIError as exc:
            checks.append(_api_failure(profile, "completion", exc))
            return checks
    note = "" if model == profile.model else f" (configured model {profile.model!r} not listed)"
    checks.append(Check("completion", "ok", f"1-token completion from {model}{note}", ms=timer.ms))
    return checks
