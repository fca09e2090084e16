"""Rapporto: the gateway contract against the fake Rapporto, then Rapporto's own quirks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

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
from gateways.rapporto import (
    BATCH_STATUSES,
    ERRORS,
    STATUSES,
    RapportoBatchGateway,
    RapportoGateway,
    _matched,
    partner_msg_id,
)
from smsfleet.contracts import State
from smsfleet.kinds import RapportoSettings
from smsfleet.senders import SenderError, parse_sender
from tests.fakes._rapporto_family import json_push, listener
from tests.fakes.rapporto import FakeRapporto, FakeRapportoBatch, dlr_request

from .contract import GatewayContract

SERVICE, PASSWORD, KEY = "acme", "s3cret-Pa55", "K3yOfAcme0123"
STATE_CODES = {State.DELIVERED: 2, State.UNDELIVERED: 5}
BATCH_CODES = {State.DELIVERED: "DELIVERED", State.UNDELIVERED: "UNDELIVERABLE", State.EXPIRED: "EXPIRED"}
BATCH_CODES[State.REJECTED] = "REJECTED"
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


class TestRapportoBatch(GatewayContract[FakeRapportoBatch]):
    """The REST batch API, chosen by a `key` in the settings."""

    def fake_server(self) -> FakeRapportoBatch:
        return FakeRapportoBatch(key=KEY, names=(SERVICE, "ACME"))

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> RapportoGateway:
        return RapportoGateway(RapportoSettings(service_id=SERVICE, key=KEY, url=url), http)

    def fake_permanent_error(self, fake: FakeRapportoBatch) -> None:
        fake.reject_next(1, "invalid", "to")

    def assert_auth_on_wire(self, fake: FakeRapportoBatch) -> None:
        seen = fake.requests[-1]
        assert seen.headers["Authorization"] == f"Key {KEY}"
        assert seen.query == {}
        assert KEY.encode() not in seen.body

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        body = {"messageId": receipt.provider_message_id, "ts": 1613404835977, "status": BATCH_CODES[state]}
        return json_push(body | {"id": partner_msg_id(message.job_id)})

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [
            json_push({"messageId": "", "status": "DELIVERED"}),
            json_push({"messageId": "12x", "status": "DELIVERED"}),
            json_push({"messageId": "12", "status": 2}),
            json_push({"messageId": "12"}),
            json_push({"messageId": None, "status": "SENT"}),
        ]

    # --- the batch API's own ------------------------------------------------------------------------------
    def test_the_key_chooses_the_batch_api(self, http: aiohttp.ClientSession) -> None:
        batch = RapportoGateway(RapportoSettings(service_id=SERVICE, key=KEY, url="http://x"), http)
        classic = RapportoGateway(RapportoSettings(service_id=SERVICE, password=PASSWORD, url="http://x"), http)
        assert type(batch) is RapportoBatchGateway
        assert type(classic) is RapportoGateway
        assert (batch.max_batch, classic.max_batch) == (1000, 1)
        assert KEY not in repr(batch)
        assert KEY not in repr(batch.settings)

    def test_password_or_key_is_required(self) -> None:
        settings = {"service_id": SERVICE, "url": "http://x"}
        doc = {"id": "r", "gateway": "rapporto", "accounts": ["a"], "settings": settings}
        with pytest.raises(SenderError, match="password"):
            parse_sender(doc)
        sender = parse_sender(doc | {"settings": settings | {"key": KEY}})
        assert isinstance(sender.settings, RapportoSettings)
        assert sender.settings.key == KEY

    async def test_wire(self, gateway: RapportoGateway, fake: FakeRapportoBatch) -> None:
        soon, later = datetime.now(UTC) + timedelta(seconds=10), datetime.now(UTC) + timedelta(days=10)
        messages = [
            self.message("a", text="Привет", originator="ACME", callback_url="https://hooks.example/r?token=t"),
            self.message("b", to="+79031234567", valid_until=soon),
            self.message("c" * 60, valid_until=later),
        ]
        outcomes = await gateway.send_many(messages)
        [seen] = fake.requests
        assert (seen.method, seen.path, seen.headers["Content-Type"]) == ("POST", "/batch", "application/json")
        assert seen.json == {
            "messages": [
                {"from": "ACME", "to": "79161234567", "text": "Привет", "id": "a",
                 "callbackUrl": "https://hooks.example/r?token=t"},
                {"from": SERVICE, "to": "79031234567", "text": messages[1].text, "id": "b", "validity": 60},
                {"from": SERVICE, "to": "79161234567", "text": messages[2].text, "id": partner_msg_id("c" * 60),
                 "validity": 259_200},
            ]
        }  # fmt: skip
        taken = {m.partner_msg_id: str(m.id) for m in fake.messages}
        ids = [partner_msg_id(m.job_id) for m in messages]
        assert [o.provider_message_id for o in outcomes if isinstance(o, Receipt)] == [taken[i] for i in ids]

    async def test_a_rejected_message_fails_only_its_job(
        self, gateway: RapportoGateway, fake: FakeRapportoBatch
    ) -> None:
        outcomes = await gateway.send_many([self.message("a"), self.message("b", originator="NOPE"), self.message("c")])
        assert [type(o) for o in outcomes] == [Receipt, Permanent, Receipt]
        assert isinstance(outcomes[1], Permanent)
        assert outcomes[1].code == "rapporto.not.available"
        assert len(fake.requests) == 1
        assert [m.partner_msg_id for m in fake.messages] == ["a", "c"]

    async def test_an_unknown_rejection_is_transient(self, gateway: RapportoGateway, fake: FakeRapportoBatch) -> None:
        fake.reject_next(1, "unknown", "")
        [outcome] = await gateway.send_many([self.message()])
        assert isinstance(outcome, Transient)
        assert outcome.code == "rapporto.unknown"
        assert fake.messages == []

    async def test_a_request_too_large_is_sent_message_by_message(self, http: aiohttp.ClientSession) -> None:
        """Rapporto's maximum is set per account: a request over it is refused with one entry, not one per
        message; none was taken, so each is sent alone rather than taken for ambiguous."""
        async with FakeRapportoBatch(key=KEY, names=(SERVICE,), max_messages=2) as fake:
            gateway = self.make_gateway(http, fake.url)
            outcomes = await gateway.send_many(self.batch(3))
        assert [type(o) for o in outcomes] == [Receipt] * 3
        assert [len(r.json["messages"]) for r in fake.requests] == [3, 1, 1, 1]
        assert len(fake.messages) == 3

    async def test_a_request_refused_with_400_is_sent_message_by_message(
        self, gateway: RapportoGateway, fake: FakeRapportoBatch
    ) -> None:
        fake.http_status_next(1, 400)
        assert [type(o) for o in await gateway.send_many(self.batch(3))] == [Receipt] * 3
        assert [len(r.json["messages"]) for r in fake.requests] == [3, 1, 1, 1]
        fake.http_status_next(1, 400)
        [outcome] = await gateway.send_many([self.message("alone")])
        assert isinstance(outcome, Permanent)
        assert outcome.code == "rapporto.400"

    async def test_a_wrong_key_fails_every_message(self, http: aiohttp.ClientSession, fake: FakeRapportoBatch) -> None:
        gateway = RapportoGateway(RapportoSettings(service_id=SERVICE, key="wrong0key", url=fake.url), http)
        outcomes = await gateway.send_many(self.batch(3))
        assert [type(o) for o in outcomes] == [Permanent] * 3
        assert {o.code for o in outcomes if isinstance(o, GatewayError)} == {"rapporto.401"}
        assert len(fake.requests) == 1
        assert all("wrong0key" not in str(o) for o in outcomes)

    async def test_a_reply_without_results_is_ambiguous(
        self, gateway: RapportoGateway, fake: FakeRapportoBatch
    ) -> None:
        fake.http_status_next(1, 200)  # a 200 that is not a batch reply: the messages may have been taken
        outcomes = await gateway.send_many(self.batch(2))
        assert [type(o) for o in outcomes] == [Ambiguous] * 2

    def test_results_are_matched_by_the_ids_they_echo(self) -> None:
        a, b = {"code": "OK", "messageId": "1", "id": "a"}, {"code": "OK", "messageId": "2", "id": "b"}
        assert _matched([b, a], ["a", "b"]) == [a, b]
        bare = [{"code": "OK", "messageId": "1"}, {"code": "OK", "messageId": "2"}]
        assert _matched(bare, ["a", "b"]) == bare  # no ids: by position
        assert _matched([a, {**b, "id": "x"}], ["a", "b"]) is None
        assert _matched([a, bare[1]], ["a", "b"]) is None  # some echo, some do not
        assert _matched([a], ["a", "b"]) is None
        assert _matched({"result": [a]}, ["a"]) is None
        assert _matched([{**a, "id": ["a"]}, b], ["a", "b"]) is None  # an id that is no string: no telling

    async def test_a_malformed_reply_is_ambiguous_not_a_crash(
        self, gateway: RapportoGateway, fake: FakeRapportoBatch
    ) -> None:
        results = (
            [{"code": "REJECTED", "reasons": 5}, {"code": "OK"}],
            [{"code": "OK", "messageId": "1", "id": {}}, {"code": "OK", "messageId": "2", "id": "job-batch-1"}],
            [{"code": "OK", "messageId": "1"}, "OK"],
            "OK",
        )
        for result in results:
            fake.result_next(result)
            outcomes = await gateway.send_many(self.batch(2))
            assert [type(o) for o in outcomes] == ([Permanent, Ambiguous] if result is results[0] else [Ambiguous] * 2)
        assert fake.messages == []

    @pytest.mark.parametrize(("status", "expected"), sorted(BATCH_STATUSES.items()))
    def test_batch_status_table(
        self, gateway: RapportoGateway, status: str, expected: tuple[State | None, str]
    ) -> None:
        push = json_push({"messageId": "3597944866766620289", "ts": 1613404835977, "status": status, "id": "j-1"})
        [report] = gateway.parse_callback(push).reports
        assert (report.provider_message_id, report.job_id, report.raw_status) == ("3597944866766620289", "j-1", status)
        assert report.state is expected[0]
        assert report.at == datetime(2021, 2, 15, 16, 0, 35, 977000, tzinfo=UTC)
        assert (report.error is None) == (expected[0] in (None, State.DELIVERED))

    def test_a_batch_report_on_the_classic_gateway(self, http: aiohttp.ClientSession) -> None:
        """Both APIs' reports may reach Rapporto's one fixed URL, whose parser has no sender's settings."""
        classic = RapportoGateway(RapportoSettings(service_id=SERVICE, password=PASSWORD, url="http://x"), http)
        push = json_push({"messageId": "7", "ts": 1613404835977, "status": "UNDELIVERABLE", "errorCode": 0})
        [report] = classic.parse_callback(push).reports
        assert (report.provider_message_id, report.state, report.job_id) == ("7", State.UNDELIVERED, None)

    async def test_pushed_report_over_http(self, gateway: RapportoGateway, fake: FakeRapportoBatch) -> None:
        [receipt] = await gateway.send_many([self.message()])
        assert isinstance(receipt, Receipt)
        async with listener(gateway, LISTEN_PATH) as (url, parsed):
            status = await fake.push(url, fake.report(fake.messages[0], "DELIVERED"))
        assert status == 200
        [report] = parsed[0].reports
        assert (report.provider_message_id, report.job_id, report.state) == (
            receipt.provider_message_id, "job-1", State.DELIVERED,
        )  # fmt: skip
