"""`smsfleet publish`: send jobs from a JSONL/CSV file, or one from flags."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.text import Text

from producers import BulkFileError, Publisher, PublishError, publish_file
from smsfleet.contracts import InvalidJob, SendJob, decode_job
from smsfleet.settings import Settings

from .common import UserError, check_services

__all__ = ["add_publish"]


async def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    if not args.file and not all((args.sender, args.account, args.to, args.text)):
        raise UserError("give --file, or --sender, --account, --to and --text")
    job: SendJob | None = None
    if not args.file:
        doc = {"id": args.id or uuid.uuid4().hex, "sender": args.sender, "account": args.account,
               "to": args.to, "text": args.text, "originator": args.originator}  # fmt: skip
        try:
            job = decode_job(msgspec.json.encode(doc), settings.default_region)
        except InvalidJob as exc:
            raise UserError(f"{exc.code}: {exc.message}") from None
    await check_services(settings)
    console = Console(stderr=True, highlight=False, emoji=False)
    async with Publisher.connect(settings) as publisher:
        if job is not None:
            try:
                await publisher.publish(job)
            except PublishError as exc:
                raise UserError(str(exc)) from None
            print(job.id)
            return 0
        columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=args.json or not console.is_terminal) as bar:
            task = bar.add_task("publish", total=None)
            try:
                summary = await publish_file(
                    publisher, args.file, default_region=settings.default_region,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )  # fmt: skip
            except (BulkFileError, OSError) as exc:
                raise UserError(str(exc)) from None
    rate = summary.published / summary.elapsed if summary.elapsed else 0.0
    if args.json:
        print(json.dumps({"published": summary.published, "rejected": summary.rejected,
                          "elapsed_s": round(summary.elapsed, 3)}))  # fmt: skip
    else:
        out = Console(highlight=False, emoji=False)
        out.print(f"published {summary.published} jobs in {summary.elapsed:.1f} s ({rate:,.0f}/s), "
                  f"rejected {len(summary.rejected)}")  # fmt: skip
        for line, reason in summary.rejected[:200]:
            out.print(Text(f"  line {line}: {reason}"), soft_wrap=True)  # the reason quotes the record
        if len(summary.rejected) > 200:
            out.print(f"  ... and {len(summary.rejected) - 200} more (use --json for all)")
    return 0 if not summary.rejected else 3


def add_publish(sub: Any) -> None:
    p = sub.add_parser("publish", help="publish send jobs from a JSONL/CSV file or from flags")
    p.add_argument("--file", help="JSONL (one job per line) or CSV (a header of job fields; meta.<key> columns)")
    for flag in ("sender", "account", "to", "text", "originator", "id"):
        p.add_argument(f"--{flag}")
    p.add_argument("--json", action="store_true", help="JSON summary")
    p.set_defaults(func=cmd_publish)
