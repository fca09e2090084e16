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
`size` — the busier the sender, the fuller its requests, never more requests a second than the limit.

Each job keeps its own outcome: `add` returns when its job has been recorded and acknowledged (or raises what
settling it raised), so the consumer's accounting, draining and Redis-outage handling stay per job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batch"]

T = TypeVar("T")

Send = Callable[[list[T]], Awaitable[list[BaseException | None]]]


class Batch(Generic[T]):
    """The waiting jobs of one sender. `coming` is kept by the caller: jobs of the sender consumed, not yet added.

    `send(items)` sends and settles the items and returns, per item, the exception settling it raised (or None).
    `slot()` (kinds limited per request) waits for the sender's next request slot; False: no slot soon enough,
    and the items then go to `give_back` instead.
    """

    def __init__(
        self,
        send: Send[T],
        *,
        size: int,
        linger_s: float,
        slot: Callable[[], Awaitable[bool]] | None = None,
        give_back: Send[T] | None = None,
    ) -> None:
        self.size = size
        self.linger_s = linger_s
        self.coming = 0
        self._send = send
        self._slot = slot
        self._give_back = give_back
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._requester: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, item: T) -> None:
        """Send `item` with the others; return once it is settled."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if len(self._waiting) >= self.size or self.coming <= 0:
            self._go()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._go)
        await done

    def _go(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slot is not None:  # one request at a time takes the next slot, then what waits by then
            if self._requester is None or self._requester.done():
                self._requester = asyncio.create_task(self._requests())
            return
        while self._waiting:
            self._spawn(self._send, self._take())

    async def _requests(self) -> None:
        assert self._slot is not None
        assert self._give_back is not None
        while self._waiting:
            try:
                slot = await self._slot()
            except Exception as exc:  # Redis away: every waiter learns it, and its job goes back
                for _, done in self._take(len(self._waiting)):
                    if not done.done():
                        done.set_exception(exc)
                return
            self._spawn(self._send if slot else self._give_back, self._take(0 if slot else len(self._waiting)))

    def _take(self, n: int = 0) -> list[tuple[T, asyncio.Future[None]]]:
        taken, self._waiting = self._waiting[: n or self.size], self._waiting[n or self.size :]
        return taken

    def _spawn(self, send: Send[T], taken: list[tuple[T, asyncio.Future[None]]]) -> None:
        task = asyncio.create_task(_settle(send, taken))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _settle(send: Send[T], taken: list[tuple[T, asyncio.Future[None]]]) -> None:
    try:
        outcomes = await send([item for item, _ in taken])
    except asyncio.CancelledError:
        for _, done in taken:
            done.cancel()
        raise
    except Exception as exc:  # every waiter learns what happened to its job
        outcomes = [exc] * len(taken)
    for (_, done), outcome in zip(taken, outcomes, strict=True):
        if done.done():  # its waiter was cancelled (a drain past its grace): the message went back already
            continue
        if outcome is None:
            done.set_result(None)
        else:
            done.set_exception(outcome)
