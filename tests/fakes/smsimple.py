"""A fake of SMSimple.ru's simple HTTP API (shared/providers/providers-A.md §7.1), for tests.

    async with FakeSmsimple(user="acme", password="s3cret", origins={"101"}) as fake:
        settings = SmsimpleSettings(user="acme", password="s3cret", originator_id="101", base_url=fake.url)

Like SMSimple as far as it is known: `/http_send.php` and `/http_check.php` read their parameters from the
query string only, whatever the method (as a PHP script reading `$_GET` would), in UTF-8; auth by `user` +
`pass`; `or_id` must be one of the account's approved signature ids. Replies are plain text in
`charset` (default windows-1251, named in the Content-Type unless `name_charset=False`):
`Сообщение #<id> отослано.` or `Ошибка при отправке: <reason>` for a send; a status word (`Отправлено`,
`Доставлено`, ...) or `Ошибка: <reason>` for a check. The exact error texts and the check format are not
documented; those below are this fake's (and the adapter's) assumption.

New messages get status `initial_status` (default `Отправлено`); `set_status(id, text)` moves one.
`requests` holds (method, path, query) triples, recorded once no fault took the request. Faults:
`fail_next(n, reason)` with a key of ERROR_TEXTS (send only), and the knobs of `FakeProvider`
(tests/fakes/_base.py; an injected HTTP status carries `Retry-After: 7`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable

from aiohttp import web

from ._base import FakeProvider

__all__ = ["ERROR_TEXTS", "STATUS_TEXTS", "FakeSmsimple", "SentMessage"]

ERROR_TEXTS = {
    "auth": "неверный логин или пароль",
    "balance": "недостаточно средств на балансе",
    "rate": "слишком частые запросы, подождите",
    "phone": "неверный номер телефона",
    "originator": "подпись отправителя не найдена",
    "message": "пустой текст сообщения",
    "temporary": "внутренняя ошибка, попробуйте позже",
}
STATUS_TEXTS = {
    "sent": "Отправлено",
    "delivered": "Доставлено",
    "undelivered": "Не доставлено",
    "expired": "Просрочено",
    "rejected": "Отклонено",
}


@dataclasses.dataclass
class SentMessage:
    id: int
    phone: str
    text: str
    or_id: str
    status: str


class FakeSmsimple(FakeProvider[tuple[str, str, dict[str, str]]]):
    retry_after = "7"  # on every injected HTTP status

    def __init__(
        self,
        user: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        origins: Iterable[str] = ("101",),
        charset: str = "windows-1251",
        name_charset: bool = True,
        initial_status: str = STATUS_TEXTS["sent"],
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.user, self.password, self.origins = user, password, set(origins)
        self.charset, self.name_charset, self.initial_status = charset, name_charset, initial_status
        self.messages: dict[int, SentMessage] = {}
        self._ids = itertools.count(12345)
        self._fail: list[str] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/http_send.php", self._send), web.route("*", "/http_check.php", self._check)]

    def fail_next(self, n: int, reason: str) -> None:
        self._fail += [reason] * n

    def set_status(self, id: int | str, text: str) -> None:
        self.messages[int(id)].status = text

    def _text(self, text: str) -> web.Response:
        content_type = f"text/plain; charset={self.charset}" if self.name_charset else "text/plain"
        return web.Response(body=text.encode(self.charset), headers={"Content-Type": content_type})

    def _query(self, request: web.Request) -> dict[str, str] | None:
        """Records the request; the query, or None when the credentials are wrong."""
        query = dict(request.query)
        self.requests.append((request.method, request.path, query))
        return query if (query.get("user"), query.get("pass")) == (self.user, self.password) else None

    async def _send(self, request: web.Request) -> web.StreamResponse:
        if (fault := await self.faults(request)) is not None:
            return fault
        query = self._query(request)
        phone, text = (query or {}).get("phone", ""), (query or {}).get("message", "")
        reason = (
            ("auth" if query is None else None)
            or (self._fail.pop(0) if self._fail else None)
            or ("originator" if query and query.get("or_id") not in self.origins else None)
            or ("phone" if not (phone.isdigit() and 10 <= len(phone) <= 15) else None)
            or ("message" if not text.strip() else None)
        )
        if reason:
            return self._text(f"Ошибка при отправке: {ERROR_TEXTS[reason]}")
        assert query is not None
        message = SentMessage(next(self._ids), phone, text, query["or_id"], self.initial_status)
        self.messages[message.id] = message
        self.dropped(request)
        return self._text(f"Сообщение #{message.id} отослано.")

    async def _check(self, request: web.Request) -> web.StreamResponse:
        if (fault := await self.faults(request)) is not None:
            return fault
        query = self._query(request)
        if query is None:
            return self._text(f"Ошибка: {ERROR_TEXTS['auth']}")
        raw = query.get("message_id", "")
        message = self.messages.get(int(raw)) if raw.isdigit() else None
        return self._text(message.status if message else "Ошибка: сообщение не найдено")
