"""Rapporto end to end: the send worker, in this process on the real broker and Redis, against the fake Rapporto.

Rapporto has no status lookup, so an accepted job stays `accepted` (no recheck is scheduled) until a report is
pushed to the webhooks receiver or the status horizon ends it. A sender with a `key` uses the REST batch API:
its jobs share requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest
import redis.asyncio as aioredis

from gateways.rapporto import partner_msg_id
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.fakes.rapporto import FakeRapporto, FakeRapportoBatch
from tests.integration.test_send_worker import until
from workers.ledger import Ledger

from ._rapporto_family import accepted, create_sender, publish_jobs, running_fleet

JOB = {"sender": "r1", "account": "acme", "to": "+79161234567", "text": "Привет от smsfleet"}


@pytest.fixture
async def rapporto(redis: aioredis.Redis, names: Names) -> AsyncIterator[FakeRapporto]:
    async with FakeRapporto(service_id="svc-17", password="pw") as fake:
        await create_sender(redis, names, "r1", "rapporto", {"service_id": "svc-17", "password": "pw", "url": fake.url})
        yield fake


async def test_jobs_are_sent_and_accepted(
    settings: Settings,
    amqp: aio_pika.abc.AbstractConnection,
    names: Names,
    redis: aioredis.Redis,
    rapporto: FakeRapporto,
) -> None:
    jobs = [
        {"id": "r-1", **JOB},
        {"id": "r-2", **JOB, "to": "+79031234567", "originator": "ACME"},
        {"id": "r-3-" + "x" * 60, **JOB, "text": "long id"},
    ]
    async with running_fleet(settings, amqp, names, "rapporto") as events:
        await publish_jobs(amqp, names, "rapporto", jobs)
        await accepted(events, [j["id"] for j in jobs])

    sent = {r.form["partnerMsgId"]: r for r in rapporto.requests}
    assert len(rapporto.requests) == len(rapporto.messages) == 3
    for job in jobs:
        seen = sent[partner_msg_id(job["id"])]
        assert (seen.method, seen.path, seen.query) == ("POST", "/svc-17", {})
        expected = {
            "serviceId": "svc-17",
            "pass": "pw",
            "clientId": job["to"].lstrip("+"),
            "message": job["text"],
            "partnerMsgId": partner_msg_id(job["id"]),
        }
        assert seen.form == expected | ({"source": job["originator"]} if "originator" in job else {})
        [event] = events[job["id"]]
        assert (event.state, event.sender, event.account, event.to, event.attempt) == (
            "accepted", "r1", "acme", job["to"], 1,
        )  # fmt: skip
        assert event.provider_message_id == str(rapporto.by_partner_id[partner_msg_id(job["id"])].id)
        record = await Ledger(redis, names).get(job["id"])
        assert (record["phase"], record["state"], record["pid"]) == ("accepted", "accepted", event.provider_message_id)


async def test_ambiguous_send_is_not_resent(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, rapporto: FakeRapporto
) -> None:
    """Rapporto has no lookup, and whether it deduplicates by partnerMsgId is an account setting we cannot
    see: a send whose answer was lost ends `unknown` under the default policy, never sent twice."""
    rapporto.reset_after_accept_next(1)  # Rapporto takes the message; its answer is lost
    async with running_fleet(settings, amqp, names, "rapporto") as events:
        await publish_jobs(amqp, names, "rapporto", [{"id": "lost-reply", **JOB}])
        await until(lambda: any(e.state == "unknown" for e in events.get("lost-reply", ())))

    assert [r.form["partnerMsgId"] for r in rapporto.requests] == ["lost-reply"]
    assert len(rapporto.messages) == 1
    [event] = events["lost-reply"]
    assert (event.state, event.attempt) == ("unknown", 1)


async def test_batch_api_jobs_share_requests_and_a_rejected_one_fails_alone(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis
) -> None:
    jobs = [{**JOB, "id": f"b{i}", "to": f"+7916123{i:04d}", "text": f"code {i}"} for i in range(40)]
    jobs[7]["originator"] = "NOPE"  # a service name Rapporto has not given the account
    async with FakeRapportoBatch(key="K3y", names=("svc-17",)) as fake:
        # slots 1 ms apart (a message takes one), so that several jobs fall within a request's linger
        await create_sender(redis, names, "r1", "rapporto", {"service_id": "svc-17", "key": "K3y", "url": fake.url},
                            rate_limit=1000)  # fmt: skip
        await publish_jobs(amqp, names, "rapporto", jobs)  # all waiting, so that they are handled together
        async with running_fleet(settings, amqp, names, "rapporto") as events:
            await accepted(events, [j["id"] for j in jobs if j["id"] != "b7"])
            await until(lambda: bool(events.get("b7")))

    sizes = [len(r.json["messages"]) for r in fake.requests]
    assert sum(sizes) == 40
    assert max(sizes) > 1, sizes  # batched
    assert all(r.headers["Authorization"] == "Key K3y" for r in fake.requests)
    taken = {m.partner_msg_id: str(m.id) for m in fake.messages}
    assert len(taken) == 39
    for job in jobs:
        if job["id"] == "b7":
            [event] = events["b7"]
            assert (event.state, event.error.code if event.error else None) == ("rejected", "rapporto.not.available")
            continue
        [event] = events[job["id"]]
        assert (event.state, event.provider_message_id) == ("accepted", taken[job["id"]])
