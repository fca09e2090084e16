"""The contract every gateway adapter keeps, written once (STYLE habit 6).

A gateway's test module inherits `GatewayContract[ItsFake]` and fills in the hooks below; the suite then runs
against the adapter talking to that provider's wire-faithful fake over real HTTP. The class name has no `Test`
prefix, so pytest collects it only through its subclasses.

What it checks: success -> a Receipt with ids; a permanent refusal -> Permanent; a 5xx -> Transient; HTTP
429 (or the provider's own signal) -> RateLimited; connection refused -> Transient; no answer -> Ambiguous
within the adapter's timeout; accepted then dropped -> Ambiguous; credentials on the wire, wrong ones ->
Permanent, and none in any exception or repr; status mapping and a failed lookup -> Transient (when
`has_status`); callback parsing and refusal of malformed pushes (when the kind has `callbacks`).

Hooks for the next gateway author. The fakes all extend `tests.fakes._base.FakeProvider`, so the hooks that
only drive a fake's common faults are written here once, in its terms; a module overrides one only where its
provider differs.

Required (abstract):
- `fake_server()`: a new fake provider (a `FakeProvider`, an async context manager).
- `make_gateway(http, url)`: the adapter, with credentials the fake accepts and `url` as its endpoint (the
  kind's `base_url`, or its `url` for kinds configured with a full URL).
- `fake_permanent_error(fake)`: the next send is refused for good (e.g. a bad number), in the provider's terms
  (its fake's `fail_next`).
- `assert_auth_on_wire(fake)`: the credentials of `make_gateway` reached the fake in the provider's way.

Written once (override where the provider differs):
- `fake_url(fake)`: the URL `make_gateway` is given: `fake.url`.
- `requests_seen(fake)`, `accepted(fake)`: how many HTTP requests reached the fake (`fake.requests`); how many
  messages it took (`fake.messages`).
- `fake_transient_error(fake)`: the next request gets a 5xx (`http_status_next(1, 503)`), or the provider's
  own "try later".
- `fake_hang(fake)`: the next request, whatever the endpoint, is never answered (`hang_next(1)`).
- `fake_rate_limited(fake)`: the next send is told to slow down: an HTTP 429, which any server may send; a
  provider with its own signal overrides it, and one that documents none sets `rate_limited_by_429 = False`
  (the test then skips).
- `fake_reset_after_accept(fake)`: the next send is accepted, then the connection drops unanswered.
- `derived_secrets(settings)`: secret forms beyond the settings' secret fields (e.g. a password's md5).
- `status_states`: the final states `fake_set_state` can produce.

Conditional:
- when the adapter `has_status`: `fake_set_state(fake, message, receipt, state)`, the fake then reports
  `state` for that message;
- when the kind's settings have `callbacks`: `callback_request(message, receipt, state)`, the provider's push
  of that report, and `malformed_callbacks()`, pushes the parser must refuse with ValueError.

`send_many` (every kind; the default sends one by one): one outcome per message, in order, and nothing sent
for an empty list; for kinds that batch (`max_batch` > 1) one request for the batch, and a 5xx, a hang or a
drop after accepting is every message's (Transient, Ambiguous, Ambiguous). A refusal of one destination is
per provider (whether it reports per message), so each such module tests it itself.

The adapter must have a `timeout_s` attribute (seconds per request); the hang test sets it on the instance.
Secrets are the settings fields marked secret in `smsfleet.kinds`, so no hook lists them.
"""

from __future__ import annotations

import abc
import asyncio
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp
import msgspec
import pytest

from gateways import (
    Ambiguous,
    CallbackRequest,
    Gateway,
    GatewayError,
    Outgoing,
    Permanent,
    RateLimited,
    Receipt,
    StatusRef,
    Transient,
)
from smsfleet.contracts import State
from smsfleet.kinds import KindSettings, secret_fields
from tests.fakes._base import FakeProvider

F = TypeVar("F", bound=FakeProvider[Any])
AnyGateway = Gateway[Any]


class GatewayContract(abc.ABC, Generic[F]):
    phone: ClassVar[str] = "+79161234567"
    status_states: ClassVar[tuple[State, ...]] = (
        State.DELIVERED,
        State.UNDELIVERED,
        State.EXPIRED,
        State.REJECTED,
    )
    rate_limited_by_429: ClassVar[bool] = True  # False: the provider documents no rate limiting

    # --- hooks ---------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def fake_server(self) -> AbstractAsyncContextManager[F]: ...

    @abc.abstractmethod
    def make_gateway(self, http: aiohttp.ClientSession, url: str) -> AnyGateway: ...

    @abc.abstractmethod
    def fake_permanent_error(self, fake: F) -> None: ...

    @abc.abstractmethod
    def assert_auth_on_wire(self, fake: F) -> None: ...

    def fake_url(self, fake: F) -> str:
        return fake.url

    def requests_seen(self, fake: F) -> int:
        return len(fake.requests)

    def accepted(self, fake: F) -> int:
        return len(fake.messages)

    def fake_transient_error(self, fake: F) -> None:
        fake.http_status_next(1, 503)

    def fake_hang(self, fake: F) -> None:
        fake.hang_next(1)

    def fake_rate_limited(self, fake: F) -> None:
        if not self.rate_limited_by_429:
            pytest.skip("this provider documents no rate-limit signal")
        fake.http_status_next(1, 429)

    def fake_reset_after_accept(self, fake: F) -> None:
        fake.reset_after_accept_next(1)

    def derived_secrets(self, settings: Any) -> Iterable[str]:
        return ()

    def fake_set_state(self, fake: F, message: Outgoing, receipt: Receipt, state: State) -> None:
        raise NotImplementedError("has_status is set: implement fake_set_state")

    def callback_request(self, message: Outgoing, receipt: Receipt, state: State) -> CallbackRequest:
        raise NotImplementedError("the kind has callbacks: implement callback_request")

    def malformed_callbacks(self) -> Sequence[CallbackRequest]:
        raise NotImplementedError("the kind has callbacks: implement malformed_callbacks")

    # --- helpers -----------------------------------------------------------------------------------------
    def message(self, job_id: str = "job-1", **fields: Any) -> Outgoing:
        """An SMS for job `job_id`, with the numeric ref a worker would allocate it (one per job id)."""
        refs = self.__dict__.setdefault("_refs", {})
        ref = refs.setdefault(job_id, str(1000 + len(refs)))
        fields = {"to": self.phone, "text": "Hello from the contract suite", "ref": ref} | fields
        return Outgoing(job_id=job_id, **fields)

    def secrets(self, gateway: AnyGateway) -> list[str]:
        settings = gateway.settings
        values = [getattr(settings, name) for name in secret_fields(type(settings))]
        return [v for v in [*values, *self.derived_secrets(settings)] if isinstance(v, str) and v]

    def assert_no_secret(self, gateway: AnyGateway, exc: BaseException) -> None:
        texts = [repr(gateway)]
        seen: BaseException | None = exc
        while seen is not None:
            texts += [str(seen), repr(seen), repr(seen.args), repr(vars(seen))]
            seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
        for secret in self.secrets(gateway):
            assert not any(secret in text for text in texts), f"a credential leaked into {type(exc).__name__}"

    # --- fixtures ----------------------------------------------------------------------------------------
    @pytest.fixture
    async def http(self) -> AsyncIterator[aiohttp.ClientSession]:
        async with aiohttp.ClientSession() as session:
            yield session

    @pytest.fixture
    async def fake(self) -> AsyncIterator[F]:
        async with self.fake_server() as fake:
            yield fake

    @pytest.fixture
    def gateway(self, http: aiohttp.ClientSession, fake: F) -> AnyGateway:
        return self.make_gateway(http, self.fake_url(fake))

    # --- the contract ------------------------------------------------------------------------------------
    async def test_success_gives_a_receipt(self, gateway: AnyGateway, fake: F) -> None:
        receipt = await gateway.send(self.message())
        assert receipt.ids
        assert all(receipt.ids)
        assert self.accepted(fake) == 1

    async def test_base_url_is_honoured(self, gateway: AnyGateway, fake: F) -> None:
        await gateway.send(self.message())
        assert self.requests_seen(fake) >= 1

    async def test_permanent_error(self, gateway: AnyGateway, fake: F) -> None:
        self.fake_permanent_error(fake)
        with pytest.raises(Permanent) as info:
            await gateway.send(self.message())
        assert info.value.code
        assert self.accepted(fake) == 0

    async def test_server_error_is_transient(self, gateway: AnyGateway, fake: F) -> None:
        self.fake_transient_error(fake)
        with pytest.raises(Transient):
            await gateway.send(self.message())
        assert self.accepted(fake) == 0

    async def test_rate_limited(self, gateway: AnyGateway, fake: F) -> None:
        self.fake_rate_limited(fake)
        with pytest.raises(RateLimited) as info:
            await gateway.send(self.message())
        assert info.value.retry_after > 0

    async def test_connection_refused_is_transient(self, http: aiohttp.ClientSession) -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        gateway = self.make_gateway(http, f"http://127.0.0.1:{port}")
        with pytest.raises(Transient) as info:
            await gateway.send(self.message())
        self.assert_no_secret(gateway, info.value)

    async def test_hang_is_ambiguous_within_the_timeout(self, gateway: AnyGateway, fake: F) -> None:
        assert hasattr(type(gateway), "timeout_s"), "the adapter needs a timeout_s attribute"
        gateway.timeout_s = 0.3
        self.fake_hang(fake)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Ambiguous) as info:
            await gateway.send(self.message())
        assert loop.time() - started < 0.3 + 1.0
        self.assert_no_secret(gateway, info.value)

    async def test_reset_after_accept_is_ambiguous(self, gateway: AnyGateway, fake: F) -> None:
        self.fake_reset_after_accept(fake)
        with pytest.raises(Ambiguous):
            await gateway.send(self.message())
        assert self.accepted(fake) == 1  # it was taken: this is why the outcome is ambiguous

    async def test_auth_on_the_wire(self, gateway: AnyGateway, fake: F) -> None:
        await gateway.send(self.message())
        self.assert_auth_on_wire(fake)

    async def test_wrong_credentials_are_permanent(self, http: aiohttp.ClientSession, fake: F) -> None:
        good = self.make_gateway(http, self.fake_url(fake))
        wrong = {n: v + "x" for n in secret_fields(type(good.settings)) if (v := getattr(good.settings, n))}
        settings: KindSettings = msgspec.structs.replace(good.settings, **wrong)
        gateway = type(good)(settings, http)
        with pytest.raises(Permanent) as info:
            await gateway.send(self.message())
        self.assert_no_secret(gateway, info.value)
        self.assert_no_secret(good, info.value)

    async def test_no_credential_in_errors(self, gateway: AnyGateway, fake: F) -> None:
        for i, make_it_fail in enumerate([self.fake_permanent_error, self.fake_transient_error]):
            make_it_fail(fake)
            with pytest.raises(GatewayError) as info:
                await gateway.send(self.message(f"job-{i}"))
            self.assert_no_secret(gateway, info.value)

    async def test_status_mapping(self, gateway: AnyGateway, fake: F) -> None:
        if not gateway.has_status:
            pytest.skip("no status lookup")
        for state in (None, *self.status_states):
            message = self.message(f"job-{state}")
            receipt = await gateway.send(message)
            if state is not None:
                self.fake_set_state(fake, message, receipt, state)
            ref = StatusRef(job_id=message.job_id, provider_message_id=receipt.provider_message_id, to=message.to)
            report = await gateway.status(ref)
            assert report.state is state, f"{state}: {report}"
            assert report.provider_message_id == receipt.provider_message_id or report.job_id == message.job_id
            assert (report.error is None) == (state in (None, State.DELIVERED)), report

    async def test_status_lookup_failure_is_transient(self, gateway: AnyGateway, fake: F) -> None:
        if not gateway.has_status:
            pytest.skip("no status lookup")
        message = self.message()
        receipt = await gateway.send(message)
        gateway.timeout_s = 0.3
        self.fake_hang(fake)
        ref = StatusRef(job_id=message.job_id, provider_message_id=receipt.provider_message_id, to=message.to)
        with pytest.raises(Transient):  # a lookup changes nothing, so a lost reply is not ambiguous
            await gateway.status(ref)

    async def test_callback_parsing(self, gateway: AnyGateway, fake: F) -> None:
        if not gateway.settings_type.callbacks:
            pytest.skip("the kind pushes nothing")
        message = self.message()
        receipt = await gateway.send(message)
        for state in (State.DELIVERED, State.UNDELIVERED):
            callback = gateway.parse_callback(self.callback_request(message, receipt, state))
            assert 200 <= callback.reply_status < 300
            assert [r.state for r in callback.reports] == [state]
            report = callback.reports[0]
            assert report.provider_message_id == receipt.provider_message_id or report.job_id == message.job_id

    async def test_malformed_callbacks_are_refused(self, gateway: AnyGateway) -> None:
        if not gateway.settings_type.callbacks:
            pytest.skip("the kind pushes nothing")
        requests = self.malformed_callbacks()
        assert requests
        for request in requests:
            with pytest.raises(ValueError):  # noqa: PT011 - the receiver turns any ValueError into a 400
                gateway.parse_callback(request)

    # --- send_many -----------------------------------------------------------------------------------------
    def batch(self, n: int = 3) -> list[Outgoing]:
        """`n` SMS of `n` jobs, to `n` numbers (the contract's number with its last digit replaced)."""
        return [self.message(f"job-batch-{i}", to=self.phone[:-1] + str(i)) for i in range(n)]

    async def test_send_many_one_outcome_per_message(self, gateway: AnyGateway, fake: F) -> None:
        await gateway.send(self.message())  # a kind that logs in first has done so: what follows is the batch
        before = self.requests_seen(fake)
        outcomes = await gateway.send_many(self.batch(3))
        assert [type(o) for o in outcomes] == [Receipt] * 3, outcomes
        assert len({o.ids for o in outcomes if isinstance(o, Receipt)}) == 3
        assert self.accepted(fake) == 1 + 3
        if gateway.max_batch > 1:
            assert self.requests_seen(fake) - before == 1
        assert await gateway.send_many([]) == []
        assert self.accepted(fake) == 1 + 3

    async def test_send_many_request_errors_are_every_message(self, gateway: AnyGateway, fake: F) -> None:
        if gateway.max_batch <= 1:
            pytest.skip("sends one by one: each message meets its own request's fate")
        self.fake_transient_error(fake)
        assert [type(o) for o in await gateway.send_many(self.batch(3))] == [Transient] * 3
        assert self.accepted(fake) == 0
        self.fake_reset_after_accept(fake)
        outcomes = await gateway.send_many(self.batch(3))
        assert all(isinstance(o, Ambiguous) for o in outcomes), outcomes
        assert self.accepted(fake) == 3  # taken, then the reply was lost: why it is ambiguous
        gateway.timeout_s = 0.3
        self.fake_hang(fake)
        outcomes = await gateway.send_many(self.batch(3))
        assert len(outcomes) == 3
        assert all(isinstance(o, Ambiguous) for o in outcomes), outcomes
