"""`smsfleet dead list|show|requeue|purge`: the dead queue `<ns>.dead`, read without losing a message
(smsfleet/deadletters.py has the rules: how a message is read, where a requeue sends it, what it keeps)."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from rich.table import Table

from smsfleet.deadletters import SCAN_LIMIT, DeadQueue, DeadQueueMissing, Selection
from smsfleet.settings import Settings
from smsfleet.topology import Names

from .common import Parser, UserError, connect_amqp, console, esc, plain, print_json

__all__ = ["add_dead"]


@contextlib.asynccontextmanager
async def _dead_queue(settings: Settings) -> AsyncIterator[DeadQueue]:
    async with connect_amqp(settings) as connection:
        try:
            yield DeadQueue(connection, Names(settings.namespace))
        except DeadQueueMissing as exc:
            raise UserError(str(exc)) from None


def _selection(args: argparse.Namespace) -> Selection:
    """What `requeue` and `purge` take; a mistake in the flags is a `UserError`."""
    everything = args.all if args.action == "requeue" else args.yes and not (args.ids or args.reason)
    if args.action == "requeue" and args.all and (args.ids or args.reason):
        raise UserError("--all takes every message: give it without ids or --reason")
    if not (everything or args.ids or args.reason):
        flag = "--all" if args.action == "requeue" else "--yes"
        raise UserError(f"say which messages: ids, --reason R, or {flag} for every message")
    return Selection(frozenset(args.ids), args.reason, everything)


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async with _dead_queue(settings) as dead:
        listing = await dead.listing(args.limit)
    letters = [x for x in listing.letters if args.reason is None or x.reason == args.reason]
    if args.json:
        print_json(
            {
                "total": listing.total,
                "read": len(listing.letters),
                "by_reason": listing.by_reason,
                "messages": [x.summary() for x in letters],
            }
        )
        return 0
    out = console()
    if letters:
        table = Table("id", "reason", "gateway", "routing key", "parked at", "count")
        for x in letters:
            at = x.at.strftime("%Y-%m-%d %H:%M:%S") if x.at else ""
            table.add_row(*map(plain, (x.id, x.reason, x.gateway or "", x.routing_key, at, x.count)))
        out.print(table)
    reasons = ", ".join(f"{esc(r)} {n}" for r, n in listing.by_reason.items()) or "none"
    more = f" (read the first {len(listing.letters)}: --limit)" if listing.more else ""
    out.print(f"{listing.total} in {esc(Names(settings.namespace).dead_queue)}{more}; by reason: {reasons}")
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async with _dead_queue(settings) as dead:
        found = await dead.find(args.id, args.limit)
    if not found:
        raise UserError(f"no message {args.id!r} in the dead queue (`smsfleet dead list` shows them)")
    if args.json:
        print_json([x.details() for x in found])
        return 0
    out = console()
    for x in found:
        d = x.details()
        for key in ("id", "reason", "detail", "gateway", "routing_key", "exchange", "source_queue", "at", "count"):
            out.print(f"[bold]{key}[/bold]: {esc(d[key] if d[key] is not None else '')}")
        out.print("[bold]headers[/bold]:", plain(json.dumps(d["headers"], ensure_ascii=False, indent=2)))
        out.print("[bold]body[/bold]:", plain(_text(d["body"])))
    return 0


def _text(body: Any) -> str:
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, indent=2)


async def cmd_requeue(args: argparse.Namespace, settings: Settings) -> int:
    selection = _selection(args)
    async with _dead_queue(settings) as dead:
        result = await dead.requeue(selection, args.limit)
    if args.json:
        print_json(
            {
                "requeued": result.requeued,
                "duplicates": result.duplicates,
                "failed": [{"id": i, "error": why} for i, why in result.failed],
                "unread": result.unread,
            }
        )
    else:
        out = console()
        line = f"requeued {len(result.requeued)}"
        if result.duplicates:
            line += f", removed {result.duplicates} identical copies"
        out.print(line + (f"; {result.unread} more not read (--limit)" if result.unread else ""))
        for job_id, why in result.failed:
            out.print(f"not requeued {esc(job_id)}: {esc(why)}")
    return 1 if result.failed else 0


async def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    selection = _selection(args)
    async with _dead_queue(settings) as dead:
        deleted = await dead.purge(selection, args.limit)
    if args.json:
        print_json({"deleted": deleted})
    else:
        print(f"deleted {deleted}")
    return 0


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_dead(sub: Any) -> None:
    p = sub.add_parser("dead", help="the dead queue: list, show, requeue, purge")
    actions = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    listing = actions.add_parser("list", help="the dead messages (left in the queue), with totals by reason")
    listing.add_argument("--reason", help="only this reason")
    show = actions.add_parser("show", help="one message: reason, headers, body")
    show.add_argument("id", help="the message id (a send job's id)")
    requeue = actions.add_parser("requeue", help="publish messages back to their queue, then remove them")
    requeue.add_argument("--all", action="store_true", help="every message")
    purge = actions.add_parser("purge", help="delete messages")
    purge.add_argument("--yes", action="store_true", help="delete every message (without ids or --reason)")
    for a in (requeue, purge):
        a.add_argument("ids", nargs="*", metavar="ID", help="message ids (send job ids)")
        a.add_argument("--reason", help="the messages parked for this reason")
    commands = ((listing, cmd_list, 1000), (show, cmd_show, SCAN_LIMIT), (requeue, cmd_requeue, SCAN_LIMIT),
                (purge, cmd_purge, SCAN_LIMIT))  # fmt: skip
    for a, func, limit in commands:
        a.add_argument("--limit", type=_limit, default=limit, help=f"read at most this many messages ({limit:,})")
        a.add_argument("--json", action="store_true", help="JSON output")
        a.set_defaults(func=func)
