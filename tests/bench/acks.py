"""Acknowledgements one by one against one covering many (`multiple`), on a quorum queue like the send queues.

    .venv/bin/python -m tests.bench.acks [--messages 20000] [--rounds 3] [--every 50] [--prefetch 2000]

(from the project root, as a module.) Each round fills a throw-away quorum queue with persistent messages,
then consumes it with the prefetch given and acknowledges each delivery (`ack`), or every `--every`th with
`multiple` (`multiple`), and deletes the queue. Printed per variant, medians of the rounds: deliveries a second,
and the CPU time a delivery of this process and of the local `beam.smp` processes (RabbitMQ; read from
/proc) over the consume, publishing excluded. Nothing is asserted: it measures what acknowledging with
`multiple` saves a consumer and its broker: the workers' acks go that way (`workers.consumer._Acks`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import aio_pika

from cli import run
from tests.bench.batching import service_cpu
from tests.bench.throughput import add_service_args


async def one_round(amqp_url: str, messages: int, prefetch: int, every: int) -> tuple[float, float, float]:
    """deliveries/s, client CPU ms and broker CPU ms a delivery, acknowledging every `every`th with `multiple`."""
    connection = await aio_pika.connect(amqp_url)
    name = f"bench{uuid.uuid4().hex[:8]}.acks"
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        body = b"x" * 300
        for _ in range(messages):
            await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key=name)
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=prefetch)
        queue = await consuming.get_queue(name)
        seen, done = 0, asyncio.Event()

        async def take(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            seen += 1
            if every == 1:
                await msg.ack()
            elif seen % every == 0 or seen == messages:
                await msg.ack(multiple=True)
            if seen == messages:
                done.set()

        broker, cpu, started = service_cpu()[0], time.process_time(), time.monotonic()
        await queue.consume(take)
        await done.wait()
        took, cpu = time.monotonic() - started, time.process_time() - cpu
        await asyncio.sleep(1.0)  # the broker applies the last settlements
        broker = service_cpu()[0] - broker
        await consuming.close()
    finally:
        async with connection.channel() as cleanup:
            await cleanup.queue_delete(name)
        await connection.close()
    return messages / took, cpu * 1000 / messages, broker * 1000 / messages


async def bench(args: argparse.Namespace) -> None:
    variants = {"ack": 1, "multiple": args.every}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, every in variants.items():
            rate, cpu, broker = await one_round(args.amqp_url, args.messages, args.prefetch, every)
            results[name].append((rate, cpu, broker))
            print(f"round {r + 1} {name:<9}{rate:>9,.0f}/s  client {cpu:.3f} ms  broker {broker:.3f} ms", flush=True)
    print(f"\n{args.messages} messages x {args.rounds} rounds, prefetch {args.prefetch}, multiple every {args.every}")
    print(f"{'':<10}{'deliveries/s':>13}{'client ms':>11}{'broker ms':>11}")
    for name, rows in results.items():
        rate, cpu, broker = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"{name:<10}{rate:>13,.0f}{cpu:>11.3f}{broker:>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=50, help="acknowledge every Nth delivery, with multiple")
    parser.add_argument("--prefetch", type=int, default=2000)
    add_service_args(parser)
    run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
