"""What the access log and the metrics record of a request that came in an envelope: the inner request.

Outside, every envelope is `POST` answered `200` (that is the point: the proxy learns nothing). The
operator needs the truth: the inner method, and the status inside the sealed answer - the provider's 429
or 529, the relay's own 401 or 409 - so a burst of rate-limited requests does not show as all-200. The
sealed reply is wrapped once (`observe`); whatever it seals leaves its status on the request's `Outcome`,
and `effective` gives the access line and `llm_relay_requests_total` the inner method and status.
"""

from __future__ import annotations

from typing import Any

_STATUS, _METHOD = "inner_status", "inner_method"


class ObservedReply:
    """A sealed reply that notes the status of each answer it seals on `outcome`."""

    def __init__(self, reply: Any, outcome: Any) -> None:
        self._reply, self._outcome = reply, outcome
        self.sealed = reply.sealed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reply, name)

    def _note(self, status: int) -> None:
        setattr(self._outcome, _STATUS, status)

    def full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
        self._note(status)
        return self._reply.full(status, headers, body)

    def json(self, status: int, doc: object, headers: dict[str, str] | None = None) -> Any:
        self._note(status)
        return self._reply.json(status, doc, headers)

    def error(self, err: Any) -> Any:
        self._note(err.status)
        return self._reply.error(err)

    async def open_stream(self, request: Any, status: int, headers: list[tuple[str, str]]) -> Any:
        self._note(status)
        return await self._reply.open_stream(request, status, headers)


def observe(reply: Any, outcome: Any, method: str = "") -> ObservedReply:
    """Wrap the sealed reply of one envelope; `method` is the inner method once the envelope is open."""
    if method:
        setattr(outcome, _METHOD, method)
    return reply if isinstance(reply, ObservedReply) else ObservedReply(reply, outcome)


def opened(outcome: Any, method: str) -> None:
    """The envelope is open: its inner method is what the request was."""
    setattr(outcome, _METHOD, method)


def effective(outcome: Any, status: int, method: str) -> tuple[int, str]:
    """(status, method) for the access line and the metrics. The outer status still wins where it says
    more than the inner one: 499 (the client went away) and 502 (a stream cut by an upstream failure)."""
    inner_status = getattr(outcome, _STATUS, 0)
    inner_method = getattr(outcome, _METHOD, "") or method
    if not inner_status or (status in (499, 502) and status != inner_status):
        return status, inner_method
    return inner_status, inner_method


def sealed_refusal(exc: Any, state: Any, outcome: Any) -> Any:
    """The answer to an envelope that decrypted but whose content is wrong (a bad inner field): sealed
    under the key that opened it, like every answer after a successful decrypt, so the proxy learns
    neither the field nor the status. None when the envelope did not open (the caller answers plainly)."""
    from llm_relay import envelope_v2

    from .errors import RelayError
    from .reply import SealedReply, SealedReplyV2

    opened_by = getattr(exc, "opened_by", None)
    if opened_by is None:
        return None
    if isinstance(opened_by, tuple):
        key, nonce = opened_by
        reply = SealedReplyV2(envelope_v2.ReplySealer(key, nonce, state.settings.envelope_pad_to))
    else:
        reply = SealedReply(opened_by)
    return observe(reply, outcome).error(RelayError(exc.status, exc.code, str(exc)))
