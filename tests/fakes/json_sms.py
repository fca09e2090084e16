"""A fake JSON SMS API, for the `http` kind's tests: a provider no adapter knows, wired by settings alone.

    async with FakeJsonSms(login="acme", password="s3cret") as fake:   # fake.url ends in /api
        POST {fake.url}/send    {"auth": {"login": .., "password": ..}, "messages": [{"to": "+7..", "text": ..,
                                 "from": ..?, "ref": ..?}]}
            -> 200 {"result": {"id": "m-1"}}                          taken
            -> 200 {"error": {"code": "BAD_NUMBER", ...}}             refused: `to` is not + and 10-15 digits
            -> 401 {"error": {"code": "AUTH", ...}}                   wrong login or password
        POST {fake.url}/status  {"auth": {...}, "id": "m-1"} -> 200 {"message": {"id": "m-1", "status": "SENT"}}
            (an unknown id: 200 {"error": {"code": "NOT_FOUND"}})
        its reports pushed to us: POST JSON {"id": "m-1", "status": "DELIVERED"} (`report()` builds one)

Statuses: SENT (not final), DELIVERED, UNDELIVERED, EXPIRED, REJECTED; `set_status` moves a message. Faults:
`fail_next(n, body)` (the next sends get HTTP 200 with that JSON body, nothing taken) and those of
`FakeProvider` (tests/fakes/_base.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from typing import Any

from aiohttp import web

from ._base import Seen, SeenFake

__all__ = ["HTTP_SETTINGS", "FakeJsonSms", "FakeMessage"]

#: the `http` kind's settings that speak this fake (the sender adds url, login and password)
HTTP_SETTINGS: dict[str, Any] = {
    "method": "POST",
    "encoding": "json",
    "login_at": "json:auth.login",
    "password_at": "json:auth.password",
    "originator_at": "json:messages.0.from",
    "to_at": "json:messages.0.to",
    "text_at": "json:messages.0.text",
    "ref_at": "json:messages.0.ref",
    "success_status": "200",
    "success_id_pointer": "/result/id",
    "permanent_errors": {r'"code"\s*:\s*"(BAD_NUMBER|AUTH)"': "refused"},
    "transient_errors": {r'"code"\s*:\s*"BUSY"': "busy"},
    "status_method": "POST",
    "status_id_at": "json:id",
    "status_pointer": "/message/status",
    "states": {
        "sent": "pending",
        "delivered": "delivered",
        "undelivered": "undelivered",
        "expired": "expired",
        "rejected": "rejected",
    },
    "callback_id_at": "json:id",
    "callback_status_at": "json:status",
}
_PHONE = re.compile(r"\+\d{10,15}")


@dataclasses.dataclass
class FakeMessage:
    id: str
    to: str
    text: str
    sender: str | None
    ref: str | None
    status: str = "SENT"


class FakeJsonSms(SeenFake):
    path = "/api"
    endpoints = (("POST", "/api/send"), ("POST", "/api/status"))

    def __init__(self, login: str = "acme", password: str = "s3cret", *, latency: float = 0.0) -> None:  # noqa: S107 - a fake's account
        super().__init__(latency=latency)
        self.login, self.password = login, password
        self.messages: dict[str, FakeMessage] = {}
        self._fail: list[Any] = []
        self._ids = itertools.count(1)

    def fail_next(self, n: int, body: Any) -> None:
        self._fail += [body] * n

    def set_status(self, message_id: str, status: str) -> None:
        self.messages[message_id].status = status

    @staticmethod
    def report(message_id: str, status: str) -> bytes:
        return json.dumps({"id": message_id, "status": status}).encode()

    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:  # noqa: PLR0911 - one per reply
        try:
            body = seen.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"error": {"code": "BAD_REQUEST"}}, status=400)
        if body.get("auth") != {"login": self.login, "password": self.password}:
            return web.json_response({"error": {"code": "AUTH", "message": "wrong login or password"}}, status=401)
        if request.path.endswith("/status"):
            message = self.messages.get(str(body.get("id")))
            if message is None:
                return web.json_response({"error": {"code": "NOT_FOUND"}})
            return web.json_response({"message": {"id": message.id, "status": message.status}})
        if self._fail:
            return web.json_response(self._fail.pop(0))
        [one] = body.get("messages") or [{}]
        if not _PHONE.fullmatch(str(one.get("to", ""))):
            return web.json_response({"error": {"code": "BAD_NUMBER", "message": "not an E.164 number"}})
        message = FakeMessage(f"m-{next(self._ids)}", one["to"], one.get("text", ""), one.get("from"), one.get("ref"))
        self.messages[message.id] = message
        self.dropped(request)
        return web.json_response({"result": {"id": message.id}})
