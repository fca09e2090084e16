"""Stopping a long-running command on SIGTERM (the orchestrator) or SIGINT (Ctrl-C).

    stop = stop_on_signals(stop or asyncio.Event())   # ... await stop.wait() ...
    forget_signals()                                  # when the loop lives on (demo, tests)

Used by every command that runs until stopped: the workers, the webhooks receiver, the admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

__all__ = ["STOP_SIGNALS", "forget_signals", "stop_on_signals"]

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
