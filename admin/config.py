"""The admin's own configuration: read once from the environment by `smsfleet admin`, then passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["MIN_TOKEN_LENGTH", "TOKEN_HINT", "USER", "AdminConfig"]

#: the user name of HTTP Basic auth; the password is the token
USER = "admin"
MIN_TOKEN_LENGTH = 16
TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105 - how to make a token, not one


@dataclass(frozen=True)
class AdminConfig:
    """`token` authenticates every request: `Authorization: Bearer <token>`, or HTTP Basic `admin:<token>`."""

    token: str = field(repr=False)
    user: str = USER

    def __post_init__(self) -> None:
        if len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"SMSFLEET_ADMIN_TOKEN must be at least {MIN_TOKEN_LENGTH} characters; {TOKEN_HINT}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AdminConfig:
        """There is no default password: without SMSFLEET_ADMIN_TOKEN the admin refuses to start."""
        token = env.get("SMSFLEET_ADMIN_TOKEN", "").strip()
        if not token:
            raise ValueError(f"SMSFLEET_ADMIN_TOKEN is not set and the admin has no default password; {TOKEN_HINT}")
        return cls(token=token)
