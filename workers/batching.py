"""The batching stage of the send worker: the jobs of one sender that are cleared to go leave together, in
provider requests of up to `size` messages (`Gateway.send_many`).

A batch goes out when it is full, when nothing else of its sender is on its way through the worker (the jobs
consumed but not yet here: none will join, so waiting would only add latency), or `linger_s` after its first
job came, whichever is first. A sender idle but for one job sends it at once; a busy one fills its requests.

Where the provider limits *messages* (`Gateway.rate_per == "message"`), each job took its own slot of the
sender's rate before it came here, and `linger_s` (a few ms) is how much later than its slot it may leave:
keep it under a third of the rate limiter's margin (10 ms of the default 30 ms) and the window bound holds.
Where it limits *requests* (Play Mobile), the jobs come without a slot and the batch takes one slot per
request: one request at a time waits for the sender's next slot, then carries whatever is waiting, up to
`size` — the busier the sender, the fuller its requests, never more requests a second than the limit. `send`
is given the slot's time, to check that the request still leaves in time for it.

Each job keeps its own outcome: `add` returns the job's result from its request, and the job's own task
records, reports and acknowledges it, so the consumer's accounting, draining and Redis-outage handling stay
per job, and a batch costs no task per job beside the one that already carries it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batch", "NoSlot"]

T = TypeVar("T")
R = TypeVar("R")


class NoSlot(Exception):
    """No request slot soon enough: the job was not sent."""


class Batch(Generic[T, R]):
    """The waiting jobs of one sender. `coming` is kept by the caller: jobs of the sender consumed, not yet added.

    `send(items, slot)` sends the items and returns each one's result. `slot()` (kinds limited per request) waits
    for the sender's next request slot and returns its time (`time.monotonic()`), which `send` is given (else
    None); None: no slot soon enough, and the waiting items' `add` raises `NoSlot`.
    """

    def __init__(
        self,
        send: Callable[[list[T], float | None], Awaitable[list[R]]],
        *,
        size: int,
        linger_s: float,
        slot: Callable[[], Awaitable[float | None]] | None = None,
    ) -> None:
        self.size = size
        self.linger_s = linger_s
        self.coming = 0
        self._send = send
        self._slot = slot
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._requester: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, item: T) -> R:
        """Send `item` with the others; its result, once its request has one."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if len(self._waiting) >= self.size or self.coming <= 0:
            self._go()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._go)
        return await done

    def _go(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slot is not None:  # one request at a time takes the next slot, then what waits by then
            if self._requester is None or self._requester.done():
                self._requester = asyncio.create_task(self._requests())
            return
        while self._waiting:
            self._spawn(self._take(), None)

    async def _requests(self) -> None:
        assert self._slot is not None
        while self._waiting:
            try:
                slot = await self._slot()
            except Exception as exc:  # Redis away: every waiter learns it, and its job goes back
                _fail(self._take(len(self._waiting)), exc)
                return
            if slot is not None:
                self._spawn(self._take(), slot)
            else:
                _fail(self._take(len(self._waiting)), NoSlot())

    def _take(self, n: int = 0) -> list[tuple[T, asyncio.Future[R]]]:
        taken, self._waiting = self._waiting[: n or self.size], self._waiting[n or self.size :]
        return taken

    def _spawn(self, taken: list[tuple[T, asyncio.Future[R]]], slot: float | None) -> None:
        task = asyncio.create_task(self._request(taken, slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, taken: list[tuple[T, asyncio.Future[R]]], slot: float | None) -> None:
        try:
            results = await self._send([item for item, _ in taken], slot)
        except asyncio.CancelledError:
            for _, done in taken:
                done.cancel()
            raise
        except Exception as exc:  # every waiter learns what happened to its job
            _fail(taken, exc)
            return
        for (_, done), result in zip(taken, results, strict=True):
            if not done.done():  # else its waiter was cancelled (a drain past its grace): the message went back
                done.set_result(result)


def _fail(taken: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, done in taken:
        if not done.done():
            done.set_exception(exc)
