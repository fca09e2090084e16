"""Infobip end to end: send and status workers in this process, on the real broker and Redis, fake Infobip (v3).

Infobip has no `await_delivery_s` setting; the class default (60 s) is shortened to 1 s in the first test, so
that the status worker's lookups (reports, then logs) run within it, and made an hour in the second, where
Infobip's pushes reach the real receiver: a delivery report to the URL each message carried, and inbound SMS
(several in one POST, Cyrillic among them), whose stop words suppress the numbers for every account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis

from gateways.infobip import InfobipGateway
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.suppression import SuppressionStore
from smsfleet.topology import Names
from tests.fakes.infobip import FakeInfobip
from tests.integration.test_e2e_bulksms import hook_of, receiver, send, states, status_events, until_seen
from tests.integration.test_send_worker import fleet, until

KEY = "k3y-e2e"
JOBS: dict[str, dict[str, Any]] = {
    "i-plain": {"to": "+79161234567", "text": "Your code is 4821"},
    "i-cyrillic": {"to": "+79169876543", "text": "Ваш код 4821", "originator": "ACME"},
    "i-valid": {"to": "+4917612345678", "text": "Sale ends tonight"},  # valid_until set below
}
FINAL = {"i-plain": (5, 0), "i-cyrillic": (9, 1), "i-valid": (15, 0)}  # (status id, error id)


@pytest.fixture
async def infobip(redis: aioredis.Redis, names: Names, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeInfobip]:
    monkeypatch.setattr(InfobipGateway, "default_await_delivery_s", 1)
    async with FakeInfobip(api_key=KEY) as fake:
        settings = {"url": fake.url, "api_token": KEY}
        await SenderRegistry(redis, names).create(
            parse_sender(
                {"id": "i1", "gateway": "infobip", "accounts": ["acme", "acme-promo"], "settings": settings}
                | {"stop_words": ["STOP", "СТОП"]}
            )
        )
        yield fake


async def test_jobs_are_sent_and_reported(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis, infobip: FakeInfobip
) -> None:
    hook = await hook_of(redis, names, settings, "i1")
    valid_until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with status_events(amqp, names) as events, fleet(settings, ["infobip"]):
        infobip.reject_next(1, 14)
        await send(amqp, names, "infobip.i1", {"i-refused": JOBS["i-plain"]})
        await until_seen(events, ["i-refused"], 1)
        await send(amqp, names, "infobip.i1", JOBS | {"i-valid": JOBS["i-valid"] | {"valid_until": valid_until}})
        await until_seen(events, JOBS, 1)
        for job_id, (status_id, error_id) in FINAL.items():
            infobip.set_status(job_id, status_id, error_id)
        await until_seen(events, JOBS, 2)

    [refused] = events["i-refused"]
    assert (refused.state, refused.error and refused.error.code) == ("rejected", "infobip.status.14")
    assert {job_id: states(events, job_id) for job_id in JOBS} == {
        "i-plain": ["accepted", "delivered"],
        "i-cyrillic": ["accepted", "undelivered"],
        "i-valid": ["accepted", "expired"],
    }
    assert all(e.provider_message_id == job_id for job_id in JOBS for e in events[job_id])
    undelivered = events["i-cyrillic"][1].error
    assert undelivered is not None
    assert (undelivered.code, undelivered.message) == (
        "infobip.error.1",
        "EC_UNKNOWN_SUBSCRIBER: Unknown Subscriber (permanent)",
    )

    posts = [seen for seen in infobip.requests if seen.method == "POST"]
    assert sorted(seen.json()["messages"][0]["destinations"][0]["messageId"] for seen in posts[1:]) == sorted(JOBS)
    for seen in posts:
        assert (seen.path, seen.headers["Authorization"]) == ("/sms/3/messages", f"App {KEY}")
    for seen in posts[1:]:
        [sms] = seen.json()["messages"]
        job_id = sms["destinations"][0]["messageId"]
        job = JOBS[job_id]
        expected: dict[str, Any] = {
            "destinations": [{"to": job["to"].lstrip("+"), "messageId": job_id}],
            "content": {"text": job["text"]},
            "webhooks": {"delivery": {"url": hook}, "contentType": "application/json"},
        }
        expected |= {"sender": "ACME"} if "originator" in job else {}
        expected |= (
            {"options": {"validityPeriod": {"amount": 60, "timeUnit": "MINUTES"}}} if job_id == "i-valid" else {}
        )
        assert sms == expected
    assert infobip.by_id["i-cyrillic"].text == "Ваш код 4821"
    pulled = {seen.query["messageId"] for seen in infobip.requests if seen.path == "/sms/3/reports"}
    assert pulled == set(JOBS)
    assert not infobip.pending_reports  # every report was pulled, once


async def test_pushed_reports_and_stop_replies(
    *,
    settings: Settings,
    amqp: aio_pika.abc.AbstractConnection,
    names: Names,
    redis: aioredis.Redis,
    infobip: FakeInfobip,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(InfobipGateway, "default_await_delivery_s", 3600)  # only the push can finish the job
    hook, store = await hook_of(redis, names, settings, "i1"), SuppressionStore(redis, names)
    async with status_events(amqp, names) as events, receiver(settings) as post:
        async with fleet(settings, ["infobip"], suppression=True):
            await send(amqp, names, "infobip.i1", {"i-hook": JOBS["i-plain"]})
            await until_seen(events, ["i-hook"], 1)
            [sms] = infobip.sent("/sms/3/messages")[0]["messages"]
            assert sms["webhooks"] == {"delivery": {"url": hook}, "contentType": "application/json"}
            infobip.by_id["i-hook"].status = 5  # delivered, and pushed (nothing is left to pull)
            assert await post(hook, infobip.report_body("i-hook")) == 200
            await until_seen(events, ["i-hook"], 2)
            replies = [("+79161234567", "СТОП"), ("+79169876543", "Когда доставка?"), ("+4917612345678", "Stop.")]
            assert await post(hook, infobip.inbound_body(*replies)) == 200
            stopped = ("+79161234567", "+4917612345678")

            async def suppressed() -> bool:
                return all([await store.is_suppressed(a, n) for a in ("acme", "acme-promo") for n in stopped])

            await until(suppressed)
            sent_before = len(infobip.sent("/sms/3/messages"))  # the next job to a stopped number sends nothing
            await send(amqp, names, "infobip.i1", {"i-after": {"to": "+79161234567", "text": "Last chance!"}})
            await until_seen(events, ["i-after"], 1)
            assert len(infobip.sent("/sms/3/messages")) == sent_before
        assert states(events, "i-after") == ["suppressed"]
        assert not await store.is_suppressed("acme", "+79169876543")
    assert states(events, "i-hook") == ["accepted", "delivered"]
    assert [e.provider_message_id for e in events["i-hook"]] == ["i-hook", "i-hook"]
    assert not [seen for seen in infobip.requests if seen.method == "GET"]  # the push did it, not a lookup
