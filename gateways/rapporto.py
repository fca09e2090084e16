"""Rapporto (rapporto.ru) over its HTTP API v5.0: send; delivery reports and inbound SMS are pushed only.

Wire (shared/providers/providers-B.md §4.1, from Rapporto's own docs): a form POST to the URI Rapporto issues
to each client (the `url` setting), with `serviceId` + `pass`, `clientId` (the phone) and `message`, in UTF-8
and saying so in the Content-Type, as the docs ask. Success is HTTP 200 with two text lines, `OK` and
Rapporto's id (a 64-bit integer); an error is an HTTP status with a short text (`Invalid password`). We POST,
never GET: credentials stay out of URLs, and aiohttp re-sends an idempotent GET by itself when a kept-alive
connection turns out dead.

Decisions:
- `partnerMsgId` is our job id (hashed when longer than Rapporto's 50 characters). Where Rapporto's manager
  has enabled it, Rapporto sends a repeated key once and answers every repeat with the first request's id;
  since that is an account setting we cannot see, and Rapporto has no lookup, an ambiguous send follows the
  worker's policy (`unknown` by default). While the first request with a key is still being processed a
  repeat gets 503: Transient, retried after a pause. Reports echo `partnerMsgId`, but only Rapporto's own
  id matches a report to a job: the echo is the caller's word, and the bare URL has no token.
- 408 is Rapporto's "too fast" (not 429): RateLimited. 500 asks for a pause of at least a minute: RateLimited
  with 60 s, which pauses the whole sender, as the docs ask. 409 is the anti-duplicate filter (same number,
  same text within a day; off by default): Permanent, as the docs say never to repeat it.
- `clientId` is the number as international digits, the form of Rapporto's examples and of its reports.
  `source` carries the originator when the job has one (Rapporto must have enabled it for the account).
- Rapporto takes no per-message validity over HTTP v5 (the message TTL is configured on its side), and link
  shortening is an account setting there: neither is sent.

Status is push only (`has_status = False`): Rapporto calls `/smslistener/listen_type/sms_rapporto` with a GET
(`transactionId`, `status`, `partnerMsgId`, `unifiedExtStatus`, ...); `parse_callback` also takes the REST v6
JSON form (`mtNum`, `status`, `errorCode`) and inbound SMS, both the v5 GET and the v6 JSON. Inbound SMS get a
204 (no reply to the subscriber). Since the worker schedules no rechecks for a kind without a status lookup,
a job stays `accepted` until a pushed report arrives or the status horizon ends it `unknown`. That horizon
matters here: since 2023-03-01 Rapporto sends no final SMS status for MegaFon subscribers at all.

With a `key` in the settings, `RapportoGateway(settings, http)` is a `RapportoBatchGateway`: Rapporto's REST
batch API v3.0 (providers-B §4.3, and its docs' rest_batch pages): a JSON POST to `url` of up to 3,000
messages (`max_batch` 1,000, the low end of the 1,000-3,000 Rapporto calls usual; its maximum is set per
account), `Authorization: Key <key>`. Each message has `from` (the job's originator, else the service_id, as
Rapporto requires one), `to` (digits), `text`, `id` (`partner_msg_id`), `validity` (seconds, 60..259,200) and
`callbackUrl` (the sender's receiving URL). The reply's `result` holds one entry per message, `OK` with a
`messageId` or `REJECTED` with `reasons`: a rejection fails its job only. Entries are matched to messages by
the `id` they echo, else by position; a reply that does not match one to one is Ambiguous for every message.
A request refused as a whole (`too.many.messages`, or HTTP 400 without saying which message) has each message
sent alone, as unbatched sending would; other HTTP refusals are read with the v5 table. Reports are POSTed as
JSON (`messageId`, `ts` in ms, `status` ACCEPTED/SENT/DELIVERED/EXPIRED/REJECTED/UNDELIVERABLE/UNKNOWN, `id`);
`parse_callback` takes them on both paths. No HTTP status of the batch API is documented, nor its rate limit:
a message takes a slot, the reading that can never exceed a limit on either.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import RapportoSettings

from ._json_api import call
from ._rapporto_family import Rule, digits, e164, fail, fields_of, refusal, timestamp, two_way_inbound
from .base import BatchingGateway, Callback, CallbackRequest, Gateway, Inbound, Outgoing, Receipt, Report
from .errors import Ambiguous, GatewayError, Permanent, RateLimited, Transient
from .transport import request

__all__ = ["GATEWAY", "RapportoBatchGateway", "RapportoGateway", "partner_msg_id"]

#: HTTP status of a send -> what it means [providers-B §4.1]
ERRORS: dict[int, Rule] = {
    400: Rule(Permanent, "missing or invalid parameters"),
    401: Rule(Permanent, "wrong serviceId or pass"),
    402: Rule(Permanent, "prepaid balance exhausted"),
    403: Rule(Permanent, "service missing or inactive"),
    406: Rule(Permanent, "cannot send to this clientId"),
    408: Rule(RateLimited, "sending rate exceeded", retry_after=1.0),
    409: Rule(Permanent, "duplicate blocked by the anti-duplicate filter"),
    414: Rule(Permanent, "message too long"),
    500: Rule(RateLimited, "Rapporto internal error; pause at least a minute", retry_after=60.0),
    503: Rule(Transient, "a request with this partnerMsgId is still being processed"),
}

#: report `status` -> (state, meaning); None = not final yet [providers-B §4.1, §4.4]
STATUSES: dict[int, tuple[State | None, str]] = {
    0: (None, "sent to the operator"),
    2: (State.DELIVERED, "delivered"),
    5: (State.UNDELIVERED, "not delivered"),
    9: (State.DELIVERED, "read"),
}

#: `unifiedExtStatus` (v5) / `errorCode` (v6) of an undelivered SMS -> why
REASONS: dict[int, str] = {
    1: "unknown error",
    2: "absent subscriber",
    3: "barred or blocked",
    4: "signalling transport failure",
    5: "memory capacity exceeded",
    6: "SMS service not provisioned",
    7: "switch timeout",
    8: "unknown or invalid subscriber",
    9: "duplicate dropped by the platform",
    10: "filtered by the platform",
    11: "routing error",
    12: "blacklisted by the operator",
    13: "sender name not registered at the operator",
    14: "operator spam filter",
}

#: the batch API's report `status` -> (state, meaning); None = not final yet [providers-B §4.3, §4.4]
BATCH_STATUSES: dict[str, tuple[State | None, str]] = {
    "ACCEPTED": (None, "accepted"),
    "SENT": (None, "sent to the operator"),
    "DELIVERED": (State.DELIVERED, "delivered"),
    "EXPIRED": (State.EXPIRED, "expired"),
    "REJECTED": (State.REJECTED, "rejected by the operator or Rapporto"),
    "UNDELIVERABLE": (State.UNDELIVERED, "cannot be delivered"),
    "UNKNOWN": (State.UNKNOWN, "an unknown error"),
}

#: a rejected message's reason `key` in a batch reply -> (class, meaning) [providers-B §4.3]
BATCH_REASONS: dict[str, tuple[type[GatewayError], str]] = {
    "forbidden": (Permanent, "sending forbidden"),
    "unknown": (Transient, "unknown error"),  # rejected, so not sent: trying again cannot double it
    "invalid": (Permanent, "invalid number, validity or callback URL"),
    "length.too.long": (Permanent, "text too long"),
    "must.be.not.null": (Permanent, "a required field is empty"),
    "not.available": (Permanent, "sender name not available"),
}
TOO_MANY = "too.many.messages"  # the request's size, not a message's: each is sent alone

FORM = "application/x-www-form-urlencoded; charset=utf-8"  # Rapporto reads the charset from this header
_HASHED = "sha256:"  # a hashed partnerMsgId: 7 + 43 = 50 characters


def partner_msg_id(job_id: str) -> str:
    """Rapporto's idempotency key for a job: the job id itself, or a hash of it when longer than 50."""
    return job_id if len(job_id) <= 50 else _HASHED + hashlib.sha256(job_id.encode()).hexdigest()[:43]


def _int(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"rapporto callback {name} must be an integer") from None


def _report(pid: Any, status: Any, reason: Any, job_key: Any, done: Any = "") -> Report:
    if not str(pid or "").strip().isdigit():
        raise ValueError("rapporto report needs a numeric transactionId or mtNum")
    code = _int(status, "status")
    state, meaning = STATUSES.get(code, (None, f"unknown status {code}"))
    why = _int(reason, "reason") if str(reason or "").strip() else 0
    error = None
    if state is State.UNDELIVERED:  # the reason, when Rapporto sends extended statuses
        error = ErrorInfo(f"rapporto.ext.{why}" if why else f"rapporto.status.{code}", REASONS.get(why, meaning))
    key = str(job_key or "")
    return Report(
        provider_message_id=str(pid).strip(),
        state=state,
        job_id=key if key and not key.startswith(_HASHED) else None,
        at=timestamp(done),
        error=error,
        raw_status=str(code),
    )


def _parse_json(body: bytes) -> Report | Inbound:
    try:
        data: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise ValueError("rapporto callback is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("rapporto callback JSON must be an object")
    if "mtNum" in data:  # REST v6 delivery report
        return _report(data["mtNum"], data.get("status"), data.get("errorCode"), data.get("id"), data.get("doneDate"))
    if "messageId" in data:  # REST batch delivery report
        return _batch_report(data)
    if "sourceAddr" in data and "transactionId" in data:  # REST v6 inbound SMS
        return Inbound(
            from_=e164(str(data["sourceAddr"])),
            to=str(data.get("destAddr", "")),
            text=str(data.get("message", "")),
            provider_message_id=str(data["transactionId"]),
        )
    raise ValueError("rapporto JSON callback needs mtNum and status, or transactionId and sourceAddr")


def _batch_report(data: dict[str, Any]) -> Report:
    pid, status, ts = data.get("messageId"), data.get("status"), data.get("ts")
    if not str(pid or "").strip().isdigit() or not isinstance(status, str) or not status:
        raise ValueError("rapporto batch report needs a numeric messageId and a status")
    state, meaning = BATCH_STATUSES.get(status.upper(), (None, f"unknown status {status[:40]}"))
    key = data.get("id")
    at = None
    if isinstance(ts, int) and not isinstance(ts, bool) and 0 < ts < 10**14:  # ms since the epoch
        at = datetime.fromtimestamp(ts / 1000, UTC)
    return Report(
        provider_message_id=str(pid).strip(),
        state=state,
        job_id=key if isinstance(key, str) and key and not key.startswith(_HASHED) else None,
        at=at,
        error=ErrorInfo(f"rapporto.{status.lower()[:40]}", meaning) if state not in (None, State.DELIVERED) else None,
        raw_status=status[:40],
    )


class RapportoGateway(Gateway[RapportoSettings]):
    """Rapporto's HTTP API v5.0. Delivery reports and inbound SMS are pushed; there is no status lookup."""

    kind = "rapporto"
    settings_type = RapportoSettings
    default_rate = 10.0
    assumptions = (
        "partnerMsgId deduplication must be enabled for the account by Rapporto's manager; without it a resend "
        "after an ambiguous send reaches the subscriber twice",
        "the request rate is configured per account at Rapporto; 10 requests/s (the docs' example) is a guess",
        "error reply texts are not documented beyond 'Invalid password'; only HTTP statuses are interpreted",
        "v5 inbound SMS timestamps carry no time zone and are not used",
        "batch API (`key`): up to 1,000 messages a request (Rapporto sets each account's maximum, 3,000 in its "
        "docs); its HTTP error statuses and its rate limit are not documented: refusals are read as HTTP v5's, "
        "and the limit is taken per message",
        "batch API: a repeated `id` where Rapporto refuses duplicates is answered in an undocumented way, so a "
        "resend after an ambiguous send (policy `resend`) may end `rejected` although the first one went out",
    )

    def __new__(cls, settings: RapportoSettings, http: aiohttp.ClientSession) -> RapportoGateway:
        target: type[RapportoGateway] = cls
        if cls is RapportoGateway and settings.key:
            target = RapportoBatchGateway
        return object.__new__(target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(service_id={self.settings.service_id!r})"

    async def send(self, message: Outgoing) -> Receipt:
        form = {
            "serviceId": self.settings.service_id,
            "pass": self.settings.password,
            "clientId": digits(message.to),
            "message": message.text,
            "partnerMsgId": partner_msg_id(message.job_id),
        }
        if message.originator:
            form["source"] = message.originator
        reply = await request(
            self.http, "POST", self.settings.url, provider="Rapporto", timeout_s=self.timeout_s,
            data=urlencode(form).encode(), headers={"Content-Type": FORM}, server_errors_are_replies=True,
        )  # fmt: skip
        if reply.status != 200:
            fail(ERRORS, reply.status, "rapporto", reply.text, hide=self.settings.password or "")
        lines = reply.text.split()
        if len(lines) != 2 or lines[0] != "OK" or not lines[1].isdigit():
            raise Ambiguous("rapporto.bad_reply", "HTTP 200 without 'OK' and a message id")
        return Receipt(provider_message_id=lines[1])

    def parse_callback(self, request: CallbackRequest) -> Callback:
        if request.content_type == "application/json":
            found = _parse_json(request.body)
            if isinstance(found, Inbound):
                return Callback(inbound=[found], reply_status=204, reply_body="")
            return Callback(reports=[found])
        fields = fields_of(request)
        if "transactionId" in fields or "status" in fields:
            report = _report(
                fields.get("transactionId"), fields.get("status"), fields.get("unifiedExtStatus"),
                fields.get("partnerMsgId"),
            )  # fmt: skip
            return Callback(reports=[report])
        inbound = two_way_inbound(fields)
        if inbound is None:
            raise ValueError("rapporto callback needs transactionId and status, or clientId and message")
        return Callback(inbound=[inbound], reply_status=204, reply_body="")


class RapportoBatchGateway(BatchingGateway[RapportoSettings], RapportoGateway):
    """Rapporto's REST batch API (the settings have a `key`): many messages a request."""

    max_batch = 1000

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        if not messages:
            return []
        ids = [partner_msg_id(m.job_id) for m in messages]
        body = {"messages": [self._item(m, i) for m, i in zip(messages, ids, strict=True)]}
        try:
            status, data = await call(
                self, "POST", self.settings.url, provider="Rapporto", body=body,
                headers={"Authorization": f"Key {self.settings.key}"},
            )  # fmt: skip
        except GatewayError as exc:
            return [exc] * len(messages)
        result = data.get("result") if isinstance(data, dict) else None
        alone = status == 400 or (isinstance(result, list) and _refused_as_a_whole(result))
        if alone and len(messages) > 1:  # which message is not said: each alone, as unbatched
            return await super().send_many(messages)
        if status != 200:
            return [self._refusal(status, data)] * len(messages)
        entries = _matched(result, ids)
        if entries is None:
            said = f"{len(result)} results" if isinstance(result, list) else "no result"
            unclear = Ambiguous("rapporto.bad_reply", f"HTTP 200 with {said} for {len(messages)} messages")
            return [unclear] * len(messages)
        return [self._outcome(entry) for entry in entries]

    def _item(self, message: Outgoing, partner_id: str) -> dict[str, Any]:
        """A message as the batch API takes it (the module doc)."""
        item: dict[str, Any] = {
            "from": message.originator or self.settings.service_id,
            "to": digits(message.to),
            "text": message.text,
            "id": partner_id,
        }
        if message.valid_until is not None:
            seconds = math.ceil((message.valid_until - datetime.now(UTC)).total_seconds())
            item["validity"] = min(max(seconds, 60), 259_200)
        if message.callback_url:
            item["callbackUrl"] = message.callback_url
        return item

    def _refusal(self, status: int, data: Any) -> GatewayError:
        error = data.get("error") if isinstance(data, dict) else None
        detail = str(error.get("description", "")) if isinstance(error, dict) else ""
        return refusal(ERRORS, status, "rapporto", detail, hide=self.settings.key or "")

    @staticmethod
    def _outcome(entry: dict[str, Any]) -> Receipt | GatewayError:
        """One message's result: `OK` with its id, or `REJECTED` with its reasons."""
        code, pid = entry.get("code"), entry.get("messageId")
        if code == "OK" and isinstance(pid, str | int) and str(pid):
            return Receipt(provider_message_id=str(pid))
        if code == "REJECTED":
            key = next((str(r.get("key", "")) for r in _reasons(entry)), "")
            cls, meaning = BATCH_REASONS.get(key, (Permanent, "rejected"))
            detail = str(entry.get("description") or "")[:200]
            return cls(f"rapporto.{key or 'rejected'}", f"{meaning}: {detail}" if detail else meaning)
        return Ambiguous("rapporto.bad_reply", "HTTP 200 with a result that is neither OK nor REJECTED")


def _reasons(entry: Any) -> list[dict[str, Any]]:
    reasons = entry.get("reasons") if isinstance(entry, dict) else None
    return [r for r in reasons if isinstance(r, dict)] if isinstance(reasons, list) else []


def _refused_as_a_whole(result: list[Any]) -> bool:
    """Whether the batch was refused for its size: no message taken, a reason `too.many.messages`."""
    taken = any(isinstance(e, dict) and e.get("code") == "OK" for e in result)
    return not taken and any(r.get("key") == TOO_MANY for e in result for r in _reasons(e))


def _matched(result: Any, ids: list[str]) -> list[dict[str, Any]] | None:
    """The reply's entries in the order of `ids`: by the `id` they echo, else by position; None when they do
    not match the messages one to one."""
    if not isinstance(result, list) or len(result) != len(ids) or not all(isinstance(e, dict) for e in result):
        return None
    echoed = {e["id"] if isinstance(e.get("id"), str) else None: e for e in result}
    if None in echoed:
        return result if len(echoed) == 1 else None  # none echoes an id: by position; some do: no telling
    return [echoed[i] for i in ids] if set(echoed) == set(ids) and len(echoed) == len(ids) else None


GATEWAY = RapportoGateway
