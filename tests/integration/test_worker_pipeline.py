"""The send and status workers end to end, in this process: real RabbitMQ and Redis, fake SMSC servers.

`run_workers` runs as a task with a `stop` event. Jobs are published as raw JSON with publisher confirms
(malformed ones too), and a queue bound to `status.*` before the first publish records every status event
(the helpers are `tests.chaos.harness`; the fault-injection tests that lived here are in `tests/chaos/`).
Each test then checks three ledgers against each other: the events (one final state per job, the expected
one), what the fake providers received (the valid jobs, each once, by SMSC id), and the dead queue (the jobs
that can never be sent, with their reason code).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from smsfleet.contracts import State
from smsfleet.settings import Settings
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import HEADER_REASON_CODE, Names
from tests.chaos.harness import SEND_PHP, Events, create_senders, fleet, job_body, phone, publish_raw, smsc_sender
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy

# -- helpers -----------------------------------------------------------------------------------------------


async def drain_dead(connection: aio_pika.abc.AbstractRobustConnection, names: Names) -> list[Any]:
    """Every message in `<ns>.dead`, taken off the queue."""
    found: list[Any] = []
    async with connection.channel() as channel:
        queue = await channel.get_queue(names.dead_queue, ensure=False)
        while (msg := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(msg)
    return found


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


# -- mixed jobs ------------------------------------------------------------------------------------------

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
        expected = Counter(msgspec.json.decode(c.body)["text"] for c in valid if c.sender == sender)
        assert Counter(m.text for m in fake.messages) == expected, f"{sender}: messages differ from the valid jobs"
        assert len({m.id for m in fake.messages}) == len(fake.messages), f"{sender}: two messages share an SMSC id"
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
