"""Seven Tech: the gateway contract against the fake Seven Tech, then its own quirks (low confidence: the fake
and the adapter share the same assumptions, see `SeventechGateway.assumptions`)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from gateways import Ambiguous, CallbackRequest, GatewayError, Outgoing, Permanent, RateLimited, Receipt, gateway_class
from gateways.seventech import ERRORS, STATUSES, SeventechGateway
from smsfleet.contracts import State
from smsfleet.kinds import SeventechSettings
from tests.fakes._rapporto_family import json_push, listener
from tests.fakes.seventech import FakeSeventech, report_request

from .contract import GatewayContract

LOGIN, PASSWORD = "acme", "s3cret-Pa55"
BASIC = "Basic " + base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
STATE_CODES = {State.DELIVERED: "DELIVERED", State.UNDELIVERED: "UNDELIVERED"}


class TestSeventech(GatewayContract[FakeSeventech]):
    def fake_server(self) -> FakeSeventech:
        return FakeSeventech(login=LOGIN, password=PASSWORD)

    def make_gateway(self, http: aiohttp.ClientSession, url: str, **settings: Any) -> SeventechGateway:
        return SeventechGateway(SeventechSettings(url=url, login=LOGIN, password=PASSWORD, **settings), http)

    def fake_permanent_error(self, fake: FakeSeventech) -> None:
        fake.fail_next(1, 400)

    def derived_secrets(self, settings: Any) -> Iterable[str]:
        return [base64.b64encode(f"{settings.login}:{settings.password}".encode()).decode()]

    def assert_auth_on_wire(self, fake: FakeSeventech) -> None:
        seen = fake.requests[-1]
        assert seen.headers["Authorization"] == BASIC
        assert seen.query == {}

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        return report_request(receipt.provider_message_id or "", STATE_CODES[state], message.job_id)

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [
            json_push({"status": "DELIVERED"}),
            json_push({"messageId": "m1"}),
            json_push([{"messageId": "m1", "status": "DELIVERED"}, 5]),
            json_push([]),
            CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/json"}, body=b"{"),
            CallbackRequest(method="GET", query={"status": "DELIVERED"}, headers={}),
            json_push({"from": "ACME shop", "text": "hi"}),
        ]

    # --- Seven Tech's own quirks ---------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("seventech") is SeventechGateway
        assert not SeventechGateway.has_status
        assert not SeventechGateway.can_find
        assert SeventechGateway.assumptions

    async def test_wire_body(self, gateway: SeventechGateway, fake: FakeSeventech) -> None:
        receipt = await gateway.send(self.message(text="Привет, мир"))
        seen = fake.requests[-1]
        assert (seen.method, seen.path) == ("POST", "/messaging/v1/send")
        assert seen.headers["Content-Type"] == "application/json"
        assert seen.json == {
            "clientRequestId": "job-1",
            "scenario": [{"channel": "SMS", "to": "79161234567", "text": "Привет, мир"}],
        }
        assert receipt.provider_message_id == fake.messages[0].id

    async def test_no_guessed_shortening_flag_on_the_wire(
        self, http: aiohttp.ClientSession, fake: FakeSeventech
    ) -> None:
        """Seven Tech documents no shortening flag: the option is smsfleet's own (the text arrives shortened)."""
        text = "See https://example.com/a/very/long/path?with=query"
        await self.make_gateway(http, fake.url, shorten_links=True).send(self.message("on", text=text))
        await self.make_gateway(http, fake.url, shorten_links=False).send(self.message("off", text=text))
        on, off = (r.json for r in fake.requests)
        assert on == off | {"clientRequestId": "on"}
        assert not any("shorten" in key.lower() for key in on)

    async def test_originator_and_ttl(self, gateway: SeventechGateway, fake: FakeSeventech) -> None:
        until = datetime.now(UTC) + timedelta(minutes=10)
        await gateway.send(self.message(originator="ACME", valid_until=until))
        [step] = fake.requests[-1].json["scenario"]
        assert step["from"] == "ACME"
        assert 595 <= step["ttl"] <= 600

    async def test_ttl_is_at_least_a_second(self, gateway: SeventechGateway, fake: FakeSeventech) -> None:
        await gateway.send(self.message(valid_until=datetime.now(UTC) - timedelta(seconds=5)))
        assert fake.requests[-1].json["scenario"][0]["ttl"] == 1

    @pytest.mark.parametrize("status", sorted(ERRORS))
    async def test_error_table(self, gateway: SeventechGateway, fake: FakeSeventech, status: int) -> None:
        fake.fail_next(1, status)
        with pytest.raises(GatewayError) as info:
            await gateway.send(self.message())
        assert type(info.value) is ERRORS[status].error
        assert info.value.code == f"seventech.{status}"
        assert len(fake.messages) == 0

    async def test_unlisted_statuses_and_bad_replies(self, gateway: SeventechGateway, fake: FakeSeventech) -> None:
        fake.fail_next(1, 418)
        with pytest.raises(Permanent, match=r"seventech\.418"):
            await gateway.send(self.message())
        fake.http_status_next(1, 200)  # a 200 whose body has no message id: it may have been taken
        with pytest.raises(Ambiguous, match=r"seventech\.bad_reply"):
            await gateway.send(self.message())

    async def test_408_is_rate_limited(self, gateway: SeventechGateway, fake: FakeSeventech) -> None:
        fake.fail_next(1, 408)
        with pytest.raises(RateLimited) as info:
            await gateway.send(self.message())
        assert info.value.retry_after == 1.0

    async def test_wrong_password(self, http: aiohttp.ClientSession, fake: FakeSeventech) -> None:
        gateway = SeventechGateway(SeventechSettings(url=fake.url, login=LOGIN, password="nope"), http)
        with pytest.raises(Permanent) as info:
            await gateway.send(self.message())
        assert info.value.code == "seventech.401"
        assert "nope" not in str(info.value)

    @pytest.mark.parametrize(("status", "expected"), sorted(STATUSES.items()))
    def test_status_table(self, gateway: SeventechGateway, status: str, expected: tuple[State | None, str]) -> None:
        [report] = gateway.parse_callback(report_request("m1", status.lower(), "job-3", error_code=7)).reports
        assert (report.provider_message_id, report.job_id) == ("m1", "job-3")
        assert (report.state, report.raw_status) == (expected[0], status)
        assert (report.error is None) == (expected[0] in (None, State.DELIVERED))
        assert report.at is not None

    def test_report_list_and_error_code(self, gateway: SeventechGateway) -> None:
        body = [
            {"messageId": "m1", "status": "UNDELIVERED", "errorCode": 12, "errorDescription": "blacklisted"},
            {"messageId": "m2", "status": "SENT"},
        ]
        callback = gateway.parse_callback(json_push(body))
        assert [(r.provider_message_id, r.state) for r in callback.reports] == [
            ("m1", State.UNDELIVERED),
            ("m2", None),
        ]
        error = callback.reports[0].error
        assert error is not None
        assert (error.code, error.message) == ("seventech.12", "not delivered (blacklisted)")
        assert callback.reply_status == 200

    def test_inbound_json(self, gateway: SeventechGateway, fake: FakeSeventech) -> None:
        callback = gateway.parse_callback(fake.inbound("+79161234567", "STOP", to="ACME"))
        assert [(s.from_, s.to, s.text) for s in callback.inbound] == [("+79161234567", "ACME", "STOP")]
        assert callback.reports == []

    def test_inbound_legacy_2way(self, gateway: SeventechGateway) -> None:
        query = {"clientId": "79031234567", "message": "Stop", "shortNumber": "0000", "id": "abc"}
        callback = gateway.parse_callback(CallbackRequest(method="GET", query=query, headers={}))
        [sms] = callback.inbound
        assert (sms.from_, sms.to, sms.text, sms.provider_message_id) == ("+79031234567", "0000", "Stop", "abc")
        assert (callback.reply_status, callback.reply_body) == (200, "")  # an empty reply: no SMS back

    async def test_pushed_report_over_http(self, gateway: SeventechGateway, fake: FakeSeventech) -> None:
        await gateway.send(self.message())
        path = "/smslistener/listen_type/sms_seventech"
        async with listener(gateway, path) as (url, parsed):
            status = await fake.push(url + "?sender=s1&token=t", fake.report(fake.messages[0], "DELIVERED"))
        assert status == 200
        [report] = parsed[0].reports
        assert (report.provider_message_id, report.job_id, report.state) == (
            fake.messages[0].id,
            "job-1",
            State.DELIVERED,
        )

    def test_no_credential_in_repr(self, gateway: SeventechGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert LOGIN in repr(gateway)


async def test_the_receiving_url_goes_with_each_message() -> None:
    async with FakeSeventech(login="l", password="p") as fake, aiohttp.ClientSession() as http:
        gateway = SeventechGateway(SeventechSettings(url=fake.url, login="l", password="p"), http)
        hook = "https://hooks.example.com/smslistener/listen_type/sms_seventech?sender=s&token=t"
        await gateway.send(Outgoing(job_id="j1", to="+79161234567", text="hi", callback_url=hook))
        await gateway.send(Outgoing(job_id="j2", to="+79161234567", text="hi"))
    bodies = [r.json for r in fake.requests]
    assert bodies[0]["callback"] == hook
    assert "callback" not in bodies[1]
