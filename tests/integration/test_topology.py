"""Declaring the topology on the real broker: complete, idempotent, and loud about conflicts."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from smsfleet.kinds import KINDS
from smsfleet.topology import DELAY_TIERS, Names, TopologyConflict, declare, message


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
        with pytest.raises(TopologyConflict, match="x-queue-type"):
            await declare(channel, names)
    finally:
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
    from smsfleet.topology import DELAY_TARGETS  # noqa: PLC0415
    from workers.delays import Delayer  # noqa: PLC0415

    async with amqp.channel(publisher_confirms=True) as channel:
        await Delayer(channel, names).delay(b"{}", routing_key="recheck.smsc", target="internal", seconds=60)
        counts = {}
        for target in DELAY_TARGETS:
            for tier in DELAY_TIERS:
                queue = await channel.declare_queue(names.delay_queue(target, tier), passive=True)
                counts[(target, tier)] = queue.declaration_result.message_count
    assert {k: v for k, v in counts.items() if v} == {("internal", 60): 1}
