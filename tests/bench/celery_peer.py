"""Celery peer: the send benchmark's work done the way a team would do it with Celery, for comparison.

    .venv/bin/python -m tests.bench.celery_peer [--jobs 5000] [--slow-jobs 2000] [--rounds 3]
                                                [--fast-concurrency 2,16] [--slow-concurrency 32,100]

(from the project root; needs the bench extra: `pip install -e '.[bench]'`)

One Celery task per SMS (`celery_app`): the jobs of `throughput.make_jobs`, each sent by a task that POSTs the
same form as `throughput`'s bare loop with a `requests.Session` to the same fake SMSC (served by a child
process), parses the JSON reply and raises for `autoretry_for` on an error. The worker is Celery's own, a
subprocess started for each round of each setting:

    celery -A tests.bench.celery_app worker --pool prefork --concurrency C --prefetch-multiplier 1
           --loglevel WARNING --without-gossip --without-mingle --without-heartbeat -Q <queue>

with `task_acks_late`, `task_reject_on_worker_lost`, `worker_prefetch_multiplier=1` and `task_ignore_result`,
on a throw-away queue (a classic durable queue, Celery's default, and its direct exchange) that only this run
uses, deleted at the end.

A round: a fresh worker; when it is ready and its CPU is quiet, its process tree is paused (SIGSTOP) while the
backlog is published with `apply_async`, then resumed, so that it starts on a full queue as the smsfleet
worker does in `throughput`, and neither its start nor the publishing counts. Measured:
- msg/s: from the first to the last message accepted, on the fake's clock: the child that serves the fake also
  serves `/stats` (messages and requests so far; the first and last acceptance time of those after a mark);
- CPU ms/msg: user + system CPU of the worker's process tree (main process and pool children, psutil) from the
  resume until its CPU is quiet again after the last send (its acks included), per job;
- worker MiB: the tree's own memory (USS, what stopping it would free) after the last send.
A round that needed more requests than jobs (retries) or left messages in the queue prints the worker's warnings
(each retry and its reason among them); none are expected.

Settings: prefork concurrency 2 (the cores) and 16 against a fake answering at once, 32 and 100 against one
answering after 200 ms. Rounds alternate the settings; medians are printed. Numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import aiohttp
import msgspec
from aiohttp import web

from smsfleet.contracts import SendJob
from tests.bench.throughput import LOGIN, PASSWORD, fake_smsc, make_jobs, until
from tests.fakes._serve import serve
from tests.fakes.smsc import FakeSmsc

try:
    import psutil
    from celery import __version__ as celery_version

    from tests.bench.celery_app import READY, SETTINGS, TASK, Config, make_app
except ImportError as missing:  # the bench extra is not installed: main() says so
    MISSING: str | None = missing.name
else:
    MISSING = None

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.bench.celery_peer"
WORKER_ARGS = ("--pool", "prefork", "--prefetch-multiplier", "1", "--loglevel", "WARNING",
               "--without-gossip", "--without-mingle", "--without-heartbeat")  # fmt: skip


# --- the fake SMSC with /stats, in a child process -----------------------------------------------------------------


class Stats(msgspec.Struct, frozen=True):
    sent: int  # messages the fake accepted, all told
    requests: int  # requests it received, all told (retries and refusals included)
    first: float | None = None  # the first and last acceptance time (epoch s) of the messages after `since`
    last: float | None = None


async def serve_fake(latency: float) -> None:
    """Child mode: a fake SMSC and, on a port of its own, `/stats?since=N`; prints both URLs on one line."""
    loop = asyncio.get_running_loop()
    async with FakeSmsc(LOGIN, PASSWORD, latency=latency) as fake:

        async def stats(request: web.Request) -> web.Response:
            # messages are appended as they are accepted, and a message's `updated` is that moment (just before
            # the reply) as long as nothing changes its status, which nothing here does
            since, body = int(request.query.get("since", "0")), Stats(len(fake.messages), len(fake.requests))
            if since < len(fake.messages):
                body = msgspec.structs.replace(body, first=fake.messages[since].updated, last=fake.messages[-1].updated)
            return web.Response(body=msgspec.json.encode(body), content_type="application/json")

        stats_app = web.Application()
        stats_app.router.add_get("/stats", stats)
        runner, stats_url = await serve(stats_app)
        try:
            print(fake.url, stats_url + "/stats", flush=True)
            await loop.run_in_executor(None, sys.stdin.read)
        finally:
            await runner.cleanup()


class Fake(msgspec.Struct, frozen=True):
    name: str
    latency: float
    url: str
    stats_url: str

    async def stats(self, http: aiohttp.ClientSession, since: int = 0) -> Stats:
        async with http.get(self.stats_url, params={"since": since}) as response:
            return msgspec.json.decode(await response.read(), type=Stats)


# --- the worker subprocess -----------------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants (a Celery worker: its main process and pool processes)."""
    main = psutil.Process(pid)
    return [main, *main.children(recursive=True)]


def signal_tree(pid: int, signum: int) -> None:
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (live, and reaped by them)."""
    total = 0.0
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


async def quiet(pid: int, timeout: float = 15.0) -> None:  # noqa: ASYNC109 - a polling deadline
    """Until the tree used under 2 ms of CPU in 100 ms (or `timeout` passed)."""
    deadline = time.monotonic() + timeout
    before = tree_cpu(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = tree_cpu(pid)
        if now - before < 0.002:
            return
        before = now


def tree_uss(pid: int) -> float:
    """Memory of a process and its descendants that is theirs alone (USS, MiB: what stopping them frees)."""
    total = 0
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_full_info().uss
    return total / 2**20


def read_log(log: IO[str]) -> str:
    """What the worker wrote so far (read by name: the worker's writes share the file's offset)."""
    return Path(log.name).read_text()


class Peer:
    """The bench's side of Celery: its app for a throw-away queue, the queue itself, and workers for it."""

    def __init__(self, broker: str) -> None:
        self.config = Config(broker, f"celery-peer-{uuid.uuid4().hex[:8]}", smsc_login=LOGIN, smsc_password=PASSWORD)
        self.queue = self.config.queue
        self.app = make_app(self.config)

    def publish(self, jobs: list[SendJob]) -> None:
        task = self.app.tasks[TASK]
        with self.app.producer_or_acquire() as producer:
            for job in jobs:
                task.apply_async((msgspec.to_builtins(job),), producer=producer)

    def purge(self) -> int:
        """Empty the queue; how many messages it held (none, after a round that went well)."""
        with self.app.connection_for_write() as connection:
            return int(connection.default_channel.queue_purge(queue=self.queue) or 0)

    def delete(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue=self.queue)
            connection.default_channel.exchange_delete(exchange=self.queue)

    @contextlib.asynccontextmanager
    async def worker(self, concurrency: int, fake: Fake, log: IO[str]) -> AsyncIterator[int]:
        """A Celery worker sending to `fake`, logging to `log`, ready and quiet: its pid.

        On exit: SIGTERM (warm shutdown: running tasks finish and are acked), SIGKILL to the tree after 30 s."""
        env = os.environ | dataclasses.replace(self.config, smsc_url=fake.url).env()
        argv = ("-m", "celery", "-A", "tests.bench.celery_app", "worker", "--concurrency", str(concurrency),
                *WORKER_ARGS, "-Q", self.queue, "-n", f"{self.queue}-{fake.name}-c{concurrency}@%h")  # fmt: skip
        worker = await asyncio.create_subprocess_exec(sys.executable, *argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            try:
                await until(lambda: READY in read_log(log) or worker.returncode is not None, 120, "ready")
                if worker.returncode is not None:
                    raise RuntimeError(f"the celery worker exited with {worker.returncode}")
            except (TimeoutError, RuntimeError):
                print(read_log(log)[-3000:], file=sys.stderr)
                raise
            await quiet(worker.pid)
            yield worker.pid
        finally:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                signal_tree(worker.pid, signal.SIGCONT)  # in case it was left paused
                worker.terminate()
            try:
                await asyncio.wait_for(worker.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(psutil.NoSuchProcess):
                    signal_tree(worker.pid, signal.SIGKILL)
                await worker.wait()


# --- a round -------------------------------------------------------------------------------------------------------


def unique_jobs(prefix: str, sender: str, n: int) -> list[SendJob]:
    """`make_jobs`, each text naming its job: SMSC (and its fake) refuses a send request identical to one of the
    last minute (error 9), and these tasks send no `id`, so the same numbers and texts in the next round, or
    after the warm-up, would be refused."""
    return [msgspec.structs.replace(job, text=f"{job.text} ({job.id})") for job in make_jobs(prefix, sender, n)]


class Result(msgspec.Struct, frozen=True):
    rate: float  # msg/s at the fake, first to last accepted
    cpu_ms: float  # the worker tree's CPU per job
    uss_mib: float  # the worker tree's own memory after the last send
    extra: int  # requests beyond one per job (retries, duplicates): none expected


async def celery_round(
    peer: Peer, fake: Fake, http: aiohttp.ClientSession, jobs: list[SendJob], concurrency: int
) -> Result:
    start = await fake.stats(http)
    with tempfile.NamedTemporaryFile("w+", prefix="celery-peer-", suffix=".log") as log:
        async with peer.worker(concurrency, fake, log) as pid:
            signal_tree(pid, signal.SIGSTOP)
            try:
                peer.publish(jobs)
                cpu = tree_cpu(pid)
            finally:
                signal_tree(pid, signal.SIGCONT)
            deadline = time.monotonic() + 60 + len(jobs) / 20
            while (stats := await fake.stats(http, start.sent)).sent - start.sent < len(jobs):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{stats.sent - start.sent} of {len(jobs)} sent")
                await asyncio.sleep(0.05)
            await quiet(pid)
            cpu = tree_cpu(pid) - cpu
            uss = tree_uss(pid)
        extra = stats.requests - start.requests - len(jobs)
        if (left := peer.purge()) or extra:  # not expected: show why, from the worker's log
            notable = [line for line in read_log(log).splitlines() if "WARNING" in line or "ERROR" in line]
            print(f"{left} messages left in the queue, {extra} extra requests; the worker's log:", file=sys.stderr)
            print("\n".join(line for line in notable if READY not in line), file=sys.stderr)
    assert stats.first is not None
    assert stats.last is not None
    return Result((len(jobs) - 1) / (stats.last - stats.first), cpu * 1000 / len(jobs), uss, extra)


def concurrencies(text: str) -> list[int]:
    return [int(c) for c in text.split(",")]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs a round against the fast fake")
    parser.add_argument("--slow-jobs", type=int, default=2000, help="jobs a round against the slow fake")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fast-concurrency", type=concurrencies, default=[os.cpu_count() or 2, 16], metavar="C,C")
    parser.add_argument("--slow-concurrency", type=concurrencies, default=[32, 100], metavar="C,C")
    parser.add_argument("--slow-latency", type=float, default=0.2)
    parser.add_argument(
        "--amqp-url", default=os.environ.get("SMSFLEET_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument("--serve-fake", type=float, metavar="LATENCY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake is not None:
        await serve_fake(args.serve_fake)
        return
    if MISSING:
        sys.exit(f"celery_peer: {MISSING} is not installed; install the bench extra: pip install -e '.[bench]'")

    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # so that the cleanup runs
    peer = Peer(args.amqp_url)
    results: dict[str, list[Result]] = {}
    try:
        async with (
            fake_smsc(0.0, False, serve_argv=(MODULE,)) as fast_urls,
            fake_smsc(args.slow_latency, False, serve_argv=(MODULE,)) as slow_urls,
            aiohttp.ClientSession() as http,
        ):
            fast = Fake("fast", 0.0, *fast_urls.split())
            slow = Fake("slow", args.slow_latency, *slow_urls.split())
            settings = [(fast, c, args.jobs) for c in args.fast_concurrency]
            settings += [(slow, c, args.slow_jobs) for c in args.slow_concurrency]
            # an untimed warm-up, then alternate
            await celery_round(peer, fast, http, unique_jobs("warm", "fast", 300), settings[0][1])
            for r in range(args.rounds):
                for fake, concurrency, n in settings:
                    key = f"{fake.name} c={concurrency}"
                    jobs = unique_jobs(f"{fake.name}{concurrency}-{r}", fake.name, n)
                    result = await celery_round(peer, fake, http, jobs, concurrency)
                    results.setdefault(key, []).append(result)
                    extra = f"  ({result.extra} extra requests)" if result.extra else ""
                    print(f"round {r + 1} {key:<12}{result.rate:>9,.0f} msg/s  {result.cpu_ms:5.2f} CPU ms/msg"
                          f"  {result.uss_mib:6,.0f} MiB{extra}", flush=True)  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            peer.delete()

    print()
    print(f"Celery {celery_version}, prefork pool, one task per SMS, a requests.Session per pool process")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in SETTINGS.items()) + "; result backend: none")
    print("worker: --loglevel WARNING --without-gossip --without-mingle --without-heartbeat, remote control off; "
          "a classic durable queue; autoretry_for=(RequestException, SmscError), backoff")  # fmt: skip
    print(f"{args.jobs} jobs x {args.rounds} rounds (slow: {args.slow_jobs}); fakes served by child processes; "
          "msg/s first -> last accepted at the fake;")  # fmt: skip
    print("CPU and own memory (USS, after the last send) of the worker's process tree")
    print(f"{'setting':<46}{'median msg/s':>13}{'CPU ms/msg':>12}{'worker MiB':>12}   rounds (msg/s)")
    for fake, concurrency, _ in settings:
        rs = results[f"{fake.name} c={concurrency}"]
        label = f"prefork concurrency {concurrency}, fake latency {fake.latency * 1000:.0f} ms"
        rate, cpu_ms, uss = (statistics.median(getattr(r, f) for r in rs) for f in ("rate", "cpu_ms", "uss_mib"))
        print(f"{label:<46}{rate:>13,.0f}{cpu_ms:>12.2f}{uss:>12,.0f}   {', '.join(f'{r.rate:,.0f}' for r in rs)}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        sys.exit("celery_peer: stopped by SIGTERM (the worker stopped, the queue deleted)")
