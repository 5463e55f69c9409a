"""OpenAI-shaped error bodies: {"error": {"message", "type", "code"}}."""

from __future__ import annotations

import json

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "server_error",
    504: "timeout_error",
}


class RelayError(Exception):
    """An answer the relay gives itself (never a provider's answer)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        # The body's `type`: by status unless given (Access refusals say `access_denied`, access_jwt.py).
        self.error_type = error_type or _TYPES.get(status, "error")
        self.headers = headers or {}
        # Input errors leave the request body possibly unread: the connection must not be reused.
        self.close_connection = status in (408, 413)

    def body(self) -> bytes:
        err = {"message": self.message, "type": self.error_type, "code": self.code}
        return json.dumps({"error": err}).encode()
