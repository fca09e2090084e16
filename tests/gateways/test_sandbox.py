"""The sandbox gateway: no network, deterministic outcomes per job, hand-posted reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from gateways import CallbackRequest, Outgoing, StatusRef, Transient, gateway_class
from gateways.sandbox import SandboxGateway
from smsfleet.contracts import State
from smsfleet.kinds import SandboxSettings


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sandbox(http: aiohttp.ClientSession, **settings: Any) -> SandboxGateway:
    return SandboxGateway(SandboxSettings(latency_ms=0, **settings), http)


def ref(job_id: str) -> StatusRef:
    return StatusRef(job_id=job_id, provider_message_id=None, to="+79161234567")


def post(data: object) -> CallbackRequest:
    return CallbackRequest(
        method="POST", query={}, headers={"Content-Type": "application/json"}, body=msgspec.json.encode(data)
    )


def test_registered() -> None:
    assert gateway_class("sandbox") is SandboxGateway


async def test_send_gives_a_stable_provider_id(http: aiohttp.ClientSession) -> None:
    gateway = sandbox(http)
    first = await gateway.send(Outgoing(job_id="j1", to="+79161234567", text="hi", parts=2))
    again = await gateway.send(Outgoing(job_id="j1", to="+79161234567", text="hi", parts=2))
    other = await gateway.send(Outgoing(job_id="j2", to="+79161234567", text="hi"))
    assert first == again
    assert first.parts == 2
    assert (first.provider_message_id or "").startswith("sbx-")
    assert first.provider_message_id != other.provider_message_id


async def test_failure_rate_one_always_fails(http: aiohttp.ClientSession) -> None:
    with pytest.raises(Transient, match=r"sandbox\.simulated"):
        await sandbox(http, failure_rate=1.0).send(Outgoing(job_id="j", to="+79161234567", text="hi"))


async def test_outcomes_are_deterministic_and_follow_delivered_rate(http: aiohttp.ClientSession) -> None:
    gateway = sandbox(http, delivered_rate=0.3)
    jobs = [f"job-{i}" for i in range(2000)]
    first = [(await gateway.status(ref(j))).state for j in jobs]
    again = [(await gateway.status(ref(j))).state for j in jobs]
    assert first == again
    assert set(first) == {State.DELIVERED, State.UNDELIVERED}
    assert 0.25 < first.count(State.DELIVERED) / len(jobs) < 0.35
    failed = await sandbox(http, delivered_rate=0.0).status(ref("job-1"))
    assert failed.state is State.UNDELIVERED
    assert failed.error is not None
    assert (await sandbox(http, delivered_rate=1.0).status(ref("job-1"))).state is State.DELIVERED


def test_callback_one_or_many(http: aiohttp.ClientSession) -> None:
    gateway = sandbox(http)
    [one] = gateway.parse_callback(post({"id": "sbx-1", "state": "delivered"})).reports
    assert (one.provider_message_id, one.state) == ("sbx-1", State.DELIVERED)
    many = gateway.parse_callback(post([{"id": "a", "state": "expired"}, {"job_id": "j", "state": "rejected"}]))
    assert [(r.provider_message_id, r.job_id, r.state) for r in many.reports] == [
        ("a", None, State.EXPIRED),
        (None, "j", State.REJECTED),
    ]


def test_an_accepted_callback_is_not_final(http: aiohttp.ClientSession) -> None:
    [report] = sandbox(http).parse_callback(post({"id": "sbx-1", "state": "accepted"})).reports
    assert (report.state, report.raw_status) == (None, "accepted")


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"id": "a", "state": "lost"}', b'{"state": "delivered"}', b"[1]"],
)
def test_bad_callback_is_refused(http: aiohttp.ClientSession, body: bytes) -> None:
    request = CallbackRequest(method="POST", query={}, headers={}, body=body)
    with pytest.raises(ValueError):  # noqa: PT011 - the receiver turns any ValueError into a 400
        sandbox(http).parse_callback(request)
