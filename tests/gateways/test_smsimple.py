"""SMSimple.ru: the gateway contract against the fake SMSimple, then SMSimple's own quirks."""

from __future__ import annotations

import aiohttp
import pytest

from gateways import (
    Ambiguous,
    GatewayError,
    Outgoing,
    Permanent,
    RateLimited,
    Receipt,
    StatusRef,
    Transient,
    gateway_class,
)
from gateways.smsimple import STATUSES, SmsimpleGateway
from smsfleet.contracts import State
from smsfleet.kinds import SmsimpleSettings
from tests.fakes.smsimple import ERROR_TEXTS, STATUS_TEXTS, FakeSmsimple

from .contract import GatewayContract

USER, PASSWORD, OR_ID = "acme", "s3cret-Pa55", "101"
STATE_TEXTS = {state: STATUS_TEXTS[state.value] for state in GatewayContract.status_states}


class TestSmsimple(GatewayContract[FakeSmsimple]):
    def fake_server(self) -> FakeSmsimple:
        return FakeSmsimple(user=USER, password=PASSWORD, origins=[OR_ID])

    def make_gateway(self, http: aiohttp.ClientSession, url: str, **settings: object) -> SmsimpleGateway:
        fields = {"user": USER, "password": PASSWORD, "originator_id": OR_ID, "base_url": url} | settings
        return SmsimpleGateway(SmsimpleSettings(**fields), http)  # type: ignore[arg-type]

    def fake_permanent_error(self, fake: FakeSmsimple) -> None:
        fake.fail_next(1, "phone")

    def fake_rate_limited(self, fake: FakeSmsimple) -> None:
        fake.fail_next(1, "rate")

    def assert_auth_on_wire(self, fake: FakeSmsimple) -> None:
        _, _, query = fake.requests[-1]
        assert (query["user"], query["pass"]) == (USER, PASSWORD)

    def fake_set_state(self, fake: FakeSmsimple, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_status(receipt.provider_message_id or "0", STATE_TEXTS[state])

    # --- SMSimple's own quirks -----------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("smsimple") is SmsimpleGateway

    async def test_wire_params(self, gateway: SmsimpleGateway, fake: FakeSmsimple) -> None:
        receipt = await gateway.send(self.message(text="Привет, мир & co", originator="IGNORED"))
        method, path, query = fake.requests[-1]
        assert (method, path) == ("POST", "/http_send.php")  # parameters in the query string, never re-sent
        assert query == {
            "user": USER,
            "pass": PASSWORD,
            "or_id": OR_ID,
            "phone": "79161234567",
            "message": "Привет, мир & co",
        }
        assert receipt == Receipt(provider_message_id="12345")
        assert fake.messages[12345].text == "Привет, мир & co"  # UTF-8 in, not garbled

    @pytest.mark.parametrize(("charset", "named"), [("windows-1251", True), ("windows-1251", False), ("utf-8", False)])
    async def test_reply_charsets(self, http: aiohttp.ClientSession, charset: str, named: bool) -> None:
        async with FakeSmsimple(USER, PASSWORD, origins=[OR_ID], charset=charset, name_charset=named) as fake:
            gateway = self.make_gateway(http, fake.url)
            assert (await gateway.send(self.message())).provider_message_id == "12345"
            fake.fail_next(1, "balance")
            with pytest.raises(Permanent, match="недостаточно средств") as info:
                await gateway.send(self.message())
            assert info.value.code == "smsimple.balance"

    @pytest.mark.parametrize(
        ("reason", "expected", "code"),
        [
            ("auth", Permanent, "auth"),
            ("balance", Permanent, "balance"),
            ("rate", RateLimited, "rate"),
            ("phone", Permanent, "phone"),
            ("originator", Permanent, "originator"),
            ("message", Permanent, "message"),
            ("temporary", Transient, "error"),
        ],
    )
    async def test_error_table(
        self, gateway: SmsimpleGateway, fake: FakeSmsimple, reason: str, expected: type[GatewayError], code: str
    ) -> None:
        fake.fail_next(1, reason)
        with pytest.raises(expected) as info:
            await gateway.send(self.message())
        assert type(info.value) is expected
        assert (info.value.code, info.value.message) == (f"smsimple.{code}", ERROR_TEXTS[reason])
        if isinstance(info.value, RateLimited):
            assert info.value.retry_after == 30
        assert not fake.messages

    async def test_errors_from_the_fake_itself(self, http: aiohttp.ClientSession, fake: FakeSmsimple) -> None:
        with pytest.raises(Permanent, match=r"smsimple\.phone"):
            await self.make_gateway(http, fake.url).send(Outgoing(job_id="j", to="+12", text="hi"))
        with pytest.raises(Permanent, match=r"smsimple\.originator"):
            await self.make_gateway(http, fake.url, originator_id="999").send(self.message())
        assert fake.requests[-1][2]["or_id"] == "999"

    async def test_max_parts_is_refused_before_the_wire(self, http: aiohttp.ClientSession, fake: FakeSmsimple) -> None:
        gateway = self.make_gateway(http, fake.url, max_parts=2)
        with pytest.raises(Permanent, match=r"smsimple\.too_many_parts"):
            await gateway.send(self.message(parts=3))
        assert fake.requests == []
        await gateway.send(self.message(parts=2))
        assert len(fake.messages) == 1

    async def test_odd_replies(self, gateway: SmsimpleGateway, fake: FakeSmsimple) -> None:
        fake.http_status_next(1, 200)  # a 200 without '#id' or 'Ошибка': it may have been sent
        with pytest.raises(Ambiguous, match=r"smsimple\.bad_reply"):
            await gateway.send(self.message())
        fake.http_status_next(1, 404)
        with pytest.raises(Permanent, match=r"http\.404"):
            await gateway.send(self.message())
        fake.http_status_next(1, 429)
        with pytest.raises(RateLimited, match=r"http\.429") as info:
            await gateway.send(self.message())
        assert info.value.retry_after == 7

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Отправлено", None),
            ("В очереди", None),
            ("Доставлено", State.DELIVERED),
            ("Не доставлено", State.UNDELIVERED),
            ("НЕ ДОСТАВЛЕНО (абонент недоступен)", State.UNDELIVERED),
            ("Просрочено", State.EXPIRED),
            ("Срок истёк", State.EXPIRED),
            ("Отклонено", State.REJECTED),
        ],
    )
    async def test_status_table(
        self, gateway: SmsimpleGateway, fake: FakeSmsimple, text: str, expected: State | None
    ) -> None:
        receipt = await gateway.send(self.message())
        fake.set_status(receipt.provider_message_id or "0", text)
        ref = StatusRef(job_id="job-1", provider_message_id=receipt.provider_message_id, to=self.phone)
        report = await gateway.status(ref)
        assert (report.state, report.raw_status, report.job_id) == (expected, text, "job-1")
        method, path, query = fake.requests[-1]
        assert (method, path) == ("GET", "/http_check.php")
        assert query == {"user": USER, "pass": PASSWORD, "message_id": receipt.provider_message_id}

    def test_status_table_has_no_dead_rows(self) -> None:
        assert {s for _, s, _ in STATUSES} == {None, *GatewayContract.status_states}

    async def test_status_errors_are_transient(self, gateway: SmsimpleGateway, fake: FakeSmsimple) -> None:
        with pytest.raises(Transient, match="не найдено"):
            await gateway.status(StatusRef(job_id="j", provider_message_id="777", to=self.phone))
        fake.http_status_next(1, 200)  # "injected fault": not a status anyone knows
        with pytest.raises(Transient, match=r"smsimple\.bad_status"):
            await gateway.status(StatusRef(job_id="j", provider_message_id="777", to=self.phone))
        with pytest.raises(Transient, match=r"smsimple\.no_id"):
            await gateway.status(StatusRef(job_id="j", provider_message_id=None, to=self.phone))

    def test_no_credential_in_repr(self, gateway: SmsimpleGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert USER in repr(gateway)
        assert gateway.has_status
        assert not gateway.can_find
