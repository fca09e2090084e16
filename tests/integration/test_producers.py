"""The Publisher and bulk publishing against the real RabbitMQ and Redis.

What reached the broker is counted on the broker (passive queue declarations), never taken from the
publisher's own report.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from producers import (
    InvalidJobId,
    NotConfirmed,
    Publisher,
    PublishError,
    UnknownSender,
    Unroutable,
    publish_file,
    sender_route,
)
from smsfleet.contracts import SendJob
from smsfleet.senders import SenderCache, SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names

SENDERS = {"s1": "smsc", "s2": "infobip", "s3": "sandbox"}
GATEWAYS = sorted(set(SENDERS.values()))
DOCS: list[dict[str, Any]] = [
    {"id": "s1", "gateway": "smsc", "accounts": ["acme"], "settings": {"login": "l", "password": "p"}},
    {
        "id": "s2",
        "gateway": "infobip",
        "accounts": ["acme"],
        "settings": {"url": "https://x.api.infobip.com", "api_token": "t"},
    },
    {"id": "s3", "gateway": "sandbox", "accounts": ["acme", "beta"]},
]


def job(i: int | str, sender: str = "s1", originator: str | None = None) -> SendJob:
    return SendJob(
        id=f"j{i}", sender=sender, account="acme", to="+79161234567", text=f"hello {i}", originator=originator
    )


def line(i: int, sender: str, **fields: object) -> str:
    doc = {"id": f"j{i}", "sender": sender, "account": "acme", "to": f"+7916{i:07d}", "text": f"hi {i}"}
    return json.dumps({k: v for k, v in (doc | fields).items() if v is not None})


async def counts(amqp: AbstractRobustConnection, names: Names, expected: dict[str, int]) -> dict[str, int]:
    """Messages in each gateway's send queue, read from the broker until they match twice running (or 15s)."""
    async with amqp.channel() as channel:
        seen: dict[str, int] = {}
        matched = 0
        for _ in range(75):
            seen = {}
            for gateway in expected:
                queue = await channel.declare_queue(names.send_queue(gateway), passive=True)
                assert queue.declaration_result.message_count is not None
                seen[gateway] = queue.declaration_result.message_count
            matched = matched + 1 if seen == expected else 0
            if matched == 2:
                break
            await asyncio.sleep(0.2)
        return seen


async def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def registry(redis: aioredis.Redis, names: Names) -> SenderRegistry:
    registry = SenderRegistry(redis, names)
    for doc in DOCS:
        await registry.create(parse_sender(doc))
    return registry


@pytest.fixture
async def cache(registry: SenderRegistry) -> AsyncIterator[SenderCache]:
    cache = SenderCache(registry)
    await cache.start()
    yield cache
    await cache.stop()


@pytest.fixture
async def publisher(amqp: AbstractRobustConnection, names: Names, cache: SenderCache) -> AsyncIterator[Publisher]:
    async with Publisher(amqp, names, sender_route(cache), timeout=10) as publisher:
        yield publisher


# the two things a publish does


async def test_a_published_job_is_a_persistent_json_message_keyed_by_gateway_and_sender(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names
) -> None:
    sent = job(1, "s2", originator="ACME")
    await publisher.publish(sent)
    async with amqp.channel() as channel:
        queue = await channel.get_queue(names.send_queue("infobip"))
        got = await queue.get(timeout=5)
        await got.ack()
    assert got.routing_key == "infobip.s2"
    assert got.exchange == names.send_exchange
    assert got.message_id == "j1"
    assert got.content_type == "application/json"
    assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert msgspec.json.decode(got.body, type=SendJob) == sent


@pytest.mark.slow
async def test_ten_thousand_jobs_from_a_file_are_all_confirmed_and_queued_per_gateway(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    senders = list(SENDERS)
    with path.open("w") as file:
        for i in range(10_000):
            file.write(line(i, senders[i % 3], meta={"campaign": "c1"}) + "\n")
    progress: list[tuple[int, int]] = []

    summary = await publish_file(publisher, path, progress=lambda done, total: progress.append((done, total)))

    assert summary.rejected == []
    assert summary.published == 10_000
    assert progress[0] == (0, 10_000)
    assert progress[-1] == (10_000, 10_000)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert await counts(amqp, names, {"smsc": 3334, "infobip": 3333, "sandbox": 3333}) == {
        "smsc": 3334,
        "infobip": 3333,
        "sandbox": 3333,
    }


async def test_bad_lines_are_reported_with_number_and_reason_and_the_rest_is_published(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.ndjson"
    path.write_text(
        "\n".join(
            [
                line(1, "s1"),  # 1
                '{"id": "j2", "sender":',  # 2: malformed
                "",  # 3: blank
                line(4, "s2", text=None),  # 4: missing field
                line(5, "s1", to="+7000"),  # 5: bad phone
                line(6, "s3", text=" "),  # 6: empty text
                line(7, "nobody"),  # 7: unknown sender
                line(8, "s2"),  # 8
                line(9, "s3"),  # 9
            ]
        )
        + "\n"
    )
    summary = await publish_file(publisher, path)

    assert summary.published == 3
    assert [(n, reason.split(":")[0]) for n, reason in summary.rejected] == [
        (2, "malformed"),
        (4, "schema"),
        (5, "bad_phone"),
        (6, "empty_text"),
        (7, "unknown_sender"),
    ]
    reasons = dict(summary.rejected)
    assert "`text`" in reasons[4]
    assert "+7000" in reasons[5]
    assert "'nobody'" in reasons[7]
    assert await counts(amqp, names, {"smsc": 1, "infobip": 1, "sandbox": 1}) == {
        "smsc": 1,
        "infobip": 1,
        "sandbox": 1,
    }


async def test_a_csv_file_with_local_phones_and_meta_columns(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text(
        "id,sender,account,to,text,originator,meta.campaign\n"
        'c1,s1,acme,8 (916) 123-45-67,"Hello, world",,spring\n'
        "c2,s1,acme,not a phone,Hi,,spring\n"
    )
    summary = await publish_file(publisher, path, default_region="RU")

    assert summary.published == 1
    assert [n for n, _ in summary.rejected] == [3]
    async with amqp.channel() as channel:
        got = await (await channel.get_queue(names.send_queue("smsc"))).get(timeout=5)
        await got.ack()
    body = json.loads(got.body)
    assert body["to"] == "+79161234567"
    assert body["meta"] == {"campaign": "spring"}
    assert "originator" not in body or body["originator"] is None


async def test_publish_many_reports_every_job_in_input_order_from_an_async_iterable(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names
) -> None:
    async def jobs() -> AsyncIterator[SendJob]:
        for i, sender in enumerate(["s1", "ghost", "s2", "s3", "ghost", "s1"]):
            yield job(i, sender)

    results = await publisher.publish_many(jobs())
    assert [(r.job.id, r.ok) for r in results] == [
        ("j0", True),
        ("j1", False),
        ("j2", True),
        ("j3", True),
        ("j4", False),
        ("j5", True),
    ]
    assert all(isinstance(r.error, UnknownSender) for r in results if not r.ok)
    assert await counts(amqp, names, {"smsc": 2, "infobip": 1, "sandbox": 1}) == {
        "smsc": 2,
        "infobip": 1,
        "sandbox": 1,
    }


async def test_a_stream_is_read_only_as_publish_slots_free_up(amqp: AbstractRobustConnection, names: Names) -> None:
    pulled = confirmed = ahead = 0

    def jobs() -> Iterator[tuple[int, SendJob]]:
        nonlocal pulled, ahead
        for i in range(500):
            pulled += 1
            ahead = max(ahead, pulled - confirmed)
            yield i, job(i)

    def done(_tag: int, _job: SendJob, error: PublishError | None) -> None:
        nonlocal confirmed
        assert error is None
        confirmed += 1

    async with Publisher(amqp, names, SENDERS.get, max_in_flight=8) as publisher:
        await publisher.publish_stream(jobs(), done)
    assert confirmed == 500
    assert ahead <= 8


# failures are loud


async def test_a_gateway_without_its_queue_is_unroutable_never_silently_dropped(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names
) -> None:
    async with amqp.channel() as channel:
        await channel.queue_delete(names.send_queue("infobip"))
    with pytest.raises(Unroutable, match=r"infobip\.s2"):
        await publisher.publish(job(1, "s2"))
    results = await publisher.publish_many([job(2, "s1"), job(3, "s2"), job(4, "s3")])
    assert [type(r.error).__name__ if r.error else "ok" for r in results] == ["ok", "Unroutable", "ok"]
    await publisher.publish(job(5, "s1"))  # the channel survives a returned message


async def test_concurrent_publishes_of_one_job_id_each_get_their_own_outcome(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names
) -> None:
    """aiormq matches a returned message to its publish by message_id (= job id); publishes of one id
    in flight together must not swap outcomes, or one unroutable copy would look confirmed."""
    async with amqp.channel() as channel:
        await channel.queue_delete(names.send_queue("infobip"))
    outcomes = await asyncio.gather(*(publisher.publish(job("same", "s2")) for _ in range(5)), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["Unroutable"] * 5

    await asyncio.gather(*(publisher.publish(job("twice", "s1")) for _ in range(3)))
    assert await counts(amqp, names, {"smsc": 3}) == {"smsc": 3}


async def test_a_job_id_over_128_bytes_raises_before_anything_is_sent(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names
) -> None:
    """128 characters, but 512 bytes: no AMQP message id can carry it (a job built by hand skips decode_job)."""
    long_id = "\U0001f600" * 128
    with pytest.raises(InvalidJobId, match="512 bytes"):
        await publisher.publish(SendJob(id=long_id, sender="s1", account="acme", to="+79161234567", text="hi"))
    assert await counts(amqp, names, dict.fromkeys(GATEWAYS, 0)) == dict.fromkeys(GATEWAYS, 0)


async def test_an_unknown_sender_raises_before_anything_is_sent(
    publisher: Publisher, amqp: AbstractRobustConnection, names: Names
) -> None:
    with pytest.raises(UnknownSender, match="'ghost'") as caught:
        await publisher.publish(job(1, "ghost"))
    assert caught.value.job_id == "j1"
    assert caught.value.code == "unknown_sender"
    assert isinstance(caught.value, PublishError)
    assert await counts(amqp, names, dict.fromkeys(GATEWAYS, 0)) == dict.fromkeys(GATEWAYS, 0)


async def test_a_nack_from_the_broker_is_not_confirmed(amqp: AbstractRobustConnection, names: Names) -> None:
    full = f"{names.ns}.full"
    async with amqp.channel() as channel:
        # a classic queue enforces its length at once (a quorum queue only after it has gone over)
        queue = await channel.declare_queue(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        await queue.bind(names.send_exchange, routing_key="full.*")
        try:
            async with Publisher(amqp, names, lambda _: "full") as publisher:
                with pytest.raises(NotConfirmed, match="nack") as caught:
                    await publisher.publish(job(1))
                assert caught.value.why == "nack"
        finally:
            await channel.queue_delete(full)


async def test_publishes_that_outlive_the_timeout_are_not_confirmed_and_the_publisher_carries_on(
    amqp: AbstractRobustConnection, names: Names
) -> None:
    async with Publisher(amqp, names, SENDERS.get, timeout=0.0005) as hasty:
        results = await hasty.publish_many([job(i) for i in range(300)])
    errors = [r.error for r in results if r.error is not None]
    assert errors, "a 0.5 ms timeout should catch some of 300 publishes"
    assert all(isinstance(e, NotConfirmed) and e.why == "timeout" for e in errors)

    async with Publisher(amqp, names, SENDERS.get) as patient:
        results = await patient.publish_many([job(f"after-{i}") for i in range(100)])
    assert all(r.ok for r in results)


async def test_a_publish_cancelled_by_its_caller_stays_cancelled(publisher: Publisher) -> None:
    """Only the publisher's own deadline turns a cancel into NotConfirmed; the caller's stays a cancel."""
    task = asyncio.create_task(publisher.publish(job(1)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.0001):
            await publisher.publish(job(2))
    await publisher.publish(job(3))


# the sender registry


async def test_a_sender_created_after_start_is_picked_up_without_restart(
    publisher: Publisher, registry: SenderRegistry, cache: SenderCache, amqp: AbstractRobustConnection, names: Names
) -> None:
    with pytest.raises(UnknownSender):
        await publisher.publish(job(1, "late"))
    await registry.create(parse_sender({"id": "late", "gateway": "sandbox", "accounts": ["acme"]}))
    await wait_for(lambda: cache.get("late") is not None, seconds=5)
    await publisher.publish(job(2, "late"))
    assert await counts(amqp, names, {"sandbox": 1}) == {"sandbox": 1}


async def test_connect_opens_and_closes_everything_from_settings(
    settings: Settings, registry: SenderRegistry, amqp: AbstractRobustConnection, names: Names
) -> None:
    async with Publisher.connect(settings) as publisher:
        assert (await publisher.publish_many([job(1, "s1"), job(2, "s3"), job(3, "nobody")]))[2].error
        connection = publisher.connection
    assert connection.is_closed
    assert await counts(amqp, names, {"smsc": 1, "sandbox": 1}) == {"smsc": 1, "sandbox": 1}


# the connection


async def test_a_publish_during_a_reconnect_waits_for_the_channel_and_goes_through(
    amqp_url: str, amqp: AbstractRobustConnection, names: Names
) -> None:
    connection = await aio_pika.connect_robust(amqp_url, reconnect_interval=0.2)
    try:
        async with Publisher(connection, names, SENDERS.get, timeout=15) as publisher:
            await publisher.publish(job(0))
            transport = connection.transport
            assert transport is not None
            await transport.connection.close()  # the socket is gone; the robust connection reconnects
            results = await publisher.publish_many([job(i) for i in range(1, 101)])
            assert [r.error for r in results if not r.ok] == []
    finally:
        await connection.close()
    assert await counts(amqp, names, {"smsc": 101}) == {"smsc": 101}


async def test_a_publish_on_a_closed_connection_fails_at_once(
    amqp_url: str, amqp: AbstractRobustConnection, names: Names
) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    publisher = Publisher(connection, names, SENDERS.get, timeout=30)
    await publisher.start()
    await connection.close()
    with pytest.raises(NotConfirmed, match="closed") as caught:
        await asyncio.wait_for(publisher.publish(job(1)), 5)
    assert caught.value.why == "closed"


async def test_a_namespace_without_topology_is_refused_at_start(amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        with pytest.raises(Unroutable, match="topology declare"):
            await Publisher(connection, Names("nothing-declared-here"), SENDERS.get).start()
    finally:
        await connection.close()
