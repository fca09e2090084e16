"""What every consumer shares — send, status and suppression: consume one queue, track deliveries in flight,
pause while Redis is away, drain, and turn a failure into the right fate for the delivery.

    a message that does not decode            parked in the dead queue, with the reason
    Redis unreachable while handling it       given back through the shortest delay tier (re-published, then
                                              acked: its delivery count is not spent), and consuming pauses
                                              until Redis answers a ping again, by itself
    anything else that escapes `handle`       back to the queue (nack); the queue's delivery limit parks a
                                              message that keeps crashing its handler
    cancelled (a drain past its grace)        back to the queue

Quorum queues count every return of a message towards its delivery limit, so a message nacked once a second
through a 20-s Redis outage would be dead-lettered after five: a delivery report or a STOP lost for nothing.
Giving it back through a delay tier instead costs one publish and spends nothing.

`handle` acknowledges (or otherwise settles) its message itself.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from redis.exceptions import RedisError

from .runtime import Runtime

__all__ = ["QueueConsumer"]

log = structlog.get_logger("smsfleet.workers")

#: how long a message given back during a Redis outage waits (the shortest delay tier)
GIVE_BACK_S = 1.0
#: how often a paused consumer asks Redis whether it is back
PING_EVERY_S = 1.0


class QueueConsumer:
    """Subclasses set `role` and `target` (the delay target that brings a message back to this queue) and
    implement `handle`."""

    role: str
    target: str = "internal"

    def __init__(self, rt: Runtime, queue_name: str) -> None:
        self.rt = rt
        self.queue_name = queue_name
        self.draining = False
        self.in_flight: set[asyncio.Task[None]] = set()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._redis_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # declared, not just named: the robust channel then restores the consumer after a reconnect
        self._queue = await self.rt.consume_channel.get_queue(self.queue_name)
        await self._consume()
        log.info("worker.started", role=self.role, queue=self.queue_name)

    @property
    def paused(self) -> bool:
        """Not consuming because Redis is unreachable."""
        return self._redis_watch is not None and not self._redis_watch.done()

    async def drain(self, grace_s: float) -> None:
        """Stop consuming; let deliveries in flight finish within `grace_s`; the others go back."""
        self.draining = True
        await self._stop_consuming()
        if self._redis_watch is not None:
            self._redis_watch.cancel()
        if self.in_flight:
            _, pending = await asyncio.wait(set(self.in_flight), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        log.info("worker.drained", role=self.role, queue=self.queue_name)

    async def handle(self, msg: AbstractIncomingMessage) -> None:
        raise NotImplementedError

    def received(self, msg: AbstractIncomingMessage) -> None:
        """Called for every delivery before `handle` (metrics)."""

    async def _consume(self) -> None:
        assert self._queue is not None
        self._tag = await self._queue.consume(self._on_message)

    async def _stop_consuming(self) -> None:
        if self._queue is not None and self._tag is not None:
            tag, self._tag = self._tag, None
            with contextlib.suppress(Exception):
                await self._queue.cancel(tag)

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        self.received(msg)
        try:
            await self.handle(msg)
        except msgspec.DecodeError as exc:
            await self.rt.dead_letter(msg.body, "malformed", str(exc), msg.routing_key or "", msg.message_id)
            await msg.ack()
        except RedisError as exc:  # (not OSError: a broker connection error is one too, and no reason to pause)
            # Redis holds the claims, the limits and the lists: without it nothing may be decided. Give the
            # message back without spending its delivery count, and stop taking new ones until Redis answers.
            log.warning("worker.redis_unavailable", role=self.role, error=type(exc).__name__)
            await self._give_back(msg)
            self._pause_for_redis()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
            raise
        except Exception:
            log.exception("message.crashed", role=self.role, queue=self.queue_name)
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
        finally:
            self.in_flight.discard(task)

    async def _give_back(self, msg: AbstractIncomingMessage) -> None:
        try:
            await self.rt.delayer.delay(
                msg.body,
                routing_key=msg.routing_key or "",
                target=self.target,
                seconds=GIVE_BACK_S,
                headers={k: v for k, v in (msg.headers or {}).items() if k.startswith("x-smsfleet-")},
                message_id=msg.message_id,
            )
            await msg.ack()
        except Exception:  # the broker is in trouble too: the queue keeps the message
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)

    def _pause_for_redis(self) -> None:
        if self.paused or self.draining:
            return

        async def watch() -> None:
            await self._stop_consuming()
            while not self.draining:
                try:
                    await self.rt.redis.ping()
                    await self._consume()  # fails while the broker is away too: then try again
                except Exception as exc:  # Redis or the broker still away: wait and ask again
                    log.debug("worker.still_paused", role=self.role, error=type(exc).__name__)
                    await asyncio.sleep(PING_EVERY_S)
                    continue
                log.info("worker.redis_back", role=self.role, queue=self.queue_name)
                return

        self._redis_watch = asyncio.create_task(watch())
