"""The worker's event publishes: written one by one (aiormq's `basic_publish`), or a turn's together (`publish_json`).

    .venv/bin/python -m tests.bench.events [--events 20000] [--rounds 4] [--in-flight 1000]

(from the project root, as a module.) Each round publishes `--events` `accepted` events, persistent and
confirmed, with `--in-flight` publishes waiting for their confirms at any time (the worker's concurrency), to a
throw-away quorum queue bound to a throw-away topic exchange, both deleted at the end. Two variants, alternating
(A B, B A, ...) so that broker drift hits both:

- one by one: what `publish_json` did before: aiormq's `basic_publish` for each event (its lock, timeout
  scope, frame queue and socket write), with the same properties;
- a turn's together: `publish_json`, which writes the publishes of one event-loop turn in one frame.

Printed: medians of events a second and of this process's CPU microseconds an event, and their ratios.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import cast

import aio_pika
import aiormq

from cli import run
from smsfleet.topology import publish_json
from tests.bench.throughput import add_service_args

BODY = b'{"job_id": "bench-00000001", "sender": "bench", "state": "accepted", "attempt": 1, "parts": 1}'


async def one_by_one(channel: aio_pika.abc.AbstractChannel, exchange: str, n: int, in_flight: int) -> None:
    underlay = cast(aiormq.Channel, await channel.get_underlay_channel())

    async def publish(i: int) -> None:
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json", delivery_mode=2, timestamp=datetime.now(UTC), message_id=f"{i}.accepted"
        )
        await underlay.basic_publish(BODY, exchange=exchange, routing_key="status.accepted", properties=properties,
                                     timeout=10, wait=False)  # fmt: skip

    await _in_flight(publish, n, in_flight)


async def together(channel: aio_pika.abc.AbstractChannel, exchange: str, n: int, in_flight: int) -> None:
    async def publish(i: int) -> None:
        await publish_json(channel, exchange, BODY, "status.accepted", mandatory=False, message_id=f"{i}.accepted")

    await _in_flight(publish, n, in_flight)


async def _in_flight(publish: Callable[[int], Awaitable[None]], n: int, in_flight: int) -> None:
    """Publish events 0..n-1, `in_flight` at a time."""
    numbers = iter(range(n))

    async def one_at_a_time() -> None:
        for i in numbers:
            await publish(i)

    await asyncio.gather(*(one_at_a_time() for _ in range(in_flight)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=1000)
    add_service_args(parser)
    args = parser.parse_args()
    variants = {"one by one": one_by_one, "a turn's together": together}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    name = f"bench{uuid.uuid4().hex[:8]}.events"
    connection = await aio_pika.connect_robust(args.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, "status.#")
        await together(channel, name, args.in_flight, args.in_flight)  # warm-up, untimed
        for r in range(args.rounds):
            for variant in list(variants) if r % 2 == 0 else list(reversed(variants)):
                await queue.purge()
                await asyncio.sleep(0.5)  # the broker finishes the purge
                started, used = time.perf_counter(), time.process_time()
                await variants[variant](channel, name, args.events, args.in_flight)
                took, used = time.perf_counter() - started, time.process_time() - used
                rates[variant].append(args.events / took)
                cpu[variant].append(used / args.events * 1e6)
                print(f"round {r + 1} {variant:<18}{rates[variant][-1]:>9,.0f} events/s "
                      f"{cpu[variant][-1]:6.1f} CPU us/event", flush=True)  # fmt: skip
    finally:
        async with connection.channel() as admin:
            await admin.queue_delete(name)
            await admin.exchange_delete(name)
        await connection.close()

    print(f"\n{args.events:,} events x {args.rounds} rounds, {args.in_flight} in flight, quorum queue, confirms")
    print(f"{'':<20}{'median events/s':>16}{'CPU us/event':>14}")
    for variant in variants:
        print(f"{variant:<20}{statistics.median(rates[variant]):>16,.0f}{statistics.median(cpu[variant]):>14.1f}")
    (a, b) = variants
    print(f"{b} / {a}: {statistics.median(rates[b]) / statistics.median(rates[a]):.2f}x the events a second, "
          f"{statistics.median(cpu[b]) / statistics.median(cpu[a]):.2f}x the CPU an event")  # fmt: skip


if __name__ == "__main__":
    run(main())
