"""Slow providers: msg/s of one `smsfleet worker` process when the provider takes 200 ms or 1 s to answer, and
how the worker's `--concurrency` (its sends in flight, and its prefetch) changes it.

    .venv/bin/python -m tests.bench.slow_provider [--latencies 0.2,1] [--concurrency 100,500,1000]
                                                  [--seconds 8] [--quick]

(from the project root, as a module: it imports the helpers of `tests.bench.throughput` and `scaling`)

On a throw-away namespace of the local broker and Redis: one SMSC sender per latency (rate limit 1e6/s)
against fake SMSC servers answering after that latency, each served by a child process. For each latency
and concurrency, a backlog sized for about `--seconds` of sends at the ideal rate (concurrency / latency,
at most 10,000 jobs) is published, one real worker process drains it, and msg/s is taken over the
`accepted` events' stamps, as in `scaling`. The ideal is printed beside it: a worker with free CPU reaches
it; one that needs more CPU than a core stops short of it. Numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import math

from smsfleet.logs import configure
from smsfleet.topology import Names
from tests.bench.scaling import one_run
from tests.bench.throughput import add_service_args, bench_namespace, create_sender, fake_smsc

MAX_JOBS = 10_000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latencies", default="0.2,1", help="provider latencies in seconds, comma-separated")
    parser.add_argument("--concurrency", default="100,500,1000", help="worker --concurrency settings")
    parser.add_argument("--seconds", type=float, default=8.0, help="backlog size, in seconds at the ideal rate")
    parser.add_argument("--quick", action="store_true", help="200 ms only, concurrency 100 and 500, 3-s backlogs")
    add_service_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.latencies, args.concurrency, args.seconds = "0.2", "100,500", 3.0
    latencies = [float(x) for x in args.latencies.split(",")]
    settings_c = [int(x) for x in args.concurrency.split(",")]
    configure("console", "warning")

    rows = []
    async with bench_namespace(args.amqp_url, args.redis_url) as (settings, connection, redis):
        for latency in latencies:
            sender = f"lat{int(latency * 1000)}"
            async with fake_smsc(latency, in_process=False) as url:
                await create_sender(redis, Names(settings.namespace), sender, url)
                for c in settings_c:
                    ideal = c / latency
                    jobs = min(MAX_JOBS, max(500, math.ceil(ideal * args.seconds)))
                    flags = ["--concurrency", str(c)]
                    rate, _, span, cpu_ms = await one_run(
                        settings, connection, f"{sender}c{c}", jobs=jobs, processes=1, flags=flags, sender=sender
                    )
                    rows.append((latency, c, jobs, rate, ideal, cpu_ms))
                    line = f"{latency * 1000:.0f} ms, concurrency {c}: {rate:,.0f} msg/s over {span:.1f} s"
                    print(f"{line} ({jobs:,} jobs; ideal {ideal:,.0f}), {cpu_ms:.2f} worker CPU ms/msg", flush=True)

    print()
    print("one worker process, one sender (rate limit 1e6/s), fake SMSC in a child process")
    header = ("latency", "concurrency", "jobs", "msg/s", "ideal (c / latency)", "of ideal", "worker CPU ms/msg")
    print(" | ".join(header))
    for latency, c, jobs, rate, ideal, cpu_ms in rows:
        cells = (f"{latency * 1000:.0f} ms", f"{c}", f"{jobs:,}", f"{rate:,.0f}", f"{ideal:,.0f}",
                 f"{rate / ideal:.0%}", f"{cpu_ms:.2f}")  # fmt: skip
        print(" | ".join(v.rjust(len(h)) for v, h in zip(cells, header, strict=True)))


if __name__ == "__main__":
    asyncio.run(main())
