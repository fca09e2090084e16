"""RabbitMQ under the workers: every connection force-closed mid-run, and the broker restarted with a backlog;
each with one request per SMS (SMSC) and with batched requests (BulkSMS, many jobs a request).

Both faults hit every client of the local broker (these tests' own connections too: their robust connections
come back, and the books' durable events queue keeps what was published meanwhile).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.harness import (
    Case,
    broker_stopped,
    local_rabbitmqctl,
    provider,
    rabbitmqctl,
    until,
    valid_jobs,
    workers,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
KINDS = ["smsc", "bulksms"]
CONCURRENCY = {"smsc": "20", "bulksms": "500"}  # BulkSMS: requests of many jobs each


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", KINDS)
async def test_connections_force_closed(case: Case, kind: str) -> None:
    ctl = local_rabbitmqctl(case.settings)
    n = 1500
    fake = provider(kind, latency=0.01)
    async with case.backlog(fake, valid_jobs("cc", n, kind=kind)) as events:
        with workers(case.settings, case.tmp_path) as fleet:
            proc = fleet.start("--gateway", kind, "--concurrency", CONCURRENCY[kind])
            await until(lambda: len(fake.messages) >= n // 4, 60, f"{n // 4} messages sent", [proc])
            reconnected = asyncio.Event()  # this test's own connection is closed too: proof that the fault took
            case.amqp.reconnect_callbacks.add(lambda *_: reconnected.set())
            await rabbitmqctl(ctl, "close_all_connections", "chaos")
            case.books.note(f"connections closed after {len(fake.messages)} sent")
            await case.settle(events, fake, timeout=100, procs=[proc])
            assert await fleet.stop(proc) == 0, fleet.log(proc)
    assert reconnected.is_set(), "close_all_connections closed nothing"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", KINDS)
async def test_rabbitmq_restarted_with_a_backlog(case: Case, kind: str) -> None:
    ctl = local_rabbitmqctl(case.settings)
    n = 1500
    fake = provider(kind, latency=0.01)
    async with case.backlog(fake, valid_jobs("rr", n, kind=kind)) as events:
        with workers(case.settings, case.tmp_path) as fleet:
            proc = fleet.start("--gateway", kind, "--concurrency", CONCURRENCY[kind])
            await until(lambda: len(fake.messages) >= n // 4, 60, f"{n // 4} messages sent", [proc])
            async with broker_stopped(ctl):
                case.books.note(f"broker stopped for 3 s after {len(fake.messages)} sent")
                await asyncio.sleep(3)  # the outage itself
            await case.settle(events, fake, timeout=120, procs=[proc])
            assert await fleet.stop(proc) == 0, fleet.log(proc)
