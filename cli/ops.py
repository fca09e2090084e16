"""Operations: `smsfleet gateways`, `topology declare`, `status JOB_ID`, `suppress add|remove|check|list`."""

from __future__ import annotations

import argparse
import json
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gateways import gateway_class
from smsfleet.contracts import InvalidJob, normalize_phone
from smsfleet.kinds import KIND_SETTINGS, fields
from smsfleet.settings import Settings
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import Names, TopologyConflict, declare
from workers.ledger import Ledger
from workers.lookup import job_summary

from .common import Parser, UserError, connect_amqp, connect_redis, console, esc, plain, print_json

__all__ = ["add_gateways", "add_status", "add_suppress", "add_topology"]


# -- gateways ----------------------------------------------------------------------------------------


async def cmd_gateways(args: argparse.Namespace, settings: Settings) -> int:
    rows: list[dict[str, Any]] = []
    for kind, cls in KIND_SETTINGS.items():
        try:
            adapter: Any = gateway_class(kind)
            implemented, assumptions = True, list(adapter.assumptions)
        except LookupError:
            implemented, assumptions = False, []
        rows.append(
            {
                "kind": kind,
                "title": cls.title,
                "implemented": implemented,
                "callbacks": cls.callbacks,
                "settings": [msgspec.to_builtins(f) for f in fields(cls)],
                "assumptions": assumptions,
            }
        )
    if args.kind:
        rows = [r for r in rows if r["kind"] == args.kind]
        if not rows:
            raise UserError(f"unknown gateway {args.kind!r}; known: {', '.join(KIND_SETTINGS)}")
    if args.json:
        print_json(rows)
        return 0
    table = Table("kind", "provider", "settings (* required)", "callbacks", "notes", show_lines=True)
    for r in rows:
        shown = [_setting_line(s) for s in r["settings"] if not s["advanced"]]
        advanced = [_setting_line(s) for s in r["settings"] if s["advanced"]]
        specs = "\n".join(shown + (["advanced:", *(f"  {a}" for a in advanced)] if advanced else []))
        notes = "\n".join(f"assumes: {a}" for a in r["assumptions"])
        if not r["implemented"]:
            notes = "adapter not implemented yet" + (f"\n{notes}" if notes else "")
        table.add_row(*map(plain, (r["kind"], r["title"], specs, "yes" if r["callbacks"] else "", notes)))
    console().print(table)
    return 0


def _setting_line(spec: dict[str, Any]) -> str:
    """`name*: Label (secret) = default`: the form's label, as the seed words it, beside the setting's name."""
    line = f"{spec['name']}{'*' if spec['required'] else ''}: {spec['label']}{' (secret)' if spec['secret'] else ''}"
    default = spec["default"]
    return line + (f" = {default}" if default not in (None, "", {}) else "")


def add_gateways(sub: Any) -> None:
    p = sub.add_parser("gateways", help="the gateway kinds and their settings")
    p.add_argument("kind", nargs="?")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_gateways)


# -- topology ----------------------------------------------------------------------------------------


async def cmd_topology_declare(args: argparse.Namespace, settings: Settings) -> int:
    async with connect_amqp(settings) as connection:
        channel = await connection.channel()
        try:
            await declare(channel, Names(settings.namespace), settings.queue_limits)
        except TopologyConflict as exc:
            raise UserError(str(exc)) from None
        finally:
            if not channel.is_closed:
                await channel.close()
    if not args.json:
        console().print(f"declared the topology of namespace [bold]{esc(settings.namespace)}[/bold]")
    return 0


def add_topology(sub: Any) -> None:
    topology = sub.add_parser("topology", help="broker topology")
    tsub = topology.add_subparsers(dest="action", required=True, parser_class=Parser)
    p = tsub.add_parser("declare", help="declare exchanges and queues (idempotent)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_topology_declare)


# -- status ------------------------------------------------------------------------------------------


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async with connect_redis(settings) as redis:
        summary = await job_summary(Ledger(redis, Names(settings.namespace)), args.job_id)
    if summary is None:
        raise UserError(f"no record of job {args.job_id!r} (never sent, or older than 7 days)")
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    out = Console(highlight=False, emoji=False)
    out.print(f"job [bold]{escape(args.job_id)}[/bold]: "
              + escape(f"{summary['state']} (sender {summary['sender']}, gateway {summary['gateway']}, "
                       f"attempt {summary['attempt']})"))  # fmt: skip
    table = Table("at", "state", "source", "detail")
    for entry in summary["history"]:  # as recorded: provider texts and job values are shown as text, never as markup
        table.add_row(*(Text(str(entry.get(key, ""))) for key in ("at", "state", "source", "detail")))
    out.print(table)
    return 0


def add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="a job's delivery record")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


# -- suppress ----------------------------------------------------------------------------------------


async def cmd_suppress(args: argparse.Namespace, settings: Settings) -> int:
    if args.account is None and not args.glob:
        raise UserError("give --account ACCOUNT or --global")
    account = None if args.glob else args.account
    numbers = _numbers(args, settings)
    if args.action != "list" and not numbers:
        raise UserError("give at least one number (or --file)")
    async with connect_redis(settings) as redis:
        store = SuppressionStore(redis, Names(settings.namespace))
        if args.action == "add":
            result: Any = {"added": await store.add(numbers, [account])}
        elif args.action == "remove":
            result = {"removed": await store.remove(numbers, account)}
        elif args.action == "check":
            result = {n: await store.is_suppressed(account, n) if account else n in await store.members(None)
                      for n in numbers}  # fmt: skip
        else:
            result = await store.members(account)
    if args.json or args.action == "list":
        print(json.dumps(result, indent=None if args.json else 2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0 if args.action != "check" or all(result.values()) else 1


def _numbers(args: argparse.Namespace, settings: Settings) -> list[str]:
    """The numbers given as arguments and in --file, in E.164."""
    raw = list(getattr(args, "numbers", None) or [])
    if getattr(args, "file", None):
        try:
            with open(args.file, encoding="utf-8") as file:
                raw += [line.strip() for line in file if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        return [normalize_phone(n, settings.default_region) for n in raw]
    except InvalidJob as exc:
        raise UserError(exc.message) from None


def add_suppress(sub: Any) -> None:
    p = sub.add_parser("suppress", help="suppression lists: add, remove, check, list")
    actions = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    actions_help = {
        "add": "add numbers",
        "remove": "remove numbers",
        "check": "exit 0 when every number is suppressed",
        "list": "the list's numbers",
    }
    for action, text in actions_help.items():
        a = actions.add_parser(action, help=text)
        if action != "list":
            a.add_argument("numbers", nargs="*", metavar="NUMBER")
            a.add_argument("--file", help="numbers, one per line")
        a.add_argument("--account", help="the account's list")
        a.add_argument("--global", dest="glob", action="store_true", help="the global list")
        a.add_argument("--json", action="store_true")
        a.set_defaults(func=cmd_suppress)
