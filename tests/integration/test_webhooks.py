"""The callback receiver on the real broker and Redis: auth, bad input, storing before answering, STOP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from cli import main
from gateways import available
from smsfleet.contracts import SendJob
from smsfleet.kinds import KIND_SETTINGS
from smsfleet.senders import SenderRegistry, parse_sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import Names, message
from tests.integration.test_send_worker import fleet, silent_broker, until
from tests.samples import sample_sender
from webhooks import MAX_BODY, Options, Receiver, app, build_app
from webhooks.serve import serve
from workers.ledger import Ledger

SANDBOX = {
    "id": "sbx",
    "gateway": "sandbox",
    "accounts": ["acme", "acme-promo"],
    "settings": {"await_delivery_s": 3600, "latency_ms": 0},
    "stop_words": ["STOP", "СТОП"],
    "add_to_global_suppress": True,
}


@pytest.fixture
async def client(settings: Settings, redis: aioredis.Redis, amqp: object) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    registry = SenderRegistry(redis, Names(settings.namespace))
    await registry.create(parse_sender(SANDBOX))
    for kind in available():
        if KIND_SETTINGS[kind].callbacks and kind != "sandbox":
            await registry.create(parse_sender(sample_sender(kind)))
    # no rate limit: the fuzz below is one client as fast as it can go
    async with TestClient(TestServer(build_app(Receiver(settings, options=Options(rate_limit=0))))) as c:
        yield c


async def queue_depth(amqp: aio_pika.abc.AbstractConnection, name: str) -> int:
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def sandbox_url(redis: aioredis.Redis, names: Names, settings: Settings) -> str:
    sender = await SenderRegistry(redis, names).get("sbx")
    assert sender is not None
    url = receiving_url(sender, settings.public_url)
    assert url is not None
    return path_of(url)


async def test_a_stop_reply_suppresses_every_account_and_the_next_send(  # noqa: PLR0917 - fixtures
    client: TestClient,  # type: ignore[type-arg]
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractConnection,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the receiving URL exactly as the operator sees it
    monkeypatch.setenv("SMSFLEET_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("SMSFLEET_NAMESPACE", settings.namespace)
    monkeypatch.setenv("SMSFLEET_PUBLIC_URL", "https://hooks.example.com")
    assert await asyncio.to_thread(main, ["senders", "show", "sbx", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["receiving_url"]
    assert printed.startswith("https://hooks.example.com/smslistener/listen_type/sms_sandbox?sender=sbx&token=")

    store = SuppressionStore(redis, names)
    async with fleet(settings, ["sandbox"], suppression=True):
        reply = await client.post(path_of(printed), json={"from": "+79161234567", "to": "ACME", "text": " Stop! "})
        assert reply.status == 200
        await until(lambda: store.is_suppressed("acme-promo", "+79161234567"))
        assert await store.members("acme") == ["+79161234567"]
        assert await store.members(None) == ["+79161234567"]
        job = SendJob(id="after-stop", sender="sbx", account="acme-promo", to="+79161234567", text="hi")
        async with amqp.channel() as channel:
            exchange = await channel.get_exchange(names.send_exchange)
            events = await channel.declare_queue(exclusive=True)
            await events.bind(names.events_exchange, "status.*")
            await exchange.publish(message(msgspec.json.encode(job)), routing_key="sandbox.sbx")
            got = await _next_event(events)
        assert (got["job_id"], got["state"]) == ("after-stop", "suppressed")
    assert await Ledger(redis, names).get("after-stop") == {}  # never claimed, so never sent


async def _next_event(queue: aio_pika.abc.AbstractQueue) -> dict[str, str]:
    for _ in range(100):
        msg = await queue.get(fail=False)
        if msg is not None:
            await msg.ack()
            return msgspec.json.decode(msg.body)  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError("no event")


async def test_a_pushed_report_finishes_the_job(
    client: TestClient,  # type: ignore[type-arg]
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractConnection,
) -> None:
    url = await sandbox_url(redis, names, settings)
    ledger = Ledger(redis, names)
    async with fleet(settings, ["sandbox"]), amqp.channel() as channel:
        exchange = await channel.get_exchange(names.send_exchange)
        job = SendJob(id="pushed", sender="sbx", account="acme", to="+79161234567", text="hi")
        await exchange.publish(message(msgspec.json.encode(job)), routing_key="sandbox.sbx")
        await until(lambda: _phase(ledger, "pushed", "accepted"))
        pid = (await ledger.get("pushed"))["pid"]
        # out of order and twice: delivered, then a late "accepted", then delivered again
        for state in ("delivered", "accepted", "delivered", "undelivered"):
            assert (await client.post(url, json={"id": pid, "state": state})).status == 200
        await until(lambda: _phase(ledger, "pushed", "final"))
        await asyncio.sleep(0.5)
    assert (await ledger.get("pushed"))["state"] == "delivered"


async def _phase(ledger: Ledger, job_id: str, phase: str) -> bool:
    return (await ledger.get(job_id)).get("phase") == phase


async def test_bad_requests_get_4xx_and_publish_nothing(
    client: TestClient,  # type: ignore[type-arg]
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractConnection,
) -> None:
    url = await sandbox_url(redis, names, settings)
    base = "/smslistener/listen_type/sms_sandbox"
    cases = [
        ("POST", f"{base}?sender=sbx&token=wrong", b'{"id": "x", "state": "delivered"}', 401),
        ("POST", f"{base}?sender=nobody&token=x", b'{"id": "x", "state": "delivered"}', 401),
        ("POST", f"{base}?sender=sbx", b'{"id": "x", "state": "delivered"}', 401),
        ("POST", url.replace("sms_sandbox", "sms_smsc"), b"id=1&status=1", 401),  # a token for another kind
        ("PUT", url, b'{"id": "x", "state": "delivered"}', 405),
        ("POST", url, b"{not json", 400),
        ("POST", url, b'{"id": "x", "state": "exploded"}', 400),
        ("POST", url, b"x" * (MAX_BODY + 1), 413),
        ("POST", "/smslistener/listen_type/sms_mts?sender=sbx&token=x", b"{}", 404),
        ("GET", "/smslistener/listen_type/sms_rapporto?clientId=79161234567&message=STOP", b"", 403),  # no allow-list
        ("GET", "/smslistener/listen_type/sms_rapporto?transactionId=x&status=1", b"", 400),
    ]
    for method, path, body, status in cases:
        reply = await client.request(method, path, data=body)
        assert reply.status == status, (method, path, body[:40], await reply.text())
    assert await queue_depth(amqp, names.status_queue) == 0
    assert await queue_depth(amqp, names.inbound_queue) == 0


async def test_fuzzed_bodies_never_get_a_5xx(
    client: TestClient,  # type: ignore[type-arg]
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
) -> None:
    registry = SenderRegistry(redis, names)
    paths = [path_of(receiving_url(s, "http://x") or "") for s in await registry.list() if s.gateway != "rapporto"]
    paths.append("/smslistener/listen_type/sms_rapporto")
    rng = random.Random(7)
    seeds = [b'{"id": "x", "state": "delivered"}', b"id=1&status=1&err=0", b'{"results": [{"messageId": "1"}]}']
    statuses: dict[int, int] = {}
    for i in range(1000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 8)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        if i % 7 == 0:
            body = bytearray(rng.randbytes(rng.randint(0, 300)))
        path = paths[i % len(paths)]
        method = "GET" if i % 5 == 0 else "POST"
        headers = {"Content-Type": rng.choice(["application/json", "application/x-www-form-urlencoded", "text/plain"])}
        reply = await client.request(method, path, data=bytes(body), headers=headers)
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
        assert reply.status < 500, (path, bytes(body)[:80], await reply.text())
    assert sum(statuses.values()) == 1000


async def test_an_unavailable_broker_gets_a_retryable_answer(
    settings: Settings, redis: aioredis.Redis, names: Names, amqp: object
) -> None:
    await SenderRegistry(redis, names).create(parse_sender(SANDBOX))
    receiver = Receiver(settings)
    async with TestClient(TestServer(build_app(receiver))) as client:
        url = await sandbox_url(redis, names, settings)
        assert (await client.get("/readyz")).status == 200
        assert receiver.connection is not None
        await receiver.connection.close()  # the broker is gone, as far as the receiver can tell
        reply = await client.post(url, json={"id": "x", "state": "delivered"})
        assert reply.status == 503
        assert reply.headers["Retry-After"]
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200


async def test_a_sender_url_cannot_report_on_another_senders_jobs(
    client: TestClient,  # type: ignore[type-arg]
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractConnection,
) -> None:
    registry = SenderRegistry(redis, names)
    other = await registry.create(parse_sender({**SANDBOX, "id": "other"}))
    other_url = path_of(receiving_url(other, settings.public_url) or "")
    ledger = Ledger(redis, names)
    async with fleet(settings, ["sandbox"]), amqp.channel() as channel:
        exchange = await channel.get_exchange(names.send_exchange)
        job = SendJob(id="not-yours", sender="sbx", account="acme", to="+79161234567", text="hi")
        await exchange.publish(message(msgspec.json.encode(job)), routing_key="sandbox.sbx")
        await until(lambda: _phase(ledger, "not-yours", "accepted"))
        assert (await client.post(other_url, json={"job_id": "not-yours", "state": "undelivered"})).status == 200
        await asyncio.sleep(1.5)
        assert (await ledger.get("not-yours"))["phase"] == "accepted"
        assert (
            await client.post(
                await sandbox_url(redis, names, settings), json={"job_id": "not-yours", "state": "delivered"}
            )
        ).status == 200
        await until(lambda: _phase(ledger, "not-yours", "final"))
    assert (await ledger.get("not-yours"))["state"] == "delivered"


async def test_a_stop_while_the_broker_does_not_answer_ends_the_receiver_at_once(settings: Settings) -> None:
    """Starting connects to the broker; one that takes the connection and says nothing held the start, and a
    SIGTERM meanwhile, for as long (an orchestrator then waits out its grace and kills the pod)."""
    stop = asyncio.Event()
    async with silent_broker(settings) as (silent, connected):
        receiver = asyncio.create_task(serve(silent, "127.0.0.1", 0, stop, options=Options()))
        try:
            await until(lambda: connected, within=5)
            await asyncio.sleep(1.0)
            assert not receiver.done()  # the handshake hangs
            stop.set()
            await asyncio.wait_for(receiver, 3)
        finally:
            receiver.cancel()


@contextlib.asynccontextmanager
async def forwarded(url: str) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """`url` through a local TCP forwarder, and a `cut` that closes it and every connection through it: the
    broker is then gone for good, as far as a client of the forwarder can tell (its reconnects are refused)."""
    parts = urlsplit(url)
    pipes: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 5672)
        pipes.extend((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def cut() -> None:
        server.close()
        for writer in pipes:
            writer.transport.abort()
        await server.wait_closed()

    try:
        yield parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}").geturl(), cut
    finally:
        await cut()


async def test_a_callbacks_publishes_meeting_a_lost_connection_fail_within_the_publish_timeout(
    settings: Settings, names: Names, amqp: aio_pika.abc.AbstractConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`publish_json` waits for a robust channel's lost connection to be restored; a provider waiting on the
    callback gets its error (a 503) after `PUBLISH_TIMEOUT_S` instead, however long the broker stays away.
    (`amqp`: the namespace's topology declared.)"""
    monkeypatch.setattr(app, "PUBLISH_TIMEOUT_S", 0.5)
    async with forwarded(settings.amqp_url) as (url, cut):
        connection = await aio_pika.connect_robust(url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            assert await app._publish_all(channel, names.internal_exchange, [("report.sandbox", b"{}")]) == [None]
            await cut()
            await until(lambda: channel.is_closed, within=5)
            started = asyncio.get_running_loop().time()
            outcomes = await asyncio.wait_for(
                app._publish_all(channel, names.internal_exchange, [("report.sandbox", b"{}")] * 3), 10
            )
            assert asyncio.get_running_loop().time() - started < 2
            assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
        finally:
            await connection.close()
