"""Infobip: the gateway contract against the fake Infobip (v3 API), then Infobip's own quirks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from gateways import (
    Ambiguous,
    CallbackRequest,
    GatewayError,
    Inbound,
    Outgoing,
    Permanent,
    RateLimited,
    Receipt,
    StatusRef,
    Transient,
    gateway_class,
)
from gateways.infobip import ERRORS, V2, V3, InfobipGateway
from smsfleet.contracts import State
from smsfleet.kinds import InfobipSettings
from tests.fakes._serve import serve
from tests.fakes.infobip import FakeInfobip, FakeSms

from .contract import GatewayContract

KEY = "k3y-0123456789abcdef"
HOOK = "https://hooks.example.com/smslistener/listen_type/sms_infobip?sender=i1&token=t0k"
STATE_CODES = {State.DELIVERED: (5, 0), State.UNDELIVERED: (9, 1), State.EXPIRED: (15, 0), State.REJECTED: (14, 0)}
#: every status the fake knows -> the state it must map to (None: not final)
EXPECTED = {
    26: None,
    7: None,
    3: None,
    2: None,  # DELIVERED_TO_OPERATOR: an intermediate report
    5: State.DELIVERED,
    4: State.UNDELIVERED,
    9: State.UNDELIVERED,
    15: State.EXPIRED,
    29: State.EXPIRED,
    87: State.REJECTED,
    6: State.REJECTED,
    8: State.REJECTED,
    12: State.REJECTED,
    14: State.REJECTED,
    20: State.REJECTED,
    21: State.REJECTED,
    23: None,  # a refused resend says nothing about the message
    25: State.REJECTED,
    52: State.REJECTED,
}
#: Infobip's own example of an inbound push (its SDK's webhook model test), byte for byte but indentation
SDK_INBOUND = b"""{"results": [{"messageId": "817790313235066447", "from": "385916242493", "to": "385921004026",
  "text": "QUIZ Correct answer is Paris", "cleanText": "Correct answer is Paris", "keyword": "QUIZ",
  "receivedAt": "2023-08-01T16:10:00+05:30", "smsCount": 1, "price": {"pricePerMessage": 0.00, "currency": "EUR"},
  "callbackData": "callbackData"}], "messageCount": 1, "pendingMessageCount": 0}"""


def push(body: bytes) -> CallbackRequest:
    return CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/json"}, body=body)


def report_push(*sms: FakeSms) -> CallbackRequest:
    return push(json.dumps({"results": [s.report() for s in sms]}).encode())


def fake_sms(message_id: str, status: int, error: int = 0) -> FakeSms:
    return FakeSms(message_id, "b1", "79161234567", "ACME", "hi", True, {}, 1, status=status, error=error)


class TestInfobip(GatewayContract[FakeInfobip]):
    def fake_server(self) -> FakeInfobip:
        return FakeInfobip(api_key=KEY)

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> InfobipGateway:
        return InfobipGateway(InfobipSettings(url=url, api_token=KEY), http)

    def fake_permanent_error(self, fake: FakeInfobip) -> None:
        fake.reject_next(1, 52)

    def assert_auth_on_wire(self, fake: FakeInfobip) -> None:
        assert fake.requests[-1].headers["Authorization"] == f"App {KEY}"

    def fake_set_state(self, fake: FakeInfobip, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_status(receipt.provider_message_id or "", *STATE_CODES[state])

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        return report_push(fake_sms(receipt.provider_message_id or "", *STATE_CODES[state]))

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [
            push(b"<reportResponse><results/></reportResponse>"),  # XML: we never ask for it
            push(b'[{"messageId": "1"}]'),
            push(b'{"results": "none"}'),
            push(b'{"results": [5]}'),
            push(b'{"results": [{"messageId": "1", "status": {"groupId": "3"}}]}'),
            push(b'{"results": [{"status": {"groupId": 3, "id": 5}}]}'),  # a report without messageId
            push(b'{"results": [{"messageId": "1", "to": "385921004026"}]}'),  # neither report nor SMS
        ]

    # --- Infobip's own quirks ------------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("infobip") is InfobipGateway

    async def test_v3_wire_request(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        receipt = await gateway.send(self.message(originator="ACME"))
        [seen] = fake.requests
        assert (seen.method, seen.path, seen.query) == ("POST", "/sms/3/messages", {})
        assert (seen.headers["Content-Type"], seen.headers["Accept"]) == ("application/json", "application/json")
        assert seen.json() == {
            "messages": [
                {
                    "destinations": [{"to": "79161234567", "messageId": "job-1"}],
                    "content": {"text": "Hello from the contract suite"},
                    "sender": "ACME",
                }
            ]
        }
        assert (receipt.provider_message_id, receipt.parts) == ("job-1", 1)
        assert (fake.messages[0].to, fake.messages[0].sender) == ("79161234567", "ACME")

    @pytest.mark.parametrize(
        ("suffix", "expected"),
        [
            ("", {"webhooks": {"delivery": {"url": HOOK}, "contentType": "application/json"}}),
            ("/sms/2/text/advanced", {"notifyUrl": HOOK, "notifyContentType": "application/json"}),
        ],
    )
    async def test_reports_are_pushed_to_the_receiving_url(
        self, http: aiohttp.ClientSession, fake: FakeInfobip, suffix: str, expected: dict[str, object]
    ) -> None:
        gateway = self.make_gateway(http, fake.url + suffix)
        await gateway.send(self.message(callback_url=HOOK))
        [sms] = fake.requests[-1].json()["messages"]
        assert {k: v for k, v in sms.items() if k in ("webhooks", "notifyUrl", "notifyContentType")} == expected

    @pytest.mark.parametrize("suffix", ["", "/", "/sms/3/messages", "/sms/3/messages/"])
    def test_v3_urls(self, http: aiohttp.ClientSession, suffix: str) -> None:
        gateway = self.make_gateway(http, "https://xyz.api.infobip.com" + suffix)
        assert (gateway.api, gateway.base_url) == (V3, "https://xyz.api.infobip.com")

    async def test_v2_by_url_path(self, http: aiohttp.ClientSession, fake: FakeInfobip) -> None:
        gateway = self.make_gateway(http, fake.url + "/sms/2/text/advanced")
        assert gateway.api == V2
        message = self.message(originator="ACME", valid_until=datetime.now(UTC) + timedelta(minutes=89, seconds=30))
        receipt = await gateway.send(message)
        seen = fake.requests[-1]
        assert seen.path == "/sms/2/text/advanced"
        assert seen.json() == {
            "messages": [
                {
                    "destinations": [{"to": "79161234567", "messageId": "job-1"}],
                    "text": "Hello from the contract suite",
                    "from": "ACME",
                    "validityPeriod": 90,
                }
            ]
        }
        assert (receipt.provider_message_id, receipt.parts) == ("job-1", None)  # v2 gives no count by default
        fake.set_status("job-1", 5)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id="job-1", to=self.phone))
        assert (report.state, report.raw_status) == (State.DELIVERED, "DELIVERED_TO_HANDSET")
        assert fake.requests[-1].path == "/sms/1/reports"

    @pytest.mark.parametrize(
        ("lifetime", "minutes"), [(timedelta(seconds=20), 1), (timedelta(hours=2), 120), (timedelta(days=3), 2880)]
    )
    async def test_validity_period(
        self, gateway: InfobipGateway, fake: FakeInfobip, lifetime: timedelta, minutes: int
    ) -> None:
        await gateway.send(self.message(valid_until=datetime.now(UTC) + lifetime))
        options = fake.requests[-1].json()["messages"][0]["options"]
        assert options == {"validityPeriod": {"amount": minutes, "timeUnit": "MINUTES"}}
        assert len(fake.messages) == 1  # the fake refuses more than 48 h

    async def test_cyrillic_text(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        text = "Привет! Ваш код: 4821"
        receipt = await gateway.send(self.message(text=text))
        assert fake.messages[0].text == text
        assert receipt.parts == 1

    async def test_resend_of_a_job_is_deduplicated(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        first = await gateway.send(self.message())
        second = await gateway.send(self.message())  # Infobip refuses the repeated messageId with status 23
        assert first.provider_message_id == second.provider_message_id == "job-1"
        assert fake.refused == [("job-1", 23)]
        assert len(fake.messages) == 1

    async def test_ambiguous_send_then_resend_sends_once(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        fake.reset_after_accept_next(1)
        with pytest.raises(Ambiguous, match="reset"):
            await gateway.send(self.message())
        receipt = await gateway.send(self.message())
        assert receipt.provider_message_id == "job-1"
        assert [sms.message_id for sms in fake.messages] == ["job-1"]

    @pytest.mark.parametrize(
        ("status_id", "expected"),
        [(20, Transient), (21, Transient), *((i, Permanent) for i in (6, 8, 12, 14, 25, 52))],
    )
    async def test_refusal_table(
        self, gateway: InfobipGateway, fake: FakeInfobip, status_id: int, expected: type[GatewayError]
    ) -> None:
        fake.reject_next(1, status_id)
        with pytest.raises(expected) as info:
            await gateway.send(self.message())
        assert type(info.value) is expected
        assert info.value.code == f"infobip.status.{status_id}"
        assert ERRORS.get(f"status.{status_id}", (Permanent, ""))[0] is expected
        assert not fake.messages

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 405])
    async def test_http_refusals(self, gateway: InfobipGateway, fake: FakeInfobip, status: int) -> None:
        fake.http_status_next(1, status)
        with pytest.raises(Permanent) as info:
            await gateway.send(self.message())
        assert info.value.code == f"http.{status}"

    async def test_validation_errors_are_permanent(self, gateway: InfobipGateway) -> None:
        with pytest.raises(Permanent, match="BAD_REQUEST"):
            await gateway.send(self.message(text=""))

    async def test_invalid_number_is_rejected(self, gateway: InfobipGateway) -> None:
        with pytest.raises(Permanent, match=r"infobip\.status\.8"):
            await gateway.send(Outgoing(job_id="j", to="+12", text="hi"))

    async def test_429_is_rate_limited(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        fake.http_status_next(1, 429)
        with pytest.raises(RateLimited) as info:
            await gateway.send(self.message())
        assert info.value.code == "http.429"
        assert not fake.messages

    async def test_200_without_statuses_is_ambiguous(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        fake.http_status_next(1, 200)
        with pytest.raises(Ambiguous, match=r"infobip\.bad_reply"):
            await gateway.send(self.message())

    @pytest.mark.parametrize(("status_id", "state"), list(EXPECTED.items()))
    async def test_status_table(
        self, gateway: InfobipGateway, fake: FakeInfobip, status_id: int, state: State | None
    ) -> None:
        await gateway.send(self.message())
        fake.set_status("job-1", status_id)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id="job-1", to=self.phone))
        assert (report.state, report.provider_message_id, report.job_id) == (state, "job-1", "job-1")
        assert (report.error is None) == (state in (None, State.DELIVERED))
        assert fake.requests[-1].path == "/sms/3/reports"
        assert fake.requests[-1].query == {"messageId": "job-1"}

    async def test_reports_are_pulled_once_then_logs_answer(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        await gateway.send(self.message())
        fake.set_status("job-1", 5)
        ref = StatusRef(job_id="job-1", provider_message_id="job-1", to=self.phone)
        first, second = await gateway.status(ref), await gateway.status(ref)
        assert first.state is second.state is State.DELIVERED
        assert [seen.path for seen in fake.requests[1:]] == ["/sms/3/reports", "/sms/3/reports", "/sms/3/logs"]
        assert not fake.pending_reports

    async def test_status_of_an_unknown_message(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        report = await gateway.status(StatusRef(job_id="never", provider_message_id=None, to=self.phone))
        assert (report.state, report.raw_status, report.provider_message_id) == (None, "NOT_FOUND", "never")
        assert [seen.query for seen in fake.requests] == [{"messageId": "never"}] * 2

    @pytest.mark.parametrize(("error_id", "lasting"), [(1, "permanent"), (6, "temporary")])
    async def test_error_object_and_permanent_flag(
        self, gateway: InfobipGateway, fake: FakeInfobip, error_id: int, lasting: str
    ) -> None:
        await gateway.send(self.message())
        fake.set_status("job-1", 9, error_id)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id="job-1", to=self.phone))
        assert report.state is State.UNDELIVERED
        assert report.error is not None
        assert report.error.code == f"infobip.error.{error_id}"
        assert report.error.message.endswith(f"({lasting})")

    def test_pushed_reports(self, gateway: InfobipGateway) -> None:
        callback = gateway.parse_callback(
            report_push(fake_sms("job-7", 2), fake_sms("job-7", 5), fake_sms("job-8", 15))
        )
        assert [(r.job_id, r.state, r.raw_status) for r in callback.reports] == [
            ("job-7", None, "DELIVERED_TO_OPERATOR"),
            ("job-7", State.DELIVERED, "DELIVERED_TO_HANDSET"),
            ("job-8", State.EXPIRED, "EXPIRED_EXPIRED"),
        ]
        assert all(r.at is not None and r.at.tzinfo is not None for r in callback.reports)
        assert callback.reports[2].error is not None
        assert callback.reports[2].error.code == "infobip.status.15"
        assert (callback.inbound, callback.reply_status) == ([], 200)

    def test_pushed_duplicate_refusal_is_not_the_message_fate(self, gateway: InfobipGateway) -> None:
        [report] = gateway.parse_callback(report_push(fake_sms("job-7", 23))).reports
        assert (report.state, report.error) == (None, None)

    def test_inbound_infobip_example(self, gateway: InfobipGateway) -> None:
        callback = gateway.parse_callback(push(SDK_INBOUND))
        assert callback.reports == []
        assert callback.inbound == [
            Inbound(
                from_="+385916242493",
                to="+385921004026",
                text="QUIZ Correct answer is Paris",  # the whole SMS, not cleanText
                provider_message_id="817790313235066447",
                at=datetime(2023, 8, 1, 16, 10, tzinfo=timezone(timedelta(hours=5, minutes=30))),
                keyword="QUIZ",  # Infobip's match, for the stop-word check
            )
        ]

    def test_inbound_several_in_one_push(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        body = fake.inbound_body(
            ("+79161234567", "STOP"),
            ("+79169876543", "Стоп рассылке, пожалуйста"),
            ("+4917612345678", "stop"),
            ("+79160000001", "Спасибо 👍"),
        )
        results = json.loads(body)["results"]
        assert (results[0]["keyword"], results[0]["cleanText"]) == ("STOP", "")  # why we read `text`
        inbound = gateway.parse_callback(push(body)).inbound
        assert [(i.from_, i.to, i.text) for i in inbound] == [
            ("+79161234567", "+447491163443", "STOP"),
            ("+79169876543", "+447491163443", "Стоп рассылке, пожалуйста"),
            ("+4917612345678", "+447491163443", "stop"),
            ("+79160000001", "+447491163443", "Спасибо 👍"),
        ]
        assert [i.provider_message_id for i in inbound] == [r["messageId"] for r in results]
        assert all(i.at is not None and i.at.utcoffset() == timedelta(0) for i in inbound)  # "...+0000"

    def test_inbound_to_a_short_code(self, gateway: InfobipGateway) -> None:
        body = {"results": [{"messageId": "1", "from": "79161234567", "to": "4545", "text": "STOP"}]}
        [inbound] = gateway.parse_callback(push(json.dumps(body).encode())).inbound
        assert (inbound.from_, inbound.to, inbound.at) == ("+79161234567", "4545", None)

    def test_no_credential_in_repr(self, gateway: InfobipGateway) -> None:
        assert KEY not in repr(gateway)
        assert "InfobipGateway(url=" in repr(gateway)

    async def test_lookup_errors_are_transient(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        fake.http_status_next(1, 401)
        with pytest.raises(Transient, match=r"infobip\.lookup\.401") as info:
            await gateway.status(StatusRef(job_id="job-1", provider_message_id="job-1", to=self.phone))
        assert not isinstance(info.value, Permanent | Ambiguous | RateLimited)
        assert isinstance(info.value, GatewayError)

    # --- batches -------------------------------------------------------------------------------------------
    def test_batch_size_and_rate(self) -> None:
        assert (InfobipGateway.max_batch, InfobipGateway.rate_per) == (1000, "message")

    @pytest.mark.parametrize("suffix", ["", "/sms/2/text/advanced"])
    async def test_a_batch_is_one_request(self, http: aiohttp.ClientSession, fake: FakeInfobip, suffix: str) -> None:
        gateway = self.make_gateway(http, fake.url + suffix)
        messages = [self.message(f"job-{i}", to=f"+7916123456{i}", originator="ACME") for i in range(3)]
        outcomes = await gateway.send_many(messages)
        [seen] = fake.requests
        singles: list[Any] = []
        for m in messages:  # each message object is what `send` puts for that message
            await gateway.send(msgspec.structs.replace(m, job_id=m.job_id + "-alone"))
            singles += fake.requests[-1].json()["messages"]
        for sms in singles:
            sms["destinations"][0]["messageId"] = sms["destinations"][0]["messageId"].removesuffix("-alone")
        assert seen.json() == {"messages": singles}
        parts = 1 if suffix == "" else None  # v2 gives no part count by default
        assert outcomes == [Receipt(provider_message_id=f"job-{i}", parts=parts) for i in range(3)]
        assert [(s.message_id, s.to) for s in fake.messages[:3]] == [(f"job-{i}", f"7916123456{i}") for i in range(3)]

    async def test_one_refused_destination_fails_only_that_message(
        self, gateway: InfobipGateway, fake: FakeInfobip
    ) -> None:
        good, _, other = self.batch(3)
        bad = self.message("job-bad", to="+12")
        outcomes = await gateway.send_many([good, bad, other])
        assert [type(o) for o in outcomes] == [Receipt, Permanent, Receipt]
        assert isinstance(outcomes[1], Permanent)
        assert outcomes[1].code == "infobip.status.8"
        assert (fake.send_requests, [s.message_id for s in fake.messages]) == (1, [good.job_id, other.job_id])

    async def test_a_resent_batch_is_taken_once(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        messages = self.batch(3)
        first = await gateway.send_many(messages)
        again = await gateway.send_many(messages)  # every messageId refused as a duplicate (status 23)
        assert [o.provider_message_id for o in again if isinstance(o, Receipt)] == [m.job_id for m in messages]
        assert all(isinstance(o, Receipt) for o in first)
        assert len(fake.messages) == 3

    async def test_a_400_to_a_batch_sends_each_message_alone(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        good, _, other = self.batch(3)
        blank = self.message("job-blank", text="")  # Infobip refuses the whole request: which one is not said
        outcomes = await gateway.send_many([good, blank, other])
        assert [type(o) for o in outcomes] == [Receipt, Permanent, Receipt]
        assert isinstance(outcomes[1], Permanent)
        assert outcomes[1].code == "http.400"
        assert fake.send_requests == 1 + 3
        assert [s.message_id for s in fake.messages] == [good.job_id, other.job_id]

    async def test_a_request_refusal_is_every_message(self, gateway: InfobipGateway, fake: FakeInfobip) -> None:
        fake.http_status_next(1, 401)
        outcomes = await gateway.send_many(self.batch(3))
        assert [(type(o), getattr(o, "code", "")) for o in outcomes] == [(Permanent, "http.401")] * 3
        assert (fake.send_requests, fake.messages) == (1, [])

    async def test_reply_is_matched_by_message_id(self, http: aiohttp.ClientSession) -> None:
        """Never by position: a status for another id, a missing or a doubled one is Ambiguous for that message."""
        a, b, c, d = self.batch(4)
        pending = {"groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED"}
        rejected = {"groupId": 5, "groupName": "REJECTED", "id": 52, "name": "REJECTED_DESTINATION"}
        reply = {
            "bulkId": "b1",
            "messages": [
                {"messageId": d.job_id, "status": pending},  # d first: order is not what counts
                {"messageId": c.job_id, "status": rejected},
                {"messageId": "someone-else", "status": pending},
                {"messageId": b.job_id, "status": pending},
                {"messageId": b.job_id, "status": pending},
            ],
        }

        async def answer(request: web.Request) -> web.Response:
            return web.json_response(reply)

        app = web.Application()
        app.router.add_post("/sms/3/messages", answer)
        runner, url = await serve(app)
        try:
            outcomes = await self.make_gateway(http, url).send_many([a, b, c, d])
        finally:
            await runner.cleanup()
        assert [type(o) for o in outcomes] == [Ambiguous, Ambiguous, Permanent, Receipt]
        assert outcomes[3] == Receipt(provider_message_id=d.job_id)
