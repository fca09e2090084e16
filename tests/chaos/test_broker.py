"""RabbitMQ under the workers: every connection force-closed mid-run, and the broker restarted with a backlog;
each with one request per SMS (SMSC) and with batched requests (BulkSMS, many jobs a request).

Both faults hit every client of the local broker (these tests' own connections too: their robust connections
come back, and the books' durable events queue keeps what was published meanwhile).
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.chaos.harness import (
    Case,
    broker_pid,
    broker_stopped,
    local_rabbitmqctl,
    paused,
    provider,
    rabbitmqctl,
    until,
    valid_jobs,
    workers,
)
from tests.integration.test_metrics import free_port, samples

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


@pytest.mark.timeout(150)
async def test_rabbitmq_frozen(case: Case) -> None:
    """The broker stops answering for 12 s with every connection open (SIGSTOP: a stalled disk, a paused VM),
    longer than a publish waits for its confirm (10 s). A delivery whose event was not confirmed in time is the
    broker's trouble, not a crash: it is handled again, and spends nothing of its delivery count (see
    workers/consumer.py). Batched (BulkSMS), where hundreds of deliveries wait on the broker at once; the
    consumer's path is the same for every kind."""
    ctl = local_rabbitmqctl(case.settings)
    pid = await broker_pid(ctl)
    kind, n, freeze = "bulksms", 1500, 12.0
    fake = provider(kind, latency=0.01)
    async with case.backlog(fake, valid_jobs("fz", n, kind=kind)) as events:
        with workers(case.settings, case.tmp_path) as fleet:
            port = free_port()
            proc = fleet.start("--gateway", kind, "--concurrency", CONCURRENCY[kind], "--metrics-port", str(port))
            await until(lambda: len(fake.messages) >= n // 4, 60, f"{n // 4} messages sent", [proc])
            with paused(pid, at_most=freeze + 10):
                case.books.note(f"broker frozen {freeze:g} s after {len(fake.messages)} sent")
                await asyncio.sleep(freeze)  # the outage itself
            await case.settle(events, fake, timeout=120, procs=[proc])
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as reply:
                counted = samples(await reply.text(), "smsfleet_publish_retries_total")
            assert await fleet.stop(proc) == 0, fleet.log(proc)
            log = fleet.log(proc).splitlines()
    given_back = [line for line in log if "message.crashed" in line or "worker.publish_timed_out" in line]
    assert not given_back, f"{len(given_back)} deliveries given back, the first: {given_back[0][:2000]}"
    retried = sum("worker.publish_failed" in line for line in log)
    case.books.note(f"{retried} deliveries handled again after a publish timed out")
    assert retried, "no publish waited out its confirm timeout: the freeze did not take"
    assert sum(counted.values()) == retried, counted  # what SmsfleetBrokerNotTakingPublishes alerts on
    assert counted[(("role", "send"), ("why", "timed_out"))] > 0, counted
