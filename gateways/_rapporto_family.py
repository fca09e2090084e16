"""What Rapporto and Seven Tech share (shared/providers/providers-B.md §4, §8, §9).

Seven Tech's legacy HTTP docs use Rapporto's vocabulary word for word (`clientId`, `shortNumber`, a
synchronous plain-text reply to the 2way push), so both are treated as one platform family: errors come as
HTTP statuses with a short text, subscribers' numbers travel as international digits without '+', and
inbound SMS arrive as the same GET. This module holds those common pieces, and nothing provider-specific.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple, NoReturn
from urllib.parse import parse_qsl

from .base import CallbackRequest, Inbound
from .errors import GatewayError, Permanent, RateLimited, Transient

__all__ = ["Rule", "digits", "e164", "fail", "fields_of", "refusal", "timestamp", "two_way_inbound"]


class Rule(NamedTuple):
    """One row of an adapter's error table: the class to raise, what the code means, and for RateLimited
    how long the provider wants us to wait."""

    error: type[GatewayError]
    meaning: str
    retry_after: float = 1.0


def refusal(errors: Mapping[int, Rule], code: int, prefix: str, detail: str = "", hide: str = "") -> GatewayError:
    """What `errors` says about `code`. An unlisted 4xx is the request's fault (Permanent); anything else
    unlisted is the provider's (Transient). `detail` (the provider's text) is cut short, and `hide` (a
    credential it might echo) masked."""
    rule = errors.get(code) or Rule(Permanent if 400 <= code < 500 else Transient, f"HTTP {code}")
    detail = (detail.replace(hide, "***") if hide else detail).strip()[:200]
    text = f"{rule.meaning}: {detail}" if detail else rule.meaning
    if rule.error is RateLimited:
        return RateLimited(f"{prefix}.{code}", text, retry_after=rule.retry_after)
    return rule.error(f"{prefix}.{code}", text)


def fail(errors: Mapping[int, Rule], code: int, prefix: str, detail: str = "", hide: str = "") -> NoReturn:
    """Raise the `refusal`."""
    raise refusal(errors, code, prefix, detail, hide)


def digits(phone: str) -> str:
    """E.164 as the family writes it: international digits, no '+'."""
    return phone.lstrip("+")


def e164(number: str) -> str:
    """A number the family pushes (`79161234567`) in E.164 (`+79161234567`); ValueError if it is none."""
    found = number.strip().removeprefix("+")
    if not (found.isascii() and found.isdigit()):
        raise ValueError("a pushed phone number is not international digits")
    return "+" + found


def timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time with an offset (`2019-05-05T10:20:35+0300`), or None when absent, naive or unreadable."""
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) and value else None
    except ValueError:
        return None
    return at if at is not None and at.tzinfo is not None else None


def fields_of(request: CallbackRequest) -> dict[str, str]:
    """A push's fields: the query string, plus the body when it is a form."""
    fields = dict(request.query)
    if request.body and request.content_type in ("", "application/x-www-form-urlencoded"):
        fields.update(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
    return fields


def two_way_inbound(fields: Mapping[str, str]) -> Inbound | None:
    """The family's inbound SMS push (`clientId`, `message`, `shortNumber`, `messageId` or `id`), or None when
    `fields` are not one."""
    sender, text = fields.get("clientId", "").strip(), fields.get("message")
    if not sender or text is None:
        return None
    return Inbound(
        from_=e164(sender),
        to=fields.get("shortNumber", ""),
        text=text,
        provider_message_id=fields.get("messageId") or fields.get("id") or None,
    )
