"""The `cluster` suite's set-up: the local cluster of deploy/cluster/cluster.py (three RabbitMQ nodes, a Redis
primary with one replica and three Sentinels), started once per session and taken down at its end, also when a
test fails (a finalizer, and `atexit` should the session die first). It cannot start: the suite is skipped, or
under CI=true failed.

The service fixtures of tests/conftest.py are pointed at it: `amqp_url` lists the three nodes, `redis_url`
names the Sentinels, and `redis` / `amqp` connect through `smsfleet.connect`, as the processes do. The books'
rows (`tests.chaos.harness.Books`) join the chaos suite's accounting table.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis

from smsfleet.connect import connect_amqp, connect_amqp_once, redis_client
from smsfleet.topology import Names, declare, delete
from tests.chaos import conftest as chaos
from tests.conftest import CI

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "cluster" / "cluster.py"


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smsfleet_cluster_harness", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # before running it: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

# the chaos suite's books: the fixture, and its rows in the same table at the end of the run
books = chaos.books
pytest_runtest_logreport = chaos.pytest_runtest_logreport


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if chaos not in terminalreporter.config.pluginmanager.get_plugins():  # the chaos suite did not run: print it here
        chaos.pytest_terminal_summary(terminalreporter)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """The running cluster (`cluster.Cluster`), up once for the session."""
    cluster = harness.Cluster()
    atexit.register(cluster.down)
    try:
        took = cluster.up()
    except (RuntimeError, SystemExit, OSError, subprocess.SubprocessError) as exc:
        cluster.down()
        message = f"the local cluster did not start: {exc}"
        if CI:
            pytest.fail(message + " (CI=true: the cluster cases must run)", pytrace=False)
        pytest.skip(message)
    print(f"cluster up in {took:.1f} s")  # shown with -s: the start-up time the docs quote
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def amqp_url(cluster: Any) -> str:
    return str(cluster.amqp_url)


@pytest.fixture(scope="session")
def redis_url(cluster: Any) -> str:
    return str(cluster.redis_url)


@pytest.fixture
async def redis(redis_url: str, namespace: str) -> AsyncIterator[aioredis.Redis]:
    client = redis_client(redis_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{namespace}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def amqp(amqp_url: str, names: Names) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A connection to the cluster with the namespace's topology declared, deleted again after the test."""
    connection = await connect_amqp(amqp_url)
    async with connection.channel() as channel:
        await declare(channel, names)
    yield connection
    with contextlib.suppress(Exception):
        await connection.close()
    async with await connect_amqp_once(amqp_url, timeout=10) as fresh, fresh.channel() as channel:
        await channel.queue_delete(f"{names.ns}.test-events")
        await delete(channel, names)
