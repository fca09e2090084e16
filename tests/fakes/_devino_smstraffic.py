"""What the Devino and SMS Traffic fakes share: the server's life and the faults any provider can show.

A subclass lists its routes in `routes()` and, in each handler, first awaits `faults(request)`: it applies
`latency`, then `hang_next` (the request is never answered; released when the fake stops), then
`http_status_next`. A send handler that took the message calls `dropped(request)` before replying: with
`reset_after_accept_next` armed, the connection is cut and the client never sees the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Self

from aiohttp import web

from ._serve import serve

__all__ = ["FakeProvider", "Seen"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class Seen:
    """One request as the fake received it: query and form fields merged, or the JSON body."""

    method: str
    path: str
    params: dict[str, str]
    headers: Mapping[str, str]
    json: Any = None


class FakeProvider:
    def __init__(self, *, latency: float = 0.0) -> None:
        self.url = ""
        self.latency = latency
        self.requests: list[Seen] = []
        self._http: list[int] = []
        self._hang: list[str] = []
        self._reset = 0
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def routes(self) -> list[tuple[str, str, Handler]]:
        raise NotImplementedError

    # knobs
    def http_status_next(self, n: int, status: int) -> None:
        self._http += [status] * n

    def hang_next(self, n: int = 1, prefix: str = "/") -> None:
        """The next `n` requests whose path starts with `prefix` are never answered."""
        self._hang += [prefix] * n

    def reset_after_accept_next(self, n: int = 1) -> None:
        self._reset += n

    # server
    async def __aenter__(self) -> Self:
        app = web.Application()
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        self._runner, self.url = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()  # releases hanging handlers
        if self._runner is not None:
            await self._runner.cleanup()

    async def faults(self, request: web.Request) -> web.StreamResponse | None:
        """Latency, then a hang or an injected HTTP status when one is armed; None: answer normally."""
        if self.latency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.latency)
        hang = next((p for p in self._hang if request.path.startswith(p)), None)
        if hang is not None:
            self._hang.remove(hang)
            await self._stopping.wait()
            return web.Response(status=503)
        if self._http:
            return web.Response(status=self._http.pop(0), text="injected fault")
        return None

    def dropped(self, request: web.Request) -> bool:
        """Cut the connection after the message was taken, when `reset_after_accept_next` is armed."""
        if not self._reset or request.transport is None:
            return False
        self._reset -= 1
        request.transport.abort()
        return True
