"""The end-to-end harness of the Rapporto and Seven Tech worker tests: senders pointing at a fake, the fleet
running in this process, and every status event recorded from an exclusive queue bound to `status.*`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aio_pika
import msgspec
import redis.asyncio as aioredis

from smsfleet.contracts import StatusEvent
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.integration.test_send_worker import publish, until
from workers import SendPolicy, run_workers

__all__ = ["Events", "accepted", "create_sender", "publish_jobs", "running_fleet"]

Events = dict[str, list[StatusEvent]]
_decoder = msgspec.json.Decoder(StatusEvent)


async def create_sender(
    redis: aioredis.Redis, names: Names, sender_id: str, kind: str, settings: dict[str, Any], **fields: Any
) -> None:
    """A sender of `kind` for account `acme`; `fields`: more of the sender's own (`rate_limit`...)."""
    doc = {"id": sender_id, "gateway": kind, "accounts": ["acme"], "settings": settings, **fields}
    await SenderRegistry(redis, names).create(parse_sender(doc))


async def publish_jobs(
    amqp: aio_pika.abc.AbstractConnection, names: Names, kind: str, jobs: Iterable[dict[str, Any]]
) -> None:
    """Each job as SendJob JSON to `<ns>.send`, routing key `<kind>.<sender>` (persistent, confirmed)."""
    for job in jobs:
        await publish(amqp, names, f"{kind}.{job['sender']}", msgspec.json.encode(job))


async def accepted(events: Events, job_ids: Iterable[str]) -> None:
    """Wait until every job has an `accepted` event."""
    await until(lambda: all(any(e.state == "accepted" for e in events.get(j, ())) for j in job_ids))


@contextlib.asynccontextmanager
async def running_fleet(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, kind: str
) -> AsyncIterator[Events]:
    """`run_workers` for `kind` (with the status role) as a task; yields the status events by job id."""
    events: Events = defaultdict(list)

    async def record(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = _decoder.decode(msg.body)
        events[event.job_id].append(event)

    async with amqp.channel() as channel:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.events_exchange, "status.*")
        await queue.consume(record, no_ack=True)
        stop = asyncio.Event()
        policy = SendPolicy(concurrency=10)
        task = asyncio.create_task(run_workers(settings, gateways=[kind], status=True, policy=policy, stop=stop))
        await asyncio.sleep(0.5)  # consumers up
        try:
            yield events
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
