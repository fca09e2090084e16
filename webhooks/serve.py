"""Run the receiver until SIGTERM/SIGINT: the public port, and `/metrics` on a port of its own."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from smsfleet.metrics import metrics_app
from smsfleet.settings import Settings
from smsfleet.signals import stop_on_signals, unless_stopped

from .app import SERVER_OPTIONS, Receiver, build_app
from .guard import Options

__all__ = ["serve"]

log = structlog.get_logger("smsfleet.webhooks")


async def serve(
    settings: Settings,
    host: str,
    port: int,
    stop: asyncio.Event | None = None,
    *,
    metrics_port: int | None = None,
    options: Options | None = None,
) -> None:
    """`options` None: read from the environment (SMSFLEET_TRUSTED_PROXIES, SMSFLEET_WEBHOOK_RATE_LIMIT)."""
    stop = stop_on_signals(stop or asyncio.Event())
    receiver = Receiver(settings, options=options or Options.of(settings))
    if not receiver.rapporto_nets:
        log.info("webhooks.rapporto_inbound_refused", hint="set SMSFLEET_WEBHOOK_RAPPORTO_IPS to accept inbound "
                 "SMS on the bare Rapporto URL, or give Rapporto the per-sender URL")  # fmt: skip
    runners = [web.AppRunner(build_app(receiver), **SERVER_OPTIONS)]
    if metrics_port is not None:  # never on the public port: the Ingress routes only /smslistener/ there
        runners.append(web.AppRunner(metrics_app(live=lambda: True, ready=lambda: receiver.ready), access_log=None))
    try:
        # setting up connects to Redis and the broker, which may not answer: a stop meanwhile ends it
        if await unless_stopped(_start(runners, host, (port, metrics_port)), stop):
            log.info("webhooks.listening", host=host, port=port, metrics_port=metrics_port)
            await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        log.info("webhooks.stopped")


async def _start(runners: list[web.AppRunner], host: str, ports: tuple[int | None, ...]) -> bool:
    for runner, port in zip(runners, ports, strict=False):
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
    return True
