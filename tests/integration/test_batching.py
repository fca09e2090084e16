"""What the send path batches, on the real Redis and RabbitMQ: Redis calls (Lua scripts and plain commands)
pipelined per event-loop turn, and status rechecks collected into one delayed message per sender."""

from __future__ import annotations

import asyncio

import aio_pika
import msgspec
import redis.asyncio as aioredis
from aiormq.exceptions import ChannelInvalidStateError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from smsfleet.topology import Names
from workers.delays import Delayer
from workers.pipelining import AutoPipeline
from workers.rechecks import Recheck, RecheckBatcher

_ECHO = """
if ARGV[1] == 'boom' then return redis.error_reply('boom') end
return redis.call('INCR', KEYS[1]) .. ':' .. ARGV[1]
"""


class CountingPipeline(AutoPipeline):
    """The real pipeline, counting the pipelines it sends."""

    sent = 0

    async def _execute(self, calls: list) -> None:  # type: ignore[type-arg]
        self.sent += 1
        await super()._execute(calls)


async def test_concurrent_script_calls_share_one_pipeline_and_each_gets_its_own_reply(
    redis: aioredis.Redis, names: Names
) -> None:
    script = redis.register_script(_ECHO)
    pipeline = CountingPipeline(redis)
    key = names.redis_key("counter")
    replies = await asyncio.gather(*(pipeline.run(script, [key], [f"c{i}"]) for i in range(200)))
    assert sorted(int(r.split(b":")[0]) for r in replies) == list(range(1, 201))
    assert [r.split(b":")[1] for r in replies] == [f"c{i}".encode() for i in range(200)]
    assert pipeline.sent == 1


async def test_plain_commands_share_the_turns_pipeline_in_call_order_and_reply_as_redis_py_does(
    redis: aioredis.Redis, names: Names
) -> None:
    script = redis.register_script(_ECHO)
    pipeline = CountingPipeline(redis)
    record = names.redis_key("record")
    await redis.hset(record, mapping={"phase": "accepted", "emitted": "0"})
    replies = await asyncio.gather(
        pipeline.command("HSET", record, "emitted", "1"),
        pipeline.command("HGETALL", record),
        pipeline.command("GET", names.redis_key("missing")),
        pipeline.run(script, [names.redis_key("counter")], ["x"]),
    )
    assert replies == [0, {b"phase": b"accepted", b"emitted": b"1"}, None, b"1:x"]
    assert pipeline.sent == 1


async def test_an_error_reaches_only_its_caller(redis: aioredis.Redis, names: Names) -> None:
    script = redis.register_script(_ECHO)
    pipeline = AutoPipeline(redis)
    key = names.redis_key("counter")
    replies = await asyncio.gather(
        *(pipeline.run(script, [key], [arg]) for arg in ("a", "boom", "b")), return_exceptions=True
    )
    assert isinstance(replies[1], ResponseError)
    assert [r.split(b":")[1] for r in (replies[0], replies[2])] == [b"a", b"b"]  # type: ignore[union-attr]


async def test_a_script_redis_forgot_is_loaded_again(redis: aioredis.Redis, names: Names) -> None:
    script = redis.register_script(_ECHO)
    pipeline = AutoPipeline(redis)
    key = names.redis_key("counter")
    await redis.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    replies = await asyncio.gather(*(pipeline.run(script, [key], [str(i)]) for i in range(5)))
    assert sorted(int(r.split(b":")[0]) for r in replies) == [1, 2, 3, 4, 5]


async def test_redis_unreachable_fails_every_caller_of_the_turn() -> None:
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    script = unreachable.register_script(_ECHO)
    pipeline = AutoPipeline(unreachable)
    replies = await asyncio.gather(*(pipeline.run(script, ["k"], ["x"]) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in replies), replies
    await unreachable.aclose()


async def _rechecks(channel: aio_pika.abc.AbstractChannel, names: Names, expected: int) -> list[Recheck]:
    queue = await channel.get_queue(names.status_queue, ensure=False)
    got: list[Recheck] = []
    for _ in range(100):
        while (msg := await queue.get(fail=False)) is not None:
            got.append(msgspec.json.decode(msg.body, type=Recheck))
            await msg.ack()
        if len(got) >= expected:
            break
        await asyncio.sleep(0.1)
    return got


async def test_rechecks_of_one_sender_travel_together_and_each_waiter_returns_when_its_batch_is_confirmed(
    amqp: aio_pika.abc.AbstractRobustConnection, names: Names
) -> None:
    async with amqp.channel(publisher_confirms=True) as channel:
        batcher = RecheckBatcher(Delayer(channel, names), "smsc", size=100)
        adds = [batcher.add("s1", f"j{i}", 1.0) for i in range(250)] + [batcher.add("s2", "other", 1.0)]
        await asyncio.gather(*adds)
        rechecks = await _rechecks(channel, names, expected=4)
    by_sender = {s: [r for r in rechecks if r.sender == s] for s in ("s1", "s2")}
    assert sorted(len(r.job_ids) for r in by_sender["s1"]) == [50, 100, 100]  # full batches go at once
    assert sorted(j for r in by_sender["s1"] for j in r.job_ids) == sorted(f"j{i}" for i in range(250))
    assert [r.job_ids for r in by_sender["s2"]] == [("other",)]
    assert all(r.gateway == "smsc" and r.attempt == 1 for r in rechecks)


async def test_a_batch_that_cannot_be_published_fails_each_of_its_waiters(
    amqp: aio_pika.abc.AbstractRobustConnection, names: Names
) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    await channel.close()
    batcher = RecheckBatcher(Delayer(channel, names), "smsc")
    replies = await asyncio.gather(*(batcher.add("s1", f"j{i}", 1.0) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ChannelInvalidStateError) for r in replies), replies
