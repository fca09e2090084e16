"""MTS: the gateway contract against the fake MTS omnichannel API, then MTS's own quirks."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from gateways import Ambiguous, GatewayError, Outgoing, Permanent, Receipt, StatusRef, Transient, gateway_class
from gateways.mts import ERRORS, STATUSES, MtsGateway
from smsfleet.contracts import State
from smsfleet.kinds import MtsSettings
from tests.fakes._serve import serve
from tests.fakes.mts import FakeMts

from .contract import GatewayContract

LOGIN, PASSWORD = "acme", "s3cret-Pa55"
STATE_CODES = {State.DELIVERED: 300, State.UNDELIVERED: 301, State.REJECTED: 201}
SEND, INFO = "/http-api/v1/messages", "/http-api/v1/messages/info"
Handler = Callable[[web.Request], Awaitable[web.Response]]


class TestMts(GatewayContract[FakeMts]):
    status_states = (State.DELIVERED, State.UNDELIVERED, State.REJECTED)  # MTS has no "expired" code

    def fake_server(self) -> FakeMts:
        return FakeMts(login=LOGIN, password=PASSWORD)

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> MtsGateway:
        return MtsGateway(MtsSettings(login=LOGIN, password=PASSWORD, base_url=url), http)

    def fake_permanent_error(self, fake: FakeMts) -> None:
        fake.fail_next(1, 400, "invalid msisdn")

    def assert_auth_on_wire(self, fake: FakeMts) -> None:
        basic = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
        assert fake.requests[-1].headers["Authorization"] == f"Basic {basic}"

    def fake_set_state(self, fake: FakeMts, message: Outgoing, receipt: Receipt, state: State) -> None:
        pid = receipt.provider_message_id or ""
        fake.set_status(pid, 200)
        fake.set_status(pid, STATE_CODES[state], internal_errors=[] if state is State.DELIVERED else [7])

    # --- MTS's own quirks ----------------------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("mts") is MtsGateway

    async def test_wire_body(self, gateway: MtsGateway, fake: FakeMts) -> None:
        receipt = await gateway.send(self.message(text="Привет", originator="ACME"))
        seen = fake.requests[-1]
        assert (seen.method, seen.path) == ("POST", SEND)
        assert seen.headers["Content-Type"].startswith("application/json")
        assert seen.json() == {
            "messages": [
                {
                    "content": {"short_text": "Привет"},
                    "from": {"sms_address": "ACME"},
                    "to": [{"msisdn": "79161234567", "message_id": "job-1"}],
                }
            ]
        }
        assert receipt.provider_message_id == fake.messages[0].internal_id
        assert (fake.messages[0].naming, fake.messages[0].text) == ("ACME", "Привет")

    async def test_no_originator_leaves_from_out(self, gateway: MtsGateway, fake: FakeMts) -> None:
        await gateway.send(self.message())
        assert "from" not in fake.requests[-1].json()["messages"][0]
        assert fake.messages[0].naming == "MTSM_Test"  # the account's default

    async def test_unconnected_sender_name_is_permanent(self, gateway: MtsGateway, fake: FakeMts) -> None:
        with pytest.raises(Permanent, match=r"mts\.403.*not connected"):
            await gateway.send(self.message(originator="OTHER"))

    async def test_default_base_url(self, http: aiohttp.ClientSession) -> None:
        gateway = MtsGateway(MtsSettings(login=LOGIN, password=PASSWORD), http)
        assert gateway.base_url == "https://omnichannel.mts.ru/http-api/v1"

    @pytest.mark.parametrize("status", sorted(s for s in ERRORS if s != 200))
    async def test_error_table(self, gateway: MtsGateway, fake: FakeMts, status: int) -> None:
        fake.fail_next(1, status, "nope")
        expected = ERRORS[status][0]
        with pytest.raises(GatewayError) as info:
            await gateway.send(self.message())
        assert type(info.value) is expected
        assert info.value.code == f"mts.{status}"
        assert f"{status} nope" in info.value.message  # the provider's code and message are kept

    async def test_error_body_in_a_200_is_a_refusal(self, gateway: MtsGateway, fake: FakeMts) -> None:
        fake.fail_next(1, 200, "sms package exhausted")
        with pytest.raises(Permanent, match=r"mts\.200"):
            await gateway.send(self.message())

    async def test_unknown_4xx_is_permanent_and_200_without_id_is_ambiguous(
        self, gateway: MtsGateway, fake: FakeMts
    ) -> None:
        fake.http_status_next(1, 418)
        with pytest.raises(Permanent, match=r"mts\.418"):
            await gateway.send(self.message())
        fake.http_status_next(1, 200)  # "injected fault": not MTS's JSON, it may have been taken
        with pytest.raises(Ambiguous, match=r"mts\.bad_reply"):
            await gateway.send(self.message())

    @pytest.mark.parametrize(("code", "expected"), sorted(STATUSES.items()))
    async def test_status_table(
        self, gateway: MtsGateway, fake: FakeMts, code: int, expected: tuple[State | None, str]
    ) -> None:
        message = self.message()
        receipt = await gateway.send(message)
        pid = receipt.provider_message_id or ""
        fake.set_status(pid, code)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=pid, to=message.to))
        assert (report.state, report.raw_status, report.provider_message_id) == (expected[0], str(code), pid)
        assert report.at is not None
        assert fake.requests[-1].path == INFO
        assert fake.requests[-1].json() == {"int_ids": [pid]}

    async def test_final_event_wins_whatever_the_order(self, gateway: MtsGateway, fake: FakeMts) -> None:
        receipt = await gateway.send(self.message())
        pid = receipt.provider_message_id or ""
        fake.set_status(pid, 301, internal_errors=[12])
        fake.set_status(pid, 200)  # listed after the final one
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=pid, to=self.phone))
        assert report.state is State.UNDELIVERED
        assert report.error is not None
        assert (report.error.code, report.error.message) == ("mts.status.301", "not delivered (internal errors [12])")

    async def test_unknown_status_code_is_not_final(self, gateway: MtsGateway, fake: FakeMts) -> None:
        receipt = await gateway.send(self.message())
        fake.set_status(receipt.provider_message_id or "", 999)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=receipt.provider_message_id, to=""))
        assert (report.state, report.raw_status) == (None, "999")

    async def test_status_by_job_id_without_internal_id(self, gateway: MtsGateway, fake: FakeMts) -> None:
        receipt = await gateway.send(self.message())
        fake.set_status(receipt.provider_message_id or "", 300)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=None, to=self.phone))
        assert fake.requests[-1].json() == {"msg_ids": ["job-1"]}
        assert (report.state, report.provider_message_id) == (State.DELIVERED, receipt.provider_message_id)

    async def test_status_of_an_unknown_id_is_pending(self, gateway: MtsGateway) -> None:
        report = await gateway.status(StatusRef(job_id="j", provider_message_id="123", to=self.phone))
        assert (report.state, report.raw_status) == (None, "")

    async def test_status_wrong_credentials_fail(self, http: aiohttp.ClientSession, fake: FakeMts) -> None:
        gateway = MtsGateway(MtsSettings(login=LOGIN, password="wrong", base_url=fake.url), http)
        with pytest.raises(Permanent, match=r"mts\.401"):
            await gateway.status(StatusRef(job_id="j", provider_message_id="1", to=self.phone))

    async def test_status_hang_is_transient(self, gateway: MtsGateway, fake: FakeMts) -> None:
        gateway.timeout_s = 0.2
        fake.hang_next(1, INFO)
        with pytest.raises(Transient, match="timeout"):
            await gateway.status(StatusRef(job_id="j", provider_message_id="1", to=self.phone))

    def test_no_credential_in_repr(self, gateway: MtsGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert LOGIN in repr(gateway)
        assert any("status codes" in a and "medium-low" in a for a in gateway.assumptions)

    # --- batches -------------------------------------------------------------------------------------------
    def test_batch_size_and_rate(self) -> None:
        assert (MtsGateway.max_batch, MtsGateway.rate_per) == (100, "message")

    async def test_a_batch_is_one_request_of_what_send_puts(self, gateway: MtsGateway, fake: FakeMts) -> None:
        messages = self.batch(3)
        outcomes = await gateway.send_many(messages)
        [seen] = fake.requests
        singles = []
        for m in messages:  # each item is what `send` puts for that message alone
            await gateway.send(m)
            singles += fake.requests[-1].json()["messages"]
        assert seen.json() == {"messages": singles}
        taken = fake.messages[:3]
        assert [(t.msisdn, t.message_id) for t in taken] == [(m.to.lstrip("+"), m.job_id) for m in messages]
        assert outcomes == [Receipt(provider_message_id=t.internal_id) for t in taken]

    async def test_a_refused_batch_is_sent_message_by_message(self, gateway: MtsGateway, fake: FakeMts) -> None:
        good, _, other = self.batch(3)
        bad = self.message("job-bad", to="+12")
        outcomes = await gateway.send_many([good, bad, other])  # MTS refuses the whole request for one number
        assert [type(o) for o in outcomes] == [Receipt, Permanent, Receipt]
        assert [len(r.json()["messages"]) for r in fake.requests] == [3, 1, 1, 1]
        assert [m.message_id for m in fake.messages] == [good.job_id, other.job_id]  # the refusal took nothing

    @pytest.mark.parametrize(("order", "first"), [("as sent", "+79160000001"), ("reversed", "+79160000009")])
    async def test_reply_entries_are_matched_by_number(
        self, http: aiohttp.ClientSession, order: str, first: str
    ) -> None:
        """The doc does not promise that the reply keeps the request's order: entries go by number (two jobs to
        one number, as sent, keep their order)."""
        messages = [self.message("a", to=first), self.message("b"), self.message("c", to="+79160000001")]

        async def answer(request: web.Request) -> web.Response:
            items = (await request.json())["messages"]
            entries = [{"internal_id": f"id-{i}", "msisdn": m["to"][0]["msisdn"]} for i, m in enumerate(items)]
            return web.json_response({"messages": entries[::-1] if order == "reversed" else entries})

        outcomes = await self._against(http, answer, messages)
        assert [o.provider_message_id for o in outcomes if isinstance(o, Receipt)] == ["id-0", "id-1", "id-2"]

    async def test_a_reply_that_does_not_match_is_ambiguous(self, http: aiohttp.ClientSession) -> None:
        async def answer(request: web.Request) -> web.Response:  # the wrong numbers: whose id is whose?
            items = (await request.json())["messages"]
            return web.json_response({"messages": [{"internal_id": str(i), "msisdn": "70000000000"} for i in items]})

        outcomes = await self._against(http, answer, self.batch(3))
        assert [type(o) for o in outcomes] == [Ambiguous] * 3  # MTS may have taken them: never resent blindly

    async def _against(
        self,
        http: aiohttp.ClientSession,
        answer: Callable[[web.Request], Awaitable[web.Response]],
        messages: list[Outgoing],
    ) -> list[Receipt | GatewayError]:
        app = web.Application()
        app.router.add_post(SEND, answer)
        runner, url = await serve(app)
        try:
            return await self.make_gateway(http, url).send_many(messages)
        finally:
            await runner.cleanup()
