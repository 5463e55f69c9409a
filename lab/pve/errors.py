"""Errors the API answers with, in PVE's HTTP shapes."""

from __future__ import annotations


class ApiError(Exception):
    """A non-parameter error: PVE puts the message in the HTTP status line (and `message`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(msg: str) -> ApiError:
    return ApiError(500, msg)
