"""Redis stops answering (the local redis-server is sent SIGSTOP, then SIGCONT): while the worker rate-limits,
and right after the provider accepted messages, while their `accepted` ledger writes are due.

A worker that cannot reach Redis stops taking jobs and never sends unthrottled; bookkeeping after a provider
call is retried for ~30 s (`_until_done` in workers/send.py), so an accepted message is neither lost nor sent
again.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from tests.chaos.harness import (
    SEND_PHP,
    Case,
    Provider,
    TimedRequests,
    loop_lag,
    max_per_window,
    provider,
    redis_paused,
    redis_pid,
    until,
    valid_jobs,
    workers,
)
from tests.fakes.bulksms import FakeBulksms
from tests.fakes.smsc import FakeSmsc

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


@pytest.mark.timeout(150)
async def test_redis_paused_during_rate_limiting(case: Case) -> None:
    pid = await redis_pid(case.redis, case.settings.redis_url)
    n, rate, pause = 500, 49, 10.0
    fake = FakeSmsc("acme", "pw", initial_status=1)
    fake.requests = requests = TimedRequests()
    async with case.backlog(fake, valid_jobs("rf", n), rate_limit=rate) as events, loop_lag() as lag:
        with workers(case.settings, case.tmp_path) as fleet:
            fleet.env["SMSFLEET_RECHECK_SHARE"] = "1"  # the sends are the subject: let rechecks finish quickly
            proc = fleet.start("--concurrency", "50")
            await until(lambda: len(fake.messages) >= 100, 60, "100 messages sent", [proc])
            with redis_paused(pid):
                paused_at, sent_before = time.time(), len(fake.messages)
                await asyncio.sleep(pause)  # the outage itself
                sent_while_paused = len(fake.messages) - sent_before
            case.books.note(f"Redis paused {pause:g} s after {sent_before} sent; {sent_while_paused} sent meanwhile")
            await case.settle(events, fake, timeout=90, procs=[proc])
            assert await fleet.stop(proc) == 0, fleet.log(proc)
    times = requests.sends()
    worst = max_per_window(times)
    case.books.note(f"max {worst} sends in a 1-s window; the fake's loop lagged <= {lag[0] * 1000:.0f} ms")
    # the fake stamps a request when its loop gets to it: a loop held up for L s can stamp up to L x rate requests
    # that arrived apart as if they came together (as in tests/integration/test_worker_chaos.py)
    assert worst <= rate + math.ceil(lag[0] * rate)
    assert sent_while_paused <= 5, "sends went on without the rate limiter"
    assert max(times) > paused_at + pause  # and sending resumed by itself afterwards


def in_flight(fake: Provider) -> int:
    """Messages the fake was asked for and has not created yet (it answers after its latency)."""
    if isinstance(fake, FakeBulksms):  # a request carries an array of messages (or one)
        bodies = [seen.json() for seen in fake.requests if (seen.method, seen.path) == ("POST", "/v1/messages")]
        asked = sum(len(body) if isinstance(body, list) else 1 for body in bodies)
    else:
        asked = sum(path == SEND_PHP for path, _ in fake.requests)
    return asked - len(fake.messages)


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
            with redis_paused(pid):
                before, cut = len(fake.messages), in_flight(fake)
                await asyncio.sleep(pause)  # the outage itself
                accepted_while_paused = len(fake.messages) - before
            case.books.note(
                f"Redis paused {pause:g} s with {cut} sends in flight; {accepted_while_paused} accepted meanwhile"
            )
            await case.settle(events, fake, timeout=90, procs=[proc])
            assert await fleet.stop(proc) == 0, fleet.log(proc)
    assert accepted_while_paused >= concurrency // 2, "the provider's replies did not come while Redis was away"
