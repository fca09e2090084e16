"""Redis stops answering (the local redis-server is sent SIGSTOP, then SIGCONT): while the worker rate-limits
(one request a job, and batched), and right after the provider accepted messages, while their `accepted`
ledger writes are due.

A worker that cannot reach Redis stops taking jobs and never sends unthrottled; bookkeeping after a provider
call is retried for ~30 s (`_until_done` in workers/send.py), so an accepted message is neither lost nor sent
again.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from smsfleet.contracts import State
from tests.chaos.harness import (
    DELIVERED,
    Case,
    Provider,
    TimedRequests,
    asked,
    loop_lag,
    max_per_window,
    paused,
    provider,
    redis_pid,
    send_times,
    until,
    valid_jobs,
    workers,
)
from tests.fakes.bulksms import FakeBulksms

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


#: kind -> jobs, the sender's rate (messages a second; Play Mobile: requests), the worker's concurrency. BulkSMS
#: at 200 messages a second, so that jobs whose slots fall within the 5-ms linger share a request; Play Mobile
#: at 10 requests a second of up to 6 messages, so that its request slots, not the jobs, set the pace
RATE_LIMITED = {"smsc": (500, 49, 50), "bulksms": (1200, 200, 200), "playmobile": (360, 10, 6)}
#: what each kind's jobs end as: delivered at once where the status can be asked, else `unknown` at the horizon
EXPECTED = {"smsc": DELIVERED, "bulksms": DELIVERED, "playmobile": frozenset({State.UNKNOWN.value})}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", RATE_LIMITED)
async def test_redis_paused_during_rate_limiting(case: Case, kind: str) -> None:
    """Batched too: with BulkSMS each job takes its own slot, then shares a request; with Play Mobile each
    request takes one (from Redis, as its jobs move to `calling`)."""
    pid = await redis_pid(case.redis, case.settings.redis_url)
    (n, rate, concurrency), pause = RATE_LIMITED[kind], 10.0
    fake = provider(kind)
    fake.requests = TimedRequests()
    async with (
        case.backlog(fake, valid_jobs("rf", n, kind=kind, expect=EXPECTED[kind]), rate_limit=rate) as events,
        loop_lag() as lag,
    ):
        with workers(case.settings, case.tmp_path) as fleet:
            fleet.env["SMSFLEET_RECHECK_SHARE"] = "1"  # the sends are the subject: let rechecks finish quickly
            if kind == "playmobile":  # nothing to ask: its jobs end `unknown` at the horizon, 2 s after acceptance
                fleet.env["SMSFLEET_STATUS_HORIZON_S"] = "2"
            proc = fleet.start("--gateway", kind, "--concurrency", str(concurrency))
            await until(lambda: len(fake.messages) >= n // 5, 60, f"{n // 5} messages sent", [proc])
            with paused(pid):
                paused_at, sent_before = time.time(), len(fake.messages)
                await asyncio.sleep(pause)  # the outage itself
                sent_while_paused = len(fake.messages) - sent_before
            case.books.note(f"Redis paused {pause:g} s after {sent_before} sent; {sent_while_paused} sent meanwhile")
            await case.settle(events, fake, timeout=90, procs=[proc])
            assert await fleet.stop(proc) == 0, fleet.log(proc)
    times = send_times(fake)
    worst = max_per_window(times)
    unit = "requests" if kind == "playmobile" else "messages"
    requests = sum(asked(fake, seen) > 0 for seen in fake.requests)
    case.books.note(
        f"{len(fake.messages) / requests:.1f} messages a request; max {worst} {unit} in a 1-s window; "
        f"the fake's loop lagged <= {lag[0] * 1000:.0f} ms"
    )
    # the fake stamps a request when its loop gets to it: a loop held up for L s can stamp up to L x rate requests
    # that arrived apart as if they came together (as in tests/integration/test_worker_chaos.py)
    assert worst <= rate + math.ceil(lag[0] * rate)
    assert sent_while_paused <= 5, "sends went on without the rate limiter"
    assert max(times) > paused_at + pause  # and sending resumed by itself afterwards
    if isinstance(fake, FakeBulksms):  # searched for by our id only after a send that may have reached it
        searches = sum(seen.method == "GET" and "filter" in seen.query for seen in fake.requests)
        # a claim whose admission reply the outage cut off is given back as unsent once Redis answers; else its
        # job waits out the claim's 30-s lease and is then taken for an ambiguous send
        assert searches == 0, f"{searches} jobs were looked up as if a send of theirs may have reached BulkSMS"


def in_flight(fake: Provider) -> int:
    """Messages the fake was asked for and has not created yet (it answers after its latency)."""
    return sum(asked(fake, seen) for seen in fake.requests) - len(fake.messages)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", ["smsc", "bulksms"])
async def test_redis_paused_during_the_idempotency_write(case: Case, kind: str) -> None:
    """The provider answers in 2 s. Redis is paused (longer than the worker's 5-s socket timeout) while 100
    sends are in flight, so their replies arrive, and their `accepted` writes are due, while it is away. With
    BulkSMS, the 100 go in batched requests, and a reply brings many jobs' writes due at once."""
    pid = await redis_pid(case.redis, case.settings.redis_url)
    n, concurrency, latency, pause = 300, 100, 2.0, 7.0
    fake = provider(kind, latency)
    async with case.backlog(fake, valid_jobs("iw", n, kind=kind)) as events:
        with workers(case.settings, case.tmp_path) as fleet:
            proc = fleet.start("--gateway", kind, "--concurrency", str(concurrency))
            await until(lambda: in_flight(fake) >= concurrency * 0.8, 30, "the worker's sends in flight", [proc])
            with paused(pid):
                before, cut = len(fake.messages), in_flight(fake)
                await asyncio.sleep(pause)  # the outage itself
                accepted_while_paused = len(fake.messages) - before
            case.books.note(
                f"Redis paused {pause:g} s with {cut} sends in flight; {accepted_while_paused} accepted meanwhile"
            )
            await case.settle(events, fake, timeout=90, procs=[proc])
            assert await fleet.stop(proc) == 0, fleet.log(proc)
    assert accepted_while_paused >= concurrency // 2, "the provider's replies did not come while Redis was away"
