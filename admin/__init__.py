"""The operators' admin: the fleet's overview, job lookup, test sends, dead letters and the senders, as a
JSON API and a web page, served by `smsfleet admin` (never public).

    build_app(AdminConfig(token), settings) -> aiohttp Application     serve(config, settings, host, port)

The command itself (reading SMSFLEET_ADMIN_TOKEN, checking the key and Redis first) is `cli.admin`.
"""

from __future__ import annotations

from .app import build_app, serve
from .config import AdminConfig

__all__ = ["AdminConfig", "build_app", "serve"]
