"""Run worker roles in one process until SIGTERM/SIGINT, then drain within the grace period and exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence

import structlog

from smsfleet.settings import Settings

from .inbound import InboundWorker
from .runtime import Runtime
from .send import SendPolicy, SendWorker
from .status import StatusWorker

__all__ = ["run_workers"]

log = structlog.get_logger("smsfleet.workers")


async def run_workers(
    settings: Settings,
    *,
    gateways: Sequence[str],
    status: bool,
    policy: SendPolicy,
    suppression: bool = False,
    grace_s: float = 25.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Consume until `stop` is set (or a SIGTERM/SIGINT arrives), then drain."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    prefetch = policy.concurrency
    async with Runtime.open(settings, prefetch=prefetch) as rt:
        senders = [SendWorker(rt, kind, policy) for kind in gateways]
        workers: list[SendWorker | StatusWorker | InboundWorker] = [*senders]
        if status:
            workers.append(StatusWorker(rt))
        if suppression:
            workers.append(InboundWorker(rt))
        for w in workers:
            await w.start()
        log.info("fleet.running", gateways=list(gateways), status=status, suppression=suppression)
        await stop.wait()
        log.info("fleet.draining", grace_s=grace_s)
        await asyncio.gather(*(w.drain(grace_s) for w in workers))
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(sig)
    log.info("fleet.stopped")
