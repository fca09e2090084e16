"""BulkSMS.com: the gateway contract against the fake BulkSMS, then BulkSMS's own quirks."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import pytest

from gateways import (
    Ambiguous,
    CallbackRequest,
    Inbound,
    Outgoing,
    Permanent,
    Receipt,
    StatusRef,
    Transient,
    gateway_class,
)
from gateways.bulksms import ERRORS, STATUSES, BulksmsGateway, user_supplied_id
from smsfleet.contracts import State
from smsfleet.kinds import BulksmsSettings
from tests.fakes.bulksms import FakeBulksms, FakeMessage

from .contract import GatewayContract

LOGIN, PASSWORD = "acme", "s3cret-Pa55"
STATE_CODES = {
    State.DELIVERED: "DELIVERED",
    State.UNDELIVERED: "FAILED.HANDSET_ERROR",
    State.EXPIRED: "FAILED.EXPIRED",
    State.REJECTED: "FAILED.BLOCKED",
}
JSON = {"Content-Type": "application/json"}
LONG_JOB = "campaign-42/recipient-000123"  # 28 characters: too long for userSuppliedId


def webhook(body: bytes) -> CallbackRequest:
    return CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/json"}, body=body)


def sent_message(pid: str, status: str) -> bytes:
    """BulkSMS's SENT webhook body for one message, built without a server (the contract's hook has none)."""
    message = FakeMessage(pid, "79161234567", "hi", "TEXT", None, {"userSuppliedId": "job-1"}, {}, status=status)
    return json.dumps([message.as_json()]).encode()


class TestBulksms(GatewayContract[FakeBulksms]):
    def fake_server(self) -> FakeBulksms:
        return FakeBulksms(username=LOGIN, password=PASSWORD)

    def make_gateway(self, http: aiohttp.ClientSession, url: str, max_parts: int | None = None) -> BulksmsGateway:
        return BulksmsGateway(BulksmsSettings(login=LOGIN, password=PASSWORD, base_url=url, max_parts=max_parts), http)

    def fake_permanent_error(self, fake: FakeBulksms) -> None:
        fake.fail_next(1, 403, "insufficient-credits")

    def assert_auth_on_wire(self, fake: FakeBulksms) -> None:
        expected = "Basic " + base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
        assert fake.requests[-1].headers["Authorization"] == expected

    def fake_set_state(self, fake: FakeBulksms, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_status(receipt.provider_message_id or "", STATE_CODES[state])

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        return webhook(sent_message(receipt.provider_message_id or "", STATE_CODES[state]))

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [
            webhook(b"id=1&status=DELIVERED"),
            webhook(b'[{"type": "SENT", "status": {"type": "DELIVERED"}}]'),  # no id
            webhook(b'[{"id": "1", "type": "SENT", "status": {"id": "DELIVERED.null"}}]'),  # no status.type
            webhook(b'[{"id": "2", "type": "RECEIVED", "to": "27820000000"}]'),  # no from, no body
            webhook(b"[1, 2]"),
        ]

    # --- BulkSMS's own quirks ------------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("bulksms") is BulksmsGateway

    async def test_wire_request(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        receipt = await gateway.send(self.message(originator="ACME"))
        [seen] = fake.requests
        assert (seen.method, seen.path) == ("POST", "/v1/messages")
        assert seen.query == {"deduplication-id": self.message().ref, "auto-unicode": "true"}
        assert seen.headers["Content-Type"] == "application/json"
        assert seen.json() == [
            {
                "to": "+79161234567",
                "body": "Hello from the contract suite",
                "longMessageMaxParts": 10,
                "userSuppliedId": "job-1",
                "from": "ACME",
            }
        ]
        [message] = fake.messages
        assert (receipt.provider_message_id, receipt.parts) == (message.id, None)  # parts are not known yet
        assert (message.to, message.sender, message.encoding) == ("79161234567", "ACME", "TEXT")

    async def test_callback_url_is_not_sent(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        await gateway.send(self.message(callback_url="https://hooks.example.com/smslistener/listen_type/sms_bulksms"))
        assert "hooks.example.com" not in fake.requests[-1].body.decode()  # webhooks are set per account

    async def test_cyrillic_goes_as_unicode(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        await gateway.send(self.message(text="Привет, мир"))
        assert (fake.messages[0].body, fake.messages[0].encoding) == ("Привет, мир", "UNICODE")

    async def test_fake_garbles_cyrillic_without_auto_unicode(self, fake: FakeBulksms) -> None:
        """The reason for auto-unicode: without it BulkSMS (and the fake) sends '?' for every Cyrillic letter."""
        auth = {"Authorization": "Basic " + base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()}
        async with aiohttp.ClientSession() as http:
            body = [{"to": "+79161234567", "body": "Да!"}]
            async with http.post(f"{fake.url}/messages", json=body, headers=auth) as resp:
                assert resp.status == 201
        assert fake.messages[0].body == "??!"

    async def test_max_parts_from_settings(self, http: aiohttp.ClientSession, fake: FakeBulksms) -> None:
        gateway = self.make_gateway(http, fake.url, max_parts=4)
        await gateway.send(self.message(text="x" * 600))  # 4 parts
        assert fake.requests[-1].json()[0]["longMessageMaxParts"] == 4
        assert fake.messages[0].parts == 4

    async def test_default_max_parts_beats_bulksms_default_of_3(
        self, gateway: BulksmsGateway, fake: FakeBulksms
    ) -> None:
        await gateway.send(self.message(text="y" * 1000))  # 7 parts: BulkSMS would refuse it with its default
        assert fake.requests[-1].json()[0]["longMessageMaxParts"] == BulksmsGateway.max_parts
        assert fake.messages[0].parts == 7

    @pytest.mark.parametrize(
        ("originator", "sent"),
        [("12345", {"type": "SHORTCODE", "address": "12345"}), ("+447700900123", "+447700900123")],
    )
    async def test_originator_forms(
        self, gateway: BulksmsGateway, fake: FakeBulksms, originator: str, sent: object
    ) -> None:
        await gateway.send(self.message(originator=originator))
        assert fake.requests[-1].json()[0]["from"] == sent
        assert fake.messages[0].sender == originator

    def test_user_supplied_id_from_the_job_id(self) -> None:
        assert user_supplied_id("job-1") == "job-1"
        long_id = user_supplied_id(LONG_JOB)
        assert len(long_id) == 20
        assert long_id.startswith("~")
        assert long_id == user_supplied_id(LONG_JOB)

    async def test_long_job_id(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        receipt = await gateway.send(self.message(LONG_JOB))
        assert fake.requests[-1].json()[0]["userSuppliedId"] == user_supplied_id(LONG_JOB)
        fake.set_status(receipt.provider_message_id or "", "DELIVERED")
        [report] = gateway.parse_callback(webhook(fake.webhook_body(receipt.provider_message_id or ""))).reports
        assert (report.provider_message_id, report.state) == (receipt.provider_message_id, State.DELIVERED)

    async def test_resend_of_a_job_is_deduplicated(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        first = await gateway.send(self.message())
        second = await gateway.send(self.message())
        assert first.provider_message_id == second.provider_message_id == fake.messages[0].id
        assert [seen.query["deduplication-id"] for seen in fake.requests] == [self.message().ref] * 2
        assert len(fake.messages) == 1

    async def test_deduplication_lasts_12_hours(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        await gateway.send(self.message())
        fake.clock_offset += 12 * 3600 + 1  # BulkSMS forgets a deduplication-id after about 12 h
        await gateway.send(self.message())
        assert len(fake.messages) == 2

    async def test_a_numeric_ref_is_required(self, gateway: BulksmsGateway) -> None:
        with pytest.raises(Permanent, match=r"bulksms\.no_ref"):  # never an id made up from the job id
            await gateway.send(self.message(ref=""))

    async def test_find(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        assert await gateway.find(self.message()) is None
        fake.reset_after_accept_next(1)
        with pytest.raises(Ambiguous, match="reset"):
            await gateway.send(self.message())
        found = await gateway.find(self.message())
        assert found is not None
        assert found.provider_message_id == fake.messages[0].id
        assert await gateway.find(self.message("job-2")) is None  # another job's userSuppliedId
        assert await gateway.find(self.message(text="another text")) is None  # the id set by someone else

    async def test_ambiguous_send_then_resend_sends_once(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        fake.reset_after_accept_next(1)
        with pytest.raises(Ambiguous, match="reset"):
            await gateway.send(self.message())
        receipt = await gateway.send(self.message())
        assert receipt.provider_message_id == fake.messages[0].id
        assert len(fake.messages) == 1

    @pytest.mark.parametrize("status", sorted(ERRORS))
    async def test_error_table(self, gateway: BulksmsGateway, fake: FakeBulksms, status: int) -> None:
        kind = {403: "insufficient-credits"}.get(status, "refused")
        fake.fail_next(1, status, kind)
        with pytest.raises(Permanent) as info:
            await gateway.send(self.message())
        assert info.value.code == f"bulksms.{status}.{kind}"
        assert "refused by the test" in info.value.message
        assert not fake.messages

    async def test_wrong_password_code(self, http: aiohttp.ClientSession, fake: FakeBulksms) -> None:
        gateway = BulksmsGateway(BulksmsSettings(login=LOGIN, password="nope", base_url=fake.url), http)
        with pytest.raises(Permanent) as info:
            await gateway.send(self.message())
        assert info.value.code == "bulksms.401.authentication-failed"

    async def test_invalid_number_is_permanent(self, gateway: BulksmsGateway) -> None:
        with pytest.raises(Permanent, match=r"bulksms\.400\.bad-request"):
            await gateway.send(Outgoing(job_id="j", to="+12", text="hi", ref="1"))

    async def test_2xx_without_messages_is_ambiguous(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        fake.http_status_next(1, 200)
        with pytest.raises(Ambiguous, match=r"bulksms\.bad_reply"):
            await gateway.send(self.message())

    @pytest.mark.parametrize(("raw", "expected"), sorted(STATUSES.items()))
    async def test_status_table(
        self, gateway: BulksmsGateway, fake: FakeBulksms, raw: str, expected: tuple[State | None, str]
    ) -> None:
        receipt = await gateway.send(self.message())
        pid = receipt.provider_message_id or ""
        fake.set_status(pid, raw)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=pid, to=self.phone))
        assert (report.state, report.raw_status, report.job_id) == (expected[0], raw, "job-1")
        assert (fake.requests[-1].method, fake.requests[-1].path) == ("GET", f"/v1/messages/{pid}")
        assert (report.error is not None) == (expected[0] not in (None, State.DELIVERED))
        if report.error is not None:
            assert report.error.code == f"bulksms.{raw}"

    async def test_status_not_found(self, gateway: BulksmsGateway) -> None:
        report = await gateway.status(StatusRef(job_id="job-9", provider_message_id="404404", to=self.phone))
        assert (report.state, report.raw_status, report.provider_message_id) == (None, "NOT_FOUND", "404404")

    async def test_status_without_an_id_is_transient(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        with pytest.raises(Transient, match=r"bulksms\.no_id"):
            await gateway.status(StatusRef(job_id="job-1", provider_message_id=None, to=self.phone))
        assert not fake.requests

    async def test_webhook_with_reports_and_replies(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        delivered = await gateway.send(self.message("job-a"))
        blocked = await gateway.send(self.message("job-b", to="+79160000001"))
        fake.set_status(delivered.provider_message_id or "", "DELIVERED")
        fake.set_status(blocked.provider_message_id or "", "FAILED.BLOCKED")
        sent = json.loads(fake.webhook_body(delivered.provider_message_id or "", blocked.provider_message_id or ""))
        received = json.loads(fake.received_body(("+79160000001", "STOP")))
        callback = gateway.parse_callback(webhook(json.dumps(sent + received).encode()))
        assert [(r.provider_message_id, r.job_id, r.state, r.raw_status) for r in callback.reports] == [
            (delivered.provider_message_id, None, State.DELIVERED, "DELIVERED"),  # matched by BulkSMS's id only
            (blocked.provider_message_id, None, State.REJECTED, "FAILED.BLOCKED"),
        ]
        assert [(i.from_, i.text) for i in callback.inbound] == [("+79160000001", "STOP")]  # its status is no report
        assert (callback.reply_status, callback.reply_body) == (200, "OK")

    def test_subtype_read_from_status_id(self, gateway: BulksmsGateway) -> None:
        body = b'[{"id": "7", "type": "SENT", "status": {"id": "FAILED.EXPIRED", "type": "FAILED"}}]'
        [report] = gateway.parse_callback(webhook(body)).reports
        assert (report.state, report.raw_status) == (State.EXPIRED, "FAILED.EXPIRED")

    def test_webhook_check_with_an_empty_array(self, gateway: BulksmsGateway) -> None:
        callback = gateway.parse_callback(webhook(b"[]"))
        assert (callback.reports, callback.inbound, callback.reply_status) == ([], [], 200)

    def test_inbound_sms(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        body = fake.received_body(("+79161234567", "Стоп"), ("+447700900123", "stop please"))
        [first, second] = gateway.parse_callback(webhook(body)).inbound
        items = json.loads(body)
        assert first == Inbound(
            from_="+79161234567",
            to="+27820000000",
            text="Стоп",
            provider_message_id=items[0]["id"],
            at=datetime(2024, 5, 6, 5, 8, 9, tzinfo=UTC),
        )
        assert (second.from_, second.text, second.provider_message_id) == (
            "+447700900123",
            "stop please",
            items[1]["id"],
        )

    def test_no_credential_in_repr(self, gateway: BulksmsGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert LOGIN in repr(gateway)

    # --- batches -------------------------------------------------------------------------------------------
    def test_batch_size_and_rate(self) -> None:
        assert (BulksmsGateway.max_batch, BulksmsGateway.rate_per) == (4000, "message")

    async def test_a_batch_is_one_submission(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        messages = [self.message(f"job-{i}", to=f"+7916123456{i}", originator="ACME") for i in range(3)]
        outcomes = await gateway.send_many(messages)
        [seen] = fake.requests
        assert seen.query == {"deduplication-id": messages[0].ref, "auto-unicode": "true"}  # one per submission
        singles: list[Any] = []
        for m in messages:  # each entry is what `send` puts for that message
            await gateway.send(msgspec.structs.replace(m, ref=str(9000 + len(singles))))
            singles += fake.requests[-1].json()
        assert seen.json() == singles
        assert outcomes == [Receipt(provider_message_id=m.id) for m in fake.messages[:3]]
        assert [m.to for m in fake.messages[:3]] == [f"7916123456{i}" for i in range(3)]  # in order

    async def test_a_resubmitted_batch_is_deduplicated(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        messages = self.batch(3)
        first = await gateway.send_many(messages)
        assert await gateway.send_many(messages) == first
        assert (fake.send_requests, len(fake.messages)) == (2, 3)

    async def test_a_replay_of_another_submission_is_ambiguous(
        self, gateway: BulksmsGateway, fake: FakeBulksms
    ) -> None:
        """Same first message, other company: BulkSMS answers the first submission's reply and sends nothing."""
        a, b, c = self.batch(3)
        await gateway.send_many([a, b])
        outcomes = await gateway.send_many([a, c])
        assert all(isinstance(o, Ambiguous) and o.code == "bulksms.bad_reply" for o in outcomes), outcomes
        assert len(fake.messages) == 2  # c was not sent: taking the reply's second Message as c's would lose it
        assert await gateway.find(c) is None
        with pytest.raises(Ambiguous, match=r"bulksms\.bad_reply"):
            await gateway.send(a)  # a alone, with a's deduplication-id: answered [a, b], not one Message

    async def test_one_bad_number_fails_only_that_message(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        good, _, other = self.batch(3)
        bad = self.message("job-bad", to="+12")
        outcomes = await gateway.send_many([good, bad, other])
        assert isinstance(outcomes[1], Permanent)
        assert outcomes[1].code == "bulksms.400.bad-request"
        assert [type(o) for o in outcomes] == [Receipt, Permanent, Receipt]
        assert [m.entry["userSuppliedId"] for m in fake.messages] == [good.job_id, other.job_id]
        assert fake.send_requests == 1 + 3  # the refused batch, then each message alone
        assert [seen.query["deduplication-id"] for seen in fake.requests[1:]] == [good.ref, bad.ref, other.ref]

    async def test_a_message_without_ref_fails_alone(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        first, second, third = self.batch(3)
        outcomes = await gateway.send_many([msgspec.structs.replace(first, ref=""), second, third])
        assert isinstance(outcomes[0], Permanent)
        assert outcomes[0].code == "bulksms.no_ref"
        assert [type(o) for o in outcomes[1:]] == [Receipt, Receipt]
        [seen] = fake.requests
        assert (seen.query["deduplication-id"], len(seen.json())) == (second.ref, 2)

    async def test_a_request_refusal_is_every_message(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        fake.fail_next(1, 403, "insufficient-credits")
        outcomes = await gateway.send_many(self.batch(3))
        assert [(type(o), getattr(o, "code", "")) for o in outcomes] == [
            (Permanent, "bulksms.403.insufficient-credits")
        ] * 3
        assert (fake.send_requests, fake.messages) == (1, [])  # not retried one by one: the account's refusal

    async def test_a_short_reply_is_ambiguous(self, gateway: BulksmsGateway, fake: FakeBulksms) -> None:
        a, b = self.batch(2)
        await gateway.send(a)
        outcomes = await gateway.send_many([a, b])  # a's deduplication-id: the reply of one Message
        assert all(isinstance(o, Ambiguous) for o in outcomes), outcomes
        assert len(fake.messages) == 1

    async def test_the_fake_takes_at_most_30000(self, fake: FakeBulksms) -> None:
        auth = {"Authorization": "Basic " + base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()}
        body = io.BytesIO(json.dumps([{"to": "+79161234567", "body": "x"}] * 30_001).encode())  # over 1 MB: a file
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{fake.url}/messages", data=body, headers=auth | JSON) as resp,
        ):
            assert resp.status == 400
        assert fake.messages == []
