"""Worker memory: peak RSS of one `smsfleet worker` process draining a backlog, at two concurrencies.

    .venv/bin/python -m tests.bench.memory [--jobs 10000] [--concurrency default,1000] [--latency 0.2]

(from the project root, as a module: it imports the helpers of `tests.bench.throughput`)

On a throw-away namespace of the local broker and Redis: one SMSC sender (rate limit 1e6/s) against a slow
fake SMSC (`--latency`, 200 ms by default) served by a child process, so that the worker's in-flight set
stays full: `--concurrency` is both the sends in flight and the AMQP prefetch (`Runtime.open` sets
`prefetch_count` to it), so at 1,000 the process holds 1,000 deliveries at once. For each setting (`default`
passes no flag: 100):

- idle: a worker (`python -m smsfleet worker --gateway smsc --role send --metrics-port P [--concurrency
  N]`) started on the empty queue; once `/readyz` answers 200 and 1 s more has passed, its VmRSS from
  /proc/<pid>/status; then it is stopped.
- drain: a backlog of `--jobs` jobs is published (confirmed), then a fresh worker with the same flags is
  started; its /proc/<pid>/status is sampled every 20 ms until every job has an `accepted` event on
  `<ns>.events`, and VmHWM (the kernel's high-water mark of VmRSS since the process started) is read then,
  before SIGTERM; msg/s = (n - 1) / (last - first) over the events' `at` stamps. Every 0.2 s its /metrics is
  read too: `smsfleet_jobs_consumed_total` less the accepted events seen so far is the number of deliveries
  it is working on, the most of which is printed to show that the in-flight set was full.

MB here are MiB (VmRSS / 1024). The target reported against is <= 150 MB peak at concurrency 1,000. Numbers
only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sized

import aio_pika
import aiohttp

from smsfleet.logs import configure
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.bench.fleet import WorkerProcesses, free_port, proc_status_kb, wait_ready
from tests.bench.throughput import (
    accepted_events,
    add_service_args,
    bench_namespace,
    create_sender,
    fake_smsc,
    make_jobs,
    publish,
)

TARGET_MB = 150
TARGET_CONCURRENCY = 1000


def worker_flags(setting: str) -> list[str]:
    return [] if setting == "default" else ["--concurrency", setting]


async def idle_rss_mb(settings: Settings, setting: str) -> float:
    port = free_port()
    with WorkerProcesses(settings) as fleet:
        proc = fleet.start("--metrics-port", str(port), *worker_flags(setting))
        await wait_ready(fleet, port)
        await asyncio.sleep(1.0)
        rss = proc_status_kb(proc.pid)["VmRSS"]
        await fleet.stop()
    return rss / 1024


async def in_flight(port: int, accepted: Sized, most: list[int]) -> None:
    """Every 0.2 s: the deliveries the worker has taken (`smsfleet_jobs_consumed_total` on its /metrics) less the
    accepted events seen here, i.e. those it is working on and has not sent yet; the most in `most[0]`."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
                consumed = sum(
                    float(line.rpartition(" ")[2])
                    for line in text.splitlines()
                    if line.startswith("smsfleet_jobs_consumed_total{")
                )
                most[0] = max(most[0], int(consumed) - len(accepted))
            await asyncio.sleep(0.2)


async def drain(
    settings: Settings, connection: aio_pika.abc.AbstractRobustConnection, setting: str, jobs: int, prefix: str
) -> tuple[float, float, float, int]:
    """Peak RSS (VmHWM) MB, the most VmRSS sampled MB, msg/s, and the most deliveries in progress at once."""
    names = Names(settings.namespace)
    batch = make_jobs(prefix, "slow", jobs)
    async with accepted_events(connection, names) as seen:
        await publish(connection, names, batch)
        with WorkerProcesses(settings) as fleet:
            port = free_port()
            proc = fleet.start("--metrics-port", str(port), *worker_flags(setting))
            busy = [0]
            watch = asyncio.create_task(in_flight(port, seen, busy))
            sampled = 0
            deadline = time.monotonic() + 600
            try:
                while len(seen) < jobs:
                    fleet.check()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{len(seen)} of {jobs} jobs accepted after 600 s")
                    sampled = max(sampled, proc_status_kb(proc.pid).get("VmRSS", 0))
                    await asyncio.sleep(0.02)
                status = proc_status_kb(proc.pid)
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            await fleet.stop()
    times = [seen[j.id] for j in batch]
    peak, sampled = status["VmHWM"], max(sampled, status["VmRSS"])
    return peak / 1024, sampled / 1024, (jobs - 1) / (max(times) - min(times)), busy[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", default=f"default,{TARGET_CONCURRENCY}", help="settings, comma-separated")
    parser.add_argument("--latency", type=float, default=0.2, help="the fake SMSC's answer time, s")
    add_service_args(parser)
    args = parser.parse_args()
    configure("console", "warning")
    settings_list = args.concurrency.split(",")

    rows: list[tuple[str, float, float, float, float, int]] = []
    async with (
        bench_namespace(args.amqp_url, args.redis_url) as (settings, connection, redis),
        fake_smsc(args.latency, in_process=False) as url,
    ):
        await create_sender(redis, Names(settings.namespace), "slow", url)
        for n, setting in enumerate(settings_list):
            idle = await idle_rss_mb(settings, setting)
            peak, sampled, rate, busy = await drain(settings, connection, setting, args.jobs, f"m{n}")
            rows.append((setting, peak, sampled, idle, rate, busy))
            print(f"concurrency {setting}: peak {peak:.1f} MB, idle {idle:.1f} MB, {rate:,.0f} msg/s, "
                  f"up to {busy:,} in progress", flush=True)  # fmt: skip

    print()
    print(f"one worker process, {args.jobs:,} queued jobs, fake SMSC answering in {args.latency * 1000:.0f} ms "
          f"(child process); MB = MiB")  # fmt: skip
    header = ("concurrency = prefetch", "peak RSS MB", "most RSS sampled MB", "RSS at idle after start MB", "msg/s",
              "in progress (max)")  # fmt: skip
    print(" | ".join(header))
    for setting, peak, sampled, idle, rate, busy in rows:
        label = "default (100)" if setting == "default" else f"{int(setting):,}"
        cells = (label, f"{peak:.1f}", f"{sampled:.1f}", f"{idle:.1f}", f"{rate:,.0f}", f"{busy:,}")
        print(" | ".join(c.rjust(len(h)) for c, h in zip(cells, header, strict=True)))
    print("in progress: deliveries taken and not yet accepted (the worker's smsfleet_jobs_consumed_total less the "
          "accepted events seen here, sampled every 0.2 s); deliveries accepted and awaiting their ack also hold "
          "prefetch slots and are not counted")  # fmt: skip
    for setting, peak, *_ in rows:
        if setting == str(TARGET_CONCURRENCY):
            verdict = "met" if peak <= TARGET_MB else "NOT met"
            print(f"target: peak <= {TARGET_MB} MB at concurrency {TARGET_CONCURRENCY:,}: {peak:.1f} MB, {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
