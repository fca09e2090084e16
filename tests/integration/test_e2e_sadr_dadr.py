"""End to end, for each gateway of the sadr/dadr family: jobs in, the exact GETs at the fake, events out.

A worker fleet (send + status) runs in-process on the real broker and Redis against the family's fake. The
kinds have no `await_delivery_s` setting, so the test makes the class default one second: each accepted job is
looked up once by `smsid` and comes out `delivered`; a job whose sender name the provider does not know comes
out `rejected` with the family's error code, without a lookup.
"""

from __future__ import annotations

import asyncio

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from gateways import gateway_class
from smsfleet.contracts import StatusEvent
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.fakes.sadr_dadr import FakeSadrDadr
from tests.integration.test_send_worker import publish, until
from workers import SendPolicy, run_workers

#: kind -> (endpoint path, settings beyond login/password/base_url, which the family also puts on the wire)
KINDS = {
    "sbermobile": ("/sendsms.php", {"client_id": "c-4217"}),
    "skymedia": ("/get/", {}),
    "intellin": ("/api/sendsms.php", {}),
}
JOBS = {  # job id -> (phone, originator, text)
    "j1": ("+79161234567", "ACME", "Ваш код 1234"),
    "j2": ("+79031112233", "ACME", "Order #2 & co: shipped"),
    "j3": ("+77012345678", "ACME", "hello"),
    "bad-sender": ("+79160000000", "NOPE", "never sent"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_jobs_to_events(
    *,
    kind: str,
    settings: Settings,
    amqp: aio_pika.abc.AbstractConnection,
    names: Names,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, extra = KINDS[kind]
    monkeypatch.setattr(gateway_class(kind), "default_await_delivery_s", 1)
    seen: dict[str, list[StatusEvent]] = {}

    async def collect(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = msgspec.json.decode(msg.body, type=StatusEvent)
        seen.setdefault(event.job_id, []).append(event)
        await msg.ack()

    def states(job_id: str) -> list[str]:
        return [e.state for e in seen.get(job_id, [])]

    async with (
        FakeSadrDadr("acme", "pw-1", path=path, extra=extra, senders={"ACME"}, initial_status="deliver") as fake,
        amqp.channel() as channel,
    ):
        config = {"login": "acme", "password": "pw-1", "base_url": fake.url} | extra
        doc = {"id": "s1", "gateway": kind, "accounts": ["acme"], "settings": config}
        await SenderRegistry(redis, names).create(parse_sender(doc))
        events = await channel.declare_queue(exclusive=True)
        await events.bind(names.events_exchange, "status.*")
        await events.consume(collect)
        stop = asyncio.Event()
        fleet = asyncio.create_task(
            run_workers(settings, gateways=[kind], status=True, policy=SendPolicy(concurrency=10), stop=stop)
        )
        try:
            await asyncio.sleep(0.5)  # consumers up
            for job_id, (to, originator, text) in JOBS.items():
                job = {
                    "id": job_id,
                    "sender": "s1",
                    "account": "acme",
                    "to": to,
                    "text": text,
                    "originator": originator,
                }
                await publish(amqp, names, f"{kind}.s1", msgspec.json.encode(job))
            await until(lambda: all("delivered" in states(j) for j in ("j1", "j2", "j3")) and states("bad-sender"))
        finally:
            stop.set()
            await asyncio.wait_for(fleet, 30)

    auth = {"user": "acme", "pwd": "pw-1"} | extra
    by_phone = {m.phone: m for m in fake.messages.values()}
    sends = {r.params["dadr"]: r for r in fake.sends()}
    assert sorted(sends) == sorted(to.lstrip("+") for to, _, _ in JOBS.values())
    for job_id, (to, originator, text) in JOBS.items():
        request = sends[to.lstrip("+")]
        assert (request.method, request.path, request.connection.lower()) == ("GET", path, "close")
        assert request.params == auth | {"sadr": originator, "dadr": to.lstrip("+"), "text": text}, job_id
    assert states("bad-sender") == ["rejected"]
    [refused] = seen["bad-sender"]
    assert refused.error is not None
    assert refused.error.code == f"{kind}.unknown_sender"
    assert refused.provider_message_id is None
    lookups = [r for r in fake.requests if "smsid" in r.params]
    for job_id in ("j1", "j2", "j3"):
        pid = by_phone[JOBS[job_id][0].lstrip("+")].id
        assert states(job_id) == ["accepted", "delivered"]
        assert [e.provider_message_id for e in seen[job_id]] == [pid, pid]
        assert [r.params for r in lookups if r.params["smsid"] == pid] == [auth | {"smsid": pid}]
    assert len(lookups) == 3
    assert len(fake.messages) == 3
