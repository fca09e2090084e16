"""Devino: the gateway contract against the fake, once per API (classic REST, Devino.Online), then the quirks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import aiohttp
import msgspec
import pytest
from aiohttp import web

from gateways import (
    Ambiguous,
    CallbackRequest,
    GatewayError,
    Outgoing,
    Permanent,
    Receipt,
    StatusRef,
    Transient,
    gateway_class,
)
from gateways.devino import ERRORS, STATUSES, DevinoGateway, DevinoOnlineGateway, DevinoRestGateway
from smsfleet.contracts import State
from smsfleet.kinds import DevinoSettings
from tests.fakes._serve import serve
from tests.fakes.devino import FakeDevino

from .contract import GatewayContract

LOGIN, PASSWORD, KEY = "acme", "s3cret-Pa55", "0b7c2d4e-key"
STATE_CODES = {State.DELIVERED: 0, State.UNDELIVERED: 47, State.EXPIRED: 46, State.REJECTED: 69, State.UNKNOWN: 99}
LONG = "x" * 200  # two GSM parts


def push(body: Any) -> CallbackRequest:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/json"}, body=raw)


class DevinoContract(GatewayContract[FakeDevino]):
    rate_limited_by_429 = False

    def fake_server(self) -> FakeDevino:
        return FakeDevino(login=LOGIN, password=PASSWORD, api_key=KEY)

    def message(self, job_id: str = "job-1", **fields: Any) -> Outgoing:
        return super().message(job_id, **{"originator": "ACME"} | fields)  # Devino needs a sender name

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        return push({"messageId": receipt.provider_message_id, "status": state.upper()})

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        return [push(b"not json"), push({"status": "DELIVERED"}), push({"messageId": "1"}), push([]), push([1])]


class TestDevinoRest(DevinoContract):
    status_states: ClassVar[tuple[State, ...]] = tuple(STATE_CODES)

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> DevinoGateway:
        return DevinoGateway(DevinoSettings(login=LOGIN, password=PASSWORD, url=url), http)

    def fake_permanent_error(self, fake: FakeDevino) -> None:
        fake.fail_next(1, 2)

    def fake_transient_error(self, fake: FakeDevino) -> None:
        fake.fail_next(1, 8)  # HTTP 500 {"Code": 8}

    def fake_hang(self, fake: FakeDevino) -> None:
        fake.hang_next(1, "/rest/Sms/")  # a hung session request is no send: see its own test

    def assert_auth_on_wire(self, fake: FakeDevino) -> None:
        first, last = fake.requests[0], fake.requests[-1]
        assert (first.method, first.path, first.params) == (
            "GET",
            "/rest/user/sessionid",
            {"login": LOGIN, "password": PASSWORD},
        )
        assert last.params["SessionID"] in fake.sessions

    def fake_set_state(self, fake: FakeDevino, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_state(receipt.provider_message_id or "", STATE_CODES[state])

    # --- the classic API's own quirks ----------------------------------------------------------------------
    def test_registered_and_dispatched(self, http: aiohttp.ClientSession) -> None:
        assert gateway_class("devino") is DevinoGateway
        both = DevinoSettings(api_key=KEY, login=LOGIN, password=PASSWORD)
        assert type(DevinoGateway(DevinoSettings(login=LOGIN, password=PASSWORD), http)) is DevinoRestGateway
        assert type(DevinoGateway(DevinoSettings(api_key=KEY), http)) is DevinoOnlineGateway
        assert type(DevinoGateway(both, http)) is DevinoOnlineGateway
        assert DevinoGateway(DevinoSettings(login=LOGIN, password=PASSWORD), http).has_status

    async def test_wire_fields(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        receipt = await gateway.send(self.message(text="Привет"))
        [session, send] = fake.requests
        sid = next(iter(fake.sessions))
        assert session.params == {"login": LOGIN, "password": PASSWORD}
        assert (send.method, send.path) == ("POST", "/rest/Sms/Send")
        assert send.params == {
            "SessionID": sid,
            "DestinationAddress": "79161234567",
            "Data": "Привет",
            "SourceAddress": "ACME",
        }
        assert receipt == Receipt(
            provider_message_id=fake.messages[0].ids[0], provider_ids=tuple(fake.messages[0].ids), parts=1
        )

    @pytest.mark.parametrize(("lifetime", "minutes"), [(timedelta(seconds=20), "1"), (timedelta(minutes=90), "90")])
    async def test_validity_in_minutes(
        self, gateway: DevinoGateway, fake: FakeDevino, lifetime: timedelta, minutes: str
    ) -> None:
        await gateway.send(self.message(valid_until=datetime.now(UTC) + lifetime - timedelta(seconds=1)))
        assert fake.requests[-1].params["Validity"] == minutes

    async def test_one_id_per_part(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        receipt = await gateway.send(self.message(text=LONG))
        assert receipt.provider_ids == tuple(fake.messages[0].ids)
        assert len(receipt.provider_ids) == receipt.parts == 2
        assert receipt.provider_message_id == receipt.provider_ids[0]

    async def test_session_is_cached(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        await asyncio.gather(*(gateway.send(self.message(f"job-{i}")) for i in range(5)))
        await gateway.send(self.message("job-last"))
        paths = [r.path for r in fake.requests]
        assert paths.count("/rest/user/sessionid") == 1
        assert len({r.params["SessionID"] for r in fake.requests[1:]}) == 1
        assert len(fake.messages) == 6

    async def test_session_renewed_when_its_time_is_up(self, gateway: DevinoRestGateway, fake: FakeDevino) -> None:
        gateway.session_ttl_s = 0.0
        await gateway.send(self.message("job-1"))
        await gateway.send(self.message("job-2"))
        assert [r.path for r in fake.requests].count("/rest/user/sessionid") == 2

    async def test_expired_session_is_renewed_once_on_the_wire(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        await gateway.send(self.message("job-1"))
        fake.expire_sessions()
        receipt = await gateway.send(self.message("job-2"))
        assert [(r.method, r.path) for r in fake.requests] == [
            ("GET", "/rest/user/sessionid"),
            ("POST", "/rest/Sms/Send"),
            ("POST", "/rest/Sms/Send"),  # 401 {"Code": 4, "Desc": "SessionID expired"}
            ("GET", "/rest/user/sessionid"),
            ("POST", "/rest/Sms/Send"),
        ]
        sids = [r.params["SessionID"] for r in fake.requests if r.path == "/rest/Sms/Send"]
        assert sids[0] == sids[1] != sids[2]
        assert [m.ids[0] for m in fake.messages] == ["579700854169272358", receipt.provider_message_id]

    async def test_invalid_session_is_renewed(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        fake.fail_next(1, 3)
        await gateway.send(self.message())
        assert [r.path for r in fake.requests].count("/rest/user/sessionid") == 2
        assert len(fake.messages) == 1

    async def test_renewal_happens_only_once(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        fake.fail_next(2, 4)
        with pytest.raises(Permanent, match=r"devino\.4"):
            await gateway.send(self.message())
        assert [r.path for r in fake.requests] == ["/rest/user/sessionid", "/rest/Sms/Send"] * 2
        assert fake.messages == []

    async def test_a_hung_session_request_is_transient(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        gateway.timeout_s = 0.3
        fake.hang_next(1, "/rest/user/")
        with pytest.raises(Transient, match="timeout"):
            await gateway.send(self.message())
        assert [r.path for r in fake.requests] == ["/rest/user/sessionid"]

    @pytest.mark.parametrize("code", [1, 2, 5, 6, 7, 8, 9])
    async def test_error_table(self, gateway: DevinoGateway, fake: FakeDevino, code: int) -> None:
        fake.fail_next(1, code)
        with pytest.raises(GatewayError) as info:
            await gateway.send(self.message())
        assert type(info.value) is ERRORS[str(code)][0]
        assert info.value.code == f"devino.{code}"

    async def test_bare_server_error_and_garbage(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        await gateway.send(self.message("warm-up"))  # the session is held: the next request is a send
        fake.http_status_next(1, 502)
        with pytest.raises(Transient, match=r"http\.502"):
            await gateway.send(self.message())
        fake.http_status_next(1, 200)  # a 200 that is not a list of ids: it may have been sent
        with pytest.raises(Ambiguous, match=r"devino\.bad_reply"):
            await gateway.send(self.message())

    @pytest.mark.parametrize("code", sorted(k for k in STATUSES if isinstance(k, int)))
    async def test_status_table(self, gateway: DevinoGateway, fake: FakeDevino, code: int) -> None:
        receipt = await gateway.send(self.message())
        fake.set_state(receipt.provider_message_id or "", code)
        report = await gateway.status(
            StatusRef(job_id="job-1", provider_message_id=receipt.provider_message_id, to=self.phone)
        )
        assert (report.state, report.raw_status) == (STATUSES[code][0], str(code))
        assert report.at is not None
        state, sid = fake.requests[-1], next(iter(fake.sessions))
        assert (state.method, state.path) == ("GET", "/rest/Sms/State")
        assert state.params == {"sessionId": sid, "messageId": receipt.provider_message_id}

    async def test_status_of_an_id_devino_does_not_know(self, gateway: DevinoGateway) -> None:
        report = await gateway.status(StatusRef(job_id="j", provider_message_id="42", to=self.phone))
        assert (report.state, report.raw_status, report.at) == (None, "255", None)

    @pytest.mark.parametrize(
        ("states", "expected", "asked"),
        [
            ((0, -1), None, 2),
            ((0, 0), State.DELIVERED, 2),
            ((0, 47), State.UNDELIVERED, 2),
            ((46, -1), State.EXPIRED, 1),  # the first failed part decides: the second is not asked
            ((-2, 69), State.REJECTED, 2),
        ],
    )
    async def test_status_follows_every_part(
        self, gateway: DevinoGateway, fake: FakeDevino, states: tuple[int, int], expected: State | None, asked: int
    ) -> None:
        receipt = await gateway.send(self.message(text=LONG))
        for pid, state in zip(receipt.provider_ids, states, strict=True):
            fake.set_state(pid, state, all_parts=False)
        before = len(fake.requests)
        ref = StatusRef(
            job_id="job-1",
            provider_message_id=receipt.provider_message_id,
            to=self.phone,
            provider_ids=receipt.provider_ids,
        )
        report = await gateway.status(ref)
        assert (report.state, report.provider_message_id, report.job_id) == (expected, receipt.provider_ids[0], "job-1")
        assert report.raw_status == ",".join(str(s) for s in states[:asked])
        assert [r.params["messageId"] for r in fake.requests[before:]] == list(receipt.provider_ids[:asked])
        assert (report.error is None) == (expected in (None, State.DELIVERED))

    @pytest.mark.parametrize("url", ["{}", "{}/", "{}/rest", "{}/rest/Sms/Send"])
    async def test_url_forms(self, http: aiohttp.ClientSession, fake: FakeDevino, url: str) -> None:
        gateway = self.make_gateway(http, url.format(fake.url))
        await gateway.send(self.message())
        assert len(fake.messages) == 1

    def test_public_url_and_repr(self, http: aiohttp.ClientSession) -> None:
        gateway = DevinoGateway(DevinoSettings(login=LOGIN, password=PASSWORD), http)
        assert gateway.base_url == "https://integrationapi.net"
        assert PASSWORD not in repr(gateway)
        assert LOGIN in repr(gateway)

    def test_provider_texts_are_scrubbed(self, gateway: DevinoGateway) -> None:
        error = gateway._error("4", f"login acme with password {PASSWORD} refused")
        assert PASSWORD not in str(error)
        assert isinstance(error, Permanent)


class TestDevinoOnline(DevinoContract):
    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> DevinoGateway:
        return DevinoGateway(DevinoSettings(api_key=KEY, url=url), http)

    def fake_permanent_error(self, fake: FakeDevino) -> None:
        fake.reject_next(1)

    def assert_auth_on_wire(self, fake: FakeDevino) -> None:
        assert fake.requests[-1].headers["Authorization"] == f"Key {KEY}"

    # --- Devino.Online's own quirks ------------------------------------------------------------------------
    async def test_wire_json(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        receipt = await gateway.send(self.message(text="Привет"))
        [seen] = fake.requests
        assert (seen.method, seen.path, seen.params) == ("POST", "/sms/messages", {"includeSegmentId": "true"})
        assert seen.headers["Content-Type"] == seen.headers["Accept"] == "application/json"
        assert seen.json == {
            "messages": [{"to": "79161234567", "text": "Привет", "from": "ACME", "options": {"job_id": "job-1"}}]
        }
        assert receipt == Receipt(provider_message_id=fake.messages[0].ids[0], parts=1)

    async def test_parts_from_segment_ids(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        receipt = await gateway.send(self.message(text=LONG))
        assert (receipt.provider_message_id, receipt.parts) == (fake.messages[0].ids[0], 2)

    @pytest.mark.parametrize(("lifetime", "seconds"), [(timedelta(seconds=90), 90), (timedelta(days=5), 259_200)])
    async def test_validity_in_seconds(
        self, gateway: DevinoGateway, fake: FakeDevino, lifetime: timedelta, seconds: int
    ) -> None:
        await gateway.send(self.message(valid_until=datetime.now(UTC) + lifetime))
        assert seconds - 1 <= fake.requests[-1].json["messages"][0]["validity"] <= seconds

    async def test_rejection_names_its_reasons(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        with pytest.raises(Permanent, match="INVALID_PHONE") as info:
            await gateway.send(self.message(to="+12"))
        assert info.value.code == "devino.REJECTED"

    async def test_without_originator_devino_refuses(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        with pytest.raises(Permanent, match="INVALID_SENDER"):
            await gateway.send(Outgoing(job_id="j", to=self.phone, text="hi"))
        assert "from" not in fake.requests[-1].json["messages"][0]

    async def test_garbage_200_is_ambiguous(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        fake.http_status_next(1, 200)
        with pytest.raises(Ambiguous, match=r"devino\.bad_reply"):
            await gateway.send(self.message())

    def test_callbacks_carry_the_job_id(self, gateway: DevinoGateway) -> None:
        body = [
            {"messageId": "7", "status": "DELIVERED", "options": {"job_id": "job-7"}},
            {"messageId": 8, "status": "sent"},
            {"messageId": "9", "status": "CLICKED"},
            {"messageId": "10", "status": "SOMETHING_NEW"},
        ]
        callback = gateway.parse_callback(push(body))
        got = [(r.provider_message_id, r.job_id, r.state, r.raw_status) for r in callback.reports]
        assert got == [
            ("7", "job-7", State.DELIVERED, "DELIVERED"),
            ("8", None, None, "SENT"),
            ("9", None, State.DELIVERED, "CLICKED"),
            ("10", None, None, "SOMETHING_NEW"),
        ]
        assert callback.reply_status == 200

    def test_public_url(self, http: aiohttp.ClientSession) -> None:
        gateway = DevinoGateway(DevinoSettings(api_key=KEY), http)
        assert gateway.base_url == "https://api.devino.online"
        assert KEY not in repr(gateway)
        assert not gateway.has_status

    # --- batches -------------------------------------------------------------------------------------------
    def test_batch_size_and_rate(self, http: aiohttp.ClientSession) -> None:
        online = DevinoGateway(DevinoSettings(api_key=KEY), http)
        classic = DevinoGateway(DevinoSettings(login=LOGIN, password=PASSWORD), http)
        assert (online.max_batch, online.rate_per, classic.max_batch) == (1000, "message", 1)

    async def test_a_batch_is_one_request_of_what_send_puts(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        messages = [*self.batch(2), self.message("job-long", to=self.phone[:-1] + "9", text=LONG)]
        outcomes = await gateway.send_many(messages)
        [seen] = fake.requests
        singles = []
        for m in messages:  # each item is what `send` puts for that message alone
            await gateway.send(m)
            singles += fake.requests[-1].json["messages"]
        assert seen.json == {"messages": singles}
        taken = fake.messages[:3]
        assert [(m.to, m.fields["options"]["job_id"]) for m in taken] == [
            (m.to.lstrip("+"), m.job_id) for m in messages
        ]
        assert outcomes == [Receipt(provider_message_id=m.ids[0], parts=len(m.ids) - 1) for m in taken]
        assert [o.parts for o in outcomes if isinstance(o, Receipt)] == [1, 1, 2]

    async def test_one_rejected_message_fails_only_its_job(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        good, _, other = self.batch(3)
        bad = self.message("job-bad", to="+12")
        outcomes = await gateway.send_many([good, bad, other])
        assert [type(o) for o in outcomes] == [Receipt, Permanent, Receipt]
        assert isinstance(outcomes[1], Permanent)
        assert outcomes[1].code == "devino.REJECTED"
        assert "INVALID_PHONE" in outcomes[1].message
        assert len(fake.requests) == 1
        assert [m.fields["options"]["job_id"] for m in fake.messages] == [good.job_id, other.job_id]

    async def test_a_400_for_the_whole_request_sends_each_alone(self, gateway: DevinoGateway, fake: FakeDevino) -> None:
        fake.http_status_next(1, 400)
        outcomes = await gateway.send_many(self.batch(3))
        assert [type(o) for o in outcomes] == [Receipt] * 3
        assert [len(r.json["messages"]) for r in fake.requests] == [3, 1, 1, 1]
        assert len(fake.messages) == 3  # the refused request took nothing

    async def test_results_that_do_not_match_the_messages_are_ambiguous(self, http: aiohttp.ClientSession) -> None:
        async def answer(request: web.Request) -> web.Response:  # one result for any number of messages
            return web.json_response({"result": [{"code": "OK", "messageId": "1"}]})

        app = web.Application()
        app.router.add_post("/sms/messages", answer)
        runner, url = await serve(app)
        try:
            outcomes = await self.make_gateway(http, url).send_many(self.batch(3))
        finally:
            await runner.cleanup()
        assert [type(o) for o in outcomes] == [Ambiguous] * 3  # Devino may have taken all three: never resent blindly
        assert all(o.code == "devino.bad_reply" for o in outcomes if isinstance(o, Ambiguous))
