"""A message that crashes its handler on every delivery is parked in `<ns>.dead`, and blocks no other job."""

from __future__ import annotations

import pytest

from tests.chaos.harness import (
    DEAD,
    Case,
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
async def test_poison_message_is_parked(case: Case) -> None:
    """Sender `broken`'s endpoint makes the HTTP client raise a non-gateway error (`UnicodeError` from the IDNA
    codec for `http://a..b`): every delivery of its job crashes the handler after the claim, so the quorum
    queue's delivery limit must dead-letter it, while the other jobs are delivered."""
    poison = Job("poison-1", "smsc.broken", job_body("poison-1", "broken", "acme", phone(999)), frozenset({DEAD}))
    fake = FakeSmsc("acme", "pw", initial_status=1)
    async with case.backlog(fake, [poison, *valid_jobs("ok", 50)], dead=True) as events:
        broken = smsc_sender("broken", fake, ["acme"], settings={"base_url": "http://a..b"})
        await create_senders(case.redis, case.names, [broken])
        async with fleet(case.settings, ["smsc"], SendPolicy(concurrency=20)) as task:
            await case.settle(events, fake, timeout=45, procs=[task])
    reason = events.parked[poison.id].get("x-first-death-reason")
    case.books.note(f"parked: {reason}")
    assert reason == "delivery_limit", events.parked[poison.id]
