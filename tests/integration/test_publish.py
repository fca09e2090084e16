"""`publish_json` on the real broker: the publishes of one event-loop turn share one write, and each keeps its
own confirm, nack, return, timeout and cancellation, as a publish of its own would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest

from smsfleet import topology
from smsfleet.settings import QueueLimits
from smsfleet.topology import Names, PublishTimeout, declare, delete, publish_json


@pytest.fixture
async def connection(amqp_url: str, names: Names) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A namespace whose work queues hold 2 messages."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection.channel() as channel:
        await declare(channel, names, QueueLimits(work=2, dead=3))
    yield connection
    async with connection.channel() as admin:
        await delete(admin, names)
    await connection.close()


@pytest.fixture
async def confirming(connection: aio_pika.abc.AbstractRobustConnection) -> aio_pika.abc.AbstractChannel:
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def _bodies(channel: aio_pika.abc.AbstractChannel, queue_name: str) -> list[dict[str, object]]:
    queue = await channel.get_queue(queue_name, ensure=False)
    found = []
    while (msg := await queue.get(no_ack=True, fail=False)) is not None:
        found.append(json.loads(msg.body))
    return found


async def test_the_publishes_of_one_turn_are_each_confirmed_and_queued_in_order(
    confirming: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    """Many publishes in one turn (the events of a batch): every one confirmed, queued once, in call order,
    with the properties of a publish of its own. The events exchange routes to a queue bound here."""
    queue = await confirming.declare_queue(exclusive=True)
    await queue.bind(names.events_exchange, routing_key="status.#")
    await asyncio.gather(*(
        publish_json(confirming, names.events_exchange, json.dumps({"n": n}).encode(), "status.accepted",
                     mandatory=False, message_id=f"job-{n}.accepted")
        for n in range(300)
    ))  # fmt: skip
    received = []
    while (msg := await queue.get(no_ack=True, fail=False)) is not None:
        received.append(msg)
    assert [json.loads(m.body)["n"] for m in received] == list(range(300))
    assert {m.message_id for m in received} == {f"job-{n}.accepted" for n in range(300)}
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT and m.timestamp for m in received)
    assert all(m.content_type == "application/json" for m in received)


async def test_a_nack_fails_its_own_publish_and_the_channel_stays_in_step(
    confirming: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    """One turn's publishes alternating between a full queue (it holds 2) and one with room: the broker nacks
    those to the full one (`DeliveryError` for those callers only) and keeps the others; later confirms still
    match their publishes."""
    full, room = names.send_key("smsc", "s1"), names.send_key("infobip", "s1")
    for _ in range(10):  # one at a time: a quorum queue checks its bound after taking a burst
        try:
            await publish_json(confirming, names.send_exchange, b"{}", full)
        except aiormq.exceptions.DeliveryError:
            break  # full
    else:
        raise AssertionError("10 publishes confirmed: the queue is not bounded")
    keys = [full, room, full, room]
    outcomes = await asyncio.gather(
        *(publish_json(confirming, names.send_exchange, b'{"n": %d}' % n, key) for n, key in enumerate(keys)),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == ["DeliveryError", "NoneType", "DeliveryError", "NoneType"]
    assert [b["n"] for b in await _bodies(confirming, names.send_queue("infobip"))] == [1, 3]
    await publish_json(confirming, names.send_exchange, b'{"n": 4}', room)  # the next tag, confirmed as its own
    assert [b["n"] for b in await _bodies(confirming, names.send_queue("infobip"))] == [4]


async def test_a_returned_publish_raises_for_its_caller_only(
    confirming: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    """A mandatory publish that no queue takes comes back (`PublishError`) in the same write as one that is
    routed, which is confirmed."""
    queue = await confirming.declare_queue(exclusive=True)
    await queue.bind(names.events_exchange, routing_key="status.accepted")
    routed, returned = await asyncio.gather(
        publish_json(confirming, names.events_exchange, b"{}", "status.accepted"),
        publish_json(confirming, names.events_exchange, b"{}", "status.nobody-binds-this"),
        return_exceptions=True,
    )
    assert routed is None
    assert isinstance(returned, aiormq.exceptions.PublishError)
    assert await queue.get(no_ack=True, fail=False) is not None


async def test_a_confirm_that_comes_too_late_raises_publish_timeout(
    confirming: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    """No confirm comes within a microsecond: `PublishTimeout` (the broker may have the message still), and
    the late confirm is ignored: the next publish is confirmed as usual."""
    queue = await confirming.declare_queue(exclusive=True)
    await queue.bind(names.events_exchange, routing_key="status.#")
    with pytest.raises(PublishTimeout):
        await publish_json(confirming, names.events_exchange, b"{}", "status.accepted", confirm_timeout_s=1e-6)
    await publish_json(confirming, names.events_exchange, b"{}", "status.accepted")
    await asyncio.sleep(0.05)
    assert (await queue.declare(timeout=5)).message_count == 2


async def test_a_publish_given_up_before_its_write_is_not_sent(
    confirming: aio_pika.abc.AbstractChannel, names: Names
) -> None:
    """A caller cancelled after it joined the turn but before the turn's write: its message is not sent, and
    the others of the turn are."""
    queue = await confirming.declare_queue(exclusive=True)
    await queue.bind(names.events_exchange, routing_key="status.#")
    publish = "status.accepted"
    first = asyncio.create_task(publish_json(confirming, names.events_exchange, b'{"n": 1}', publish))
    second = asyncio.create_task(publish_json(confirming, names.events_exchange, b'{"n": 2}', publish))
    underlay = await confirming.get_underlay_channel()
    while len(topology._turn.get(underlay, ())) < 2:  # noqa: ASYNC110 - until both joined the turn, not yet written
        await asyncio.sleep(0)
    first.cancel()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert json.loads((await queue.get(no_ack=True)).body) == {"n": 2}
    assert await queue.get(no_ack=True, fail=False) is None


async def test_a_channel_the_broker_closes_fails_every_publish_of_its_write(
    connection: aio_pika.abc.AbstractRobustConnection, names: Names
) -> None:
    """Publishes to an exchange that does not exist: the broker closes the channel (404), and every publish of
    the write fails with that reason at once; none waits for its timeout."""
    channel = await connection.channel(publisher_confirms=True)
    missing = f"{names.events_exchange}.no-such-exchange"
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(publish_json(channel, missing, b"{}", "status.accepted", mandatory=False) for _ in range(3)),
            return_exceptions=True,
        ),
        5,
    )
    assert all(isinstance(o, aiormq.exceptions.ChannelNotFoundEntity) for o in outcomes), outcomes
    await channel.close()
