"""A wire-faithful fake of the legacy MFMS / edna connector (shared/providers/providers-B.md §2).

    async with FakeEdna(login="acme", password="s3cret", password_field="pass") as fake:
        settings = EdnaSettings(url=fake.send_url, login="acme", password="s3cret", password_field="pass")

Like the connector: `GET /revoup/connector0/send` and `GET /revoup/connector0/status` with a query string,
credentials under the account's own parameter names (`login_field`, `password_field`), and `text/plain`
replies of `;`-separated fields, errors included, always with HTTP 200. A send takes `subject`, `address`
(digits, at least 10), `text` and `clientId`, scalar or `[0]`-indexed; it answers `ok;<clientId>;<providerId>`
or an error code. A `clientId` seen before is refused with `error-id-not-unique`; a `subject` not in
`subjects` with `error-subject-unknown` (none given: the first of them). The status call takes
`providerId[0]` and answers `ok;<providerId>;<status>;<date>;<reason>`, the date in Moscow time.

Messages start as `initial_status` ("enqueued"); `set_status` moves them, `callback_body` is edna's push of a
message's current status (`{"smsOutMessageId", "dlvStatus"}`). Faults: `fail_next(n, code)` (send only) and
those of `FakeProvider` (tests/fakes/_base.py; an injected HTTP status carries `Retry-After: 1`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import msgspec
from aiohttp import web

from ._base import Seen, SeenFake

__all__ = ["FakeEdna", "FakeEdnaMessage"]

PATH = "/revoup/connector0"
MSK = timezone(timedelta(hours=3))


@dataclasses.dataclass
class FakeEdnaMessage:
    provider_id: str
    address: str
    text: str
    subject: str
    client_id: str
    status: str
    reason: str = ""
    updated: datetime = dataclasses.field(default_factory=lambda: datetime.now(MSK))


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/plain")


class FakeEdna(SeenFake):
    retry_after = "1"  # on every injected HTTP status
    endpoints = (("GET", f"{PATH}/send"), ("GET", f"{PATH}/status"))

    def __init__(
        self,
        login: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        login_field: str = "login",
        password_field: str = "password",  # noqa: S107 - a field name
        subjects: Sequence[str] = ("ACME", "INFO"),
        initial_status: str = "enqueued",
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.login, self.password = login, password
        self.login_field, self.password_field = login_field, password_field
        self.subjects, self.initial_status = list(subjects), initial_status
        self.messages: list[FakeEdnaMessage] = []
        self.by_id: dict[str, FakeEdnaMessage] = {}
        self._fail: list[str] = []
        self._next_id = 7_000_000

    @property
    def send_url(self) -> str:
        return f"{self.url}{PATH}/send"

    def fail_next(self, n: int, code: str) -> None:
        self._fail += [code] * n

    def set_status(self, provider_id: str, status: str, reason: str = "") -> None:
        message = self.by_id[provider_id]
        message.status, message.reason, message.updated = status, reason, datetime.now(MSK)

    def callback_body(self, provider_id: str) -> bytes:
        message = self.by_id[provider_id]
        return msgspec.json.encode({"smsOutMessageId": provider_id, "dlvStatus": message.status})

    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        query = seen.query
        if query.get(self.login_field) != self.login or query.get(self.password_field) != self.password:
            return _text("error-auth")
        if seen.path.endswith("/status"):
            return self._status(query.get("providerId[0]", ""))
        if self._fail:
            return _text(self._fail.pop(0))
        return self._send(request, query)

    def _send(self, request: web.Request, query: dict[str, str]) -> web.Response:  # noqa: PLR0911 - one return per code
        def arg(name: str) -> str:
            return query.get(name) or query.get(f"{name}[0]") or ""

        address, text, client_id = arg("address"), arg("text"), arg("clientId")
        subject = arg("subject") or self.subjects[0]
        if not address:
            return _text("error-address-not-specified")
        if not (address.isdigit() and len(address) >= 10):
            return _text("error-address-format")
        if not text:
            return _text("error-content-not-specified")
        if subject not in self.subjects:
            return _text("error-subject-unknown")
        if client_id and any(m.client_id == client_id for m in self.messages):
            return _text("error-id-not-unique")
        self._next_id += 1
        message = FakeEdnaMessage(str(self._next_id), address, text, subject, client_id, self.initial_status)
        self.messages.append(message)
        self.by_id[message.provider_id] = message
        if self.dropped(request):
            return web.Response(status=500)  # never reaches the client
        return _text(f"ok;{client_id or 0};{message.provider_id}")

    def _status(self, provider_id: str) -> web.Response:
        message = self.by_id.get(provider_id)
        if message is None:
            return _text(f"error-provider-id-unknown;{provider_id}")
        when = message.updated.strftime("%Y-%m-%d %H:%M:%S")
        return _text(f"ok;{provider_id};{message.status};{when};{message.reason}")
