"""A fake of Play Mobile's broker-api (shared/providers/providers-A.md §4), for tests.

    async with FakePlaymobile(user_id="acme", password="s3cret") as fake:
        settings = PlaymobileSettings(user_id="acme", password="s3cret", base_url=fake.url)

Like Play Mobile: `POST /broker-api/send` with HTTP Basic auth (anything else: 401, no body) and a JSON body
`{"messages": [...]}`; each message needs `recipient`, `message-id` and `sms.originator`/`sms.content.text`
(else HTTP 400 with codes 202, 205, 401, 404; `ttl`, when given, a positive integer, else 407; a body that
is not such JSON: 101). Success is HTTP 200 `Request is received`, with no id: the client's `message-id`
is the id. Errors are `{"error-code": N, "error-description": text}`, or with `error_style="underscore"`
the wiki's spelling `error_code` / `error_description` (the code then as a string). A repeated
`message-id` is accepted again: Play Mobile documents nothing about it. One request carries any number of
messages, all taken or (one error code) none; `max_messages` refuses a request with more with error 105
("too many message ids"), whose number Play Mobile does not document (default: no limit).

Counts: `requests` (one per request), `messages` (one per message taken), `request_times` (the
`time.monotonic()` at which each send request arrived: a 1-second window of them is what Play Mobile's
`PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC` counts; `busiest_second()` is the most of them in any one second).

Delivery reports: `dlr_body(message_id, status)` is the push the adapter assumes (the real one was not
retrieved). `requests` holds (path, headers, decoded JSON or None) triples. Faults: `fail_next(n, code)`, and
the knobs of `FakeProvider` (tests/fakes/_base.py; an injected HTTP status carries `Retry-After: 7`).
"""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

import msgspec
from aiohttp import web

from ._base import FakeProvider

__all__ = ["ERROR_TEXTS", "FakePlaymobile", "SentMessage", "dlr_body"]

ERROR_TEXTS = {
    100: "Internal server error",
    101: "Syntax error",
    102: "Account is locked",
    105: "Too many message ids",
    202: "Empty recipient",
    205: "Empty message-id",
    401: "Empty originator",
    404: "Empty content",
    406: "Invalid content",
    407: "Invalid TTL",
}


@dataclasses.dataclass
class SentMessage:
    message_id: str
    recipient: str
    originator: str
    text: str
    ttl: int | None
    received_at: float  # time.monotonic() when the request arrived


def dlr_body(message_id: str, status: str, at: str = "2024-05-01 10:00:00") -> bytes:
    return msgspec.json.encode({"messages": [{"message-id": message_id, "status": status, "status-date": at}]})


class FakePlaymobile(FakeProvider[tuple[str, dict[str, str], Any]]):
    retry_after = "7"  # on every injected HTTP status

    def __init__(
        self,
        user_id: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        error_style: str = "hyphen",
        max_messages: int | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.user_id, self.password, self.error_style = user_id, password, error_style
        self.max_messages = max_messages
        self.messages: list[SentMessage] = []
        self.request_times: list[float] = []
        self._fail: list[int] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/broker-api/send", self._send)]

    def fail_next(self, n: int, code: int) -> None:
        self._fail += [code] * n

    def busiest_second(self) -> int:
        """The most send requests that arrived within one second of each other (any 1-second window)."""
        times, most, first = sorted(self.request_times), 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        return most

    def _error(self, code: int) -> web.Response:
        text = ERROR_TEXTS.get(code, "Error")
        if self.error_style == "underscore":
            return web.json_response({"error_code": str(code), "error_description": text}, status=400)
        return web.json_response({"error-code": code, "error-description": text}, status=400)

    async def _send(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        try:
            body: Any = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            body = None
        self.requests.append((request.path, dict(request.headers), body))
        self.request_times.append(arrived)
        if (fault := await self.faults(request)) is not None:
            return fault
        expected = base64.b64encode(f"{self.user_id}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.Response(status=401)
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or not all(isinstance(m, dict) for m in items):
            return self._error(101)
        too_many = self.max_messages is not None and len(items) > self.max_messages
        if self._fail or too_many:
            return self._error(self._fail.pop(0) if self._fail else 105)
        accepted = []
        for m in items:
            sms = m.get("sms") if isinstance(m.get("sms"), dict) else {}
            content = sms.get("content") if isinstance(sms.get("content"), dict) else {}
            ttl = sms.get("ttl")
            for code, bad in (
                (202, not m.get("recipient")),
                (205, not m.get("message-id")),
                (401, not sms.get("originator")),
                (404, not content.get("text")),
                (407, ttl is not None and not (isinstance(ttl, int) and ttl > 0)),
            ):
                if bad:
                    return self._error(code)
            fields = (str(m["message-id"]), str(m["recipient"]), str(sms["originator"]), content["text"])
            accepted.append(SentMessage(*fields, ttl=ttl, received_at=arrived))
        self.messages += accepted
        self.dropped(request)
        return web.Response(text="Request is received")
