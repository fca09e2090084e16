"""SMSC.ru: the gateway contract against the fake SMSC, then SMSC's own quirks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

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
    StatusRef,
    gateway_class,
)
from gateways.smsc import ERRORS, STATUSES, SmscGateway
from smsfleet.contracts import State
from smsfleet.kinds import SmscSettings
from tests.fakes.smsc import FakeSmsc

from .contract import GatewayContract

LOGIN, PASSWORD = "acme", "s3cret-Pa55"
MD5 = hashlib.md5(PASSWORD.encode()).hexdigest()  # noqa: S324 - SMSC's scheme
STATE_CODES = {State.DELIVERED: 1, State.UNDELIVERED: 20, State.EXPIRED: 3, State.REJECTED: 22}


def form(fields: dict[str, str]) -> CallbackRequest:
    return CallbackRequest(
        method="POST",
        query={},
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        body=urlencode(fields).encode(),
    )


class TestSmsc(GatewayContract[FakeSmsc]):
    def fake_server(self) -> FakeSmsc:
        return FakeSmsc(login=LOGIN, password=PASSWORD)

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> SmscGateway:
        return SmscGateway(SmscSettings(login=LOGIN, password=PASSWORD, base_url=url), http)

    def fake_permanent_error(self, fake: FakeSmsc) -> None:
        fake.fail_next(1, 7)

    def fake_rate_limited(self, fake: FakeSmsc) -> None:
        fake.fail_next(1, 4)

    def derived_secrets(self, settings: Any) -> Iterable[str]:
        return [hashlib.md5(settings.password.encode()).hexdigest()]  # noqa: S324

    def assert_auth_on_wire(self, fake: FakeSmsc) -> None:
        _, params = fake.requests[-1]
        assert (params["login"], params["psw"]) == (LOGIN, PASSWORD)

    def fake_set_state(self, fake: FakeSmsc, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_status(int(receipt.provider_message_id or 0), message.to, STATE_CODES[state], err=0)

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        fields = {"id": receipt.provider_message_id or "", "status": str(STATE_CODES[state]), "err": "0"}
        return form(fields | {"phone": message.to.lstrip("+")})

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [form({"status": "1"}), form({"id": "5"}), form({"id": "5", "status": "delivered"})]

    # --- SMSC's own quirks ---------------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("smsc") is SmscGateway

    async def test_md5_password_accepted(self, http: aiohttp.ClientSession, fake: FakeSmsc) -> None:
        gateway = SmscGateway(SmscSettings(login=LOGIN, password=MD5, base_url=fake.url), http)
        await gateway.send(self.message())
        assert fake.requests[-1][1]["psw"] == MD5
        assert len(fake.messages) == 1

    async def test_wire_params(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        await gateway.send(self.message(text="Привет, мир"))
        path, params = fake.requests[-1]
        assert path == "/sys/send.php"
        assert (params["fmt"], params["charset"], params["phones"]) == ("3", "utf-8", "+79161234567")
        assert "sender" not in params
        assert "valid" not in params
        assert fake.messages[0].text == "Привет, мир"  # arrived as UTF-8, not read as windows-1251

    async def test_our_id_is_the_workers_ref(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        receipt = await gateway.send(self.message(ref="4711"))
        assert fake.requests[-1][1]["id"] == receipt.provider_message_id == "4711"
        with pytest.raises(Permanent, match=r"smsc\.no_ref"):  # never an id made up from the job id
            await gateway.send(self.message(ref=""))

    async def test_identical_resend_within_a_minute_is_refused_and_found(
        self, gateway: SmscGateway, fake: FakeSmsc
    ) -> None:
        first = await gateway.send(self.message())
        second = await gateway.send(self.message())  # SMSC answers 9; the lookup finds the first one
        assert first.provider_message_id == second.provider_message_id == self.message().ref
        sends = [p for path, p in fake.requests if path == "/sys/send.php"]
        assert [p["id"] for p in sends] == [self.message().ref] * 2
        assert len(fake.messages) == 1

    async def test_identical_resend_after_a_minute_is_sent_again(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        await gateway.send(self.message())
        fake.clock_offset += 61  # SMSC forgets an identical request after a minute: why the worker looks first
        await gateway.send(self.message())
        assert len(fake.messages) == 2

    async def test_find(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        assert await gateway.find(self.message()) is None
        fake.reset_after_accept_next(1)
        with pytest.raises(Ambiguous, match="reset"):
            await gateway.send(self.message())
        found = await gateway.find(self.message())
        assert found is not None
        assert found.provider_message_id == self.message().ref
        assert len(fake.messages) == 1

    async def test_duplicate_without_earlier_message_is_ambiguous(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        fake.fail_next(1, 9)
        with pytest.raises(Ambiguous, match=r"smsc\.9"):
            await gateway.send(self.message())

    @pytest.mark.parametrize("code", sorted(ERRORS))
    async def test_error_table(self, gateway: SmscGateway, fake: FakeSmsc, code: int) -> None:
        fake.fail_next(1, code)
        expected: type[GatewayError] = {4: RateLimited, 9: Ambiguous}.get(code, Permanent)
        with pytest.raises(expected) as info:
            await gateway.send(self.message())
        assert info.value.code == f"smsc.{code}"
        if isinstance(info.value, RateLimited):
            assert info.value.retry_after == 60

    async def test_errors_from_the_fake_itself(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        with pytest.raises(Permanent, match=r"smsc\.7"):
            await gateway.send(Outgoing(job_id="j", to="+12", text="hi", ref="1"))

    async def test_http_429_and_non_json(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        fake.http_status_next(1, 429)
        with pytest.raises(RateLimited, match=r"http\.429"):
            await gateway.send(self.message())
        fake.http_status_next(1, 200)  # a 200 whose body is not SMSC's JSON: it may have been sent
        with pytest.raises(Ambiguous, match=r"smsc\.bad_reply"):
            await gateway.send(self.message())

    @pytest.mark.parametrize(("code", "expected"), sorted(STATUSES.items()))
    async def test_status_table(
        self, gateway: SmscGateway, fake: FakeSmsc, code: int, expected: tuple[State | None, str]
    ) -> None:
        message = self.message()
        receipt = await gateway.send(message)
        fake.set_status(int(message.ref), message.to, code, err=6 if code == 20 else 0)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=message.ref, to=message.to))
        assert (report.state, report.raw_status) == (expected[0], str(code))
        assert report.provider_message_id == receipt.provider_message_id
        assert report.at is not None
        assert fake.requests[-1][1]["phone"] == "79161234567"
        if code == 20:
            assert report.error is not None
            assert report.error.code == "smsc.err.6"

    async def test_status_not_found(self, gateway: SmscGateway) -> None:
        report = await gateway.status(StatusRef(job_id="never-sent", provider_message_id="99", to=self.phone))
        assert (report.state, report.raw_status, report.at) == (None, "-3", None)

    @pytest.mark.parametrize(("lifetime", "valid"), [(timedelta(minutes=1), "1"), (timedelta(minutes=90), "2")])
    async def test_valid_from_valid_until(
        self, gateway: SmscGateway, fake: FakeSmsc, lifetime: timedelta, valid: str
    ) -> None:
        await gateway.send(self.message(valid_until=datetime.now(UTC) + lifetime))
        assert fake.requests[-1][1]["valid"] == valid

    async def test_valid_is_capped_at_24_hours(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        await gateway.send(self.message(valid_until=datetime.now(UTC) + timedelta(days=3)))
        assert fake.requests[-1][1]["valid"] == "24"

    async def test_sender_only_when_originator_set(self, gateway: SmscGateway, fake: FakeSmsc) -> None:
        await gateway.send(self.message(originator="ACME"))
        assert fake.requests[-1][1]["sender"] == "ACME"
        assert fake.messages[0].sender == "ACME"

    def test_callback_get_query(self, gateway: SmscGateway) -> None:
        request = CallbackRequest(method="GET", query={"id": "42", "status": "20", "err": "1"}, headers={})
        [report] = gateway.parse_callback(request).reports
        assert (report.provider_message_id, report.state, report.raw_status) == (
            "42",
            State.UNDELIVERED,
            "20",
        )
        assert report.error is not None
        assert report.error.code == "smsc.err.1"

    def test_callback_reply_and_pending_status(self, gateway: SmscGateway) -> None:
        callback = gateway.parse_callback(form({"id": "42", "status": "0", "phone": "79161234567"}))
        assert (callback.reply_status, callback.reply_body) == (200, "OK")
        assert callback.reports[0].state is None

    def test_no_credential_in_repr(self, gateway: SmscGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert LOGIN in repr(gateway)
