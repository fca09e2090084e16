"""`smsfleet admin`: the senders admin API and web page (package `admin`).

The environment is read here, once: SMSFLEET_ADMIN_TOKEN (required; no default).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from typing import Any

import structlog

from smsfleet.settings import Settings

from .common import UserError, connect_registry

__all__ = ["add_admin"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081


async def cmd_admin(args: argparse.Namespace, settings: Settings) -> int:
    from admin import AdminConfig, serve  # noqa: PLC0415 - here: other commands (a worker) need not load the web stack

    try:
        config = AdminConfig.from_env(os.environ)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    # before listening, in one line: a bad SMSFLEET_SECRET_KEY (2), Redis down (1), stored secrets it cannot
    # decrypt (2); a single record that does not decode is shown on the page instead
    async with connect_registry(settings) as registry:
        _, unreadable = await registry.load()
        if key := next((exc for exc in unreadable if exc.key_problem), None):
            raise UserError(str(key))
    if not _loopback(args.host):
        structlog.get_logger("smsfleet.admin").warning(
            "admin.exposed", host=args.host, hint="serve it behind TLS: Basic auth sends the token in every request"
        )
    try:
        await serve(config, settings, args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_admin(sub: Any) -> None:
    p = sub.add_parser(
        "admin",
        help="the senders admin: HTTP API and web page (needs SMSFLEET_ADMIN_TOKEN)",
        description=(
            "Serve the senders admin: the web page at / and the JSON API under /api. Every request needs the "
            "token in SMSFLEET_ADMIN_TOKEN: 'Authorization: Bearer TOKEN', or user admin with the token as "
            "password (the browser asks)."
        ),
    )
    p.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.set_defaults(func=cmd_admin, service=True)
