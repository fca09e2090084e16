"""`smsfleet send-test SENDER --to N --text T`: one test SMS through the normal send queue, and its states as
they arrive, until a final state or `--timeout`. The job is the admin's test send (`admin.jobs.build_test_job`):
to one of the sender's verified phones (the first when --to is left out), or any number when it has none.

Exit status: 0 delivered, 3 another final state, 4 no final state within the timeout (2 and 1 as every
command: a mistake, a service that cannot be reached)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from producers import Publisher, PublishError
from smsfleet.settings import Settings
from smsfleet.topology import Names
from workers.ledger import Ledger
from workers.lookup import job_summary

from .common import Unavailable, UserError, check_services, connect_redis, connect_registry, console, esc, plain

__all__ = ["add_send_test"]

POLL_S = 0.5


async def cmd_send_test(args: argparse.Namespace, settings: Settings) -> int:
    # here, not at the top: every command's parser is built at start, and a worker need not load the admin
    from admin.errors import Invalid  # noqa: PLC0415
    from admin.jobs import DEFAULT_TEXT, build_test_job  # noqa: PLC0415

    async with connect_registry(settings) as registry:
        sender = await registry.get(args.sender)
    if sender is None:
        raise UserError(f"no sender {args.sender!r} (`smsfleet senders list` shows them)")
    to = args.to or (sender.verified_phones[0] if sender.verified_phones else "")
    if not to:
        raise UserError("give --to NUMBER: the sender has no verified phones to choose from")
    try:
        text = DEFAULT_TEXT if args.text is None else args.text
        job = build_test_job(sender, to, text, settings.default_region, "cli")
    except Invalid as exc:
        raise UserError("; ".join(f"--{k}: {v}" for k, v in exc.errors.items())) from None
    await check_services(settings)
    async with Publisher.connect(settings) as publisher:
        try:
            await publisher.publish(job)
        except PublishError as exc:
            raise Unavailable(f"the test job was not queued: {exc.reason}") from None
    out = console()
    if not args.json:
        out.print(f"queued test job [bold]{esc(job.id)}[/bold] to {esc(job.to)} through {esc(sender.id)}")
    summary = await _follow(settings, job.id, args.timeout, None if args.json else out)
    if args.json:
        print(json.dumps(summary or {"job_id": job.id, "state": None, "final": False, "history": []}))
    state = summary.get("state") if summary else None
    if summary is None or not summary["final"]:
        if not args.json:
            out.print(f"no final state within {args.timeout:g} s (last: {esc(state or 'not taken yet')})")
        return 4
    return 0 if state == "delivered" else 3


async def _follow(settings: Settings, job_id: str, timeout: float, out: Any) -> dict[str, Any] | None:  # noqa: ASYNC109 - a polling deadline
    """Poll the job's record until a final state or `timeout`; print each transition as it arrives."""
    deadline = time.monotonic() + timeout
    shown = 0
    summary = None
    async with connect_redis(settings) as redis:
        ledger = Ledger(redis, Names(settings.namespace))
        while True:
            summary = await job_summary(ledger, job_id)
            history = summary["history"] if summary else []
            for entry in history[shown:]:
                if out is not None:
                    detail = entry.get("detail", "")
                    out.print(plain(f"{entry.get('at', '')}  {entry.get('state', '')}  ({entry.get('source', '')})"
                                    + (f"  {detail}" if detail else "")))  # fmt: skip
            shown = len(history)
            if (summary and summary["final"]) or time.monotonic() >= deadline:
                return summary
            await asyncio.sleep(POLL_S)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def add_send_test(sub: Any) -> None:
    p = sub.add_parser("send-test", help="send one test SMS through a sender and follow its states")
    p.add_argument("sender", help="the sender id")
    p.add_argument("--to", help="the number (default: the sender's first verified phone)")
    p.add_argument("--text", help="the text (default: the admin's test text, 'smsfleet test message')")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to wait for a final state (60)")
    p.add_argument("--json", action="store_true", help="print the job's record as JSON at the end")
    p.set_defaults(func=cmd_send_test)
