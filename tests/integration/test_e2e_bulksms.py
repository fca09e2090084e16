"""BulkSMS end to end: send and status workers in this process, on the real broker and Redis, fake BulkSMS.

Jobs go in as raw JSON on `<ns>.send`; the tests then check what the fake received (field by field), and the
status events (`accepted`, then the final state the fake reported, with BulkSMS's message ids). Reports come
by status lookup in the first test, and as BulkSMS's webhook POSTs to the real receiver in the second, which
also posts replies: a stop word suppresses the number for every account of the sender.
"""

from __future__ import annotations

import base64
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from gateways.bulksms import user_supplied_id
from smsfleet.contracts import StatusEvent
from smsfleet.senders import SenderRegistry, parse_sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import Names
from tests.fakes.bulksms import FakeBulksms
from tests.integration.test_send_worker import fleet, publish, until
from tests.integration.test_webhooks import path_of
from webhooks import Receiver, build_app

Events = dict[str, list[StatusEvent]]
JOBS: dict[str, dict[str, Any]] = {
    "b-plain": {"to": "+79161234567", "text": "Your code is 4821"},
    "b-cyrillic": {"to": "+79169876543", "text": "Ваш код 4821", "originator": "ACME"},
    "campaign-7/recipient-000001": {"to": "+447911123456", "text": "z" * 500},  # 4 parts; a long job id
}
STOPPED = ("+79161234567", "+447911123456")  # the numbers that reply with a stop word in the webhook test
FINAL = {"b-plain": "DELIVERED", "b-cyrillic": "DELIVERED", "campaign-7/recipient-000001": "FAILED.EXPIRED"}


@contextlib.asynccontextmanager
async def status_events(amqp: aio_pika.abc.AbstractConnection, names: Names) -> AsyncIterator[Events]:
    """Every status event of the namespace by job id, from an exclusive queue bound before anything is sent."""
    events: Events = defaultdict(list)

    async def collect(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = msgspec.json.decode(msg.body, type=StatusEvent)
        events[event.job_id].append(event)

    async with amqp.channel() as channel:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.events_exchange, "status.*")
        tag = await queue.consume(collect, no_ack=True)
        yield events
        await queue.cancel(tag)


def states(events: Events, job_id: str) -> list[str]:
    return [e.state for e in events.get(job_id, [])]


async def send(amqp: aio_pika.abc.AbstractConnection, names: Names, key: str, jobs: Mapping[str, Any]) -> None:
    """Publish jobs (id -> fields) for account `acme` with routing key `key` (`<gateway>.<sender>`)."""
    sender = key.partition(".")[2]
    for job_id, fields in jobs.items():
        await publish(
            amqp, names, key, msgspec.json.encode({"id": job_id, "sender": sender, "account": "acme"} | fields)
        )


async def until_seen(events: Events, job_ids: Iterable[str], n: int) -> None:
    """Wait until every job has had `n` status events."""
    await until(lambda: all(len(events.get(job_id, [])) >= n for job_id in job_ids))


@contextlib.asynccontextmanager
async def receiver(settings: Settings) -> AsyncIterator[Callable[[str, bytes], Awaitable[int]]]:
    """The real callback receiver, in process: yields `post(url, body) -> HTTP status` (JSON bodies)."""
    async with TestClient(TestServer(build_app(Receiver(settings)))) as client:

        async def post(url: str, body: bytes) -> int:
            async with client.post(path_of(url), data=body, headers={"Content-Type": "application/json"}) as reply:
                return reply.status

        yield post


async def hook_of(redis: aioredis.Redis, names: Names, settings: Settings, sender_id: str) -> str:
    sender = await SenderRegistry(redis, names).get(sender_id)
    assert sender is not None
    url = receiving_url(sender, settings.public_url)
    assert url is not None
    return url


@pytest.fixture
async def bulksms(redis: aioredis.Redis, names: Names) -> AsyncIterator[FakeBulksms]:
    async with FakeBulksms(username="acme", password="pw") as fake:
        settings = {"login": "acme", "password": "pw", "max_parts": 4, "await_delivery_s": 1, "base_url": fake.url}
        await SenderRegistry(redis, names).create(
            parse_sender({"id": "b1", "gateway": "bulksms", "accounts": ["acme"], "settings": settings})
        )
        yield fake


async def test_jobs_are_sent_and_reported(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, bulksms: FakeBulksms
) -> None:
    async with status_events(amqp, names) as events, fleet(settings, ["bulksms"]):
        bulksms.fail_next(1, 403, "insufficient-credits")
        await send(amqp, names, "bulksms.b1", {"b-refused": JOBS["b-plain"]})
        await until_seen(events, ["b-refused"], 1)
        await send(amqp, names, "bulksms.b1", JOBS)
        await until_seen(events, JOBS, 1)
        by_job = {user_supplied_id(job_id): job_id for job_id in JOBS}
        pids = {by_job[m.entry["userSuppliedId"]]: m.id for m in bulksms.messages}
        for job_id, status in FINAL.items():
            bulksms.set_status(pids[job_id], status)
        await until_seen(events, JOBS, 2)

    [refused] = events["b-refused"]
    assert (refused.state, refused.error and refused.error.code) == ("rejected", "bulksms.403.insufficient-credits")
    assert {job_id: states(events, job_id) for job_id in JOBS} == {
        "b-plain": ["accepted", "delivered"],
        "b-cyrillic": ["accepted", "delivered"],
        "campaign-7/recipient-000001": ["accepted", "expired"],
    }
    assert all(e.provider_message_id == pids[job_id] for job_id in JOBS for e in events[job_id])
    assert [e.parts for e in events["campaign-7/recipient-000001"]] == [4, 4]
    expired = events["campaign-7/recipient-000001"][1].error
    assert expired is not None
    assert expired.code == "bulksms.FAILED.EXPIRED"

    posts = [seen for seen in bulksms.requests if seen.method == "POST"]
    assert len(posts) == 1 + len(JOBS)  # the refused one, then each job once
    auth = "Basic " + base64.b64encode(b"acme:pw").decode()
    assert len({seen.query["deduplication-id"] for seen in posts}) == len(posts)  # one per job, never shared
    for seen in posts[1:]:
        [entry] = seen.json()
        job_id = by_job[entry["userSuppliedId"]]
        job = JOBS[job_id]
        assert seen.path == "/v1/messages"
        assert seen.headers["Authorization"] == auth
        assert seen.query["deduplication-id"].isdigit()
        assert seen.query["auto-unicode"] == "true"
        expected = {"to": job["to"], "body": job["text"], "longMessageMaxParts": 4}
        expected |= {"userSuppliedId": user_supplied_id(job_id)} | ({"from": "ACME"} if "originator" in job else {})
        assert entry == expected
    assert bulksms.by_id[pids["b-cyrillic"]].body == "Ваш код 4821"
    lookups = {seen.path for seen in bulksms.requests if seen.method == "GET"}
    assert lookups == {f"/v1/messages/{pid}" for pid in pids.values()}


async def test_webhooks_finish_jobs_and_stop_replies_suppress(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis, bulksms: FakeBulksms
) -> None:
    doc = {"id": "b2", "gateway": "bulksms", "accounts": ["acme", "acme-promo"], "stop_words": ["STOP", "Стоп"]}
    config = {"login": "acme", "password": "pw", "await_delivery_s": 3600, "base_url": bulksms.url}  # no lookups
    await SenderRegistry(redis, names).create(parse_sender(doc | {"settings": config}))
    hook, store = await hook_of(redis, names, settings, "b2"), SuppressionStore(redis, names)
    async with status_events(amqp, names) as events, receiver(settings) as post:
        async with fleet(settings, ["bulksms"], suppression=True):
            await send(amqp, names, "bulksms.b2", {"b-hook": JOBS["b-plain"]})
            await until_seen(events, ["b-hook"], 1)
            assert await post(hook, b"[]") == 200  # the check BulkSMS makes when the webhook is registered
            [message] = bulksms.messages
            bulksms.set_status(message.id, "FAILED.HANDSET_ERROR")
            assert await post(hook, bulksms.webhook_body(message.id)) == 200
            await until_seen(events, ["b-hook"], 2)
            replies = [("+79161234567", "  стоп!"), ("+79169876543", "Привет"), ("+447911123456", "STOP")]
            assert await post(hook, bulksms.received_body(*replies)) == 200

            async def suppressed() -> bool:
                return all([await store.is_suppressed(a, n) for a in ("acme", "acme-promo") for n in STOPPED])

            await until(suppressed)
        assert not await store.is_suppressed("acme", "+79169876543")
    assert states(events, "b-hook") == ["accepted", "undelivered"]
    final = events["b-hook"][1]
    assert (final.provider_message_id, final.error and final.error.code) == (
        message.id,
        "bulksms.FAILED.HANDSET_ERROR",
    )
    assert not [seen for seen in bulksms.requests if seen.method == "GET"]  # the webhook did it, not a lookup
