"""What every command group shares: the two errors a command may end with, the console, the services.

A user mistake is a `UserError`: one line on stderr, exit status 2. An unreachable service is
`Unavailable`: one line saying how to start it, exit status 1. No traceback for either, and no secret in
any output (`cli.main` prints them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import aio_pika
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from smsfleet.connect import connect_amqp_once, redis_client
from smsfleet.senders import SenderRegistry, open_registry
from smsfleet.settings import Settings, redact_url
from smsfleet.topology import Names

__all__ = [
    "AMQP_HINT",
    "REDIS_HINT",
    "Command",
    "Parser",
    "Unavailable",
    "UserError",
    "check_services",
    "connect_amqp",
    "connect_redis",
    "connect_registry",
    "console",
    "esc",
    "plain",
    "print_json",
    "run",
]

T = TypeVar("T")

#: a command: the parsed arguments and the settings read once from the environment -> the exit status
Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


class UserError(Exception):
    """A mistake in what the user asked; printed as one line, exit status 2."""


class Unavailable(Exception):
    """A service the command needs cannot be reached; printed as one line, exit status 1."""


REDIS_HINT = (
    "start it with: redis-server --daemonize yes --port 6379 --save '' --appendonly no, "
    "or point SMSFLEET_REDIS_URL at yours"
)
AMQP_HINT = "start it with: rabbitmq-server -detached, or point SMSFLEET_AMQP_URL at yours"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other user mistake
        raise UserError(f"{self.prog}: {message}")


# -- output ------------------------------------------------------------------------------------------


def console() -> Console:
    """Rich output. Every value that comes from a user or a provider goes through `plain` (a table cell)
    or `esc` (inside a line with markup): `[/bold]` in an account name is text, not markup."""
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 132)


def plain(value: object) -> Text:
    """A table cell showing `value` as it is: no markup, no emoji codes."""
    return Text(str(value))


def esc(value: object) -> str:
    """`value` escaped for a line printed with markup."""
    return escape(str(value))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


# -- services ----------------------------------------------------------------------------------------


def _redis_client(settings: Settings) -> aioredis.Redis:
    return redis_client(settings.redis_url, socket_connect_timeout=3)


@contextlib.asynccontextmanager
async def _reached(client: aioredis.Redis, settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """`client` once it answers a ping (else `Unavailable`), closed on exit either way."""
    try:
        try:
            await client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            raise Unavailable(f"cannot reach Redis at {redact_url(settings.redis_url)}; {REDIS_HINT}") from None
        yield client
    finally:
        await client.aclose()


def connect_redis(settings: Settings) -> contextlib.AbstractAsyncContextManager[aioredis.Redis]:
    return _reached(_redis_client(settings), settings)


@contextlib.asynccontextmanager
async def connect_registry(settings: Settings) -> AsyncIterator[SenderRegistry]:
    """The sender registry; a bad SMSFLEET_SECRET_KEY is a `UserError`, told before Redis is tried."""
    client = _redis_client(settings)
    try:
        registry = open_registry(client, Names(settings.namespace), settings.secret_key)
    except ValueError as exc:
        await client.aclose()
        raise UserError(str(exc)) from None
    async with _reached(client, settings):
        yield registry


@contextlib.asynccontextmanager
async def connect_amqp(settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    try:
        nodes = len(settings.amqp_urls)
        connection = await asyncio.wait_for(connect_amqp_once(settings.amqp_url, timeout=10), 10 * nodes)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPConnectionError):
        raise Unavailable(f"cannot reach RabbitMQ at {redact_url(settings.amqp_url)}; {AMQP_HINT}") from None
    try:
        yield connection
    finally:
        await connection.close()


async def check_services(settings: Settings) -> None:
    """Fail early, in one line, when RabbitMQ or Redis cannot be reached."""
    async with connect_redis(settings):
        pass
    async with connect_amqp(settings):
        pass


#: the cyclic garbage collector's thresholds (Python's: 700, 10, 10). A worker keeps thousands of deliveries,
#: tasks and futures alive; collecting every 700 allocations, and the whole heap every few seconds, cost it
#: 11-19 % of its CPU (tests.bench.batching, docs/benchmarks.md), in pauses up to ~150 ms. Most of its garbage
#: is freed by reference counting; cycles still go, after 10,000 allocations instead of 700
GC_THRESHOLDS = (10_000, 10, 10)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop where it is installed (a worker spends about 15 % less CPU a message), else on asyncio's,
    with the garbage collector's `GC_THRESHOLDS`."""
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop  # noqa: PLC0415 - optional on purpose: not installed on Windows (see pyproject.toml)
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
