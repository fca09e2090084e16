"""The send and status workers end to end, in this process: real RabbitMQ and Redis, fake SMSC servers.

`run_workers` runs as a task with a `stop` event. Jobs are published as raw JSON with publisher confirms
(malformed ones too), and an exclusive queue bound to `status.*` before the first publish records every
status event. Each test then checks three ledgers against each other: the events (one final state per job,
the expected one), what the fake providers received (the valid jobs, each once, by SMSC id), and the dead
queue (the jobs that can never be sent, with their reason code).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from gateways.smsc import smsc_id
from smsfleet.contracts import State
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import HEADER_REASON_CODE, Names, message
from tests.fakes.smsc import FakeSmsc
from tests.integration.test_worker_chaos import Events
from workers import SendPolicy, run_workers

SEND_PHP = "/sys/send.php"


# -- helpers -----------------------------------------------------------------------------------------------


async def publish_raw(
    connection: aio_pika.abc.AbstractRobustConnection,
    names: Names,
    items: Sequence[tuple[str, bytes, str]],
    in_flight: int = 500,
) -> None:
    """Publish `(routing_key, body, message_id)` to `<ns>.send`: persistent, mandatory, confirmed."""
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
        exchange = await channel.get_exchange(names.send_exchange, ensure=False)
        slots = asyncio.Semaphore(in_flight)

        async def one(key: str, body: bytes, message_id: str) -> None:
            async with slots:
                await exchange.publish(message(body, message_id=message_id), key, mandatory=True, timeout=30)

        await asyncio.gather(*(one(*item) for item in items))


async def drain_dead(connection: aio_pika.abc.AbstractRobustConnection, names: Names) -> list[Any]:
    """Every message in `<ns>.dead`, taken off the queue."""
    found: list[Any] = []
    async with connection.channel() as channel:
        queue = await channel.get_queue(names.dead_queue, ensure=False)
        while (msg := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(msg)
    return found


@contextlib.asynccontextmanager
async def fleet(settings: Settings, gateways: Sequence[str], policy: SendPolicy) -> AsyncIterator[asyncio.Task[None]]:
    """`run_workers` as a task, stopped (and drained) on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_workers(settings, gateways=gateways, status=True, policy=policy, grace_s=5.0, stop=stop)
    )
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def create_senders(redis: aioredis.Redis, names: Names, docs: Iterable[dict[str, Any]]) -> None:
    registry = SenderRegistry(redis, names)
    for doc in docs:
        await registry.create(parse_sender(doc))


def smsc_sender(sender_id: str, fake: FakeSmsc, accounts: Sequence[str], **extra: Any) -> dict[str, Any]:
    settings = {"login": fake.login, "password": fake.password, "await_delivery_s": 1, "base_url": fake.url}
    settings |= extra.pop("settings", {})
    return {"id": sender_id, "gateway": "smsc", "accounts": list(accounts), "settings": settings,
            "rate_limit": 1e6, **extra}  # fmt: skip


def phone(i: int) -> str:
    return f"+7916{i % 10_000_000:07d}"


def job_body(job_id: str, sender: str, account: str, to: str, text: str = "", **extra: Any) -> bytes:
    doc = {
        "id": job_id,
        "sender": sender,
        "account": account,
        "to": to,
        "text": text or f"Your code is {job_id}",
    }
    return msgspec.json.encode(doc | extra)


@dataclass(frozen=True)
class Case:
    """One published message and what must become of it."""

    job_id: str
    routing_key: str
    body: bytes
    state: State
    code: str | None = None  # the error code of the final event, where there is one
    sender: str | None = None  # the sender whose fake must receive it (valid jobs only)
    dead: bool = False  # parked in `<ns>.dead` with this code as `x-smsfleet-reason-code`


# -- (a) mixed jobs ------------------------------------------------------------------------------------------

VERIFIED = [phone(9_000_000 + i) for i in range(10)]


def mixed_cases(scale: int) -> list[Case]:
    """About 1,000 * `scale` messages over three SMSC senders: every way a job can end."""
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    cases: list[Case] = []

    def add(
        count: int,
        state: State,
        code: str | None = None,
        *,
        sender: str = "s1",
        account: str = "acme",
        to: Callable[[int], str] = phone,
        key: str | None = None,
        raw: Callable[[str, int], bytes] | None = None,
        **fields: Any,
    ) -> None:
        for _ in range(count * scale):
            i = len(cases) + 1
            job_id = f"mix-{i:06d}"
            body = raw(job_id, i) if raw else job_body(job_id, sender, account, to(i), **fields)
            sent = sender if state is State.DELIVERED else None
            dead = state is State.INVALID or code == "unknown_sender"
            cases.append(Case(job_id, key or f"smsc.{sender}", body, state, code, sent, dead))

    # valid: accepted, then delivered
    add(300, State.DELIVERED)
    add(100, State.DELIVERED, valid_until=future)
    add(150, State.DELIVERED, sender="s2", account="beta", to=lambda i: VERIFIED[i % len(VERIFIED)])
    add(100, State.DELIVERED, sender="s3", account="gamma", originator="ACME")
    add(20, State.DELIVERED, key="sandbox.s1")  # the wrong gateway's queue: re-routed first
    # refused before anything is sent
    add(40, State.SUPPRESSED, "suppressed", to=lambda i: phone(1_000_000 + i))  # the account's list
    add(40, State.SUPPRESSED, "suppressed", sender="s2", account="beta", to=lambda i: phone(2_000_000 + i))
    add(40, State.REJECTED, "phone_not_verified", sender="s2", account="beta")
    add(40, State.REJECTED, "caller_id_not_verified", sender="s3", account="gamma", originator="EVIL")
    add(40, State.REJECTED, "account_not_assigned", account="zeta")
    add(40, State.REJECTED, "too_many_parts", text="a" * (153 * 10 + 1))  # 11 parts; SMSC allows 10
    add(40, State.EXPIRED, "expired", sender="s3", account="gamma", valid_until=past)
    add(20, State.REJECTED, "unknown_sender", sender="nosuch")
    # malformed: `invalid`, and parked in the dead queue
    add(20, State.INVALID, "malformed", raw=lambda j, i: b'{"id": "' + j.encode() + b'", "sender": ')
    add(
        20,
        State.INVALID,
        "schema",
        raw=lambda j, i: msgspec.json.encode({"id": j, "sender": "s1", "to": phone(i)}),
    )
    add(20, State.INVALID, "bad_phone", to=lambda i: "12345")
    add(10, State.INVALID, "empty_text", text="  ")
    add(10, State.INVALID, "bad_valid_until", valid_until="2030-01-01T00:00:00")
    return cases


async def run_mixed(
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    *,
    scale: int,
    timeout: float,  # noqa: ASYNC109 - how long to wait for final states
) -> None:
    cases = mixed_cases(scale)
    async with (
        FakeSmsc("acme1", "pw1", initial_status=1) as f1,
        FakeSmsc("acme2", "pw2", initial_status=1) as f2,
        FakeSmsc("acme3", "pw3", initial_status=1) as f3,
    ):
        fakes = {"s1": f1, "s2": f2, "s3": f3}
        await create_senders(redis, names, [
            smsc_sender("s1", f1, ["acme"]),
            smsc_sender("s2", f2, ["acme", "beta"], verified_phones=VERIFIED),
            smsc_sender("s3", f3, ["gamma"], verified_caller_ids=["ACME"]),
        ])  # fmt: skip
        store = SuppressionStore(redis, names)
        await store.add([phone(1_000_000 + i) for i in range(1, len(cases) + 1)], ["acme"])
        await store.add([phone(2_000_000 + i) for i in range(1, len(cases) + 1)], [None])

        started = time.monotonic()
        async with Events.listen(amqp, names) as events:
            await publish_raw(amqp, names, [(c.routing_key, c.body, c.job_id) for c in cases])
            published = time.monotonic()
            policy = SendPolicy(concurrency=200)
            async with fleet(settings, ["smsc", "sandbox"], policy):
                await events.wait_final([c.job_id for c in cases], timeout, ledger=(redis, names))
                done = time.monotonic()
            dead = await drain_dead(amqp, names)
        print(f"\n{len(cases)} jobs: published in {published - started:.1f} s, "
              f"all final {done - published:.1f} s later")  # fmt: skip

    # events: exactly one final event per job, with the expected state and error code
    wrong = []
    for c in cases:
        finals = events.finals(c.job_id)
        got = [(e.state, e.error.code if e.error else None) for e in finals]
        if got != [(c.state, c.code)]:
            wrong.append((c.job_id, (c.state, c.code), got))
    assert not wrong, f"{len(wrong)} jobs ended wrongly, e.g. {wrong[:5]}"
    accepted = Counter(j for j, evs in events.by_job.items() for e in evs if e.state is State.ACCEPTED)
    valid = [c for c in cases if c.sender is not None]
    assert accepted == Counter(c.job_id for c in valid), "one `accepted` event per valid job, none for others"
    by_state = Counter(c.state for c in cases)
    print("final states:", {str(s): n for s, n in sorted(by_state.items())})

    # the fakes: exactly the valid jobs, each once, on its own sender's account
    for sender, fake in fakes.items():
        expected = Counter(smsc_id(c.job_id) for c in valid if c.sender == sender)
        assert Counter(m.id for m in fake.messages) == expected, f"{sender}: messages differ from the valid jobs"
        sends = sum(path == SEND_PHP for path, _ in fake.requests)
        assert sends == expected.total(), f"{sender}: {sends} send requests for {expected.total()} jobs"

    # the dead queue: the jobs that can never be sent, with their reason
    want_dead = {c.body: c.code for c in cases if c.dead}
    got_dead = {m.body: (m.headers or {}).get(HEADER_REASON_CODE) for m in dead}
    assert len(dead) == len(want_dead)
    assert got_dead == want_dead


async def test_mixed_jobs_each_end_once_in_the_expected_state(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    await run_mixed(settings, names, redis, amqp, scale=1, timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_mixed_jobs_at_ten_thousand(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    await run_mixed(settings, names, redis, amqp, scale=10, timeout=240)


# -- (b) faults ----------------------------------------------------------------------------------------------

# Tokelau mobile numbers: valid E.164, but only 7 digits, which SMSC refuses with error 7 (bad number format).
SHORT_NUMBERS = [f"+690{n}" for n in range(7200, 7300)]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_faults_every_job_reaches_one_final_state(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """HTTP 500 on 30 % of requests and no answer on 5 %: retries, reconciliation, permanent refusals."""
    n_valid, n_short = 180, 20
    policy = SendPolicy(concurrency=100, max_attempts=3, provider_timeout_s=0.5)
    async with FakeSmsc("acme", "pw", failure_rate=0.3, timeout_rate=0.05, seed=7, initial_status=1) as fake:
        # await_delivery_s 0: rechecks come every second (the smallest delay tier), so a failed lookup
        # costs a second, not a doubling backoff
        await create_senders(redis, names, [smsc_sender("s1", fake, ["acme"], settings={"await_delivery_s": 0})])
        valid = [f"ok-{i:04d}" for i in range(n_valid)]
        short = [f"short-{i:04d}" for i in range(n_short)]
        items = [("smsc.s1", job_body(j, "s1", "acme", phone(i)), j) for i, j in enumerate(valid)]
        items += [("smsc.s1", job_body(j, "s1", "acme", SHORT_NUMBERS[i]), j) for i, j in enumerate(short)]
        started = time.monotonic()
        async with Events.listen(amqp, names) as events:
            await publish_raw(amqp, names, items)
            async with fleet(settings, ["smsc"], policy):
                await events.wait_final(valid + short, timeout=150, ledger=(redis, names))
        elapsed = time.monotonic() - started

    finals = {j: {e.state for e in events.finals(j)} for j in valid + short}
    assert all(len(states) == 1 for states in finals.values()), "a job has two different final states"
    outcome = Counter(next(iter(s)) for s in finals.values())
    attempts = Counter(path for path, _ in fake.requests)
    print(f"\n{n_valid + n_short} jobs final in {elapsed:.1f} s: {dict(outcome)}; requests {dict(attempts)}")

    # a permanent refusal is reported once, and nothing was sent
    for j in short:
        (state,) = finals[j]
        assert state in (State.REJECTED, State.FAILED), (j, state)
        codes = [e.error.code for e in events.finals(j) if e.error]
        if state is State.REJECTED:
            assert codes == ["smsc.7"], (j, codes)
    # a valid job is delivered or gives up after its attempts; none is sent twice
    for j in valid:
        assert finals[j] <= {State.DELIVERED, State.FAILED}, (j, finals[j])
    per_id = Counter(m.id for m in fake.messages)
    assert max(per_id.values()) == 1
    delivered = {j for j in valid if finals[j] == {State.DELIVERED}}
    assert set(per_id) >= {smsc_id(j) for j in delivered}
    assert outcome[State.DELIVERED] >= n_valid * 0.8  # 0.335 ** 3: about 4 % run out of attempts


# -- (c) poison ----------------------------------------------------------------------------------------------


async def test_a_job_that_crashes_its_handler_is_parked_without_blocking_others(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """A sender whose endpoint makes the HTTP client raise a non-gateway error (`UnicodeError` from the
    IDNA codec for `http://a..b`): every delivery of its job crashes the handler after the claim, so the
    quorum queue's delivery limit must dead-letter it, while the other jobs are delivered."""
    async with FakeSmsc("acme", "pw", initial_status=1) as fake:
        await create_senders(redis, names, [
            smsc_sender("s1", fake, ["acme"]),
            smsc_sender("broken", fake, ["acme"], settings={"base_url": "http://a..b"}),
        ])  # fmt: skip
        healthy = [f"ok-{i:03d}" for i in range(50)]
        items = [("smsc.broken", job_body("poison-1", "broken", "acme", phone(999)), "poison-1")]
        items += [("smsc.s1", job_body(j, "s1", "acme", phone(i)), j) for i, j in enumerate(healthy)]
        async with Events.listen(amqp, names) as events:
            await publish_raw(amqp, names, items)
            async with fleet(settings, ["smsc"], SendPolicy(concurrency=20)):
                await events.wait_final(healthy, timeout=30, ledger=(redis, names))
                dead: list[Any] = []
                deadline = time.monotonic() + 20
                while not dead and time.monotonic() < deadline:
                    dead = await drain_dead(amqp, names)
                    await asyncio.sleep(0.2)

    assert all(events.finals(j)[0].state is State.DELIVERED for j in healthy)
    assert len(fake.messages) == len(healthy)
    assert [m.message_id for m in dead] == ["poison-1"], "the poison job was not dead-lettered"
    headers = dead[0].headers or {}
    assert headers.get("x-first-death-reason") == "delivery_limit", headers
