"""Three `smsfleet worker` processes share one sender's rate of 49/s: no 1-s window above it, and nearly all of it.

Real worker processes (`python -m smsfleet worker --gateway smsc --role all`) against a fake SMSC served
from the test's own event loop, which stamps the arrival of every request. (The fault-injection tests that
lived here are in `tests/chaos/`.)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import aio_pika
import pytest
import redis.asyncio as aioredis

from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import (
    SEND_PHP,
    TimedRequests,
    create_sender,
    loop_lag,
    max_per_window,
    publish_jobs,
    until,
    workers,
)
from tests.fakes.smsc import FakeSmsc

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(120)
async def test_three_processes_keep_one_sender_under_49_per_second(
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    rate, n = 49, 1100  # about 23 s of sends
    job_ids = [f"rl-{i:05d}" for i in range(n)]
    async with FakeSmsc("acme", "pw", initial_status=1) as fake:
        fake.requests = TimedRequests()
        # await_delivery_s an hour: no status lookup shares the rate during the run, so the fake sees only sends
        await create_sender(redis, names, fake, rate_limit=rate, settings={"await_delivery_s": 3600})
        await publish_jobs(amqp, names, "s1", job_ids)
        with workers(settings, tmp_path) as fleet:
            async with loop_lag() as lag:  # the fake stamps arrivals: its loop must keep up for them to be true
                procs = [fleet.start() for _ in range(3)]
                await until(lambda: len(fake.messages) >= n, 90, f"{n} messages sent", procs)
            for proc in procs:
                assert await fleet.stop(proc) == 0, fleet.log(proc)

    times = [t for t, (path, _) in zip(fake.requests.times, fake.requests, strict=True) if path == SEND_PHP]
    sent = Counter(m.text for m in fake.messages)
    assert sent == Counter(f"Your code is {j}" for j in job_ids), "a job not sent exactly once"
    worst = max_per_window(times)
    achieved = (len(times) - 1) / (max(times) - min(times))
    print(f"\n{len(times)} sends by 3 processes in {max(times) - min(times):.1f} s: max {worst} in any 1-s "
          f"window, {achieved:.2f}/s = {achieved / rate:.1%} of {rate}/s; the fake's loop lagged "
          f"<= {lag[0] * 1000:.1f} ms")  # fmt: skip
    (tmp_path / "send_times.json").write_text(json.dumps(times))
    # the fake stamps a request when its loop gets to it: a loop held up for L s can stamp up to L x rate requests
    # that arrived apart as if they came together (the README's "once the fakes' stamping lag is allowed for")
    assert worst <= rate + math.ceil(lag[0] * rate)
    # not starved: how close to the limit it gets is a benchmark's (tests.bench.rate_precision: 95-97 % on a quiet
    # machine); a loaded one makes more processes late for their slots, which they then give up (94.2 % in a CI run)
    assert achieved >= 0.9 * rate
