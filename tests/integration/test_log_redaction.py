"""The log of a real run, in JSON as in production, holds no secret and no full phone number."""

from __future__ import annotations

import io
import json
import sys

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from smsfleet.contracts import SendJob
from smsfleet.logs import configure
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.fakes.smsc import FakeSmsc
from tests.integration.test_send_worker import fleet, until
from workers.ledger import Ledger

SECRET = "Very-Secret-Pa55word"
PHONES = ["+79161234567", "+79031112233", "+79169876543"]


async def test_a_run_logs_neither_secrets_nor_phone_numbers(
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    configure("json", "debug")
    try:
        async with FakeSmsc("acme", SECRET, initial_status=1) as fake:
            fake.fail_next(1, 7)  # one permanent refusal: its provider text is logged too
            settings_doc = {"login": "acme", "password": SECRET, "await_delivery_s": 1, "base_url": fake.url}
            doc = {"id": "s1", "gateway": "smsc", "accounts": ["acme"], "settings": settings_doc}
            await SenderRegistry(redis, names).create(parse_sender(doc))
            ledger = Ledger(redis, names)
            async with fleet(settings, ["smsc"]), amqp.channel() as channel:
                exchange = await channel.get_exchange(names.send_exchange)
                for i, phone in enumerate(PHONES):
                    job = SendJob(id=f"log-{i}", sender="s1", account="acme", to=phone, text=f"code for {phone}")
                    await exchange.publish(message(msgspec.json.encode(job)), routing_key="smsc.s1")

                async def finished() -> bool:
                    return all([(await ledger.get(f"log-{i}")).get("phase") == "final" for i in range(len(PHONES))])

                await until(finished)
    finally:
        configure("console", "warning")
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    events = {line["event"] for line in lines}
    assert {"sms.sent", "sms.rejected", "recheck.final"} <= events, events
    text = out.getvalue()
    assert SECRET not in text
    for phone in PHONES:
        assert phone not in text
        assert phone.lstrip("+") not in text
