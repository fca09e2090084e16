"""The `http` kind: the gateway contract against a JSON provider no adapter knows, wired by settings alone,
then what the settings can say (places, success rules, error tables, lookups, callbacks)."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest

from gateways import Ambiguous, CallbackRequest, Outgoing, Permanent, Receipt, StatusRef, Transient
from gateways.http import HttpGateway
from smsfleet.contracts import State
from smsfleet.kinds import HttpSettings
from tests.fakes.json_sms import HTTP_SETTINGS, FakeJsonSms
from tests.fakes.sadr_dadr import FakeSadrDadr
from tests.gateways.contract import GatewayContract

LOGIN, PASSWORD = "acme-api", "s3cret-Pa55"
JSON = {"Content-Type": "application/json"}


def settings(url: str, **changes: Any) -> HttpSettings:
    values = HTTP_SETTINGS | {"url": url, "login": LOGIN, "password": PASSWORD} | changes
    return msgspec.convert(values, HttpSettings)


class TestHttpKindWithAJsonProvider(GatewayContract[FakeJsonSms]):
    # --- hooks ---------------------------------------------------------------------------------------------
    def fake_server(self) -> FakeJsonSms:
        return FakeJsonSms(LOGIN, PASSWORD)

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> HttpGateway:
        return HttpGateway(settings(url.rstrip("/") + "/send", status_url=url.rstrip("/") + "/status"), http)

    def fake_permanent_error(self, fake: FakeJsonSms) -> None:
        fake.fail_next(1, {"error": {"code": "BAD_NUMBER"}})

    def assert_auth_on_wire(self, fake: FakeJsonSms) -> None:
        assert fake.requests[-1].json()["auth"] == {"login": LOGIN, "password": PASSWORD}

    def fake_set_state(self, fake: FakeJsonSms, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_status(receipt.provider_message_id or "", state.value.upper())

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        body = FakeJsonSms.report(receipt.provider_message_id or "", state.value.upper())
        return CallbackRequest(method="POST", query={}, headers=JSON, body=body)

    def malformed_callbacks(self) -> list[CallbackRequest]:
        return [
            CallbackRequest(method="POST", query={}, headers=JSON, body=b"{nope"),
            CallbackRequest(method="POST", query={}, headers=JSON, body=b'{"status": "DELIVERED"}'),
            CallbackRequest(method="POST", query={}, headers=JSON, body=b'{"id": "m-1"}'),
        ]

    # --- the JSON mapping ----------------------------------------------------------------------------------
    async def test_send_wire(self, gateway: HttpGateway, fake: FakeJsonSms) -> None:
        receipt = await gateway.send(self.message(text="Привет & co", originator="ACME"))
        [seen] = fake.requests
        assert (seen.method, seen.path, seen.headers["Content-Type"]) == ("POST", "/api/send", "application/json")
        assert seen.json() == {
            "auth": {"login": LOGIN, "password": PASSWORD},
            "messages": [{"from": "ACME", "to": "+79161234567", "text": "Привет & co", "ref": "1000"}],
        }
        assert receipt == Receipt(provider_message_id="m-1")

    async def test_a_job_without_originator_sends_none(self, gateway: HttpGateway, fake: FakeJsonSms) -> None:
        await gateway.send(self.message())
        assert "from" not in fake.requests[-1].json()["messages"][0]

    async def test_a_200_in_an_unexpected_format_is_ambiguous(self, gateway: HttpGateway, fake: FakeJsonSms) -> None:
        for body in ({"result": {"queued": True}}, {"result": {"id": None}}, [], "maintenance"):
            fake.fail_next(1, body)
            with pytest.raises(Ambiguous, match=r"http\.unknown_reply"):
                await gateway.send(self.message())
        assert fake.messages == {}

    async def test_known_errors(self, gateway: HttpGateway, fake: FakeJsonSms) -> None:
        with pytest.raises(Permanent, match=r"http\.refused"):
            await gateway.send(self.message(to="+12"))  # the fake's own refusal
        fake.fail_next(1, {"error": {"code": "BUSY", "echo": PASSWORD}})
        with pytest.raises(Transient, match=r"http\.busy") as info:
            await gateway.send(self.message())
        self.assert_no_secret(gateway, info.value)

    async def test_a_success_flag_must_hold_too(self, http: aiohttp.ClientSession, fake: FakeJsonSms) -> None:
        url = fake.url + "/send"
        gateway = HttpGateway(settings(url, success_flag_pointer="/ok", success_flag_values="true, yes"), http)
        fake.fail_next(1, {"ok": False, "result": {"id": "m-9"}})
        with pytest.raises(Ambiguous):
            await gateway.send(self.message())
        fake.fail_next(1, {"ok": True, "result": {"id": "m-9"}})
        assert (await gateway.send(self.message())).provider_message_id == "m-9"

    async def test_ids_per_part_from_a_list(self, http: aiohttp.ClientSession, fake: FakeJsonSms) -> None:
        gateway = HttpGateway(settings(fake.url + "/send", success_id_pointer="/ids"), http)
        fake.fail_next(1, {"ids": ["a-1", 2]})
        receipt = await gateway.send(self.message())
        assert (receipt.provider_message_id, receipt.ids) == ("a-1", ("a-1", "2"))

    async def test_an_unknown_status_word_is_transient(self, gateway: HttpGateway, fake: FakeJsonSms) -> None:
        receipt = await gateway.send(self.message())
        fake.set_status(receipt.provider_message_id or "", "WHATEVER")
        ref = StatusRef(job_id="job-1", provider_message_id=receipt.provider_message_id, to=self.phone)
        with pytest.raises(Transient, match="unknown_status"):
            await gateway.status(ref)
        assert fake.requests[-1].json() == {"auth": {"login": LOGIN, "password": PASSWORD}, "id": "m-1"}

    def test_an_unknown_pushed_word_is_not_final(self, gateway: HttpGateway) -> None:
        body = FakeJsonSms.report("m-1", "ACCEPTD")
        [report] = gateway.parse_callback(CallbackRequest(method="POST", query={}, headers=JSON, body=body)).reports
        assert (report.state, report.raw_status, report.provider_message_id) == (None, "acceptd", "m-1")


# --- the other places, against the sadr/dadr fake and by hand ----------------------------------------------
async def test_query_header_and_digits_places_of_a_get() -> None:
    async with FakeSadrDadr(LOGIN, PASSWORD, path="/get/") as fake, aiohttp.ClientSession() as http:
        values = {"url": fake.url, "method": "GET", "login": LOGIN, "login_at": "header:X-Login",
                  "password": PASSWORD, "password_at": "pwd", "to_at": "dadr", "text_at": "text",
                  "to_format": "digits", "success_regex": r"\A(?P<id>\d+)\Z",
                  "permanent_errors": {"(?i)неправильный логин": "auth"}}  # fmt: skip
        gateway = HttpGateway(msgspec.convert(values, HttpSettings), http)
        with pytest.raises(Permanent, match=r"http\.auth"):  # the login went in a header: this fake wants `user`
            await gateway.send(Outgoing(job_id="j", to="+79161234567", text="hi"))
        assert fake.requests[-1].params == {"pwd": PASSWORD, "dadr": "79161234567", "text": "hi"}
        gateway = HttpGateway(msgspec.convert(values | {"login_at": "user"}, HttpSettings), http)
        receipt = await gateway.send(Outgoing(job_id="j", to="+79161234567", text="hi"))
        assert fake.messages[receipt.provider_message_id or ""].phone == "79161234567"


def test_callbacks_read_query_form_and_headers() -> None:
    values = {"callback_id_at": "query:msgid", "callback_status_at": "header:X-Status"}
    gateway = HttpGateway(settings("https://p.test/send", **values), None)  # type: ignore[arg-type]
    request = CallbackRequest(method="GET", query={"msgid": "77"}, headers={"x-status": "Delivered"})
    [report] = gateway.parse_callback(request).reports
    assert (report.provider_message_id, report.state) == ("77", State.DELIVERED)
    values = {"callback_id_at": "msgid", "callback_status_at": "form:st"}
    gateway = HttpGateway(settings("https://p.test/send", **values), None)  # type: ignore[arg-type]
    form = CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/x-www-form-urlencoded"},
                           body=b"msgid=78&st=UNDELIVERED")  # fmt: skip
    [report] = gateway.parse_callback(form).reports
    assert (report.provider_message_id, report.state, report.error is not None) == ("78", State.UNDELIVERED, True)


def test_a_sender_without_callbacks_refuses_pushes() -> None:
    values = {"callback_id_at": None, "callback_status_at": None}
    gateway = HttpGateway(settings("https://p.test/send", **values), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no callbacks"):
        gateway.parse_callback(CallbackRequest(method="POST", query={}, headers=JSON, body=b"{}"))
    no_lookup = HttpGateway(settings("https://p.test/send", status_id_at=None), None)  # type: ignore[arg-type]
    assert not no_lookup.has_status
    assert HttpGateway(settings("https://p.test/send"), None).has_status  # type: ignore[arg-type]
