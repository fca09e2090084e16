"""Status rechecks, scheduled in batches: one delayed message carries the jobs of one sender accepted together.

A recheck per job would put as many messages into the delay tiers as jobs are sent, each written to disk by
a quorum queue and each a confirmed publish for the send worker. The send worker instead collects the jobs
of a sender into one `Recheck`, by group commit: the first job opens a batch, which is published on the
next event-loop turn; jobs that arrive while a sender's batch is being published gather in the next one,
published as soon as the broker confirms the current one (or at `size` jobs). So a job waits at most about
one publish for its recheck to be on its way, and the batches grow with the load by themselves. The status
worker looks every job of a batch up and carries the ones still pending on in one message again.

Nothing is lost to the batching: a job's delivery is acknowledged only after the message that carries its
recheck is confirmed (`RecheckBatcher.add` returns then). If that publish fails, or the process dies before
it, the delivery comes back, finds the job accepted, and schedules its recheck again. Nothing is checked
early either: the delay starts when the batch is published, after every job in it was accepted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import msgspec

from smsfleet.contracts import encode

from .delays import Delayer

__all__ = ["Recheck", "RecheckBatcher"]


class Recheck(msgspec.Struct, frozen=True, kw_only=True):
    """Scheduled status lookups for jobs of one sender, published to `<ns>.internal` as `recheck.<gateway>`."""

    job_ids: tuple[str, ...]
    sender: str
    gateway: str
    #: when the first job of the batch was accepted (epoch seconds): the status horizon counts from here
    accepted_at: float
    attempt: int = 1


@dataclass
class _Batch:
    accepted_at: float
    job_ids: list[str] = field(default_factory=list)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class RecheckBatcher:
    def __init__(self, delayer: Delayer, gateway: str, *, size: int = 500) -> None:
        self.delayer = delayer
        self.gateway = gateway
        self.size = size
        self._open: dict[tuple[str, float], _Batch] = {}
        self._publishing: dict[tuple[str, float], asyncio.Task[None]] = {}

    async def add(self, sender: str, job_id: str, after_s: float) -> None:
        """Schedule a recheck of `job_id` in `after_s`; returns when the message that carries it is confirmed."""
        await self.schedule(sender, job_id, after_s)

    def schedule(self, sender: str, job_id: str, after_s: float) -> asyncio.Future[None]:
        """`add` without waiting: the job joins its batch now; the future is done when the batch is confirmed
        (cancelling it leaves the batch alone)."""
        key = (sender, after_s)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(accepted_at=time.time())
            batch.done.add_done_callback(_retrieve)
            if key not in self._publishing:  # else it goes when the batch being published is confirmed
                asyncio.get_running_loop().call_soon(self._flush, key)
        batch.job_ids.append(job_id)
        if len(batch.job_ids) >= self.size:
            self._flush(key)
        confirmed = asyncio.shield(batch.done)
        confirmed.add_done_callback(_retrieve)  # its waiter may have stopped waiting (a failed event publish)
        return confirmed

    def _flush(self, key: tuple[str, float]) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return
        task = self._publishing[key] = asyncio.create_task(self._publish(key, batch))
        task.add_done_callback(lambda _: self._published(key, task))

    def _published(self, key: tuple[str, float], task: asyncio.Task[None]) -> None:
        if self._publishing.get(key) is task:
            del self._publishing[key]
        self._flush(key)  # the batch that gathered meanwhile, if any

    async def _publish(self, key: tuple[str, float], batch: _Batch) -> None:
        sender, after_s = key
        recheck = Recheck(
            job_ids=tuple(batch.job_ids), sender=sender, gateway=self.gateway, accepted_at=batch.accepted_at
        )
        try:
            await self.delayer.delay(
                encode(recheck), routing_key=f"recheck.{self.gateway}", target="internal", seconds=after_s
            )
        except Exception as exc:  # every job of the batch goes back with its delivery
            batch.done.set_exception(exc)
        else:
            batch.done.set_result(None)


def _retrieve(done: asyncio.Future[None]) -> None:
    """Mark a failed batch's exception as seen: its waiters may all have been cancelled (a drain), or gone."""
    if not done.cancelled():
        done.exception()
