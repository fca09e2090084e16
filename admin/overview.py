"""The overview: how the fleet is doing, from the workers' per-minute counters in Redis (`workers.stats`)
and from the broker. Works with no Prometheus.

    GET /                 the page: per sender and per gateway, jobs by final state over the last hour and
                          24 h, a chart per sender, queues, the dead queue by reason, the last failures
    GET /api/overview     the same as JSON

Where each number comes from:

- jobs by state, delivery ratio (delivered / final), provider error share (provider errors / sends), sends
  a second (over the last 60-120 s: this minute and the one before): the counters the workers flush to
  Redis once a second. "24 h" is this hour and the 23 before it (hourly buckets).
- rate limit: the sender's, else the kind's configured or default rate (as the send worker computes it).
- queue depth: a passive declaration of each gateway's send queue (the broker's count of ready messages).
- oldest message age: not peeked (on a quorum queue every peek counts as a delivery attempt, against the
  queue's delivery limit). The send workers export it as the `smsfleet_queue_oldest_message_age_seconds`
  gauge (the age of the message they last took from the head) and their counters' flush copies it to Redis;
  it is shown with the time it was reported, and as unknown when no worker reported in the last minute.
- the dead queue: read (and left in place) by `smsfleet.deadletters`, up to `DEAD_SCAN` messages.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast

import aiormq
import msgspec
from aiohttp import web

from gateways import gateway_class
from smsfleet.contracts import FINAL_STATES, State
from smsfleet.deadletters import DeadQueue, DeadQueueMissing
from smsfleet.kinds import KIND_SETTINGS
from smsfleet.senders import Sender
from smsfleet.settings import Settings
from smsfleet.topology import Names
from workers import stats
from workers.send import sender_rate

from .api import json_response
from .broker import BROKER_ERRORS
from .charts import minute_bars
from .context import BROKER, REDIS, REGISTRY, SETTINGS
from .errors import Problem
from .pages import render

__all__ = ["add_routes", "collect"]

#: dead letters the overview reads at most (held unacknowledged for the moment of the scan)
DEAD_SCAN = 1000
#: failures listed
FAILURES_SHOWN = 20
#: a queue age older than this is not shown as current
AGE_FRESH_S = 60.0
_FINALS = [s.value for s in State if s in FINAL_STATES]


def _span(fields: dict[str, int]) -> dict[str, Any]:
    """Counts of one span (an hour, a day) with the ratios the page shows."""
    final = sum(fields.get(s, 0) for s in _FINALS)
    sent, errors = fields.get("sent", 0), fields.get("provider_error", 0)
    return {
        "states": {s: fields.get(s, 0) for s in [State.ACCEPTED.value, *_FINALS]},
        "final": final,
        "sent": sent,
        "provider_errors": errors,
        "delivery_ratio": round(fields.get(State.DELIVERED.value, 0) / final, 4) if final else None,
        "provider_error_share": round(errors / sent, 4) if sent else None,
    }


def _sum(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """gateway -> field -> count, summed over the gateways."""
    out: dict[str, int] = {}
    for fields in counts.values():
        for name, n in fields.items():
            out[name] = out.get(name, 0) + n
    return out


def _chart(window: stats.Window, now: float) -> list[dict[str, Any]]:
    first = int(now) // 60 - len(window.minutes) + 1
    points = []
    for i, fields in enumerate(window.minutes):
        final = sum(fields.get(s, 0) for s in _FINALS)
        delivered = fields.get(State.DELIVERED.value, 0)
        at = datetime.fromtimestamp((first + i) * 60, UTC).strftime("%H:%M")
        points.append(
            {"minute": at, "delivered": delivered, "failed": final - delivered,
             "pending": fields.get(State.ACCEPTED.value, 0)}
        )  # fmt: skip
    return points


def _rate_limit(sender: Sender, settings: Settings) -> float:
    """Requests a second for the sender, as the send worker computes it (the kind's class has what it reads)."""
    return sender_rate(sender, cast(Any, gateway_class(sender.gateway)), settings)


async def _queues(request: web.Request, names: Names, kinds: list[str], now: float) -> dict[str, Any]:
    """kind -> {name, depth, oldest_age_s, age_reported_s_ago}; plus "error" when the broker cannot tell."""
    ages = await stats.read_queue_ages(request.app[REDIS], names)
    out: dict[str, Any] = {}
    try:
        connection = await request.app[BROKER].connection()
        channel = await connection.channel()
        try:
            for kind in kinds:
                name = names.send_queue(kind)
                try:
                    declared = await channel.declare_queue(name, passive=True, robust=False)
                    depth: int | None = int(declared.declaration_result.message_count or 0)
                except aiormq.exceptions.ChannelNotFoundEntity:  # closes the channel: open another
                    depth = None
                    channel = await connection.channel()
                out[kind] = {"name": name, "depth": depth}
        finally:
            if not channel.is_closed:
                await channel.close()
        error = None
    except (Problem, *BROKER_ERRORS) as exc:
        error = exc.message if isinstance(exc, Problem) else f"RabbitMQ: {type(exc).__name__}"
        out = {kind: {"name": names.send_queue(kind), "depth": None} for kind in kinds}
    for queue in out.values():
        age = ages.get(queue["name"])
        fresh = age is not None and now - age["at"] <= AGE_FRESH_S
        queue["oldest_age_s"] = age["age_s"] if age is not None and fresh else None
        queue["age_reported_s_ago"] = round(now - age["at"], 1) if age is not None else None
    return {"queues": out, "error": error}


async def _dead(request: web.Request, names: Names) -> dict[str, Any]:
    try:
        connection = await request.app[BROKER].connection()
        listing = await DeadQueue(connection, names).listing(DEAD_SCAN)
    except Problem as exc:
        return {"total": None, "read": 0, "by_reason": {}, "error": exc.message}
    except DeadQueueMissing as exc:
        return {"total": None, "read": 0, "by_reason": {}, "error": str(exc)}
    except BROKER_ERRORS as exc:
        return {"total": None, "read": 0, "by_reason": {}, "error": f"RabbitMQ: {type(exc).__name__}"}
    return {"total": listing.total, "read": len(listing.letters), "by_reason": listing.by_reason, "error": None}


async def collect(request: web.Request) -> dict[str, Any]:
    """The overview as a JSON-ready dict (the shape of `/api/overview`)."""
    settings, redis = request.app[SETTINGS], request.app[REDIS]
    names = Names(settings.namespace)
    now = time.time()
    senders, _ = await request.app[REGISTRY].load()
    ids = sorted(senders)
    windows = await stats.read_windows(redis, names, ids, now)
    rows = []
    for sender_id in ids:
        sender, window = senders[sender_id], windows[sender_id]
        recent = window.minutes[-2:]
        sent = sum(m.get("sent", 0) for m in recent)
        seconds = 60 * (len(recent) - 1) + (now % 60 or 1)
        rows.append(
            {
                "id": sender.id,
                "name": sender.name,
                "gateway": sender.gateway,
                "rate_limit": _rate_limit(sender, settings),
                "sends_per_s": round(sent / seconds, 2),
                "hour": _span(_sum(window.hour)),
                "day": _span(_sum(window.day)),
                "chart": _chart(window, now),
            }
        )
    kinds = sorted({s.gateway for s in senders.values()} | {g for w in windows.values() for g in w.day})
    kinds = [k for k in kinds if k in KIND_SETTINGS]
    queues = await _queues(request, names, kinds, now)
    gateways = [
        {
            "kind": kind,
            "title": KIND_SETTINGS[kind].title,
            "senders": [s.id for s in senders.values() if s.gateway == kind],
            "hour": _span(_sum_windows(windows, kind, "hour")),
            "day": _span(_sum_windows(windows, kind, "day")),
            "queue": queues["queues"][kind],
        }
        for kind in kinds
    ]
    failures = await stats.read_failures(redis, names, FAILURES_SHOWN)
    return {
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "senders": rows,
        "gateways": gateways,
        "broker_error": queues["error"],
        "dead": await _dead(request, names),
        "failures": [msgspec.to_builtins(f) for f in failures],
    }


def _sum_windows(windows: dict[str, stats.Window], kind: str, span: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for window in windows.values():
        for name, n in (window.hour if span == "hour" else window.day).get(kind, {}).items():
            out[name] = out.get(name, 0) + n
    return out


async def api_overview(request: web.Request) -> web.StreamResponse:
    return json_response(await collect(request))


async def page(request: web.Request) -> web.StreamResponse:
    data = await collect(request)
    charts = {s["id"]: minute_bars(s["chart"], f"{s['id']}: jobs a minute over the last hour") for s in data["senders"]}
    return render(request, "overview.html", data=data, charts=charts)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/api/overview", api_overview)
