"""The receiver's CPU a delivery report: provider callbacks POSTed to the real receiver, stored in the broker.

    .venv/bin/python -m tests.bench.receiver [--posts 4000] [--per-post 1,20] [--concurrency 50] [--rounds 3]

On a throw-away namespace of the local broker and Redis: an Infobip sender, the real receiver (`webhooks`,
rate limit off) on a local port in this process, and a child process that POSTs Infobip delivery reports to
the sender's receiving URL (`{"results": [...]}`, `--per-post` reports a POST), `--concurrency` at a time, as
a provider's callback workers do. Each report becomes one confirmed publish to `<ns>.status`, which nobody
consumes here; the count there is checked at the end of each round. CPU ms a report is this process's CPU
time (the receiver's: the posting is the child's) over the round, divided by the reports; reports/s from the
first POST to the last reply. Rounds alternate the `--per-post` variants. On uvloop, as every `smsfleet` command
runs (`cli.run`). Numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from cli import run
from smsfleet.logs import configure
from smsfleet.senders import SenderRegistry, parse_sender, receiving_url
from smsfleet.topology import Names
from tests.bench.throughput import add_service_args, bench_namespace
from tests.fakes.infobip import FakeSms
from webhooks import Options, Receiver, build_app


def body(first: int, n: int) -> bytes:
    reports = [
        FakeSms(f"{first + i}", "bulk", "79161234567", "ACME", "hi", v3=False, sms={}, parts=1, status=5).report()
        for i in range(n)
    ]
    return json.dumps({"results": reports}).encode()


def post_all(url: str, posts: int, per_post: int, concurrency: int, elapsed: multiprocessing.Queue[float]) -> None:
    """The provider's side, in a child process: `posts` POSTs, `concurrency` at a time."""
    bodies = [body(i * per_post, per_post) for i in range(posts)]

    async def post() -> None:
        async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
            todo = iter(bodies)

            async def worker() -> None:
                for data in todo:
                    async with http.post(url, data=data) as reply:
                        if reply.status != 200:
                            raise RuntimeError(f"{reply.status}: {await reply.text()}")

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed.put(time.perf_counter() - started)

    asyncio.run(post())


async def main(args: argparse.Namespace) -> None:
    posts, concurrency, rounds = args.posts, args.concurrency, args.rounds
    variants = [int(n) for n in args.per_post.split(",")]
    configure("console", "warning")
    rates: dict[int, list[float]] = {n: [] for n in variants}
    cpu: dict[int, list[float]] = {n: [] for n in variants}
    async with bench_namespace(args.amqp_url, args.redis_url) as (settings, connection, redis):
        names = Names(settings.namespace)
        doc = {"id": "dlr-bench", "gateway": "infobip", "accounts": ["a1"],
               "settings": {"url": "http://127.0.0.1:9", "api_token": "t"}}  # fmt: skip
        sender = await SenderRegistry(redis, names).create(parse_sender(doc))
        runner = web.AppRunner(build_app(Receiver(settings, options=Options(rate_limit=0))), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            parts = urlsplit(receiving_url(sender, "http://x") or "")
            url = f"http://127.0.0.1:{port}{parts.path}?{parts.query}"
            ctx = multiprocessing.get_context("spawn")
            for r in range(rounds):
                for per_post in variants:
                    async with connection.channel() as channel:
                        await (await channel.get_queue(names.status_queue)).purge()
                    elapsed: multiprocessing.Queue[float] = ctx.Queue()
                    child = ctx.Process(target=post_all, args=(url, posts, per_post, concurrency, elapsed))
                    started = time.process_time()
                    child.start()
                    while child.is_alive():  # noqa: ASYNC110 - the receiver runs on this loop meanwhile
                        await asyncio.sleep(0.05)
                    used = time.process_time() - started
                    if child.exitcode != 0:
                        raise RuntimeError(f"the posting process failed ({child.exitcode})")
                    seconds = elapsed.get()
                    async with connection.channel() as channel:
                        stored = (await channel.declare_queue(names.status_queue, passive=True)).declaration_result
                    reports = posts * per_post
                    if stored.message_count != reports:
                        raise RuntimeError(f"{stored.message_count} of {reports} reports stored")
                    rates[per_post].append(reports / seconds)
                    cpu[per_post].append(used * 1000 / reports)
                    rate, ms = rates[per_post][-1], cpu[per_post][-1]
                    print(f"round {r + 1} {per_post:>3} a POST  {rate:>9,.0f} reports/s  {ms:.3f} CPU ms/report")
        finally:
            await runner.cleanup()
    print(f"\n{posts} POSTs x {rounds} rounds, {concurrency} at a time; the receiver's CPU (this process)")
    print(f"{'reports a POST':<16}{'median reports/s':>18}{'CPU ms/report':>15}   rounds (reports/s)")
    for n in variants:
        rounds_text = ", ".join(f"{x:,.0f}" for x in rates[n])
        print(f"{n:<16}{statistics.median(rates[n]):>18,.0f}{statistics.median(cpu[n]):>15.3f}   {rounds_text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_service_args(parser)
    parser.add_argument("--posts", type=int, default=4000)
    parser.add_argument("--per-post", default="1,20", help="reports a POST, a variant each, comma-separated")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    run(main(parser.parse_args()))
