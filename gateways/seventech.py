"""Seven Tech (seven.tech) over its messaging API: send; delivery reports and inbound SMS are pushed.

LOW CONFIDENCE. Only the beginning of Seven Tech's API guide was captured (shared/providers/providers-B.md §8):
HTTP Basic auth with the account's login and password, `POST https://my.seven.tech/messaging/v1/send` (the
`url` setting) with a JSON body of `scenario` (required: the delivery steps, structure not captured),
`callback` (optional URI for the report) and `clientRequestId` (optional). Everything else here is the most
plausible form, chosen from Rapporto, whose HTTP docs Seven Tech's legacy docs repeat word for word; each
guess is listed in `assumptions`.

Decisions:
- One scenario step per message: `{"channel": "SMS", "to": <digits>, "text", "from"?, "ttl"?}`; the phone is
  inside the step because the captured top-level fields are only scenario, callback and clientRequestId.
- `clientRequestId` is our job id. Seven Tech documents no deduplication by it, so `dedupes` stays False and
  an ambiguous send follows the worker's policy.
- Shorten links in messages (`shorten_links`): nothing shows Seven Tech reads a flag for it (its link
  shortening was not seen in what is documented), so none is sent: smsfleet shortens the links itself before
  the text reaches the adapter (`smsfleet.links`, for every kind), with click events of its own.
- `ttl` is the seconds left until the job's `valid_until`, when it has one.
- Errors are read from the HTTP status alone, as in the Rapporto family; the body text only explains.
- `callback` is the sender's SMS Receiving URL (`Outgoing.callback_url`), so each message says where its
  report goes.

Status is push only (`has_status = False`): a job stays `accepted` until a report is pushed or the status
horizon ends it `unknown`. `parse_callback` takes a JSON report (an object or a list) `{"messageId",
"clientRequestId", "status", "errorCode", "timestamp"}`, a JSON inbound SMS `{"from", "to", "text"}`, and the
legacy 2way GET (`clientId`, `message`, `shortNumber`, `id`), answered with an empty 200 (no reply SMS).
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import SeventechSettings

from ._rapporto_family import Rule, digits, e164, fail, fields_of, timestamp, two_way_inbound
from .base import Callback, CallbackRequest, Gateway, Inbound, Outgoing, Receipt, Report
from .errors import Ambiguous, Permanent, RateLimited
from .transport import request

__all__ = ["GATEWAY", "SeventechGateway"]

#: HTTP status of a send -> what it means (assumed: standard HTTP meanings, 408 as in the Rapporto family)
ERRORS: dict[int, Rule] = {
    400: Rule(Permanent, "invalid request"),
    401: Rule(Permanent, "wrong login or password"),
    402: Rule(Permanent, "insufficient funds"),
    403: Rule(Permanent, "forbidden (IP, sender name or channel not allowed)"),
    404: Rule(Permanent, "no such endpoint: check the sending URL"),
    408: Rule(RateLimited, "too fast, or the request timed out", retry_after=1.0),
    413: Rule(Permanent, "request too large"),
    422: Rule(Permanent, "message refused"),
}

#: report `status` (case-insensitive) -> (state, meaning); None = not final yet (assumed vocabulary)
STATUSES: dict[str, tuple[State | None, str]] = {
    "QUEUED": (None, "queued"),
    "ACCEPTED": (None, "accepted"),
    "SENT": (None, "sent to the operator"),
    "DELIVERED": (State.DELIVERED, "delivered"),
    "READ": (State.DELIVERED, "read"),
    "UNDELIVERED": (State.UNDELIVERED, "not delivered"),
    "UNDELIVERABLE": (State.UNDELIVERED, "not deliverable"),
    "EXPIRED": (State.EXPIRED, "expired"),
    "REJECTED": (State.REJECTED, "rejected"),
    "UNKNOWN": (State.UNKNOWN, "final status unknown"),
}
_FAILED = {State.UNDELIVERED, State.EXPIRED, State.REJECTED, State.UNKNOWN}


def _report(item: dict[str, Any]) -> Report:
    pid, status = item.get("messageId"), str(item.get("status", "")).strip().upper()
    if not pid or not status:
        raise ValueError("seventech report needs messageId and status")
    state, meaning = STATUSES.get(status, (None, f"unknown status {status}"))
    code = item.get("errorCode")
    error = None
    if state in _FAILED:
        suffix = f" ({item.get('errorDescription')})" if item.get("errorDescription") else ""
        error = ErrorInfo(f"seventech.{code or status.lower()}", meaning + suffix)
    job_id = item.get("clientRequestId")
    return Report(
        provider_message_id=str(pid),
        state=state,
        job_id=str(job_id) if job_id else None,
        at=timestamp(item.get("timestamp")),
        error=error,
        raw_status=status,
    )


def _inbound(item: dict[str, Any]) -> Inbound:
    pid = item.get("messageId") or item.get("id")
    return Inbound(
        from_=e164(str(item["from"])),
        to=str(item.get("to", "")),
        text=str(item["text"]),
        provider_message_id=str(pid) if pid else None,
        at=timestamp(item.get("timestamp")),
    )


class SeventechGateway(Gateway[SeventechSettings]):
    """Seven Tech's JSON messaging API (thin documentation: see `assumptions`)."""

    kind = "seventech"
    settings_type = SeventechSettings
    assumptions = (
        "low confidence throughout: only auth, endpoint and top-level fields are documented",
        "a scenario step is {channel: SMS, to, text, from, ttl}; its structure is not documented",
        "the send reply is JSON with messageId (or id); a 2xx without one is ambiguous",
        "errors are HTTP statuses with their standard meanings (408: slow down); no error codes are documented",
        "clientRequestId is not a deduplication key (none is documented): ambiguous sends follow the policy",
        "reports are pushed as JSON {messageId, clientRequestId, status, errorCode, timestamp} with "
        "Rapporto-batch-like statuses; inbound SMS as JSON {from, to, text} or the legacy 2way GET",
        "no rate limit is published; 20 requests/s per sender is a guess",
    )

    def __repr__(self) -> str:
        return f"SeventechGateway(login={self.settings.login!r})"  # no URL: it could carry a credential

    async def send(self, message: Outgoing) -> Receipt:
        step: dict[str, Any] = {"channel": "SMS", "to": digits(message.to), "text": message.text}
        if message.originator:
            step["from"] = message.originator
        if message.valid_until is not None:
            step["ttl"] = max(1, math.ceil((message.valid_until - datetime.now(UTC)).total_seconds()))
        body: dict[str, Any] = {"clientRequestId": message.job_id, "scenario": [step]}
        if message.callback_url:
            body["callback"] = message.callback_url
        token = base64.b64encode(f"{self.settings.login}:{self.settings.password}".encode()).decode()
        reply = await request(
            self.http, "POST", self.settings.url, provider="Seven Tech", timeout_s=self.timeout_s,
            data=msgspec.json.encode(body),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        if not 200 <= reply.status < 300:
            fail(ERRORS, reply.status, "seventech", reply.text, hide=self.settings.password)
        data = reply.json()
        pid = (data.get("messageId") or data.get("id")) if isinstance(data, dict) else None
        if not pid:
            raise Ambiguous("seventech.bad_reply", f"HTTP {reply.status} without a message id")
        return Receipt(provider_message_id=str(pid))

    def parse_callback(self, request: CallbackRequest) -> Callback:
        if request.content_type != "application/json":
            inbound = two_way_inbound(fields_of(request))
            if inbound is None:
                raise ValueError("seventech callback is neither JSON nor a 2way push (clientId, message)")
            return Callback(inbound=[inbound], reply_body="")
        try:
            data: Any = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            raise ValueError("seventech callback is not JSON") from None
        reports, inbound_sms = [], []
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict):
                raise ValueError("seventech callback items must be objects")
            if "status" not in item and {"from", "text"} <= item.keys():
                inbound_sms.append(_inbound(item))
            else:
                reports.append(_report(item))
        if not reports and not inbound_sms:
            raise ValueError("seventech callback is empty")
        return Callback(reports=reports, inbound=inbound_sms)


GATEWAY = SeventechGateway
