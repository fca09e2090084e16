"""Rate-limit precision: two senders at 49 and 200 req/s at once, shared by 4 worker processes.

    .venv/bin/python -m tests.bench.rate_precision [--rates 49,200] [--seconds 20] [--processes 4]
                                                   [--concurrency N] [--margin-ms 30]

(from the project root, as a module: it imports the helpers of `tests.bench.throughput`)

On a throw-away namespace of the local broker and Redis: one SMSC sender per rate (`rate_limit` = that rate,
`await_delivery_s` 3600 so that no status lookup shares the rate), each against a fake SMSC of its own, served
by a child process of its own whose event loop does nothing but serve it: the fake stamps the arrival of each
request (`time.time()` when its handler runs, as `TimedRequests` does in the chaos test) and watches its own
loop's lag. A backlog of rate x `--seconds` jobs per sender (980 and 4,000 by default), the two interleaved,
is published before `--processes` real workers start (`python -m smsfleet worker --gateway smsc --role
send`); when every job has an `accepted` event they are stopped with SIGTERM, the fakes are stopped, and each
writes its send times to a file.

Per sender: send requests; the most in any closed 1-s window (`max_per_window`, as the chaos test counts);
the achieved rate (n - 1) / (last - first) and its share of the limit (the limiter's design share is
1 / (1 + margin), 97 % at the default 30 ms: it spaces sends that much wider than 1/rate so that 30 ms of
jitter cannot put rate + 1 sends in a window; `--margin-ms` sets the workers' SMSFLEET_RATE_MARGIN_MS); and
whether any window exceeded the limit. The worst lag of a fake's loop bounds how late its stamps can be.
Numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from smsfleet.contracts import SendJob
from smsfleet.logs import configure
from smsfleet.topology import Names
from tests.bench.fleet import WorkerProcesses
from tests.bench.throughput import (
    LOGIN,
    PASSWORD,
    accepted_events,
    add_service_args,
    bench_namespace,
    create_sender,
    fake_smsc,
    make_jobs,
    publish,
)
from tests.chaos.harness import SEND_PHP, TimedRequests, loop_lag, max_per_window
from tests.fakes.smsc import FakeSmsc


class FakeReport(msgspec.Struct):
    send_times: list[float]
    other_requests: int
    messages: int
    worst_lag_s: float


async def serve_timed_fake(latency: float, times_file: Path) -> None:
    """Child mode: serve one fake SMSC that stamps each request, print its URL, and when stdin closes write
    its send times (and its loop's worst lag) to `times_file`."""
    loop = asyncio.get_running_loop()
    async with FakeSmsc(LOGIN, PASSWORD, latency=latency) as fake, loop_lag() as lag:
        fake.requests = TimedRequests()
        print(fake.url, flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
    requests = fake.requests
    assert isinstance(requests, TimedRequests)
    sends = [t for t, (path, _) in zip(requests.times, requests, strict=True) if path == SEND_PHP]
    report = FakeReport(sends, len(requests) - len(sends), len(fake.messages), lag[0])
    await asyncio.to_thread(times_file.write_bytes, msgspec.json.encode(report))


def interleave(*batches: list[SendJob]) -> list[SendJob]:
    """The batches merged in proportion, so that the queue holds both senders' jobs from its head to its tail."""
    keyed = [(i / len(batch), b, job) for b, batch in enumerate(batches) for i, job in enumerate(batch)]
    return [job for *_, job in sorted(keyed, key=lambda k: k[:2])]


def windows_over(times: list[float], limit: float) -> int:
    """How many closed 1-s windows starting at a send hold more than `limit` sends (`times` sorted)."""
    return sum(bisect.bisect_right(times, t + 1.0) - i > limit for i, t in enumerate(times))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="49,200", help="one sender per rate (req/s), comma-separated")
    parser.add_argument("--seconds", type=float, default=20, help="backlog per sender: rate x this many seconds")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, help="the workers' --concurrency (default: theirs)")
    parser.add_argument("--margin-ms", type=float, default=30.0, help="the workers' SMSFLEET_RATE_MARGIN_MS")
    add_service_args(parser)
    parser.add_argument("--serve-fake", type=float, metavar="LATENCY", help=argparse.SUPPRESS)
    parser.add_argument("--times-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake is not None:
        await serve_timed_fake(args.serve_fake, args.times_file)
        return
    configure("console", "warning")
    limits = {f"r{rate:g}": rate for rate in map(float, args.rates.split(","))}  # sender id -> req/s
    flags = ["--concurrency", str(args.concurrency)] if args.concurrency else []

    with tempfile.TemporaryDirectory(prefix="smsfleet-bench-") as tmp:
        files = {sender: Path(tmp) / f"{sender}.json" for sender in limits}
        batches = {sender: make_jobs(sender, sender, round(rate * args.seconds)) for sender, rate in limits.items()}
        backlog = interleave(*batches.values())
        async with (
            bench_namespace(args.amqp_url, args.redis_url) as (settings, connection, redis),
            contextlib.AsyncExitStack() as fakes,
        ):
            names = Names(settings.namespace)
            for sender, rate in limits.items():
                serve_argv = ("tests.bench.rate_precision", "--times-file", str(files[sender]))
                url = await fakes.enter_async_context(fake_smsc(0.0, in_process=False, serve_argv=serve_argv))
                await create_sender(redis, names, sender, url, rate_limit=rate)
            async with accepted_events(connection, names) as seen:
                await publish(connection, names, backlog)
                with WorkerProcesses(settings) as fleet:
                    fleet.env["SMSFLEET_RATE_MARGIN_MS"] = f"{args.margin_ms:g}"
                    started = time.monotonic()
                    for _ in range(args.processes):
                        fleet.start(*flags)
                    timeout = args.seconds * 3 + 60
                    await fleet.wait_until(lambda: len(seen) >= len(backlog), timeout, "every job accepted")
                    took = time.monotonic() - started
                    await fleet.stop()
            await fakes.aclose()  # each fake writes its file as it stops
        reports = {sender: msgspec.json.decode(path.read_bytes(), type=FakeReport) for sender, path in files.items()}

    print(f"{len(backlog):,} jobs ({', '.join(f'{len(b):,} to {s}' for s, b in batches.items())}), interleaved; "
          f"{args.processes} worker processes, concurrency {args.concurrency or 'default (100)'}, "
          f"rate margin {args.margin_ms:g} ms; "
          f"every job accepted {took:.1f} s after the spawn")  # fmt: skip
    header = ("sender", "limit/s", "requests", "span s", "max in 1-s window", "achieved/s", "of limit", "exceeded",
              "fake's loop lag ms", "max in (1 s - lag)")  # fmt: skip
    print(" | ".join(header))
    for sender, report in reports.items():
        rate = limits[sender]
        times = sorted(report.send_times)
        span = times[-1] - times[0]
        achieved = (len(times) - 1) / span
        worst = max_per_window(times)
        over = windows_over(times, rate)
        surely = max_per_window(times, 1.0 - report.worst_lag_s)
        cells = (sender, f"{rate:g}", f"{len(times):,}", f"{span:.1f}", f"{worst}", f"{achieved:.2f}",
                 f"{achieved / rate:.1%}", f"YES ({over} window{'s' * (over > 1)})" if over else "no",
                 f"<= {report.worst_lag_s * 1000:.1f}", f"{surely}")  # fmt: skip
        print(" | ".join(c.rjust(len(h)) for c, h in zip(cells, header, strict=True)))
        if report.other_requests or report.messages != len(times):
            print(f"  {sender}: {report.other_requests} requests other than sends, {report.messages} messages created")
    print("max in 1-s window: the most send requests stamped by the fake in any closed window [t, t + 1]; exceeded: "
          "how many of the windows starting at a send held more than the limit; achieved: (n - 1) / (last - first), "
          f"the limiter's design share being 1 / (1 + margin) = {1 / (1 + args.margin_ms / 1000):.1%}; "
          "max in (1 s - lag): a stamp is late by about its "
          "loop's lag at most, so the sends stamped within 1 s - lag arrived within 1 s even so "
          "(a lower bound)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
