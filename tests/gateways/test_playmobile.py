"""Play Mobile: the gateway contract against the fake broker-api, then Play Mobile's own quirks."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec
import pytest

from gateways import (
    CallbackRequest,
    GatewayError,
    Outgoing,
    Permanent,
    RateLimited,
    Receipt,
    Transient,
    gateway_class,
)
from gateways.playmobile import ERRORS, STATUSES, PlaymobileGateway
from smsfleet.contracts import State
from smsfleet.kinds import PlaymobileSettings
from tests.fakes.playmobile import FakePlaymobile, dlr_body

from .contract import GatewayContract

USER_ID, PASSWORD = "acme", "s3cret-Pa55"
STATUS_WORDS = {State.DELIVERED: "delivered", State.UNDELIVERED: "notDelivered"}
JSON = {"Content-Type": "application/json"}


def push(body: bytes, headers: dict[str, str] | None = None) -> CallbackRequest:
    return CallbackRequest(method="POST", query={}, headers=JSON if headers is None else headers, body=body)


class TestPlaymobile(GatewayContract[FakePlaymobile]):
    def fake_server(self) -> FakePlaymobile:
        return FakePlaymobile(user_id=USER_ID, password=PASSWORD)

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> PlaymobileGateway:
        return PlaymobileGateway(PlaymobileSettings(user_id=USER_ID, password=PASSWORD, base_url=url), http)

    def fake_permanent_error(self, fake: FakePlaymobile) -> None:
        fake.fail_next(1, 406)

    def derived_secrets(self, settings: Any) -> Iterable[str]:
        return [base64.b64encode(f"{settings.user_id}:{settings.password}".encode()).decode()]

    def assert_auth_on_wire(self, fake: FakePlaymobile) -> None:
        _, headers, _ = fake.requests[-1]
        scheme, _, token = headers["Authorization"].partition(" ")
        assert (scheme, base64.b64decode(token).decode()) == ("Basic", f"{USER_ID}:{PASSWORD}")

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        return push(dlr_body(receipt.provider_message_id or "", STATUS_WORDS[state]))

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [
            push(b"{not json"),
            push(b'{"messages": [{"status": "delivered"}]}'),
            push(b'{"messages": [{"message-id": "j1"}]}'),
            push(b'{"messages": "j1"}'),
            push(b"[42]"),
            push(b"", headers={}),
        ]

    # --- Play Mobile's own quirks --------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("playmobile") is PlaymobileGateway
        assert PlaymobileGateway.default_rate == 49.0
        assert not PlaymobileGateway.has_status
        assert not PlaymobileGateway.can_find

    async def test_wire_body(self, gateway: PlaymobileGateway, fake: FakePlaymobile) -> None:
        receipt = await gateway.send(self.message("job-42", text="Salom, dunyo! Привет"))
        path, headers, body = fake.requests[-1]
        assert path == "/broker-api/send"
        assert headers["Content-Type"] == "application/json; charset=UTF-8"
        assert body == {
            "messages": [
                {
                    "recipient": "79161234567",
                    "message-id": "job-42",
                    "sms": {"originator": "3700", "content": {"text": "Salom, dunyo! Привет"}},
                }
            ]
        }
        assert receipt == Receipt(provider_message_id="job-42")

    async def test_originator_and_ttl(self, gateway: PlaymobileGateway, fake: FakePlaymobile) -> None:
        valid_until = datetime.now(UTC) + timedelta(minutes=5)
        await gateway.send(self.message(originator="ACME", valid_until=valid_until))
        sms = fake.requests[-1][2]["messages"][0]["sms"]
        assert sms["originator"] == "ACME"
        assert 295 <= sms["ttl"] <= 300
        await gateway.send(self.message(valid_until=datetime.now(UTC) - timedelta(minutes=5)))
        assert fake.messages[-1].ttl == 1  # already past (the worker expires such jobs first): the minimum

    @pytest.mark.parametrize(
        "base", ["{url}", "{url}/", "{url}/broker-api", "{url}/broker-api/", "{url}/broker-api/send"]
    )
    async def test_base_url_forms(self, http: aiohttp.ClientSession, fake: FakePlaymobile, base: str) -> None:
        settings = PlaymobileSettings(user_id=USER_ID, password=PASSWORD, base_url=base.format(url=fake.url))
        await PlaymobileGateway(settings, http).send(self.message())
        assert [p for p, _, _ in fake.requests] == ["/broker-api/send"]

    def test_default_endpoint(self, http: aiohttp.ClientSession) -> None:
        settings = PlaymobileSettings(user_id=USER_ID, password=PASSWORD)
        assert PlaymobileGateway(settings, http).url == "https://send.smsxabar.uz/broker-api/send"

    @pytest.mark.parametrize("style", ["hyphen", "underscore"])
    @pytest.mark.parametrize("code", sorted(ERRORS))
    async def test_error_table(self, http: aiohttp.ClientSession, style: str, code: int) -> None:
        async with FakePlaymobile(USER_ID, PASSWORD, error_style=style) as fake:
            fake.fail_next(1, code)
            with pytest.raises(GatewayError) as info:
                await self.make_gateway(http, fake.url).send(self.message())
        assert type(info.value) is (Transient if code in (100, 105) else Permanent)  # 105: the request's size
        assert info.value.code == f"playmobile.{code}"
        assert info.value.message.startswith(ERRORS[code][1])

    async def test_errors_from_the_fake_itself(self, gateway: PlaymobileGateway, fake: FakePlaymobile) -> None:
        with pytest.raises(Permanent, match=r"playmobile\.404") as info:
            await gateway.send(self.message(text=""))
        assert info.value.message == "empty content: Empty content"
        fake.fail_next(1, 999)
        with pytest.raises(Permanent, match=r"playmobile\.999: unknown error"):
            await gateway.send(self.message())

    async def test_other_http_statuses(self, gateway: PlaymobileGateway, fake: FakePlaymobile) -> None:
        for status, expected, code in [(400, Permanent, "http.400"), (404, Permanent, "http.404")]:
            fake.http_status_next(1, status)  # no JSON error body
            with pytest.raises(expected, match=code):
                await gateway.send(self.message())
        fake.http_status_next(1, 429)
        with pytest.raises(RateLimited) as info:
            await gateway.send(self.message())
        assert info.value.retry_after == 7
        assert fake.messages == []

    async def test_send_many_is_one_request(self, gateway: PlaymobileGateway, fake: FakePlaymobile) -> None:
        messages = [self.message(f"job-{i}", to=f"+99890123456{i}") for i in range(3)]
        receipts = await gateway.send_many(messages)
        assert receipts == [Receipt(provider_message_id=f"job-{i}") for i in range(3)]
        assert len(fake.requests) == 1
        assert [(m.message_id, m.recipient) for m in fake.messages] == [
            (f"job-{i}", f"99890123456{i}") for i in range(3)
        ]
        fake.fail_next(1, 102)
        failed = await gateway.send_many(messages)
        assert [type(r) for r in failed] == [Permanent] * 3

    async def test_resend_of_a_job_reaches_the_provider_again(
        self, gateway: PlaymobileGateway, fake: FakePlaymobile
    ) -> None:  # why there is no resend: nothing documented stops a second SMS
        await gateway.send(self.message())
        await gateway.send(self.message())
        assert [m.message_id for m in fake.messages] == ["job-1", "job-1"]

    @pytest.mark.parametrize(("status", "expected"), sorted((k, v[0]) for k, v in STATUSES.items()))
    def test_status_table(self, gateway: PlaymobileGateway, status: str, expected: State | None) -> None:
        [report] = gateway.parse_callback(push(dlr_body("job-7", status))).reports
        assert (report.provider_message_id, report.job_id, report.state) == ("job-7", "job-7", expected)
        assert (report.error is None) == (expected in (None, State.DELIVERED))
        assert report.at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)

    @pytest.mark.parametrize("spelling", ["notDelivered", "NOT_DELIVERED", "not-delivered", "NotDelivered"])
    def test_status_spellings(self, gateway: PlaymobileGateway, spelling: str) -> None:
        [report] = gateway.parse_callback(push(dlr_body("j", spelling))).reports
        assert (report.state, report.raw_status) == (State.UNDELIVERED, spelling)
        assert report.error is not None
        assert report.error.code == "playmobile.status.notdelivered"

    def test_callback_shapes(self, gateway: PlaymobileGateway) -> None:
        several = msgspec.json.encode(
            {"messages": [{"message-id": "a", "status": "delivered"}, {"message_id": 5, "status": "failed"}]}
        )
        callback = gateway.parse_callback(push(several))
        assert [(r.job_id, r.state, r.at) for r in callback.reports] == [
            ("a", State.DELIVERED, None),
            ("5", State.UNDELIVERED, None),
        ]
        assert (callback.reply_status, callback.reply_body) == (200, "OK")
        single = gateway.parse_callback(push(b'{"message-id": "b", "status": "transmitted"}', headers={}))
        assert [(r.job_id, r.state) for r in single.reports] == [("b", None)]
        form = urlencode({"message-id": "c", "status": "delivered", "status-date": "2024-05-01T10:00:00+05:00"})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        [report] = gateway.parse_callback(push(form.encode(), headers=headers)).reports
        assert (report.job_id, report.state) == ("c", State.DELIVERED)
        assert report.at == datetime(2024, 5, 1, 5, 0, tzinfo=UTC)
        query = CallbackRequest(method="GET", query={"message-id": "d", "status": "weird"}, headers={})
        [report] = gateway.parse_callback(query).reports
        assert (report.state, report.raw_status) == (None, "weird")  # unknown: not final, never a 4xx loop

    def test_no_credential_in_repr(self, gateway: PlaymobileGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert USER_ID in repr(gateway)

    # --- batches -------------------------------------------------------------------------------------------
    def test_batch_size_and_rate(self) -> None:
        assert (PlaymobileGateway.max_batch, PlaymobileGateway.rate_per) == (100, "request")

    async def test_too_many_messages_is_transient_for_all(self, http: aiohttp.ClientSession) -> None:
        async with FakePlaymobile(USER_ID, PASSWORD, max_messages=2) as fake:
            gateway = self.make_gateway(http, fake.url)
            outcomes = await gateway.send_many(self.batch(3))
            assert [(type(o), getattr(o, "code", "")) for o in outcomes] == [(Transient, "playmobile.105")] * 3
            assert [type(o) for o in await gateway.send_many(self.batch(2))] == [Receipt] * 2
            assert (len(fake.requests), len(fake.messages)) == (2, 2)

    async def test_requests_and_messages_are_counted_apart(
        self, gateway: PlaymobileGateway, fake: FakePlaymobile
    ) -> None:
        for i in range(3):
            await gateway.send_many([self.message(f"job-{i}-{j}", to=f"+99890123456{j}") for j in range(4)])
        assert (len(fake.requests), len(fake.request_times), len(fake.messages)) == (3, 3, 12)
        assert fake.request_times == sorted(fake.request_times)
        assert fake.busiest_second() == 3
        fake.request_times[:] = [0.0, 0.5, 0.99, 1.0, 1.2, 2.5]
        assert fake.busiest_second() == 4  # 0.5 .. 1.2: a window is [t, t + 1 s)
