"""The status worker's CPU a delivery report: pushed reports matched to their jobs, recorded, and reported.

    .venv/bin/python -m tests.bench.reports [--jobs 10000] [--rounds 3] [--concurrency 500]

On a throw-away namespace of the local broker and Redis, each round:

1. (not timed) `--jobs` jobs of a sandbox sender (latency 0) go through the real send worker, which leaves in
   the ledger what a send leaves: each job `accepted`, with its provider id mapped back to it;
2. one delivery report a job is published as the receiver publishes it (`report.sandbox`, the sender named,
   the provider id, `delivered`) to the internal exchange, where they wait in the status queue;
3. (timed) the status worker (`run_workers(..., status=True)`, prefetch `--concurrency`) matches each report
   to its job, records the final state and publishes the job's `delivered` event (with a confirm), counted
   by the broker in a queue nobody consumes (polled every 20 ms).

reports/s is from the first to the last `delivered` event; CPU ms a report is this process's CPU time over the
timed part, divided by the reports. On uvloop, as every `smsfleet` command runs (`cli.run`). Numbers only:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid

import aio_pika

from cli import run
from smsfleet.contracts import ReportMessage, State, encode, now
from smsfleet.logs import configure
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, publish_json
from tests.bench.throughput import (
    add_service_args,
    bench_namespace,
    events_count,
    make_jobs,
    timed_workers,
    worker_round,
)
from workers import SendPolicy
from workers.ledger import Ledger

SENDER = "sbx"


async def reports_round(
    settings: Settings, connection: aio_pika.abc.AbstractRobustConnection, ledger: Ledger, n: int, concurrency: int
) -> tuple[float, float]:
    names = ledger.names
    jobs = make_jobs(f"r{uuid.uuid4().hex[:6]}", SENDER, n)
    await worker_round(settings, connection, jobs, 500, kind="sandbox")  # the sends a report is about
    records = await ledger.records([job.id for job in jobs])
    received = now()
    reports = [
        ReportMessage(
            gateway="sandbox", sender=SENDER, provider_message_id=record.provider_message_id, state=State.DELIVERED,
            at=received, received_at=received,
        )
        for record in records
    ]  # fmt: skip
    async with events_count(connection, names, State.DELIVERED) as count:
        async with connection.channel(publisher_confirms=True) as channel:
            slots = asyncio.Semaphore(1000)

            async def one(report: ReportMessage) -> None:
                async with slots:
                    await publish_json(channel, names.internal_exchange, encode(report), "report.sandbox")

            await asyncio.gather(*(one(r) for r in reports))
        policy = SendPolicy(concurrency=concurrency)
        return await timed_workers(settings, count, n, "reports recorded", gateways=[], policy=policy, status=True)


async def main(args: argparse.Namespace) -> None:
    configure("console", "warning")
    rates: list[float] = []
    cpus: list[float] = []
    async with bench_namespace(args.amqp_url, args.redis_url) as (settings, connection, redis):
        doc = {"id": SENDER, "gateway": "sandbox", "accounts": ["acme"], "rate_limit": 1e6,
               "settings": {"latency_ms": 0, "await_delivery_s": 3600}}  # fmt: skip
        names = Names(settings.namespace)
        await SenderRegistry(redis, names).create(parse_sender(doc))
        ledger = Ledger(redis, names)
        for r in range(args.rounds):
            rate, cpu = await reports_round(settings, connection, ledger, args.jobs, args.concurrency)
            rates.append(rate)
            cpus.append(cpu)
            print(f"round {r + 1}  {rate:>9,.0f} reports/s  {cpu:.3f} CPU ms/report")
    print(f"\n{args.jobs} reports x {args.rounds} rounds, prefetch {args.concurrency}: the status worker")
    rounds = ", ".join(f"{x:,.0f}" for x in rates)
    print(f"median {statistics.median(rates):,.0f} reports/s, {statistics.median(cpus):.3f} CPU ms/report   ({rounds})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_service_args(parser)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=500, help="the status worker's prefetch")
    run(main(parser.parse_args()))
