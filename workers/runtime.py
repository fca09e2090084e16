"""The connections a worker process shares between its consumers, opened once and closed once.

One robust AMQP connection with two channels (consuming; publishing with confirms and `mandatory`), one
Redis client, one HTTP session, the sender cache, and the stores built on them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from smsfleet import metrics
from smsfleet.connect import connect_amqp, redis_client
from smsfleet.contracts import StatusEvent, encode
from smsfleet.links import Shortener
from smsfleet.senders import SenderCache, open_registry
from smsfleet.settings import Settings
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import HEADER_REASON, HEADER_REASON_CODE, Names, declare, publish_json

from .admission import Admitter
from .delays import Delayer
from .ledger import Ledger
from .ratelimit import RateLimiter
from .stats import Stats

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings
    names: Names
    connection: AbstractRobustConnection
    consume_channel: AbstractRobustChannel
    publish_channel: AbstractRobustChannel
    redis: aioredis.Redis
    http: aiohttp.ClientSession
    senders: SenderCache
    ledger: Ledger
    suppression: SuppressionStore
    limiter: RateLimiter
    admitter: Admitter
    delayer: Delayer
    shortener: Shortener
    stats: Stats

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, *, prefetch: int = 100) -> AsyncIterator[Runtime]:
        names = Names(settings.namespace)
        async with contextlib.AsyncExitStack() as stack:
            connection = await connect_amqp(settings.amqp_url)  # the first node that answers, then the next
            stack.push_async_callback(connection.close)
            consume = await connection.channel()
            await consume.set_qos(prefetch_count=prefetch)
            publishing = await connection.channel(publisher_confirms=True, on_return_raises=True)
            # on a channel of its own: a robust channel declares again, on every reconnect, what was declared on
            # it, and the publishing channel is not restored (publishes fail) until ~35 declarations went through
            async with connection.channel() as setup:
                await declare(setup, names, settings.queue_limits)
            # a blocking pool: at high concurrency a request waits for a connection instead of failing
            redis = redis_client(
                settings.redis_url,
                max_connections=prefetch + 100,
                pool_timeout=10,
                socket_timeout=5,
                socket_connect_timeout=3,
            )  # owns the pool: closing the client closes it
            stack.push_async_callback(redis.aclose)
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(100, prefetch)))
            stack.push_async_callback(http.close)
            senders = SenderCache(open_registry(redis, names, settings.secret_key))
            await senders.start()
            stack.push_async_callback(senders.stop)
            ledger = Ledger(redis, names)
            limiter = RateLimiter(redis, names.redis_key("rate"), margin=settings.rate_margin_s)
            stats = Stats(redis, names)  # the overview's per-minute counters, flushed once a second
            stats.start()
            stack.push_async_callback(stats.close)
            yield cls(
                settings=settings,
                names=names,
                connection=connection,
                consume_channel=consume,
                publish_channel=publishing,
                redis=redis,
                http=http,
                senders=senders,
                ledger=ledger,
                suppression=SuppressionStore(redis, names),
                limiter=limiter,
                admitter=Admitter(ledger, limiter, settings.redis_wait_replicas, settings.redis_wait_timeout_ms),
                delayer=Delayer(publishing, names),
                shortener=Shortener(redis, names, settings.public_url),
                stats=stats,
            )

    async def publish(
        self, exchange: str, body: bytes, routing_key: str, *, mandatory: bool = True, **properties: Any
    ) -> None:
        """Publish persistent JSON with confirms (and `mandatory`); raises when not confirmed in time."""
        await publish_json(
            self.publish_channel,
            exchange,
            body,
            routing_key,
            mandatory=mandatory,
            **properties,
        )

    async def emit(self, event: StatusEvent, gateway: str, *, replay: bool = False) -> None:
        """Publish an event. Not `mandatory`: which events are kept is up to the engines' own bindings. Its
        `message_id` is `<job id>.<state>`: a replay carries the same one (consumers may deduplicate on it)."""
        await self.publish(
            self.names.events_exchange, encode(event), event.routing_key, mandatory=False,
            message_id=f"{event.job_id}.{event.state.value}",
        )  # fmt: skip
        self.stats.count(event, gateway, replay=replay)
        if event.state.final and not replay:
            metrics.JOBS.labels(gateway, event.sender, event.state.value).inc()

    async def dead_letter(
        self, body: bytes, code: str, reason: str, routing_key: str, message_id: str | None = None
    ) -> None:
        """Park a message in `<ns>.dead` with the reason in its headers."""
        headers = {
            HEADER_REASON_CODE: code,
            HEADER_REASON: reason[:500],
            "x-smsfleet-routing-key": routing_key,
        }
        await self.publish(self.names.dead_exchange, body, routing_key, headers=headers, message_id=message_id)
        metrics.DEAD_LETTERED.labels(code).inc()
