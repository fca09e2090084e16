"""The admin's broker connection: opened on first use (the sender pages work without RabbitMQ), kept, and
closed with the application. Used by the overview (queue depths, the dead queue), the test send and the
dead-letter page."""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractRobustConnection

from smsfleet.connect import connect_amqp
from smsfleet.settings import redact_url

from .errors import Problem

__all__ = ["BROKER_ERRORS", "Broker"]

log = structlog.get_logger("smsfleet.admin")

CONNECT_TIMEOUT_S = 5.0
#: what a call on an unreachable or failing broker raises
BROKER_ERRORS = (OSError, TimeoutError, aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError)


class Broker:
    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self._connection: AbstractRobustConnection | None = None
        self._lock = asyncio.Lock()

    async def connection(self) -> AbstractRobustConnection:
        """The connection; a `Problem` (503) when RabbitMQ cannot be reached."""
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                try:
                    self._connection = await connect_amqp(self.amqp_url, timeout=CONNECT_TIMEOUT_S)
                except BROKER_ERRORS as exc:
                    log.error("admin.amqp_unavailable", url=redact_url(self.amqp_url), error=type(exc).__name__)
                    raise Problem(503, "RabbitMQ cannot be reached. Try again shortly.") from None
            return self._connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            await connection.close()
