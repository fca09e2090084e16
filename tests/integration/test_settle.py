"""Acknowledgements when their connection is lost: bounded, never waiting for good (`workers.consumer.ack`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aio_pika
import pytest

from workers.consumer import SETTLE_S, SettleTimeout, ack

N = 500


def _abort(connection: aio_pika.abc.AbstractConnection) -> None:
    """Lose the connection at once, with whatever frames are queued for it still queued. (aiormq keeps its
    socket's writer only in its writer task.)"""
    writer_task = connection.transport.connection._writer_task  # type: ignore[union-attr]
    writer_task.get_coro().cr_frame.f_locals["writer"].transport.abort()


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
    await asyncio.sleep(0)  # each ack queues its frame for the writer, ten at most, the others wait to
    _abort(connection)
    started = time.monotonic()
    # unbounded, the acks behind the lost writer would wait for good (this would time out)
    outcomes = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), SETTLE_S + 10)
    took = time.monotonic() - started
    kinds = Counter(type(outcome).__name__ for outcome in outcomes)
    assert kinds[SettleTimeout.__name__] > 0, kinds  # the case bounded: acks that were waiting for the writer
    assert took <= SETTLE_S + 2
    await connection.close()
