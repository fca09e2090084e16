"""A wire-faithful fake of Infobip's SMS HTTP API (shared/providers/providers-A.md §2), for tests.

    async with FakeInfobip(api_key="k3y") as fake:
        settings = InfobipSettings(url=fake.url, api_token="k3y")

Like Infobip: `POST /sms/3/messages` (v3: `sender`, `content.text`, `options.validityPeriod{amount,timeUnit}`)
and `POST /sms/2/text/advanced` (v2: `from`, `text`, `validityPeriod` in minutes) answer 200 with one status
per destination, PENDING_ACCEPTED for a message taken; `GET /sms/3/reports` and `/sms/1/reports` hand out each
delivery report once; `GET /sms/3/logs` and `/sms/1/logs` answer the current state every time. Auth is
`Authorization: App <key>`. Request errors are 4xx `{"requestError": {"serviceException": {messageId, text}}}`
(400 with `validationErrors`), 429 is `{"errorCode": "E429", ...}`.
- A destination `messageId` that was used before is refused in the 200 reply with status 23
  REJECTED_DUPLICATE_MESSAGE_ID, and nothing is sent (documented as a status; that it comes in the send reply
  is our assumption). A `to` that is not 7..15 digits gets REJECTED_PREFIX_MISSING; over 25 parts,
  REJECTED_MESSAGE_TOO_LONG.
- Many messages per request (`messages[]`, each with its `destinations[]`), with no documented maximum: one
  status per destination, in order; a refusal in the 200 reply is that destination's alone; a request with
  one malformed message is refused whole (400, `validationErrors` by field) and nothing is sent.
Counts: `requests` (every request, lookups too), `send_requests` (the POSTs to a send path), `messages` (one
per message taken, `refused` the others).
Knobs: `reject_next(n, status_id)` (the next sends refused in the 200 reply), `set_status(message_id, status,
error)` (queues a report), `initial_status` (e.g. 5: every message is delivered at once), and the faults of
`JsonFake`. Pushed bodies: `report_body(ids)` (delivery reports), `inbound_body(...)` (inbound SMS, with
Infobip's keyword split: a first word in `keywords` becomes `keyword`, the rest `cleanText`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from smsfleet.segments import count

from .bulksms import JsonFake

__all__ = ["ERRORS", "STATUSES", "FakeInfobip", "FakeSms"]

#: status id -> (groupId, groupName, name, description) [providers-A §2.5]
STATUSES: dict[int, tuple[int, str, str, str]] = {
    26: (1, "PENDING", "PENDING_ACCEPTED", "Message sent to next instance"),
    7: (1, "PENDING", "PENDING_ENROUTE", "Message sent to next instance"),
    3: (1, "PENDING", "PENDING_WAITING_DELIVERY", "Message sent, waiting for delivery report"),
    2: (3, "DELIVERED", "DELIVERED_TO_OPERATOR", "Message delivered to operator"),
    5: (3, "DELIVERED", "DELIVERED_TO_HANDSET", "Message delivered to handset"),
    4: (2, "UNDELIVERABLE", "UNDELIVERABLE_REJECTED_OPERATOR", "Message rejected by operator"),
    9: (2, "UNDELIVERABLE", "UNDELIVERABLE_NOT_DELIVERED", "Message sent not delivered"),
    15: (4, "EXPIRED", "EXPIRED_EXPIRED", "Message expired"),
    29: (4, "EXPIRED", "EXPIRED_DLR_UNKNOWN", "Message expired, delivery status unknown"),
    87: (4, "EXPIRED", "SIGNALS_BLOCKED", "Message rejected by the anti-fraud mechanism"),
    6: (5, "REJECTED", "REJECTED_NETWORK", "Network is forbidden"),
    8: (5, "REJECTED", "REJECTED_PREFIX_MISSING", "Number prefix missing"),
    12: (5, "REJECTED", "REJECTED_NOT_ENOUGH_CREDITS", "Not enough credits"),
    14: (5, "REJECTED", "REJECTED_DESTINATION_BLOCKLISTED", "Destination address blocklisted"),
    20: (5, "REJECTED", "REJECTED_FLOODING_FILTER", "Message rejected by the flooding filter"),
    21: (5, "REJECTED", "REJECTED_SYSTEM_ERROR", "System error"),
    23: (5, "REJECTED", "REJECTED_DUPLICATE_MESSAGE_ID", "Duplicate message id"),
    25: (5, "REJECTED", "REJECTED_MESSAGE_TOO_LONG", "Message too long"),
    52: (5, "REJECTED", "REJECTED_DESTINATION", "Invalid destination address"),
}
#: error id -> (groupId, groupName, name, description, permanent)
ERRORS: dict[int, tuple[int, str, str, str, bool]] = {
    0: (0, "OK", "NO_ERROR", "No Error", False),
    1: (1, "HANDSET_ERRORS", "EC_UNKNOWN_SUBSCRIBER", "Unknown Subscriber", True),
    6: (1, "HANDSET_ERRORS", "EC_ABSENT_SUBSCRIBER_SM", "Absent Subscriber", False),
    34: (1, "HANDSET_ERRORS", "EC_SYSTEM_FAILURE", "System Failure", False),
}
_TOKENS = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND"}
_TEXTS = {400: "Bad request", 401: "Invalid login details", 403: "Forbidden", 404: "Not found"}
_UNITS = {"SECONDS": 1, "MINUTES": 60, "HOURS": 3600}
_SEND_PATHS = ("/sms/3/messages", "/sms/2/text/advanced")


def _at() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _status(status_id: int) -> dict[str, Any]:
    group, group_name, name, description = STATUSES[status_id]
    return {"groupId": group, "groupName": group_name, "id": status_id, "name": name, "description": description}


@dataclasses.dataclass
class FakeSms:
    message_id: str
    bulk_id: str
    to: str
    sender: str | None
    text: str
    v3: bool
    sms: dict[str, Any]  # the message object as posted
    parts: int
    status: int = 26
    error: int = 0
    sent_at: str = dataclasses.field(default_factory=_at)

    def report(self, *, log: bool = False) -> dict[str, Any]:
        group, group_name, name, description, permanent = ERRORS[self.error]
        data: dict[str, Any] = {
            "bulkId": self.bulk_id,
            "messageId": self.message_id,
            "to": self.to,
            "sentAt": self.sent_at,
            "doneAt": _at(),
            "price": {"pricePerMessage": 0.01 * self.parts, "currency": "EUR"},
            "status": _status(self.status),
            "error": {"groupId": group, "groupName": group_name, "id": self.error, "name": name}
            | {"description": description, "permanent": permanent},
        }
        if not self.v3:
            return data | {"smsCount": self.parts} | ({"from": self.sender, "text": self.text} if log else {})
        data |= {"sender": self.sender, "messageCount": self.parts}
        if log:  # a v3 log names the number `destination` and carries the text
            data["destination"], data["content"] = data.pop("to"), {"text": self.text}
        return data


class FakeInfobip(JsonFake):
    def __init__(
        self,
        api_key: str = "k3y",
        *,
        initial_status: int = 26,
        keywords: tuple[str, ...] = ("STOP",),
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.api_key, self.initial_status, self.keywords = api_key, initial_status, keywords
        self.messages: list[FakeSms] = []
        self.by_id: dict[str, FakeSms] = {}
        self.refused: list[tuple[str, int]] = []  # (messageId, status id) of sends refused in a 200 reply
        self.pending_reports: list[str] = []  # message ids whose report was not pulled yet
        self._reject: list[int] = []
        self._ids = itertools.count(2_250_000_000)

    @property
    def send_requests(self) -> int:
        return sum(seen.method == "POST" and seen.path in _SEND_PATHS for seen in self.requests)

    # knobs
    def reject_next(self, n: int, status_id: int) -> None:
        self._reject += [status_id] * n

    def set_status(self, message_id: str, status_id: int, error_id: int = 0) -> None:
        sms = self.by_id[message_id]
        sms.status, sms.error = status_id, error_id
        self.pending_reports.append(message_id)

    def report_body(self, *message_ids: str) -> bytes:
        return json.dumps({"results": [self.by_id[i].report() for i in message_ids]}).encode()

    def inbound_body(self, *sms: tuple[str, str], to: str = "447491163443") -> bytes:
        """An inbound push (the same body as `/sms/1/inbox/reports`): one result per (from, text)."""
        results = []
        for sender, text in sms:
            first, _, rest = text.strip().partition(" ")
            keyword = first.upper() if first.upper() in self.keywords else ""
            results.append(
                {"messageId": str(next(self._ids)), "from": sender.lstrip("+"), "to": to, "text": text}
                | {"cleanText": rest.strip() if keyword else text, "keyword": keyword, "receivedAt": _at()}
                | {"smsCount": count(text).parts, "price": {"pricePerMessage": 0.0, "currency": "EUR"}}
            )
        return json.dumps({"results": results, "messageCount": len(results), "pendingMessageCount": 0}).encode()

    # the API
    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/sms/3/messages", self._send),
            web.post("/sms/2/text/advanced", self._send),
            *(web.get(f"/sms/{v}/reports", self._reports) for v in (1, 3)),
            *(web.get(f"/sms/{v}/logs", self._logs) for v in (1, 3)),
        ]

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"App {self.api_key}"

    def error(self, status: int, detail: str = "", violations: Mapping[str, list[str]] | None = None) -> web.Response:
        if status == 429:
            body: dict[str, Any] = {"errorCode": "E429", "description": "Too many requests sent."}
            return web.json_response(body | {"action": "Slow down.", "violations": [], "resources": []}, status=429)
        exception: dict[str, Any] = {
            "messageId": _TOKENS.get(status, "GENERAL_ERROR"),
            "text": _TEXTS.get(status, detail),
        }
        if violations:
            exception["validationErrors"] = dict(violations)
        return web.json_response({"requestError": {"serviceException": exception}}, status=status)

    async def _send(self, request: web.Request) -> web.Response:
        v3 = request.path == "/sms/3/messages"
        try:
            data = json.loads(await request.read())
        except ValueError:
            return self.error(400)
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not messages:
            return self.error(400, violations={"messages": ["must not be empty"]})
        violations = {k: [v] for i, sms in enumerate(messages) for k, v in _violations(i, sms, v3).items()}
        if violations:
            return self.error(400, violations=violations)
        bulk_id = str(next(self._ids))
        replies = [self._take(sms, d, v3, bulk_id) for sms in messages for d in sms["destinations"]]
        self.dropped(request)
        return web.json_response({"bulkId": bulk_id, "messages": replies})

    def _take(self, sms: dict[str, Any], destination: dict[str, Any], v3: bool, bulk_id: str) -> dict[str, Any]:
        to = str(destination["to"]).lstrip("+")
        text = sms["content"]["text"] if v3 else sms["text"]
        message_id = str(destination.get("messageId") or next(self._ids))
        refusal = self._reject.pop(0) if self._reject else None
        if refusal is None and message_id in self.by_id:
            refusal = 23
        elif refusal is None and not (to.isdigit() and 7 <= len(to) <= 15):
            refusal = 8
        elif refusal is None and count(text).parts > 25:
            refusal = 25
        if refusal is None:
            taken = FakeSms(
                message_id, bulk_id, to, sms.get("sender" if v3 else "from"), text, v3, sms, count(text).parts
            )
            self.messages.append(taken)
            self.by_id[message_id] = taken
            if self.initial_status != 26:
                self.set_status(message_id, self.initial_status)
        else:
            self.refused.append((message_id, refusal))
        reply = {"messageId": message_id, "status": _status(refusal or 26)}
        if v3:
            return reply | {"destination": to, "details": {"messageCount": count(text).parts}}
        return reply | {"to": to}

    async def _reports(self, request: web.Request) -> web.Response:
        wanted = request.query.get("messageId")
        limit = int(request.query.get("limit") or 1000)
        picked = [i for i in self.pending_reports if wanted in (None, i)][:limit]
        self.pending_reports = [i for i in self.pending_reports if i not in picked]  # each report is given once
        return web.json_response({"results": [self.by_id[i].report() for i in picked]})

    async def _logs(self, request: web.Request) -> web.Response:
        wanted = request.query.get("messageId")
        found = [sms for sms in self.messages if wanted in (None, sms.message_id)]
        return web.json_response({"results": [sms.report(log=True) for sms in found][:1000]})


def _violations(i: int, sms: Any, v3: bool) -> dict[str, str]:
    """Infobip's validationErrors for the `i`th message object, by field path."""
    where = f"messages[{i}]"
    if not isinstance(sms, dict):
        return {where: "must be an object"}
    found: dict[str, str] = {}
    destinations = sms.get("destinations")
    if not isinstance(destinations, list) or not destinations:
        found[f"{where}.destinations"] = "must not be empty"
    elif not all(isinstance(d, dict) and d.get("to") for d in destinations):
        found[f"{where}.destinations[].to"] = "must not be blank"
    elif any(len(str(d.get("messageId") or "")) > 200 for d in destinations):
        found[f"{where}.destinations[].messageId"] = "size must be between 0 and 200"
    text = (sms.get("content") or {}).get("text") if v3 else sms.get("text")
    if not isinstance(text, str) or not text:
        found[f"{where}.{'content.text' if v3 else 'text'}"] = "must not be blank"
    period = (sms.get("options") or {}).get("validityPeriod") if v3 else sms.get("validityPeriod")
    if v3 and period is not None:
        seconds = period.get("amount", 0) * _UNITS.get(period.get("timeUnit", "MINUTES"), 0)
        if not 0 < seconds <= 48 * 3600:
            found[f"{where}.options.validityPeriod"] = "must be at most 48 hours"
    elif period is not None and not (isinstance(period, int) and 1 <= period <= 2880):
        found[f"{where}.validityPeriod"] = "must be between 1 and 2880"
    return found
