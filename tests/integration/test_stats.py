"""The overview's per-minute counters (`workers.stats`) on the real RabbitMQ and Redis: what a running fleet
counts, where it writes it and for how long; a flush that fails keeps the counts, within bounds."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from smsfleet.contracts import ErrorInfo, SendJob, State, StatusEvent, status_event
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.chaos.harness import fleet as harness_fleet
from tests.samples import sample_sender
from workers import SendPolicy, stats
from workers.stats import Stats, read_failures, read_queue_ages, read_windows

JOB = {"account": "acme", "to": "+79161234567", "text": "hello"}


def fleet(settings: Settings) -> contextlib.AbstractAsyncContextManager[object]:
    """The sandbox's send and status roles in this process (`tests.chaos.harness.fleet`)."""
    return harness_fleet(settings, ["sandbox"], SendPolicy(concurrency=20, max_attempts=1))


async def publish(amqp: aio_pika.abc.AbstractConnection, names: Names, sender: str, job_id: str, **extra: str) -> None:
    body = msgspec.json.encode({"id": job_id, "sender": sender, **JOB, **extra})
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(names.send_exchange)
        await exchange.publish(message(body, message_id=job_id), routing_key=f"sandbox.{sender}")


async def add_sandbox(redis: aioredis.Redis, names: Names, sender_id: str, **settings: float) -> None:
    doc = sample_sender("sandbox", sender_id, settings={"latency_ms": 0, "await_delivery_s": 1, **settings})
    await SenderRegistry(redis, names).create(parse_sender(doc))


async def test_a_running_fleet_counts_its_jobs_by_sender_gateway_and_state(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, redis: aioredis.Redis, names: Names
) -> None:
    await add_sandbox(redis, names, "ok")
    await add_sandbox(redis, names, "bad", delivered_rate=0.0)
    await add_sandbox(redis, names, "flaky", failure_rate=1.0)
    async with fleet(settings):
        for i in range(3):
            await publish(amqp, names, "ok", f"ok-{i}")
        await publish(amqp, names, "ok", "ok-refused", account="nobody")  # our refusal: not a provider error
        for i in range(2):
            await publish(amqp, names, "bad", f"bad-{i}")
        await publish(amqp, names, "flaky", "flaky-0")
        expected = {
            "ok": {"accepted": 3, "delivered": 3, "rejected": 1, "sent": 3},
            "bad": {"accepted": 2, "undelivered": 2, "sent": 2},
            "flaky": {"failed": 1, "sent": 1, "provider_error": 1},
        }
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # the workers flush once a second
            windows = await read_windows(redis, names, expected)
            seen = {s: w.hour.get("sandbox", {}) for s, w in windows.items()}
            if seen == expected or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
    assert seen == expected
    # the same in the last minutes' buckets and in the day's (hourly) ones, all under the sandbox gateway
    assert windows["ok"].day == {"sandbox": expected["ok"]}
    assert sum(m.get("delivered", 0) for m in windows["ok"].minutes) == 3
    assert windows["flaky"].total("day", "provider_error") == 1
    # keys expire: 25 h after their last write
    keys = [k async for k in redis.scan_iter(match=f"{names.ns}:stats:*")]
    assert keys
    for key in keys:
        assert 24 * 3600 < await redis.ttl(key) <= stats.TTL_S, key
    # the last failures, newest first, with their reasons (a delivered job is not one)
    failures = {f.job_id: f for f in await read_failures(redis, names)}
    assert set(failures) == {"ok-refused", "bad-0", "bad-1", "flaky-0"}
    assert (failures["ok-refused"].state, failures["ok-refused"].code) == ("rejected", "account_not_assigned")
    assert (failures["flaky-0"].state, failures["flaky-0"].code) == ("failed", "sandbox.simulated")
    assert failures["bad-0"].gateway == "sandbox"
    # the send queue's oldest-message age, as the workers' gauge reported it
    assert names.send_queue("sandbox") in await read_queue_ages(redis, names)


def _event(sender: str, state: State = State.DELIVERED, code: str | None = None) -> StatusEvent:
    job = SendJob(id=f"j-{sender}", sender=sender, account="acme", to="+79161234567", text="x")
    return status_event(job, state, error=ErrorInfo(code, "why") if code else None)


async def test_a_failed_flush_keeps_the_counts_for_the_next_one(redis: aioredis.Redis, names: Names) -> None:
    away = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)  # nothing listens there
    counters = Stats(away, names, enabled=True)
    try:
        for _ in range(3):
            counters.count(_event("s1"), "sandbox")
        counters.count(_event("s1", State.REJECTED, "http_400"), "sandbox")
        counters.count(_event("s1"), "sandbox", replay=True)  # a replay: not counted
        assert await counters.flush() is False  # Redis away: nothing raised, nothing lost
        counters.count(_event("s1"), "sandbox")  # counted meanwhile
        assert await counters.flush() is False
    finally:
        await away.aclose()
    counters.redis = redis  # Redis is back
    assert await counters.flush() is True
    window = (await read_windows(redis, names, ["s1"]))["s1"]
    assert window.hour == {"sandbox": {"delivered": 4, "rejected": 1, "sent": 1, "provider_error": 1}}
    assert [f.code for f in await read_failures(redis, names)] == ["http_400"]
    assert await counters.flush() is True  # nothing twice
    assert (await read_windows(redis, names, ["s1"]))["s1"].hour["sandbox"]["delivered"] == 4


async def test_counts_kept_while_redis_is_away_are_bounded(names: Names, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "MAX_PENDING", 5)
    away = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    counters = Stats(away, names, enabled=True)
    try:
        for i in range(20):
            counters.count(_event(f"s{i}"), "sandbox")
        assert await counters.flush() is False
    finally:
        await away.aclose()
    assert counters.pending == 5
    assert counters.dropped == 15
