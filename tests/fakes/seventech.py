"""A fake of Seven Tech's messaging API (shared/providers/providers-B.md §8), for tests. LOW CONFIDENCE.

    async with FakeSeventech(login="acme", password="s3cret") as fake:
        settings = SeventechSettings(url=fake.url, login="acme", password="s3cret")

What is documented: `POST /messaging/v1/send` with HTTP Basic auth and a JSON body of `scenario` (required),
`callback` and `clientRequestId`. What the fake assumes, as `gateways.seventech` does: a scenario step is
`{"channel": "SMS", "to": <digits>, "text", "from"?, "ttl"?}` (no link-shortening flag: none is documented),
success is HTTP 200 `{"messageId", "clientRequestId"}`, errors are HTTP statuses with a JSON
`{"error": {"code", "message"}}`, and reports are pushed as JSON `{"messageId", "clientRequestId", "status",
"errorCode", "timestamp"}`. Nothing is deduplicated. One message (one id) per request.

Faults: `fail_next(n, status)` answers the next sends with that status and an error body; the others are
`FakeProvider`'s (tests/fakes/_base.py). `report(message, status)` and `inbound(phone, text)` are the pushes,
`push(url, request)` makes one for real.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web

from gateways import CallbackRequest

from ._rapporto_family import FakeServer, Seen, json_push

__all__ = ["FakeMessage", "FakeSeventech", "report_request"]

ERROR_TEXTS = {400: "Bad request", 401: "Unauthorized", 402: "Insufficient funds", 403: "Forbidden"}


@dataclasses.dataclass
class FakeMessage:
    id: str
    phone: str
    text: str
    body: dict[str, Any]  # the whole request body

    @property
    def client_request_id(self) -> str | None:
        return self.body.get("clientRequestId")


def report_request(
    message_id: str, status: str, client_request_id: str | None = None, error_code: int = 0
) -> CallbackRequest:
    """The (assumed) report push: a JSON POST to the `callback` URI or the account's configured one."""
    body = {
        "messageId": message_id, "clientRequestId": client_request_id, "channel": "SMS", "status": status,
        "errorCode": error_code, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }  # fmt: skip
    return json_push(body)


def _error(status: int, message: str = "") -> web.Response:
    text = message or ERROR_TEXTS.get(status, "Error")
    return web.json_response({"error": {"code": status, "message": text}}, status=status)


def _step_error(step: Any) -> str:
    """Why a scenario step cannot be sent, or ''."""
    if not isinstance(step, dict):
        return "scenario items must be objects"
    to, text = str(step.get("to", "")), step.get("text")
    if str(step.get("channel", "")).upper() != "SMS":
        return "unsupported channel"
    if not (to.isdigit() and 10 <= len(to) <= 15):
        return "invalid to"
    if not isinstance(text, str) or not text:
        return "text is required"
    ttl = step.get("ttl", 1)
    return "" if isinstance(ttl, int) and ttl > 0 else "invalid ttl"


class FakeSeventech(FakeServer):
    path = "/messaging/v1/send"

    def __init__(
        self,
        login: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.login, self.password = login, password
        self.messages: list[FakeMessage] = []
        self._fail: list[int] = []

    def fail_next(self, n: int, status: int) -> None:
        self._fail += [status] * n

    def report(self, message: FakeMessage, status: str, error_code: int = 0) -> CallbackRequest:
        return report_request(message.id, status, message.client_request_id, error_code)

    def inbound(self, phone: str, text: str, to: str = "SEVENTECH") -> CallbackRequest:
        """The (assumed) inbound-SMS push."""
        body = {"messageId": uuid.uuid4().hex, "from": phone.lstrip("+"), "to": to, "text": text}
        return json_push(body)

    def _authorized(self, seen: Seen) -> bool:
        scheme, _, token = seen.headers.get("Authorization", "").partition(" ")
        try:
            pair = base64.b64decode(token, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return scheme == "Basic" and pair == f"{self.login}:{self.password}"

    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:  # noqa: PLR0911 - one return per refusal
        if request.method != "POST":
            return _error(405, "Method not allowed")
        if not self._authorized(seen):
            return _error(401)
        if self._fail:
            return _error(self._fail.pop(0))
        if not seen.headers.get("Content-Type", "").startswith("application/json"):
            return _error(400, "JSON body expected")
        try:
            body = seen.json
        except msgspec.DecodeError:
            return _error(400, "malformed JSON")
        scenario = body.get("scenario") if isinstance(body, dict) else None
        if not isinstance(scenario, list) or not scenario:
            return _error(400, "scenario is required")
        if problem := next(filter(None, map(_step_error, scenario)), ""):
            return _error(400, problem)
        await self.wait(self.latency)
        message = FakeMessage(uuid.uuid4().hex, scenario[0]["to"], scenario[0]["text"], body)
        self.messages.append(message)
        self.dropped(request)
        return web.json_response({"messageId": message.id, "clientRequestId": message.client_request_id})
