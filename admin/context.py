"""The application keys the admin's handlers share, and the one lookup they share (`sender_or_404`)."""

from __future__ import annotations

import jinja2
import redis.asyncio as aioredis
from aiohttp import web

from smsfleet.senders import Sender, SenderRegistry, UnreadableSender
from smsfleet.settings import Settings

from .broker import Broker
from .errors import Problem
from .security import Guard

__all__ = ["BROKER", "GUARD", "REDIS", "REGISTRY", "SETTINGS", "TEMPLATES", "sender_or_404"]

SETTINGS = web.AppKey("admin.settings", Settings)
GUARD = web.AppKey("admin.guard", Guard)
TEMPLATES = web.AppKey("admin.templates", jinja2.Environment)
REGISTRY = web.AppKey("admin.registry", SenderRegistry)  # set on startup, once Redis is connected
REDIS = web.AppKey("admin.redis", aioredis.Redis)  # the registry's client: job records, the overview's counters
BROKER = web.AppKey("admin.broker", Broker)  # connects on first use


async def sender_or_404(request: web.Request, *, missing: str, unreadable: str) -> Sender:
    """The sender named by the route's `{id}`.

    A `Problem` otherwise, its message in the caller's voice: 404 `missing.format(id=...)` when there is no
    such sender, 500 `unreadable.format(error=...)` when its stored record does not decode.
    """
    sender_id = request.match_info["id"]
    try:
        sender = await request.app[REGISTRY].get(sender_id)
    except UnreadableSender as exc:
        raise Problem(500, unreadable.format(error=exc)) from None
    if sender is None:
        raise Problem(404, missing.format(id=sender_id))
    return sender
