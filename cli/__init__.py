"""The `smsfleet` command line (DESIGN §10): one module per command group, on top of every other package.

    senders.py  senders list|show|create|update|delete|rotate-token
    ops.py      gateways, topology declare, status, suppress
    publish.py  publish
    sendtest.py send-test
    fleet.py    worker, run, webhooks, demo
    admin.py    admin
    dead.py     dead list|show|requeue|purge
    asyncapi.py asyncapi
    common.py   the errors, the console, connecting to Redis and RabbitMQ, `run` (uvloop)

Configuration is read once from the environment here and passed down. A user mistake gets one line on
stderr and exit status 2; an unreachable service gets one line saying how to start it and status 1. No
traceback for either, and no secret in any output. Nothing of ours imports this package
(tests/unit/test_imports.py); `python -m smsfleet` reaches it through `runpy`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from smsfleet.logs import configure
from smsfleet.senders import SenderError, UnreadableSender
from smsfleet.settings import ConfigError, Settings

from .admin import add_admin
from .asyncapi import add_asyncapi
from .common import Command, Parser, Unavailable, UserError, run
from .dead import add_dead
from .fleet import add_demo, add_webhooks, add_worker
from .ops import add_gateways, add_status, add_suppress, add_topology
from .publish import add_publish
from .senders import add_senders
from .sendtest import add_send_test

__all__ = ["Unavailable", "UserError", "build_parser", "main", "run"]

#: the command groups, in the order `smsfleet --help` lists them
COMMANDS = (
    add_senders,
    add_gateways,
    add_topology,
    add_publish,
    add_send_test,
    add_worker,  # worker, run
    add_demo,
    add_status,
    add_suppress,
    add_dead,
    add_webhooks,
    add_admin,
    add_asyncapi,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="smsfleet", description="SMS delivery worker fleet")
    parser.add_argument(
        "--config", metavar="FILE", help="a TOML file of settings (else $SMSFLEET_CONFIG); the environment wins"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        settings = Settings.from_env(config=args.config)
        # one-shot commands only say what went wrong; services log at the configured level
        service = getattr(args, "service", False)
        configure(settings.log_format, settings.log_level or ("info" if service else "warning"))
        func: Command = args.func
        return run(func(args, settings))
    except (UserError, SenderError, UnreadableSender, ConfigError) as exc:
        print(f"smsfleet: error: {exc}", file=sys.stderr)
        return 2
    except Unavailable as exc:
        print(f"smsfleet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
