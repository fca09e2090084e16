"""A message that crashes its handler on every delivery is parked in `<ns>.dead`, and blocks no other job."""

from __future__ import annotations

import aio_pika
import pytest
import redis.asyncio as aioredis

from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import (
    DEAD,
    Books,
    Events,
    Job,
    create_senders,
    fleet,
    job_body,
    phone,
    smsc_sender,
    valid_jobs,
)
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


@pytest.mark.timeout(90)
async def test_poison_message_is_parked(
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    books: Books,
) -> None:
    """Sender `broken`'s endpoint makes the HTTP client raise a non-gateway error (`UnicodeError` from the IDNA
    codec for `http://a..b`): every delivery of its job crashes the handler after the claim, so the quorum
    queue's delivery limit must dead-letter it, while the other jobs are delivered."""
    poison = Job("poison-1", "smsc.broken", job_body("poison-1", "broken", "acme", phone(999)), frozenset({DEAD}))
    async with FakeSmsc("acme", "pw", initial_status=1) as fake, Events.listen(amqp, names, dead=True) as events:
        await create_senders(redis, names, [
            smsc_sender("s1", fake, ["acme"]),
            smsc_sender("broken", fake, ["acme"], settings={"base_url": "http://a..b"}),
        ])  # fmt: skip
        await books.publish(amqp, names, [poison, *valid_jobs("ok", 50)])
        async with fleet(settings, ["smsc"], SendPolicy(concurrency=20)) as task:
            await books.settle(events, fake, timeout=45, procs=[task], ledger=(redis, names))
    reason = events.parked[poison.id].get("x-first-death-reason")
    books.note(f"parked: {reason}")
    assert reason == "delivery_limit", events.parked[poison.id]
