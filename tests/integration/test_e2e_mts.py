"""MTS end to end: workers in this process, the real RabbitMQ and Redis, the fake MTS API.

`EndToEnd` is shared with the edna and Stream Telecom end-to-end tests. Its `run(sender, jobs)` creates one
sender, publishes a few jobs to `<ns>.send`, and runs the fleet (send and status workers) until every job has a
final status event. The gateway's `default_await_delivery_s` is made 1 s (these kinds have no
`await_delivery_s` setting), so the status lookup that finds the fake's final state runs within the test.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from gateways import gateway_class
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import Events, create_senders, fleet, publish_raw
from tests.fakes.mts import FakeMts
from workers import SendPolicy

ACCOUNT = "acme"
Run = Callable[[dict[str, Any], list[dict[str, Any]]], Awaitable[Events]]


class EndToEnd:
    """Inherited by each gateway's end-to-end test class, which then asks for the `run` fixture."""

    @pytest.fixture
    def run(
        self,
        settings: Settings,
        amqp: aio_pika.abc.AbstractRobustConnection,
        redis: aioredis.Redis,
        names: Names,
        monkeypatch: pytest.MonkeyPatch,
    ) -> Run:
        async def run(sender: dict[str, Any], jobs: list[dict[str, Any]]) -> Events:
            """Create `sender`, publish `jobs` (id, to, text...) for it, run the fleet until each job is final."""
            kind = sender["gateway"]
            monkeypatch.setattr(gateway_class(kind), "default_await_delivery_s", 1)
            await create_senders(redis, names, [{"accounts": [ACCOUNT], **sender}])
            body = {"sender": sender["id"], "account": ACCOUNT}
            items = [(f"{kind}.{sender['id']}", msgspec.json.encode(body | job), job["id"]) for job in jobs]
            async with Events.listen(amqp, names) as events:
                await publish_raw(amqp, names, items)
                async with fleet(settings, [kind], SendPolicy(concurrency=10)):
                    await events.wait_final([job["id"] for job in jobs], 30)
            return events

        return run


class TestMtsEndToEnd(EndToEnd):
    async def test_jobs_are_sent_and_delivered(self, run: Run) -> None:
        jobs = [
            {"id": "m1", "to": "+79161234567", "text": "Код 1234", "originator": "ACME"},
            {"id": "m2", "to": "+79167654321", "text": "hello"},
            {"id": "m3", "to": "+79160000000", "text": "nope", "originator": "OTHER"},  # not connected at MTS
        ]
        async with FakeMts(login="acme", password="pw", initial_status=300) as fake:
            sender = {
                "id": "s1",
                "gateway": "mts",
                "settings": {"login": "acme", "password": "pw", "base_url": fake.url},
            }
            events = await run(sender, jobs)

        basic = "Basic " + base64.b64encode(b"acme:pw").decode()
        assert all(r.headers["Authorization"] == basic for r in fake.requests)
        sent = [m for r in fake.requests if r.path == "/http-api/v1/messages" for m in r.json()["messages"]]
        sends = {m["to"][0]["message_id"]: m for m in sent}  # (a request may carry several jobs)
        assert sends["m1"] == {
            "content": {"short_text": "Код 1234"},
            "from": {"sms_address": "ACME"},
            "to": [{"msisdn": "79161234567", "message_id": "m1"}],
        }
        assert sends["m2"] == {
            "content": {"short_text": "hello"},
            "to": [{"msisdn": "79167654321", "message_id": "m2"}],
        }
        assert sends["m3"]["from"] == {"sms_address": "OTHER"}
        ids = {m.message_id: m.internal_id for m in fake.messages}
        assert set(ids) == {"m1", "m2"}
        lookups = [r.json() for r in fake.requests if r.path.endswith("/info")]
        assert sorted(lookups, key=str) == sorted(({"int_ids": [ids[j]]} for j in ("m1", "m2")), key=str)
        for job_id in ("m1", "m2"):
            trail = events.by_job[job_id]
            assert [e.state for e in trail] == ["accepted", "delivered"]
            assert {e.provider_message_id for e in trail} == {ids[job_id]}
        [rejected] = events.by_job["m3"]
        assert rejected.state == "rejected"
        assert rejected.error is not None
        assert rejected.error.code == "mts.403"

    async def test_a_batch_mts_refuses_is_sent_again_job_by_job(self, run: Run) -> None:
        """MTS refuses a whole request for one message in it (a sender name not connected): that job is
        rejected, and the others of its request are sent on their own."""
        jobs = [{"id": f"b{i}", "to": f"+7916123{i:04d}", "text": f"code {i}", "originator": "ACME"} for i in range(40)]
        jobs[5]["originator"] = "OTHER"  # not connected at MTS
        async with FakeMts(login="acme", password="pw", initial_status=300) as fake:
            settings = {"login": "acme", "password": "pw", "base_url": fake.url}
            # its slots 1 ms apart (each message takes one), so that several fall within a request's linger
            events = await run({"id": "s2", "gateway": "mts", "settings": settings, "rate_limit": 1000}, jobs)

        sizes = [len(r.json()["messages"]) for r in fake.requests if r.path == "/http-api/v1/messages"]
        assert max(sizes) > 1, sizes  # batched
        ids = {m.message_id: m.internal_id for m in fake.messages}
        assert len(ids) == 39
        for job in jobs:
            states = [e.state for e in events.by_job[job["id"]]]
            assert states == (["rejected"] if job["id"] == "b5" else ["accepted", "delivered"]), (job["id"], states)
