"""`smsfleet dead list|show|requeue|purge` and `smsfleet.deadletters` on the real broker.

Dead letters are made the ways production makes them: parked by a worker (`Runtime.dead_letter`), dead-lettered
by the broker after the delivery limit (a consumer that gives the message back until the quorum queue gives
up on it), or unroutable on the internal exchange.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aio_pika
import msgspec
import prometheus_client
import pytest
import redis.asyncio as aioredis

from cli import main
from smsfleet.deadletters import DeadQueue
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import DELIVERY_LIMIT, Names, message
from tests.integration.test_send_worker import fleet, until
from workers import Runtime
from workers.ledger import Ledger

Connection = aio_pika.abc.AbstractRobustConnection


def job(job_id: str, sender: str = "sb") -> bytes:
    return msgspec.json.encode({"id": job_id, "sender": sender, "account": "acme", "to": "+79161234567", "text": "hi"})


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, amqp_url: str, namespace: str) -> str:
    monkeypatch.setenv("SMSFLEET_AMQP_URL", amqp_url)
    monkeypatch.setenv("SMSFLEET_NAMESPACE", namespace)
    return namespace


@pytest.fixture
async def rt(settings: Settings, amqp: Connection, redis: aioredis.Redis) -> AsyncIterator[Runtime]:
    """A worker's runtime: its `dead_letter` parks messages as the workers do."""
    del amqp, redis  # the topology, and the clean-up of both
    async with Runtime.open(settings) as runtime:
        yield runtime


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`smsfleet dead ...` as a user runs it (its own event loop, in a thread): its exit status and output."""
    capsys.readouterr()  # what the test printed before (a worker's logs) is not the command's
    code = await asyncio.to_thread(main, ["dead", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def poison(amqp: Connection, names: Names, body: bytes, key: str = "sandbox.sb") -> None:
    """Publish a job and give it back until its queue's delivery limit dead-letters it (as a crashing worker)."""
    gateway = key.split(".", maxsplit=1)[0]
    parked = await depth(amqp, names.dead_queue)
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(names.send_exchange)
        await exchange.publish(message(body, message_id=msgspec.json.decode(body)["id"]), routing_key=key)
        queue = await channel.get_queue(names.send_queue(gateway))
        for _ in range(DELIVERY_LIMIT + 1):
            msg = await queue.get(timeout=5)
            await msg.nack(requeue=True)
        assert await queue.get(fail=False) is None
    await until_depth(amqp, names.dead_queue, parked + 1)


async def until_depth(amqp: Connection, queue: str, n: int) -> None:
    async def reached() -> bool:
        return await depth(amqp, queue) == n

    await until(reached, within=5)


async def depth(amqp: Connection, queue: str) -> int:
    async with amqp.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def test_list_and_show_read_every_kind_of_dead_letter_and_leave_it_there(
    env: str, capsys: pytest.CaptureFixture[str], amqp: Connection, names: Names, rt: Runtime
) -> None:
    await rt.dead_letter(b'{"id": "bad"', "malformed", "not JSON", "report.smsc")
    await rt.dead_letter(job("j-nobody", "nobody"), "unknown_sender", "no sender 'nobody'", "smsc.nobody", "j-nobody")
    await poison(amqp, names, job("j-poison"))
    async with amqp.channel() as channel:
        internal = await channel.get_exchange(names.internal_exchange)
        await internal.publish(message(b"{}", message_id="stray"), routing_key="nowhere.x")
    await until_depth(amqp, names.dead_queue, 4)

    for _ in range(2):  # reading twice: nothing is lost
        code, out, _ = await cli(capsys, "list", "--json")
        assert code == 0
        listing = json.loads(out)
        assert (listing["total"], listing["read"]) == (4, 4)
    assert listing["by_reason"] == {"malformed": 1, "unknown_sender": 1, "delivery_limit": 1, "unroutable": 1}
    rows = {m["id"]: m for m in listing["messages"]}
    assert rows["j-poison"] | {"at": None} == {
        "id": "j-poison", "reason": "delivery_limit", "gateway": "sandbox", "routing_key": "sandbox.sb", "at": None,
        "count": 1,
    }  # fmt: skip
    assert rows["j-poison"]["at"]
    assert (rows["j-nobody"]["reason"], rows["j-nobody"]["gateway"]) == ("unknown_sender", "smsc")
    malformed = next(m for m in listing["messages"] if m["reason"] == "malformed")
    assert (malformed["routing_key"], malformed["gateway"]) == ("report.smsc", "smsc")
    assert await depth(amqp, names.dead_queue) == 4

    code, out, _ = await cli(capsys, "show", "j-poison", "--json")
    (shown,) = json.loads(out)
    assert shown["body"] == msgspec.json.decode(job("j-poison"))
    assert shown["exchange"] == names.send_exchange
    assert shown["source_queue"] == names.send_queue("sandbox")
    assert shown["headers"]["x-first-death-reason"] == "delivery_limit"
    code, out, _ = await cli(capsys, "show", "j-nobody")
    assert code == 0
    assert "no sender 'nobody'" in out
    assert '"sender": "nobody"' in out

    code, out, _ = await cli(capsys, "list")
    assert code == 0
    assert "4 in" in out
    assert "delivery_limit 1" in out
    code, _, err = await cli(capsys, "show", "j-missing")
    assert code == 2
    assert "no message 'j-missing'" in err
    assert await depth(amqp, names.dead_queue) == 4


async def test_requeue_publishes_home_with_the_original_id_and_body_then_removes_it(
    env: str, capsys: pytest.CaptureFixture[str], amqp: Connection, names: Names, rt: Runtime
) -> None:
    await poison(amqp, names, job("j1"))
    await rt.dead_letter(job("j2", "nobody"), "unknown_sender", "no sender", "smsc.nobody", "j2")
    async with amqp.channel() as channel:
        internal = await channel.get_exchange(names.internal_exchange)
        await internal.publish(message(b"{}", message_id="stray"), routing_key="nowhere.x")
    await until_depth(amqp, names.dead_queue, 3)

    code, out, _ = await cli(capsys, "requeue", "--reason", "delivery_limit", "--json")
    assert (code, json.loads(out)["requeued"]) == (0, ["j1"])
    async with amqp.channel() as channel:
        queue = await channel.get_queue(names.send_queue("sandbox"))
        back = await queue.get(timeout=5)
        assert (back.message_id, back.body, back.routing_key) == ("j1", job("j1"), "sandbox.sb")
        assert not {k for k in back.headers or {} if k.startswith(("x-death", "x-first-death", "x-smsfleet"))}
        await back.ack()

    code, out, _ = await cli(capsys, "requeue", "j2")
    assert (code, out) == (0, "requeued 1\n")
    async with amqp.channel() as channel:
        queue = await channel.get_queue(names.send_queue("smsc"))
        back = await queue.get(timeout=5)
        assert (back.message_id, back.body) == ("j2", job("j2", "nobody"))
        await back.ack()

    # an unroutable message has no home: it stays, and the command says so
    code, out, _ = await cli(capsys, "requeue", "--all")
    assert code == 1
    assert "not requeued stray: no exchange of ours takes routing key 'nowhere.x'" in out
    assert await depth(amqp, names.dead_queue) == 1


async def test_identical_copies_are_requeued_once(
    env: str, capsys: pytest.CaptureFixture[str], amqp: Connection, names: Names
) -> None:
    """A crash between a requeue's publish and its ack leaves two copies; the next requeue sends one."""
    await poison(amqp, names, job("twice"))
    await poison(amqp, names, job("twice"))
    code, out, _ = await cli(capsys, "requeue", "twice", "--json")
    assert code == 0
    assert json.loads(out) | {"unread": 0} == {"requeued": ["twice"], "duplicates": 1, "failed": [], "unread": 0}
    assert await depth(amqp, names.send_queue("sandbox")) == 1
    assert await depth(amqp, names.dead_queue) == 0


async def test_a_requeued_job_that_was_sent_already_is_not_sent_again(  # noqa: PLR0917 - fixtures
    env: str,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    amqp: Connection,
    names: Names,
    redis: aioredis.Redis,
) -> None:
    """Requeue keeps the job id, so the job's record applies: j1 was accepted by the (sandbox) provider before
    a copy of it was dead-lettered; requeued, it is not sent again, while j2, never sent, is."""
    doc = {"id": "sb", "gateway": "sandbox", "accounts": ["acme"], "settings": {"latency_ms": 0, "await_delivery_s": 1}}
    await SenderRegistry(redis, names).create(parse_sender(doc))
    ledger = Ledger(redis, names)

    def sent() -> float:
        labels = {"gateway": "sandbox", "outcome": "ok"}
        return prometheus_client.REGISTRY.get_sample_value("smsfleet_provider_requests_total", labels) or 0.0

    async with fleet(settings, ["sandbox"]):
        async with amqp.channel() as channel:
            exchange = await channel.get_exchange(names.send_exchange)
            await exchange.publish(message(job("j1"), message_id="j1"), routing_key="sandbox.sb")
        await until(lambda: ledger.get("j1"))
    assert (await ledger.record("j1")).state in ("accepted", "delivered")
    await poison(amqp, names, job("j1"))
    await poison(amqp, names, job("j2"))
    before = sent()

    seen: list[str] = []

    async def collect(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append(msgspec.json.decode(msg.body)["job_id"])
        await msg.ack()

    async with amqp.channel() as channel:
        events = await channel.declare_queue(exclusive=True)
        await events.bind(names.events_exchange, "status.*")
        await events.consume(collect)
        code, out, _ = await cli(capsys, "requeue", "--all", "--json")
        assert (code, sorted(json.loads(out)["requeued"])) == (0, ["j1", "j2"])
        async with fleet(settings, ["sandbox"]):
            await until(lambda: "j1" in seen and "j2" in seen)  # j1: its last event again; j2: sent
    assert sent() - before == 1
    assert [e["state"] for e in await ledger.history("j1")].count("accepted") == 1
    assert await depth(amqp, names.dead_queue) == 0


async def test_purge_by_reason_and_everything(
    env: str, capsys: pytest.CaptureFixture[str], amqp: Connection, names: Names, rt: Runtime
) -> None:
    for i in range(3):
        await rt.dead_letter(job(f"s{i}"), "schema", "bad", "sandbox.sb", f"s{i}")
    await poison(amqp, names, job("p"))
    assert await cli(capsys, "purge", "--reason", "schema") == (0, "deleted 3\n", "")
    assert await depth(amqp, names.dead_queue) == 1
    assert await cli(capsys, "purge", "--yes", "--json") == (0, '{\n  "deleted": 1\n}\n', "")
    assert await depth(amqp, names.dead_queue) == 0


async def test_a_message_read_often_is_replaced_by_a_fresh_copy(amqp: Connection, names: Names) -> None:
    """Every read returns the messages to the queue, which counts a delivery; before a default delivery limit
    (RabbitMQ 4) could drop one, it is replaced by a copy with the same id, body and dead-letter headers."""
    await poison(amqp, names, job("worn"))
    dead = DeadQueue(amqp, names, refresh_at=1)
    counts = []
    for _ in range(4):
        (letter,) = (await dead.listing()).letters
        counts.append(letter.headers["x-delivery-count"])
        assert (letter.id, letter.reason, letter.body) == ("worn", "delivery_limit", job("worn"))
    assert counts == [0, 1, 0, 1]
    assert await depth(amqp, names.dead_queue) == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["requeue"], "ids, --reason R, or --all"),
        (["requeue", "--all", "j1"], "--all takes every message"),
        (["purge"], "or --yes for every message"),
        (["list", "--limit", "0"], "positive number"),
        (["show"], "the following arguments are required: id"),
        (["drop"], "invalid choice"),
    ],
)
def test_mistakes(env: str, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code = main(["dead", *argv])
    _, err = capsys.readouterr()
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_a_namespace_without_topology(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dead", "list"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "smsfleet topology declare" in err
    assert len(err.strip().splitlines()) == 1
