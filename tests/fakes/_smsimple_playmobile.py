"""What the SMSimple and Play Mobile fakes share: an aiohttp server on a free local port, and fault knobs.

A subclass lists its routes in `routes()`, and each handler starts with `if (fault := await
self.fault()) is not None: return fault`, which applies, in order: `latency` (seconds before any answer),
`hang_next(n)` (no answer until the fake stops), `http_status_next(n, status)` (that status instead of the
real answer; a 429 carries `Retry-After: 7`). After it has accepted a message, a handler calls
`self.drop_if_asked(request)`: `reset_after_accept_next(n)` then closes the connection with no reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["FaultyServer"]


class FaultyServer:
    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.url = ""
        self._http: list[int] = []
        self._hang = self._reset = 0
        self._stopping = asyncio.Event()
        self._server: TestServer | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    # knobs
    def http_status_next(self, n: int, status: int) -> None:
        self._http += [status] * n

    def hang_next(self, n: int = 1) -> None:
        self._hang += n

    def reset_after_accept_next(self, n: int = 1) -> None:
        self._reset += n

    # server
    async def __aenter__(self) -> Self:
        app = web.Application()
        app.add_routes(self.routes())
        self._server = TestServer(app, host="127.0.0.1", access_log=None, shutdown_timeout=1.0)
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()  # hanging handlers return
        if self._server is not None:
            await self._server.close()

    async def fault(self) -> web.Response | None:
        """The injected answer for this request, or None to answer for real."""
        if self.latency:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.latency)
        if self._hang:
            self._hang -= 1
            await self._stopping.wait()
            return web.Response(status=503)
        if self._http:
            status = self._http.pop(0)
            return web.Response(status=status, text="injected fault", headers={"Retry-After": "7"})
        return None

    def drop_if_asked(self, request: web.Request) -> None:
        if self._reset and request.transport is not None:
            self._reset -= 1
            request.transport.abort()  # the client sees the connection die with no reply
