"""`smsfleet senders list|show|create|update|delete|rotate-token`: the sender registry (DESIGN §6)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from rich.table import Table

from smsfleet.kinds import KIND_SETTINGS, fields
from smsfleet.senders import Sender, name_key, parse_sender, receiving_url, sender_doc
from smsfleet.settings import Settings

from .common import Parser, UserError, connect_registry, console, esc, plain, print_json

__all__ = ["add_senders"]


def _read_senders_file(path: str) -> list[dict[str, Any]]:
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if file.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if file.suffix.lower() == ".toml" else "JSON"
        raise UserError(f"{path} is not valid {kind}: {exc}") from None
    if isinstance(data, dict) and "senders" in data:
        data = data["senders"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UserError(f"{path}: expected a sender object, a list of them, or a 'senders' list")
    if not data:
        raise UserError(f"{path} holds no sender")
    return data


def _flags_doc(args: argparse.Namespace) -> dict[str, Any]:
    """The part of a sender document given by flags (only what was given)."""
    doc: dict[str, Any] = {}
    if getattr(args, "id", None):
        doc["id"] = args.id
    if args.name is not None:
        doc["name"] = args.name
    if args.gateway:
        doc["gateway"] = args.gateway
    for flag, key in (
        ("accounts", "accounts"),
        ("caller_ids", "verified_caller_ids"),
        ("phones", "verified_phones"),
        ("stop_words", "stop_words"),
    ):
        values = getattr(args, flag)
        if values is not None:
            doc[key] = [v for v in values if v != ""]
    if args.global_suppress is not None:
        doc["add_to_global_suppress"] = args.global_suppress
    if args.shorten_links is not None:
        doc["shorten_links"] = args.shorten_links
    if args.rate_limit is not None:
        doc["rate_limit"] = None if args.rate_limit <= 0 else args.rate_limit
    settings: dict[str, Any] = {}
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set takes key=value, not {item!r}")
        if value == "-":
            value = getpass.getpass(f"{key}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        settings[key.strip()] = value
    if settings:
        doc["settings"] = settings
    return doc


def _show_sender(sender: Sender, settings: Settings) -> None:
    doc = sender_doc(sender, public_url=settings.public_url)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    kind = KIND_SETTINGS[sender.gateway]
    rows: list[tuple[str, str]] = [
        ("id", sender.id),
        ("name", sender.name),
        ("gateway", f"{sender.gateway} ({kind.title})"),
        ("accounts", ", ".join(sender.accounts)),
    ]
    for spec in fields(kind):
        value = doc["settings"].get(spec.name)
        rows.append((f"  {spec.label}", "" if value is None else str(value)))
    rows += [
        ("verified caller IDs", ", ".join(sender.verified_caller_ids) or "(any)"),
        ("verified phones", ", ".join(sender.verified_phones) or "(any)"),
        ("stop words", ", ".join(sender.stop_words)),
        ("add to global suppress list", "yes" if sender.add_to_global_suppress else "no"),
        ("shorten links in messages", "yes" if sender.shorten_links else "no"),
        ("rate limit", f"{sender.rate_limit:g}/s" if sender.rate_limit else "(gateway default)"),
    ]
    for label, value in rows:
        table.add_row(plain(label), plain(value))
    out = console()
    out.print(table)
    if doc.get("receiving_url"):
        out.print("SMS Receiving URL (give it to the provider):")
        out.print(plain(doc["receiving_url"]), soft_wrap=True)


# -- commands ----------------------------------------------------------------------------------------


async def cmd_senders_list(args: argparse.Namespace, settings: Settings) -> int:
    async with connect_registry(settings) as registry:
        found, unreadable = await registry.load()
    senders = sorted((s for s in found.values() if not args.gateway or s.gateway == args.gateway), key=lambda s: s.id)
    for exc in unreadable:  # the others are still listed
        print(f"smsfleet: warning: {exc}", file=sys.stderr)
    if args.json:
        print_json([sender_doc(s, public_url=settings.public_url) for s in senders])
        return 0
    table = Table("id", "name", "gateway", "accounts", "caller IDs", "rate limit")
    for s in senders:
        rate = f"{s.rate_limit:g}/s" if s.rate_limit else "default"
        cells = (s.id, s.name, s.gateway, ", ".join(s.accounts), ", ".join(s.verified_caller_ids) or "any", rate)
        table.add_row(*map(plain, cells))
    console().print(table if senders else "no senders yet: create one with `smsfleet senders create`")
    return 0


async def cmd_senders_show(args: argparse.Namespace, settings: Settings) -> int:
    async with connect_registry(settings) as registry:
        sender = await registry.get(args.id)
    if sender is None:
        raise UserError(f"no sender with id {args.id!r}")
    if args.json:
        print_json(sender_doc(sender, public_url=settings.public_url))
    else:
        _show_sender(sender, settings)
    return 0


async def cmd_senders_create(args: argparse.Namespace, settings: Settings) -> int:
    if args.file:
        docs = _read_senders_file(args.file)
    else:
        if not (args.id or args.name) or not args.gateway:
            raise UserError("give an ID or --name, and --gateway (or --file)")
        docs = [_flags_doc(args)]
    senders = [parse_sender(d, default_region=settings.default_region) for d in docs]
    given = [bool(d.get("id")) for d in docs]  # else the id was made from the name: a taken one gets a suffix
    ids = [s.id for s, g in zip(senders, given, strict=True) if g]
    if dupes := sorted({i for i in ids if ids.count(i) > 1}):
        raise UserError(f"the same id appears twice: {', '.join(dupes)}")
    keys = [name_key(s.name) for s in senders]
    if dupes := sorted({s.name for s, k in zip(senders, keys, strict=True) if keys.count(k) > 1}):
        raise UserError(f"name: the same name appears twice (case is ignored): {', '.join(map(repr, dupes))}")
    async with connect_registry(settings) as registry:
        for s in senders:  # nothing is created when one of them cannot be
            if s.id in ids and await registry.get(s.id) is not None:
                raise UserError(f"a sender with id {s.id!r} already exists; use `smsfleet senders update`")
            if (owner := await registry.name_owner(s.name)) is not None:
                raise UserError(f"name: the name {s.name!r} is taken by sender {owner!r} (case is ignored)")
        senders = [await registry.create(s, id_given=g) for s, g in zip(senders, given, strict=True)]
    return _report_saved(args, settings, senders, "created")


async def cmd_senders_update(args: argparse.Namespace, settings: Settings) -> int:
    if args.file:
        patches = _read_senders_file(args.file)
        for p in patches:
            if not isinstance(p.get("id"), str):
                raise UserError(f"{args.file}: every sender needs its id")
    else:
        if not args.id:
            raise UserError("give the ID of the sender to update (or --file)")
        patches = [_flags_doc(args)]
    async with connect_registry(settings) as registry:
        current = {p["id"]: await registry.get(p["id"]) for p in patches}
        if missing := [i for i, s in current.items() if s is None]:
            raise UserError(f"no sender with id {', '.join(map(repr, missing))}")
        senders = [await registry.update(p["id"], p, settings.default_region) for p in patches]
    return _report_saved(args, settings, senders, "updated")


def _report_saved(args: argparse.Namespace, settings: Settings, senders: list[Sender], verb: str) -> int:
    if args.json:
        print_json([sender_doc(s, public_url=settings.public_url) for s in senders])
        return 0
    out = console()
    for s in senders:
        named = "" if s.name == s.id else f" {esc(repr(s.name))}"
        out.print(f"{verb} sender [bold]{esc(s.id)}[/bold]{named} ({esc(s.gateway)})")
        if len(senders) == 1:
            _show_sender(s, settings)
    return 0


async def cmd_senders_delete(args: argparse.Namespace, settings: Settings) -> int:
    async with connect_registry(settings) as registry:
        missing = [i for i in args.ids if not await registry.exists(i)]  # an unreadable record can be deleted
        if missing:
            raise UserError(f"no sender with id {', '.join(map(repr, missing))}")
        for i in args.ids:
            await registry.delete(i)
    if not args.json:
        console().print(f"deleted {esc(', '.join(args.ids))}")
    else:
        print_json({"deleted": args.ids})
    return 0


async def cmd_senders_rotate_token(args: argparse.Namespace, settings: Settings) -> int:
    async with connect_registry(settings) as registry:
        sender = await registry.get(args.id)
        if sender is None:
            raise UserError(f"no sender with id {args.id!r}")
        sender = await registry.rotate_token(sender.id)
    if args.json:
        print_json(sender_doc(sender, public_url=settings.public_url))
        return 0
    out = console()
    url = receiving_url(sender, settings.public_url)
    out.print(
        f"new webhook token for sender [bold]{esc(sender.id)}[/bold]: the old one stops working as soon as "
        "running processes pick up the change (seconds)"
    )
    if url is None:
        out.print(f"{esc(sender.gateway)} pushes nothing to smsfleet: this sender has no receiving URL")
    else:
        out.print("new SMS Receiving URL (give it to the provider now):")
        out.print(plain(url), soft_wrap=True)
    return 0


# -- arguments ---------------------------------------------------------------------------------------


def _sender_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "id", nargs="?", help="the sender id (letters, digits, - and _; fixed): on create, made from --name if left out"
    )
    p.add_argument(
        "--name",
        help="the sender's name: 1 to 100 characters of any script, unique ignoring case (create: default the id)",
    )
    p.add_argument("--file", help="a JSON or TOML file with one sender, a list, or a 'senders' list")
    p.add_argument("--gateway", choices=list(KIND_SETTINGS), metavar="KIND", help="the gateway kind")
    p.add_argument(
        "--account",
        dest="accounts",
        action="append",
        metavar="ACCOUNT",
        help="an assigned account (repeat; replaces the list on update)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a gateway setting (repeat); VALUE '-' reads it from stdin without echo",
    )
    p.add_argument(
        "--caller-id",
        dest="caller_ids",
        action="append",
        metavar="NAME",
        help="a verified caller ID (repeat; '' clears)",
    )
    p.add_argument(
        "--phone",
        dest="phones",
        action="append",
        metavar="NUMBER",
        help="a verified phone (repeat; '' clears)",
    )
    p.add_argument(
        "--stop-word",
        dest="stop_words",
        action="append",
        metavar="WORD",
        help="a stop word (repeat; default STOP)",
    )
    p.add_argument(
        "--global-suppress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also add stopped numbers to the global suppress list",
    )
    p.add_argument(
        "--shorten-links",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace links in messages by short ones that count clicks ($SMSFLEET_PUBLIC_URL/l/<code>)",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        metavar="PER_SECOND",
        help="requests per second for this sender, fleet-wide (0: gateway default)",
    )


def add_senders(sub: Any) -> None:
    senders = sub.add_parser("senders", help="list, show, create, update and delete senders")
    ssub = senders.add_subparsers(dest="action", required=True, parser_class=Parser)
    p = ssub.add_parser("list", help="all senders")
    p.add_argument("--gateway", choices=list(KIND_SETTINGS), metavar="KIND")
    p.set_defaults(func=cmd_senders_list)
    p = ssub.add_parser("show", help="one sender, with its SMS Receiving URL")
    p.add_argument("id")
    p.set_defaults(func=cmd_senders_show)
    p = ssub.add_parser("create", help="create senders from flags or a file")
    _sender_flags(p)
    p.set_defaults(func=cmd_senders_create)
    p = ssub.add_parser("update", help="change senders from flags or a file (secrets left blank are kept)")
    _sender_flags(p)
    p.set_defaults(func=cmd_senders_update)
    p = ssub.add_parser("delete", help="delete senders")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_senders_delete)
    p = ssub.add_parser(
        "rotate-token",
        help="give a sender a new webhook token and print its new SMS Receiving URL (the old one stops working)",
    )
    p.add_argument("id")
    p.set_defaults(func=cmd_senders_rotate_token)
    for p in (*ssub.choices.values(),):
        p.add_argument("--json", action="store_true", help="JSON output")
