"""A wire-faithful fake of Stream Telecom's session REST API (shared/providers/providers-B.md §6.1).

    async with FakeStreamTelecom(login="acme", password="s3cret") as fake:
        settings = StreamtelecomSettings(login="acme", password="s3cret", base_url=fake.url)

Like gateway.api.sc: form POSTs under `/rest/`, JSON replies. `Session/` (or `Session/session.php`) takes
`login` and `password` and answers the session id as a JSON string; `Send/SendSms/` takes `sessionId`,
`sourceAddress`, `destinationAddress` (digits), `data` and an optional `validity` (minutes) and answers a JSON
array holding the message id; `State/state.php` takes `sessionId` and `messageId` and answers `{"State",
"StateDescription", "ReportedDateUtc": "/Date(ms)/", "Price"}`, State 255 for an id it does not know. Errors
are Stream's Russian texts as JSON strings with HTTP 400 (401 for a bad login). A call with a session id it
did not issue, or one `expire_sessions()` ended, gets HTTP 401 with a text naming the session (the real
signal is not documented). A sender name not in `senders` is refused.

Messages start at `initial_state` (-1, sent); `set_state` moves them. Faults: `fail_next(n, data, status)` (send
only) and those of `FakeProvider` (tests/fakes/_base.py; an injected HTTP status carries `Retry-After: 1`,
`hang_next(n, *paths)` can leave the login alone).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence

from aiohttp import web

from ._base import Seen, SeenFake

__all__ = ["SEND", "SESSION", "STATE", "FakeStreamMessage", "FakeStreamTelecom"]

SESSION, SEND, STATE = "/rest/Session/", "/rest/Send/SendSms/", "/rest/State/state.php"
DESCRIPTIONS = {
    -1: "Отправлено (передано в мобильную сеть)",
    0: "Доставлено абоненту",
    42: "Не доставлено",
    46: "Просрочено (истек срок жизни сообщения)",
    255: "Недоступно (статус в архиве/нет доступа к статусу)",
}


@dataclasses.dataclass
class FakeStreamMessage:
    id: str
    source: str
    destination: str
    text: str
    validity: str | None
    state: int
    reported: float = dataclasses.field(default_factory=time.time)


def _reply(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class FakeStreamTelecom(SeenFake):
    retry_after = "1"  # on every injected HTTP status
    endpoints = (("POST", SESSION), ("POST", "/rest/Session/session.php"), ("POST", SEND), ("POST", STATE))

    def __init__(
        self,
        login: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        senders: Sequence[str] = ("ACME",),
        initial_state: int = -1,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.login, self.password, self.senders = login, password, list(senders)
        self.initial_state = initial_state  # e.g. 0: every message is delivered at once
        self.sessions: list[str] = []  # every session id issued, in order
        self.messages: list[FakeStreamMessage] = []
        self.by_id: dict[str, FakeStreamMessage] = {}
        self._live: set[str] = set()
        self._fail: list[tuple[object, int]] = []
        self._next_id = 90_000_000

    def fail_next(self, n: int, data: object, status: int = 400) -> None:
        """The next `n` sends are answered `data` as JSON (one of Stream's error texts, say) with `status`."""
        self._fail += [(data, status)] * n

    def expire_sessions(self) -> None:
        self._live.clear()

    def set_state(self, message_id: str, state: int) -> None:
        message = self.by_id[message_id]
        message.state, message.reported = state, time.time()

    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        form = seen.form
        if seen.path.startswith(SESSION):
            if (form.get("login"), form.get("password")) != (self.login, self.password):
                return _reply("Неправильный логин или пароль", 401)
            session_id = uuid.uuid4().hex
            self.sessions.append(session_id)
            self._live.add(session_id)
            return _reply(session_id)
        if form.get("sessionId") not in self._live:
            return _reply("Сессия не найдена или истекла", 401)
        if seen.path == STATE:
            return self._state(form.get("messageId", ""))
        if self._fail:
            return _reply(*self._fail.pop(0))
        return self._send(request, form)

    def _send(self, request: web.Request, form: dict[str, str]) -> web.Response:  # noqa: PLR0911 - one return per error
        source, destination = form.get("sourceAddress", ""), form.get("destinationAddress", "")
        if not source:
            return _reply("Нет отправителя", 400)
        if source not in self.senders:
            return _reply("Такого отправителя нет", 400)
        if not destination:
            return _reply("Укажите номер телефона", 400)
        if not (destination.isdigit() and 11 <= len(destination) <= 15):
            return _reply("Данное направление закрыто для вас", 400)
        if not form.get("data"):
            return _reply("Нет текста сообщения", 400)
        self._next_id += 1
        message = FakeStreamMessage(
            str(self._next_id), source, destination, form["data"], form.get("validity"), self.initial_state
        )
        self.messages.append(message)
        self.by_id[message.id] = message
        if self.dropped(request):
            return web.Response(status=500)  # never reaches the client
        return _reply([message.id])

    def _state(self, message_id: str) -> web.Response:
        message = self.by_id.get(message_id)
        state = message.state if message else 255
        reported = f"/Date({int((message.reported if message else 0) * 1000)})/"
        return _reply({"State": state, "StateDescription": DESCRIPTIONS.get(state, ""), "ReportedDateUtc": reported,
                       "Price": 1.45 if message else 0})  # fmt: skip
