"""The broker connection and the Redis client, made the same way by every process from the settings' URLs.

The broker. SMSFLEET_AMQP_URL names one node, or several, comma-separated (a cluster's nodes). `connect_amqp`
connects to the first that answers, with `ClusterConnection`: aio-pika's robust connection, which restores
channels (publisher confirms included), queues, bindings and consumers after a reconnect, and which here
reconnects to the *next* node of the list (round the list) each time a connection is lost or an attempt
fails. A publish whose confirm was outstanding when its connection was lost fails (aiormq rejects the
pending confirms), so no publish is reported as done that no node confirmed; its caller publishes again.
The options in the first URL's query (`heartbeat`, `reconnect_interval`, ...) hold for every node.

Redis. SMSFLEET_REDIS_URL is a `redis://`, `rediss://` or `unix://` URL, or the Sentinels of a primary:
`redis+sentinel://[:password@]h1:26379,h2:26379/<service>[/<db>]` (`settings.SentinelUrl`). `redis_client`
returns a client for either. Through Sentinels, a connection asks them for the current primary each time it
connects (`_SentinelConnection`: a command's retry too), and a connection that finds its server demoted
(READONLY) is dropped, so after a failover clients follow the new primary by themselves; meanwhile their
calls fail with a `redis.exceptions.ConnectionError`, as when a single Redis is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
import redis.asyncio as aioredis
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from yarl import URL

from .settings import SENTINEL_SCHEMES, SentinelUrl, amqp_urls

__all__ = ["ClusterConnection", "connect_amqp", "connect_amqp_once", "redis_client"]


class ClusterConnection(RobustConnection):
    """A robust connection over `nodes`: a lost connection, or a failed attempt, moves it to the next node."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        nodes: Sequence[URL] = kwargs.pop("nodes", ())
        super().__init__(url, loop, **kwargs)
        self.nodes = tuple(nodes) or (self.url,)
        self._node = 0

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # called when the connection is lost and when an attempt to connect fails: the next attempt (made by
        # RobustConnection's reconnect loop right after, then every `reconnect_interval`) goes to the next node
        if not self._close_called and len(self.nodes) > 1:
            self._node = (self._node + 1) % len(self.nodes)
            self.url = self.nodes[self._node]
        await super()._on_connection_close(closing)


async def connect_amqp(url: str, *, timeout: float | None = None) -> ClusterConnection:  # noqa: ASYNC109 - per attempt, passed to aio-pika
    """A `ClusterConnection` to the first node of `url` (one URL or several, comma-separated) that answers;
    the last node's error when none does. `timeout`: per node."""
    nodes = [URL(node) for node in amqp_urls(url)]
    error: BaseException | None = None
    for first in range(len(nodes)):
        order = nodes[first:] + nodes[:first]
        connection = ClusterConnection(order[0], nodes=order)
        try:
            await connection.connect(timeout=timeout)
        except CONNECTION_EXCEPTIONS as exc:
            error = exc
            await connection.close()
            continue
        except asyncio.CancelledError:  # a stop while connecting: its reconnection task must not outlive it
            await connection.close()
            raise
        return connection
    assert error is not None
    raise error


async def connect_amqp_once(url: str, *, timeout: float | None = None) -> aio_pika.abc.AbstractConnection:  # noqa: ASYNC109 - per attempt, passed to aio-pika
    """A plain (not robust) connection to the first node of `url` that answers, for one-shot commands."""
    error: BaseException | None = None
    for node in amqp_urls(url):
        try:
            return await aio_pika.connect(node, timeout=timeout)
        except CONNECTION_EXCEPTIONS as exc:
            error = exc
    assert error is not None
    raise error


class _SentinelConnection(SentinelManagedConnection):
    """A connection to the Sentinels' primary that asks them again whenever it connects. redis-py's own asks
    them only when its pool connects it: a command that lost its server and is retried (the client's default
    retry) reconnects to the address it last had. After a failover that is the old primary, which a restart
    brings back empty, and a primary until the Sentinels demote it some 10 s later: reads there find nothing
    (a job's sender unknown), and writes acknowledged there are lost with the demotion (the ledger's)."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call] # through the Sentinels
        await super().send_packed_command(command, check_health)


class _SentinelSSLConnection(_SentinelConnection, SSLConnection):
    pass


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool that, like `BlockingConnectionPool`, waits for a free connection instead of failing."""


class _SentinelRedis(aioredis.Redis):
    """A client of a Sentinel-watched primary that also closes its connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def redis_client(
    url: str, *, max_connections: int | None = None, pool_timeout: float | None = None, **kwargs: Any
) -> aioredis.Redis:
    """A client for `url` (see the module doc), connecting on first use. `max_connections`: a blocking pool
    of that size, where a call waits up to `pool_timeout` s for a connection; `kwargs`: connection options
    (`socket_timeout`, ...). Closing the client closes its pool (and its Sentinel connections)."""
    if not url.startswith(SENTINEL_SCHEMES):
        if max_connections is None:
            return aioredis.Redis.from_url(url, **kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout, **kwargs
        )
        return aioredis.Redis.from_pool(pool)
    parsed = SentinelUrl.parse(url)
    socket_options = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    sentinel = Sentinel(
        parsed.sentinels,
        sentinel_kwargs={**socket_options, "password": parsed.sentinel_password},
    )
    options: dict[str, Any] = {"db": parsed.db, "username": parsed.username, "password": parsed.password}
    options["connection_class"] = _SentinelSSLConnection if parsed.ssl else _SentinelConnection
    if max_connections is not None:
        options |= {"max_connections": max_connections, "timeout": pool_timeout}
    pool_class = SentinelConnectionPool if max_connections is None else _BlockingSentinelPool
    client: aioredis.Redis = sentinel.master_for(
        parsed.service, redis_class=_SentinelRedis, connection_pool_class=pool_class, **options, **kwargs
    )
    return client
