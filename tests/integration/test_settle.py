"""Acknowledgements when their connection is lost or stuck: bounded, never waiting for good (`workers.consumer`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aio_pika
import pytest

from smsfleet.settings import Settings
from workers.consumer import SETTLE_S, QueueConsumer, SettleTimeout, ack
from workers.runtime import Runtime

N = 500


def _writer(connection: aio_pika.abc.AbstractConnection) -> asyncio.StreamWriter:
    """The connection's socket writer (aiormq keeps it only in its writer task)."""
    writer_task = connection.transport.connection._writer_task  # type: ignore[union-attr]
    return writer_task.get_coro().cr_frame.f_locals["writer"]  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
async def test_acks_queued_as_their_connection_is_lost_give_up_within_the_bound(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=N)
    queue = await channel.declare_queue(exclusive=True)  # deleted by the broker with its connection
    for i in range(N):
        await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=queue.name)
    delivered: list[aio_pika.abc.AbstractIncomingMessage] = []
    all_in = asyncio.Event()

    async def take(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        delivered.append(msg)
        if len(delivered) == N:
            all_in.set()

    await queue.consume(take)
    await asyncio.wait_for(all_in.wait(), 20)

    acks = [asyncio.create_task(ack(msg)) for msg in delivered]
    await asyncio.sleep(0)  # the first acks queue their frames for the writer (ten at most), the others wait
    _writer(connection).transport.abort()  # lost at once, with the frames queued for it still queued
    started = time.monotonic()
    # unbounded, the acks behind the lost writer would wait for good (this would time out)
    outcomes = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), SETTLE_S + 10)
    took = time.monotonic() - started
    kinds = Counter(type(outcome).__name__ for outcome in outcomes)
    assert kinds[SettleTimeout.__name__] > 0, kinds  # the case bounded: acks that were waiting for the writer
    assert took <= SETTLE_S + 2
    await connection.close()


class Held(QueueConsumer):
    """Takes deliveries and acknowledges each once `go` is set."""

    role = "test"

    def __init__(self, rt: Runtime, queue_name: str, n: int) -> None:
        super().__init__(rt, queue_name)
        self.go, self.all_taken = asyncio.Event(), asyncio.Event()
        self.n, self.taken = n, 0

    async def handle(self, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.taken += 1
        if self.taken == self.n:
            self.all_taken.set()
        await self.go.wait()
        await ack(msg)


@pytest.mark.timeout(90)
async def test_a_drain_on_a_connection_that_stopped_writing_ends_within_the_bound(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    n = 200
    async with Runtime.open(settings, prefetch=n) as rt:
        consumer = Held(rt, rt.names.send_queue("smsc"), n)
        async with amqp.channel() as channel:
            for i in range(n):
                await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), consumer.queue_name)
        await consumer.start()
        await asyncio.wait_for(consumer.all_taken.wait(), 20)
        # the broker stops reading: the socket's buffer full, the writer waits to drain it for good
        protocol = _writer(rt.connection).transport.get_protocol()
        protocol.pause_writing()  # type: ignore[attr-defined]
        consumer.go.set()
        started = time.monotonic()
        try:
            await asyncio.wait_for(consumer.drain(grace_s=60), 2 * SETTLE_S + 5)
        finally:
            took = time.monotonic() - started
            protocol.resume_writing()  # type: ignore[attr-defined]  # so that the connection can close
        assert not consumer.in_flight
    assert took <= 2 * SETTLE_S + 2  # the consumer's cancel, then the acks queued behind it: each bounded
