"""What every internal consumer shares: consume one queue, track deliveries in flight, drain, and turn a
failure into the right fate for the delivery."""

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


class QueueConsumer:
    """Subclasses set `role` and `queue_name` and implement `handle`; `_on_message` does the rest.

    A message that does not decode is parked in the dead queue; one whose handling meets an unavailable
    Redis goes back after a pause; one that crashes its handler goes back too, and the queue's delivery
    limit parks it if it keeps doing so.
    """

    role: str

    def __init__(self, rt: Runtime, queue_name: str) -> None:
        self.rt = rt
        self.queue_name = queue_name
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self.in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # declared, not just named: the robust channel then restores the consumer after a reconnect
        self._queue = await self.rt.consume_channel.get_queue(self.queue_name)
        self._tag = await self._queue.consume(self._on_message)
        log.info("worker.started", role=self.role)

    async def drain(self, grace_s: float) -> None:
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self.in_flight:
            _, pending = await asyncio.wait(set(self.in_flight), timeout=grace_s)
            for task in pending:
                task.cancel()

    async def handle(self, msg: AbstractIncomingMessage) -> None:
        raise NotImplementedError

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        try:
            await self.handle(msg)
            await msg.ack()
        except msgspec.DecodeError as exc:
            await self.rt.dead_letter(msg.body, "malformed", str(exc), msg.routing_key or "", msg.message_id)
            await msg.ack()
        except (RedisError, OSError) as exc:
            log.warning("worker.redis_unavailable", role=self.role, error=str(exc))
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
            raise
        except Exception:
            log.exception("message.crashed", role=self.role)
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
        finally:
            self.in_flight.discard(task)
