"""Scaling out: 1, 2 and 4 `smsfleet worker` processes draining one backlog to one unlimited sender.

    .venv/bin/python -m tests.bench.scaling [--jobs 10000] [--rounds 2] [--processes 1,2,4] [--concurrency N]

(from the project root, as a module: it imports the helpers of `tests.bench.throughput`)

On a throw-away namespace of the local broker and Redis: one SMSC sender with a rate limit of 1e6/s against
the fast fake SMSC (latency 0) served by a child process. Each run publishes a backlog of `--jobs` jobs
(confirmed) before the workers start, then starts that many real worker processes
(`python -m smsfleet worker --gateway smsc --role send`, default concurrency unless `--concurrency`),
waits until every job has an `accepted` event on `<ns>.events` (an exclusive queue bound before
publishing, consumed here), and stops them with SIGTERM. msg/s = (n - 1) / (last - first) over the events'
`at` stamps, so process start-up before the first send is not counted, but the other processes' start-up
after it is. Rounds alternate the process counts (1, 2, 4; 1, 2, 4 ...) after an untimed warm-up, so
broker drift hits them all; the medians are printed with msg/s per process and the speed-up over one.

The machine's cores are shared by the workers, RabbitMQ, Redis, the fake and this process (which publishes
and counts events), so past the core count more processes cannot add throughput. Numbers only: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import aio_pika

from smsfleet.logs import configure
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.bench.fleet import WorkerProcesses, cpu_seconds
from tests.bench.throughput import (
    accepted_events,
    add_service_args,
    bench_namespace,
    create_sender,
    fake_smsc,
    make_jobs,
    publish,
)


async def one_run(
    settings: Settings,
    connection: aio_pika.abc.AbstractRobustConnection,
    prefix: str,
    *,
    jobs: int,
    processes: int,
    flags: list[str],
    sender: str = "fast",
    kind: str = "smsc",
) -> tuple[float, float, float, float]:
    """msg/s, seconds from the first spawn to the first send, seconds of sends, and the workers' CPU ms a job
    (all processes, from the first to the last send). `sender` is of gateway `kind` (give `--gateway kind` in
    `flags` where that is not SMSC)."""
    names = Names(settings.namespace)
    batch = make_jobs(prefix, sender, jobs)
    async with accepted_events(connection, names) as seen:
        await publish(connection, names, batch, kind)
        with WorkerProcesses(settings) as fleet:
            spawned = time.time()
            for _ in range(processes):
                fleet.start(*flags)
            await fleet.wait_until(lambda: len(seen) > 0, 60, "the first job accepted")
            cpu = sum(cpu_seconds(p.pid) for p in fleet.procs)
            await fleet.wait_until(lambda: len(seen) >= jobs, 600, f"{jobs} jobs accepted")
            cpu = sum(cpu_seconds(p.pid) for p in fleet.procs) - cpu
            await fleet.stop()
    times = [seen[j.id] for j in batch]
    first, last = min(times), max(times)
    return (jobs - 1) / (last - first), first - spawned, last - first, cpu * 1000 / jobs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", default="1,2,4", help="process counts, comma-separated (the first is the base)")
    parser.add_argument("--concurrency", type=int, help="the workers' --concurrency (default: theirs)")
    add_service_args(parser)
    args = parser.parse_args()
    counts = [int(c) for c in args.processes.split(",")]
    flags = ["--concurrency", str(args.concurrency)] if args.concurrency else []
    configure("console", "warning")

    print(f"{os.cpu_count()} cores, shared by the workers, RabbitMQ, Redis, the fake SMSC and this process; "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    rates: dict[int, list[float]] = {n: [] for n in counts}
    cpu: dict[int, list[float]] = {n: [] for n in counts}
    async with (
        bench_namespace(args.amqp_url, args.redis_url) as (settings, connection, redis),
        fake_smsc(0.0, in_process=False) as url,
    ):
        await create_sender(redis, Names(settings.namespace), "fast", url)
        await one_run(settings, connection, "warm", jobs=1000, processes=1, flags=flags)  # untimed
        for r in range(args.rounds):
            for n in counts:
                rate, start_s, span, cpu_ms = await one_run(
                    settings, connection, f"r{r}p{n}", jobs=args.jobs, processes=n, flags=flags
                )
                rates[n].append(rate)
                cpu[n].append(cpu_ms)
                print(f"round {r + 1}, {n} process(es): {rate:7,.0f} msg/s over {span:5.1f} s (first send "
                      f"{start_s:.1f} s after the spawn), {cpu_ms:.2f} worker CPU ms/msg", flush=True)  # fmt: skip

    base = statistics.median(rates[counts[0]])
    print()
    print(f"{args.jobs:,} jobs per run x {args.rounds} rounds, one sender (rate limit 1e6/s), fake latency 0 "
          f"(child process), worker concurrency {args.concurrency or 'default (100)'}")  # fmt: skip
    header = ("processes", "msg/s median", "per process", f"speed-up vs {counts[0]}", "worker CPU ms/msg")
    print(" | ".join(header), "| rounds (msg/s)")
    for n in counts:
        median = statistics.median(rates[n])
        cells = (
            f"{n}",
            f"{median:,.0f}",
            f"{median / n:,.0f}",
            f"{median / base:.2f}",
            f"{statistics.median(cpu[n]):.2f}",
        )
        rounds = ", ".join(f"{x:,.0f}" for x in rates[n])
        print(" | ".join(c.rjust(len(h)) for c, h in zip(cells, header, strict=True)), "|", rounds)
    print(f"note: {os.cpu_count()} cores, shared by the workers with RabbitMQ, Redis, the fake SMSC and this process "
          f"(publishing, counting events): more processes than that can only share the same CPU")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
