"""Run worker roles in one process until SIGTERM/SIGINT, then drain within the grace period and exit 0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from redis.exceptions import RedisError

from smsfleet import metrics
from smsfleet.settings import Settings
from smsfleet.signals import forget_signals, stop_on_signals, unless_stopped

from .consumer import QueueConsumer
from .runtime import Runtime
from .send import SendPolicy, SendWorker
from .status import StatusWorker
from .suppression import SuppressionWorker

__all__ = ["run_workers"]

log = structlog.get_logger("smsfleet.workers")

QUEUE_POLL_S = 15.0


class _Health:
    """What the probes report: live while the loop turns; ready while connected and consuming."""

    def __init__(self, rt: Runtime, consumers: Sequence[QueueConsumer]) -> None:
        self.rt = rt
        self.consumers = consumers  # the list run_workers fills
        self.redis_ok = True
        self.draining = False

    def ready(self) -> bool:
        consuming = all(not c.paused for c in self.consumers)
        return not self.draining and self.redis_ok and not self.rt.connection.is_closed and consuming


async def _watch_queues(rt: Runtime, queues: Sequence[str], health: _Health) -> None:
    """Queue depths for the metrics, and a Redis ping for readiness, every few seconds."""
    while True:
        with contextlib.suppress(Exception):
            for name in queues:
                queue = await rt.publish_channel.declare_queue(name, passive=True, robust=False)  # fresh counts
                depth = queue.declaration_result.message_count or 0
                metrics.QUEUE_DEPTH.labels(name).set(depth)
                if depth == 0:
                    metrics.QUEUE_OLDEST_AGE.labels(name).set(0)
        try:
            await rt.redis.ping()
            health.redis_ok = True
        except (RedisError, OSError):
            health.redis_ok = False
        await asyncio.sleep(QUEUE_POLL_S)


async def run_workers(
    settings: Settings,
    *,
    gateways: Sequence[str],
    status: bool,
    policy: SendPolicy,
    suppression: bool = False,
    grace_s: float = 25.0,
    metrics_port: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Consume until `stop` is set (or a SIGTERM/SIGINT arrives), then drain. Set while connecting or starting
    the consumers (a broker that does not answer), it ends that at once, and what had started is drained."""
    stop = stop_on_signals(stop or asyncio.Event())
    try:
        async with contextlib.AsyncExitStack() as stack:
            rt = await unless_stopped(
                stack.enter_async_context(Runtime.open(settings, prefetch=policy.concurrency)), stop
            )
            if rt is None:  # stopped while connecting
                return
            workers: list[QueueConsumer] = [SendWorker(rt, kind, policy) for kind in gateways]
            queues = [rt.names.send_queue(kind) for kind in gateways]
            if status:
                workers.append(StatusWorker(rt))
                queues += [rt.names.status_queue, rt.names.dead_queue]
            if suppression:
                workers.append(SuppressionWorker(rt))
                queues.append(rt.names.inbound_queue)
            health = _Health(rt, workers)
            await stack.enter_async_context(metrics.probe_server(metrics_port, health.ready))
            stack.push_async_callback(_cancel, asyncio.create_task(_watch_queues(rt, queues, health)))
            if await unless_stopped(_start(workers), stop):
                log.info("fleet.running", gateways=list(gateways), status=status, suppression=suppression)
                await stop.wait()
            health.draining = True
            log.info("fleet.draining", grace_s=grace_s)
            await asyncio.gather(*(w.drain(grace_s) for w in workers))
    finally:
        forget_signals()
        log.info("fleet.stopped")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _start(workers: Sequence[QueueConsumer]) -> bool:
    for w in workers:
        await w.start()
    return True
