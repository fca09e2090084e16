"""A worker process through outages of its services: Redis frozen for 10 s, RabbitMQ restarted mid-run.

Nothing may be lost or sent twice, and the rate limit may not be exceeded while Redis is away: a worker
that cannot reach Redis stops taking jobs, it never sends unthrottled. Finality is read from the ledger
in Redis (the test's own broker connections do not survive a broker restart with their exclusive queues).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import aio_pika
import pytest
import redis.asyncio as aioredis

from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.fakes.smsc import FakeSmsc
from tests.integration.test_worker_chaos import (
    SEND_PHP,
    TimedRequests,
    create_sender,
    max_per_window,
    no_job_sent_twice,
    publish_jobs,
    until,
    workers,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


async def all_final(redis: aioredis.Redis, names: Names, job_ids: Sequence[str], timeout: float) -> dict[str, str]:  # noqa: ASYNC109 - a polling deadline
    """Wait until the ledger holds a final state for every job; the states by job."""
    deadline = time.monotonic() + timeout
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(names.redis_key("job", job_id), ["phase", "state"])
            rows = await pipe.execute()
        states = {j: (s or b"").decode() for j, (p, s) in zip(job_ids, rows, strict=True) if p == b"final"}
        if len(states) == len(job_ids):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"{len(job_ids) - len(states)} of {len(job_ids)} jobs not final within {timeout:g} s")
        await asyncio.sleep(0.2)


def redis_pid(url: str) -> int | None:
    """The local redis-server's pid, when the tests' Redis is the local one."""
    if "127.0.0.1" not in url and "localhost" not in url:
        return None
    found = subprocess.run(["pidof", "redis-server"], capture_output=True, text=True, check=False)  # noqa: S607
    pids = found.stdout.split()
    return int(pids[0]) if len(pids) == 1 else None


@pytest.mark.timeout(180)
async def test_redis_frozen_for_10_s_loses_nothing_and_never_sends_unthrottled(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    pid = redis_pid(settings.redis_url)
    if pid is None:
        pytest.skip("needs the local redis-server to freeze")
    n, rate = 600, 49
    job_ids = [f"rf-{i:04d}" for i in range(n)]
    async with FakeSmsc("acme", "pw", initial_status=1) as fake:
        fake.requests = TimedRequests()
        await create_sender(redis, names, fake, rate_limit=rate)
        await publish_jobs(amqp, names, "s1", job_ids)
        with workers(settings, tmp_path) as fleet:
            proc = fleet.start("--concurrency", "50")
            await until(lambda: len(fake.messages) >= 100, 60, "100 messages sent", [proc])
            os.kill(pid, signal.SIGSTOP)  # Redis stops answering: connections hang, as on a network partition
            frozen_at, sent_before = time.time(), len(fake.messages)
            try:
                await asyncio.sleep(10)
                sent_while_frozen = len(fake.messages) - sent_before
            finally:
                os.kill(pid, signal.SIGCONT)
            states = await all_final(redis, names, job_ids, 120)
            assert await fleet.stop(proc) == 0, fleet.log(proc)
    times = [t for t, (path, _) in zip(fake.requests.times, fake.requests, strict=True) if path == SEND_PHP]
    worst = max_per_window(times)
    counts = no_job_sent_twice(fake, job_ids)
    print(f"\nRedis frozen 10 s after {sent_before} sends; {sent_while_frozen} sent while frozen (in flight); "
          f"max {worst} per 1-s window; {counts}")  # fmt: skip
    assert set(states.values()) == {"delivered"}
    assert worst <= rate
    assert sent_while_frozen <= 5, "sends went on without the rate limiter"
    assert max(times) > frozen_at + 10  # and sending resumed by itself afterwards


@pytest.mark.timeout(240)
async def test_rabbitmq_restarted_mid_run_loses_nothing(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None or ("127.0.0.1" not in settings.amqp_url and "localhost" not in settings.amqp_url):
        pytest.skip("needs the local RabbitMQ to restart")
    n = 1500
    job_ids = [f"rr-{i:04d}" for i in range(n)]
    async with FakeSmsc("acme", "pw", initial_status=1, latency=0.01) as fake:
        await create_sender(redis, names, fake)
        await publish_jobs(amqp, names, "s1", job_ids)
        with workers(settings, tmp_path) as fleet:
            proc = fleet.start("--concurrency", "20")
            await until(lambda: len(fake.messages) >= n // 4, 90, f"{n // 4} messages sent", [proc])
            sent_before = len(fake.messages)
            await asyncio.to_thread(subprocess.run, [rabbitmqctl, "stop_app"], check=True, capture_output=True)
            await asyncio.sleep(3)
            await asyncio.to_thread(subprocess.run, [rabbitmqctl, "start_app"], check=True, capture_output=True)
            await asyncio.to_thread(subprocess.run, [rabbitmqctl, "await_startup"], check=True, capture_output=True)
            states = await all_final(redis, names, job_ids, 180)
            assert proc.poll() is None, "the worker died with the broker:\n" + fleet.log(proc)
            assert await fleet.stop(proc) == 0, fleet.log(proc)
    counts = no_job_sent_twice(fake, job_ids)
    print(f"\nRabbitMQ restarted after {sent_before} of {n} sent; all final; {counts}")
    assert set(states.values()) == {"delivered"}


@pytest.mark.timeout(120)
async def test_the_receiver_asks_for_a_retry_while_the_broker_is_down_and_stores_the_retry_once(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None or ("127.0.0.1" not in settings.amqp_url and "localhost" not in settings.amqp_url):
        pytest.skip("needs the local RabbitMQ to stop")
    from aiohttp.test_utils import TestClient, TestServer  # noqa: PLC0415

    from smsfleet.senders import SenderRegistry, parse_sender, receiving_url  # noqa: PLC0415
    from tests.integration.test_webhooks import path_of  # noqa: PLC0415
    from webhooks import Receiver, build_app  # noqa: PLC0415

    doc = {"id": "sbx", "gateway": "sandbox", "accounts": ["acme"]}
    sender = await SenderRegistry(redis, names).create(parse_sender(doc))
    url = path_of(receiving_url(sender, settings.public_url) or "")
    inbound = {"from": "+79161234567", "to": "ACME", "text": "hello"}
    async with TestClient(TestServer(build_app(Receiver(settings)))) as client:
        await asyncio.to_thread(subprocess.run, [rabbitmqctl, "stop_app"], check=True, capture_output=True)
        try:
            reply = await client.post(url, json=inbound)
            assert reply.status == 503  # the provider will retry
            assert reply.headers["Retry-After"]
        finally:
            await asyncio.to_thread(subprocess.run, [rabbitmqctl, "start_app"], check=True, capture_output=True)
            await asyncio.to_thread(subprocess.run, [rabbitmqctl, "await_startup"], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while (await client.get("/readyz")).status != 200:  # the receiver reconnects by itself
            assert time.monotonic() < deadline, "the receiver did not reconnect"
            await asyncio.sleep(0.5)
        while (status := (await client.post(url, json=inbound)).status) != 200:  # the provider retries
            assert status == 503
            assert time.monotonic() < deadline, "the retry was never accepted"
            await asyncio.sleep(0.5)
    connection = await aio_pika.connect(settings.amqp_url)  # the fixture's own may still be reconnecting
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.inbound_queue, passive=True)
        assert queue.declaration_result.message_count == 1  # stored once: the refused attempt stored nothing
    finally:
        await connection.close()
