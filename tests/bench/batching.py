"""Batched provider requests against one request per SMS, side by side in one run.

    .venv/bin/python -m tests.bench.batching [--jobs 10000] [--rounds 3] [--concurrency 2000]
                                             [--slow-jobs 10000] [--pm-jobs 20000]

(from the project root, as a module.) One worker process (`run_workers`, send role, every check on) in this
process, on a throw-away namespace of the local broker and Redis; every fake provider is served by a child
process, so its CPU is not the worker's. Rounds alternate the variants, so that broker drift hits them all:

- bare: `throughput.bare_round`, the floor of one request per SMS: consume, decode, POST, ack (fake SMSC);
- events floor: `throughput.floor_round`, the floor of the event contract: consume, decode, publish the job's
  `accepted` event (confirmed), ack; no provider, no Redis. No worker that gives each job its own event can
  beat it, batched or not: its ratio to bare bounds what batching can gain against bare;
- bulksms batched / unbatched: the worker against the fake BulkSMS with a linger of 5 ms / 0 (one request a
  job), sender rate 1e6/s, fake latency 0;
- slow batched / unbatched: the same against a fake answering after 200 ms;
- playmobile: one Play Mobile sender at the default 49 requests/s, batched, fake latency 0; besides msg/s, the
  busiest 1-s window of requests the fake saw (target: never above 49; with how late the fake's loop ran, which
  stamps requests late: under load, ones that arrived apart may look closer) and messages per request;
- playmobile x2: the same sender drained by two `smsfleet worker --gateway playmobile` processes (what
  `--processes 2` runs), sharing its 49 requests/s; CPU ms/msg is theirs, summed.

msg/s is from the first to the last `accepted` event (counted by the broker); CPU ms/msg is this process's CPU
time a job (the worker's, but for playmobile x2); broker and Redis ms/msg are the CPU time a job of the local
`beam.smp` and `redis-server` processes (Linux; every process of that name) over the whole round, publishing
the jobs included: what else each job costs the machine. Medians and ratios are printed; nothing is asserted. Targets
(issue #18): batched >= 1.5x bare; Play Mobile >= 2,000 SMS/s with no window above 49; slow batched >= 2,000
msg/s, unbatched >= 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from cli import run
from smsfleet.logs import configure
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.topology import Names
from tests.bench.scaling import one_run
from tests.bench.throughput import (
    LOGIN,
    PASSWORD,
    add_service_args,
    bare_round,
    bench_namespace,
    floor_round,
    make_jobs,
    worker_round,
)
from tests.bench.throughput import create_sender as smsc_sender
from tests.fakes.bulksms import FakeBulksms
from tests.fakes.playmobile import FakePlaymobile
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy

FAKES: dict[str, Callable[[float], Any]] = {
    "smsc": lambda latency: FakeSmsc(LOGIN, PASSWORD, latency=latency),
    "bulksms": lambda latency: FakeBulksms(LOGIN, PASSWORD, latency=latency),
    "playmobile": lambda latency: FakePlaymobile(LOGIN, PASSWORD, latency=latency),
}


class Fake:
    """A fake provider served by a child process (`--serve KIND LATENCY`): its URL, and its counts on demand."""

    def __init__(self, child: asyncio.subprocess.Process, url: str) -> None:
        self.child, self.url = child, url

    async def stats(self) -> dict[str, Any]:
        assert self.child.stdin is not None
        assert self.child.stdout is not None
        self.child.stdin.write(b"stats\n")
        return dict(json.loads(await self.child.stdout.readline()))


@contextlib.asynccontextmanager
async def fake(kind: str, latency: float) -> AsyncIterator[Fake]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.batching", "--serve", kind, str(latency),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        yield Fake(child, (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip())
    finally:
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()
            await child.wait()


async def serve(kind: str, latency: float) -> None:
    """Child mode: serve the fake, print its URL; on each `stats` line print its counts; stop at EOF."""
    loop = asyncio.get_running_loop()
    lag = [0.0]  # the worst lateness of a 5-ms timer since the last `stats`: how late a request may be stamped

    async def watch() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lag[0] = max(lag[0], time.monotonic() - before - 0.005)

    async with FAKES[kind](latency) as provider:
        watcher = asyncio.create_task(watch())
        print(provider.url, flush=True)
        while await loop.run_in_executor(None, sys.stdin.readline):
            busiest = provider.busiest_second() if isinstance(provider, FakePlaymobile) else 0
            print(json.dumps({"requests": len(provider.requests), "busiest": busiest, "lag": lag[0]}), flush=True)
            lag[0] = 0.0
        watcher.cancel()


def service_cpu() -> tuple[float, float]:
    """CPU seconds so far of every local `beam.smp` (RabbitMQ) and `redis-server` process (0 where none is found
    or /proc is missing)."""
    totals = {"beam.smp": 0.0, "redis-server": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            head, _, rest = stat.read_text().rpartition(")")
            name = head.partition("(")[2]
            if name in totals:
                fields = rest.split()
                totals[name] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return totals["beam.smp"], totals["redis-server"]


async def create_senders(redis: aioredis.Redis, names: Names, urls: dict[str, str]) -> None:
    registry = SenderRegistry(redis, names)
    bulk = {"login": LOGIN, "password": PASSWORD, "await_delivery_s": 3600}
    docs = [
        {"id": "fast", "gateway": "bulksms", "settings": bulk | {"base_url": urls["fast"]}, "rate_limit": 1e6},
        {"id": "slow", "gateway": "bulksms", "settings": bulk | {"base_url": urls["slow"]}, "rate_limit": 1e6},
        {"id": "pm", "gateway": "playmobile", "settings": {"user_id": LOGIN, "password": PASSWORD,
                                                           "base_url": urls["pm"]}},
    ]  # fmt: skip
    for doc in docs:
        await registry.create(parse_sender({**doc, "accounts": ["acme"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2000, help="worker concurrency = bare prefetch")
    parser.add_argument("--slow-jobs", type=int, default=10_000)
    parser.add_argument("--pm-jobs", type=int, default=20_000)
    parser.add_argument("--linger-ms", type=float, default=5.0)
    parser.add_argument("--only", help="run only these variants (comma-separated, e.g. 'bare,playmobile')")
    add_service_args(parser)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "LATENCY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve[0], float(args.serve[1])))
        return
    run(bench(args))


async def bench(args: argparse.Namespace) -> None:
    configure("console", "warning")
    batched = SendPolicy(concurrency=args.concurrency, linger_s=args.linger_ms / 1000)
    unbatched = SendPolicy(concurrency=args.concurrency, linger_s=0)
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    services: dict[str, list[tuple[float, float]]] = {}  # broker and Redis CPU ms a job
    windows: list[int] = []
    per_request: list[float] = []
    windows_x2: list[int] = []
    lags: list[float] = []
    lags_x2: list[float] = []
    per_request_x2: list[float] = []
    async with (
        bench_namespace(args.amqp_url, args.redis_url) as (settings, connection, redis),
        fake("smsc", 0.0) as smsc,
        fake("bulksms", 0.0) as fast,
        fake("bulksms", 0.2) as slow,
        fake("playmobile", 0.0) as pm,
    ):
        names = Names(settings.namespace)
        await create_senders(redis, names, {"fast": fast.url, "slow": slow.url, "pm": pm.url})
        await smsc_sender(redis, names, "smsc", smsc.url)

        async def playmobile(r: int) -> tuple[float, float]:
            before = await pm.stats()
            jobs = make_jobs(f"p{r}", "pm", args.pm_jobs)
            result = await worker_round(settings, connection, jobs, 0, kind="playmobile", policy=batched)
            after = await pm.stats()
            windows.append(after["busiest"])
            lags.append(after["lag"])
            per_request.append(args.pm_jobs / (after["requests"] - before["requests"]))
            return result

        async def playmobile_x2(r: int) -> tuple[float, float]:
            before = await pm.stats()
            flags = [
                "--gateway",
                "playmobile",
                "--concurrency",
                str(args.concurrency),
                "--linger-ms",
                f"{args.linger_ms:g}",
            ]
            rate, _, _, cpu_ms = await one_run(
                settings,
                connection,
                f"q{r}",
                jobs=args.pm_jobs,
                processes=2,
                flags=flags,
                sender="pm",
                kind="playmobile",
            )
            after = await pm.stats()
            windows_x2.append(after["busiest"])
            lags_x2.append(after["lag"])
            per_request_x2.append(args.pm_jobs / (after["requests"] - before["requests"]))
            return rate, cpu_ms

        runs: dict[str, Callable[[int], Any]] = {
            "bare": lambda r: bare_round(
                connection, names, make_jobs(f"b{r}", "smsc", args.jobs), args.concurrency, smsc.url
            ),
            "events floor": lambda r: floor_round(
                connection, names, make_jobs(f"e{r}", "smsc", args.jobs), args.concurrency
            ),
            "bulksms batched": lambda r: worker_round(
                settings, connection, make_jobs(f"f{r}", "fast", args.jobs), 0, kind="bulksms", policy=batched
            ),
            "bulksms unbatched": lambda r: worker_round(
                settings, connection, make_jobs(f"u{r}", "fast", args.jobs), 0, kind="bulksms", policy=unbatched
            ),
            "slow batched": lambda r: worker_round(
                settings, connection, make_jobs(f"s{r}", "slow", args.slow_jobs), 0, kind="bulksms", policy=batched
            ),
            "slow unbatched": lambda r: worker_round(
                settings, connection, make_jobs(f"t{r}", "slow", args.slow_jobs), 0, kind="bulksms", policy=unbatched
            ),
            "playmobile": playmobile,
            "playmobile x2": playmobile_x2,
        }
        if args.only:
            runs = {name: one for name, one in runs.items() if name in args.only.split(",")}
        await bare_round(connection, names, make_jobs("warm-b", "smsc", 500), args.concurrency, smsc.url)
        await worker_round(settings, connection, make_jobs("warm-w", "fast", 500), 0, kind="bulksms", policy=batched)
        for r in range(args.rounds):
            for name, one in runs.items():
                before = service_cpu()
                rate, cpu_ms = await one(r)
                n = args.pm_jobs if name.startswith("playmobile") else args.slow_jobs if "slow" in name else args.jobs
                broker, redis_cpu = ((after - b) * 1000 / n for after, b in zip(service_cpu(), before, strict=True))
                rates.setdefault(name, []).append(rate)
                cpu.setdefault(name, []).append(cpu_ms)
                services.setdefault(name, []).append((broker, redis_cpu))
                print(f"round {r + 1} {name:<18}{rate:>9,.0f} msg/s  {cpu_ms:5.2f} CPU ms/msg  "
                      f"(broker {broker:.2f}, Redis {redis_cpu:.2f})", flush=True)  # fmt: skip

    median = {k: statistics.median(v) for k, v in rates.items()}
    print()
    print(f"{args.jobs} jobs x {args.rounds} rounds (slow: {args.slow_jobs}, Play Mobile: {args.pm_jobs}); "
          f"concurrency {args.concurrency}, linger {args.linger_ms:g} ms")  # fmt: skip
    print(f"{'':<20}{'median msg/s':>13}{'CPU ms/msg':>12}{'broker':>8}{'Redis':>7}   rounds (msg/s)")
    for name, values in rates.items():
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        broker, redis_cpu = (statistics.median(column) for column in zip(*services[name], strict=True))
        print(f"{name:<20}{median[name]:>13,.0f}{statistics.median(cpu[name]):>12.2f}{broker:>8.2f}{redis_cpu:>7.2f}"
              f"   {rounds}")  # fmt: skip
    if {"bare", "events floor"} <= median.keys():
        print(f"events floor / bare: {median['events floor'] / median['bare']:.2f} (the most a worker can reach)")
    if {"bare", "bulksms batched", "bulksms unbatched"} <= median.keys():
        print(f"bulksms batched / bare: {median['bulksms batched'] / median['bare']:.2f} (target >= 1.5)")
        print(f"bulksms unbatched / bare: {median['bulksms unbatched'] / median['bare']:.2f}")
    if {"slow batched", "slow unbatched"} <= median.keys():
        print(f"slow batched: {median['slow batched']:,.0f} msg/s (target >= 2,000); "
              f"unbatched {median['slow unbatched']:,.0f} (target >= 1,000)")  # fmt: skip
    for name, busiest, sizes, lag in (
        ("playmobile", windows, per_request, lags),
        ("playmobile x2", windows_x2, per_request_x2, lags_x2),
    ):
        if name in median:  # a fake whose loop lags L s stamps requests that arrived apart up to L s closer
            print(f"{name} at 49 requests/s: {median[name]:,.0f} SMS/s (target >= 2,000), "
                  f"{statistics.median(sizes):.0f} messages a request, busiest 1-s window {max(busiest)} "
                  f"requests (limit 49; the fake's loop lagged up to {max(lag) * 1000:.0f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
