"""A wire-faithful fake of Devino's two HTTP APIs (shared/providers/providers-A.md §5), for tests.

    async with FakeDevino(login="acme", password="s3cret", api_key="key-1") as fake:
        classic = DevinoSettings(login="acme", password="s3cret", url=fake.url)
        online = DevinoSettings(api_key="key-1", url=fake.url)

Classic REST (integrationapi.net), parameters case-insensitive, in the query string or a form body:
- `GET /rest/user/sessionid?login&password`: a JSON string of 36 characters, valid `session_ttl` seconds.
- `POST /rest/Sms/Send` (SessionID, SourceAddress, DestinationAddress, Data, Validity): a JSON array of ids,
  one per part (consecutive numbers, as in Devino's examples).
- `GET /rest/Sms/State?sessionId&messageId`: `{"State", "CreationDateUtc": "/Date(ms)/", …}`; an id it does
  not know has State 255.
- Errors: an HTTP status and `{"Code", "Desc"}`: 400/1 missing argument, 400/2 invalid argument, 400/3 unknown
  session, 401/4 bad login or expired session, 400/6 bad source address; `fail_next(n, code)` answers a send
  with any code, at the HTTP status Devino gives it.
Devino.Online: `POST /sms/messages` with `Authorization: Key <api_key>` and a JSON body; per message
`{"code": "OK", "messageId", "segmentsId" (with includeSegmentId=true)}` or `{"code": "REJECTED", "reasons":
{code: parameter}}` (the reason codes are made up: Devino's were not retrieved), one per message of the
request, in order; more than 32,000 messages (the documented maximum) get HTTP 400 for the request (inferred),
as does a request without messages; a wrong key gets HTTP 401 (inferred). It keeps every message it takes,
never deduplicates (nothing is documented), and `reject_next(n)` rejects the next messages.

Messages start in classic state `initial_state` (default -1, sent to the network); `set_state` moves them.
`callback_body` is the (assumed) Devino.Online status push. Faults: `FakeProvider`'s
(tests/fakes/_base.py); `hang_next(1, "/rest/Sms/")` hangs only sends and lookups, not a login.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web

from ._base import FakeProvider
from ._devino_smstraffic import Seen

__all__ = ["CODES", "FakeDevino", "FakeMessage"]

#: classic error Code -> (HTTP status, Desc)
CODES = {
    1: (400, "Argument cannot be null or empty"),
    2: (400, "Invalid argument"),
    3: (400, "Invalid session id"),
    4: (401, "Unauthorized"),
    5: (403, "Not enough credits"),
    6: (400, "Invalid source address"),
    7: (403, "Forbidden"),
    8: (500, "Gateway error"),
    9: (500, "Internal server error"),
}
_PRIORITIES = {"LOW", "MEDIUM", "HIGH", "REALTIME"}
#: messages in one Devino.Online request, at most [§5.B]
MAX_MESSAGES = 32_000


@dataclasses.dataclass
class FakeMessage:
    api: str  # "rest" | "online"
    ids: list[str]  # one per part; for Devino.Online ids[0] is the messageId
    to: str
    text: str
    source: str | None
    fields: dict[str, Any]
    states: dict[str, int]
    created: float = dataclasses.field(default_factory=time.time)


def _parts(text: str) -> int:
    one, many = (160, 153) if text.isascii() else (70, 67)
    return 1 if len(text) <= one else -(-len(text) // many)


def _net(ts: float) -> str:
    return f"/Date({int(ts * 1000)})/"


class FakeDevino(FakeProvider[Seen]):
    def __init__(
        self,
        login: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        api_key: str = "key-1",
        *,
        latency: float = 0.0,
        initial_state: int = -1,
        session_ttl: float = 7200.0,
    ) -> None:
        super().__init__(latency=latency)
        self.login, self.password, self.api_key = login, password, api_key
        self.initial_state, self.session_ttl = initial_state, session_ttl
        self.sessions: dict[str, float] = {}  # session id -> expiry (time.monotonic)
        self.messages: list[FakeMessage] = []
        self.by_id: dict[str, FakeMessage] = {}
        self._fail: list[int] = []
        self._reject = 0
        self._ids = itertools.count(579_700_854_169_272_358)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("GET", "/rest/user/sessionid", self._sessionid),
            web.route("*", "/rest/Sms/Send", self._send),
            web.route("GET", "/rest/Sms/State", self._state),
            web.route("POST", "/sms/messages", self._online),
        ]

    # knobs
    def fail_next(self, n: int, code: int) -> None:
        self._fail += [code] * n

    def reject_next(self, n: int = 1) -> None:
        self._reject += n

    def expire_sessions(self) -> None:
        self.sessions = dict.fromkeys(self.sessions, 0.0)

    def set_state(self, pid: str, state: int, *, all_parts: bool = True) -> None:
        message = self.by_id[pid]
        for part in message.ids if all_parts else [pid]:
            message.states[part] = state

    def callback_body(self, message_id: str, status: str, job_id: str | None = None) -> bytes:
        item: dict[str, Any] = {"messageId": message_id, "status": status}
        return msgspec.json.encode(item | ({"options": {"job_id": job_id}} if job_id else {}))

    # classic REST
    async def _fields(self, request: web.Request) -> dict[str, str]:
        fields = dict(request.query)
        if request.method == "POST":
            fields.update({k: str(v) for k, v in (await request.post()).items()})
        self.requests.append(Seen(request.method, request.path, fields, dict(request.headers)))
        return {k.lower(): v for k, v in fields.items()}

    async def _sessionid(self, request: web.Request) -> web.StreamResponse:
        fields = await self._fields(request)
        if fault := await self.faults(request):
            return fault
        if (fields.get("login"), fields.get("password")) != (self.login, self.password):
            return _error(4, "Invalid login or password")
        sid = str(uuid.uuid4()).upper()
        self.sessions[sid] = time.monotonic() + self.session_ttl
        return web.json_response(sid)

    def _session_error(self, fields: dict[str, str]) -> web.Response | None:
        sid = fields.get("sessionid", "")
        if not sid:
            return _error(1, "SessionID is null or empty")
        if sid not in self.sessions:
            return _error(3)
        if self.sessions[sid] <= time.monotonic():
            return _error(4, "SessionID expired")
        return None

    async def _send(self, request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one return per error
        fields = await self._fields(request)
        if fault := await self.faults(request):
            return fault
        if refused := self._session_error(fields):
            return refused
        if self._fail:
            return _error(self._fail.pop(0))
        to, source, data = (fields.get(k, "") for k in ("destinationaddress", "sourceaddress", "data"))
        if not to or not source or not data:
            return _error(1)
        if not re.fullmatch(r"\+?\d{10,15}", to) or len(data) > 2000:
            return _error(2, "Invalid destination address" if len(data) <= 2000 else "Data is too long")
        if not re.fullmatch(r"[A-Za-z0-9 ._-]{1,11}|\d{1,15}", source):
            return _error(6)
        if fields.get("validity", "0").isdigit() is False:
            return _error(2, "Invalid validity")
        message = self._take("rest", to.lstrip("+"), data, source, fields, ids=_parts(data))
        if self.dropped(request):
            return web.Response()
        return web.json_response(message.ids)

    async def _state(self, request: web.Request) -> web.StreamResponse:
        fields = await self._fields(request)
        if fault := await self.faults(request):
            return fault
        if refused := self._session_error(fields):
            return refused
        pid = fields.get("messageid", "")
        if not pid:
            return _error(1)
        message = self.by_id.get(pid)
        if message is None:
            body: dict[str, Any] = {"State": 255, "CreationDateUtc": None, "SubmittedDateUtc": None}
            return web.json_response(body | {"ReportedDateUtc": None, "TimeStampUtc": None, "Price": None})
        state, at = message.states[pid], _net(message.created)
        return web.json_response({
            "State": state, "CreationDateUtc": at, "SubmittedDateUtc": at,
            "ReportedDateUtc": _net(time.time()) if state >= 0 else None, "TimeStampUtc": _net(time.time()),
            "StateDescription": f"state {state}", "Price": 0.35,
        })  # fmt: skip

    # Devino.Online
    async def _online(self, request: web.Request) -> web.StreamResponse:
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            body = None
        headers = dict(request.headers)
        self.requests.append(Seen(request.method, request.path, dict(request.query), headers, body))
        if fault := await self.faults(request):
            return fault
        if headers.get("Authorization") != f"Key {self.api_key}":
            return web.json_response({"code": "UNAUTHORIZED", "description": "Invalid API key"}, status=401)
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            return web.json_response({"code": "BAD_REQUEST", "description": "messages required"}, status=400)
        if len(items) > MAX_MESSAGES:
            return web.json_response({"code": "BAD_REQUEST", "description": "too many messages"}, status=400)
        result = [self._online_item(i, n, request.query.get("includeSegmentId") == "true") for n, i in enumerate(items)]
        if self.dropped(request):
            return web.Response()
        return web.json_response({"result": result})

    def _online_item(self, item: dict[str, Any], n: int, segments: bool) -> dict[str, Any]:
        reasons = {}
        if not isinstance(item.get("from"), str) or not re.fullmatch(r"[A-Za-z0-9 ._-]{1,11}|\d{1,15}", item["from"]):
            reasons["INVALID_SENDER"] = f"messages[{n}].from"
        if not isinstance(item.get("to"), str) or not re.fullmatch(r"\d{10,15}", item["to"]):
            reasons["INVALID_PHONE"] = f"messages[{n}].to"
        if not isinstance(item.get("text"), str) or not item["text"]:
            reasons["EMPTY_TEXT"] = f"messages[{n}].text"
        validity = item.get("validity", 0)
        if not isinstance(validity, int) or not 0 <= validity <= 259_200:
            reasons["INVALID_VALIDITY"] = f"messages[{n}].validity"
        if item.get("priority", "LOW") not in _PRIORITIES:
            reasons["INVALID_PRIORITY"] = f"messages[{n}].priority"
        if self._reject:
            self._reject -= 1
            reasons["REJECTED_BY_PLATFORM"] = f"messages[{n}]"
        if reasons:
            return {"code": "REJECTED", "reasons": reasons}
        message = self._take("online", item["to"], item["text"], item["from"], item, ids=1 + _parts(item["text"]))
        mid, *parts = message.ids
        return {"code": "OK", "messageId": mid} | ({"segmentsId": parts} if segments else {})

    def _take(self, api: str, to: str, text: str, source: str, fields: dict[str, Any], *, ids: int) -> FakeMessage:
        pids = [str(next(self._ids)) for _ in range(ids)]
        message = FakeMessage(api, pids, to, text, source, fields, dict.fromkeys(pids, self.initial_state))
        self.messages.append(message)
        self.by_id |= dict.fromkeys(pids, message)
        return message


def _error(code: int, desc: str | None = None) -> web.Response:
    status, default = CODES[code]
    return web.json_response({"Code": code, "Desc": desc or default}, status=status)
