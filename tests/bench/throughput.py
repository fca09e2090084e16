"""Send throughput: one worker process against the fake SMSC, against a bare consume -> POST -> ack loop.

    .venv/bin/python -m tests.bench.throughput [--jobs 5000] [--rounds 3] [--concurrency 100]
                                               [--slow-jobs 5000] [--slow-concurrency 500] [--compare-counters]

(from the project root, as a module: it imports the fake SMSC from `tests.fakes`)

The worker and the bare loop run in this process and event loop, on a throw-away namespace of the local
broker and Redis, against fake SMSC servers served by child processes (or this loop: `--fake-in-process`);
CPU ms/msg is this process's CPU time per job:

- worker: `run_workers` (send role for `smsc`; every check on: sender lookup, account, expiry,
  suppression, verified phone and caller ID, segments, ledger claim, fleet-wide rate limit, ledger write,
  `accepted` event with confirms, recheck scheduled) for a backlog of `--jobs` jobs to one sender with a
  rate limit of 1e6/s, fake latency 0; msg/s from the first to the last `accepted` event, as counted by the
  broker in a queue nobody consumes (polled every 20 ms), so that the worker has this process to itself.
- bare: the same backlog, consumed from the same queue with the same prefetch, each job decoded and POSTed
  as the same form to the fake's `/sys/send.php`, then acked; msg/s from the first to the last ack.
- slow provider: the worker again, `--slow-concurrency` sends in flight, against a fake answering after
  200 ms; msg/s as for the worker.

The status role is off: rechecks are scheduled but not run, so the numbers are the send path alone.
With `--compare-counters`, each round also runs the worker with the overview's per-minute counters off
(`workers.stats.ENABLED`), before or after the worker with them on (in turn), and their cost is printed
(target <= 3 %).
Rounds alternate (worker, bare, slow; worker, bare, slow ...) so that broker drift hits all three; the
medians are printed with the worker/bare ratio (target >= 0.8) and the slow-provider rate (target >= 1,000
msg/s). Numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import aio_pika
import aiohttp
import msgspec
import redis.asyncio as aioredis

from cli import run
from gateways.transport import FORM
from smsfleet.contracts import SendJob, State, StatusEvent, encode, status_event
from smsfleet.logs import configure
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, declare, delete, message, publish_json
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy, run_workers, stats

FORM_HEADERS = {"Content-Type": FORM}  # the body encoded as the worker's gateways encode it

LOGIN, PASSWORD = "bench", "pw"
_event_decoder = msgspec.json.Decoder(StatusEvent)
_job_decoder = msgspec.json.Decoder(SendJob)


def make_jobs(prefix: str, sender: str, n: int) -> list[SendJob]:
    return [
        SendJob(
            id=f"{prefix}-{i:07d}",
            sender=sender,
            account="acme",
            to=f"+7916{i % 10_000_000:07d}",
            text=f"Your code is {i % 1_000_000:06d}. Do not share it.",
            meta={"campaign": "bench"},
        )
        for i in range(n)
    ]


async def publish(
    connection: aio_pika.abc.AbstractRobustConnection, names: Names, jobs: list[SendJob], kind: str = "smsc"
) -> None:
    """The backlog of gateway `kind`: persistent, mandatory, confirmed, 1,000 in flight."""
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
        exchange = await channel.get_exchange(names.send_exchange, ensure=False)
        slots = asyncio.Semaphore(1000)

        async def one(job: SendJob) -> None:
            async with slots:
                await exchange.publish(message(encode(job), message_id=job.id), f"{kind}.{job.sender}", mandatory=True)

        await asyncio.gather(*(one(j) for j in jobs))


@contextlib.asynccontextmanager
async def accepted_events(
    connection: aio_pika.abc.AbstractRobustConnection, names: Names
) -> AsyncIterator[dict[str, float]]:
    """job id -> the `at` of its first `accepted` event (epoch seconds)."""
    seen: dict[str, float] = {}

    async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = _event_decoder.decode(msg.body)
        seen.setdefault(event.job_id, event.at.timestamp())

    async with connection.channel() as channel:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(names.events_exchange, routing_key=f"status.{State.ACCEPTED}")
        tag = await queue.consume(on_message, no_ack=True)
        yield seen
        await queue.cancel(tag)


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109 - a polling deadline
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} within {timeout:g} s")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def events_count(
    connection: aio_pika.abc.AbstractRobustConnection, names: Names, state: State = State.ACCEPTED
) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """How many `state` events have been published: a queue bound to them that nobody consumes, counted by
    the broker, so that this process (where `worker_round` runs the worker) spends nothing per event. Deleted
    at the end: exclusive, it would live as long as the connection, with its messages, and still bound, so that
    every later round's events would be stored once more in each earlier round's queue."""
    async with connection.channel() as channel:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.events_exchange, routing_key=f"status.{state}")

        async def count() -> int:  # on the AMQP channel: aio-pika's robust channel answers a passive
            # declaration of a queue it declared itself from its cache, with the count of that time
            declared = await (await channel.get_underlay_channel()).queue_declare(queue.name, passive=True)
            return declared.message_count or 0

        try:
            yield count
        finally:
            await queue.delete(if_unused=False, if_empty=False)


async def worker_round(
    settings: Settings,
    connection: aio_pika.abc.AbstractRobustConnection,
    jobs: list[SendJob],
    concurrency: int,
    *,
    kind: str = "smsc",
    policy: SendPolicy | None = None,
) -> tuple[float, float]:
    """msg/s from the first to the last `accepted` event (polled every 20 ms), and this process's CPU ms a job.
    The worker consumes gateway `kind`'s queue with `policy` (default: `concurrency` and the defaults)."""
    names = Names(settings.namespace)
    async with events_count(connection, names) as count:
        await publish(connection, names, jobs, kind)
        policy = policy or SendPolicy(concurrency=concurrency)
        return await timed_workers(settings, count, len(jobs), "jobs accepted", gateways=[kind], policy=policy)


async def timed_workers(
    settings: Settings,
    count: Callable[[], Awaitable[int]],
    n: int,
    what: str,
    *,
    gateways: Sequence[str],
    policy: SendPolicy,
    status: bool = False,
) -> tuple[float, float]:
    """Run the workers (`run_workers`) until `count()` reaches `n` (polled every 20 ms): the rate a second from
    the first to the last, and this process's CPU ms for each of the `n`. `what` names them in an error."""
    stop = asyncio.Event()
    cpu = time.process_time()
    fleet = asyncio.create_task(run_workers(settings, gateways=gateways, status=status, policy=policy, stop=stop))
    deadline = time.monotonic() + 600

    async def until(k: int) -> float:
        while (counted := await count()) < k:
            if fleet.done():
                fleet.result()  # the worker's own error, if it stopped on one
            if fleet.done() or time.monotonic() > deadline:
                raise RuntimeError(f"only {counted} of {n} {what} (worker stopped or timed out)")
            await asyncio.sleep(0.02)
        return time.monotonic()

    try:
        first = await until(1)
        last = await until(n)
        cpu = time.process_time() - cpu
    finally:
        stop.set()
        await fleet
    return (n - 1) / (last - first), cpu * 1000 / n


async def bare_round(
    connection: aio_pika.abc.AbstractRobustConnection,
    names: Names,
    jobs: list[SendJob],
    prefetch: int,
    url: str,
) -> tuple[float, float]:
    """The floor of the same work: consume, decode, POST the same form, ack. No Redis, no events."""
    await publish(connection, names, jobs)
    connector = aiohttp.TCPConnector(limit=max(100, prefetch))
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(job: SendJob) -> None:
            form = {"login": LOGIN, "psw": PASSWORD, "fmt": "3", "charset": "utf-8",
                    "phones": job.to, "mes": job.text}  # fmt: skip
            async with http.post(url + "/sys/send.php", data=urlencode(form).encode(), headers=FORM_HEADERS) as resp:
                await resp.json(content_type=None)

        return await _loop_round(connection, names, len(jobs), prefetch, post)


async def floor_round(
    connection: aio_pika.abc.AbstractRobustConnection, names: Names, jobs: list[SendJob], prefetch: int
) -> tuple[float, float]:
    """What the event contract alone costs a job, with no provider and no Redis: consume, decode, publish its
    `accepted` event (persistent, confirmed, as `Runtime.emit` does), ack. No worker can do a job for less."""
    await publish(connection, names, jobs)
    async with connection.channel(publisher_confirms=True) as events:

        async def emit(job: SendJob) -> None:
            event = status_event(job, State.ACCEPTED, attempt=1, parts=1, provider_message_id="1")
            await publish_json(
                events, names.events_exchange, encode(event), event.routing_key, mandatory=False,
                message_id=f"{job.id}.accepted",
            )  # fmt: skip

        return await _loop_round(connection, names, len(jobs), prefetch, emit)


async def _loop_round(
    connection: aio_pika.abc.AbstractRobustConnection,
    names: Names,
    n: int,
    prefetch: int,
    work: Callable[[SendJob], Awaitable[None]],
) -> tuple[float, float]:
    """Consume `n` jobs of the SMSC send queue: decode, `work`, ack, one by one. msg/s from the first to the last
    ack, and this process's CPU ms a job."""
    done: list[float] = []
    finished = asyncio.Event()
    async with connection.channel() as channel:
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(names.send_queue("smsc"), ensure=False)

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            await work(_job_decoder.decode(msg.body))
            await msg.ack()
            done.append(time.time())
            if len(done) >= n:
                finished.set()

        cpu = time.process_time()
        tag = await queue.consume(on_message)
        await asyncio.wait_for(finished.wait(), 600)
        cpu = time.process_time() - cpu
        await queue.cancel(tag)
    return (len(done) - 1) / (max(done) - min(done)), cpu * 1000 / n


async def create_sender(redis: aioredis.Redis, names: Names, sender_id: str, url: str, rate_limit: float = 1e6) -> None:
    settings = {"login": LOGIN, "password": PASSWORD, "await_delivery_s": 3600, "base_url": url}
    doc = {"id": sender_id, "gateway": "smsc", "accounts": ["acme"], "settings": settings, "rate_limit": rate_limit}
    await SenderRegistry(redis, names).create(parse_sender(doc))


@contextlib.asynccontextmanager
async def fake_smsc(
    latency: float, in_process: bool, *, serve_argv: Sequence[str] = ("tests.bench.throughput",)
) -> AsyncIterator[str]:
    """A fake SMSC's URL: served by a child process (default), so that its CPU is not the worker's.

    The child is `python -m <serve_argv...> --serve-fake LATENCY`: it prints its URL and serves until its stdin
    closes (`serve_fake` here; another bench may pass its own module and arguments)."""
    if in_process:
        async with FakeSmsc(LOGIN, PASSWORD, latency=latency) as fake:
            yield fake.url
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *serve_argv, "--serve-fake", str(latency),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        yield (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
    finally:
        child.stdin.close()  # the child serves until its stdin closes
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()
            await child.wait()


async def serve_fake(latency: float) -> None:
    """Child mode: serve one fake SMSC, print its URL, stop when stdin closes."""
    loop = asyncio.get_running_loop()
    async with FakeSmsc(LOGIN, PASSWORD, latency=latency) as fake:
        print(fake.url, flush=True)
        await loop.run_in_executor(None, sys.stdin.read)


def add_service_args(parser: argparse.ArgumentParser) -> None:
    """`--amqp-url` and `--redis-url`, from SMSFLEET_TEST_AMQP_URL / SMSFLEET_TEST_REDIS_URL or the local defaults."""
    parser.add_argument(
        "--amqp-url", default=os.environ.get("SMSFLEET_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument("--redis-url", default=os.environ.get("SMSFLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))


@contextlib.asynccontextmanager
async def bench_namespace(
    amqp_url: str, redis_url: str
) -> AsyncIterator[tuple[Settings, aio_pika.abc.AbstractRobustConnection, aioredis.Redis]]:
    """A throw-away namespace `bench<hex>`, declared; on exit its queues and exchanges (`topology.delete`) and
    its Redis keys (by scan) are deleted and the connections closed."""
    ns = f"bench{uuid.uuid4().hex[:8]}"
    names = Names(ns)
    settings = Settings(amqp_url=amqp_url, redis_url=redis_url, namespace=ns)
    redis = aioredis.Redis.from_url(redis_url)
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        async with connection.channel() as channel:
            await declare(channel, names)
        yield settings, connection, redis
    finally:
        with contextlib.suppress(Exception):
            async with connection.channel() as channel:
                await delete(channel, names)
        await connection.close()
        keys = [k async for k in redis.scan_iter(match=f"{ns}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100, help="worker concurrency = bare prefetch")
    parser.add_argument("--slow-jobs", type=int, default=5000)
    parser.add_argument("--slow-concurrency", type=int, default=500)
    parser.add_argument("--slow-latency", type=float, default=0.2)
    add_service_args(parser)
    parser.add_argument("--fake-in-process", action="store_true", help="serve the fakes from this event loop")
    parser.add_argument(
        "--compare-counters", action="store_true", help="also run the worker without the overview's counters"
    )
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--serve-fake", type=float, metavar="LATENCY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake is not None:
        asyncio.run(serve_fake(args.serve_fake))
        return
    # the loop the `smsfleet` command runs on (uvloop where installed), or the standard one
    (asyncio.run if args.loop == "asyncio" else run)(bench(args))


async def bench(args: argparse.Namespace) -> None:
    configure("console", "warning")

    keys = ["worker", "uncounted", "bare", "slow"] if args.compare_counters else ["worker", "bare", "slow"]
    rates: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    async with (
        bench_namespace(args.amqp_url, args.redis_url) as (settings, connection, redis),
        fake_smsc(0.0, args.fake_in_process) as fast_url,
        fake_smsc(args.slow_latency, args.fake_in_process) as slow_url,
    ):
        names = Names(settings.namespace)
        await create_sender(redis, names, "fast", fast_url)
        await create_sender(redis, names, "slow", slow_url)
        runs: dict[str, Callable[[int], Any]] = {
            "worker": lambda r: worker_round(
                settings, connection, make_jobs(f"w{r}", "fast", args.jobs), args.concurrency
            ),
            "uncounted": lambda r: uncounted(
                worker_round(settings, connection, make_jobs(f"u{r}", "fast", args.jobs), args.concurrency)
            ),
            "bare": lambda r: bare_round(
                connection, names, make_jobs(f"b{r}", "fast", args.jobs), args.concurrency, fast_url
            ),
            "slow": lambda r: worker_round(
                settings, connection, make_jobs(f"s{r}", "slow", args.slow_jobs), args.slow_concurrency
            ),
        }
        # an untimed warm-up of each, then alternate
        await worker_round(settings, connection, make_jobs("warm-w", "fast", 500), args.concurrency)
        await bare_round(connection, names, make_jobs("warm-b", "fast", 500), args.concurrency, fast_url)
        for r in range(args.rounds):
            order = keys if r % 2 == 0 else [keys[1], keys[0], *keys[2:]]  # with/without counters: each first in turn
            for name in order:
                run = runs[name]
                rate, cpu_ms = await run(r)
                rates[name].append(rate)
                cpu[name].append(cpu_ms)
                print(f"round {r + 1} {name:<7}{rate:>9,.0f} msg/s  {cpu_ms:5.2f} CPU ms/msg", flush=True)

    worker, bare, slow_rate = (statistics.median(rates[k]) for k in ("worker", "bare", "slow"))
    where = "this process" if args.fake_in_process else "a child process"
    print()
    print(f"{args.jobs} jobs x {args.rounds} rounds (slow: {args.slow_jobs}); fakes served by {where}")
    print(f"{'':<48}{'median msg/s':>13}{'CPU ms/msg':>12}   rounds (msg/s)")
    rows = (
        (f"one worker, every check, concurrency {args.concurrency}", "worker"),
        *([("the same, the overview's counters off", "uncounted")] if args.compare_counters else []),
        (f"bare consume -> POST -> ack, prefetch {args.concurrency}", "bare"),
        (f"one worker, {args.slow_latency * 1000:.0f} ms latency, concurrency {args.slow_concurrency}", "slow"),
    )
    for label, key in rows:
        rounds = ", ".join(f"{r:,.0f}" for r in rates[key])
        print(f"{label:<48}{statistics.median(rates[key]):>13,.0f}{statistics.median(cpu[key]):>12.2f}   {rounds}")
    print(f"worker / bare: {worker / bare:.2f} (target >= 0.8)")
    print(f"slow provider: {slow_rate:,.0f} msg/s (target >= 1,000)")
    if args.compare_counters:
        cost = 1 - worker / statistics.median(rates["uncounted"])
        print(f"the overview's counters: {cost * 100:+.1f} % of the worker's msg/s (target <= 3 %)")


async def uncounted(round_: Awaitable[tuple[float, float]]) -> tuple[float, float]:
    """A worker round with the overview's per-minute counters off (`workers.stats.ENABLED`)."""
    stats.ENABLED = False
    try:
        return await round_
    finally:
        stats.ENABLED = True


if __name__ == "__main__":
    main()
