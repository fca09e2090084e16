"""The admin's overview, job lookup, test send and dead-letter routes, on the real RabbitMQ and Redis (no
browser: tests/admin/test_browser.py drives the same pages in Chromium)."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from admin import AdminConfig, build_app
from smsfleet.contracts import ErrorInfo, SendJob, State, status_event
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import HEADER_REASON, HEADER_REASON_CODE, Names, message
from tests.samples import sample_sender
from workers.stats import Stats

TOKEN = "test-admin-token-0123456789-abcdefgh"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PAGE = {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()}


@pytest.fixture
async def client(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, redis: aioredis.Redis
) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_app(AdminConfig(token=TOKEN), settings))) as c:
        yield c


async def add_sender(redis: aioredis.Redis, names: Names, sender_id: str, **extra: Any) -> None:
    await SenderRegistry(redis, names).create(parse_sender(sample_sender("sandbox", sender_id, **extra)))


async def count(redis: aioredis.Redis, names: Names, events: list[tuple[str, State, str | None]]) -> None:
    """Count events as a worker does, and flush them."""
    counters = Stats(redis, names, enabled=True)
    for sender, state, code in events:
        job = SendJob(id=f"{sender}-{state}", sender=sender, account="acme", to="+79161234567", text="x")
        counters.count(status_event(job, state, error=ErrorInfo(code, f"{code} happened") if code else None), "sandbox")
    assert await counters.flush()


async def park(amqp: aio_pika.abc.AbstractConnection, names: Names, job_id: str, reason: str) -> None:
    """A job parked in the dead queue by a worker, with its reason."""
    body = msgspec.json.encode({"id": job_id, "sender": "sb", "account": "acme", "to": "+79161234567", "text": "x"})
    headers = {HEADER_REASON_CODE: reason, HEADER_REASON: f"{reason}: why", "x-smsfleet-routing-key": "sandbox.sb"}
    async with amqp.channel(publisher_confirms=True) as channel:
        exchange = await channel.get_exchange(names.dead_exchange)
        await exchange.publish(message(body, message_id=job_id, headers=headers), routing_key="sandbox.sb")


async def queued(amqp: aio_pika.abc.AbstractConnection, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """The messages in `queue`, taken (and acknowledged)."""
    out = []
    async with amqp.channel() as channel:
        q = await channel.get_queue(queue, ensure=False)
        while (msg := await q.get(no_ack=True, fail=False)) is not None:
            out.append(msg)
    return out


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def test_the_overview_counts_jobs_per_sender_and_gateway_with_queues_and_dead_letters(
    client: TestClient[Any, Any], redis: aioredis.Redis, names: Names, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await add_sender(redis, names, "sb", rate_limit=50)
    await add_sender(redis, names, "quiet")
    await count(
        redis, names,
        [("sb", State.ACCEPTED, None)] * 4 + [("sb", State.DELIVERED, None)] * 3
        + [("sb", State.REJECTED, "http_400"), ("sb", State.REJECTED, "phone_not_verified")],
    )  # fmt: skip
    async with amqp.channel(publisher_confirms=True) as channel:  # two jobs waiting: nobody consumes the queue
        exchange = await channel.get_exchange(names.send_exchange)
        for i in range(2):
            await exchange.publish(message(b"{}", message_id=f"w{i}"), routing_key="sandbox.sb")
    await park(amqp, names, "d1", "unknown_sender")
    await park(amqp, names, "d2", "unknown_sender")
    await park(amqp, names, "d3", "bad_json")

    resp = await client.get("/api/overview", headers=AUTH)
    assert resp.status == 200
    data = await resp.json()
    assert [s["id"] for s in data["senders"]] == ["quiet", "sb"]
    sb = next(s for s in data["senders"] if s["id"] == "sb")
    hour = sb["hour"]
    assert {k: v for k, v in hour["states"].items() if v} == {"accepted": 4, "delivered": 3, "rejected": 2}
    assert (hour["final"], hour["sent"], hour["provider_errors"]) == (5, 5, 1)  # our own refusal is no provider error
    assert hour["delivery_ratio"] == 0.6
    assert hour["provider_error_share"] == 0.2
    assert sb["day"]["states"] == hour["states"]
    assert sb["rate_limit"] == 50
    assert sb["sends_per_s"] > 0
    assert len(sb["chart"]) == 60
    assert sb["chart"][-1] | {"minute": ""} == {"minute": "", "delivered": 3, "failed": 2, "pending": 4}
    (gateway,) = data["gateways"]
    assert (gateway["kind"], sorted(gateway["senders"])) == ("sandbox", ["quiet", "sb"])
    assert gateway["hour"]["states"] == hour["states"]
    assert gateway["queue"]["name"] == names.send_queue("sandbox")
    assert gateway["queue"]["depth"] == 2
    assert data["dead"] | {"error": None} == {
        "total": 3, "read": 3, "by_reason": {"unknown_sender": 2, "bad_json": 1}, "error": None
    }  # fmt: skip
    assert [(f["job_id"], f["code"]) for f in data["failures"]] == [
        ("sb-rejected", "phone_not_verified"), ("sb-rejected", "http_400")
    ]  # fmt: skip
    # the page: the same numbers, a chart drawn on the server, and no inline script or style
    resp = await client.get("/", headers=PAGE)
    html = await resp.text()
    assert resp.status == 200
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    row = re.search(r'<tr data-sender="sb">(.*?)</tr>', html, re.S)
    assert row is not None
    assert "delivered 3" in row.group(1)
    assert "60.0 %" in row.group(1)
    assert row.group(1).count('<rect class="c-ok"') == 1
    assert "<script>" not in html
    assert "style=" not in html
    assert "data-dead-total>3<" in html


async def test_the_overview_works_without_the_broker(redis_url: str, namespace: str, redis: aioredis.Redis) -> None:
    settings = Settings(redis_url=redis_url, namespace=namespace, amqp_url="amqp://guest:guest@127.0.0.1:1/")
    await add_sender(redis, Names(namespace), "sb")
    await count(redis, Names(namespace), [("sb", State.DELIVERED, None)])
    async with TestClient(TestServer(build_app(AdminConfig(token=TOKEN), settings))) as c:
        data = await (await c.get("/api/overview", headers=AUTH)).json()
        assert data["senders"][0]["hour"]["states"]["delivered"] == 1
        assert data["gateways"][0]["queue"]["depth"] is None
        assert "RabbitMQ cannot be reached" in data["broker_error"]
        assert data["dead"]["total"] is None
        resp = await c.get("/", headers=PAGE)
        assert resp.status == 200
        assert "RabbitMQ cannot be reached" in await resp.text()


async def test_a_job_is_looked_up_by_id(client: TestClient[Any, Any], redis: aioredis.Redis, names: Names) -> None:
    resp = await client.get("/api/jobs/nope", headers=AUTH)
    assert resp.status == 404
    assert "no record of job 'nope'" in (await resp.json())["error"]
    resp = await client.get("/jobs?id=a%2Fb%20c", headers=PAGE, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/jobs/a%2Fb%20c")
    resp = await client.get("/jobs/a%2Fb%20c", headers=PAGE)
    assert resp.status == 404
    assert "No record of job &#39;a/b c&#39;" in await resp.text()


async def test_a_test_send_is_queued_like_any_job_and_checked_first(
    client: TestClient[Any, Any], redis: aioredis.Redis, names: Names, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await add_sender(redis, names, "sb", verified_phones=["+79161234567"])
    await add_sender(redis, names, "any")
    resp = await client.post("/api/senders/sb/test", json={"to": "+79169999999", "text": "hi"}, headers=AUTH)
    assert resp.status == 422
    assert "verified phones" in (await resp.json())["errors"]["to"]
    resp = await client.post("/api/senders/any/test", json={"to": "12", "text": " "}, headers=AUTH)
    assert set((await resp.json())["errors"]) == {"to", "text"}
    resp = await client.post("/api/senders/any/test", json={"to": 5}, headers=AUTH)
    assert (resp.status, await resp.json()) == (422, {"errors": {"to": "expected a string"}})
    resp = await client.post("/api/senders/nope/test", json={"to": "+79161234567", "text": "x"}, headers=AUTH)
    assert resp.status == 404

    resp = await client.post("/api/senders/sb/test", json={"to": "+79161234567", "text": "hello"}, headers=AUTH)
    assert resp.status == 202
    body = await resp.json()
    assert body["status_url"] == f"/api/jobs/{body['job_id']}"
    # the page's form: a POST with its CSRF token, then the page that follows the job
    page = await client.get("/senders/any/test", headers=PAGE)
    assert 'id="f-to"' in await page.text()
    resp = await client.post("/senders/any/test", data={"to": "+79161234567", "text": "x"}, headers=PAGE)
    assert resp.status == 403  # no CSRF token
    form = {"csrf_token": csrf_of(await page.text()), "to": "+7 916 123-45-67", "text": "from the page"}
    resp = await client.post("/senders/any/test", data=form, headers=PAGE, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/senders/any/test?job=test-")
    followed = await client.get(resp.headers["Location"], headers=PAGE)
    assert "data-watch-job=" in await followed.text()
    assert '<script src="/static/watch.js" defer>' in await followed.text()

    jobs = [msgspec.json.decode(m.body, type=SendJob) for m in await queued(amqp, names.send_queue("sandbox"))]
    assert [(j.id, j.sender, j.account, j.to, j.text, j.meta) for j in jobs] == [
        (body["job_id"], "sb", "acme", "+79161234567", "hello", {"test_send": "admin"}),
        (jobs[1].id, "any", "acme", "+79161234567", "from the page", {"test_send": "admin"}),
    ]


async def test_dead_letters_are_listed_requeued_and_purged(
    client: TestClient[Any, Any], names: Names, amqp: aio_pika.abc.AbstractConnection
) -> None:
    for job_id, reason in (("d1", "unknown_sender"), ("d2", "unknown_sender"), ("d3", "bad_json"), ("d4", "x")):
        await park(amqp, names, job_id, reason)
    listing = await (await client.get("/api/dead", headers=AUTH)).json()
    assert (listing["total"], listing["by_reason"]) == (4, {"unknown_sender": 2, "bad_json": 1, "x": 1})
    shown = await (await client.get("/api/dead/d3", headers=AUTH)).json()
    assert (shown[0]["reason"], shown[0]["body"]["id"]) == ("bad_json", "d3")
    html = await (await client.get("/dead", headers=PAGE)).text()
    assert '<tr data-letter="d1">' in html
    # requeue by reason through the API: back to the send queue with the original id
    resp = await client.post("/api/dead/requeue", json={"reason": "unknown_sender"}, headers=AUTH)
    assert (resp.status, (await resp.json())["requeued"]) == (200, ["d1", "d2"])
    assert sorted(m.message_id or "" for m in await queued(amqp, names.send_queue("sandbox"))) == ["d1", "d2"]
    resp = await client.post("/api/dead/requeue", json={"ids": [], "all": "yes"}, headers=AUTH)
    assert (resp.status, await resp.json()) == (422, {"errors": {"all": "expected true or false"}})
    # requeue one from the page (a form with its CSRF token)
    token = csrf_of(html)
    resp = await client.post(
        "/dead/requeue", data={"csrf_token": token, "id": "d3"}, headers=PAGE, allow_redirects=False
    )
    assert (resp.status, resp.headers["Location"]) == (303, "/dead?requeued=1&failed=0")
    # purge asks first, on the page and in the API
    resp = await client.post("/dead/purge", data={"csrf_token": token, "all": "yes"}, headers=PAGE)
    assert "Purge every message in the dead queue?" in await resp.text()
    resp = await client.post("/api/dead/purge", json={"all": True}, headers=AUTH)
    assert resp.status == 422
    assert "confirm" in (await resp.json())["errors"]
    assert (await (await client.get("/api/dead", headers=AUTH)).json())["total"] == 1
    form = {"csrf_token": token, "all": "yes", "confirmed": "yes"}
    resp = await client.post("/dead/purge", data=form, headers=PAGE, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/dead?purged=1")
    assert (await (await client.get("/api/dead", headers=AUTH)).json())["total"] == 0
