"""What the fake Rapporto and the fake Seven Tech share (one platform family, see `gateways._rapporto_family`):
`FakeServer`, a `FakeProvider` (tests/fakes/_base.py) serving one path, that records every request as a
`Seen` and whose `latency` each fake spends where it says (Rapporto: while a partnerMsgId is in flight); and
`push()`, which makes a provider's call to a partner's listener for real. `listener()` is such a listener,
handing each push to a gateway's `parse_callback` and answering with its reply. `json_push(body)` is a JSON
POST push.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import msgspec
from aiohttp import web

from gateways import Callback, CallbackRequest, Gateway

from ._base import FakeProvider, Received
from ._serve import serve

__all__ = ["FakeServer", "Seen", "json_push", "listener"]


@dataclasses.dataclass(frozen=True)
class Seen(Received):
    """One request as it reached the fake, its body read as Rapporto reads it."""

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


class FakeServer(FakeProvider[Seen]):
    """Subclasses set `path` and implement `handle`; `latency` is theirs to spend (`self.wait(self.latency)`)."""

    path = "/"
    latency_on_entry = False

    def __init__(self, *, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.pushes: list[tuple[str, CallbackRequest, int]] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", self.path, self.entry)]

    async def record(self, request: web.Request) -> Seen:
        return await Seen.of(request)

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
    runner, base = await serve(app)
    try:
        yield base + path, parsed
    finally:
        await runner.cleanup()
