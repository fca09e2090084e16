"""The batching stage on its own: when a batch leaves, how full, and what each waiter learns."""

from __future__ import annotations

import asyncio

import pytest

from workers.batching import Batch, NoSlot


class Sent:
    """A `send` that records each request and its slot, and answers each item: ValueError for the items named in
    `refuse`, else the item times ten."""

    def __init__(self, refuse: frozenset[int] = frozenset()) -> None:
        self.requests: list[list[int]] = []
        self.slots: list[float | None] = []
        self.refuse = refuse

    async def __call__(self, items: list[int], slot: float | None) -> list[int | ValueError]:
        self.requests.append(items)
        self.slots.append(slot)
        await asyncio.sleep(0)
        return [ValueError(i) if i in self.refuse else i * 10 for i in items]


async def test_a_lone_job_leaves_at_once_when_nothing_else_is_coming() -> None:
    sent = Sent()
    batch = Batch(sent, size=10, linger_s=60.0)
    await asyncio.wait_for(batch.add(1), 1.0)
    assert sent.requests == [[1]]


async def test_jobs_added_while_others_are_coming_share_one_request_when_the_last_arrives() -> None:
    sent = Sent()
    batch = Batch(sent, size=10, linger_s=60.0)
    batch.coming = 4

    async def arrive(i: int) -> None:
        batch.coming -= 1
        await batch.add(i)

    await asyncio.wait_for(asyncio.gather(*(arrive(i) for i in range(4))), 1.0)
    assert sent.requests == [[0, 1, 2, 3]]


async def test_a_full_batch_leaves_without_waiting_and_the_rest_waits_for_its_linger() -> None:
    sent = Sent()
    batch = Batch(sent, size=3, linger_s=0.2)
    batch.coming = 100  # more are always on their way
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.gather(*(batch.add(i) for i in range(3)))
    await asyncio.wait_for(first, 0.1)
    assert sent.requests == [[0, 1, 2]]
    await asyncio.wait_for(batch.add(3), 1.0)
    assert sent.requests == [[0, 1, 2], [3]]
    assert loop.time() - started >= 0.2


async def test_each_waiter_gets_its_own_result() -> None:
    batch = Batch(Sent(refuse=frozenset({1})), size=10, linger_s=60.0)
    batch.coming = 3

    async def arrive(i: int) -> int | ValueError:
        batch.coming -= 1
        return await batch.add(i)

    results = await asyncio.gather(*(arrive(i) for i in range(3)))
    assert results[0] == 0
    assert isinstance(results[1], ValueError)
    assert results[2] == 20


async def test_a_send_that_crashes_fails_every_waiter_of_its_request() -> None:
    async def crash(items: list[int], slot: float | None) -> list[int]:
        raise RuntimeError("bug")

    batch = Batch(crash, size=10, linger_s=60.0)
    with pytest.raises(RuntimeError, match="bug"):
        await asyncio.wait_for(batch.add(1), 1.0)


async def test_per_request_slots_fill_each_request_with_what_waits_by_its_slot() -> None:
    sent, slots = Sent(), 0

    async def slot() -> float:  # one request a 50 ms
        nonlocal slots
        slots += 1
        await asyncio.sleep(0.05)
        return float(slots)

    batch = Batch(sent, size=4, linger_s=0.001, slot=slot)
    batch.coming = 1000
    waiters = [asyncio.ensure_future(batch.add(i)) for i in range(10)]
    await asyncio.wait_for(asyncio.gather(*waiters), 2.0)
    assert [len(r) for r in sent.requests] == [4, 4, 2]
    assert sorted(i for r in sent.requests for i in r) == list(range(10))
    assert slots == 3
    assert sent.slots == [1.0, 2.0, 3.0]  # each request is given its own slot's time


async def test_without_request_slots_a_request_is_given_no_slot() -> None:
    sent = Sent()
    await asyncio.wait_for(Batch(sent, size=10, linger_s=60.0).add(1), 1.0)
    assert sent.slots == [None]


async def test_no_request_slot_tells_every_waiting_job_it_was_not_sent() -> None:
    sent = Sent()

    async def no_slot() -> float | None:
        return None

    batch = Batch(sent, size=4, linger_s=0.001, slot=no_slot)
    results = await asyncio.wait_for(asyncio.gather(*(batch.add(i) for i in range(3)), return_exceptions=True), 1.0)
    assert sent.requests == []
    assert [type(r) for r in results] == [NoSlot] * 3


async def test_a_slot_that_fails_fails_the_waiters_instead_of_leaving_them_waiting() -> None:
    async def redis_away() -> float | None:
        raise ConnectionError("redis")

    batch = Batch(Sent(), size=4, linger_s=0.001, slot=redis_away)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(batch.add(1), 1.0)
