"""The send worker's own rules, in-process on the real broker and Redis, against the fake SMSC."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from cli import main
from smsfleet.contracts import StatusEvent
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy, run_workers
from workers.ledger import Ledger

JOB = {"sender": "s1", "account": "acme", "to": "+79161234567", "text": "hello"}


@contextlib.asynccontextmanager
async def fleet(
    settings: Settings, gateways: list[str], *, suppression: bool = False, metrics_port: int | None = None
) -> AsyncIterator[None]:
    """Every role for `gateways`, in this process, until the block ends."""
    stop = asyncio.Event()
    policy = SendPolicy(concurrency=20)
    task = asyncio.create_task(
        run_workers(
            settings,
            gateways=gateways,
            status=True,
            suppression=suppression,
            policy=policy,
            stop=stop,
            metrics_port=metrics_port,
        )
    )
    await asyncio.sleep(0.5)  # consumers up
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def publish(amqp: aio_pika.abc.AbstractConnection, names: Names, key: str, body: bytes) -> None:
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(names.send_exchange)
        await exchange.publish(message(body), routing_key=key)


async def until(predicate: Callable[[], object], within: float = 15.0) -> None:
    """Wait until `predicate()` (a plain or an async function) is true."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def smsc(redis: aioredis.Redis, names: Names) -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc(login="acme", password="pw", initial_status=1) as fake:
        settings = {"login": "acme", "password": "pw", "await_delivery_s": 1, "base_url": fake.url}
        await SenderRegistry(redis, names).create(
            parse_sender({"id": "s1", "gateway": "smsc", "accounts": ["acme"], "settings": settings})
        )
        yield fake


async def test_jobs_finish_without_any_event_consumer(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis, smsc: FakeSmsc
) -> None:
    ledger = Ledger(redis, names)
    async with fleet(settings, ["smsc"]):
        for i in range(5):
            await publish(amqp, names, "smsc.s1", msgspec.json.encode({"id": f"j{i}", **JOB}))

        async def all_final() -> bool:
            records = await asyncio.gather(*(ledger.get(f"j{i}") for i in range(5)))
            return all(r.get("state") == "delivered" for r in records)

        await until(all_final)
    assert len(smsc.messages) == 5


async def test_wrong_gateway_is_rerouted_and_unknown_sender_is_parked(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, smsc: FakeSmsc
) -> None:
    seen: dict[str, list[str]] = {}
    message_ids: list[str | None] = []

    async def collect(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = msgspec.json.decode(msg.body, type=StatusEvent)
        seen.setdefault(event.job_id, []).append(event.state)
        message_ids.append(msg.message_id)
        await msg.ack()

    async with amqp.channel() as channel:
        events = await channel.declare_queue(exclusive=True)
        await events.bind(names.events_exchange, "status.*")
        await events.consume(collect)
        async with fleet(settings, ["smsc", "sandbox"]):
            await publish(amqp, names, "sandbox.s1", msgspec.json.encode({"id": "wrong-queue", **JOB}))
            await publish(amqp, names, "smsc.nobody", msgspec.json.encode({"id": "lost", **JOB, "sender": "nobody"}))
            await until(lambda: "delivered" in seen.get("wrong-queue", []) and "rejected" in seen.get("lost", []))
        dead = await channel.declare_queue(names.dead_queue, passive=True)
        parked = await dead.get(timeout=5)
        assert parked.headers["x-smsfleet-reason-code"] == "unknown_sender"
        assert msgspec.json.decode(parked.body)["id"] == "lost"
        await parked.ack()
    assert seen["wrong-queue"] == ["accepted", "delivered"]
    assert [m.phone for m in smsc.messages] == ["79161234567"]
    # an event's message id names its job and state (a copy published again carries the same)
    assert sorted(i or "" for i in message_ids) == ["lost.rejected", "wrong-queue.accepted", "wrong-queue.delivered"]


async def test_the_same_job_published_twice_is_sent_once(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis, smsc: FakeSmsc
) -> None:
    body = msgspec.json.encode({"id": "twice", **JOB})
    ledger = Ledger(redis, names)
    async with fleet(settings, ["smsc"]):
        await asyncio.gather(*(publish(amqp, names, "smsc.s1", body) for _ in range(5)))

        async def final() -> bool:
            return (await ledger.get("twice")).get("state") == "delivered"

        await until(final)
        await asyncio.sleep(1.0)  # give any duplicate its chance
    sends = [p for path, p in smsc.requests if path == "/sys/send.php"]
    assert len(smsc.messages) == 1
    assert len(sends) == 1


async def test_status_shows_the_history_of_a_job(  # noqa: PLR0917 - fixtures
    settings: Settings,
    amqp: aio_pika.abc.AbstractConnection,
    names: Names,
    redis: aioredis.Redis,
    smsc: FakeSmsc,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger = Ledger(redis, names)
    async with fleet(settings, ["smsc"]):
        await publish(amqp, names, "smsc.s1", msgspec.json.encode({"id": "h1", **JOB}))
        await until(lambda: _state(ledger, "h1", "delivered"))
    monkeypatch.setenv("SMSFLEET_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("SMSFLEET_NAMESPACE", settings.namespace)
    capsys.readouterr()  # the fleet's log lines
    assert await asyncio.to_thread(main, ["status", "h1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["state"], shown["gateway"], shown["sender"]) == ("delivered", "smsc", "s1")
    assert [(h["state"], h["source"]) for h in shown["history"]] == [("accepted", "send"), ("delivered", "poll")]
    assert shown["history"][0]["detail"] == shown["provider_ids"][0]
    assert await asyncio.to_thread(main, ["status", "nope"]) == 2


async def _state(ledger: Ledger, job_id: str, state: str) -> bool:
    return (await ledger.get(job_id)).get("state") == state


@contextlib.asynccontextmanager
async def silent_broker(settings: Settings) -> AsyncIterator[tuple[Settings, list[asyncio.StreamWriter]]]:
    """`settings` pointing at a broker that takes connections and then says nothing (stalled, a paused VM),
    and the connections it took."""
    connected: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.append(writer)
        await reader.read()  # reads the protocol header, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield msgspec.structs.replace(settings, amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/"), connected
    finally:
        for writer in connected:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_stop_while_the_broker_does_not_answer_ends_the_worker_at_once(settings: Settings) -> None:
    """A broker that takes the connection and then says nothing holds the handshake, and the queues'
    declarations, for as long; a stop asked for meanwhile (SIGTERM) ends them, not the broker."""
    stop = asyncio.Event()
    policy = SendPolicy(concurrency=10)
    async with silent_broker(settings) as (silent, connected):
        worker = asyncio.create_task(run_workers(silent, gateways=["sandbox"], status=True, policy=policy, stop=stop))
        try:
            await until(lambda: connected, within=5)
            await asyncio.sleep(1.0)
            assert not worker.done()  # the handshake hangs
            stop.set()
            await asyncio.wait_for(worker, 3)  # before: for as long as the broker kept silent
        finally:
            worker.cancel()
