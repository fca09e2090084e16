"""Publishing throughput: the Publisher against a bare aio-pika confirm loop, on the local broker.

    .venv/bin/python tests/bench/publish.py [--jobs 20000] [--rounds 5] [--in-flight 1000]

Both sides publish the same jobs (persistent JSON, mandatory, publisher confirms, `message_id` = job id)
to the same quorum queues of a throw-away namespace, with the same number of publishes in flight. The
Publisher (`publish_many`) also encodes each job, looks its sender up (a dict standing in for the
SenderCache) and applies its timeout; the bare loop publishes bodies encoded in advance. Rounds
alternate (P B, B P, P B...) so that broker drift hits both; queues are purged (and the broker given a
moment) before each run. Printed: the medians and their ratio (target >= 0.9), the median of the
rounds' own ratios, and the client's CPU time per job.
Numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika

from producers import Publisher
from smsfleet.contracts import SendJob, encode
from smsfleet.topology import Names, declare, delete, message

SENDERS = {"bench-smsc": "smsc", "bench-infobip": "infobip"}


def make_jobs(n: int) -> list[SendJob]:
    senders = list(SENDERS)
    return [
        SendJob(
            id=f"bench-{i:08d}",
            sender=senders[i % len(senders)],
            account="acme",
            to=f"+7916{i % 10_000_000:07d}",
            text=f"Your code is {i % 1_000_000:06d}. Do not share it.",
            meta={"campaign": "bench"},
        )
        for i in range(n)
    ]


async def bare_loop(
    exchange: aio_pika.abc.AbstractExchange, items: list[tuple[bytes, str, str]], in_flight: int
) -> None:
    """The baseline: `in_flight` coroutines pulling from one iterator, each awaiting its confirm."""
    shared = iter(items)

    async def worker() -> None:
        for body, job_id, key in shared:
            await exchange.publish(message(body, message_id=job_id), key, mandatory=True)

    await asyncio.gather(*(worker() for _ in range(in_flight)))


async def timed(run: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """(jobs per second, client CPU microseconds per job)."""
    started, cpu = time.perf_counter(), time.process_time()
    await run()
    return n / (time.perf_counter() - started), (time.process_time() - cpu) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=0.5, help="seconds of rest after each purge")
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("SMSFLEET_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    args = parser.parse_args()

    names = Names(f"bench{uuid.uuid4().hex[:8]}")
    jobs = make_jobs(args.jobs)
    bodies = [(encode(j), j.id, Names.send_key(SENDERS[j.sender], j.sender)) for j in jobs]
    connection = await aio_pika.connect_robust(args.amqp_url)
    try:
        admin = await connection.channel()
        await declare(admin, names)
        queues = [await admin.get_queue(names.send_queue(g)) for g in set(SENDERS.values())]
        bare_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        bare_exchange = await bare_channel.get_exchange(names.send_exchange)
        rates: dict[str, list[float]] = {"publisher": [], "bare": []}
        cpu: dict[str, list[float]] = {"publisher": [], "bare": []}
        async with Publisher(connection, names, SENDERS.get, max_in_flight=args.in_flight) as publisher:

            async def with_publisher() -> None:
                failed = sum(not r.ok for r in await publisher.publish_many(jobs))
                if failed:
                    print(f"publisher: {failed} jobs failed")

            runs: dict[str, Callable[[], Awaitable[None]]] = {
                "publisher": with_publisher,
                "bare": lambda: bare_loop(bare_exchange, bodies, args.in_flight),
            }
            # one untimed warm-up of each, then alternate
            await publisher.publish_many(jobs[: args.in_flight])
            await bare_loop(bare_exchange, bodies[: args.in_flight], args.in_flight)
            for round_ in range(args.rounds):
                order = list(runs) if round_ % 2 == 0 else list(reversed(runs))  # P B, B P, P B...
                for name in order:
                    for queue in queues:
                        await queue.purge()
                    await asyncio.sleep(args.settle)  # let the broker finish with the purge
                    rate, cpu_per_job = await timed(runs[name], args.jobs)
                    rates[name].append(rate)
                    cpu[name].append(cpu_per_job)
        await bare_channel.close()
    finally:
        with contextlib.suppress(Exception):  # leave nothing behind, even after a failure
            async with connection.channel() as channel:
                await delete(channel, names)
        await connection.close()

    pub, bare = statistics.median(rates["publisher"]), statistics.median(rates["bare"])
    print(f"{args.jobs} jobs x {args.rounds} rounds each, {args.in_flight} in flight, quorum queues, confirms")
    print(f"{'':<24}{'median jobs/s':>14}{'CPU us/job':>12}   jobs/s by round")
    for label, key in (("Publisher.publish_many", "publisher"), ("bare aio-pika loop", "bare")):
        print(
            f"{label:<24}{statistics.median(rates[key]):>14,.0f}{statistics.median(cpu[key]):>12.1f}   "
            + ", ".join(f"{r:,.0f}" for r in rates[key])
        )
    paired = statistics.median(p / b for p, b in zip(rates["publisher"], rates["bare"], strict=True))
    print(f"ratio publisher / bare: {pub / bare:.3f} of the medians, {paired:.3f} median of the rounds' ratios")
    print("target >= 0.9")


if __name__ == "__main__":
    asyncio.run(main())
