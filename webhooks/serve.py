"""Run the receiver until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from aiohttp import web

from smsfleet.settings import Settings

from .app import Receiver, build_app

__all__ = ["serve"]

log = structlog.get_logger("smsfleet.webhooks")


async def serve(settings: Settings, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(build_app(Receiver(settings, rapporto_ips=settings.webhook_rapporto_ips)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("webhooks.listening", host=host, port=port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("webhooks.stopped")
