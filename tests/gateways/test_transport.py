"""gateways.transport.request: each way an HTTP exchange can fail lands on the right branch of the error tree."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateways.errors import Ambiguous, Permanent, RateLimited, Transient
from gateways.transport import request


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def handler(req: web.Request) -> web.StreamResponse:
        mode = req.query.get("mode", "")
        if mode == "slow":
            await asyncio.sleep(5)
        if mode == "429":
            return web.Response(status=429, headers={"Retry-After": "7"})
        if mode == "503":
            return web.Response(status=503, text="busy")
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_route("*", "/", handler)
    async with TestServer(app) as srv:
        yield srv


async def test_replies(http: aiohttp.ClientSession, server: TestServer) -> None:
    reply = await request(http, "GET", str(server.make_url("/")), provider="P", timeout_s=2)
    assert (reply.status, reply.text) == (200, "fine")
    reply = await request(
        http, "GET", str(server.make_url("/?mode=503")), provider="P", timeout_s=2, server_errors_are_replies=True
    )
    assert reply.status == 503


@pytest.mark.parametrize(("mode", "error", "code"), [("429", RateLimited, "http.429"), ("503", Transient, "http.503")])
async def test_status_errors(
    http: aiohttp.ClientSession, server: TestServer, mode: str, error: type[Exception], code: str
) -> None:
    with pytest.raises(error) as info:
        await request(http, "GET", str(server.make_url(f"/?mode={mode}")), provider="P", timeout_s=2)
    assert info.value.code == code  # type: ignore[attr-defined]
    if mode == "429":
        assert info.value.retry_after == 7.0  # type: ignore[attr-defined]


async def test_a_timeout_after_sending_is_ambiguous(http: aiohttp.ClientSession, server: TestServer) -> None:
    with pytest.raises(Ambiguous, match="timeout"):
        await request(http, "POST", str(server.make_url("/?mode=slow")), provider="P", timeout_s=0.2)


async def test_nothing_listening_is_transient_and_a_bad_url_permanent(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Transient, match="connect"):
        await request(http, "POST", f"http://127.0.0.1:{port}/", provider="P", timeout_s=2)
    with pytest.raises(Permanent, match="bad_url"):
        await request(http, "POST", "ftp:/not a url", provider="P", timeout_s=2)
