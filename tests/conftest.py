"""Shared fixtures: the real RabbitMQ and Redis, and a namespace of its own for every test.

A service URL comes from the environment first (SMSFLEET_TEST_AMQP_URL / SMSFLEET_TEST_REDIS_URL), then
from a testcontainers container when a Docker engine answers, then the local default. Under CI=true a
service that cannot be reached fails the run; elsewhere the tests that need it are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import aio_pika
import pytest
import redis.asyncio as aioredis

from smsfleet.connect import connect_amqp, connect_amqp_once, redis_client
from smsfleet.settings import Settings
from smsfleet.topology import Names, declare, delete

CI = os.environ.get("CI", "").lower() == "true"
DEFAULTS = {"amqp": "amqp://guest:guest@127.0.0.1:5672/", "redis": "redis://127.0.0.1:6379/0"}
SERVICE_FIXTURES = {"amqp_url", "redis_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (5672 if parts.scheme.startswith("amqp") else 6379)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=2):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    try:
        import docker  # noqa: PLC0415 - only when no URL is given

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _service(name: str) -> Iterator[str]:
    env = os.environ.get(f"SMSFLEET_TEST_{name.upper()}_URL")
    if env:
        yield env
        return
    if not _reachable(DEFAULTS[name]) and _docker_answers():
        if name == "amqp":
            from testcontainers.rabbitmq import RabbitMqContainer  # noqa: PLC0415 - only when no URL is given and Docker answers

            with RabbitMqContainer("rabbitmq:3.13-management") as c:
                yield f"amqp://guest:guest@{c.get_container_host_ip()}:{c.get_exposed_port(5672)}/"
        else:
            from testcontainers.redis import RedisContainer  # noqa: PLC0415 - only when no URL is given and Docker answers

            with RedisContainer("redis:7") as c:
                yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
        return
    yield DEFAULTS[name]


def _require(name: str, url: str) -> None:
    if _reachable(url):
        return
    message = f"{name} is not reachable at {url}"
    if CI:
        pytest.fail(message + " (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with _service("amqp") as url:
        _require("RabbitMQ", url)
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with _service("redis") as url:
        _require("Redis", url)
        yield url


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def names(namespace: str) -> Names:
    return Names(namespace)


@pytest.fixture
def settings(amqp_url: str, redis_url: str, namespace: str) -> Settings:
    return Settings(
        amqp_url=amqp_url, redis_url=redis_url, namespace=namespace, public_url="http://hooks.test", public_url_set=True
    )


@pytest.fixture
async def redis(redis_url: str, namespace: str) -> AsyncIterator[aioredis.Redis]:
    client = redis_client(redis_url)  # a plain URL, or Sentinels (the cluster suite)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{namespace}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def amqp(amqp_url: str, names: Names) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A broker connection with the namespace's topology declared, deleted again after the test."""
    connection = await connect_amqp(amqp_url)  # one node, or a cluster's (the cluster suite)
    async with connection.channel() as channel:
        await declare(channel, names)
    yield connection
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), 10)
    await _delete_topology(amqp_url, names)


async def _delete_topology(amqp_url: str, names: Names) -> None:
    """Delete the namespace's ~33 quorum queues and its exchanges on a fresh connection (the test's own may be
    broken: a chaos case restarted the broker). A failure is tried again, then fails the test's teardown:
    namespaces left behind exhaust the broker's file handles and hang every new connection."""
    for _ in range(3):
        try:
            connection = await connect_amqp_once(amqp_url, timeout=10)
            async with connection, connection.channel() as channel:
                await channel.queue_delete(f"{names.ns}.test-events")  # a test's own events queue, if any
                await delete(channel, names)
            return
        except Exception:  # any failure: try again on a new connection
            await asyncio.sleep(1.0)
    pytest.fail(f"the broker kept namespace {names.ns!r}: delete its queues by hand", pytrace=False)
