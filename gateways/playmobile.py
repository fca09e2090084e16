"""Play Mobile (Uzbekistan, "broker-api", also smsxabar.uz): send, and pushed delivery reports.

Wire (shared/providers/providers-A.md §4): `POST {base}/broker-api/send` with HTTP Basic auth (`user_id`,
`password`) and the JSON body `{"messages": [{"recipient", "message-id", "sms": {"originator", "ttl"?,
"content": {"text"}}}]}`. Success is HTTP 200 (the body, `Request is received`, carries nothing); a refusal
is HTTP 400 with `{"error-code": N, "error-description": "..."}`, which the wiki spells `error_code` /
`error_description`, so both are read. The host differs per contract: `base_url` overrides it (a given
`/broker-api` or `/broker-api/send` suffix is kept, not doubled).

Decisions:
- `message-id` is our job id, as Play Mobile requires a client id and returns none of its own: the receipt's
  provider id is the job id, and delivery reports name the job directly. Play Mobile documents no
  behaviour for a repeated id, so a resend after an ambiguous outcome is not assumed safe (`dedupes` off).
- `recipient` is the E.164 number's digits (`998901234567`); `originator` is the job's, else `3700`, the
  shared short number of Play Mobile's examples (the field is required: error 401).
- `ttl` is sent only with `valid_until`: the seconds left, at least 1 (the unit is not confirmed).
- Errors 100 (internal error) and 105 (see below) are Transient; every other body code, any other 4xx and
  401/403 are Permanent.
- The default rate, 49 requests/s, is `PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC` (`Settings.play_mobile_rate`),
  which the worker consults before `default_rate`; a sender's `rate_limit` overrides both.
- `send_many` posts one request for several messages, as the API takes them; a refusal applies to all (Play
  Mobile answers one error code for the request, naming no message). Its rate limit counts requests
  (`rate_per = "request"`), so a batch takes one slot. Error 105, "too many message ids", has no documented
  number: `max_batch` is 100 (a guess), and 105 is Transient, as it is the request's size, not a message,
  that was refused (lower the worker's batch size setting and the retries go through).
- Inbound SMS come as XML, the form public integrations of Play Mobile handle:
  `<sms-request><message id=".." msisdn=".." submit-date=".."><content type="text/plain">..</content>
  </message></sms-request>`. A body with a DOCTYPE is refused (no entity of a stranger's is expanded).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree

import msgspec

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import PlaymobileSettings

from ._json_api import e164
from .base import Callback, CallbackRequest, Gateway, Inbound, Outgoing, Receipt, Report
from .errors import GatewayError, Permanent, Transient
from .transport import request

__all__ = ["GATEWAY", "PlaymobileGateway"]

DEFAULT_BASE_URL = "https://send.smsxabar.uz"
DEFAULT_ORIGINATOR = "3700"

#: `error-code` of an HTTP 400 -> (class, meaning) [providers-A §4.4]; unknown codes are Permanent
ERRORS: dict[int, tuple[type[GatewayError], str]] = {
    100: (Transient, "internal server error"),
    101: (Permanent, "syntax error"),
    102: (Permanent, "account locked"),
    103: (Permanent, "empty channel"),
    104: (Permanent, "invalid priority"),
    105: (Transient, "too many message ids"),  # the request's size, not the messages: see the module doc
    202: (Permanent, "empty recipient"),
    204: (Permanent, "empty e-mail address"),
    205: (Permanent, "empty message-id"),
    206: (Permanent, "invalid variables"),
    301: (Permanent, "invalid localtime"),
    302: (Permanent, "invalid start-datetime"),
    303: (Permanent, "invalid end-datetime"),
    304: (Permanent, "invalid allowed-starttime"),
    305: (Permanent, "invalid allowed-endtime"),
    306: (Permanent, "invalid send-evenly"),
    401: (Permanent, "empty originator"),
    402: (Permanent, "empty application"),
    403: (Permanent, "empty ttl"),
    404: (Permanent, "empty content"),
    405: (Permanent, "content format error"),
    406: (Permanent, "invalid content"),
    407: (Permanent, "invalid ttl"),
    408: (Permanent, "attachments too large"),
    410: (Permanent, "invalid retry-attempts"),
    411: (Permanent, "invalid retry-timeout"),
}

#: pushed `status`, lowercased without '-', '_' or spaces -> (state, meaning); None = not final yet
#: [providers-A §4.5, low confidence]
STATUSES: dict[str, tuple[State | None, str]] = {
    "delivered": (State.DELIVERED, "delivered"),
    "transmitted": (None, "handed to the operator"),
    "deferred": (None, "deferred, delivery will be retried"),
    "notdelivered": (State.UNDELIVERED, "not delivered"),
    "failed": (State.UNDELIVERED, "failed"),
}


def _first(item: Mapping[str, Any], *keys: str) -> Any:
    return next((item[k] for k in keys if item.get(k) not in (None, "")), None)


def _at(value: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # the wiki: datetimes are UTC


def _report(item: Any) -> Report:
    if not isinstance(item, Mapping):
        raise ValueError("playmobile report must be an object")
    mid, raw = _first(item, "message-id", "message_id"), _first(item, "status")
    if not isinstance(mid, str | int) or not isinstance(raw, str):
        raise ValueError("playmobile report needs message-id and status")
    key = raw.lower().replace("-", "").replace("_", "").replace(" ", "")
    state, meaning = STATUSES.get(key, (None, f"unknown status {raw}"))
    failed = state is not None and state is not State.DELIVERED
    return Report(
        provider_message_id=str(mid),
        state=state,
        job_id=str(mid),
        at=_at(_first(item, "status-date", "status_date", "delivered-date")),
        error=ErrorInfo(f"playmobile.status.{key}", meaning) if failed else None,
        raw_status=raw,
    )


def _inbound_xml(body: bytes) -> list[Inbound]:
    """The inbound SMS of an `<sms-request>`; ValueError for anything else."""
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ValueError("playmobile XML with a DOCTYPE or an entity is refused")
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - no DOCTYPE, so no entity: nothing to expand
    except ElementTree.ParseError:
        raise ValueError("playmobile callback body is not XML") from None
    if root.tag != "sms-request":
        raise ValueError("playmobile XML callback must be an <sms-request>")
    found = []
    for message in root.iter("message"):
        msisdn, content = message.get("msisdn", "").strip(), message.find("content")
        if not msisdn or content is None:
            raise ValueError("a playmobile <message> needs msisdn and <content>")
        sms = Inbound(
            from_=e164(msisdn), to=message.get("service-number", "").strip(), text=content.text or "",
            provider_message_id=message.get("id") or None, at=_at(message.get("submit-date")),
        )  # fmt: skip
        found.append(sms)
    return found


class PlaymobileGateway(Gateway[PlaymobileSettings]):
    """Play Mobile's broker-api: JSON send with our job id as `message-id`; delivery reports are pushed."""

    kind = "playmobile"
    settings_type = PlaymobileSettings
    default_rate = 49.0
    max_batch = 100
    rate_per = "request"
    assumptions = (
        "pushed reports are JSON {'messages': [{'message-id', 'status', 'status-date'?}]} (or one such object, "
        "or form fields) with statuses delivered, transmitted, deferred, notDelivered, failed; the real "
        "format was not retrieved (providers-A §4.5: low)",
        "no status lookup: a get-status endpoint appears in one third-party library only",
        "a repeated message-id is not documented to be refused, so an ambiguous send is not resent blindly",
        "ttl is in seconds (unit not confirmed); originator defaults to 3700, the examples' short number",
        "inbound SMS are XML <sms-request><message id msisdn submit-date><content>; the short number they were "
        "sent to is not in that form (read from a `service-number` attribute where one is present)",
        "HTTP 400 errors carry error-code/error-description (client libraries) or error_code/"
        "error_description (the wiki): both are read",
        "one request takes up to 100 messages: error 105 (too many message ids) is documented, its number is not",
    )

    @property
    def url(self) -> str:
        base = (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        return base.removesuffix("/send").removesuffix("/broker-api") + "/broker-api/send"

    def __repr__(self) -> str:
        return f"PlaymobileGateway(user_id={self.settings.user_id!r}, url={self.url!r})"

    async def send(self, message: Outgoing) -> Receipt:
        await self._post([message])
        return Receipt(provider_message_id=message.job_id)

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        if not messages:
            return []
        try:
            await self._post(messages)
        except GatewayError as exc:
            return [exc] * len(messages)
        return [Receipt(provider_message_id=m.job_id) for m in messages]

    def parse_callback(self, request: CallbackRequest) -> Callback:
        if request.content_type in ("application/xml", "text/xml") or request.body.lstrip()[:1] == b"<":
            return Callback(inbound=_inbound_xml(request.body))
        if request.content_type == "application/json" or request.body.lstrip()[:1] in (b"{", b"["):
            try:
                data: Any = msgspec.json.decode(request.body)
            except msgspec.DecodeError:
                raise ValueError("playmobile callback body is not JSON") from None
        else:
            data = dict(request.query) | dict(parse_qsl(request.body.decode("utf-8", "replace")))
        items = data.get("messages", [data]) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError("playmobile callback carries no list of reports")  # an empty one is fine: 200
        return Callback(reports=[_report(item) for item in items])

    async def _post(self, messages: Sequence[Outgoing]) -> None:
        body = msgspec.json.encode({"messages": [self._wire(m) for m in messages]})
        reply = await request(
            self.http,
            "POST",
            self.url,
            provider="Play Mobile",
            timeout_s=self.timeout_s,
            data=body,
            headers={"Content-Type": "application/json; charset=UTF-8", "Authorization": self._basic_auth()},
        )
        if 200 <= reply.status < 300:
            return
        if reply.status in (401, 403):
            raise Permanent(f"http.{reply.status}", "Play Mobile refused the credentials")
        data = reply.json()
        code = _first(data, "error-code", "error_code") if isinstance(data, dict) else None
        if reply.status != 400 or code is None:
            raise Permanent(f"http.{reply.status}", f"Play Mobile answered HTTP {reply.status}")
        number = int(code) if str(code).isdigit() else -1
        cls, meaning = ERRORS.get(number, (Permanent, "unknown error"))
        text = str(_first(data, "error-description", "error_description") or "")[:200]
        raise cls(f"playmobile.{number if number >= 0 else 'unknown'}", f"{meaning}: {text}" if text else meaning)

    def _basic_auth(self) -> str:
        pair = f"{self.settings.user_id}:{self.settings.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _wire(self, message: Outgoing) -> dict[str, Any]:
        sms: dict[str, Any] = {"originator": message.originator or DEFAULT_ORIGINATOR}
        if message.valid_until is not None:
            sms["ttl"] = max(1, math.ceil((message.valid_until - datetime.now(UTC)).total_seconds()))
        sms["content"] = {"text": message.text}
        return {"recipient": message.to.lstrip("+"), "message-id": message.job_id, "sms": sms}


GATEWAY = PlaymobileGateway
