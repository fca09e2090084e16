"""JSON logs at debug level, fed every secret and phone shape through the receiver (aiohttp's access and error
loggers included), structlog events and the standard library's loggers: no line holds one of them."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import aio_pika
import pytest
import redis.asyncio as aioredis
import structlog
from aiohttp.test_utils import TestClient, TestServer

from smsfleet.logs import configure
from smsfleet.senders import Sender
from smsfleet.settings import Settings
from smsfleet.topology import Names
from webhooks import Receiver, build_app
from webhooks.guard import QuietLog, QuietServerErrors

from .conftest import BARE, RAPPORTO, create, path_of

PASSWORD = "Very-Secret-Pa55word"
API_KEY = "k3y-ABCDEF0123456789"
SECRETS = [PASSWORD, API_KEY, "pw-secret-rapporto"]
PHONES = [
    "79161234567",
    "+79161234567",
    "phone:79161234567",
    "+7 916 123-45-67",
    "8 (916) 123-45-67",
    "+7 (916) 123 45 67",
    "8-916-123-45-67",
    "%2B79161234567",
]
#: any writing of the number but its last 4 digits: 916, then 123, whatever is between them
PHONE_LEFT = re.compile(r"916[\s\-()%2B+]*123")


def leaks(text: str, secrets: list[str]) -> list[str]:
    found = [s for s in secrets if s in text]
    found += [p for p in PHONES if p in text]
    return found + PHONE_LEFT.findall(text)


async def test_no_secret_or_phone_reaches_any_log_line(
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender = await create(redis, names, RAPPORTO)
    for found in logging.getLogger("aiohttp.server").filters:  # a fresh log budget for 127.0.0.1
        if isinstance(found, QuietServerErrors):
            monkeypatch.setattr(found, "quiet", QuietLog(20))
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)  # here, not in a fixture: pytest sets its own between set-up and call
    configure("json", "debug")
    try:
        await feed_the_receiver(settings, sender)
        feed_the_loggers(sender)
    finally:
        configure("console", "warning")

    text = log.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON event
    loggers = {line.get("logger") for line in lines}
    assert {"aiohttp.access", "aiohttp.server", "aiohttp.web", "aio_pika"} <= loggers, loggers
    events = {line["event"] for line in lines}
    assert {"callback.stored", "request.rejected", "http.bad_request", "sender.checked", "sms.queued"} <= events
    decoded = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    for seen in (text, decoded):
        assert leaks(seen, [*SECRETS, sender.webhook_token]) == []
    assert "…4567" in decoded  # the last 4 digits stay, to tell numbers apart
    assert not [line for line in lines if line["event"] == "request.rejected" and "exception" in line]


async def feed_the_receiver(settings: Settings, sender: Sender) -> None:
    url = path_of(sender)
    # aiohttp's default access log on, as a plain AppRunner has it: it must be redacted as well
    async with TestClient(TestServer(build_app(Receiver(settings, rapporto_ips=("127.0.0.1",))))) as client:
        for phone in PHONES:
            await client.get(f"{BARE}?clientId={phone}&message=STOP&psw={PASSWORD}&shortNumber=svc-17")
            await client.get(f"{url}&clientId={phone}&message=code%20for%20{phone}")
            await client.post(url, data=f"clientId={phone}&message=STOP&api_key={API_KEY}")
            await client.post(f"{url}&x=1", json={"sourceAddr": phone, "transactionId": "1", "message": phone})
            await client.get(f"{url}x&apikey={API_KEY}&phone={phone}")  # a bad token: a rejection line
        # over aiohttp's 8,190-byte request line: aiohttp quotes the first 100 bytes of it
        await client.get(f"{url}&password={PASSWORD}&clientId=79161234567&pad={'x' * 9000}")
        await client.get(f"/smslistener/listen_type/sms_nope?token={sender.webhook_token}&to=+79161234567")
        await client.post(url, data=b"[" * 100_000, headers={"Content-Type": "application/json"})


def feed_the_loggers(sender: Sender) -> None:
    events = structlog.get_logger("test.leaks")
    events.info(
        "sender.checked",
        auth=PASSWORD,
        credentials={"login": "acme", "password": PASSWORD},
        x_api_key=API_KEY,
        authorization=f"Bearer {API_KEY}",
        my_password=PASSWORD,
        smtp_secret=PASSWORD,
        text=f"psw={PASSWORD}&password={PASSWORD}&token={sender.webhook_token}&api_key={API_KEY}&apikey={API_KEY}",
        more=f"secret={PASSWORD}; auth={PASSWORD}; Authorization: Bearer {API_KEY}",
        url=f"amqp://acme:{PASSWORD}@broker:5672/",
        phones=PHONES,
        note=" / ".join(PHONES),
    )
    events.debug("sms.queued", to="+79161234567", text="call 8 (916) 123-45-67 or phone:79161234567")
    try:
        raise ValueError("provider said: bad password=" + PASSWORD + " for 79161234567")
    except ValueError:
        events.exception("sms.failed")
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web", "aio_pika"):
        std = logging.getLogger(name)
        std.warning("GET /x?token=%s&psw=%s phone:%s", sender.webhook_token, PASSWORD, "+7 916 123-45-67")
        std.error("Error handling request", exc_info=RuntimeError(f"token={sender.webhook_token} 79161234567"))
