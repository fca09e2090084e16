"""A wire-faithful fake of Stream Telecom's session REST API (shared/providers/providers-B.md §6.1).

    async with FakeStreamTelecom(login="acme", password="s3cret") as fake:
        settings = StreamtelecomSettings(login="acme", password="s3cret", base_url=fake.url)

Like gateway.api.sc: form POSTs under `/rest/`, JSON replies. `Session/` (or `Session/session.php`) takes
`login` and `password` and answers the session id as a JSON string; `Send/SendSms/` takes `sessionId`,
`sourceAddress`, `destinationAddress` (digits), `data` and an optional `validity` (minutes) and answers a JSON
array holding the message id; `Send/SendBulkPacket/` takes `sessionId`, `sourceAddress`, `phone_data` (the JSON
`{"sms": [{"phone", "text"}, ...]}`) and an optional `validity`, and answers a JSON array of one such id array
per message, in order (not documented: the reply the adapter assumes); `State/state.php` takes `sessionId` and
`messageId` and answers `{"State", "StateDescription", "ReportedDateUtc": "/Date(ms)/", "Price"}`, State 255 for
an id it does not know. Errors are Stream's Russian texts as JSON strings with HTTP 400 (401 for a bad login). A
call with a session id it did not issue, or one `expire_sessions()` ended, gets HTTP 401 with a text naming the
session (the real signal is not documented). A sender name not in `senders` is refused.

Where the documentation says nothing, the fake is the least helpful plausible provider: a packet with one
message it would refuse alone (a bad number, no text) is refused whole, with that message's error text and
nothing taken; one of more than MAX_PACKET messages (the adapter's `max_batch`: Stream's maximum is not
documented), or whose `phone_data` it cannot read, is refused too (texts made up). It keeps every message it
takes, from single sends and packets alike, and never deduplicates.

Messages start at `initial_state` (-1, sent); `set_state` moves them. Faults: `fail_next(n, data, status)` (sends
and packets only) and those of `FakeProvider` (tests/fakes/_base.py; an injected HTTP status carries
`Retry-After: 1`, `hang_next(n, *paths)` can leave the login alone).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Sequence

from aiohttp import web

from ._base import Seen, SeenFake

__all__ = ["MAX_PACKET", "PACKET", "SEND", "SESSION", "STATE", "FakeStreamMessage", "FakeStreamTelecom"]

SESSION, SEND, STATE = "/rest/Session/", "/rest/Send/SendSms/", "/rest/State/state.php"
PACKET = "/rest/Send/SendBulkPacket/"
#: messages in one packet, at most (not documented: the adapter's `max_batch`)
MAX_PACKET = 100
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
    endpoints = tuple(("POST", p) for p in (SESSION, "/rest/Session/session.php", SEND, PACKET, STATE))

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
        """The next `n` sends, packets too, are answered `data` as JSON (one of Stream's error texts, say) with
        `status`."""
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
        single = [(form.get("destinationAddress", ""), form.get("data", ""))]
        return self._packet(request, form) if seen.path == PACKET else self._send(request, form, single)

    def _packet(self, request: web.Request, form: dict[str, str]) -> web.Response:
        try:
            sms = json.loads(form.get("phone_data", ""))["sms"]
            pairs = [(str(m["phone"]), str(m["text"])) for m in sms]
        except (ValueError, TypeError, KeyError):
            return _reply("Неверный формат phone_data", 400)
        if not pairs:
            return _reply("Укажите номер телефона", 400)
        if len(pairs) > MAX_PACKET:
            return _reply("Слишком много сообщений в пакете", 400)
        return self._send(request, form, pairs, packet=True)

    def _send(
        self, request: web.Request, form: dict[str, str], pairs: list[tuple[str, str]], *, packet: bool = False
    ) -> web.Response:
        """Take each (destination, text), or refuse them all with the first refusal of one."""
        source = form.get("sourceAddress", "")
        for destination, text in pairs:
            if refused := self._refused(source, destination, text):
                return _reply(refused, 400)
        taken = []
        for destination, text in pairs:
            self._next_id += 1
            message = FakeStreamMessage(
                str(self._next_id), source, destination, text, form.get("validity"), self.initial_state
            )
            self.messages.append(message)
            self.by_id[message.id] = message
            taken.append([message.id])
        if self.dropped(request):
            return web.Response(status=500)  # never reaches the client
        return _reply(taken if packet else taken[0])

    def _refused(self, source: str, destination: str, text: str) -> str | None:
        """Stream's error text for this message, or None when it takes it."""
        if not source:
            return "Нет отправителя"
        if source not in self.senders:
            return "Такого отправителя нет"
        if not destination:
            return "Укажите номер телефона"
        if not (destination.isdigit() and 11 <= len(destination) <= 15):
            return "Данное направление закрыто для вас"
        if not text:
            return "Нет текста сообщения"
        return None

    def _state(self, message_id: str) -> web.Response:
        message = self.by_id.get(message_id)
        state = message.state if message else 255
        reported = f"/Date({int((message.reported if message else 0) * 1000)})/"
        return _reply({"State": state, "StateDescription": DESCRIPTIONS.get(state, ""), "ReportedDateUtc": reported,
                       "Price": 1.45 if message else 0})  # fmt: skip
