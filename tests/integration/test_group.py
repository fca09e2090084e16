"""`smsfleet worker --processes N` on the real broker and Redis: N children share the work, a killed child is
replaced, one /metrics adds them up, and SIGTERM drains the group."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import aiohttp
import pytest
import redis.asyncio as aioredis

from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import all_final, create_sender, publish_jobs, workers
from tests.fakes.smsc import FakeSmsc

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until_true(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def consumed(http: aiohttp.ClientSession, port: int) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as reply:
        text = await reply.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('smsfleet_jobs_consumed_total{gateway="smsc"}')
    )


@pytest.mark.timeout(180)
async def test_a_group_shares_the_work_replaces_a_killed_child_and_drains_on_sigterm(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    port = free_port()
    async with FakeSmsc("acme", "pw", initial_status=1) as fake, aiohttp.ClientSession() as http:
        await create_sender(redis, names, fake)
        with workers(settings, tmp_path) as fleet:
            group = fleet.start("--processes", "2", "--metrics-port", str(port), "--grace", "5")

            async def two_children() -> bool:
                return len(children_of(group.pid)) == 2

            await until_true(two_children, 30)
            first = children_of(group.pid)

            async def ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as reply:
                        return reply.status == 200
                except aiohttp.ClientError:
                    return False

            await until_true(ready, 30)
            batch1 = [f"g1-{i}" for i in range(200)]
            await publish_jobs(amqp, names, "s1", batch1)
            assert set((await all_final(redis, names, batch1, 60)).values()) == {"delivered"}

            victim = min(first)
            os.kill(victim, signal.SIGKILL)

            async def replaced() -> bool:
                now = children_of(group.pid)
                return len(now) == 2 and victim not in now

            await until_true(replaced, 30)
            batch2 = [f"g2-{i}" for i in range(200)]
            await publish_jobs(amqp, names, "s1", batch2)
            assert set((await all_final(redis, names, batch2, 60)).values()) == {"delivered"}

            total = await consumed(http, port)
            assert total >= 400, f"the group's /metrics counts {total} consumed jobs"
            survivors = children_of(group.pid)
            assert await fleet.stop(group, 40) == 0, fleet.log(group)
            assert not any(map(alive, survivors)), "a child outlived the group"
    assert len({m.id for m in fake.messages}) == len(fake.messages) == 400  # nothing sent twice
