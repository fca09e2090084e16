"""Acknowledgements (`workers.consumer`), on a real broker: when their connection is lost or stuck, bounded, never
waiting for good; otherwise in as few frames as the order of handling allows (`_Acks`), with what is acked staying
acked, what is not going back, and no frame closing the channel."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aiormq
import pytest

from smsfleet.settings import Settings
from workers.consumer import ACK_LINGER_S, SETTLE_S, QueueConsumer, SettleTimeout, ack, nack
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


class Gated(QueueConsumer):
    """Holds delivery i (its body) until `release(i, action)`; then acks it, or nacks it ("nack"), or acks and
    nacks it, while the ack is on its way and after ("ack, nack": a handler cancelled after its ack). A nacked
    delivery that comes again is left unsettled."""

    role = "test"

    def __init__(self, rt: Runtime, queue_name: str, n: int) -> None:
        super().__init__(rt, queue_name)
        self.gates = [asyncio.get_running_loop().create_future() for _ in range(n)]
        self.done: list[asyncio.Future[None]] = [asyncio.get_running_loop().create_future() for _ in range(n)]
        self.taken = 0
        self.all_taken = asyncio.Event()

    def release(self, i: int, action: str = "ack") -> None:
        self.gates[i].set_result(action)

    async def handle(self, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        i = int(msg.body)
        if self.done[i].done():  # a nacked one delivered again: left to the channel, back in the queue at the end
            return
        self.taken += 1
        if self.taken == len(self.gates):
            self.all_taken.set()
        action = await self.gates[i]
        if action == "nack":
            await nack(msg)
        else:
            settled = asyncio.create_task(ack(msg))
            if action == "ack, nack":
                await asyncio.sleep(0)
                await nack(msg)  # the ack on its way: nothing more is written
            await settled
            if action == "ack, nack":
                await nack(msg)  # written, maybe by another delivery's `multiple` frame: nor now
        self.done[i].set_result(None)


@pytest.fixture
def frames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, bool]]:
    """The ack and nack frames the client writes: (method, delivery tag, multiple)."""
    written: list[tuple[str, int, bool]] = []
    basic_ack, basic_nack = aiormq.Channel.basic_ack, aiormq.Channel.basic_nack

    async def ack_frame(self: aiormq.Channel, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        written.append(("ack", delivery_tag, multiple))
        await basic_ack(self, delivery_tag, multiple, wait)

    async def nack_frame(self: aiormq.Channel, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        written.append(("nack", delivery_tag, multiple))
        await basic_nack(self, delivery_tag, multiple, requeue)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", ack_frame)
    monkeypatch.setattr(aiormq.Channel, "basic_nack", nack_frame)
    return written


@contextlib.asynccontextmanager
async def gated(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, n: int
) -> AsyncIterator[tuple[Runtime, Gated]]:
    """A `Gated` consumer holding n deliveries."""
    async with Runtime.open(settings, prefetch=n) as rt:
        consumer = Gated(rt, rt.names.send_queue("smsc"), n)
        async with amqp.channel() as channel:
            for i in range(n):
                await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), consumer.queue_name)
        await consumer.start()
        await asyncio.wait_for(consumer.all_taken.wait(), 20)
        yield rt, consumer


@pytest.mark.timeout(90)
async def test_a_drain_on_a_connection_that_stopped_writing_ends_within_the_bound(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async with gated(settings, amqp, 200) as (rt, consumer):
        # the broker stops reading: the socket's buffer full, the writer waits to drain it for good
        protocol = _writer(rt.connection).transport.get_protocol()
        protocol.pause_writing()  # type: ignore[attr-defined]
        for i in range(200):
            consumer.release(i)
        started = time.monotonic()
        try:
            await asyncio.wait_for(consumer.drain(grace_s=60), 2 * SETTLE_S + 5)
        finally:
            took = time.monotonic() - started
            protocol.resume_writing()  # type: ignore[attr-defined]  # so that the connection can close
        assert not consumer.in_flight
    assert took <= 2 * SETTLE_S + 2  # the consumer's cancel, then the acks queued behind it: each bounded


async def _run(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, n: int, script: Callable[[Gated], Awaitable[None]]
) -> list[int]:
    """Run `script` on a `Gated` consumer holding n deliveries, stop it, and return what went back to the queue
    (bodies, sorted)."""
    async with gated(settings, amqp, n) as (rt, consumer):
        await script(consumer)
        await consumer.drain(grace_s=5)
        assert not rt.consume_channel.is_closed, "a frame closed the channel"
    back = []
    async with amqp.channel() as channel:
        queue = await channel.get_queue(consumer.queue_name)
        while (msg := await queue.get(fail=False, no_ack=True)) is not None:
            back.append(int(msg.body))
    return sorted(back)


@pytest.mark.timeout(60)
async def test_deliveries_handled_in_order_are_acked_by_one_frame(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, frames: list[tuple[str, int, bool]]
) -> None:
    n = 200

    async def script(consumer: Gated) -> None:
        for i in range(n):
            consumer.release(i)
        await asyncio.wait_for(asyncio.gather(*consumer.done), 10)

    assert await _run(settings, amqp, n, script) == []
    assert frames == [("ack", n, True)]


@pytest.mark.timeout(60)
async def test_one_still_handled_holds_the_acks_after_it_only_for_the_linger(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, frames: list[tuple[str, int, bool]]
) -> None:
    n = 50

    async def script(consumer: Gated) -> None:
        for i in range(1, n):
            consumer.release(i)
        # acked on their own once the linger is over, while the first is still handled
        await asyncio.wait_for(asyncio.gather(*consumer.done[1:]), ACK_LINGER_S + 5)
        assert frames == [("ack", tag, False) for tag in range(2, n + 1)]
        consumer.release(0, "nack")  # back to the queue: no ack passed it
        await asyncio.wait_for(consumer.done[0], 5)

    assert await _run(settings, amqp, n, script) == [0]
    assert frames[-1] == ("nack", 1, False)


@pytest.mark.timeout(60)
async def test_a_nack_ahead_of_later_acks_is_kept_and_a_nack_after_an_ack_changes_nothing(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, frames: list[tuple[str, int, bool]]
) -> None:
    n = 30

    async def script(consumer: Gated) -> None:
        consumer.release(10, "ack, nack")  # waits behind the ten before it; the nack must not undo it
        consumer.release(5, "nack")
        for i in range(n):
            if i not in (5, 10):
                consumer.release(i)
        await asyncio.wait_for(asyncio.gather(*consumer.done), 10)

    assert await _run(settings, amqp, n, script) == [5]
    assert ("nack", 11, False) not in frames
    assert frames.index(("nack", 6, False)) < min(i for i, f in enumerate(frames) if f[0] == "ack" and f[1] > 6)
