"""Delivery truth, case by case, on the real broker and Redis: numeric ids that never collide, ids reused by
another tenant, the routing key's authority, a job delivered twice while its send is in flight, reports
scoped by sender and number. (The fault-injection cases with their accounting are in `tests/chaos/test_truth.py`.)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from gateways import gateway_class
from smsfleet.contracts import ReportMessage, SendJob, State, encode, now
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.chaos.harness import Events, create_senders, fleet, job_body, smsc_sender, until
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy
from workers.admission import Admitter, Outcome
from workers.ledger import Ledger
from workers.ratelimit import RateLimiter

POLICY = SendPolicy(concurrency=20)


async def publish(amqp: aio_pika.abc.AbstractConnection, names: Names, key: str, body: bytes) -> None:
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(names.send_exchange)
        await exchange.publish(message(body, message_id=msgspec.json.decode(body)["id"]), routing_key=key)


@pytest.mark.timeout(180)
async def test_200000_numeric_ids_are_distinct_and_stable(redis: aioredis.Redis, names: Names) -> None:
    """The numeric ids that SMSC and BulkSMS see come from a counter per account, kept in the job's record: the
    two job ids whose hashed ids collided get two, 200,000 jobs get 200,000, and a redelivery keeps its own."""
    ledger = Ledger(redis, names)
    admitter = Admitter(ledger, RateLimiter(redis, names.redis_key("rate")))
    gateway = gateway_class("smsc")
    assert gateway.numeric_ref

    async def ref(job_id: str, owner: str = "o") -> str:
        job = SendJob(id=job_id, sender="s1", account="acme", to="+79161234567", text="hi")
        admission = await admitter.admit(job, owner, 1e9, max_wait=1.0, lease_s=30, ref_space="smsc|acme")
        assert admission.outcome in (Outcome.CALL, Outcome.BUSY)
        return admission.ref

    pair = [await ref("c42-0031746"), await ref("c42-0060624")]
    assert pair[0] != pair[1]
    n, batch = 200_000, 5_000
    started = time.perf_counter()
    refs: list[str] = []
    for first in range(0, n, batch):
        refs += await asyncio.gather(*(ref(f"j{i}") for i in range(first, first + batch)))
    took = time.perf_counter() - started
    print(f"\n{n} ids allocated in {took:.1f} s ({n / took:,.0f}/s)")
    assert len(set(refs) | set(pair)) == n + 2
    assert all(r.isdigit() and 1 <= int(r) <= 2**31 - 1 for r in refs)
    assert await ref("j7", owner="another") == refs[7]  # a redelivery: the same id (the lease still runs: busy)
    other = await admitter.admit(
        SendJob(id="x", sender="s2", account="acme", to="+79161234567", text="hi"),
        "o", 1e9, max_wait=1.0, lease_s=30, ref_space="smsc|another-account",
    )  # fmt: skip
    assert other.ref != ""  # another account counts on its own


@pytest.mark.timeout(60)
async def test_an_id_reused_by_another_tenant_is_invalid_and_sends_nothing(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async with FakeSmsc("acme", "pw", initial_status=1) as fake, Events.listen(amqp, names, dead=True) as events:
        await create_senders(redis, names, [smsc_sender("s1", fake, ["acme"]), smsc_sender("s2", fake, ["beta"])])
        async with fleet(settings, ["smsc"], POLICY):
            await publish(amqp, names, "smsc.s1", job_body("dup-1", "s1", "acme", "+79161234567", "first tenant"))
            await until(lambda: State.DELIVERED in events.final_states("dup-1"), 20, "the first job delivered")
            await publish(amqp, names, "smsc.s2", job_body("dup-1", "s2", "beta", "+79167654321", "second tenant"))
            await publish(amqp, names, "smsc.s1", job_body("dup-1", "s1", "acme", "+79161234567", "first tenant"))
            await until(lambda: State.INVALID in events.final_states("dup-1"), 20, "the reused id refused")
            await asyncio.sleep(1.0)  # the same job again: replayed, not sent
    assert [m.text for m in fake.messages] == ["first tenant"]
    [invalid] = [e for e in events.finals("dup-1") if e.state is State.INVALID]
    assert (invalid.sender, invalid.error and invalid.error.code) == ("s2", "id_reused")
    assert invalid.provider_message_id is None
    assert all(e.provider_message_id == str(fake.messages[0].id) for e in events.finals("dup-1") if e.sender == "s1")
    assert events.parked["dup-1"]["x-smsfleet-reason-code"] == "id_reused"


@pytest.mark.timeout(60)
async def test_the_routing_key_names_the_sender(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """Broker permissions on routing keys can isolate tenants only if a body cannot name another sender."""
    async with FakeSmsc("acme", "pw", initial_status=1) as fake, Events.listen(amqp, names, dead=True) as events:
        doc = {"id": "tenantb", "gateway": "sandbox", "accounts": ["acme"]}
        await create_senders(redis, names, [smsc_sender("s1", fake, ["acme"]), doc])
        async with fleet(settings, ["smsc", "sandbox"], POLICY):
            await publish(amqp, names, "sandbox.tenantb", job_body("steal", "s1", "acme", "+79161234567"))
            await until(lambda: "steal" in events.parked, 20, "the job parked")
    assert fake.messages == []
    [invalid] = events.finals("steal")
    assert (invalid.state, invalid.error and invalid.error.code) == (State.INVALID, "sender_mismatch")


@pytest.mark.timeout(90)
async def test_a_duplicate_delivery_while_the_send_is_in_flight(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """A provider we cannot look a message up at, answering in 1.5 s; the job published twice at once. The
    second delivery waits for the first one's outcome instead of ending the job `unknown` and breaking its
    record: one `accepted`, the provider id mapped, the job delivered."""
    doc = {"id": "slow", "gateway": "sandbox", "accounts": ["acme"], "settings": {"latency_ms": 1500}}
    await SenderRegistry(redis, names).create(parse_sender(doc))
    assert not gateway_class("sandbox").can_find
    body = job_body("twice", "slow", "acme", "+79161234567")
    async with Events.listen(amqp, names) as events, fleet(settings, ["sandbox"], POLICY):
        await asyncio.gather(publish(amqp, names, "sandbox.slow", body), publish(amqp, names, "sandbox.slow", body))
        await until(lambda: State.DELIVERED in events.final_states("twice"), 60, "the job delivered")
        await asyncio.sleep(1.0)
    states = Counter(e.state.value for e in events.by_job["twice"])
    assert "unknown" not in states, states
    assert set(states) == {"accepted", "delivered"}
    record = await Ledger(redis, names).record("twice")
    assert record.provider_message_id is not None
    assert await Ledger(redis, names).job_of("slow", record.provider_message_id) == "twice"


@pytest.mark.timeout(60)
async def test_reports_are_scoped_by_sender_and_number(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """A report names a provider id; it finishes a job only of the sender it came for, and only when the
    number it names (if any) is the job's."""
    async with FakeSmsc("acme", "pw") as fake, Events.listen(amqp, names) as events:
        await create_senders(redis, names, [
            smsc_sender("s1", fake, ["acme"], settings={"await_delivery_s": 3600}),
            smsc_sender("s2", fake, ["acme"], settings={"await_delivery_s": 3600}),
        ])  # fmt: skip
        async with fleet(settings, ["smsc"], POLICY), amqp.channel() as channel:
            await publish(amqp, names, "smsc.s1", job_body("mine", "s1", "acme", "+79161234567"))
            await until(lambda: events.by_job.get("mine"), 20, "accepted")
            pid = str(fake.messages[0].id)
            internal = await channel.get_exchange(names.internal_exchange, ensure=False)

            async def report(sender: str, to: str | None, state: State, attempt: int = 1) -> None:
                msg = ReportMessage(
                    gateway="smsc", sender=sender, provider_message_id=pid, state=state, received_at=now(), to=to,
                    attempt=attempt, job_id="mine",
                )  # fmt: skip
                await internal.publish(message(encode(msg)), "report.smsc")

            await report("s2", None, State.UNDELIVERED, attempt=6)  # another sender's URL: not its job
            await report("s1", "+79160000000", State.UNDELIVERED, attempt=6)  # another number: not this job
            await asyncio.sleep(2.0)
            assert events.final_states("mine") == set()
            await report("s1", "+79161234567", State.DELIVERED)
            await until(lambda: events.final_states("mine"), 20, "the report applied")
            await report("s1", "+79161234567", State.DELIVERED)  # a repeat: the final event again, nothing else
            await until(lambda: len(events.finals("mine")) == 2, 20, "the final event published again")
    assert events.final_states("mine") == {State.DELIVERED}
    assert msgspec.json.decode((await Ledger(redis, names).get("mine"))["job"])["id"] == "mine"
