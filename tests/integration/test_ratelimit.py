"""The fleet-wide GCRA rate limiter against the real Redis: spacing, several processes, max_wait, pauses."""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import os
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from workers.ratelimit import RateLimiter, RateLimitWait

ROOT = Path(__file__).resolve().parents[2]


def max_per_window(times: list[float], window: float = 1.0) -> int:
    """The most send times in any closed sliding window of `window` seconds."""
    ordered = sorted(times)
    return max((bisect.bisect_right(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


@pytest.fixture
def limiter(redis: aioredis.Redis, namespace: str) -> RateLimiter:
    return RateLimiter(redis, f"{namespace}:rate")


async def test_one_process_spaces_sends_at_the_rate(limiter: RateLimiter) -> None:
    sent: list[float] = []

    async def send() -> None:
        await limiter.wait("acme", 50, max_wait=5.0)
        sent.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(send() for _ in range(100)))

    assert len(sent) == 100
    assert max_per_window(sent) <= 50
    assert 1.9 <= max(sent) - start <= 2.6


# Run by each of the processes below: `workers` coroutines send through one sender until `end`, printing
# every send time (time.time(), right after the reserved sleep) as a JSON list.
CHILD = """
import asyncio, json, sys, time
import redis.asyncio as aioredis
from workers.ratelimit import RateLimiter

async def main(url, prefix, sender, rate, start, end, workers):
    client = aioredis.Redis.from_url(url)
    limiter = RateLimiter(client, prefix)
    sent = []

    async def worker():
        while time.time() < end:
            await limiter.wait(sender, rate, max_wait=10.0)
            sent.append(time.time())

    await asyncio.sleep(max(0.0, start - time.time()))
    await asyncio.gather(*(worker() for _ in range(workers)))
    await client.aclose()
    print(json.dumps(sent))

url, prefix, sender, rate, start, end, workers = sys.argv[1:]
asyncio.run(main(url, prefix, sender, float(rate), float(start), float(end), int(workers)))
"""


@pytest.mark.slow
async def test_three_processes_share_one_sender_limit(redis_url: str, redis: aioredis.Redis, namespace: str) -> None:
    rate, seconds, processes = 49.0, 6.0, 3
    start = time.time() + 2.0  # time for the interpreters to start; they all begin together
    end = start + seconds
    args = [redis_url, f"{namespace}:rate", "playmobile", str(rate), repr(start), repr(end), "10"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            *args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(c.communicate() for c in children)), 30)
    per_process: list[list[float]] = []
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err.decode()
        per_process.append(json.loads(out))
    sent = sorted(t for times in per_process for t in times)

    assert all(per_process), "every process got slots"
    worst = max_per_window(sent)
    # the limiter's efficiency while the backlog lasted (start-up of the processes aside: on a loaded machine
    # spawning them can take seconds, which says nothing about the limiter)
    share = (len(sent) - 1) / ((sent[-1] - sent[0]) * rate)
    tightest = min(b - a for a, b in zip(sent, sent[int(rate) :], strict=False))
    print(f"\n{len(sent)} sends, max {worst} per 1-s window, {share:.1%} of {rate}/s", end=", ")
    print(f"any {rate + 1:.0f} consecutive sends span >= {tightest:.4f} s")
    assert worst <= rate
    assert share >= 0.9  # about 0.98 on a quiet machine (the 2% margin); the benchmark reports the figure


async def test_max_wait_exceeded_reserves_nothing(limiter: RateLimiter, redis: aioredis.Redis) -> None:
    interval = limiter.interval(1)
    assert await limiter.acquire("acme", 1, max_wait=0) == 0.0
    key, _ = limiter.keys("acme")
    tat = await redis.get(key)

    with pytest.raises(RateLimitWait) as caught:
        await limiter.acquire("acme", 1, max_wait=0.5)
    assert interval - 0.1 <= caught.value.retry_after <= interval
    assert caught.value.bucket == "acme"
    assert await redis.get(key) == tat  # the TAT did not move

    # the slot that was refused is still the next one: not one interval further on
    wait = await limiter.acquire("acme", 1, max_wait=5)
    assert interval - 0.1 <= wait <= interval
    assert math.isclose(await limiter.acquire("acme", 1, max_wait=5), wait + interval, abs_tol=0.1)


async def test_pause_holds_every_caller_back(redis: aioredis.Redis, namespace: str) -> None:
    limiter = RateLimiter(redis, f"{namespace}:rate")
    assert await limiter.acquire("acme", 100, max_wait=1) == 0.0
    await limiter.pause("acme", 1.0)
    await limiter.pause("acme", 0.1)  # a shorter pause does not cut the running one short

    wait = await limiter.acquire("acme", 100, max_wait=5)
    assert 0.9 <= wait <= 1.0
    assert 0 < await redis.pttl(limiter.keys("acme")[1]) <= 2000

    # a burst does not leak through a pause either: the first send of a rested bucket still waits
    bursty = RateLimiter(redis, f"{namespace}:rate", burst=5)
    await bursty.pause("other", 1.0)
    assert 0.9 <= await bursty.acquire("other", 100, max_wait=5) <= 1.0


async def test_senders_are_independent(limiter: RateLimiter, redis: aioredis.Redis) -> None:
    assert await limiter.acquire("a", 1, max_wait=0) == 0.0
    with pytest.raises(RateLimitWait):
        await limiter.acquire("a", 1, max_wait=0)
    assert await limiter.acquire("b", 1, max_wait=0) == 0.0

    # idle keys vanish: the TTL runs to the TAT plus one second
    ttl = await redis.pttl(limiter.keys("a")[0])
    assert 0 < ttl <= limiter.interval(1) * 1000 + 1000


async def test_burst_lets_a_rested_sender_send_back_to_back(redis: aioredis.Redis, namespace: str) -> None:
    limiter = RateLimiter(redis, f"{namespace}:rate", burst=3)
    waits = [await limiter.acquire("acme", 10, max_wait=5) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0 < waits[3] <= limiter.interval(10)


async def test_nonsense_is_refused(limiter: RateLimiter) -> None:
    for rate in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match="rate"):
            await limiter.acquire("acme", rate, max_wait=1)
    with pytest.raises(ValueError, match="max_wait"):
        await limiter.acquire("acme", 1, max_wait=-1)
    with pytest.raises(ValueError, match="bucket"):
        await limiter.acquire("acme:pause", 1, max_wait=1)
