"""`smsfleet send-test`: one test SMS through the normal send queue, followed to its final state."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aio_pika
import pytest
import redis.asyncio as aioredis

from cli import main
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.chaos.harness import fleet as harness_fleet
from tests.samples import sample_sender
from workers import SendPolicy


def sandbox_fleet(settings: Settings) -> contextlib.AbstractAsyncContextManager[object]:
    """The sandbox's send and status roles in this process (`tests.chaos.harness.fleet`)."""
    return harness_fleet(settings, ["sandbox"], SendPolicy(concurrency=10))


@pytest.fixture
async def env(
    settings: Settings,
    amqp: aio_pika.abc.AbstractRobustConnection,
    redis: aioredis.Redis,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = SenderRegistry(redis, names)
    fast = {"latency_ms": 0, "await_delivery_s": 1}
    await registry.create(parse_sender(sample_sender("sandbox", "sb", settings=fast, verified_phones=["+79161234567"])))
    await registry.create(parse_sender(sample_sender("sandbox", "lost", settings={**fast, "delivered_rate": 0.0})))
    for key, value in (("AMQP_URL", settings.amqp_url), ("REDIS_URL", settings.redis_url), ("NAMESPACE", names.ns)):
        monkeypatch.setenv(f"SMSFLEET_{key}", value)


async def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`smsfleet send-test ARGS` in a thread (it runs its own event loop): exit status, stdout, stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["send-test", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("env")
async def test_a_test_send_goes_through_the_queue_and_its_states_are_printed(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with sandbox_fleet(settings):
        code, out, _ = await run(capsys, "sb", "--text", "hello from the CLI", "--timeout", "20")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0].startswith("queued test job test-")
        assert "to +79161234567 through sb" in lines[0]  # the sender's verified phone, when --to is left out
        assert [line.split()[1] for line in lines[1:]] == ["accepted", "delivered"]
        # another final state: exit 3, the record as JSON
        code, out, _ = await run(capsys, "lost", "--to", "+7 916 765-43-21", "--timeout", "20", "--json")
        assert code == 3
        shown = json.loads(out.splitlines()[-1])
        assert (shown["state"], shown["final"], shown["sender"]) == ("undelivered", True, "lost")
        assert [h["state"] for h in shown["history"]] == ["accepted", "undelivered"]


@pytest.mark.usefixtures("env")
async def test_no_worker_means_a_timeout_and_mistakes_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run(capsys, "sb", "--timeout", "0.5")
    assert code == 4
    assert "no final state within 0.5 s (last: not taken yet)" in out
    for args, needle in (
        (["nope", "--to", "+79161234567"], "no sender 'nope'"),
        (["sb", "--to", "+79169999999"], "--to: the sender only sends to its verified phones: +79161234567"),
        (["lost"], "give --to NUMBER"),
        (["lost", "--to", "12"], "--to: phone '12' is not"),
        (["lost", "--to", "+79161234567", "--text", " "], "--text: this field is required"),
        (["sb", "--timeout", "0"], "expected a number of seconds above 0"),
    ):
        code, out, err = await run(capsys, *args)
        assert (code, out) == (2, ""), args
        assert err.count("\n") == 1, err
        assert needle in err, (args, err)
