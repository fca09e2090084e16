"""The application keys the admin's handlers share."""

from __future__ import annotations

import jinja2
from aiohttp import web

from smsfleet.senders import SenderRegistry
from smsfleet.settings import Settings

from .security import Guard

__all__ = ["GUARD", "REGISTRY", "SETTINGS", "TEMPLATES"]

SETTINGS = web.AppKey("admin.settings", Settings)
GUARD = web.AppKey("admin.guard", Guard)
TEMPLATES = web.AppKey("admin.templates", jinja2.Environment)
REGISTRY = web.AppKey("admin.registry", SenderRegistry)  # set on startup, once Redis is connected
