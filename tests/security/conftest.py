"""The receiver as an attacker meets it: started on the real RabbitMQ and Redis, with aiohttp's server options
as `smsfleet webhooks` runs it, a Rapporto sender, a sandbox sender and a sender of every other pushing kind."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import msgspec
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from smsfleet.senders import Sender, SenderRegistry, parse_sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.topology import Names
from webhooks import SERVER_OPTIONS, Receiver, build_app

RAPPORTO: dict[str, Any] = {
    "id": "r1",
    "gateway": "rapporto",
    "accounts": ["acme"],
    "settings": {"service_id": "svc-17", "password": "pw-secret-rapporto", "url": "http://127.0.0.1:9/svc-17"},
    "stop_words": ["STOP"],
    "add_to_global_suppress": True,
}
BARE = "/smslistener/listen_type/sms_rapporto"


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    server = TestServer(build_app(receiver))
    await server.start_server(**SERVER_OPTIONS)  # TestServer() drops runner options; start_server takes them
    async with TestClient(server) as client:
        yield client


async def create(redis: aioredis.Redis, names: Names, doc: Mapping[str, Any]) -> Sender:
    return await SenderRegistry(redis, names).create(parse_sender(doc))


def path_of(sender: Sender) -> str:
    """The sender's receiving URL as `senders show` prints it, as a path with its query."""
    parts = urlsplit(receiving_url(sender, "http://x") or "")
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def drain(amqp: aio_pika.abc.AbstractConnection, queue_name: str) -> list[dict[str, Any]]:
    """Every message waiting in a queue, decoded (and taken off it)."""
    found: list[dict[str, Any]] = []
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(queue_name, passive=True)
        while (msg := await queue.get(fail=False, no_ack=True)) is not None:
            found.append(msgspec.json.decode(msg.body))
    return found


def settings_with(settings: Settings, **changes: object) -> Settings:
    return msgspec.structs.replace(settings, **changes)
