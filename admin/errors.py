"""Errors the admin shows its caller.

Exception
 +-- Problem(status, message)   JSON `{"error": message}` on the API, an error page elsewhere
 +-- Invalid(errors)            422: `{"errors": {"settings.login": "this field is required"}}` on the
                                API, the form again with each message next to its field elsewhere
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

__all__ = ["Invalid", "Problem", "is_api"]


class Problem(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Invalid(Exception):
    """A sender document failed validation. `errors` maps a field (`id`, `settings.url`...) to a message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


def is_api(request: web.Request) -> bool:
    """The JSON API answers in JSON, everything else in HTML."""
    return request.path == "/api" or request.path.startswith("/api/")
