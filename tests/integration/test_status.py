"""Delivery status on the real broker and Redis: rechecks on time, the horizon, early and disordered reports,
and a worker killed in the middle of its rechecks."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from smsfleet import metrics
from smsfleet.contracts import ReportMessage, SendJob, State, StatusEvent, encode, now
from smsfleet.senders import SenderRegistry, parse_sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.chaos.harness import TimedRequests, all_final, create_sender, publish_jobs, workers
from tests.fakes.smsc import FakeSmsc
from tests.integration.test_send_worker import fleet, until
from tests.integration.test_webhooks import path_of
from webhooks import Options, Receiver, build_app
from workers.ledger import Ledger

STATUS_PHP = "/sys/status.php"


class Events:
    """Status events of this namespace, in order of arrival."""

    def __init__(self) -> None:
        self.seen: list[StatusEvent] = []

    async def on_message(self, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.seen.append(msgspec.json.decode(msg.body, type=StatusEvent))
        await msg.ack()

    def states(self, job_id: str) -> list[str]:
        return [e.state.value for e in self.seen if e.job_id == job_id]


async def listen(channel: aio_pika.abc.AbstractChannel, names: Names) -> Events:
    events = Events()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(names.events_exchange, "status.*")
    await queue.consume(events.on_message)
    return events


async def smsc_sender(
    redis: aioredis.Redis, names: Names, fake: FakeSmsc, await_s: int, rate_limit: float | None = None
) -> None:
    settings = {"login": fake.login, "password": fake.password, "await_delivery_s": await_s, "base_url": fake.url}
    doc = {"id": "s1", "gateway": "smsc", "accounts": ["acme"], "settings": settings, "rate_limit": rate_limit}
    await SenderRegistry(redis, names).create(parse_sender(doc))


def job(job_id: str, sender: str = "s1", phone: str = "+79161234567") -> bytes:
    return msgspec.json.encode(SendJob(id=job_id, sender=sender, account="acme", to=phone, text="hi"))


async def test_the_first_recheck_waits_await_delivery_and_polls_to_delivered(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    async with FakeSmsc("acme", "pw") as fake:  # messages stay "handed to the operator" until set
        fake.requests = TimedRequests()
        await smsc_sender(redis, names, fake, await_s=5)
        async with amqp.channel() as channel, fleet(settings, ["smsc"]):
            events = await listen(channel, names)
            exchange = await channel.get_exchange(names.send_exchange)
            await exchange.publish(message(job("p1")), routing_key="smsc.s1")
            await until(lambda: fake.messages)
            fake.set_status(fake.messages[0].id, "79161234567", 1)
            await until(lambda: "delivered" in events.states("p1"), within=15)
    sent_at = next(t for t, (path, _) in zip(fake.requests.times, fake.requests, strict=True) if path != STATUS_PHP)
    checks = [t for t, (path, _) in zip(fake.requests.times, fake.requests, strict=True) if path == STATUS_PHP]
    assert checks, "no status lookup"
    assert checks[0] - sent_at >= 5.0, f"first lookup {checks[0] - sent_at:.2f} s after the send"
    assert events.states("p1") == ["accepted", "delivered"]


async def test_a_message_never_finalised_ends_unknown_at_the_horizon(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    short = msgspec.structs.replace(settings, status_horizon_s=4.0)
    async with FakeSmsc("acme", "pw") as fake:
        await smsc_sender(redis, names, fake, await_s=1)
        async with amqp.channel() as channel, fleet(short, ["smsc"]):
            events = await listen(channel, names)
            exchange = await channel.get_exchange(names.send_exchange)
            await exchange.publish(message(job("h1")), routing_key="smsc.s1")
            await until(lambda: "unknown" in events.states("h1"), within=15)
    final = next(e for e in events.seen if e.job_id == "h1" and e.state.value == "unknown")
    assert final.error is not None
    assert final.error.code == "no_final_report"
    assert sum(path == STATUS_PHP for path, _ in fake.requests) >= 2  # it kept asking until the horizon


async def test_early_duplicate_and_disordered_reports_give_one_final_state(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    # the sandbox takes 1.5 s to answer the send, so the reports below arrive before its reply is stored
    doc = {"id": "slow", "gateway": "sandbox", "accounts": ["acme"],
           "settings": {"latency_ms": 1500, "await_delivery_s": 3600}}  # fmt: skip
    sender = await SenderRegistry(redis, names).create(parse_sender(doc))
    url = path_of(receiving_url(sender, settings.public_url) or "")
    async with (
        amqp.channel() as channel,
        fleet(settings, ["sandbox"]),
        TestClient(TestServer(build_app(Receiver(settings)))) as client,
    ):
        events = await listen(channel, names)
        exchange = await channel.get_exchange(names.send_exchange)
        await exchange.publish(message(job("early", "slow")), routing_key="sandbox.slow")
        await asyncio.sleep(0.3)
        for state in ("delivered", "accepted", "delivered"):
            assert (await client.post(url, json={"job_id": "early", "state": state})).status == 200
        assert (await Ledger(redis, names).get("early")).get("phase") != "accepted"  # the reports came first
        await until(lambda: "delivered" in events.states("early"), within=20)
        await asyncio.sleep(2.0)  # time for any duplicate to show
    seen = Counter(events.states("early"))
    # one final state; the repeated `delivered` report publishes that state's event again (at least once)
    assert set(seen) == {"accepted", "delivered"}
    assert seen["accepted"] == 1


async def test_a_report_of_a_state_that_is_not_final_changes_nothing(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    doc = {"id": "quick", "gateway": "sandbox", "accounts": ["acme"], "settings": {"await_delivery_s": 3600}}
    await SenderRegistry(redis, names).create(parse_sender(doc))
    async with amqp.channel() as channel, fleet(settings, ["sandbox"]):
        events = await listen(channel, names)
        send = await channel.get_exchange(names.send_exchange)
        internal = await channel.get_exchange(names.internal_exchange)
        await send.publish(message(job("nf", "quick")), routing_key="sandbox.quick")
        await until(lambda: "accepted" in events.states("nf"))
        for state in (State.ACCEPTED, State.DELIVERED):  # as a gateway that reported `accepted` would publish it
            report = ReportMessage(gateway="sandbox", sender="quick", provider_message_id=None, job_id="nf",
                                   state=state, received_at=now())  # fmt: skip
            await internal.publish(message(encode(report)), routing_key="report.sandbox")
            await asyncio.sleep(0.5)
        await until(lambda: "delivered" in events.states("nf"))
    assert events.states("nf") == ["accepted", "delivered"]


async def test_a_recheck_that_another_delivery_finished_first_publishes_its_event_until_confirmed(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """A recheck's channel closes under it (its node stopped): the broker delivers it again at once, while the
    first delivery goes on. The first records the final state and then fails to publish its event (its channel is
    gone); the second, whose lookup was under way, finds the state recorded already. It must publish the event
    (the ledger says it is not confirmed), not take the job as done by someone else: nothing else would."""
    async with FakeSmsc("acme", "pw", initial_status=1) as fake:
        await smsc_sender(redis, names, fake, await_s=1)
        async with amqp.channel() as channel, fleet(settings, ["smsc"]):
            events = await listen(channel, names)
            exchange = await channel.get_exchange(names.send_exchange)
            await exchange.publish(message(job("twice")), routing_key="smsc.s1")
            await until(lambda: "accepted" in events.states("twice"))
            fake.latency = 1.0  # the recheck's lookup is under way for a second
            await until(lambda: any(path == STATUS_PHP for path, _ in fake.requests), within=10)
            # the first delivery, played here: its final state recorded, its event never confirmed
            assert await Ledger(redis, names).finish("twice", State.DELIVERED, "poll")
            await until(lambda: "delivered" in events.states("twice"), within=10)
            record = await Ledger(redis, names).get("twice")
    assert events.states("twice") == ["accepted", "delivered"]
    assert record["emitted"] == "1"


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(180)
async def test_a_worker_killed_mid_recheck_loses_no_recheck(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    n = 300
    job_ids = [f"mr-{i:03d}" for i in range(n)]
    async with FakeSmsc("acme", "pw", initial_status=1, latency=0.05) as fake:
        await create_sender(redis, names, fake)  # await_delivery_s 1
        await publish_jobs(amqp, names, "s1", job_ids)
        with workers(settings, tmp_path) as fleet_:
            first = fleet_.start()
            deadline = time.monotonic() + 60
            while sum(path == STATUS_PHP for path, _ in fake.requests) < n // 3:
                assert time.monotonic() < deadline, "rechecks did not start"
                await asyncio.sleep(0.01)
            first.kill()  # in the middle of the rechecks
            assert await fleet_.wait(first, 10) == -signal.SIGKILL
            second = fleet_.start()
            states = await all_final(redis, names, job_ids, 90)
            assert await fleet_.stop(second) == 0
    assert set(states.values()) == {"delivered"}


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_5000_jobs_with_pushed_and_polled_reports_each_get_one_final_event(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Half the jobs go to SMSC (polled), half to a sandbox sender whose reports are pushed to the receiver
    as a provider would, as soon as each job is accepted."""
    n = 2500
    doc = {
        "id": "push",
        "gateway": "sandbox",
        "accounts": ["acme"],
        "settings": {"latency_ms": 0, "await_delivery_s": 3600},
    }
    pusher = await SenderRegistry(redis, names).create(parse_sender(doc))
    url = path_of(receiving_url(pusher, settings.public_url) or "")
    matched = metrics.REPORTS.labels("sandbox", "matched")
    unmatched = metrics.REPORTS.labels("sandbox", "unmatched")
    matched_before, unmatched_before = matched._value.get(), unmatched._value.get()
    async with FakeSmsc("acme", "pw", initial_status=1) as fake:
        await smsc_sender(redis, names, fake, await_s=1, rate_limit=2000)  # SMSC's default 30/s: 3 minutes
        async with (
            amqp.channel() as channel,
            fleet(settings, ["smsc", "sandbox"]),
            TestClient(TestServer(build_app(Receiver(settings, options=Options(rate_limit=0))))) as client,
        ):
            events = await listen(channel, names)
            exchange = await channel.get_exchange(names.send_exchange)
            for i in range(n):
                phone = f"+7916{i:07d}"
                await exchange.publish(message(job(f"poll-{i}", "s1", phone)), routing_key="smsc.s1")
                await exchange.publish(message(job(f"push-{i}", "push", phone)), routing_key="sandbox.push")
            read, delivered = 0, set()

            async def push_accepted() -> bool:
                nonlocal read
                fresh, read = events.seen[read:], len(events.seen)
                for event in fresh:
                    if event.state.value == "delivered":
                        delivered.add(event.job_id)
                    elif event.state.value == "accepted" and event.job_id.startswith("push-"):
                        body = {"id": event.provider_message_id, "state": "delivered"}
                        assert (await client.post(url, json=body)).status == 200
                return len(delivered) == 2 * n

            await until(push_accepted, within=200)
            await asyncio.sleep(2.0)  # time for any duplicate to show
    finals = Counter(e.job_id for e in events.seen if e.state.value != "accepted")
    assert len(finals) == 2 * n
    assert set(finals.values()) == {1}, "a job with more than one final event"
    assert matched._value.get() - matched_before == n
    assert unmatched._value.get() == unmatched_before


async def test_rechecks_spend_at_most_their_share_of_the_senders_rate_and_sends_keep_the_rest(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    # 10 requests/s, a fifth of them for rechecks: 40 jobs accepted within ~4 s, then checked every second
    # (the fake never finalises them) while 20 more are sent; every 1-s window holds at most 2 lookups. Each job
    # has its own number: SMSC refuses the same text to the same number within a minute (then looked up)
    shared = msgspec.structs.replace(settings, recheck_share=0.2)
    async with FakeSmsc("acme", "pw") as fake:
        fake.requests = TimedRequests()
        await smsc_sender(redis, names, fake, await_s=1, rate_limit=10)
        async with amqp.channel() as channel, fleet(shared, ["smsc"]):
            exchange = await channel.get_exchange(names.send_exchange)
            for i in range(40):
                await exchange.publish(message(job(f"r{i}", phone=f"+7916100{i:04d}")), routing_key="smsc.s1")
            await until(lambda: len(fake.requests.sends()) == 40, within=15)
            await asyncio.sleep(2.0)  # the rechecks are under way
            second_wave = time.time()
            for i in range(20):
                await exchange.publish(message(job(f"w{i}", phone=f"+7916200{i:04d}")), routing_key="smsc.s1")
            await until(lambda: len(fake.requests.sends()) == 60, within=15)
            sent_in = fake.requests.sends()[-1] - second_wave
    lookups = [t for t, (path, _) in zip(fake.requests.times, fake.requests, strict=True) if path == STATUS_PHP]
    assert len(lookups) >= 6, f"only {len(lookups)} lookups"
    busiest = max(sum(t <= u < t + 1.0 for u in lookups) for t in lookups)
    assert busiest <= 2, f"{busiest} lookups in one second, of a share of 2/s"
    assert sent_in <= 20 / 8 + 1.0, f"20 sends took {sent_in:.1f} s beside the rechecks"  # >= 8/s of 10/s left
