"""Seven Tech end to end: the send worker, in this process on the real broker and Redis, against the fake
Seven Tech, with two senders that differ only in "Shorten links in messages"."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aio_pika
import pytest
import redis.asyncio as aioredis

from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.fakes.seventech import FakeSeventech

from ._rapporto_family import accepted, create_sender, publish_jobs, running_fleet

TEXT = "Sale! https://shop.example.com/catalogue/spring-collection?utm_source=sms"
BASIC = "Basic " + base64.b64encode(b"acme:pw").decode()


@pytest.fixture
async def seventech(redis: aioredis.Redis, names: Names) -> AsyncIterator[FakeSeventech]:
    async with FakeSeventech(login="acme", password="pw") as fake:
        for sender_id, shorten in (("short", True), ("plain", False)):
            settings = {"url": fake.url, "login": "acme", "password": "pw", "shorten_links": shorten}
            await create_sender(redis, names, sender_id, "seventech", settings)
        yield fake


async def test_jobs_are_sent_and_accepted(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, seventech: FakeSeventech
) -> None:
    jobs = [
        {"id": "st-1", "sender": "short", "account": "acme", "to": "+79161234567", "text": TEXT},
        {"id": "st-2", "sender": "plain", "account": "acme", "to": "+79031234567", "text": TEXT, "originator": "ACME"},
    ]
    async with running_fleet(settings, amqp, names, "seventech") as events:
        await publish_jobs(amqp, names, "seventech", jobs)
        await accepted(events, [j["id"] for j in jobs])

    assert len(seventech.requests) == len(seventech.messages) == 2
    bodies = {r.json["clientRequestId"]: r for r in seventech.requests}
    for seen in bodies.values():
        assert (seen.method, seen.path, seen.query) == ("POST", "/messaging/v1/send", {})
        assert (seen.headers["Authorization"], seen.headers["Content-Type"]) == (BASIC, "application/json")
    sent = {job_id: seen.json for job_id, seen in bodies.items()}
    hook = f"{settings.public_url}/smslistener/listen_type/sms_seventech?sender="
    assert sent["st-1"].pop("callback").startswith(f"{hook}short&token=")  # each message says where its report goes
    assert sent["st-2"].pop("callback").startswith(f"{hook}plain&token=")
    [short_text] = [step["text"] for step in sent["st-1"].pop("scenario")]  # shortened by us, no flag sent
    assert short_text.startswith(f"Sale! {settings.public_url}/l/")
    assert sent["st-1"] == {"clientRequestId": "st-1"}
    assert sent["st-2"] == {  # shortening off: the option is not sent at all
        "clientRequestId": "st-2",
        "scenario": [{"channel": "SMS", "to": "79031234567", "text": TEXT, "from": "ACME"}],
    }
    ids = {m.client_request_id: m.id for m in seventech.messages}
    for job in jobs:
        [event] = events[job["id"]]
        assert (event.state, event.sender, event.to, event.attempt) == ("accepted", job["sender"], job["to"], 1)
        assert event.provider_message_id == ids[job["id"]]
