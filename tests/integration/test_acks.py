"""Acknowledgements in as few frames as the order of handling allows (`workers.consumer._Acks`), on a real broker:
what is acked stays acked, what is not goes back, and no frame closes the channel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq
import pytest

from smsfleet.settings import Settings
from workers.consumer import ACK_LINGER_S, QueueConsumer, ack, nack
from workers.runtime import Runtime


class Gated(QueueConsumer):
    """Holds delivery i (its body) until `release(i, action)`; then acks it, or nacks it ("nack"), or acks and
    nacks it, while the ack is on its way and after ("ack, nack": a handler cancelled after its ack)."""

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


async def _run(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, n: int, script: Callable[[Gated], Awaitable[None]]
) -> list[int]:
    """Deliver n messages to a `Gated` consumer, run `script(consumer)`, stop, and return what went back to the
    queue (bodies, sorted)."""
    async with Runtime.open(settings, prefetch=n) as rt:
        consumer = Gated(rt, rt.names.send_queue("smsc"), n)
        async with amqp.channel() as channel:
            for i in range(n):
                await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), consumer.queue_name)
        await consumer.start()
        await asyncio.wait_for(consumer.all_taken.wait(), 20)
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
