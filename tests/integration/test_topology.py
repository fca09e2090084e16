"""Declaring the topology on the real broker: complete, idempotent, and loud about conflicts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest

from smsfleet.kinds import KINDS
from smsfleet.settings import QueueLimits
from smsfleet.topology import (
    DELAY_TARGETS,
    DELAY_TIERS,
    Names,
    TopologyConflict,
    declare,
    delete,
    message,
    queue_arguments,
)
from workers.delays import Delayer


async def test_declare_twice_is_a_no_op_and_routes_by_gateway(
    amqp: aio_pika.abc.AbstractConnection, names: Names
) -> None:
    async with amqp.channel() as channel:
        await declare(channel, names)  # second time: no error
        exchange = await channel.get_exchange(names.send_exchange)
        await exchange.publish(message(b"{}"), routing_key=names.send_key("smsc", "acme"))
        queue = await channel.get_queue(names.send_queue("smsc"))
        got = await queue.get(timeout=5)
        await got.ack()
        for kind in KINDS:
            assert (await channel.declare_queue(names.send_queue(kind), passive=True)).name


async def test_conflicting_arguments_give_a_clear_error(amqp_url: str, namespace: str) -> None:
    names = Names(namespace)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(names.dead_queue, durable=True)  # a classic queue, not quorum
        channel = await connection.channel()
        with pytest.raises(TopologyConflict, match="inequivalent arg"):
            await declare(channel, names)
    finally:
        await _delete_exchanges(connection, names)


async def test_a_queue_declared_without_a_max_length_says_how_to_migrate(amqp_url: str, namespace: str) -> None:
    """An existing queue keeps its arguments: the previous version's dead queue (no bound) is a conflict."""
    names = Names(namespace)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(names.dead_queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel = await connection.channel()
        with pytest.raises(TopologyConflict, match=r"'x-max-length'.*see the README"):
            await declare(channel, names)
        channel = await connection.channel()
        await declare(channel, names, QueueLimits(work=0, dead=0))  # unbounded: the old arguments (then: policies)
    finally:
        channel = await connection.channel()
        await delete(channel, names)
        await connection.close()


async def _delete_exchanges(connection: aio_pika.abc.AbstractConnection, names: Names) -> None:
    channel = await connection.channel()
    await channel.queue_delete(names.dead_queue)
    for ex in (
        names.send_exchange,
        names.internal_exchange,
        names.events_exchange,
        names.dead_exchange,
        names.delay_exchange,
    ):
        await channel.exchange_delete(ex)
    await connection.close()


@pytest.fixture
async def tiny(amqp_url: str, names: Names) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel with publisher confirms on a namespace whose queues hold 2 messages (the dead queue 3)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection.channel() as channel:
        await declare(channel, names, QueueLimits(work=2, dead=3))
    channel = await connection.channel(publisher_confirms=True)
    yield channel
    async with connection.channel() as admin:
        await delete(admin, names)
    await connection.close()


async def test_a_full_queue_refuses_the_publish(tiny: aio_pika.abc.AbstractChannel, names: Names) -> None:
    """The broker nacks a publish to a full queue (publisher confirms), and keeps the messages it had. A quorum
    queue checks its bound after taking a message, so it holds the bound, or one more."""
    for exchange, key, bound in [
        (names.send_exchange, names.send_key("smsc", "s1"), 2),
        (names.dead_exchange, "", 3),
    ]:
        accepted = await _publish_until_refused(await tiny.get_exchange(exchange), key, bound + 5)
        assert bound <= accepted <= bound + 1
    send = await tiny.get_exchange(names.send_exchange)
    await send.publish(message(b"{}"), routing_key=names.send_key("infobip", "s1"))  # another queue has room
    queue = await tiny.declare_queue(names.send_queue("smsc"), passive=True)
    assert queue.declaration_result.message_count in (2, 3)


async def _publish_until_refused(exchange: aio_pika.abc.AbstractExchange, key: str, most: int) -> int:
    """How many publishes the broker confirmed before it nacked one."""
    for accepted in range(most):
        try:
            await exchange.publish(message(b"{}"), routing_key=key)
        except aio_pika.exceptions.DeliveryError:  # the broker's basic.nack
            return accepted
    raise AssertionError(f"{most} publishes confirmed: the queue is not bounded")


async def test_each_queue_has_its_bound(amqp_url: str, tiny: aio_pika.abc.AbstractChannel, names: Names) -> None:
    """Every queue, the dead queue and the delay tiers included, carries `x-max-length`: declaring it again
    with another bound (and otherwise the same arguments) is refused by the broker."""
    other = queue_arguments(names, QueueLimits(work=3, dead=4))
    assert len(other) == 3 + len(KINDS) + 2 * len(DELAY_TIERS)
    connection = await aio_pika.connect(amqp_url)
    try:
        for queue, arguments in other.items():
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="'x-max-length'"):
                await channel.declare_queue(queue, durable=True, arguments=arguments)
    finally:
        await connection.close()
    del tiny  # declared the namespace with bounds 2 and 3


async def test_a_delay_tier_brings_the_message_back_to_its_queue(
    amqp: aio_pika.abc.AbstractConnection, names: Names
) -> None:
    async with amqp.channel() as channel:
        delay = await channel.get_exchange(names.delay_exchange)
        tier = DELAY_TIERS[0]
        await delay.publish(
            message(b'{"x":1}', headers={"smsfleet-target": "send", "smsfleet-tier": str(tier)}),
            routing_key=names.send_key("infobip", "s1"),
        )
        queue = await channel.get_queue(names.send_queue("infobip"))
        got = None
        for _ in range(50):
            got = await queue.get(fail=False)
            if got:
                break
            await asyncio.sleep(0.1)
        assert got is not None
        assert got.body == b'{"x":1}'
        await got.ack()


async def test_a_delayed_message_lands_in_exactly_one_tier_queue(
    amqp: aio_pika.abc.AbstractConnection, names: Names
) -> None:
    async with amqp.channel(publisher_confirms=True) as channel:
        await Delayer(channel, names).delay(b"{}", routing_key="recheck.smsc", target="internal", seconds=60)
        counts = {}
        for target in DELAY_TARGETS:
            for tier in DELAY_TIERS:
                queue = await channel.declare_queue(names.delay_queue(target, tier), passive=True)
                counts[(target, tier)] = queue.declaration_result.message_count
    assert {k: v for k, v in counts.items() if v} == {("internal", 60): 1}
