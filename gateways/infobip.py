"""Infobip SMS: send, delivery reports (pulled and pushed) and inbound SMS, over Infobip's JSON HTTP API.

Wire (shared/providers/providers-A.md §2, from Infobip's official SDKs): JSON against the account's base URL
(the `url` setting) with `Authorization: App <api_token>`; a send is answered 200 with a status per message;
request errors are 4xx `{"requestError": {"serviceException": ...}}` or `{"errorCode", ...}`; reports and
inbound SMS are both pushed as `{"results": [...]}`.

Which send API: the current `POST /sms/3/messages` by default. Infobip's official SDK (2025) is generated
for it, and its reply carries the part count without an extra flag. The classic `/sms/2/text/advanced`
(legacy, still common) differs only in names (`from`, `text`, `validityPeriod` in minutes, `notifyUrl`). No
setting can choose, so the `url` does: one ending in `/sms/2/text/advanced` means v2 (with the v2-era
`/sms/1/reports` and `/sms/1/logs`); a bare base URL, or one ending in `/sms/3/messages`, means v3.

Decisions:
- `destinations[].messageId` is our job id (Infobip takes 200 characters; ours have at most 128): reports
  carry it (hence `Report.job_id`), a lookup works even when the send's reply was lost, and Infobip refuses
  a second message with that id (status 23, REJECTED_DUPLICATE_MESSAGE_ID). send() takes that refusal as
  proof that an earlier attempt was accepted; a report of status 23 is never the message's fate. For how long
  Infobip remembers an id is not documented, so an ambiguous send is first reconciled by `find`: the logs by
  messageId, which Infobip keeps 48 h.
- `to` goes as digits, as in all of Infobip's examples; inbound numbers come as digits and leave as E.164.
- `validityPeriod` from `valid_until`: whole minutes, 1..2880 (Infobip's cap is 48 h). Reports are pushed to
  the sender's SMS Receiving URL (`callback_url`), as JSON. Inbound SMS go where the number's forwarding
  action in Infobip's portal says.
- Status lookup: `{reports}?messageId=` first; each report is handed out once, so when it has nothing for
  the id, `{logs}?messageId=`, which keeps 48 h and answers every time (the report may have gone to the
  webhook, as it does whenever the push URL is reachable, or to an earlier lookup that did not finish).
- States by status group (PENDING, DELIVERED, UNDELIVERABLE, EXPIRED, REJECTED); the intermediate
  DELIVERED_TO_OPERATOR is not final. The error object's `permanent` flag goes into the event's error.
- A message refused in a 200 reply raises per ERRORS. HTTP 429 is RateLimited (gateways.transport); 4xx Permanent.
- Batches (`send_many`): one request, `messages[]` with one message object per SMS, each with its own
  destination and `messageId` (as `send` puts them); the reply's `messages[]` has one status per destination,
  matched back by `messageId` (our job id), never by position: PENDING is accepted, a refusal (REJECTED, e.g.
  a bad number) is that message's alone, a reply without exactly one status for a message is Ambiguous for
  it. Infobip documents no maximum number of messages per request: `max_batch` is a conservative guess,
  1000. A 4xx refuses the whole request; a 400 (a message Infobip
  found malformed; its `validationErrors` name fields, not messages) to several messages is followed by
  each message on its own, so that only the one at fault is refused. 429, 5xx, timeouts: every message's.
- Inbound `text` is the whole SMS; `keyword` and `cleanText` are Infobip's split of it, so a bare "STOP"
  (keyword STOP, empty cleanText) reaches the stop-word check as "STOP", and `keyword` goes along: a STOP
  keyword flags the SMS as a stop whatever follows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import aiohttp

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import InfobipSettings

from ._json_api import call, digits, e164, pushed_json, timestamp
from .base import BatchingGateway, Callback, CallbackRequest, Inbound, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient

__all__ = ["GATEWAY", "V2", "V3", "InfobipGateway"]


class Api(NamedTuple):
    send: str
    reports: str
    logs: str
    v3: bool


V3 = Api("/sms/3/messages", "/sms/3/reports", "/sms/3/logs", v3=True)
V2 = Api("/sms/2/text/advanced", "/sms/1/reports", "/sms/1/logs", v3=False)

#: a refused request (`http.<status>`), or a message refused in a 200 reply (`status.<id>`) -> (class, meaning)
#: [providers-A §2.4, §2.5]; other 4xx and other refusals are Permanent; 429 and 5xx: see gateways.transport
ERRORS: dict[str, tuple[type[GatewayError], str]] = {
    "http.400": (Permanent, "bad request"),
    "http.401": (Permanent, "wrong API key"),
    "http.403": (Permanent, "not allowed for this API key"),
    "http.404": (Permanent, "no such endpoint (check the url setting)"),
    "status.20": (Transient, "flooding filter: too many messages to this number this hour"),
    "status.21": (Transient, "Infobip system error"),
    "status.23": (Ambiguous, "duplicate message id"),  # send() reconciles it: an earlier attempt was taken
}

#: (status groupId, status id) -> (state, meaning); (groupId, None) is the group's rule. None = not final
STATUSES: dict[tuple[int, int | None], tuple[State | None, str]] = {
    (0, None): (None, "accepted"),
    (1, None): (None, "pending"),
    (2, None): (State.UNDELIVERED, "undeliverable"),
    (3, None): (State.DELIVERED, "delivered"),
    (3, 2): (None, "delivered to the operator"),
    (4, None): (State.EXPIRED, "expired"),
    (4, 87): (State.REJECTED, "blocked by the anti-fraud filter"),
    (5, None): (State.REJECTED, "rejected"),
    (5, 23): (None, "duplicate message id: a refused resend, not this message's fate"),
}
_FAILED = {State.UNDELIVERED, State.EXPIRED, State.REJECTED}


class Status(NamedTuple):
    state: State | None
    meaning: str
    group: int
    id: int | None
    name: str


#: Infobip's status groups by name: integrations that key on `groupName` send it without `groupId`
GROUPS = {"ACCEPTED": 0, "PENDING": 1, "UNDELIVERABLE": 2, "DELIVERED": 3, "EXPIRED": 4, "REJECTED": 5}


def _status(status: Any) -> Status:
    """An Infobip status object `{groupId, groupName, id, name, description}`, mapped; ValueError if malformed.
    The group is `groupId`, or, where that is missing, `groupName`."""
    group, sid = (status.get("groupId"), status.get("id")) if isinstance(status, dict) else (None, None)
    if not isinstance(group, int) and isinstance(status, dict):
        group = GROUPS.get(str(status.get("groupName") or "").upper(), group)
    if not isinstance(group, int):
        raise ValueError("an Infobip status needs an integer groupId or a known groupName")
    sid = sid if isinstance(sid, int) else None
    state, meaning = STATUSES.get((group, sid)) or STATUSES.get((group, None), (None, f"unknown group {group}"))
    return Status(state, meaning, group, sid, str(status.get("name") or f"{group}.{sid}"))


def _report(item: Any) -> Report:
    if not isinstance(item, dict) or not item.get("messageId"):
        raise ValueError("an Infobip report needs messageId and status")
    status, error = _status(item.get("status")), item.get("error")
    info = None
    if status.state in _FAILED and isinstance(error, dict) and error.get("id"):
        lasting = "permanent" if error.get("permanent") else "temporary"
        info = ErrorInfo(f"infobip.error.{error['id']}", f"{error.get('name')}: {error.get('description')} ({lasting})")
    elif status.state in _FAILED:
        info = ErrorInfo(f"infobip.status.{status.id}", f"{status.meaning}: {status.name}")
    pid = str(item["messageId"])
    return Report(
        provider_message_id=pid,
        job_id=pid,
        to=e164(item["to"]) if item.get("to") else None,
        state=status.state,
        at=timestamp(item.get("doneAt")),
        error=info,
        raw_status=status.name,
    )


def _inbound(item: Any) -> Inbound:
    sender, text = item.get("from"), item.get("text")
    if not isinstance(sender, str) or not sender.strip() or not isinstance(text, str):
        raise ValueError("an Infobip inbound SMS needs from and text (a report needs status)")
    return Inbound(
        from_=e164(sender),
        to=e164(item.get("to")),
        text=text,
        provider_message_id=str(item["messageId"]) if item.get("messageId") else None,
        at=timestamp(item.get("receivedAt")),
        keyword=item["keyword"] if isinstance(item.get("keyword"), str) else None,
    )


def _refused(status: int, data: Any) -> GatewayError:
    """The error for a send answered with something else than 200 (429 and 5xx never get here)."""
    if status < 300:
        return Ambiguous("infobip.bad_reply", f"HTTP {status} without message statuses")
    cls, meaning = ERRORS.get(f"http.{status}", (Permanent, f"HTTP {status}"))
    body = data if isinstance(data, dict) else {}
    error = body.get("requestError")
    error = error.get("serviceException") if isinstance(error, dict) else body
    error = error if isinstance(error, dict) else {}
    said = " ".join(str(error[k]) for k in ("messageId", "errorCode", "text", "description") if error.get(k))
    return cls(f"http.{status}", f"{meaning}: {said}"[:200] if said else meaning)


def _outcome(message: Outgoing, item: Any) -> Receipt | GatewayError:
    """What the send reply's status `item` (the one with this message's messageId, or None) says of it."""
    try:
        status = _status(item.get("status") if isinstance(item, dict) else None)
    except ValueError:
        return Ambiguous("infobip.bad_reply", "HTTP 200 without this message's status")
    if (status.group, status.id) == (5, 23):
        return Receipt(provider_message_id=message.job_id)  # the id is taken: an earlier attempt went through
    if status.state in _FAILED:
        cls, meaning = ERRORS.get(f"status.{status.id}", (Permanent, status.meaning))
        return cls(f"infobip.status.{status.id}", f"{meaning}: {status.name}")
    details = item.get("details")
    parts = details.get("messageCount") if isinstance(details, dict) else item.get("smsCount")
    return Receipt(provider_message_id=message.job_id, parts=parts if isinstance(parts, int) else None)


class InfobipGateway(BatchingGateway[InfobipSettings]):
    """Infobip SMS API v3 (or v2 by URL). Delivery reports: pulled by message id, and pushed; inbound SMS pushed."""

    kind = "infobip"
    settings_type = InfobipSettings
    default_rate = 50.0
    max_parts = 25  # Infobip refuses more than 25 parts (REJECTED_MESSAGE_TOO_LONG)
    has_status = True
    can_find = True
    max_batch = 1000
    assumptions = (
        "Infobip refuses a repeated messageId in the send reply (status 23); for how long it remembers ids is "
        "not documented, so an ambiguous send is looked up in the logs (48 h) before any resend",
        "Infobip rate-limits sends only per account, by answering 429; 50 requests/s per sender is a guess",
        "Infobip documents no maximum of messages per send request: batches hold at most 1000 (a guess)",
        "a send refused with HTTP 400 took none of its messages, so they may be sent again one by one",
    )

    def __init__(self, settings: InfobipSettings, http: aiohttp.ClientSession) -> None:
        super().__init__(settings, http)
        url = settings.url.rstrip("/")
        self.api = next((api for api in (V3, V2) if url.endswith(api.send)), V3)
        self.base_url = url.removesuffix(self.api.send)
        self._auth = {"Authorization": f"App {settings.api_token}"}

    def __repr__(self) -> str:
        return f"InfobipGateway(url={self.settings.url!r})"

    def _sms(self, message: Outgoing) -> dict[str, Any]:
        """The message object of `messages[]` for one SMS."""
        v3 = self.api.v3
        sms: dict[str, Any] = {"destinations": [{"to": digits(message.to), "messageId": message.job_id}]}
        sms |= {"content": {"text": message.text}} if v3 else {"text": message.text}
        if message.originator:
            sms["sender" if v3 else "from"] = message.originator
        if message.valid_until is not None:
            minutes = math.ceil((message.valid_until - datetime.now(UTC)).total_seconds() / 60)
            minutes = min(max(minutes, 1), 2880)
            if v3:
                sms["options"] = {"validityPeriod": {"amount": minutes, "timeUnit": "MINUTES"}}
            else:
                sms["validityPeriod"] = minutes
        if message.callback_url and v3:
            sms["webhooks"] = {"delivery": {"url": message.callback_url}, "contentType": "application/json"}
        elif message.callback_url:
            sms |= {"notifyUrl": message.callback_url, "notifyContentType": "application/json"}
        return sms

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        if not messages:
            return []
        url = self.base_url + self.api.send
        body = {"messages": [self._sms(m) for m in messages]}
        try:
            code, data = await call(self, "POST", url, provider="Infobip", headers=self._auth, body=body)
        except GatewayError as exc:
            return [exc] * len(messages)
        if code == 400 and len(messages) > 1:  # one malformed message refuses all; which one is not said
            return await super().send_many(messages)
        items = data.get("messages") if code == 200 and isinstance(data, dict) else None
        if not isinstance(items, list):
            return [_refused(code, data)] * len(messages)
        by_id: dict[Any, Any] = {}
        for item in items:
            mid = item.get("messageId") if isinstance(item, dict) else None
            by_id[mid] = None if mid in by_id else item  # twice: neither is taken as this message's
        return [_outcome(m, by_id.get(m.job_id)) for m in messages]

    async def find(self, message: Outgoing) -> Receipt | None:
        url = self.base_url + self.api.logs
        params = {"messageId": message.job_id}
        status, data = await call(self, "GET", url, provider="Infobip", headers=self._auth, params=params, lookup=True)
        results = data.get("results") if status == 200 and isinstance(data, dict) else None
        if not isinstance(results, list):
            raise Transient(f"infobip.lookup.{status}", f"Infobip log lookup answered HTTP {status}")
        found = any(isinstance(r, dict) and r.get("messageId") == message.job_id for r in results)
        return Receipt(provider_message_id=message.job_id) if found else None

    async def status(self, ref: StatusRef) -> Report:
        pid = ref.provider_message_id or ref.job_id
        for path in (self.api.reports, self.api.logs):
            url = self.base_url + path
            status, data = await call(
                self, "GET", url, provider="Infobip", headers=self._auth, params={"messageId": pid}, lookup=True
            )
            results = data.get("results") if status == 200 and isinstance(data, dict) else None
            if not isinstance(results, list):
                raise Transient(f"infobip.lookup.{status}", f"Infobip status lookup answered HTTP {status}")
            try:
                found = [_report(r) for r in results if isinstance(r, dict) and r.get("messageId") == pid]
            except ValueError as exc:
                raise Transient("infobip.bad_reply", f"Infobip status lookup: {exc}") from None
            if found:
                return next((r for r in found if r.state is not None), found[-1])
        return Report(provider_message_id=pid, job_id=ref.job_id, state=None, raw_status="NOT_FOUND")

    def parse_callback(self, request: CallbackRequest) -> Callback:
        data = pushed_json(request, "Infobip")
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or not all(isinstance(item, dict) for item in results):
            raise ValueError('Infobip pushes {"results": [...]}')
        return Callback(
            reports=[_report(item) for item in results if "status" in item],
            inbound=[_inbound(item) for item in results if "status" not in item],
        )


GATEWAY = InfobipGateway
