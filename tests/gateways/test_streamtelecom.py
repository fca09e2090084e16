"""Stream Telecom: the gateway contract against the fake REST API, then its sessions and other quirks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from gateways import Ambiguous, Outgoing, Permanent, Receipt, StatusRef, Transient, gateway_class
from gateways._sadr_dadr import ERRORS  # the table streamtelecom matches refusals against
from gateways.streamtelecom import STATUSES, StreamtelecomGateway
from smsfleet.contracts import State
from smsfleet.kinds import StreamtelecomSettings
from tests.fakes.streamtelecom import MAX_PACKET, PACKET, SEND, SESSION, STATE, FakeStreamTelecom

from .contract import GatewayContract

LOGIN, PASSWORD = "acme", "s3cret-Pa55"
STATE_CODES = {State.DELIVERED: 0, State.UNDELIVERED: 42, State.EXPIRED: 46, State.UNKNOWN: 255}


class TestStreamtelecom(GatewayContract[FakeStreamTelecom]):
    status_states = (State.DELIVERED, State.UNDELIVERED, State.EXPIRED, State.UNKNOWN)
    rate_limited_by_429 = False

    def message(self, job_id: str = "job-1", **fields: Any) -> Outgoing:
        return super().message(job_id, **{"originator": "ACME"} | fields)  # Stream needs a sender name

    def fake_server(self) -> FakeStreamTelecom:
        return FakeStreamTelecom(login=LOGIN, password=PASSWORD)

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> StreamtelecomGateway:
        return StreamtelecomGateway(StreamtelecomSettings(login=LOGIN, password=PASSWORD, base_url=url), http)

    def fake_permanent_error(self, fake: FakeStreamTelecom) -> None:
        fake.fail_next(1, "Данное направление закрыто для вас")

    def fake_hang(self, fake: FakeStreamTelecom) -> None:
        fake.hang_next(1, SEND, PACKET, STATE)  # a hanging login is not ambiguous: see test_login_hang_is_transient

    def assert_auth_on_wire(self, fake: FakeStreamTelecom) -> None:
        login, send = fake.requests[-2:]
        assert (login.path, login.form) == (SESSION, {"login": LOGIN, "password": PASSWORD})
        assert send.form["sessionId"] == fake.sessions[-1]
        assert PASSWORD not in send.body.decode()

    def fake_set_state(self, fake: FakeStreamTelecom, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_state(receipt.provider_message_id or "", STATE_CODES[state])

    # --- Stream Telecom's own quirks -----------------------------------------------------------------------
    def test_registered(self) -> None:
        assert gateway_class("streamtelecom") is StreamtelecomGateway

    async def test_wire_forms(self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom) -> None:
        receipt = await gateway.send(self.message(text="Привет, мир"))
        await gateway.status(StatusRef(job_id="job-1", provider_message_id=receipt.provider_message_id, to=""))
        _, send, state = fake.requests
        assert [(r.method, r.path) for r in fake.requests] == [("POST", SESSION), ("POST", SEND), ("POST", STATE)]
        assert send.headers["Content-Type"] == "application/x-www-form-urlencoded"
        session_id = fake.sessions[0]
        assert send.form == {
            "destinationAddress": "79161234567",
            "data": "Привет, мир",
            "sourceAddress": "ACME",
            "sessionId": session_id,
        }
        assert state.form == {"messageId": receipt.provider_message_id, "sessionId": session_id}
        assert receipt.provider_message_id == fake.messages[0].id

    async def test_one_login_serves_concurrent_sends(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        await asyncio.gather(*(gateway.send(self.message(f"job-{i}")) for i in range(5)))
        assert [r.path for r in fake.requests].count(SESSION) == 1
        assert len(fake.messages) == 5

    async def test_expired_session_is_renewed_and_the_call_repeated(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        await gateway.send(self.message("a"))
        fake.expire_sessions()
        receipt = await gateway.send(self.message("b"))
        assert [r.path for r in fake.requests] == [SESSION, SEND, SEND, SESSION, SEND]
        assert [r.form["sessionId"] for r in fake.requests if r.path == SEND] == [fake.sessions[0]] * 2 + [
            fake.sessions[1]
        ]
        assert receipt.provider_message_id == fake.messages[1].id
        assert len(fake.messages) == 2

    async def test_a_200_naming_the_session_renews_it(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        fake.fail_next(1, "Session expired", 200)
        await gateway.send(self.message())
        assert len(fake.sessions) == 2
        assert len(fake.messages) == 1

    async def test_a_new_session_refused_too_is_transient(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        fake.fail_next(2, "Unauthorized", 401)
        with pytest.raises(Transient, match=r"streamtelecom\.session"):
            await gateway.send(self.message())
        assert [r.path for r in fake.requests] == [SESSION, SEND, SESSION, SEND]

    async def test_login_hang_is_transient(self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom) -> None:
        gateway.timeout_s = 0.2
        fake.hang_next(1, SESSION)
        with pytest.raises(Transient, match="timeout"):
            await gateway.send(self.message())
        assert not fake.messages

    async def test_a_job_without_originator_is_refused_by_stream(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        with pytest.raises(Permanent, match=r"streamtelecom\.no_sender"):
            await gateway.send(self.message(originator=None))
        assert "sourceAddress" not in fake.requests[-1].form

    @pytest.mark.parametrize("status", [400, 200])
    @pytest.mark.parametrize("text", sorted(ERRORS))
    async def test_error_table(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom, text: str, status: int
    ) -> None:
        fake.fail_next(1, text.upper() + ".", status)  # matched whatever the case, trailing dot or not
        cls, code, _ = ERRORS[text]
        with pytest.raises(cls) as info:
            await gateway.send(self.message())
        assert info.value.code == f"streamtelecom.{code}"
        assert text.upper() in info.value.message

    async def test_error_text_inside_an_object(self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom) -> None:
        fake.fail_next(1, {"Code": 7, "Desc": "Flood SMS"}, 400)
        with pytest.raises(Permanent, match=r"streamtelecom\.flood"):
            await gateway.send(self.message())

    async def test_unknown_refusals(self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom) -> None:
        fake.fail_next(1, "Что-то новое", 400)
        with pytest.raises(Permanent, match=r"streamtelecom\.http\.400"):
            await gateway.send(self.message("a"))
        fake.fail_next(1, {"unexpected": True}, 200)  # may have been taken
        with pytest.raises(Ambiguous, match=r"streamtelecom\.http\.200"):
            await gateway.send(self.message("b"))

    async def test_several_ids_are_kept(self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom) -> None:
        fake.fail_next(1, ["11", "12"], 200)
        receipt = await gateway.send(self.message())
        assert (receipt.provider_message_id, receipt.ids) == ("11", ("11", "12"))

    @pytest.mark.parametrize(("lifetime", "validity"), [(timedelta(seconds=90), "2"), (timedelta(seconds=-5), "1")])
    async def test_validity_in_minutes(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom, lifetime: timedelta, validity: str
    ) -> None:
        await gateway.send(self.message(valid_until=datetime.now(UTC) + lifetime))
        assert fake.requests[-1].form["validity"] == validity
        assert fake.messages[0].validity == validity

    @pytest.mark.parametrize(("code", "expected"), sorted(STATUSES.items()))
    async def test_status_table(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom, code: int, expected: tuple[State | None, str]
    ) -> None:
        receipt = await gateway.send(self.message())
        pid = receipt.provider_message_id or ""
        fake.set_state(pid, code)
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=pid, to=self.phone))
        assert (report.state, report.raw_status, report.provider_message_id) == (expected[0], str(code), pid)
        assert report.at is not None
        assert abs(report.at - datetime.now(UTC)) < timedelta(seconds=5)
        if expected[0] not in (None, State.DELIVERED):
            assert report.error is not None
            assert report.error.code == f"streamtelecom.state.{code}"

    async def test_status_of_an_unknown_id_is_unknown(self, gateway: StreamtelecomGateway) -> None:
        report = await gateway.status(StatusRef(job_id="j", provider_message_id="1", to=self.phone))
        assert (report.state, report.raw_status) == (State.UNKNOWN, "255")

    async def test_status_needs_a_message_id(self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom) -> None:
        with pytest.raises(Transient, match="no_message_id"):
            await gateway.status(StatusRef(job_id="j", provider_message_id=None, to=self.phone))
        assert not fake.requests

    def test_no_credential_in_repr(self, gateway: StreamtelecomGateway) -> None:
        assert PASSWORD not in repr(gateway)
        assert LOGIN in repr(gateway)

    # --- batches -------------------------------------------------------------------------------------------
    def test_batch_size_and_rate(self) -> None:
        assert (StreamtelecomGateway.max_batch, StreamtelecomGateway.rate_per) == (100, "message")

    async def test_a_batch_is_one_packet_of_what_send_puts(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        valid_until = datetime.now(UTC) + timedelta(minutes=30)
        messages = [
            self.message(f"job-{i}", to=f"+7916123456{i}", text=f"Код {i}", valid_until=valid_until) for i in range(3)
        ]
        outcomes = await gateway.send_many(messages)
        await gateway.send(messages[0])
        _, packet, single = fake.requests
        assert (packet.path, single.path) == (PACKET, SEND)
        packet_form, single_form = packet.form, single.form
        sms = [{"phone": m.to.lstrip("+"), "text": m.text} for m in messages]
        assert json.loads(packet_form.pop("phone_data")) == {"sms": sms}
        del single_form["destinationAddress"], single_form["data"]
        assert packet_form == single_form == {"sourceAddress": "ACME", "validity": "30", "sessionId": fake.sessions[0]}
        taken = fake.messages[:3]
        assert [(t.destination, t.text, t.validity) for t in taken] == [(m["phone"], m["text"], "30") for m in sms]
        assert outcomes == [Receipt(provider_message_id=t.id) for t in taken]

    async def test_a_batch_of_one_is_a_single_send(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        [outcome] = await gateway.send_many([self.message("a")])
        await gateway.send(self.message("b"))
        _, batch_of_one, single = fake.requests
        assert (batch_of_one.path, batch_of_one.form) == (SEND, single.form)
        assert outcome == Receipt(provider_message_id=fake.messages[0].id)

    async def test_one_packet_per_sender_name_and_validity(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        """`sourceAddress` and `validity` are the request's: messages that differ in them go apart, and each
        outcome is still its own message's."""
        fake.senders.append("BRAND")
        later = datetime.now(UTC) + timedelta(minutes=60)
        kinds = [{}, {"originator": "BRAND"}, {}, {"originator": "BRAND"}, {"valid_until": later}, {}]
        messages = [self.message(f"job-{n}", to=f"+7916123450{n}", **k) for n, k in enumerate(kinds)]
        outcomes = await gateway.send_many(messages)
        sends = [(r.path, r.form.get("sourceAddress"), r.form.get("validity")) for r in fake.requests[1:]]
        assert len(sends) == 3
        assert set(sends) == {(PACKET, "ACME", None), (PACKET, "BRAND", None), (SEND, "ACME", "60")}
        taken = [fake.by_id[o.provider_message_id or ""] for o in outcomes if isinstance(o, Receipt)]
        assert [(t.destination, t.source) for t in taken] == [(m.to.lstrip("+"), m.originator) for m in messages]

    async def test_one_refused_message_fails_only_its_job(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        good, _, other = self.batch(3)
        bad = self.message("job-bad", to="+4721234567")  # a valid number the fake refuses ("direction closed")
        outcomes = await gateway.send_many([good, bad, other])
        assert [type(o) for o in outcomes] == [Receipt, Permanent, Receipt]
        assert isinstance(outcomes[1], Permanent)
        assert outcomes[1].code == "streamtelecom.direction"  # as a single send of it is refused
        assert [r.path for r in fake.requests] == [SESSION, PACKET, SEND, SEND, SEND]  # refused whole, then each alone
        assert sorted(m.destination for m in fake.messages) == [good.to.lstrip("+"), other.to.lstrip("+")]

    async def test_each_entry_is_its_own_message(self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom) -> None:
        """Entries are matched by position: ids (an array, or a bare integer), a refusal for that message only, or
        neither (ambiguous for that message only); nothing is sent again."""
        fake.fail_next(1, [["11"], "Данное направление закрыто для вас.", ["12", "13"], 14, {"x": 1}], 200)
        outcomes = await gateway.send_many(self.batch(5))
        assert outcomes[0] == Receipt(provider_message_id="11")
        assert isinstance(outcomes[1], Permanent)
        assert outcomes[1].code == "streamtelecom.direction"
        assert outcomes[2:4] == [
            Receipt(provider_message_id="12", provider_ids=("12", "13")),
            Receipt(provider_message_id="14"),
        ]
        assert isinstance(outcomes[4], Ambiguous)
        assert [r.path for r in fake.requests] == [SESSION, PACKET]

    @pytest.mark.parametrize(
        "reply",
        [[["11"], ["12"]], [["11"], ["12"], ["13"], ["14"]], {"Result": "OK"}, "OK"],
        ids=["fewer", "more", "object", "text"],
    )
    async def test_a_reply_that_does_not_match_is_ambiguous(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom, reply: object
    ) -> None:
        fake.fail_next(1, reply, 200)
        outcomes = await gateway.send_many(self.batch(3))
        assert [type(o) for o in outcomes] == [Ambiguous] * 3  # Stream may have taken them: never resent blindly
        assert [r.path for r in fake.requests] == [SESSION, PACKET]

    async def test_a_refusal_of_the_request_is_every_message(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        """The account and the sender name are the request's, so such a refusal is not sent again one by one."""
        fake.fail_next(1, "Ваш аккаунт заблокирован", 400)
        blocked = await gateway.send_many(self.batch(3))
        unknown = await gateway.send_many([self.message(f"o{i}", originator="OTHER") for i in range(3)])
        assert [getattr(o, "code", None) for o in blocked] == ["streamtelecom.blocked"] * 3
        assert [getattr(o, "code", None) for o in unknown] == ["streamtelecom.unknown_sender"] * 3
        assert [r.path for r in fake.requests] == [SESSION, PACKET, PACKET]
        assert not fake.messages

    async def test_an_expired_session_mid_batch_is_renewed_and_the_packet_repeated(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        await gateway.send(self.message())
        fake.expire_sessions()
        outcomes = await gateway.send_many(self.batch(3))
        assert [r.path for r in fake.requests] == [SESSION, SEND, PACKET, SESSION, PACKET]
        assert [r.form["sessionId"] for r in fake.requests if r.path == PACKET] == fake.sessions
        assert outcomes == [Receipt(provider_message_id=m.id) for m in fake.messages[1:]]
        assert len(fake.messages) == 4  # the refused packet took nothing

    async def test_a_full_batch_is_one_packet_and_a_larger_one_is_refused(
        self, gateway: StreamtelecomGateway, fake: FakeStreamTelecom
    ) -> None:
        messages = [self.message(f"job-{i}", to=f"+7916{i:07d}") for i in range(MAX_PACKET + 1)]
        full = await gateway.send_many(messages[:-1])
        assert [r.path for r in fake.requests] == [SESSION, PACKET]
        over = await gateway.send_many(messages)  # (the worker never sends more than `max_batch`)
        assert [r.path for r in fake.requests[2:]] == [PACKET] + [SEND] * len(messages)
        assert all(isinstance(o, Receipt) for o in full + over)
        assert len(fake.messages) == 2 * len(messages) - 1
