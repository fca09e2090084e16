"""Devino end to end: workers in this process, the real RabbitMQ and Redis, the fake Devino (both APIs).

`run_jobs` (also used by the SMS Traffic end-to-end test) creates one sender, publishes jobs to `<ns>.send`
and runs the fleet until every job has a final status event, or, for a push-only API, an `accepted` one.
Devino has no `await_delivery_s` setting, so the class default is made 1 s: the classic API's status lookup
that finds the fake's final state runs within the test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from gateways import gateway_class
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import Events, create_senders, fleet, publish_raw
from tests.fakes.devino import FakeDevino
from tests.integration.test_send_worker import until
from workers import SendPolicy

ACCOUNT = "acme"
LONG = "x" * 200  # two parts


async def run_jobs(
    *,
    settings: Settings,
    amqp: aio_pika.abc.AbstractRobustConnection,
    redis: aioredis.Redis,
    names: Names,
    sender: dict[str, Any],
    jobs: list[dict[str, Any]],
    final: bool = True,
) -> Events:
    """Create `sender`, publish `jobs` for it, run the fleet until each is final (or accepted: `final=False`)."""
    kind, ids = sender["gateway"], [job["id"] for job in jobs]
    await create_senders(redis, names, [{"accounts": [ACCOUNT], **sender}])
    body = {"sender": sender["id"], "account": ACCOUNT}
    items = [(f"{kind}.{sender['id']}", msgspec.json.encode(body | job), job["id"]) for job in jobs]
    async with Events.listen(amqp, names) as events:
        await publish_raw(amqp, names, items)
        async with fleet(settings, [kind], SendPolicy(concurrency=10)):
            if final:
                await events.wait_final(ids, 30)
            else:
                await until(lambda: all(events.by_job.get(i) for i in ids), within=30)
    return events


@pytest.fixture(autouse=True)
def quick_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_class("devino"), "default_await_delivery_s", 1)


async def test_classic_api_sends_and_polls_every_job(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, redis: aioredis.Redis, names: Names
) -> None:
    jobs = [
        {"id": "d1", "to": "+79161234567", "text": "Код 1234", "originator": "ACME"},
        {"id": "d2", "to": "+79167654321", "text": LONG, "originator": "ACME"},
        {"id": "d3", "to": "+79160000000", "text": "no sender name"},  # Devino needs SourceAddress
    ]
    async with FakeDevino(login="acme", password="pw", initial_state=0) as fake:
        sender = {"id": "dv", "gateway": "devino", "settings": {"login": "acme", "password": "pw", "url": fake.url}}
        events = await run_jobs(settings=settings, amqp=amqp, redis=redis, names=names, sender=sender, jobs=jobs)

    sessions = [r for r in fake.requests if r.path == "/rest/user/sessionid"]
    assert 1 <= len(sessions) <= 2  # one per adapter instance (send worker, status worker), then cached
    assert all((r.method, r.params) == ("GET", {"login": "acme", "password": "pw"}) for r in sessions)
    sends = {r.params["Data"]: r for r in fake.requests if r.path == "/rest/Sms/Send"}
    assert all(r.method == "POST" and r.params.pop("SessionID") in fake.sessions for r in sends.values())
    assert sends["Код 1234"].params == {
        "DestinationAddress": "79161234567",
        "Data": "Код 1234",
        "SourceAddress": "ACME",
    }
    assert sends[LONG].params == {"DestinationAddress": "79167654321", "Data": LONG, "SourceAddress": "ACME"}
    assert sends["no sender name"].params == {"DestinationAddress": "79160000000", "Data": "no sender name"}

    ids = {m.text: m.ids for m in fake.messages}
    assert [len(ids["Код 1234"]), len(ids[LONG])] == [1, 2]
    lookups = [r.params for r in fake.requests if r.path == "/rest/Sms/State"]
    assert {ids["Код 1234"][0], ids[LONG][0]} <= {p["messageId"] for p in lookups}
    assert all(p["sessionId"] in fake.sessions for p in lookups)

    for job_id, text, parts in (("d1", "Код 1234", 1), ("d2", LONG, 2)):
        trail = events.by_job[job_id]
        assert [e.state for e in trail] == ["accepted", "delivered"]
        assert {e.provider_message_id for e in trail} == {ids[text][0]}
        assert trail[0].parts == parts
    [refused] = events.by_job["d3"]
    assert refused.state == "rejected"
    assert refused.error is not None
    assert refused.error.code == "devino.1"


async def test_devino_online_sends_with_the_job_id(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, redis: aioredis.Redis, names: Names
) -> None:
    valid_until = datetime.now(UTC) + timedelta(hours=1)
    jobs = [
        {"id": "o1", "to": "+79161234567", "text": "Привет", "originator": "ACME"},
        {"id": "o2", "to": "+79167654321", "text": LONG, "originator": "ACME", "valid_until": valid_until.isoformat()},
    ]
    async with FakeDevino(api_key="key-1") as fake:
        sender = {"id": "do", "gateway": "devino", "settings": {"api_key": "key-1", "url": fake.url}}
        events = await run_jobs(
            settings=settings, amqp=amqp, redis=redis, names=names, sender=sender, jobs=jobs, final=False
        )

    assert {(r.method, r.path, str(r.params)) for r in fake.requests} == {
        ("POST", "/sms/messages", str({"includeSegmentId": "true"}))
    }  # one request, or two: the jobs may share one (batched)
    assert all(r.headers["Authorization"] == "Key key-1" for r in fake.requests)
    bodies = {m["options"]["job_id"]: m for r in fake.requests for m in r.json["messages"]}
    hook = f"{settings.public_url}/smslistener/listen_type/sms_devino?sender="
    assert all(b.pop("callbackUrl").startswith(hook) for b in bodies.values())  # where its report goes
    assert bodies["o1"] == {"to": "79161234567", "text": "Привет", "from": "ACME", "options": {"job_id": "o1"}}
    validity = bodies["o2"].pop("validity")
    assert 3590 <= validity <= 3600
    assert bodies["o2"] == {"to": "79167654321", "text": LONG, "from": "ACME", "options": {"job_id": "o2"}}

    ids = {m.text: m.ids for m in fake.messages}
    for job_id, text, parts in (("o1", "Привет", 1), ("o2", LONG, 2)):
        [accepted] = events.by_job[job_id]  # no lookup: the final state comes by callback
        assert (accepted.state, accepted.provider_message_id, accepted.parts) == ("accepted", ids[text][0], parts)


async def test_devino_online_batches_and_reports_each_job_on_its_own(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, redis: aioredis.Redis, names: Names
) -> None:
    """Many jobs of one sender share requests; a message Devino rejects fails its own job only."""
    jobs = [{"id": f"b{i}", "to": f"+7916123{i:04d}", "text": f"code {i}", "originator": "ACME"} for i in range(60)]
    jobs[7]["originator"] = "not a valid sender name"  # Devino rejects this message of its request
    async with FakeDevino(api_key="key-1") as fake:
        online = {"api_key": "key-1", "url": fake.url}
        # its slots 1 ms apart (each message takes one), so that several fall within a request's linger
        sender = {"id": "db", "gateway": "devino", "settings": online, "rate_limit": 1000}
        await create_senders(redis, names, [{"accounts": [ACCOUNT], **sender}])
        items = [("devino.db", msgspec.json.encode({"sender": "db", "account": ACCOUNT} | j), j["id"]) for j in jobs]
        async with Events.listen(amqp, names) as events:
            await publish_raw(amqp, names, items)
            async with fleet(settings, ["devino"], SendPolicy(concurrency=100)):
                await until(lambda: all(events.by_job.get(j["id"]) for j in jobs), within=30)

    sizes = [len(r.json["messages"]) for r in fake.requests]
    assert sum(sizes) == 60
    assert len(sizes) < 60, sizes  # batched
    pids = {m.fields["options"]["job_id"]: m.ids[0] for m in fake.messages}
    assert len(pids) == 59
    for job in jobs:
        [event] = events.by_job[job["id"]]
        if job["id"] == "b7":
            assert event.state == "rejected"
            assert event.error is not None
            assert event.error.code == "devino.REJECTED"
        else:
            assert (event.state, event.provider_message_id) == ("accepted", pids[job["id"]])
