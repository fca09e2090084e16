"""Rapporto: the gateway contract against the fake Rapporto, then Rapporto's own quirks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import pytest

from gateways import (
    Ambiguous,
    CallbackRequest,
    GatewayError,
    Outgoing,
    Permanent,
    RateLimited,
    Receipt,
    Transient,
    gateway_class,
)
from gateways._rapporto_family import fail
from gateways.rapporto import ERRORS, STATUSES, RapportoGateway, partner_msg_id
from smsfleet.contracts import State
from smsfleet.kinds import RapportoSettings
from tests.fakes._rapporto_family import json_push, listener
from tests.fakes.rapporto import FakeRapporto, dlr_request

from .contract import GatewayContract

SERVICE, PASSWORD = "acme", "s3cret-Pa55"
STATE_CODES = {State.DELIVERED: 2, State.UNDELIVERED: 5}
LISTEN_PATH = "/smslistener/listen_type/sms_rapporto"


class TestRapporto(GatewayContract[FakeRapporto]):
    def fake_server(self) -> FakeRapporto:
        return FakeRapporto(service_id=SERVICE, password=PASSWORD, dedup=True)  # an account where it is enabled

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> RapportoGateway:
        return RapportoGateway(RapportoSettings(service_id=SERVICE, password=PASSWORD, url=url), http)

    def fake_permanent_error(self, fake: FakeRapporto) -> None:
        fake.fail_next(1, 406)

    def fake_transient_error(self, fake: FakeRapporto) -> None:
        fake.http_status_next(1, 502)

    def fake_rate_limited(self, fake: FakeRapporto) -> None:
        fake.fail_next(1, 408)

    def assert_auth_on_wire(self, fake: FakeRapporto) -> None:
        seen = fake.requests[-1]
        assert (seen.form["serviceId"], seen.form["pass"]) == (SERVICE, PASSWORD)
        assert seen.query == {}  # in the form body, never in the URL

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        pid = receipt.provider_message_id or ""
        return dlr_request(pid, STATE_CODES[state], partner_msg_id(message.job_id))

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [
            dlr_request("", 2),
            dlr_request("12x", 2),
            CallbackRequest(method="GET", query={"transactionId": "1", "status": "done"}, headers={}),
            CallbackRequest(method="GET", query={"transactionId": "1"}, headers={}),
            CallbackRequest(method="GET", query={}, headers={}),
            CallbackRequest(method="GET", query={"clientId": "anonymous", "message": "STOP"}, headers={}),
            json_push({"status": 2}),
            json_push({"mtNum": "1", "status": "x"}),
            CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/json"}, body=b"[1]"),
            CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/json"}, body=b"{"),
        ]

    # --- Rapporto's own quirks -----------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("rapporto") is RapportoGateway
        assert not RapportoGateway.has_status
        assert not RapportoGateway.can_find  # partnerMsgId dedup is an account setting we cannot see

    async def test_wire_fields(self, gateway: RapportoGateway, fake: FakeRapporto) -> None:
        receipt = await gateway.send(self.message(text="Привет, мир"))
        seen = fake.requests[-1]
        assert (seen.method, seen.path) == ("POST", f"/{SERVICE}")
        assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded; charset=utf-8"
        assert seen.form == {
            "serviceId": SERVICE,
            "pass": PASSWORD,
            "clientId": "79161234567",
            "message": "Привет, мир",
            "partnerMsgId": "job-1",
        }
        assert receipt.provider_message_id == str(fake.messages[0].id)
        assert receipt.provider_message_id.isdigit()
        assert fake.messages[0].text == "Привет, мир"

    async def test_originator_is_source(self, gateway: RapportoGateway, fake: FakeRapporto) -> None:
        await gateway.send(self.message(originator="ACME"))
        assert fake.requests[-1].form["source"] == "ACME"

    def test_partner_msg_id(self) -> None:
        assert partner_msg_id("job-1") == "job-1"
        assert partner_msg_id("x" * 50) == "x" * 50
        long_id = "campaign-42/" + "y" * 100
        hashed = partner_msg_id(long_id)
        assert len(hashed) == 50
        assert hashed == partner_msg_id(long_id) != partner_msg_id(long_id + "z")
        assert hashed.startswith("sha256:")

    async def test_long_job_id_is_sent_hashed(self, gateway: RapportoGateway, fake: FakeRapporto) -> None:
        job_id = "j" * 128
        await gateway.send(self.message(job_id))
        assert fake.requests[-1].form["partnerMsgId"] == partner_msg_id(job_id)
        assert len(fake.messages) == 1

    async def test_resend_of_a_job_gets_the_first_id(self, gateway: RapportoGateway, fake: FakeRapporto) -> None:
        first = await gateway.send(self.message())
        second = await gateway.send(self.message())
        assert first.provider_message_id == second.provider_message_id
        assert [r.form["partnerMsgId"] for r in fake.requests] == ["job-1", "job-1"]
        assert len(fake.messages) == 1

    async def test_ambiguous_send_then_resend_sends_once(self, gateway: RapportoGateway, fake: FakeRapporto) -> None:
        fake.reset_after_accept_next(1)
        with pytest.raises(Ambiguous, match="reset"):
            await gateway.send(self.message())
        receipt = await gateway.send(self.message())
        assert receipt.provider_message_id == str(fake.messages[0].id)
        assert len(fake.messages) == 1

    async def test_repeat_while_first_in_flight_is_transient(
        self, http: aiohttp.ClientSession, fake: FakeRapporto
    ) -> None:
        fake.latency = 0.5
        gateway = self.make_gateway(http, fake.url)
        first, second = await asyncio.gather(
            gateway.send(self.message()), gateway.send(self.message()), return_exceptions=True
        )
        outcomes = sorted([first, second], key=lambda o: isinstance(o, Exception))
        assert isinstance(outcomes[0], Receipt)
        assert isinstance(outcomes[1], Transient)
        assert not isinstance(outcomes[1], RateLimited)
        assert outcomes[1].code == "rapporto.503"
        assert len(fake.messages) == 1

    @pytest.mark.parametrize("status", sorted(ERRORS))
    async def test_error_table(self, gateway: RapportoGateway, fake: FakeRapporto, status: int) -> None:
        fake.fail_next(1, status)
        expected = ERRORS[status].error
        with pytest.raises(GatewayError) as info:
            await gateway.send(self.message())
        assert type(info.value) is expected
        assert info.value.code == f"rapporto.{status}"
        if isinstance(info.value, RateLimited):
            assert info.value.retry_after == {408: 1.0, 500: 60.0}[status]
        assert len(fake.messages) == 0

    async def test_statuses_not_in_the_table(self, gateway: RapportoGateway, fake: FakeRapporto) -> None:
        fake.http_status_next(1, 404)
        with pytest.raises(Permanent, match=r"rapporto\.404"):
            await gateway.send(self.message())
        fake.http_status_next(1, 504)
        with pytest.raises(Transient, match=r"rapporto\.504"):
            await gateway.send(self.message())
        fake.http_status_next(1, 200)  # a 200 without "OK\n<id>": it may have been taken
        with pytest.raises(Ambiguous, match=r"rapporto\.bad_reply"):
            await gateway.send(self.message())

    async def test_wrong_password_text(self, http: aiohttp.ClientSession, fake: FakeRapporto) -> None:
        gateway = RapportoGateway(RapportoSettings(service_id=SERVICE, password="nope", url=fake.url), http)
        with pytest.raises(Permanent) as info:
            await gateway.send(self.message())
        assert (info.value.code, info.value.message) == ("rapporto.401", "wrong serviceId or pass: Invalid password")

    def test_an_echoed_password_is_masked(self) -> None:
        with pytest.raises(Permanent) as info:
            fail(ERRORS, 400, "rapporto", f"bad request pass={PASSWORD}&x=1", hide=PASSWORD)
        assert PASSWORD not in str(info.value)
        assert "pass=***" in info.value.message

    async def test_anti_duplicate_filter(self, http: aiohttp.ClientSession) -> None:
        async with FakeRapporto(SERVICE, PASSWORD, anti_duplicates=True) as fake:
            gateway = self.make_gateway(http, fake.url)
            await gateway.send(self.message("a"))
            with pytest.raises(Permanent, match=r"rapporto\.409"):
                await gateway.send(self.message("b"))  # another job, same number and text
        assert len(fake.messages) == 1

    @pytest.mark.parametrize(("code", "expected"), sorted(STATUSES.items()))
    def test_status_table(self, gateway: RapportoGateway, code: int, expected: tuple[State | None, str]) -> None:
        [report] = gateway.parse_callback(dlr_request("4095284975", code, "job-7")).reports
        assert (report.provider_message_id, report.job_id) == ("4095284975", "job-7")
        assert (report.state, report.raw_status) == (expected[0], str(code))
        assert (report.error is not None) == (expected[0] is State.UNDELIVERED)

    def test_undelivered_reason_and_unknown_status(self, gateway: RapportoGateway) -> None:
        [report] = gateway.parse_callback(dlr_request("7", 5, ext=2)).reports
        assert report.error is not None
        assert (report.error.code, report.error.message) == ("rapporto.ext.2", "absent subscriber")
        assert report.job_id is None
        [report] = gateway.parse_callback(dlr_request("7", 3)).reports  # not documented: not final
        assert (report.state, report.raw_status) == (None, "3")

    def test_hashed_partner_msg_id_is_not_a_job_id(self, gateway: RapportoGateway) -> None:
        request = dlr_request("7", 2, partner_msg_id("j" * 128))
        assert gateway.parse_callback(request).reports[0].job_id is None

    def test_report_reply_is_200(self, gateway: RapportoGateway) -> None:
        callback = gateway.parse_callback(dlr_request("7", 0))
        assert (callback.reply_status, callback.inbound) == (200, ())
        assert callback.reports[0].state is None

    def test_rest_v6_report(self, gateway: RapportoGateway) -> None:
        push = json_push({
            "id": "job-9", "mtNum": "7390612217", "status": 5, "type": "SMS", "doneDate": "2019-05-05T10:20:35+0300",
            "submitDate": "2019-05-05T10:20:30+0300", "destAddr": "79161234567", "partCount": "001", "errorCode": "8",
        })  # fmt: skip
        [report] = gateway.parse_callback(push).reports
        assert (report.provider_message_id, report.job_id, report.state) == ("7390612217", "job-9", State.UNDELIVERED)
        assert report.error is not None
        assert report.error.code == "rapporto.ext.8"
        assert report.at == datetime(2019, 5, 5, 7, 20, 35, tzinfo=UTC)

    def test_inbound_v5(self, gateway: RapportoGateway, fake: FakeRapporto) -> None:
        callback = gateway.parse_callback(fake.inbound("+79161234567", "Stop", short_number="ACME"))
        [sms] = callback.inbound
        assert (sms.from_, sms.to, sms.text) == ("+79161234567", "ACME", "Stop")
        assert sms.provider_message_id
        assert (callback.reply_status, callback.reply_body, callback.reports) == (204, "", ())

    def test_inbound_v6(self, gateway: RapportoGateway) -> None:
        push = json_push({
            "transactionId": "99", "destAddr": "ACME", "sourceAddr": "79161234567", "type": "SMS", "message": "STOP",
            "partCount": "001", "receivedDate": "2022-06-22T10:22:45+0300",
        })  # fmt: skip
        callback = gateway.parse_callback(push)
        assert [(s.from_, s.to, s.text, s.provider_message_id) for s in callback.inbound] == [
            ("+79161234567", "ACME", "STOP", "99")
        ]
        assert callback.reply_status == 204

    async def test_pushed_report_over_http(self, gateway: RapportoGateway, fake: FakeRapporto) -> None:
        receipt = await gateway.send(self.message())
        async with listener(gateway, LISTEN_PATH) as (url, parsed):
            status = await fake.push(url, fake.report(fake.messages[0], 2))
        assert status == 200
        [report] = parsed[0].reports
        assert (report.provider_message_id, report.job_id, report.state) == (
            receipt.provider_message_id,
            "job-1",
            State.DELIVERED,
        )

    def test_no_credential_in_repr(self, gateway: RapportoGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert SERVICE in repr(gateway)
