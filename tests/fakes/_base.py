"""The base every fake provider in this folder extends: its server, its request log and the faults every fake
offers the same way, so that a test (and `tests/gateways/contract.py`) drives any of them alike.

    class FakeAcme(SeenFake):  # a FakeProvider recording each request as a `Seen`
        endpoints = (("POST", "/send"), ("GET", "/status"))  # each routed to `entry`

        async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:
            ...  # refuse, or take the message (into `self.messages`), then:
            self.dropped(request)
            return web.json_response({"id": ...})

    async with FakeAcme() as fake:  # a free local port; fake.url is its base URL (+ `path`)
        ...

`entry` records the request in `requests` (as the fake's `record` makes it), applies the faults, then calls
`handle`; a fake with handlers of its own (its `routes()`) records and calls `faults(request)` itself.
The faults, in order:
- `latency`: seconds spent before any answer (a fake with `latency_on_entry = False` spends it where it says);
- `hang_next(n, *paths)`: the next `n` requests (to a path starting with one of `paths`, when given) are never
  answered; they are let go (with a 503 nobody reads) when the fake stops;
- `http_status_next(n, status, headers=None)`: that status instead of the real answer, built by `injected`:
  "injected fault" as text (with `Retry-After: <retry_after>` where a fake sets one), or the provider's own
  error body where a fake says so (e.g. a 429 with Retry-After, a bare 500);
- `timeout_rate`, `failure_rate` (constructor arguments, with `seed`): at random, that share of requests is
  never answered, or answered with a 500 built by `injected`;
- `reset_after_accept_next(n)`: the next `n` sends are taken and recorded, then the connection is dropped
  with no reply; a send handler honours it by calling `dropped(request)` once it has taken the message.
A provider's own error replies are each fake's `fail_next(n, ...)` (sends only), in the provider's terms.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from ._serve import serve

__all__ = ["FakeProvider", "Received", "Seen", "SeenFake"]

R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class Received:
    """One request as it reached a fake, undecoded."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]  # case-insensitive
    body: bytes

    @classmethod
    async def of(cls, request: web.Request) -> Self:
        return cls(
            request.method, request.path, dict(request.query), CIMultiDict(request.headers), await request.read()
        )


@dataclasses.dataclass(frozen=True)
class Seen(Received):
    """A request with the body read as JSON (`json()`, None when empty) or as a UTF-8 form (`form`)."""

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeProvider(Generic[R]):
    """A fake provider's server, request log (`requests`, of the fake's own records `R`) and faults."""

    path: str = ""  # the path `url` ends with, after the server's base URL
    endpoints: ClassVar[tuple[tuple[str, str], ...]] = ()  # (method, path) pairs the default `routes` sends to `entry`
    latency_on_entry: ClassVar[bool] = True  # False: the fake spends `latency` where it says
    retry_after: ClassVar[str] = ""  # when set, the Retry-After header of every injected HTTP status
    messages: Collection[Any]  # what the fake took, one entry per message

    def __init__(
        self, *, latency: float = 0.0, failure_rate: float = 0.0, timeout_rate: float = 0.0, seed: int | None = None
    ) -> None:
        self.latency = latency
        self.failure_rate, self.timeout_rate = failure_rate, timeout_rate  # at random, on any request
        self._rng = random.Random(seed)
        self.url = ""
        self.requests: list[R] = []
        self._http: list[tuple[int, Mapping[str, str]]] = []
        self._hang: list[tuple[str, ...]] = []
        self._reset = 0
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- for subclasses ------------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        """The provider's routes; by default its `endpoints`, each to `entry`."""
        return [web.route(method, path, self.entry) for method, path in self.endpoints]

    def middlewares(self) -> list[Middleware]:
        return []

    async def record(self, request: web.Request) -> R:
        """What `entry` keeps of a request in `requests`."""
        raise NotImplementedError

    async def handle(self, request: web.Request, seen: R) -> web.StreamResponse:
        """The provider's answer, once no fault took the request."""
        raise NotImplementedError

    def injected(self, status: int, headers: Mapping[str, str]) -> web.StreamResponse:
        """The answer `http_status_next` asked for."""
        defaults = {"Retry-After": self.retry_after} if self.retry_after else {}
        return web.Response(status=status, text="injected fault", headers={**defaults, **headers})

    def hangs(self, request: web.Request) -> bool:
        """Whether `hang_next` asked to leave this request unanswered (counting it off), or `timeout_rate` drew it."""
        for i, paths in enumerate(self._hang):
            if not paths or request.path.startswith(paths):
                del self._hang[i]
                return True
        return bool(self.timeout_rate) and self._rng.random() < self.timeout_rate

    # --- knobs ---------------------------------------------------------------------------------------------
    def http_status_next(self, n: int, status: int, headers: Mapping[str, str] | None = None) -> None:
        self._http += [(status, dict(headers or {}))] * n

    def hang_next(self, n: int = 1, *paths: str) -> None:
        """The next `n` requests (to a path starting with one of `paths`, when given) are never answered."""
        self._hang += [paths] * n

    def reset_after_accept_next(self, n: int = 1) -> None:
        self._reset += n

    # --- in handlers ---------------------------------------------------------------------------------------
    async def entry(self, request: web.Request) -> web.StreamResponse:
        """Record, apply the faults, then `handle`."""
        seen = await self.record(request)
        self.requests.append(seen)
        if (fault := await self.faults(request)) is not None:
            return fault
        return await self.handle(request, seen)

    async def faults(self, request: web.Request) -> web.StreamResponse | None:
        """Latency, then a hang or an injected HTTP status when one is armed or drawn (`timeout_rate`,
        `failure_rate`: a 500); None: answer for real."""
        if self.latency and self.latency_on_entry:
            await self.wait(self.latency)
        if self.hangs(request):
            await self.wait(None)
            return web.Response(status=503)
        if self._http:
            return self.injected(*self._http.pop(0))
        if self.failure_rate and self._rng.random() < self.failure_rate:
            return self.injected(500, {})
        return None

    def dropped(self, request: web.Request) -> bool:
        """After taking a message: cut the connection, with no reply, if `reset_after_accept_next` asked."""
        if not self._reset:
            return False
        self._reset -= 1
        if request.transport is not None:
            request.transport.abort()  # the client sees the connection die
        return True

    async def wait(self, seconds: float | None) -> None:
        """Sleep `seconds` (None: until the fake stops); cut short when the fake stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- server --------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        # aiohttp refuses bodies over 1 MB with a 413; providers take batches far larger (BulkSMS: 30,000 SMS)
        app = web.Application(middlewares=self.middlewares(), client_max_size=64 * 2**20)
        app.add_routes(self.routes())
        self._runner, base = await serve(app)
        self.url = base + self.path
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()  # hanging handlers return now
        if self._runner is not None:
            await self._runner.cleanup()


class SeenFake(FakeProvider[Seen]):
    """A fake that records every request as a `Seen`."""

    async def record(self, request: web.Request) -> Seen:
        return await Seen.of(request)
