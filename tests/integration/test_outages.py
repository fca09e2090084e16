"""The webhook receiver through a broker outage: RabbitMQ stopped while a provider pushes to it.

(The worker outages that lived here, Redis paused and RabbitMQ restarted mid-run, are in `tests/chaos/`.)
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from smsfleet.senders import SenderRegistry, parse_sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import broker_stopped, local_rabbitmqctl
from tests.integration.test_webhooks import path_of
from webhooks import Receiver, build_app

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


@pytest.mark.timeout(120)
async def test_the_receiver_asks_for_a_retry_while_the_broker_is_down_and_stores_the_retry_once(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    ctl = local_rabbitmqctl(settings)
    doc = {"id": "sbx", "gateway": "sandbox", "accounts": ["acme"]}
    sender = await SenderRegistry(redis, names).create(parse_sender(doc))
    url = path_of(receiving_url(sender, settings.public_url) or "")
    inbound = {"from": "+79161234567", "to": "ACME", "text": "hello"}
    async with TestClient(TestServer(build_app(Receiver(settings)))) as client:
        async with broker_stopped(ctl):
            reply = await client.post(url, json=inbound)
            assert reply.status == 503  # the provider will retry
            assert reply.headers["Retry-After"]
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
