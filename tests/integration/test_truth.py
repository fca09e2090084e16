"""Delivery truth, case by case, on the real broker and Redis: numeric ids that never collide, ids reused by
another tenant, the routing key's authority, a job delivered twice while its send is in flight, reports
scoped by sender and number. (The fault-injection cases with their accounting are in `tests/chaos/test_truth.py`.)
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from gateways import gateway_class
from smsfleet.contracts import ClickEvent, ReportMessage, SendJob, State, encode, now
from smsfleet.segments import count
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.chaos.harness import (
    Events,
    TimedRequests,
    create_senders,
    fleet,
    job_body,
    loop_lag,
    max_per_window,
    smsc_sender,
    until,
)
from tests.fakes.smsc import FakeSmsc
from webhooks import Receiver, build_app
from workers import SendPolicy
from workers.admission import Admitter, Outcome
from workers.ledger import Ledger
from workers.ratelimit import RateLimiter
from workers.send import sender_rate

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
        admission = await admitter.admit(
            job, owner, 1e9, account="acme-at-smsc", numeric_ref=True, max_wait=1.0, lease_s=3600
        )
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
        "o", 1e9, account="another-account", numeric_ref=True, max_wait=1.0, lease_s=30,
    )  # fmt: skip
    assert other.ref != ""  # another account counts on its own


async def test_a_claim_given_up_unsent_goes_back_and_one_that_may_have_been_sent_is_reconciled_at_once(
    redis: aioredis.Redis, names: Names
) -> None:
    """`Ledger.release`, what a delivery that failed before it settled its job does (its admission reply lost
    to a Redis outage, say): a fresh claim on which nothing was sent goes back, and the next delivery sends at
    once; a claim whose provider call began, or that was taken over from a holder that may have reached the
    provider, is reconciled by the next delivery at once, not after its lease (an hour here)."""
    ledger = Ledger(redis, names)
    admitter = Admitter(ledger, RateLimiter(redis, names.redis_key("rate")))

    async def admit(job_id: str, owner: str) -> Outcome:
        job = SendJob(id=job_id, sender="s1", account="acme", to="+79161234567", text="hi")
        admission = await admitter.admit(job, owner, 1e9, account="acme", numeric_ref=False, max_wait=1.0, lease_s=3600)
        return admission.outcome

    assert await admit("unsent", "a") is Outcome.CALL
    assert await ledger.release("unsent", "a", called=False)
    assert await admit("unsent", "b") is Outcome.CALL  # claimed afresh: sent, not looked up
    assert await admit("called", "a") is Outcome.CALL
    assert await ledger.release("called", "a", called=True)
    assert await admit("called", "b") is Outcome.CALLING  # taken over at once: reconcile first
    assert await ledger.release("called", "b", called=False)  # b sent nothing, but a may have
    assert await admit("called", "c") is Outcome.CALLING
    assert not await ledger.release("called", "a", called=False)  # a holds the claim no more: nothing changes
    assert await admit("called", "d") is Outcome.BUSY


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


@pytest.mark.timeout(90)
async def test_senders_on_one_provider_account_share_its_rate_limit(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """A provider limits an account, not our sender records: two senders with the same SMSC login, 10/s each,
    send 10/s together, not 20; a third sender on another login has a bucket of its own."""
    rate, n = 10, 60
    async with FakeSmsc("acme", "pw", initial_status=1) as fake, FakeSmsc("other", "pw", initial_status=1) as other:
        fake.requests = TimedRequests()
        await create_senders(redis, names, [
            smsc_sender("a1", fake, ["acme"], rate_limit=rate),
            smsc_sender("a2", fake, ["acme"], rate_limit=rate),
            smsc_sender("b1", other, ["acme"], rate_limit=rate),
        ])  # fmt: skip
        jobs = [(s, f"{s}-{i}") for i in range(n // 2) for s in ("a1", "a2")] + [("b1", f"b1-{i}") for i in range(20)]
        quick = msgspec.structs.replace(settings, recheck_share=1.0)  # the sends are the subject
        async with Events.listen(amqp, names) as events, fleet(quick, ["smsc"], POLICY), loop_lag() as lag:
            for sender, job_id in jobs:
                await publish(amqp, names, f"smsc.{sender}", job_body(job_id, sender, "acme", "+79161234567", job_id))
            await until(lambda: all(events.final_states(j) for _, j in jobs), 60, "every job delivered")
    times = fake.requests.sends()
    span, worst = max(times) - min(times), max_per_window(times)
    print(f"\n{len(times)} sends of two senders on one account in {span:.1f} s: max {worst} a second")
    assert span >= (n - rate) / rate - 0.5  # 60 sends at 10/s together, not 20/s
    # the fake stamps arrivals in the loop the workers share: a loop held up L s can bunch L x rate stamps
    assert worst <= rate + math.ceil(lag[0] * rate)
    assert len(other.messages) == 20


def test_a_configured_account_limit_caps_a_senders_rate() -> None:
    """Play Mobile's limit (PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC) is its account's: a sender may go lower, never
    higher; where no limit is configured a sender's rate_limit replaces the kind's guessed default."""
    settings = Settings.from_env({"PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC": "49"})
    play = {"id": "p", "gateway": "playmobile", "accounts": ["a"], "settings": {"user_id": "u", "password": "p"}}
    smsc = {"id": "s", "gateway": "smsc", "accounts": ["a"], "settings": {"login": "l", "password": "p"}}

    def rate(doc: dict[str, object], limit: float | None) -> float:
        sender = parse_sender(doc | {"rate_limit": limit})
        return sender_rate(sender, gateway_class(sender.gateway)(sender.settings, None), settings)  # type: ignore[arg-type]

    assert (rate(play, None), rate(play, 10), rate(play, 500)) == (49, 10, 49)
    assert (rate(smsc, None), rate(smsc, 500)) == (30, 500)


LONG_LINK = "https://shop.acme.example.com/promotions/winter-2026/landing?utm_source=sms&utm_campaign=c42-winter"


@pytest.mark.timeout(60)
async def test_links_are_shortened_counted_after_and_clicks_are_events(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """A sender with `shorten_links`: the provider gets short links (a 2-part text becomes 1 part), the receiver
    sends a reader on with a 302, and the click is a `click.<sender>` event naming the job."""
    text = f"Winter sale: everything -30% until Sunday, only for our subscribers. See {LONG_LINK} or acme.ru/s"
    assert count(text).parts == 2
    async with FakeSmsc("acme", "pw", initial_status=1) as fake, amqp.channel() as channel:
        await create_senders(redis, names, [smsc_sender("s1", fake, ["acme"], shorten_links=True)])
        clicks = await channel.declare_queue(exclusive=True)
        await clicks.bind(names.events_exchange, "click.*")
        async with Events.listen(amqp, names) as events, fleet(settings, ["smsc"], POLICY):
            await publish(amqp, names, "smsc.s1", job_body("promo", "s1", "acme", "+79161234567", text))
            await until(lambda: events.final_states("promo"), 20, "the job delivered")
        [sent] = fake.messages
        assert LONG_LINK not in sent.text
        assert count(sent.text).parts == 1
        short = re.findall(r"http://hooks\.test/l/([0-9A-Za-z]{10})", sent.text)
        assert len(short) == 2
        async with TestClient(TestServer(build_app(Receiver(settings)))) as client:
            reply = await client.get(f"/l/{short[0]}", allow_redirects=False)
            assert (reply.status, reply.headers["Location"]) == (302, LONG_LINK)
            reply = await client.get(f"/l/{short[1]}", allow_redirects=False)
            assert reply.headers["Location"] == "http://acme.ru/s"
            assert (await client.get("/l/AAAAAAAAAA", allow_redirects=False)).status == 404
        event = msgspec.json.decode((await clicks.get(timeout=5)).body, type=ClickEvent)
        assert (event.job_id, event.sender, event.url, event.code) == ("promo", "s1", LONG_LINK, short[0])
