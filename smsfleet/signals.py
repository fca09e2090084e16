"""Stopping a long-running command on SIGTERM (the orchestrator) or SIGINT (Ctrl-C).

    stop = stop_on_signals(stop or asyncio.Event())   # ... await stop.wait() ...
    done = await unless_stopped(connect(), stop)      # None: stopped before it was done
    forget_signals()                                  # when the loop lives on (demo, tests)

Used by every command that runs until stopped: the workers, the webhooks receiver, the admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["STOP_SIGNALS", "forget_signals", "stop_on_signals", "unless_stopped"]

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: where the running loop cannot take signal handlers: not on Windows, not off the main thread
_UNSUPPORTED = (NotImplementedError, RuntimeError, ValueError)


def stop_on_signals(stop: asyncio.Event) -> asyncio.Event:
    """Set `stop` when SIGTERM or SIGINT arrives; returns it. Call it on the running loop.

    Where the loop cannot take signal handlers nothing is installed, and setting `stop` is the only way to end.
    """
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        with contextlib.suppress(*_UNSUPPORTED):
            loop.add_signal_handler(sig, stop.set)
    return stop


def forget_signals() -> None:
    """Remove the handlers `stop_on_signals` installed on the running loop."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        with contextlib.suppress(*_UNSUPPORTED):
            loop.remove_signal_handler(sig)


async def unless_stopped(step: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`step`'s result; None when `stop` is set first, and `step` is cancelled. A broker that stopped answering
    (a stalled disk, a paused VM) would hold a connection's handshake or a queue's declaration, and with it a
    stop asked for meanwhile, until it answers again."""
    task = asyncio.ensure_future(step)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()
