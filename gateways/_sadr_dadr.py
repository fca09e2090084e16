"""The `sadr`/`dadr` HTTP GET family as a preset of the `http` kind: what `skymedia`, `sbermobile` and `intellin`
are assumed to speak. Data only: the one implementation is gateways/http.py.

Many Russian SMS aggregators run white-label copies of one platform whose "HTTP GET" interface is one query
string per call (shared/providers/providers-B.md §6.2: Stream Telecom's `gateway.api.sc/get/`, medium
confidence; the same parameters are published for Webcom/MySMPP `sendsms.php`, and clients of SMSGorod,
TargetSMS and BSG's legacy API use them):

    send:    GET <url>?user=<login>&pwd=<password>&sadr=<sender>&dadr=79161234567&text=<UTF-8 text>
             -> HTTP 200 text/plain: the message id (digits; several, one per part), or an error text (ERRORS)
    status:  GET <url>?user=<login>&pwd=<password>&smsid=<id>
             -> HTTP 200 text/plain: one word of STATUSES, empty while nothing is known

No public documentation exists for the three gateways themselves (providers-B §3, §5, §7). Decisions:

- The endpoint is the sender's required `url`, used as given (members differ in host and path: `/get/`,
  `/sendsms.php`); fixed query parameters in it are kept.
- GET, because that is the family's method; a send is never re-sent by aiohttp on a dropped connection, and
  redirects are not followed (the URL must be the final one): see gateways/http.py.
- `dadr` is the E.164 number without '+', the form every member shows. `sadr` is the job's originator; without
  one it is left out and the account's default sender applies (without a default the provider answers "Нет
  отправителя": Permanent).
- The GET interface has no client message id, so the job id is not sent and nothing is deduplicated.
- `valid_until` is not sent: only one member documents `validity_period`, in local time of no stated zone; the
  worker never sends a job past its `valid_until` anyway.
- Error texts are matched case-insensitively at the start of the reply (so trailing punctuation does not
  matter). A reply that is neither ids nor a known error, an empty HTTP 200 included, is Ambiguous: the
  platform may have taken the message, so it is not retried blindly.
"""

from __future__ import annotations

import re
from typing import Any

from smsfleet.contracts import State

from .errors import GatewayError, Permanent

__all__ = ["ERRORS", "FAMILY_ASSUMPTIONS", "SADR_DADR", "STATUSES", "assumed"]

#: error text (lowercase, no trailing punctuation) -> (class, code suffix, meaning) [providers-B §6.1, §6.2]
ERRORS: dict[str, tuple[type[GatewayError], str, str]] = {
    "неправильный логин или пароль": (Permanent, "auth", "wrong login or password"),
    "ваш аккаунт заблокирован": (Permanent, "blocked", "account blocked"),
    "данное направление закрыто для вас": (Permanent, "direction", "direction closed: bad number, or no funds"),
    "нет отправителя": (Permanent, "no_sender", "no sender name, and no default one"),
    "такого отправителя нет": (Permanent, "unknown_sender", "sender name not registered"),
    "нет текста сообщения": (Permanent, "no_text", "no message text"),
    "укажите номер телефона": (Permanent, "no_phone", "no phone number"),
    "flood sms": (Permanent, "flood", "the same text to this number too often"),
}

#: status word -> (state, meaning); None = not final yet [providers-B §6.2; Webcom's HTTP GET spec]
STATUSES: dict[str, tuple[State | None, str]] = {
    "": (None, "no status yet"),
    "send": (None, "sent, no report yet"),
    "partly_deliver": (None, "sent, report not received"),
    "deliver": (State.DELIVERED, "delivered"),
    "read": (State.DELIVERED, "read"),
    "not_deliver": (State.UNDELIVERED, "not delivered"),
    "expired": (State.EXPIRED, "subscriber unreachable until the message expired"),
}

#: the family's wire as `HttpSettings` values (all but `url` and the credentials, which each sender gives)
SADR_DADR: dict[str, Any] = {
    "method": "GET",
    "encoding": "query",
    "login_at": "user",
    "password_at": "pwd",
    "originator_at": "sadr",
    "to_at": "dadr",
    "text_at": "text",
    "to_format": "digits",
    "success_status": "200",
    "success_regex": r"\A\s*(?P<id>\d+(?:[\s,;]+\d+)*)\s*\Z",
    "permanent_errors": {rf"(?i)\A\s*{re.escape(text)}": code for text, (_, code, _) in ERRORS.items()},
    "status_id_at": "smsid",
    "status_method": "GET",
    "status_regex": r"\A\s*(?P<status>\S*)\s*\Z",
    "states": {word: state.value if state else "pending" for word, (state, _) in STATUSES.items()},
}

FAMILY_ASSUMPTIONS = (
    "the sadr/dadr HTTP GET family (providers-B §6.2): GET url?user&pwd&sadr&dadr&text answers the message id "
    "or a Russian error text; GET url?user&pwd&smsid answers deliver|not_deliver|expired|...",
    "url is the provider's full sending URL (required: there is no public default)",
    "dadr is the number without '+'; text is UTF-8; no client message id, so no deduplication",
    "a job without an originator is sent without sadr, and the account's default sender name applies",
    "a reply that is neither ids nor a known error text is ambiguous (never retried blindly)",
    "no request rate is published; 10 requests/s per sender is a guess",
)


def assumed(provider: str, why: str, *specific: str) -> tuple[str, ...]:
    """A preset's `assumptions`: that its wire is this family's, why, what else it assumes, then the family's."""
    return (
        f"the wire format is an assumption to confirm with {provider}: {why}, so this preset of the http kind "
        "speaks the sadr/dadr HTTP GET family of Russian aggregators",
        *specific,
        *FAMILY_ASSUMPTIONS,
    )
