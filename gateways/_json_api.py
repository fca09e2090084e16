"""What the JSON-over-HTTPS adapters (bulksms, infobip) share, so that neither repeats the other.

- `call()`: one request with an optional JSON body, through `gateways.transport.request` (so connect failures,
  timeouts, resets, 429 and 5xx are already on the error tree); it answers the HTTP status and the decoded
  JSON (None when the body is not JSON). With `lookup=True` an Ambiguous outcome becomes Transient: a lookup
  changes nothing at the provider, so a lost reply only means "ask again later".
- `pushed_json()`: a provider's pushed body as JSON, or ValueError (which the receiver answers with a 400).
- `e164()`: a number as a provider writes it (digits, no '+') in our E.164 form; `digits()`: the reverse.
- `timestamp()`: the ISO 8601 forms providers use (`...Z`, `...+05:30`, `...+0000`), or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from .base import CallbackRequest, Gateway
from .errors import Ambiguous, Transient
from .transport import request

__all__ = ["call", "digits", "e164", "pushed_json", "timestamp"]


async def call(
    gateway: Gateway[Any],
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str],
    body: Any = None,
    params: Mapping[str, str] | None = None,
    lookup: bool = False,
) -> tuple[int, Any]:
    """One JSON exchange with a provider: (HTTP status, decoded JSON body or None)."""
    sent = {"Accept": "application/json", **headers}
    kwargs: dict[str, Any] = {"params": dict(params or {})}
    if body is not None:
        kwargs["data"] = msgspec.json.encode(body)
        sent["Content-Type"] = "application/json"
    try:
        reply = await request(
            gateway.http, method, url, provider=provider, timeout_s=gateway.timeout_s, headers=sent, **kwargs
        )
    except Ambiguous as exc:
        if not lookup:
            raise
        raise Transient(exc.code, exc.message) from None
    return reply.status, reply.json()


def pushed_json(request: CallbackRequest, provider: str) -> Any:
    try:
        return msgspec.json.decode(request.body)
    except msgspec.DecodeError:
        raise ValueError(f"{provider} callback body is not JSON") from None


def e164(number: object) -> str:
    """'79161234567' -> '+79161234567'. Short codes (up to 6 digits) and alphanumeric names stay as they are."""
    text = str(number or "").strip()
    return "+" + text if text.isdigit() and len(text) > 6 else text


def digits(number: str) -> str:
    return number.strip().lstrip("+")


def timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
