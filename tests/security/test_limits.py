"""What bounds an attacker: a rate limit per client address, a log budget per client, a 503 (not a 200, not a
full broker) when a queue is at its limit, and /metrics only on a private port."""

from __future__ import annotations

import asyncio
import socket

import aio_pika
import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog
import structlog.testing

from smsfleet.settings import ConfigError, Settings
from smsfleet.topology import Names
from webhooks import Options, Receiver, serve
from webhooks.guard import QuietLog, RateLimiter, client_address, networks

from .conftest import create, drain, path_of, receiving

SANDBOX = {"id": "sbx", "gateway": "sandbox", "accounts": ["acme"], "settings": {}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_is_a_bucket_per_client() -> None:
    clock = Clock()
    limiter = RateLimiter(5, clock=clock)
    assert [limiter.wait("a") for _ in range(5)] == [0] * 5
    assert limiter.wait("a") == pytest.approx(0.2)
    assert limiter.wait("b") == 0  # another client has its own bucket
    clock.now += 0.2
    assert limiter.wait("a") == 0
    assert limiter.wait("a") > 0
    assert all(RateLimiter(0).wait("a") == 0 for _ in range(1000))  # 0: no limit


def test_the_log_budget_is_per_client_with_one_summary() -> None:
    clock = Clock()
    quiet = QuietLog(3, clock=clock)
    with structlog.testing.capture_logs() as logged:
        assert [quiet.allow("a") for _ in range(10)] == [True] * 3 + [False] * 7
        assert quiet.allow("b")
        clock.now += 61
        assert quiet.allow("a")  # a new minute, and one line saying how many were not logged
        assert quiet.allow("b")
    assert [(e["event"], e["client"], e["count"]) for e in logged] == [("request.rejections_unlogged", "a", 7)]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # not a proxy: its header is not believed
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["1.1.1.1, 198.51.100.1, 10.0.0.9"], "198.51.100.1"),  # the right-most not a proxy
        ("10.0.0.2", ["1.1.1.1", "198.51.100.1"], "198.51.100.1"),  # two headers: one list
        ("10.0.0.2", ["nonsense, 10.0.0.7"], "10.0.0.7"),  # unreadable: nothing further left is believed
        ("10.0.0.2", [], "10.0.0.2"),
        (None, ["198.51.100.1"], "unknown"),
    ],
)
def test_the_client_address_behind_trusted_proxies(peer: str | None, forwarded: list[str], client: str) -> None:
    assert client_address(peer, forwarded, networks(["10.0.0.0/8"], "X")) == client


def test_options_come_from_the_environment_and_bad_values_name_the_variable() -> None:
    env = {"SMSFLEET_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1", "SMSFLEET_WEBHOOK_RATE_LIMIT": "50"}
    options = Options.of(Settings.from_env(env))
    assert (options.trusted_proxies, options.rate_limit) == (("10.0.0.0/8", "192.168.1.1"), 50.0)
    assert Options.of(Settings.from_env({})) == Options()
    with pytest.raises(ConfigError, match="SMSFLEET_TRUSTED_PROXIES"):
        Options.of(Settings.from_env({"SMSFLEET_TRUSTED_PROXIES": "ingress"}))
    with pytest.raises(ConfigError, match="SMSFLEET_WEBHOOK_RATE_LIMIT"):
        Settings.from_env({"SMSFLEET_WEBHOOK_RATE_LIMIT": "-1"})


async def test_a_flooding_client_gets_429_with_retry_after(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: object
) -> None:
    url = path_of(await create(redis, names, SANDBOX))
    receiver = Receiver(settings, options=Options(rate_limit=20, trusted_proxies=("127.0.0.1/32",)))
    async with receiving(receiver) as client:
        replies = [await client.post(url, json={"id": "x", "state": "delivered"}) for _ in range(40)]
        statuses = [r.status for r in replies]
        assert statuses.count(200) >= 20
        assert statuses.count(429) >= 15
        assert all(int(r.headers["Retry-After"]) >= 1 for r in replies if r.status == 429)
        assert (await client.get("/healthz")).status == 200  # probes are never limited
        # another client behind the trusted proxy has a bucket of its own
        other = await client.post(url, json={"id": "x", "state": "delivered"}, headers={"X-Forwarded-For": "1.2.3.4"})
        assert other.status == 200


async def test_a_full_queue_gets_503_with_retry_after(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    url = path_of(await create(redis, names, SANDBOX))
    async with amqp.channel() as channel:  # a queue at its limit that refuses more: the broker nacks
        full = await channel.declare_queue(
            f"{names.status_queue}.full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await full.bind(names.internal_exchange, routing_key="report.sandbox")
        async with receiving(Receiver(settings)) as client:
            reply = await client.post(url, json={"id": "x", "state": "delivered"})
            assert reply.status == 503
            assert int(reply.headers["Retry-After"]) > 0
            await full.delete(if_unused=False, if_empty=False)
            assert (await client.post(url, json={"id": "x", "state": "delivered"})).status == 200


async def test_a_nack_that_clears_within_seconds_gets_a_late_200_not_a_503(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """A quorum queue electing a new leader nacks for a few seconds: the receiver publishes again meanwhile."""
    url = path_of(await create(redis, names, SANDBOX))
    async with amqp.channel() as channel:
        full = await channel.declare_queue(
            f"{names.status_queue}.full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await full.bind(names.internal_exchange, routing_key="report.sandbox")
        async with receiving(Receiver(settings)) as client:
            posted = asyncio.ensure_future(client.post(url, json={"id": "x", "state": "delivered"}))
            await asyncio.sleep(1.0)  # nacked meanwhile, then the queue stops refusing
            await full.delete(if_unused=False, if_empty=False)
            reply = await asyncio.wait_for(posted, 10)
            assert reply.status == 200
        stored = await channel.declare_queue(names.status_queue, passive=True)
        assert (stored.declaration_result.message_count or 0) >= 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_are_served_on_their_own_port_only(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    url = path_of(await create(redis, names, SANDBOX))
    public, private = free_port(), free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, "127.0.0.1", public, stop, metrics_port=private, options=Options()))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{public}/readyz") as reply:
                        if reply.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            async with http.post(f"http://127.0.0.1:{public}{url}", json={"id": "x", "state": "delivered"}) as reply:
                assert reply.status == 200
            async with http.get(f"http://127.0.0.1:{public}/metrics") as reply:
                assert reply.status == 404
            async with http.get(f"http://127.0.0.1:{private}/metrics") as reply:
                assert reply.status == 200
                assert 'smsfleet_callbacks_total{gateway="sandbox",status="200"}' in await reply.text()
            for probe in ("livez", "readyz"):
                async with http.get(f"http://127.0.0.1:{private}/{probe}") as reply:
                    assert reply.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert len(await drain(amqp, names.status_queue)) == 1
