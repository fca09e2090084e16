"""A wire-faithful fake of the `sadr`/`dadr` HTTP GET family (gateways/_sadr_dadr.py), one per gateway kind.

    async with FakeSadrDadr(login="acme", password="s3cret", path="/sendsms.php", extra={"client_id": "c-42"}) as fake:
        settings = SbermobileSettings(login="acme", password="s3cret", client_id="c-42", url=fake.url)

Like the family (shared/providers/providers-B.md §6): one endpoint, `path`, taking GET only (other methods get
405, as a GET-only route would answer); auth by `user` + `pwd`, plus the `extra` parameters a kind adds, all of
which must match; a query with `smsid` is a status lookup, any other a send. Every reply is HTTP 200
text/plain UTF-8: a send answers the new message id (digits) or one of the family's error texts (ERROR_TEXTS,
verbatim, as Stream Telecom's clients compare them); a lookup answers the status word, empty for an id it does
not know. A send without `sadr` uses `default_sender` (None: "Нет отправителя"); with `senders` set, a `sadr`
outside it gets "Такого отправителя нет"; a `dadr` that is not 10-15 digits gets "Данное направление закрыто
для вас" (a '+' sent unencoded arrives as a space, and is refused too).

New messages start at `initial_status` (default "send"); tests move them with `set_status`, and an
end-to-end test may pass `initial_status="deliver"`. Faults: `fail_next(n, text)` (sends only: that reply
instead, nothing taken), and those of `FakeProvider` (tests/fakes/_base.py): `reset_after_accept_next(n)` on
sends; `http_status_next(n, status)`, `hang_next(n)` and `latency` on any request.

`SadrDadrContract` is the gateway contract (tests/gateways/contract.py) with its hooks filled for this fake
and the family's own wire tests; a kind's test module sets `kind`, `path` and `extra` and adds its quirks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import aiohttp
import msgspec
import pytest
from aiohttp import web

from gateways import (
    Ambiguous,
    CallbackRequest,
    Gateway,
    Outgoing,
    Permanent,
    Receipt,
    StatusRef,
    Transient,
    gateway_class,
)
from gateways._sadr_dadr import ERRORS, SADR_DADR, STATUSES
from gateways.http import PresetGateway
from smsfleet.contracts import State
from smsfleet.kinds import KIND_SETTINGS, fields
from smsfleet.senders import SenderError, parse_sender
from tests.gateways.contract import GatewayContract

from ._base import FakeProvider

__all__ = ["ERROR_TEXTS", "FakeMessage", "FakeRequest", "FakeSadrDadr", "SadrDadrContract"]

ERROR_TEXTS = {
    "auth": "Неправильный логин или пароль",
    "blocked": "Ваш аккаунт заблокирован",
    "direction": "Данное направление закрыто для вас",
    "no_sender": "Нет отправителя",
    "unknown_sender": "Такого отправителя нет",
    "no_text": "Нет текста сообщения",
    "no_phone": "Укажите номер телефона",
    "flood": "Flood SMS",
}


@dataclasses.dataclass
class FakeRequest:
    method: str
    path: str
    params: dict[str, str]
    query: str  # the raw query string, to check encoding and that no parameter is repeated
    connection: str  # the Connection header


@dataclasses.dataclass
class FakeMessage:
    id: str
    phone: str
    text: str
    sender: str
    status: str


class FakeSadrDadr(FakeProvider[FakeRequest]):
    def __init__(
        self,
        login: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        path: str = "/sendsms.php",
        extra: dict[str, str] | None = None,
        senders: set[str] | None = None,
        default_sender: str | None = "INFO",
        initial_status: str = "send",
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.login, self.password, self.extra = login, password, dict(extra or {})
        self.path, self.senders, self.default_sender = path, senders, default_sender
        self.initial_status = initial_status
        self.messages: dict[str, FakeMessage] = {}
        self._fail: list[str] = []
        self._next_id = 4_100_000_000

    # knobs
    def fail_next(self, n: int, text: str) -> None:
        self._fail += [text] * n

    def set_status(self, message_id: str, status: str) -> None:
        self.messages[message_id].status = status

    def sends(self) -> list[FakeRequest]:
        return [r for r in self.requests if "smsid" not in r.params]

    # server
    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", self.path, self.entry)]

    async def record(self, request: web.Request) -> FakeRequest:
        params = {k: request.query.getone(k) for k in request.query}
        query, connection = request.rel_url.raw_query_string, request.headers.get("Connection", "")
        return FakeRequest(request.method, request.path, params, query, connection)

    async def handle(self, request: web.Request, seen: FakeRequest) -> web.StreamResponse:
        params = seen.params
        if request.method != "GET":
            return web.Response(status=405, text="Method Not Allowed")
        wanted = {"user": self.login, "pwd": self.password} | self.extra
        if any(params.get(k) != v for k, v in wanted.items()):
            return _text(ERROR_TEXTS["auth"])
        if "smsid" in params:
            message = self.messages.get(params["smsid"])
            return _text(message.status if message else "")
        return self._send(request, params)

    def _send(self, request: web.Request, params: dict[str, str]) -> web.Response:  # noqa: PLR0911 - one per error
        if self._fail:
            return _text(self._fail.pop(0))
        phone, text = params.get("dadr", ""), params.get("text", "")
        sender = params.get("sadr") or self.default_sender
        if not text:
            return _text(ERROR_TEXTS["no_text"])
        if not phone:
            return _text(ERROR_TEXTS["no_phone"])
        if not sender:
            return _text(ERROR_TEXTS["no_sender"])
        if self.senders is not None and sender not in self.senders:
            return _text(ERROR_TEXTS["unknown_sender"])
        if not (phone.isdigit() and 10 <= len(phone) <= 15):
            return _text(ERROR_TEXTS["direction"])
        self._next_id += 1
        message = FakeMessage(str(self._next_id), phone, text, sender, self.initial_status)
        self.messages[message.id] = message
        self.dropped(request)  # with reset_after_accept_next: taken, but no reply
        return _text(message.id)


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/plain", charset="utf-8")


STATE_WORDS = {State.DELIVERED: "deliver", State.UNDELIVERED: "not_deliver", State.EXPIRED: "expired"}
LOGIN, PASSWORD = "acme-api", "s3cret-Pa55"


class SadrDadrContract(GatewayContract[FakeSadrDadr]):
    """The gateway contract for a kind of the family, and the family's wire, asserted field by field."""

    kind: ClassVar[str]
    path: ClassVar[str] = "/sendsms.php"
    #: settings beyond login, password and url; the same names go on the wire
    extra: ClassVar[dict[str, str]] = {}
    status_states = tuple(STATE_WORDS)  # the family has no "rejected" status word

    def settings(self, url: str | None, **changes: str) -> Any:
        values = {"login": LOGIN, "password": PASSWORD, "url": url} | self.extra | changes
        return KIND_SETTINGS[self.kind](**values)

    def auth_fields(self) -> dict[str, str]:
        return {"user": LOGIN, "pwd": PASSWORD} | self.extra

    # --- hooks ---------------------------------------------------------------------------------------------
    def fake_server(self) -> FakeSadrDadr:
        return FakeSadrDadr(LOGIN, PASSWORD, path=self.path, extra=self.extra)

    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> Gateway[Any]:
        return gateway_class(self.kind)(self.settings(url), http)

    def fake_permanent_error(self, fake: FakeSadrDadr) -> None:
        fake.fail_next(1, ERROR_TEXTS["direction"])

    def assert_auth_on_wire(self, fake: FakeSadrDadr) -> None:
        params = fake.requests[-1].params
        assert {k: params.get(k) for k in self.auth_fields()} == self.auth_fields()

    def fake_set_state(self, fake: FakeSadrDadr, message: Outgoing, receipt: Receipt, state: State) -> None:
        fake.set_status(receipt.provider_message_id or "", STATE_WORDS[state])

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        raise NotImplementedError("the family pushes nothing")

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        raise NotImplementedError("the family pushes nothing")

    # --- the family's wire ---------------------------------------------------------------------------------
    def test_registered_and_says_it_assumes(self) -> None:
        cls = gateway_class(self.kind)
        assert cls.kind == self.kind
        assert cls.has_status
        assert not cls.can_find
        assert not cls.settings_type.callbacks
        assert cls.assumptions[0].startswith("the wire format is an assumption to confirm with ")

    async def test_send_wire(self, gateway: Gateway[Any], fake: FakeSadrDadr) -> None:
        receipt = await gateway.send(self.message(text="Привет + мир & co", originator="ACME"))
        [seen] = fake.requests
        assert (seen.method, seen.path, seen.connection.lower()) == ("GET", self.path, "close")
        assert seen.params == self.auth_fields() | {"sadr": "ACME", "dadr": "79161234567", "text": "Привет + мир & co"}
        assert list(seen.params) == [*self.auth_fields(), "sadr", "dadr", "text"]
        assert seen.query.count("text=") == 1
        assert receipt.provider_message_id == next(iter(fake.messages))
        assert receipt.provider_ids == ()
        assert fake.messages[receipt.provider_message_id].text == "Привет + мир & co"

    async def test_no_originator_leaves_sadr_out(self, gateway: Gateway[Any], fake: FakeSadrDadr) -> None:
        await gateway.send(self.message())
        assert "sadr" not in fake.requests[-1].params
        assert next(iter(fake.messages.values())).sender == "INFO"  # the account's default sender

    async def test_status_wire(self, gateway: Gateway[Any], fake: FakeSadrDadr) -> None:
        receipt = await gateway.send(self.message())
        ref = StatusRef(job_id="job-1", provider_message_id=receipt.provider_message_id, to=self.phone)
        report = await gateway.status(ref)
        seen = fake.requests[-1]
        assert (seen.method, seen.path) == ("GET", self.path)  # a lookup may go on a kept-alive connection
        assert seen.params == self.auth_fields() | {"smsid": receipt.provider_message_id}
        assert (report.state, report.raw_status, report.job_id) == (None, "send", "job-1")

    @pytest.mark.parametrize(("word", "expected"), sorted(STATUSES.items()))
    async def test_status_table(
        self, gateway: Gateway[Any], fake: FakeSadrDadr, word: str, expected: tuple[State | None, str]
    ) -> None:
        receipt = await gateway.send(self.message())
        pid = receipt.provider_message_id or ""
        fake.set_status(pid, word.upper())  # case does not matter
        report = await gateway.status(StatusRef(job_id="job-1", provider_message_id=pid, to=self.phone))
        assert (report.state, report.raw_status, report.provider_message_id) == (expected[0], word, pid)
        failed = expected[0] not in (None, State.DELIVERED)
        assert (report.error.code if report.error else None) == (f"{self.kind}.status.{word}" if failed else None)

    async def test_status_of_an_unknown_id_is_not_final(self, gateway: Gateway[Any]) -> None:
        report = await gateway.status(StatusRef(job_id="j", provider_message_id="77", to=self.phone))
        assert (report.state, report.raw_status) == (None, "")

    async def test_status_errors_are_transient(self, gateway: Gateway[Any], fake: FakeSadrDadr) -> None:
        ref = StatusRef(job_id="j", provider_message_id="77", to=self.phone)
        fake.http_status_next(1, 403)
        with pytest.raises(Transient, match=r"http\.403"):
            await gateway.status(ref)
        with pytest.raises(Transient, match="no_id"):
            await gateway.status(StatusRef(job_id="j", provider_message_id=None, to=self.phone))

    @pytest.mark.parametrize("suffix", sorted(ERROR_TEXTS))
    async def test_error_table(self, gateway: Gateway[Any], fake: FakeSadrDadr, suffix: str) -> None:
        fake.fail_next(1, ERROR_TEXTS[suffix] + ".")  # a trailing dot does not matter either
        with pytest.raises(Permanent) as info:
            await gateway.send(self.message())
        assert info.value.code == f"{self.kind}.{suffix}"

    def test_the_fake_speaks_every_error_of_the_table(self) -> None:
        assert {suffix for _, suffix, _ in ERRORS.values()} == set(ERROR_TEXTS)

    async def test_errors_from_the_fake_itself(self, gateway: Gateway[Any], fake: FakeSadrDadr) -> None:
        with pytest.raises(Permanent, match=rf"{self.kind}\.direction"):
            await gateway.send(self.message(to="+12"))
        with pytest.raises(Permanent, match=rf"{self.kind}\.no_text"):
            await gateway.send(self.message(text=""))
        fake.senders = {"ACME"}
        with pytest.raises(Permanent, match=rf"{self.kind}\.unknown_sender"):
            await gateway.send(self.message(originator="OTHER"))
        fake.senders, fake.default_sender = None, None
        with pytest.raises(Permanent, match=rf"{self.kind}\.no_sender"):
            await gateway.send(self.message())
        assert fake.messages == {}

    async def test_odd_replies(self, gateway: Gateway[Any], fake: FakeSadrDadr) -> None:
        fake.fail_next(1, "")  # HTTP 200, nothing in it: the message may have been taken
        with pytest.raises(Ambiguous, match="empty_reply"):
            await gateway.send(self.message())
        fake.fail_next(1, f"Ошибка сервера: user={LOGIN}&pwd={PASSWORD}")  # unknown, and it echoes the secrets
        with pytest.raises(Ambiguous, match="unknown_reply") as info:  # it may have been taken: never blindly again
            await gateway.send(self.message())
        self.assert_no_secret(gateway, info.value)
        fake.fail_next(1, "<html>Service temporarily unavailable</html>")  # a proxy's page with HTTP 200
        with pytest.raises(Ambiguous, match="unknown_reply"):
            await gateway.send(self.message())
        fake.fail_next(1, "4100000007\n4100000008")  # several ids: one per part
        receipt = await gateway.send(self.message())
        assert receipt.ids == ("4100000007", "4100000008")
        assert receipt.provider_message_id == "4100000007"

    @pytest.mark.parametrize(("status", "expected"), [(400, Permanent), (302, Permanent), (408, Transient)])
    async def test_http_statuses(
        self, gateway: Gateway[Any], fake: FakeSadrDadr, status: int, expected: type[Exception]
    ) -> None:
        fake.http_status_next(1, status)
        with pytest.raises(expected, match=rf"http\.{status}"):
            await gateway.send(self.message())

    async def test_a_lost_send_is_not_sent_again(self, gateway: Gateway[Any], fake: FakeSadrDadr) -> None:
        fake.reset_after_accept_next(1)
        with pytest.raises(Ambiguous, match="reset"):
            await gateway.send(self.message())
        assert len(fake.sends()) == 1  # aiohttp would resend a GET by itself; the adapter forbids it

    def test_a_sender_without_url_is_refused_when_saved(self) -> None:
        doc = {"id": "s1", "gateway": self.kind, "accounts": ["acme"]}
        with pytest.raises(SenderError) as info:
            parse_sender(doc | {"settings": {"login": LOGIN, "password": PASSWORD} | self.extra})
        assert info.value.field == "settings.url"
        assert "required" in info.value.message
        with pytest.raises(ValueError, match="url"):
            self.settings(None)

    def test_a_stored_base_url_is_read_as_url(self) -> None:
        url = "https://sms.example.com/get/?route=2"
        settings = {"login": LOGIN, "password": PASSWORD, "base_url": url} | self.extra
        sender = parse_sender({"id": "s1", "gateway": self.kind, "accounts": ["acme"], "settings": settings})
        assert (sender.settings.url, sender.settings.base_url) == (url, None)
        assert "base_url" not in msgspec.to_builtins(sender.settings)  # saved again under its new name
        newer = parse_sender(
            {"id": "s1", "gateway": self.kind, "accounts": ["acme"], "settings": settings | {"url": url + "&v=2"}}
        )
        assert newer.settings.url == url + "&v=2"  # url wins over the former name

    def test_the_form_shows_the_seed_fields_then_the_url(self) -> None:
        shown = [f.name for f in fields(KIND_SETTINGS[self.kind]) if not f.advanced]
        assert shown == ["login", "password", *self.extra, "url"]
        assert all(f.required for f in fields(KIND_SETTINGS[self.kind]) if not f.advanced)

    def test_the_preset_speaks_the_family_through_the_http_kind(self, gateway: Gateway[Any]) -> None:
        assert isinstance(gateway, PresetGateway)
        assert dict(type(gateway).preset) == SADR_DADR | {f"{k}_at": k for k in self.extra}

    def test_repr_has_no_secret(self, gateway: Gateway[Any]) -> None:
        assert PASSWORD not in repr(gateway)
        assert LOGIN in repr(gateway)
