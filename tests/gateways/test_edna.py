"""MFMS EDNA: the gateway contract against the fake connector, then the connector's own quirks.

The contract runs with custom credential parameter names (`user`, `pass`); one test below runs with the
names left empty, which must put `login` and `password` on the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import aiohttp
import msgspec
import pytest

from gateways import Ambiguous, CallbackRequest, Outgoing, Permanent, Receipt, StatusRef, Transient, gateway_class
from gateways.edna import ERRORS, STATUSES, EdnaGateway
from smsfleet.contracts import State
from smsfleet.kinds import EdnaSettings
from tests.fakes.edna import FakeEdna

from .contract import GatewayContract

LOGIN, PASSWORD = "acme", "s3cret-Pa55"
WORDS = {State.DELIVERED: "delivered", State.UNDELIVERED: "undelivered", State.REJECTED: "failed"}
SEND, STATUS = "/revoup/connector0/send", "/revoup/connector0/status"


def push(data: object) -> CallbackRequest:
    body = data if isinstance(data, bytes) else msgspec.json.encode(data)
    return CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/json"}, body=body)


class TestEdna(GatewayContract[FakeEdna]):
    status_states = (State.DELIVERED, State.UNDELIVERED, State.REJECTED)  # expiry shows as undelivered
    rate_limited_by_429 = False

    def fake_server(self) -> FakeEdna:
        return FakeEdna(login=LOGIN, password=PASSWORD, login_field="user", password_field="pass")

    def fake_url(self, fake: FakeEdna) -> str:
        return fake.send_url

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> EdnaGateway:
        settings = EdnaSettings(url=url, login=LOGIN, password=PASSWORD, login_field="user", password_field="pass")
        return EdnaGateway(settings, http)

    def fake_permanent_error(self, fake: FakeEdna) -> None:
        fake.fail_next(1, "error-address-format")

    def fake_transient_error(self, fake: FakeEdna) -> None:
        fake.fail_next(1, "error-system")  # the connector's "try later", with HTTP 200

    def assert_auth_on_wire(self, fake: FakeEdna) -> None:
        query = fake.requests[-1].query
        assert (query["user"], query["pass"]) == (LOGIN, PASSWORD)
        assert "login" not in query
        assert "password" not in query

    def fake_set_state(self, fake: FakeEdna, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_status(receipt.provider_message_id or "", WORDS[state], reason="" if state is State.DELIVERED else "x")

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        return push({"smsOutMessageId": receipt.provider_message_id, "dlvStatus": WORDS[state]})

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [
            push(b"smsOutMessageId=1&dlvStatus=delivered"),
            push({"dlvStatus": "delivered"}),
            push({"smsOutMessageId": "1"}),
            push({"smsOutMessageId": " ", "dlvStatus": "delivered"}),
            push({"smsOutMessageId": "1", "dlvStatus": 3}),
            push([]),
            push(["1;delivered"]),
        ]

    # --- the connector's own quirks ------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("edna") is EdnaGateway

    async def test_wire_query_with_custom_field_names(self, gateway: EdnaGateway, fake: FakeEdna) -> None:
        receipt = await gateway.send(self.message(text="Привет; мир", originator="INFO"))
        await gateway.status(StatusRef(job_id="job-1", provider_message_id=receipt.provider_message_id, to=""))
        send, status = fake.requests
        assert (send.method, send.path, status.method, status.path) == ("GET", SEND, "GET", STATUS)
        assert send.query == {
            "user": LOGIN,
            "pass": PASSWORD,
            "address": "79161234567",
            "text": "Привет; мир",
            "clientId": "job-1",
            "subject": "INFO",
        }
        assert status.query == {"user": LOGIN, "pass": PASSWORD, "providerId[0]": receipt.provider_message_id}
        assert fake.messages[0].text == "Привет; мир"

    async def test_empty_field_names_send_login_and_password(self, http: aiohttp.ClientSession) -> None:
        async with FakeEdna(login=LOGIN, password=PASSWORD) as fake:
            settings = EdnaSettings(
                url=fake.send_url, login=LOGIN, password=PASSWORD, login_field="", password_field=""
            )
            gateway = EdnaGateway(settings, http)
            receipt = await gateway.send(self.message())
            report = await gateway.status(StatusRef(job_id="j", provider_message_id=receipt.provider_message_id, to=""))
        assert report.raw_status == "enqueued"
        for seen in fake.requests:
            assert (seen.query["login"], seen.query["password"]) == (LOGIN, PASSWORD)
            assert not {"user", "pass"} & set(seen.query)

    async def test_the_sending_url_is_called_as_given(self, http: aiohttp.ClientSession, fake: FakeEdna) -> None:
        """The seed's "SMS service URL" is the installation's own: nothing is appended to it (`…/hpg_send.php`
        stayed `…/hpg_send.php/send` once), and a status URL is its own field."""
        script = fake.url + "/revoup/connector0/hpg_send.php"
        gateway = self.make_gateway(http, script)
        assert (gateway.send_url, gateway.status_url) == (script, None)
        with pytest.raises(Transient, match="no_status_url"):
            await gateway.status(StatusRef(job_id="j", provider_message_id="1", to=self.phone))
        settings = EdnaSettings(url=script, status_url=fake.url + STATUS, login="acme", password="s3cret")
        assert EdnaGateway(settings, http).status_url == fake.url + STATUS
        assert self.make_gateway(http, fake.url + SEND).status_url == fake.url + STATUS  # derived from /send

    @pytest.mark.parametrize("code", sorted(ERRORS))
    async def test_error_table_with_http_200(self, gateway: EdnaGateway, fake: FakeEdna, code: str) -> None:
        fake.fail_next(1, code)
        with pytest.raises(ERRORS[code][0]) as info:
            await gateway.send(self.message())
        assert type(info.value) is ERRORS[code][0]
        assert info.value.code == f"edna.{code}"

    async def test_unknown_error_code_is_permanent(self, gateway: EdnaGateway, fake: FakeEdna) -> None:
        fake.fail_next(1, "error-start-time-format")
        with pytest.raises(Permanent, match=r"edna\.error-start-time-format"):
            await gateway.send(self.message())

    async def test_http_errors_and_odd_200s(self, gateway: EdnaGateway, fake: FakeEdna) -> None:
        fake.http_status_next(1, 404)
        with pytest.raises(Transient, match=r"http\.404"):
            await gateway.send(self.message("a"))
        fake.http_status_next(1, 200)  # "injected fault": neither ok nor an error code
        with pytest.raises(Ambiguous, match=r"edna\.bad_reply"):
            await gateway.send(self.message("b"))
        fake.fail_next(1, "ok;0;")
        with pytest.raises(Ambiguous, match="without a provider id"):
            await gateway.send(self.message("c"))

    async def test_a_dropped_send_is_not_repeated(self, gateway: EdnaGateway, fake: FakeEdna) -> None:
        fake.reset_after_accept_next(1)
        with pytest.raises(Ambiguous, match="reset"):
            await gateway.send(self.message())
        sends = [s.query["clientId"] for s in fake.requests if s.path == SEND]
        assert sends == ["job-1"]  # aiohttp would repeat a GET by itself; a send must not be
        assert len(fake.messages) == 1

    @pytest.mark.parametrize(("word", "expected"), sorted(STATUSES.items()))
    async def test_status_table(
        self, gateway: EdnaGateway, fake: FakeEdna, word: str, expected: tuple[State | None, str]
    ) -> None:
        receipt = await gateway.send(self.message())
        pid = receipt.provider_message_id or ""
        fake.set_status(pid, word, reason="absent subscriber")
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=pid, to=self.phone))
        assert (report.state, report.raw_status, report.provider_message_id) == (expected[0], word, pid)
        if expected[0] not in (None, State.DELIVERED):
            assert report.error is not None
            assert report.error.message.endswith(": absent subscriber")

    async def test_status_date_is_moscow_time(self, gateway: EdnaGateway, fake: FakeEdna) -> None:
        receipt = await gateway.send(self.message())
        report = await gateway.status(StatusRef(job_id="j", provider_message_id=receipt.provider_message_id, to=""))
        assert report.at is not None
        assert report.at.utcoffset() == timedelta(hours=3)
        assert abs(report.at - datetime.now(UTC)) < timedelta(seconds=5)

    async def test_status_needs_a_provider_id(self, gateway: EdnaGateway, fake: FakeEdna) -> None:
        with pytest.raises(Transient, match="no_provider_id"):
            await gateway.status(StatusRef(job_id="j", provider_message_id=None, to=self.phone))
        with pytest.raises(Permanent, match="error-provider-id-unknown"):
            await gateway.status(StatusRef(job_id="j", provider_message_id="404", to=self.phone))
        assert len(fake.requests) == 1

    async def test_callback_from_the_fake_and_a_list(self, gateway: EdnaGateway, fake: FakeEdna) -> None:
        first = await gateway.send(self.message("a"))
        second = await gateway.send(self.message("b"))
        fake.set_status(first.provider_message_id or "", "delivered")
        [report] = gateway.parse_callback(push(fake.callback_body(first.provider_message_id or ""))).reports
        assert (report.provider_message_id, report.state) == (first.provider_message_id, State.DELIVERED)
        callback = gateway.parse_callback(
            push([{"smsOutMessageId": 5, "dlvStatus": "SENT"}, {"smsOutMessageId": second.provider_message_id,
                                                               "dlvStatus": "cancelled"}])
        )  # fmt: skip
        assert [(r.provider_message_id, r.state) for r in callback.reports] == [
            ("5", None),
            (second.provider_message_id, State.REJECTED),
        ]
        assert (callback.reply_status, callback.reply_body) == (200, "OK")

    def test_no_credential_in_repr(self, gateway: EdnaGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert LOGIN in repr(gateway)
