"""The provider misbehaves: HTTP 500, 429 with Retry-After, no answer past the timeout, the connection reset
after it took the message; and, at random, 30 % 500s and 5 % timeouts over every request (SMSC, and BulkSMS's
batched requests).

The send and status workers run in this process (`run_workers`), so the provider timeout is a `SendPolicy`
field. Faults hit the first requests only (all sends: the first status lookups come a second later), so each
job needs one retry, whose backoff is 2.5-5 s, well within its attempts. An ambiguous send (timeout, reset) is
looked up at SMSC by our id and phone before anything is sent again: a message SMSC took is adopted (no
resend), one it never took is sent again. The fake does not deduplicate by our id (SMSC does not), so a blind
resend would show as a duplicate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import msgspec
import pytest

from smsfleet.contracts import State
from tests.chaos.harness import (
    Case,
    Job,
    TimedRequests,
    asked,
    fleet,
    job_body,
    provider,
    valid_jobs,
)
from tests.fakes.bulksms import FakeBulksms
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

POLICY = SendPolicy(concurrency=20, provider_timeout_s=2.0)

#: fault -> (how to inject it into the fake, how many sends must be made again)
FAULTS: dict[str, tuple[Callable[[FakeSmsc], None], int]] = {
    "500": (lambda fake: fake.http_status_next(10, 500), 10),  # transient: retried
    "hang": (lambda fake: fake.hang_next(5), 5),  # no answer, nothing taken: ambiguous, not found, sent again
    "reset_after_accept": (lambda fake: fake.reset_after_accept_next(5), 0),  # taken, no reply: found, adopted
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", FAULTS)
async def test_provider(fault: str, case: Case) -> None:
    inject, hit = FAULTS[fault]
    fake = FakeSmsc("acme", "pw", initial_status=1)
    async with case.backlog(fake, valid_jobs(fault, 20)) as events:
        inject(fake)
        async with fleet(case.settings, ["smsc"], POLICY) as task:
            row = await case.settle(events, fake, timeout=40, procs=[task])
    assert row.resends == hit, f"{hit} sends must have been made again, not {row.resends}"


#: the same faults on batched requests (BulkSMS): each hits every job of its request
BATCH_FAULTS: dict[str, Callable[[FakeBulksms], None]] = {
    "500": lambda fake: fake.http_status_next(2, 500),  # transient: the whole request's jobs retried
    "hang": lambda fake: fake.hang_next(2),  # ambiguous: searched by our ids, not found, sent again
    "reset_after_accept": lambda fake: fake.reset_after_accept_next(2),  # taken, no reply: found, adopted
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", BATCH_FAULTS)
async def test_provider_batched(fault: str, case: Case) -> None:
    """40 jobs in requests of up to 20; the books hold every job to one message at the provider, delivered."""
    fake = provider("bulksms")
    async with case.backlog(fake, valid_jobs(f"b{fault}", 40, kind="bulksms")) as events:
        BATCH_FAULTS[fault](fake)
        async with fleet(case.settings, ["bulksms"], POLICY) as task:
            await case.settle(events, fake, timeout=40, procs=[task])
    case.books.note(f"{fake.send_requests} send requests for 40 jobs")


@pytest.mark.timeout(60)
async def test_provider_429_with_retry_after(case: Case) -> None:
    """The first send gets 429 with `Retry-After: 4`: the worker pauses the whole sender for 4 s (sends whose
    slot was reserved before still go, at most `max_rate_wait_s` ahead), and retries that job."""
    n, rate, retry_after = 40, 10, 4.0
    fake = FakeSmsc("acme", "pw", initial_status=1)
    fake.requests = requests = TimedRequests()
    async with case.backlog(fake, valid_jobs("429", n), rate_limit=rate) as events:
        fake.http_status_next(1, 429, {"Retry-After": f"{retry_after:g}"})
        # the status lookups that follow may use the whole rate (not a fifth): the case ends sooner, as they do
        settings = msgspec.structs.replace(case.settings, recheck_share=1.0)
        async with fleet(settings, ["smsc"], POLICY) as task:
            row = await case.settle(events, fake, timeout=40, procs=[task])
    times = requests.sends()
    limited = times[0]  # the first request got the 429
    paused = [t - limited for t in times if limited + POLICY.max_rate_wait_s + 0.2 < t < limited + retry_after - 0.1]
    case.books.note(f"sends while paused: {len(paused)}")
    assert not paused, f"sends during the provider's pause, at {[round(t, 2) for t in paused]} s"
    assert max(times) > limited + retry_after
    assert row.resends == 1


# Tokelau mobile numbers: valid E.164, but only 7 digits, which SMSC refuses with error 7 (bad number format).
SHORT_NUMBERS = [f"+690{n}" for n in range(7200, 7300)]


@pytest.mark.timeout(150)
async def test_random_500s_and_timeouts(case: Case) -> None:
    """HTTP 500 on 30 % of requests and no answer on 5 %, three attempts: retries, reconciliation, permanent
    refusals. A job may run out of attempts: `failed` when nothing may have been sent, `unknown` when a send
    went unanswered and the lookups that followed failed too (SMSC may have it: we cannot say). None may end
    otherwise, or be sent twice."""
    n_valid, n_short = 180, 20
    policy = SendPolicy(concurrency=100, max_attempts=3, provider_timeout_s=0.5)
    given_up = frozenset({State.FAILED.value, State.UNKNOWN.value})
    short = [
        Job(j, "smsc.s1", job_body(j, "s1", "acme", SHORT_NUMBERS[i]), given_up | {State.REJECTED.value})
        for i, j in enumerate(f"short-{i:04d}" for i in range(n_short))
    ]
    fake = FakeSmsc("acme", "pw", failure_rate=0.3, timeout_rate=0.05, seed=7, initial_status=1)
    jobs = [*valid_jobs("ok", n_valid, expect=given_up | {State.DELIVERED.value}), *short]
    # await_delivery_s 1 (the least a sender may set): the first recheck after a second; a failed lookup is
    # asked again at the same pace, a pending one with backoff
    async with (
        case.backlog(fake, jobs, settings={"await_delivery_s": 1}) as events,
        fleet(case.settings, ["smsc"], policy) as task,
    ):
        row = await case.settle(events, fake, timeout=120, procs=[task])
    case.books.note(f"requests {dict(Counter(path for path, _ in fake.requests))}")
    for job in short:  # a refusal is SMSC's error 7, reported once
        if events.final_states(job.id) == {State.REJECTED}:
            assert [e.error.code for e in events.finals(job.id) if e.error] == ["smsc.7"], job.id
    assert row.states.get(State.DELIVERED.value, 0) >= n_valid * 0.8  # 0.335 ** 3: about 4 % run out of attempts


@pytest.mark.timeout(150)
async def test_random_500s_and_timeouts_batched(case: Case) -> None:
    """The same faults on BulkSMS's batched requests, where one hits every job of its request: a 500 retries
    them all; a request left unanswered has each of its jobs searched for by our id before anything is sent
    again (the searches and the status lookups meet the faults too). None may be sent twice."""
    n = 200
    policy = SendPolicy(concurrency=100, max_attempts=3, provider_timeout_s=0.5)
    given_up = frozenset({State.FAILED.value, State.UNKNOWN.value})
    fake = FakeBulksms("acme", "pw", initial_status="DELIVERED", failure_rate=0.3, timeout_rate=0.05, seed=7)
    jobs = valid_jobs("okb", n, expect=given_up | {State.DELIVERED.value}, kind="bulksms")
    async with case.backlog(fake, jobs) as events, fleet(case.settings, ["bulksms"], policy) as task:
        row = await case.settle(events, fake, timeout=120, procs=[task])
    sends = [asked(fake, seen) for seen in fake.requests if asked(fake, seen)]
    case.books.note(f"{len(sends)} send requests of {max(sends)} messages at most, {len(fake.requests)} in all")
    assert max(sends) > 1, "no request carried more than one job"
    # a request's jobs share its fate: far fewer independent draws than jobs, so a looser bound than SMSC's
    assert row.states.get(State.DELIVERED.value, 0) >= n * 0.5
