"""Delivery truth against providers that behave only as they document, and against a bad day.

- a worker killed mid-send and restarted after SMSC has forgotten the identical request (65 s): every job
  that reached SMSC is found by a status lookup and adopted, none is sent twice;
- two job ids whose old 31-bit hashes collided are two jobs, each with its own SMSC message and reports;
- the same job delivered twice while its send is in flight stays one job;
- Redis paused 20 s while delivery reports and STOPs arrive: every report applied, every STOP suppressed,
  nothing dead-lettered;
- a sender record that cannot be decoded does not stop the running workers from seeing new senders.

The cases without a fake SMSC of their own to count at (the 200,000 ids, ids reused across tenants) are in
`tests/integration/test_truth.py`.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from smsfleet.contracts import InboundMessage, ReportMessage, State, encode, now
from smsfleet.senders import SenderRegistry
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import message
from tests.chaos.harness import (
    SEND_PHP,
    Case,
    Events,
    Job,
    create_senders,
    fleet,
    job_body,
    phone,
    redis_away,
    smsc_sender,
    until,
    valid_jobs,
    workers,
)
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy, run_workers

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


@pytest.mark.timeout(300)
async def test_kill_9_then_restart_after_65_s(case: Case) -> None:
    """SMSC refuses an identical request for a minute only: a restart past that must look before it resends."""
    n, concurrency = 1000, 100
    fake = FakeSmsc("acme", "pw", latency=0.3, initial_status=1)
    async with case.backlog(fake, valid_jobs("late", n)) as events:
        with workers(case.settings, case.tmp_path) as fleet_:
            first = fleet_.start("--concurrency", str(concurrency))
            await until(lambda: len(fake.messages) >= n // 3, 60, f"{n // 3} messages sent", [first])
            first.kill()  # SIGKILL mid-send: replies lost, claims left in `calling`
            assert await fleet_.wait(first, 10) == -signal.SIGKILL
            await asyncio.sleep(1.0)  # the fake finishes what it was taking
            cut = sum(path == SEND_PHP for path, _ in fake.requests)
            case.books.note(f"killed after {len(fake.messages)} sent, {cut} asked; restarted 65 s later")
            await asyncio.sleep(65)  # past SMSC's one-minute memory of an identical request
            second = fleet_.start("--concurrency", str(concurrency))
            await case.settle(events, fake, timeout=150, procs=[second])
            assert await fleet_.stop(second) == 0, fleet_.log(second)


@pytest.mark.timeout(120)
async def test_ids_whose_hashes_collided_are_two_jobs(case: Case) -> None:
    """`c42-0031746` and `c42-0060624` shared a 31-bit sha256 prefix, the SMSC id of the first wave: each got
    the other's reports. Now each is its own message, and each ends with its own fate."""
    pair = ("c42-0031746", "c42-0060624")
    expect = (frozenset({State.DELIVERED.value}), frozenset({State.UNDELIVERED.value}))
    jobs = [
        Job(j, "smsc.s1", job_body(j, "s1", "acme", phone(i)), e)
        for i, (j, e) in enumerate(zip(pair, expect, strict=True))
    ]
    fake = FakeSmsc("acme", "pw")  # handed to the operator until the test says otherwise
    async with (
        case.backlog(fake, jobs, settings={"await_delivery_s": 1}) as events,
        fleet(case.settings, ["smsc"], SendPolicy(concurrency=10)) as task,
    ):
        await until(lambda: len(fake.messages) == 2, 30, "both sent", [task])
        first, second = sorted(fake.messages, key=lambda m: m.text != f"Your code is {pair[0]}")
        assert first.id != second.id
        fake.set_status(first.id, first.phone, 1)
        fake.set_status(second.id, second.phone, 20, err=6)
        await case.settle(events, fake, timeout=60, procs=[task])


@pytest.mark.timeout(120)
async def test_in_flight_duplicate_delivery(case: Case) -> None:
    """Each job is published twice at once to a provider that answers in 2 s: the second delivery finds the
    first at the provider (its claim's lease runs) and waits for its outcome, rather than end the job
    `unknown` or send it again; the first one's acceptance is recorded, so reports still match."""
    n = 50
    fake = FakeSmsc("acme", "pw", latency=2.0, initial_status=1)
    jobs = valid_jobs("twice", n)
    async with (
        case.backlog(fake, [*jobs, *jobs]) as events,
        fleet(case.settings, ["smsc"], SendPolicy(concurrency=2 * n)) as task,
    ):
        await case.settle(events, fake, timeout=90, procs=[task])
    accepted = [len([e for e in events.by_job[j.id] if e.state is State.ACCEPTED]) for j in jobs]
    case.books.note(f"accepted events per job: {min(accepted)}..{max(accepted)} (at least once)")
    for job in jobs:
        pids = {e.provider_message_id for e in events.by_job[job.id]}
        assert None not in pids, f"{job.id}: an event without the provider id: {events.by_job[job.id]}"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["paused", "refusing"])
async def test_redis_away_20_s_under_reports_and_stops(fault: str, case: Case) -> None:
    """Reports and STOPs that arrive while Redis is away are given back (not nacked: a quorum queue would
    dead-letter them after five returns) and applied once it is back. `paused`: Redis stopped with SIGSTOP, so
    calls hang until the client's 5-s timeout; `refusing`: Redis refuses every connection at once, as a stopped
    server does, so a worker that returned the message each time would spend its 5 deliveries in seconds."""
    n, stops, outage = 200, 50, 20.0
    fake = FakeSmsc("acme", "pw")  # handed to the operator: only our pushed reports deliver them
    stoppers = [phone(5_000_000 + i) for i in range(stops)]
    jobs = valid_jobs("rp", n)
    async with case.backlog(fake, jobs, dead=True, settings={"await_delivery_s": 3600}) as events:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_workers(case.settings, gateways=["smsc"], status=True, suppression=True, policy=SendPolicy(), stop=stop)
        )
        try:
            await until(lambda: len(fake.messages) == n, 60, "every job sent", [task])
            await until(lambda: all(events.by_job.get(j.id) for j in jobs), 30, "every job accepted", [task])
            async with case.amqp.channel(publisher_confirms=True) as channel:
                internal = await channel.get_exchange(case.names.internal_exchange, ensure=False)
                async with redis_away(fault, case.redis, case.settings.redis_url, outage):
                    for m in fake.messages:
                        report = ReportMessage(
                            gateway="smsc", sender="s1", provider_message_id=str(m.id), state=State.DELIVERED,
                            raw_status="1", received_at=now(), to="+" + m.phone,
                        )  # fmt: skip
                        await internal.publish(message(encode(report)), "report.smsc")
                    for i, number in enumerate(stoppers):
                        sms = InboundMessage(
                            id=f"in-{i}", gateway="smsc", sender="s1", from_=number, to="7575", text="STOP", at=now()
                        )
                        await internal.publish(message(encode(sms)), "inbound.smsc")
                    await asyncio.sleep(outage)
            case.books.note(f"Redis {fault} {outage:g} s while {n} reports and {stops} STOPs arrived")
            await case.settle(events, fake, timeout=90, procs=[task])
            store = SuppressionStore(case.redis, case.names)
            suppressed = [await store.is_suppressed("acme", number) for number in stoppers]
            assert all(suppressed), f"{suppressed.count(False)} STOPs not applied"
            assert not events.parked, f"dead-lettered: {list(events.parked)[:3]}"
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


@pytest.mark.timeout(90)
async def test_a_bad_sender_record_does_not_freeze_the_cache(case: Case) -> None:
    """A record that cannot be decoded is skipped: a sender created after it is still seen by running workers."""
    fake = FakeSmsc("acme", "pw", initial_status=1)
    async with (
        fake,
        Events.listen(case.amqp, case.names) as events,
        fleet(case.settings, ["smsc"], SendPolicy(concurrency=20)) as task,
    ):
        registry = SenderRegistry(case.redis, case.names)
        await case.redis.hset(case.names.senders_key, "broken", b"{not a sender")
        await case.redis.incr(case.names.senders_version_key)
        await case.redis.publish(case.names.senders_channel, "broken")
        await asyncio.sleep(1.0)
        await create_senders(case.redis, case.names, [smsc_sender("s1", fake, ["acme"])])
        assert await registry.get("s1") is not None
        await asyncio.sleep(1.0)  # the change reaches the running cache
        await case.books.publish(case.amqp, case.names, valid_jobs("after", 50))
        await case.settle(events, fake, timeout=45, procs=[task])
