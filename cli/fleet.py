"""The fleet's moving parts: `smsfleet worker`, `run` (everything in one process), `webhooks`, `demo`."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aio_pika
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from producers import Publisher
from smsfleet.connect import connect_amqp
from smsfleet.contracts import FINAL_STATES, SendJob, StatusEvent
from smsfleet.kinds import KINDS
from smsfleet.senders import parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, declare
from webhooks import serve
from workers import SendPolicy, run_workers
from workers.group import run_group

from .common import UserError, check_services, connect_registry

__all__ = ["add_demo", "add_webhooks", "add_worker"]


# -- worker, run -------------------------------------------------------------------------------------


def _policy(args: argparse.Namespace) -> SendPolicy:
    return SendPolicy(
        concurrency=args.concurrency, max_attempts=args.max_attempts, ambiguous=args.ambiguous,
        linger_s=args.linger_ms / 1000, batch_max=args.batch_max,
    )  # fmt: skip


def _child_argv(args: argparse.Namespace) -> list[str]:
    """The worker command of one process of a group: the same roles and flags, one process, no metrics port."""
    argv = ["--config", args.config] if args.config else []
    argv += ["worker", "--role", args.role]
    for kind in args.gateway or []:
        argv += ["--gateway", kind]
    argv += ["--concurrency", str(args.concurrency), "--max-attempts", str(args.max_attempts)]
    argv += ["--ambiguous", args.ambiguous, "--grace", str(args.grace)]
    return [*argv, "--linger-ms", str(args.linger_ms), "--batch-max", str(args.batch_max)]


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    gateways = args.gateway or []
    if args.role in ("send", "all") and not gateways:
        if args.role == "send":
            raise UserError("give --gateway for send workers (repeat it for several)")
        gateways = list(KINDS)
    await check_services(settings)
    if args.processes != 1:
        return await run_group(_child_argv(args), args.processes, grace_s=args.grace, metrics_port=args.metrics_port)
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


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, default=100, help="sends in flight per gateway (default 100)")
    p.add_argument("--max-attempts", type=int, default=6, help="attempts before a job ends failed")
    p.add_argument("--ambiguous", choices=("unknown", "resend"), default="unknown",
                   help="after a send that may have reached a provider that does not dedupe")  # fmt: skip
    p.add_argument("--grace", type=float, default=25.0, help="seconds to finish in-flight sends on SIGTERM")
    p.add_argument("--metrics-port", type=int, help="serve /metrics, /livez and /readyz on this port")
    p.add_argument("--linger-ms", type=_at_least(0, float), default=5.0,
                   help="how long a job may wait for others of its sender to share a provider request, for kinds "
                   "that batch (default 5; 0: one request per job)")  # fmt: skip
    p.add_argument(
        "--batch-max",
        type=_at_least(1, int),
        default=500,
        help="most messages in one provider request, below the kind's own maximum (default 500)",
    )
    p.add_argument(
        "--processes",
        type=_processes,
        default=1,
        metavar="N|auto",
        help="run N worker processes (auto: one a core), restarted when they crash (default 1)",
    )
    p.set_defaults(service=True)


def _at_least(low: float, kind: type[Any]) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {text}")
        return value

    return parse


def _processes(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    count: int = _at_least(1, int)(text)
    return count


def add_worker(sub: Any) -> None:
    p = sub.add_parser("worker", help="run consumers: send (per gateway), status, suppression, or all")
    p.add_argument("--gateway", action="append", choices=list(KINDS), metavar="KIND",
                   help="gateway whose send queue to consume (repeat)")  # fmt: skip
    p.add_argument("--role", choices=("send", "status", "suppression", "all"), default="send")
    _worker_flags(p)
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("run", help="everything in one process (development, demos)")
    _worker_flags(p)
    p.set_defaults(func=cmd_worker, role="all", gateway=None)


# -- webhooks ----------------------------------------------------------------------------------------


async def cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    await check_services(settings)
    await serve(settings, args.host, args.port, metrics_port=args.metrics_port)
    return 0


def add_webhooks(sub: Any) -> None:
    p = sub.add_parser("webhooks", help="the receiver of provider callbacks")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--metrics-port", type=int, help="serve /metrics, /livez and /readyz on this port (not public)")
    p.set_defaults(func=cmd_webhooks, service=True)


# -- demo --------------------------------------------------------------------------------------------


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    await check_services(settings)
    console = Console(highlight=False, emoji=False)
    simulated = {"latency_ms": args.latency_ms, "delivered_rate": 0.95, "await_delivery_s": 1}
    sender = {"id": "demo-sandbox", "gateway": "sandbox", "accounts": ["demo"], "settings": simulated}
    async with connect_registry(settings) as registry:
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


async def _demo_run(args: argparse.Namespace, settings: Settings, console: Console) -> tuple[Counter[str], float]:
    """Publish the demo's jobs and count their final events, with two progress bars."""
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

    def jobs() -> Iterator[tuple[int, SendJob]]:
        for i in range(args.jobs):
            to = f"+7916{i % 10_000_000:07d}"
            yield (
                i,
                SendJob(id=f"{run_id}-{i:06d}", sender="demo-sandbox", account="demo", to=to, text=f"Demo {i}"),
            )

    async with await connect_amqp(settings.amqp_url) as connection:
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


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="a sandbox sender, N jobs, live progress, a summary of final states")
    p.add_argument("-n", "--jobs", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--latency-ms", type=float, default=20.0, help="the sandbox provider's latency")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for final states after this")
    p.set_defaults(func=cmd_demo, service=False)
