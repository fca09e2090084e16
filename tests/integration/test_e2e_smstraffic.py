"""SMS Traffic end to end: workers in this process, the real RabbitMQ and Redis, the fake SMS Traffic.

SMS Traffic has no `await_delivery_s` setting, so the class default is made 1 s: the status lookup that finds
the fake's final state runs within the test. `run_jobs` is the Devino end-to-end test's.
"""

from __future__ import annotations

import aio_pika
import pytest
import redis.asyncio as aioredis

from gateways.smstraffic import SmstrafficGateway
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.fakes.smstraffic import FakeSmsTraffic
from tests.integration.test_e2e_devino import run_jobs

LONG = "Your order is on its way. " * 8  # 208 characters of ASCII: two GSM parts


async def test_jobs_are_sent_looked_up_and_delivered(
    settings: Settings,
    amqp: aio_pika.abc.AbstractRobustConnection,
    redis: aioredis.Redis,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SmstrafficGateway, "default_await_delivery_s", 1)
    jobs = [
        {"id": "t1", "to": "+79161234567", "text": "Привет", "originator": "ACME"},
        {"id": "t2", "to": "+79167654321", "text": LONG},
        {"id": "t3", "to": "+79160000000", "text": "hi", "originator": "A-VERY-LONG-NAME"},  # 421 at SMS Traffic
    ]
    async with FakeSmsTraffic(login="acme", password="pw", initial_status="Delivered") as fake:
        url = fake.url + "/multi.php"
        sender = {"id": "st", "gateway": "smstraffic", "settings": {"login": "acme", "password": "pw", "url": url}}
        events = await run_jobs(settings=settings, amqp=amqp, redis=redis, names=names, sender=sender, jobs=jobs)

    auth = {"login": "acme", "password": "pw"}
    assert all((r.method, r.path) == ("POST", "/multi.php") for r in fake.requests)
    sends = {r.params["message"]: r.params for r in fake.requests if "operation" not in r.params}
    assert sends["Привет"] == auth | {
        "phones": "79161234567",
        "message": "Привет",
        "want_sms_ids": "1",
        "rus": "5",
        "originator": "ACME",
    }
    assert sends[LONG] == auth | {"phones": "79167654321", "message": LONG, "want_sms_ids": "1", "rus": "0"}
    assert sends["hi"]["originator"] == "A-VERY-LONG-NAME"

    ids = {m.text: m.sms_ids for m in fake.messages}
    assert [len(ids["Привет"]), len(ids[LONG])] == [1, 2]
    lookups = [r.params for r in fake.requests if r.params.get("operation") == "status"]
    assert all(p.keys() == {"login", "password", "operation", "sms_id"} and p["login"] == "acme" for p in lookups)
    assert {ids["Привет"][0], ids[LONG][0]} <= {p["sms_id"].split(",")[0] for p in lookups}

    for job_id, text, parts in (("t1", "Привет", 1), ("t2", LONG, 2)):
        trail = events.by_job[job_id]
        assert [e.state for e in trail] == ["accepted", "delivered"]
        assert {e.provider_message_id for e in trail} == {ids[text][0]}
        assert trail[0].parts == parts
    [refused] = events.by_job["t3"]
    assert refused.state == "rejected"
    assert refused.error is not None
    assert refused.error.code == "smstraffic.421"
