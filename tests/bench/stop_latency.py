"""STOP-to-suppressed latency: from an inbound STOP POSTed to the receiver until the number is suppressed.

    .venv/bin/python -m tests.bench.stop_latency [--stops 300] [--concurrency 10]

On a throw-away namespace of the local broker and Redis: an Infobip sender with two accounts, the real
receiver (`webhooks`) on a local port, and the suppression worker (`run_workers(..., suppression=True)`)
in this process. Each STOP is posted as Infobip posts inbound SMS (`{"results": [...]}`) to the sender's
receiving URL, for a number of its own; the clock stops when the number is in the suppression set of the
sender's last account (polled every 2 ms). Prints p50, p90, p99 and max (target p99 <= 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from smsfleet.logs import configure
from smsfleet.senders import SenderRegistry, parse_sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import Names, declare, delete
from webhooks import Options, Receiver, build_app
from workers import SendPolicy, run_workers


def inbound(number: str) -> dict[str, object]:
    return {
        "results": [
            {
                "messageId": uuid.uuid4().hex,
                "from": number.lstrip("+"),
                "to": "ACME",
                "text": "STOP",
                "cleanText": "",
                "keyword": "STOP",
                "receivedAt": "2026-11-25T12:00:00.000+0000",
                "smsCount": 1,
            }
        ],
        "messageCount": 1,
        "pendingMessageCount": 0,
    }


async def main(stops: int, concurrency: int) -> None:
    configure("console", "warning")
    settings = Settings.from_env()
    names = Names(f"bench{uuid.uuid4().hex[:8]}")
    settings = Settings(amqp_url=settings.amqp_url, redis_url=settings.redis_url, namespace=names.ns)
    redis = aioredis.Redis.from_url(settings.redis_url)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    async with connection.channel() as channel:
        await declare(channel, names)
    doc = {"id": "stop-bench", "gateway": "infobip", "accounts": ["a1", "a2"],
           "settings": {"url": "http://127.0.0.1:9", "api_token": "t"}}  # fmt: skip
    sender = await SenderRegistry(redis, names).create(parse_sender(doc))
    store = SuppressionStore(redis, names)
    stop = asyncio.Event()
    fleet = asyncio.create_task(
        run_workers(settings, gateways=[], status=False, suppression=True, policy=SendPolicy(), stop=stop)
    )
    runner = web.AppRunner(build_app(Receiver(settings, options=Options(rate_limit=0))), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = urlsplit(receiving_url(sender, "http://x") or "")
    target = f"http://127.0.0.1:{port}{url.path}?{url.query}"
    await asyncio.sleep(1.0)  # consumers up
    latencies: list[float] = []
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> None:
            number = f"+7916{i:07d}"
            async with slots:
                started = time.perf_counter()
                async with http.post(target, json=inbound(number)) as reply:
                    assert reply.status == 200, await reply.text()
                while not await redis.sismember(store.names.suppress_account_key("a2"), number):  # noqa: ASYNC110 - polling is the measurement
                    await asyncio.sleep(0.002)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one(i) for i in range(stops)))
    stop.set()
    await fleet
    await runner.cleanup()
    async with connection.channel() as channel:
        await delete(channel, names)
    await connection.close()
    keys = [k async for k in redis.scan_iter(match=f"{names.ns}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100)
    print(f"{stops} STOPs, {concurrency} at a time: STOP POST -> number suppressed for every account")
    print(
        f"p50 {q[49]:.1f} ms   p90 {q[89]:.1f} ms   p99 {q[98]:.1f} ms   max {ms[-1]:.1f} ms   (target p99 <= 1000 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.stops, args.concurrency))
