"""A wire-faithful fake of SMSC.ru's HTTP API (shared/providers/providers-A.md §3), for tests and benchmarks.

    async with FakeSmsc(login="acme", password="s3cret") as fake:
        settings = SmscSettings(login="acme", password="s3cret", base_url=fake.url)

Like SMSC: `/sys/send.php` and `/sys/status.php`, by GET (query) or POST (form); auth by `login` + `psw`, the
password or its lowercase md5; `charset` utf-8, koi8-r or (the default) windows-1251, so a client that
forgets `charset=utf-8` sees its Cyrillic garbled here as it would there; `fmt=3` JSON replies, plain text
otherwise; errors as HTTP 200 `{"error": text, "error_code": N}`, with the request's `"id"` for codes 3, 6, 7
and 8; one id per send request shared by its phones, and state per (id, phone). The error texts are SMSC's
English ones as far as memory serves; only the codes are documented.

Duplicates: SMSC answers error 9 ("duplicate request, wait a minute") to a repeated *identical* send request
within a minute, and does not send it again; that is all it documents. So the fake refuses an identical
request (the same parameters) for `duplicate_window_s` (60) and no longer, and never deduplicates by our
`id`: a send repeated after a minute, or with any other difference, is another message (with the same id,
the newest is the one status.php finds). `clock_offset` moves the fake's clock forward, so a test can be
"a minute later" without waiting one.

New messages start at `initial_status` (default 0, handed to the operator); tests move them with
`set_status`, and an end-to-end test may pass `initial_status=1` to have everything delivered. Faults:
`fail_next(n, code)` (send only), and those of `FakeProvider` (tests/fakes/_base.py: `reset_after_accept_next`
on sends; `http_status_next(n, status, headers)`, `hang_next`, `latency`, and the random `failure_rate` (HTTP
500) and `timeout_rate` (no answer) on any request).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from ._base import FakeProvider

__all__ = ["ERROR_TEXTS", "FakeMessage", "FakeSmsc"]

ERROR_TEXTS = {
    1: "parameters error",
    2: "authorise error",
    3: "no money",
    4: "IP is blocked",
    5: "invalid date format",
    6: "message is denied",
    7: "invalid number format",
    8: "can't deliver",
    9: "duplicate request, wait a minute",
}
_WITH_ID = {3, 6, 7, 8}
_CHARSETS = {"utf-8": "utf-8", "koi8-r": "koi8-r"}  # anything else: windows-1251


@dataclasses.dataclass
class FakeMessage:
    id: int
    phone: str  # digits, no '+'
    text: str
    sender: str | None
    params: dict[str, str]
    status: int = 0
    err: int = 0
    updated: float = dataclasses.field(default_factory=time.time)


def _parts(text: str) -> int:
    single, multi = (160, 153) if all(ord(c) < 128 for c in text) else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // multi)


class FakeSmsc(FakeProvider[tuple[str, dict[str, str]]]):
    """`requests` holds (path, parameters) pairs."""

    endpoints = (("*", "/sys/send.php"), ("*", "/sys/status.php"))

    def __init__(
        self,
        login: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        timeout_rate: float = 0.0,
        seed: int | None = None,
        initial_status: int = 0,
    ) -> None:
        super().__init__(latency=latency, failure_rate=failure_rate, timeout_rate=timeout_rate, seed=seed)
        self.login, self.password = login, password
        self.messages: list[FakeMessage] = []
        self.by_key: dict[tuple[int, str], FakeMessage] = {}
        self.initial_status = initial_status  # e.g. 1: every message is delivered at once
        self._fail: list[int] = []
        self._next_id = 1_000_000
        self.duplicate_window_s = 60.0
        self.clock_offset = 0.0
        self._recent: dict[tuple[tuple[str, str], ...], float] = {}  # identical request -> when it came

    # knobs
    def fail_next(self, n: int, error_code: int) -> None:
        self._fail += [error_code] * n

    def set_status(self, id: int, phone: str, status: int, err: int = 0) -> None:
        message = self.by_key[(int(id), phone.lstrip("+"))]
        message.status, message.err, message.updated = status, err, time.time()

    # server
    async def record(self, request: web.Request) -> tuple[str, dict[str, str]]:
        raw = request.rel_url.raw_query_string
        if request.method == "POST":
            raw += "&" + (await request.read()).decode("latin-1")
        charset = _CHARSETS.get(dict(parse_qsl(raw)).get("charset", ""), "cp1251")
        return request.path, dict(parse_qsl(raw, keep_blank_values=True, encoding=charset, errors="replace"))

    async def handle(self, request: web.Request, seen: tuple[str, dict[str, str]]) -> web.StreamResponse:
        params = seen[1]
        fmt3 = params.get("fmt") == "3"
        psw = params.get("psw", "")
        if params.get("login") != self.login or psw not in (
            self.password,
            hashlib.md5(self.password.encode()).hexdigest(),  # noqa: S324 - SMSC's scheme
        ):
            return _error(2, fmt3)
        if request.path == "/sys/send.php":
            return self._send(request, params, fmt3)
        return self._status(params, fmt3)

    def _send(self, request: web.Request, params: dict[str, str], fmt3: bool) -> web.Response:  # noqa: PLR0911 - one return per SMSC error
        raw_id = params.get("id", "")
        if raw_id and not (raw_id.isdigit() and 1 <= int(raw_id) <= 2**31 - 1):
            return _error(1, fmt3)
        sid = int(raw_id) if raw_id else self._next_id
        if self._fail:
            return _error(self._fail.pop(0), fmt3, sid)
        phones = [p.strip().lstrip("+") for p in re.split("[,;]", params.get("phones", "")) if p.strip()]
        text, valid = params.get("mes", ""), params.get("valid", "")
        if not phones or not text or len(text) > 1000:
            return _error(1, fmt3)
        if valid and not ((valid.isdigit() and 1 <= int(valid) <= 24) or re.fullmatch(r"\d\d:\d\d", valid)):
            return _error(1, fmt3)
        if not all(p.isdigit() and 10 <= len(p) <= 15 for p in phones):
            return _error(7, fmt3, sid)
        now = time.time() + self.clock_offset
        identical = tuple(sorted(params.items()))
        if now - self._recent.get(identical, -math.inf) < self.duplicate_window_s:
            return _error(9, fmt3)
        self._recent[identical] = now
        self._next_id += not raw_id
        for phone in phones:
            message = FakeMessage(sid, phone, text, params.get("sender"), params, self.initial_status)
            self.messages.append(message)
            self.by_key[(sid, phone)] = message
        self.dropped(request)  # with reset_after_accept_next: no reply, the client sees the connection die
        cnt = _parts(text) * len(phones)
        return _reply({"id": sid, "cnt": cnt}, fmt3, f"OK - {cnt} SMS, ID - {sid}")

    def _status(self, params: dict[str, str], fmt3: bool) -> web.Response:
        ids, phones = params.get("id", "").split(","), params.get("phone", "").split(",")
        if not ids[0] or not phones[0] or not all(i.strip().isdigit() for i in ids if i.strip()):
            return _error(1, fmt3)
        items: list[dict[str, Any]] = []
        for i, phone in zip(ids, phones, strict=False):
            if not i.strip():
                continue
            m = self.by_key.get((int(i), phone.strip().lstrip("+")))
            item: dict[str, Any] = {"status": -3} if m is None else {"status": m.status}
            if m is not None:
                item["last_date"] = time.strftime("%d.%m.%Y %H:%M:%S", time.localtime(m.updated))
                item["last_timestamp"] = int(m.updated)
                item |= {"err": m.err} if m.err else {}
            items.append(item | ({"id": int(i), "phone": phone.strip()} if len(ids) > 1 else {}))
        body = items if len(ids) > 1 else items[0]  # a trailing comma asks for the list form
        return _reply(body, fmt3, f"Status = {items[0]['status']}")


def _reply(body: Any, fmt3: bool, text: str) -> web.Response:
    return web.json_response(body) if fmt3 else web.Response(text=text)


def _error(code: int, fmt3: bool, sid: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error": ERROR_TEXTS.get(code, "error"), "error_code": code}
    if code in _WITH_ID and sid is not None:
        body["id"] = sid
    tail = f", ID - {sid}" if "id" in body else ""
    return _reply(body, fmt3, f"ERROR = {code} ({body['error']}){tail}")
