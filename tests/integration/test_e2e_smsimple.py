"""SMSimple end to end: workers in-process on the real broker and Redis, sending to the fake SMSimple."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from gateways.smsimple import SmsimpleGateway
from smsfleet.contracts import State, StatusEvent
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.fakes.smsimple import STATUS_TEXTS, FakeSmsimple
from tests.integration.test_send_worker import fleet, publish, until

TO = {"ss-1": "+79161234567", "ss-2": "+79031112233", "ss-3": "+447911123456"}
LONG = "Длинный текст " * 12  # 168 Cyrillic characters: 3 parts, over the sender's max_parts of 2


@contextlib.asynccontextmanager
async def status_events(amqp: aio_pika.abc.AbstractConnection, names: Names) -> AsyncIterator[list[StatusEvent]]:
    """Every `status.*` event of the namespace, in arrival order, while the block runs."""
    seen: list[StatusEvent] = []

    async def on_event(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append(msgspec.json.decode(msg.body, type=StatusEvent))
        await msg.ack()

    async with amqp.channel() as channel:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.events_exchange, "status.*")
        await queue.consume(on_event)
        yield seen


async def test_send_then_poll_to_delivered(
    settings: Settings,
    amqp: aio_pika.abc.AbstractConnection,
    names: Names,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SmsimpleGateway, "default_await_delivery_s", 1)  # the kind has no await setting
    async with FakeSmsimple(
        user="acme", password="pw", origins=["101"], initial_status=STATUS_TEXTS["delivered"]
    ) as fake:
        doc = {
            "id": "ss",
            "gateway": "smsimple",
            "accounts": ["acme"],
            "settings": {
                "user": "acme",
                "password": "pw",
                "originator_id": "101",
                "max_parts": 2,
                "base_url": fake.url,
            },
        }
        await SenderRegistry(redis, names).create(parse_sender(doc))
        async with status_events(amqp, names) as seen, fleet(settings, ["smsimple"]):
            for job_id, to in TO.items():
                job = {"id": job_id, "sender": "ss", "account": "acme", "to": to, "text": f"Код {job_id}"}
                await publish(amqp, names, "smsimple.ss", msgspec.json.encode(job))
            too_long = {"id": "ss-long", "sender": "ss", "account": "acme", "to": TO["ss-1"], "text": LONG}
            await publish(amqp, names, "smsimple.ss", msgspec.json.encode(too_long))
            await until(lambda: sum(e.state == State.DELIVERED for e in seen) == 3 and len(seen) == 7)

    sends = sorted((q for m, p, q in fake.requests if (m, p) == ("POST", "/http_send.php")), key=lambda q: q["phone"])
    assert sends == [
        {"user": "acme", "pass": "pw", "or_id": "101", "phone": to.lstrip("+"), "message": f"Код {job_id}"}
        for job_id, to in sorted(TO.items(), key=lambda kv: kv[1])
    ]
    ids = {m.text.removeprefix("Код "): str(m.id) for m in fake.messages.values()}
    checks = [q for m, p, q in fake.requests if (m, p) == ("GET", "/http_check.php")]
    assert sorted(q["message_id"] for q in checks) == sorted(ids.values())
    assert all((q["user"], q["pass"]) == ("acme", "pw") for q in checks)
    by_job = {job_id: [(e.state, e.provider_message_id) for e in seen if e.job_id == job_id] for job_id in TO}
    assert by_job == {j: [(State.ACCEPTED, ids[j]), (State.DELIVERED, ids[j])] for j in TO}
    [refused] = [e for e in seen if e.job_id == "ss-long"]
    assert (refused.state, refused.error and refused.error.code) == (State.REJECTED, "too_many_parts")
