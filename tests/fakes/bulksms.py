"""A wire-faithful fake of BulkSMS.com's JSON REST API (shared/providers/providers-A.md §1), for tests.

    async with FakeBulksms(username="acme", password="s3cret") as fake:
        settings = BulksmsSettings(login="acme", password="s3cret", base_url=fake.url)  # fake.url ends in /v1

Like BulkSMS: `POST /v1/messages` takes a JSON array of SubmissionEntry objects (or one object) and answers 201
with an array of Message objects, status ACCEPTED and no `numberOfParts` yet; `GET /v1/messages/{id}` answers
the message as it is now, or 404. Auth is HTTP Basic. Errors are problem JSON `{type, title, status, detail}`.
- `deduplication-id` (an int32): a submission repeating one seen in the last 12 hours creates nothing and is
  answered with the first one's reply, as BulkSMS documents ("expires after about 12 h"); after that it is a
  new submission. `clock_offset` moves the fake's clock forward, so a test can be "12 hours later".
- `GET /v1/messages?filter=…`: the documented search, here for `type=…` and `userSuppliedId=…` clauses
  joined by `&` (URL-encoded inside `filter`), newest first, at most `limit` (default 1000).
- `auto-unicode=true` (or `encoding: UNICODE`) sends a non-GSM text as UNICODE; otherwise, like BulkSMS, every
  character outside GSM 03.38 becomes '?' (see `FakeMessage.body`).
- `longMessageMaxParts` (body field, or query parameter as BulkSMS's PHP sample passes it) defaults to 3. A
  text that needs more parts is refused with 400 (what BulkSMS really does there is not documented).
- Numbers are answered as digits without '+'; `userSuppliedId` over 20 characters is a 400.
- Batches, as documented: up to 30,000 entries per POST (more: 400); one `deduplication-id` for the whole
  submission (a replay answers the first submission's reply, whatever the new body holds); one invalid entry
  refuses the whole request with a 400 whose detail names the problem but no entry, and creates nothing (a
  refused submission does not record its deduplication-id: assumed, BulkSMS does not say).
Counts: `requests` (every request, lookups too), `send_requests` (the POSTs to /v1/messages), `messages` (one
per message created).
Knobs: `fail_next(n, status, kind)` (send only), `set_status`, `initial_status` (what every message becomes at
once, e.g. "DELIVERED"), and the faults of `JsonFake`. Webhook bodies: `webhook_body(ids)` for status updates,
`received_body(...)` for inbound SMS (status DELIVERED is assumed for those).

`JsonFake` is the base (tests/fakes/_base.py) this fake shares with `tests.fakes.infobip`: injected HTTP
statuses come with the provider's error body, and any request without valid auth gets a 401.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from smsfleet.segments import Encoding, count

from ._base import Seen, SeenFake

__all__ = ["FakeBulksms", "FakeMessage", "JsonFake", "Seen"]


class JsonFake(SeenFake):
    """A JSON provider's fake: `Seen` records; the faults, then an auth check, apply to any request (routed or
    not) before its handler; an injected status is answered with the provider's error body. Subclasses give
    routes, auth, errors."""

    def authorized(self, request: web.Request) -> bool:
        raise NotImplementedError

    def error(self, status: int, detail: str = "") -> web.Response:
        raise NotImplementedError

    def injected(self, status: int, headers: Mapping[str, str]) -> web.StreamResponse:
        response = self.error(status, "injected fault")
        response.headers.update(headers)
        return response

    def sent(self, path: str) -> list[Any]:
        """The JSON bodies of the requests to `path` (relative to `url`)."""
        return [seen.json() for seen in self.requests if seen.path == self.path + path]

    def middlewares(self) -> list[Middleware]:
        return [self._faults]

    @web.middleware
    async def _faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(await self.record(request))
        if (fault := await self.faults(request)) is not None:
            return fault
        if not self.authorized(request):
            return self.error(401, "Authentication failed")
        return await handler(request)


_KINDS = {400: "bad-request", 401: "authentication-failed", 403: "insufficient-credits", 404: "not-found"}
_TITLES = {400: "Bad Request", 401: "Authentication Failed", 403: "Insufficient Credits", 404: "Not Found"}
_PHONE = re.compile(r"\+?\d{7,15}")
MAX_ENTRIES = 30_000  # per POST [providers-A §1.1]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _gsm_only(text: str) -> str:
    return "".join(c if count(c).encoding is Encoding.GSM7 else "?" for c in text)


@dataclasses.dataclass
class FakeMessage:
    id: str
    to: str  # digits, as BulkSMS answers them
    body: str  # as BulkSMS sends it: '?' for what TEXT cannot carry
    encoding: str
    sender: Any
    entry: dict[str, Any]
    query: dict[str, str]
    submission: str = ""
    parts: int = 1
    status: str = "ACCEPTED"  # `status.id` without ".null": "DELIVERED", "FAILED.EXPIRED", ...
    date: str = dataclasses.field(default_factory=_now)

    def as_json(self, *, submitted: bool = False) -> dict[str, Any]:
        type_, _, subtype = ("ACCEPTED" if submitted else self.status).partition(".")
        data: dict[str, Any] = {
            "id": self.id,
            "type": "SENT",
            "from": self.sender,
            "to": self.to,
            "body": self.body,
            "encoding": self.encoding,
            "protocolId": 0,
            "messageClass": 2,
            "submission": {"id": self.submission, "date": self.date},
            "status": {"id": f"{type_}.{subtype or 'null'}", "type": type_, "subtype": subtype or None},
            "relatedSentMessageId": None,
            "userSuppliedId": self.entry.get("userSuppliedId"),
        }
        return data if submitted else data | {"numberOfParts": self.parts, "creditCost": float(self.parts)}


class FakeBulksms(JsonFake):
    path = "/v1"

    def __init__(
        self,
        username: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        initial_status: str = "ACCEPTED",
        latency: float = 0.0,
        failure_rate: float = 0.0,
        timeout_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(latency=latency, failure_rate=failure_rate, timeout_rate=timeout_rate, seed=seed)
        self.username, self.password = username, password
        self.initial_status = initial_status
        self.messages: list[FakeMessage] = []
        self.by_id: dict[str, FakeMessage] = {}
        self.submissions: dict[int, tuple[float, list[dict[str, Any]]]] = {}  # deduplication-id -> when, reply
        self.dedup_window_s = 12 * 3600.0
        self.clock_offset = 0.0
        self._fail: list[tuple[int, str]] = []
        self._ids = itertools.count(4_023_457_654)

    @property
    def send_requests(self) -> int:
        return sum(seen.method == "POST" and seen.path == "/v1/messages" for seen in self.requests)

    # knobs
    def fail_next(self, n: int, status: int = 403, kind: str = "insufficient-credits") -> None:
        self._fail += [(status, kind)] * n

    def set_status(self, message_id: str, status: str) -> None:
        self.by_id[message_id].status = status

    def webhook_body(self, *message_ids: str) -> bytes:
        return json.dumps([self.by_id[i].as_json() for i in message_ids]).encode()

    def received_body(self, *sms: tuple[str, str], to: str = "27820000000") -> bytes:
        """A RECEIVED webhook's body: one Message per (from, text), `from` as digits."""
        items = [
            {
                "id": str(next(self._ids)),
                "type": "RECEIVED",
                "from": sender.lstrip("+"),
                "to": to,
                "body": text,
                "encoding": "TEXT" if count(text).encoding is Encoding.GSM7 else "UNICODE",
                "protocolId": 0,
                "messageClass": 2,
                "submission": {"id": f"2-{next(self._ids):020d}", "date": "2024-05-06T07:08:09+02:00"},
                "status": {"id": "DELIVERED.null", "type": "DELIVERED", "subtype": None},
                "relatedSentMessageId": self._last_sent_to(sender),
                "numberOfParts": 1,
                "creditCost": 0,
            }
            for sender, text in sms
        ]
        return json.dumps(items).encode()

    def _last_sent_to(self, number: str) -> str | None:
        """BulkSMS links a reply to the last message sent to that number (`relatedSentMessageId`)."""
        return next((m.id for m in reversed(self.messages) if m.to == number.lstrip("+")), None)

    # the API
    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self._send),
            web.get("/v1/messages", self._search),
            web.get("/v1/messages/{id}", self._get),
        ]

    def authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return False
        return scheme == "Basic" and (login, password) == (self.username, self.password)

    def error(self, status: int, detail: str = "", kind: str = "") -> web.Response:
        kind = kind or _KINDS.get(status, "server-error")
        body = {"type": f"https://developer.bulksms.com/json/v1/errors#{kind}", "title": _TITLES.get(status, kind)}
        return web.json_response(body | {"status": status} | ({"detail": detail} if detail else {}), status=status)

    async def _get(self, request: web.Request) -> web.Response:
        message = self.by_id.get(request.match_info["id"])
        if message is None:
            return self.error(404, f"Message with id '{request.match_info['id']}' does not exist")
        return web.json_response(message.as_json())

    async def _search(self, request: web.Request) -> web.Response:
        clauses = dict(parse_qsl(request.query.get("filter", ""), keep_blank_values=True))
        unknown = set(clauses) - {"type", "userSuppliedId"}
        if unknown:
            return self.error(400, f"filter on {sorted(unknown)} is not supported by the fake")
        limit = int(request.query.get("limit") or 1000)
        found = [
            m.as_json() for m in reversed(self.messages)
            if clauses.get("type", "SENT") == "SENT"
            and ("userSuppliedId" not in clauses or m.entry.get("userSuppliedId") == clauses["userSuppliedId"])
        ]  # fmt: skip
        return web.json_response(found[:limit])

    async def _send(self, request: web.Request) -> web.Response:
        dedup = request.query.get("deduplication-id", "")
        if dedup and not (dedup.lstrip("-").isdigit() and -(2**31) <= int(dedup) < 2**31):
            return self.error(400, "deduplication-id must be an int32")
        if self._fail:
            status, kind = self._fail.pop(0)
            return self.error(status, "refused by the test", kind)
        try:
            data = json.loads(await request.read())
        except ValueError:
            return self.error(400, "The request body is not valid JSON")
        now = time.time() + self.clock_offset
        seen = self.submissions.get(int(dedup)) if dedup else None
        if seen is not None and now - seen[0] < self.dedup_window_s:
            return web.json_response(seen[1], status=201)
        entries = data if isinstance(data, list) else [data]
        problems = [p for entry in entries if (p := self._problem(entry, request.query))]
        if len(entries) > MAX_ENTRIES:
            problems.insert(0, f"at most {MAX_ENTRIES} messages can be posted in one submission")
        if problems:
            return self.error(400, problems[0])
        submission = f"1-{next(self._ids):020d}"
        created = [self._create(e, to, request.query, submission) for e in entries for to in _recipients(e)]
        reply = [m.as_json(submitted=True) for m in created]
        if dedup:
            self.submissions[int(dedup)] = (now, reply)
        self.dropped(request)
        return web.json_response(reply, status=201)

    def _problem(self, entry: Any, query: Mapping[str, str]) -> str | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("body"), str) or not entry["body"]:
            return "body is required"
        if not _recipients(entry) or not all(_PHONE.fullmatch(to) for to in _recipients(entry)):
            return "to must be one or more phone numbers"
        if len(str(entry.get("userSuppliedId") or "")) > 20:
            return "userSuppliedId can contain no more than 20 characters"
        sender = entry.get("from")
        if isinstance(sender, dict) and sender.get("type") == "SHORTCODE":
            sender = sender.get("address")
            if not (isinstance(sender, str) and sender.isdigit() and len(sender) <= 6):
                return "a SHORTCODE address has up to 6 digits"
        elif sender is not None and not (isinstance(sender, str) and (_PHONE.fullmatch(sender) or len(sender) <= 11)):
            return "from is not a valid sender id"
        limit = int(entry.get("longMessageMaxParts") or query.get("longMessageMaxParts") or 3)
        parts = count(self._text(entry, query)[0]).parts
        return f"the body needs {parts} parts; longMessageMaxParts is {limit}" if parts > limit else None

    @staticmethod
    def _text(entry: dict[str, Any], query: Mapping[str, str]) -> tuple[str, str]:
        text: str = entry["body"]
        gsm = count(text).encoding is Encoding.GSM7
        if entry.get("encoding") == "UNICODE" or (query.get("auto-unicode") == "true" and not gsm):
            return text, "UNICODE"
        return _gsm_only(text), "TEXT"

    def _create(self, entry: dict[str, Any], to: str, query: Mapping[str, str], submission: str) -> FakeMessage:
        text, encoding = self._text(entry, query)
        sender = entry.get("from")
        sender = sender.get("address") if isinstance(sender, dict) else sender
        message = FakeMessage(
            str(next(self._ids)),
            to.lstrip("+"),
            text,
            encoding,
            sender,
            entry,
            dict(query),
            submission,
            count(text).parts,
        )
        message.status = self.initial_status
        self.messages.append(message)
        self.by_id[message.id] = message
        return message


def _recipients(entry: dict[str, Any]) -> list[str]:
    to = entry.get("to")
    items = to if isinstance(to, list) else [to]
    found = [item.get("address") if isinstance(item, dict) else item for item in items]
    return [item for item in found if isinstance(item, str)]
