"""A wire-faithful fake of the MTS Marketolog omnichannel HTTP API (shared/providers/providers-B.md §1).

    async with FakeMts(login="acme", password="s3cret") as fake:
        settings = MtsSettings(login="acme", password="s3cret", base_url=fake.url)

Like MTS: `POST /http-api/v1/messages` and `POST /http-api/v1/messages/info`, JSON in and out, HTTP Basic
auth (401 otherwise). A send takes `messages[]` of `{content.short_text, from.sms_address, to[{msisdn,
message_id}]}` (the sender may also come as top-level `options.from.sms_address`, as two clients send it),
`msisdn` as 11 digits without '+'; it answers `{"messages": [{"internal_id", "msisdn"}]}`. A sender name
not in `namings` is refused (403), a message without one gets the first of them. Errors are JSON
`{"code", "message"}`; MTS's code table is not public, so here `code` repeats the HTTP status.
`/messages/info` takes `int_ids` (internal ids) or `msg_ids` (client message ids) and answers
`{"events_info": [{"key", "events_info": [...]}]}`, one event per status change: none while queued.

Faults: `fail_next(n, status, message)` (sends only) and those of `FakeProvider` (tests/fakes/_base.py; an
injected HTTP status carries `Retry-After: 1`, `hang_next(n, *paths)` can single out the lookups).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ._base import Seen, SeenFake

__all__ = ["FakeMessage", "FakeMts"]


@dataclasses.dataclass
class FakeMessage:
    internal_id: str
    msisdn: str
    text: str
    naming: str
    message_id: str | None
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)


class FakeMts(SeenFake):
    endpoints = (("POST", "/http-api/v1/messages"), ("POST", "/http-api/v1/messages/info"))
    retry_after = "1"  # on every injected HTTP status

    def __init__(
        self,
        login: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        namings: Sequence[str] = ("MTSM_Test", "ACME"),
        initial_status: int | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.login, self.password, self.namings = login, password, list(namings)
        self.initial_status = initial_status  # e.g. 300: every message is delivered at once
        self.messages: list[FakeMessage] = []
        self.by_id: dict[str, FakeMessage] = {}
        self._fail: list[tuple[int, str]] = []
        self._next_id = 4_000_000_000

    def fail_next(self, n: int, status: int = 400, message: str = "validation error") -> None:
        """The next `n` sends are refused with this HTTP status and MTS's error JSON."""
        self._fail += [(status, message)] * n

    def set_status(self, internal_id: str, status: int, internal_errors: Sequence[int] = ()) -> None:
        """A status change of a message: one more event in its history."""
        message = self.by_id[internal_id]
        now = datetime.now(UTC).isoformat()
        message.events.append(
            {"status": status, "internal_errors": list(internal_errors), "internal_id": internal_id,
             "event_at": now, "received_at": now, "total_parts": 1}
        )  # fmt: skip

    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{self.login}:{self.password}".encode()).decode()
        if seen.headers.get("Authorization") != expected:
            return _error(401, "Unauthorized")
        try:
            body = json.loads(seen.body)
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "body is not a JSON object")
        if seen.path.endswith("/info"):
            return self._info(body)
        if self._fail:
            return _error(*self._fail.pop(0))
        return self._send(request, body)

    def _send(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        items, default = body.get("messages"), body.get("options", {}).get("from", {}).get("sms_address")
        if not isinstance(items, list) or not items:
            return _error(400, "messages must be a non-empty array")
        taken: list[FakeMessage] = []
        for item in items:
            text = item.get("content", {}).get("short_text")
            naming = item.get("from", {}).get("sms_address") or default or self.namings[0]
            to = item.get("to")
            if not isinstance(text, str) or not text or not isinstance(to, list) or not to:
                return _error(400, "content.short_text and to[] are required")
            if naming not in self.namings:
                return _error(403, f"sender name {naming} is not connected")
            for dest in to:
                msisdn = str(dest.get("msisdn", ""))
                if not (msisdn.isdigit() and len(msisdn) == 11):
                    return _error(400, f"invalid msisdn {msisdn}")
                self._next_id += 1
                taken.append(FakeMessage(str(self._next_id), msisdn, text, naming, dest.get("message_id")))
        for message in taken:
            self.messages.append(message)
            self.by_id[message.internal_id] = message
            if self.initial_status is not None:
                for status in dict.fromkeys((200, self.initial_status)):
                    self.set_status(message.internal_id, status)
        if self.dropped(request):
            return web.Response(status=500)  # never reaches the client
        return web.json_response({"messages": [{"internal_id": m.internal_id, "msisdn": m.msisdn} for m in taken]})

    def _info(self, body: dict[str, Any]) -> web.Response:
        by_client = "msg_ids" in body
        keys = body.get("msg_ids" if by_client else "int_ids")
        if not isinstance(keys, list) or not keys:
            return _error(400, "int_ids or msg_ids must be a non-empty array")
        found = []
        for key in map(str, keys):
            matches = [m for m in self.messages if (m.message_id if by_client else m.internal_id) == key]
            found.append({"key": key, "events_info": list(matches[-1].events) if matches else []})
        return web.json_response({"events_info": found})
