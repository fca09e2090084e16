"""Server plumbing shared by the fake Rapporto and the fake Seven Tech (one platform family, see
`gateways._rapporto_family`): a local aiohttp server on a free port serving one path, every request recorded,
the fault knobs, and `push()`, which makes a provider's call to a partner's listener for real; `listener()`
is such a listener, handing each push to a gateway's `parse_callback` and answering with its reply.
`json_push(body)` is a JSON POST push; `ContractHooks` answers the `GatewayContract` hooks that are the same
for every fake here.

Faults: `http_status_next(n, status)` answers the next requests with that status and a short text before
anything is looked at; `hang_next(n)` never answers them (until the server stops); `reset_after_accept_next(n)`
lets a send be accepted and recorded, then drops the connection with no reply; `latency` (seconds) is spent
where each fake says (Rapporto: while a partnerMsgId is in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any, Self
from urllib.parse import parse_qsl

import aiohttp
import msgspec
from aiohttp import web

from gateways import Callback, CallbackRequest, Gateway

__all__ = ["ContractHooks", "FakeServer", "Seen", "json_push", "listener"]


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as it reached the fake."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        """The parameters, from the query string and a form body, as Rapporto reads them: the body in the
        charset its Content-Type names (Rapporto asks for UTF-8 there); without one, Cyrillic arrives garbled."""
        fields = dict(self.query)
        kind, _, params = self.headers.get("Content-Type", "").partition(";")
        if self.body and kind.strip() == "application/x-www-form-urlencoded":
            charset = params.strip().removeprefix("charset=").strip() or "latin-1"
            fields.update(parse_qsl(self.body.decode("latin-1"), keep_blank_values=True, encoding=charset))
        return fields

    @property
    def json(self) -> Any:
        return msgspec.json.decode(self.body) if self.body else None


class FakeServer:
    """Subclasses set `path` and implement `handle`; the base records, injects faults and serves."""

    path = "/"

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.url = ""  # the full URL of `path`, what a sender's `url` setting holds
        self.requests: list[Seen] = []
        self.pushes: list[tuple[str, CallbackRequest, int]] = []
        self._http: list[int] = []
        self._hang = self._reset = 0
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # knobs
    def http_status_next(self, n: int, status: int) -> None:
        self._http += [status] * n

    def hang_next(self, n: int = 1) -> None:
        self._hang += n

    def reset_after_accept_next(self, n: int = 1) -> None:
        self._reset += n

    # for subclasses
    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        raise NotImplementedError

    async def wait(self, seconds: float | None) -> None:
        """Sleep `seconds` (None: until the server stops)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def drop_if_asked(self, request: web.Request) -> None:
        """After accepting: abort the connection instead of answering, when `reset_after_accept_next` asked."""
        if self._reset and request.transport is not None:
            self._reset -= 1
            request.transport.abort()

    async def push(self, url: str, callback: CallbackRequest) -> int:
        """Call a partner's listener as the provider would; returns the listener's HTTP status."""
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                callback.method, url, params=dict(callback.query), headers=dict(callback.headers),
                data=callback.body or None,
            ) as resp,
        ):  # fmt: skip
            self.pushes.append((url, callback, resp.status))
            return resp.status

    # server
    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", self.path, self._entry)
        self._runner, base = await _serve(app)
        self.url = base + self.path
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()  # hanging handlers return now
        if self._runner:
            await self._runner.cleanup()

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.path, dict(request.query), dict(request.headers), await request.read())
        self.requests.append(seen)
        if self._hang:
            self._hang -= 1
            await self.wait(None)
            return web.Response(status=503)
        if self._http:
            return web.Response(status=self._http.pop(0), text="injected fault")
        return await self.handle(request, seen)


class ContractHooks:
    """Mixed in before `GatewayContract[...]`: its hooks, for fakes built on `FakeServer` with `messages`."""

    def fake_url(self, fake: Any) -> str:
        return str(fake.url)

    def requests_seen(self, fake: Any) -> int:
        return len(fake.requests)

    def accepted(self, fake: Any) -> int:
        return len(fake.messages)

    def fake_hang(self, fake: Any) -> None:
        fake.hang_next(1)

    def fake_reset_after_accept(self, fake: Any) -> None:
        fake.reset_after_accept_next(1)


def json_push(body: Any) -> CallbackRequest:
    """A push of `body` as a JSON POST."""
    return CallbackRequest(
        method="POST", query={}, headers={"Content-Type": "application/json"}, body=msgspec.json.encode(body)
    )


@contextlib.asynccontextmanager
async def listener(gateway: Gateway[Any], path: str) -> AsyncIterator[tuple[str, list[Callback]]]:
    """A partner's callback URL on a local port: every request goes through `gateway.parse_callback`, whose
    reply is returned (a ValueError becomes a 400, as the webhooks receiver does). Yields (URL, callbacks)."""
    parsed: list[Callback] = []

    async def receive(request: web.Request) -> web.Response:
        push = CallbackRequest(
            method=request.method, query=dict(request.query), headers=dict(request.headers), body=await request.read()
        )
        try:
            callback = gateway.parse_callback(push)
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        parsed.append(callback)
        return web.Response(
            status=callback.reply_status, body=callback.reply_body.encode(), content_type=callback.reply_content_type
        )

    app = web.Application()
    app.router.add_route("*", path, receive)
    runner, base = await _serve(app)
    try:
        yield base + path, parsed
    finally:
        await runner.cleanup()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """`app` on a free local port: its runner (to clean up) and base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"
