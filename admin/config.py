"""The admin's own configuration: read once from the environment by `smsfleet admin`, then passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from smsfleet.senders import MIN_TOKEN_LENGTH, weak_token

__all__ = ["MIN_TOKEN_LENGTH", "TOKEN_HINT", "USER", "AdminConfig"]

#: the user name of HTTP Basic auth; the password is the token
USER = "admin"
TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105 - how to make a token, not one


@dataclass(frozen=True)
class AdminConfig:
    """`token` authenticates every request: `Authorization: Bearer <token>`, or HTTP Basic `admin:<token>`."""

    token: str = field(repr=False)
    user: str = USER

    def __post_init__(self) -> None:
        """The rule of every token a person chooses (`smsfleet.senders.weak_token`): at least 32 characters,
        at least 10 of them different."""
        if problem := weak_token(self.token, url=False):
            raise ValueError(f"SMSFLEET_ADMIN_TOKEN {problem}; {TOKEN_HINT}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AdminConfig:
        """There is no default password: without SMSFLEET_ADMIN_TOKEN the admin refuses to start."""
        token = env.get("SMSFLEET_ADMIN_TOKEN", "").strip()
        if not token:
            raise ValueError(f"SMSFLEET_ADMIN_TOKEN is not set and the admin has no default password; {TOKEN_HINT}")
        return cls(token=token)
