"""Batched sends under `kill -9`: a worker killed with whole requests of many jobs in flight, then restarted.

BulkSMS can be searched by our id, so a job cut off mid-request is looked up and adopted, never sent again;
Play Mobile cannot, so such a job ends `unknown` (`--ambiguous unknown`). Either way no SMS goes out twice and
every job is accounted for. Real `smsfleet worker` processes, the fake provider in the test's event loop; the
provider's own record counts each job's text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections import Counter
from typing import Any

import pytest

from tests.chaos.harness import ROW_KEY, Case, Events, Row, create_senders, job_body, phone, publish_raw, until, workers
from tests.fakes.bulksms import FakeBulksms
from tests.fakes.playmobile import FakePlaymobile

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

SETTLED = frozenset({"accepted", "unknown", "rejected", "failed", "delivered"})


def provider(kind: str) -> tuple[Any, dict[str, Any]]:
    """The fake (answering after 0.3 s, so requests are in flight at the kill) and the sender settings."""
    if kind == "bulksms":
        return FakeBulksms("acme", "pw", latency=0.3), {"login": "acme", "password": "pw", "await_delivery_s": 3600}
    return FakePlaymobile("acme", "pw", latency=0.3), {"user_id": "acme", "password": "pw"}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["bulksms", "playmobile"])
async def test_kill_9_mid_batched_send_then_restart(case: Case, kind: str) -> None:
    n = 1500
    ids = [f"kb-{i:05d}" for i in range(n)]
    fake, settings = provider(kind)
    async with fake, Events.listen(case.amqp, case.names) as events:
        doc = {"id": "b1", "gateway": kind, "accounts": ["acme"], "settings": settings | {"base_url": fake.url}}
        await create_senders(case.redis, case.names, [doc | ({"rate_limit": 1e6} if kind == "bulksms" else {})])
        confirmed: set[str] = set()
        items = [(f"{kind}.b1", job_body(j, "b1", "acme", phone(i)), j) for i, j in enumerate(ids)]
        await publish_raw(case.amqp, case.names, items, confirmed=confirmed)
        with workers(case.settings, case.tmp_path) as fleet:
            flags = ("--gateway", kind, "--concurrency", "1000")
            first = fleet.start(*flags)
            await until(lambda: len(fake.messages) >= n // 3, 60, f"{n // 3} messages sent", [first])
            first.kill()  # SIGKILL: requests in flight cut off, nothing acknowledged
            killed_at = len(fake.messages)
            assert await fleet.wait(first, 10) == -signal.SIGKILL
            second = fleet.start(*flags)

            def settled() -> bool:
                return all(any(e.state.value in SETTLED for e in events.by_job[j]) for j in ids)

            await until(settled, 120, "every job settled", [second])
            await asyncio.sleep(1.0)  # time for a late duplicate to show
            assert await fleet.stop(second) == 0, fleet.log(second)
    sent = Counter(getattr(m, "text", None) or m.body for m in fake.messages)
    states = Counter(next(e.state.value for e in reversed(events.by_job[j]) if e.state.value in SETTLED) for j in ids)
    row = Row(
        case=f"kill_9_mid_batched_send[{kind}]", jobs=n, published=len(confirmed), final=sum(states.values()),
        lost=n - sum(states.values()), duplicated=sum(c - 1 for c in sent.values() if c > 1), misattributed=0,
        unknown=states["unknown"], resends=len(fake.messages) - len(sent), states=dict(states),
        notes=f"killed after {killed_at} sent, in requests of up to 100-500",
    )  # fmt: skip
    case.books.record.append((ROW_KEY, dataclasses.asdict(row)))
    assert len(confirmed) == n
    assert row.duplicated == 0, [t for t, c in sent.items() if c > 1][:5]
    assert row.lost == 0
    if kind == "bulksms":  # every job cut off was found at the provider: sent once, none unknown
        assert (row.unknown, len(sent)) == (0, n)
    else:  # a job cut off may or may not have reached Play Mobile; every other one was sent once
        assert len(sent) >= n - row.unknown
