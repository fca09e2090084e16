"""Prometheus metrics of every smsfleet process, and the small HTTP server that exposes them.

Labels stay bounded: gateway kinds, sender ids (configured by operators), states, outcome classes, tiers.
Never a phone number or a job id.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "BATCH_SIZE",
    "CALLBACKS",
    "CONSUMED",
    "DEAD_LETTERED",
    "JOBS",
    "PROVIDER_LATENCY",
    "PROVIDER_REQUESTS",
    "PUBLISH_RETRIES",
    "QUEUE_DEPTH",
    "QUEUE_OLDEST_AGE",
    "RATE_LIMIT_WAIT",
    "RECHECKS",
    "REPORTS",
    "RETRIES",
    "SUPPRESSION_HITS",
    "metrics_app",
    "metrics_handler",
    "probe_server",
]

CONSUMED = Counter("smsfleet_jobs_consumed_total", "Send jobs taken from a queue", ["gateway"])
JOBS = Counter("smsfleet_jobs_total", "Jobs that reached a final state", ["gateway", "sender", "state"])
PROVIDER_REQUESTS = Counter(
    "smsfleet_provider_requests_total",
    "Provider send outcomes, one per message (a batched request counts each of its messages): ok, permanent, "
    "transient, ambiguous, rate_limited",
    ["gateway", "outcome"],
)
PROVIDER_LATENCY = Histogram(
    "smsfleet_provider_latency_seconds",
    "Provider request latency",
    ["gateway"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "smsfleet_batch_messages",
    "Messages per provider send request (1 for kinds that do not batch)",
    ["gateway"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 4000),
)
RATE_LIMIT_WAIT = Histogram(
    "smsfleet_rate_limit_wait_seconds",
    "Time a request waited for the fleet-wide rate limit",
    ["gateway"],
    buckets=(0, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
RETRIES = Counter("smsfleet_retries_total", "Retries scheduled, by delay tier (seconds)", ["gateway", "tier"])
DEAD_LETTERED = Counter("smsfleet_dead_lettered_total", "Messages parked in the dead queue", ["reason"])
PUBLISH_RETRIES = Counter(
    "smsfleet_publish_retries_total",
    "Deliveries handled again because the broker nacked what they published, or did not confirm it in time",
    ["role", "why"],
)
SUPPRESSION_HITS = Counter("smsfleet_suppression_hits_total", "Jobs not sent: the number is suppressed", ["gateway"])
REPORTS = Counter(
    "smsfleet_reports_total", "Pushed delivery reports: matched, unmatched, ignored", ["gateway", "result"]
)
RECHECKS = Counter("smsfleet_rechecks_total", "Status rechecks: final, pending, failed, horizon", ["gateway", "result"])
CALLBACKS = Counter("smsfleet_callbacks_total", "Provider callbacks received, by HTTP answer", ["gateway", "status"])
QUEUE_DEPTH = Gauge("smsfleet_queue_depth", "Messages ready in a queue", ["queue"])
QUEUE_OLDEST_AGE = Gauge(
    "smsfleet_queue_oldest_message_age_seconds",
    "Age of the message last taken from the head of the queue (0 when the queue is empty)",
    ["queue"],
)


async def metrics_handler(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_app(live: Callable[[], bool], ready: Callable[[], bool], *, samples: str | None = None) -> web.Application:
    """`/metrics`, `/livez` and `/readyz` for a worker process; `samples`: for a process group, the directory its
    processes write their samples to (prometheus-client's multiprocess mode), added up on every scrape."""

    async def group_metrics(_: web.Request) -> web.Response:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=samples)  # type: ignore[no-untyped-call]
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def livez(_: web.Request) -> web.Response:
        ok = live()
        return web.json_response({"live": ok}, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler if samples is None else group_metrics)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def probe_server(
    port: int | None, ready: Callable[[], bool], *, samples: str | None = None
) -> AsyncIterator[None]:
    """`metrics_app` served on `port` (None: nothing) until the block ends; live while the loop turns."""
    if port is None:
        yield
        return
    runner = web.AppRunner(metrics_app(live=lambda: True, ready=ready, samples=samples), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - probes come from the orchestrator
    try:
        yield
    finally:
        await runner.cleanup()
