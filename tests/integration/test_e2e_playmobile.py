"""Play Mobile end to end: workers in-process on the real broker and Redis, sending to the fake broker-api.

Play Mobile has no status lookup, so a job ends this path `accepted`, with our job id as the provider's id.
The rate is PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC (`Settings.play_mobile_rate`), not the adapter's 49/s.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from gateways.playmobile import PlaymobileGateway
from smsfleet.contracts import State, StatusEvent
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import fleet as harness_fleet
from tests.fakes.playmobile import FakePlaymobile
from tests.integration.test_e2e_smsimple import status_events
from tests.integration.test_send_worker import fleet, publish, until
from workers import SendPolicy
from workers.send import SendWorker

RATE = 4.0  # requests/s, set as the environment would; 6 sends then need at least 5 / RATE seconds
JOBS = {f"pm-{i}": f"+99890123450{i}" for i in range(6)}


async def test_sends_at_the_configured_rate(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis
) -> None:
    assert PlaymobileGateway.default_rate == 49.0  # what the adapter alone would allow
    settings = msgspec.structs.replace(settings, play_mobile_rate=RATE)
    async with FakePlaymobile(user_id="acme", password="pw") as fake:
        doc = {
            "id": "pm",
            "gateway": "playmobile",
            "accounts": ["acme"],
            "settings": {"user_id": "acme", "password": "pw", "base_url": fake.url},
        }
        await SenderRegistry(redis, names).create(parse_sender(doc))
        async with status_events(amqp, names) as seen, fleet(settings, ["playmobile"]):
            for job_id, to in JOBS.items():
                job = {"id": job_id, "sender": "pm", "account": "acme", "to": to, "text": "Salom", "originator": "ACME"}
                await publish(amqp, names, "playmobile.pm", msgspec.json.encode(job))
            await until(lambda: len(seen) == len(JOBS))

    auth = "Basic " + base64.b64encode(b"acme:pw").decode()
    assert all((path, headers["Authorization"]) == ("/broker-api/send", auth) for path, headers, _ in fake.requests)
    sent = sorted((m for _, _, body in fake.requests for m in body["messages"]), key=lambda m: m["message-id"])
    assert sent == [
        {"recipient": to.lstrip("+"), "message-id": job_id, "sms": {"originator": "ACME", "content": {"text": "Salom"}}}
        for job_id, to in sorted(JOBS.items())
    ]
    assert sorted((e.job_id, e.state, e.provider_message_id) for e in seen) == [
        (j, State.ACCEPTED, j) for j in sorted(JOBS)
    ]
    # the limit counts requests (each may carry several of the jobs): at 49/s they would all leave within ~0.1 s
    times = sorted(fake.request_times)
    assert all(b - a >= 1 / RATE * 0.9 for a, b in itertools.pairwise(times))


async def send_batched(  # noqa: PLR0917 - the fixtures, then what to send and how
    settings: Settings,
    amqp: aio_pika.abc.AbstractConnection,
    names: Names,
    redis: aioredis.Redis,
    jobs: list[str],
    policy: SendPolicy,
) -> tuple[FakePlaymobile, list[StatusEvent]]:
    """Jobs `jobs` of sender `pm` through the fake, the send and status workers in this process with `policy`,
    until each has an event: the fake, and the events."""
    async with FakePlaymobile(user_id="acme", password="pw") as fake:
        doc = {"id": "pm", "gateway": "playmobile", "accounts": ["acme"],
               "settings": {"user_id": "acme", "password": "pw", "base_url": fake.url}}  # fmt: skip
        await SenderRegistry(redis, names).create(parse_sender(doc))
        async with status_events(amqp, names) as seen, harness_fleet(settings, ["playmobile"], policy):
            for i, job_id in enumerate(jobs):
                job = {"id": job_id, "sender": "pm", "account": "acme", "to": f"+998901{i:06d}", "text": "Salom"}
                await publish(amqp, names, "playmobile.pm", msgspec.json.encode(job))
            await until(lambda: len(seen) == len(jobs), within=30)
    return fake, seen


async def test_a_busy_sender_fills_its_requests_and_keeps_the_request_limit(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis
) -> None:
    # 5 requests a second: one job a request would take 80 s for these 400; batched they take about one
    settings = msgspec.structs.replace(settings, play_mobile_rate=5.0)
    jobs = [f"pmb-{i}" for i in range(400)]
    fake, seen = await send_batched(settings, amqp, names, redis, jobs, SendPolicy(concurrency=500))
    assert sorted(e.job_id for e in seen if e.state is State.ACCEPTED) == sorted(jobs)
    carried = sorted(m["message-id"] for _, _, body in fake.requests for m in body["messages"])
    assert carried == sorted(jobs)  # each job in exactly one request
    assert len(fake.requests) <= 50, f"{len(fake.requests)} requests for {len(jobs)} jobs"
    # at the limit on average (the in-process fake stamps a request late when the loop is busy: no exact windows
    # here; tests/bench/throughput.py checks them on a fake of its own process)
    times = sorted(fake.request_times)
    assert times[-1] - times[0] >= (len(times) - 1) / 5.0 * 0.95


async def test_a_request_late_for_its_slot_waits_for_a_later_one(
    settings: Settings,
    amqp: aio_pika.abc.AbstractConnection,
    names: Names,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first request's jobs take 0.35 s to move to `calling` (a slow Redis reply), past their request's
    slot and the next one's, at 5 requests a second. Sent then, the request would leave between the next two
    and make a 1-s window of 6; it takes a later slot instead."""
    settings = msgspec.structs.replace(settings, play_mobile_rate=5.0)
    begin_call, first = SendWorker._begin_call, []

    async def slow_first_request(self: SendWorker, d: Any) -> bool:
        first.append(first[0] if first else time.monotonic())
        if time.monotonic() - first[0] < 0.05:
            await asyncio.sleep(0.35)
        return await begin_call(self, d)

    monkeypatch.setattr(SendWorker, "_begin_call", slow_first_request)
    jobs = [f"pml-{i}" for i in range(40)]
    fake, _ = await send_batched(settings, amqp, names, redis, jobs, SendPolicy(concurrency=500, batch_max=5))
    carried = sorted(m["message-id"] for _, _, body in fake.requests for m in body["messages"])
    assert carried == sorted(jobs)  # each job in exactly one request
    assert fake.busiest_second() <= 5, sorted(round(t - fake.request_times[0], 3) for t in fake.request_times)
