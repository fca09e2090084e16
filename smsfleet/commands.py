"""Commands that run the fleet's moving parts: publish, worker, run, demo, status.

They are registered onto the main parser by `register_all`; the imports of workers and producers happen
inside the commands, so `smsfleet senders ...` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from .contracts import InvalidJob, SendJob, decode_job, normalize_phone
from .kinds import KINDS
from .settings import Settings

__all__ = ["register_all"]


def _errors() -> tuple[type[Exception], type[Exception]]:
    from .cli import Unavailable, UserError  # noqa: PLC0415 - cli imports this module

    return UserError, Unavailable


async def _check_services(settings: Settings) -> None:
    """Fail early, in one line, when RabbitMQ or Redis cannot be reached."""
    from .cli import _amqp, _redis  # noqa: PLC0415

    async with _redis(settings):
        pass
    async with _amqp(settings):
        pass


# -- publish ---------------------------------------------------------------------------------------------


async def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from producers import BulkFileError, Publisher, PublishError, publish_file  # noqa: PLC0415

    user_error, _ = _errors()
    if not args.file and not all((args.sender, args.account, args.to, args.text)):
        raise user_error("give --file, or --sender, --account, --to and --text")
    job: SendJob | None = None
    if not args.file:
        doc = {"id": args.id or uuid.uuid4().hex, "sender": args.sender, "account": args.account,
               "to": args.to, "text": args.text, "originator": args.originator}  # fmt: skip
        try:
            job = decode_job(msgspec.json.encode(doc), settings.default_region)
        except InvalidJob as exc:
            raise user_error(f"{exc.code}: {exc.message}") from None
    await _check_services(settings)
    console = Console(stderr=True, highlight=False, emoji=False)
    async with Publisher.connect(settings) as publisher:
        if job is not None:
            try:
                await publisher.publish(job)
            except PublishError as exc:
                raise user_error(str(exc)) from None
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
                raise user_error(str(exc)) from None
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


# -- workers ---------------------------------------------------------------------------------------------


def _policy(args: argparse.Namespace) -> Any:
    from workers import SendPolicy  # noqa: PLC0415

    return SendPolicy(concurrency=args.concurrency, max_attempts=args.max_attempts, ambiguous=args.ambiguous)


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers import run_workers  # noqa: PLC0415

    user_error, _ = _errors()
    gateways = args.gateway or []
    if args.role in ("send", "all") and not gateways:
        if args.role == "send":
            raise user_error("give --gateway for send workers (repeat it for several)")
        gateways = list(KINDS)
    await _check_services(settings)
    await run_workers(
        settings,
        gateways=gateways if args.role in ("send", "all") else [],
        status=args.role in ("status", "all"),
        suppression=args.role in ("suppression", "all"),
        policy=_policy(args),
        grace_s=args.grace,
        metrics_port=args.metrics_port,
    )
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from workers.ledger import Ledger  # noqa: PLC0415

    from .cli import _redis  # noqa: PLC0415
    from .topology import Names  # noqa: PLC0415

    user_error, _ = _errors()
    async with _redis(settings) as redis:
        ledger = Ledger(redis, Names(settings.namespace))
        record, history = await ledger.get(args.job_id), await ledger.history(args.job_id)
    if not record:
        raise user_error(f"no record of job {args.job_id!r} (never sent, or older than 7 days)")
    job = json.loads(record["job"]) if "job" in record else {}
    summary = {
        "job_id": args.job_id,
        "state": record.get("state"),
        "phase": record.get("phase"),
        "gateway": record.get("gateway"),
        "provider_ids": [p for p in record.get("pid", "").split(",") if p],
        "attempt": int(record.get("attempt") or 1),
        "sender": job.get("sender"),
        "history": history,
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    console = Console(highlight=False, emoji=False)
    console.print(f"job [bold]{escape(args.job_id)}[/bold]: "
                  + escape(f"{summary['state']} (sender {summary['sender']}, gateway {summary['gateway']}, "
                           f"attempt {summary['attempt']})"))  # fmt: skip
    table = Table("at", "state", "source", "detail")
    for entry in history:  # as recorded: provider texts and job values are shown as text, never as markup
        table.add_row(*(Text(str(entry.get(key, ""))) for key in ("at", "state", "source", "detail")))
    console.print(table)
    return 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- demo ------------------------------------------------------------------------------------------------


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from workers import SendPolicy, run_workers  # noqa: PLC0415

    from .cli import _registry  # noqa: PLC0415
    from .senders import parse_sender  # noqa: PLC0415

    await _check_services(settings)
    console = Console(highlight=False, emoji=False)
    simulated = {"latency_ms": args.latency_ms, "delivered_rate": 0.95, "await_delivery_s": 1}
    sender = {"id": "demo-sandbox", "gateway": "sandbox", "accounts": ["demo"], "settings": simulated}
    async with _registry(settings) as registry:
        await registry.put(parse_sender(sender, existing=await registry.get("demo-sandbox")))
    stop = asyncio.Event()
    policy = SendPolicy(concurrency=args.concurrency)
    fleet = asyncio.create_task(run_workers(settings, gateways=["sandbox"], status=True, policy=policy, stop=stop))
    try:
        finals, elapsed = await _demo_run(args, settings, console)
    finally:
        stop.set()
        await fleet
    table = Table("final state", "jobs", "share")
    for state, n in finals.most_common():
        table.add_row(state, str(n), f"{n / args.jobs:.1%}")
    console.print(table)
    console.print(f"{args.jobs} jobs to a final state in {elapsed:.1f} s: {args.jobs / elapsed:,.0f} jobs/s")
    return 0


async def _demo_run(args: argparse.Namespace, settings: Settings, console: Any) -> tuple[Counter[str], float]:
    """Publish the demo's jobs and count their final events, with two progress bars."""
    import aio_pika  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from producers import Publisher  # noqa: PLC0415

    from .contracts import FINAL_STATES, StatusEvent  # noqa: PLC0415
    from .topology import Names, declare  # noqa: PLC0415

    run_id = uuid.uuid4().hex[:8]
    finals: Counter[str] = Counter()
    done = asyncio.Event()
    decoder = msgspec.json.Decoder(StatusEvent)

    async def on_event(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = decoder.decode(msg.body)
        if event.job_id.startswith(run_id) and event.state in FINAL_STATES:
            finals[event.state] += 1
            if sum(finals.values()) >= args.jobs:
                done.set()
        await msg.ack()

    def jobs() -> Any:
        for i in range(args.jobs):
            to = f"+7916{i % 10_000_000:07d}"
            yield (
                i,
                SendJob(id=f"{run_id}-{i:06d}", sender="demo-sandbox", account="demo", to=to, text=f"Demo {i}"),
            )

    async with await aio_pika.connect_robust(settings.amqp_url) as connection:
        channel = await connection.channel()
        names = Names(settings.namespace)
        await declare(channel, names, settings.queue_limits)
        events = await channel.declare_queue(exclusive=True, auto_delete=True)
        await events.bind(names.events_exchange, routing_key="status.*")
        await events.consume(on_event)
        started = time.perf_counter()
        bars = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*bars, console=console) as bar:
            published = bar.add_task("published", total=args.jobs)
            final = bar.add_task("final    ", total=args.jobs)

            async def watch() -> None:
                while not done.is_set():
                    bar.update(final, completed=sum(finals.values()))
                    await asyncio.sleep(0.2)
                bar.update(final, completed=sum(finals.values()))

            watcher = asyncio.create_task(watch())
            async with Publisher.connect(settings) as publisher:
                await publisher.publish_stream(jobs(), lambda *_: bar.advance(published))
            try:
                await asyncio.wait_for(done.wait(), timeout=args.timeout)
            finally:
                done.set()
                await watcher
        return finals, time.perf_counter() - started


# -- suppress ------------------------------------------------------------------------------------------


async def cmd_suppress(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import _redis  # noqa: PLC0415
    from .suppression import SuppressionStore  # noqa: PLC0415
    from .topology import Names  # noqa: PLC0415

    user_error, _ = _errors()
    if args.account is None and not args.glob:
        raise user_error("give --account ACCOUNT or --global")
    account = None if args.glob else args.account
    numbers = _numbers(args, settings)
    if args.action != "list" and not numbers:
        raise user_error("give at least one number (or --file)")
    async with _redis(settings) as redis:
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
    user_error, _ = _errors()
    raw = list(getattr(args, "numbers", None) or [])
    if getattr(args, "file", None):
        try:
            with open(args.file, encoding="utf-8") as file:
                raw += [line.strip() for line in file if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise user_error(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        return [normalize_phone(n, settings.default_region) for n in raw]
    except InvalidJob as exc:
        raise user_error(exc.message) from None


# -- webhooks ------------------------------------------------------------------------------------------


async def cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    from webhooks import serve  # noqa: PLC0415

    await _check_services(settings)
    await serve(settings, args.host, args.port, metrics_port=args.metrics_port)
    return 0


# -- registration ----------------------------------------------------------------------------------------


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, default=100, help="sends in flight per gateway (default 100)")
    p.add_argument("--max-attempts", type=int, default=6, help="attempts before a job ends failed")
    p.add_argument("--ambiguous", choices=("unknown", "resend"), default="unknown",
                   help="after a send that may have reached a provider that does not dedupe")  # fmt: skip
    p.add_argument("--grace", type=float, default=25.0, help="seconds to finish in-flight sends on SIGTERM")
    p.add_argument("--metrics-port", type=int, help="serve /metrics, /livez and /readyz on this port")
    p.set_defaults(service=True)


def _add_publish(sub: Any) -> None:
    p = sub.add_parser("publish", help="publish send jobs from a JSONL/CSV file or from flags")
    p.add_argument("--file", help="JSONL (one job per line) or CSV (a header of job fields; meta.<key> columns)")
    for flag in ("sender", "account", "to", "text", "originator", "id"):
        p.add_argument(f"--{flag}")
    p.add_argument("--json", action="store_true", help="JSON summary")
    p.set_defaults(func=cmd_publish)


def _add_worker(sub: Any) -> None:
    p = sub.add_parser("worker", help="run consumers: send (per gateway), status, suppression, or all")
    p.add_argument("--gateway", action="append", choices=list(KINDS), metavar="KIND",
                   help="gateway whose send queue to consume (repeat)")  # fmt: skip
    p.add_argument("--role", choices=("send", "status", "suppression", "all"), default="send")
    _worker_flags(p)
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("run", help="everything in one process (development, demos)")
    _worker_flags(p)
    p.set_defaults(func=cmd_worker, role="all", gateway=None)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="a sandbox sender, N jobs, live progress, a summary of final states")
    p.add_argument("-n", "--jobs", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--latency-ms", type=float, default=20.0, help="the sandbox provider's latency")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for final states after this")
    p.set_defaults(func=cmd_demo, service=False)


def _add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="a job's delivery record")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def _add_suppress(sub: Any) -> None:
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


def _add_webhooks(sub: Any) -> None:
    p = sub.add_parser("webhooks", help="the receiver of provider callbacks")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--metrics-port", type=int, help="serve /metrics, /livez and /readyz on this port (not public)")
    p.set_defaults(func=cmd_webhooks, service=True)


def _add_admin(sub: Any) -> None:
    from admin.command import add_admin  # noqa: PLC0415 - the admin package is outside the kernel

    add_admin(sub)


def register_all() -> list[Callable[[Any], None]]:
    return [_add_publish, _add_worker, _add_demo, _add_status, _add_suppress, _add_webhooks, _add_admin]
