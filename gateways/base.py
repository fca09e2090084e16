"""The one small interface every provider adapter implements.

An adapter gets its frozen settings and an `aiohttp.ClientSession` (injected; it never builds one, reads
the environment or touches Redis) and offers up to three things:

- `send(message) -> Receipt`, raising the error tree of `gateways.errors`;
- `status(ref) -> Report`, when the provider has a status lookup (`has_status`);
- `parse_callback(request) -> Callback`, when the provider pushes reports or inbound SMS;
- `find(message) -> Receipt | None`, when the provider lets us look a message up by what we sent
  (`can_find`): the reconciliation of an ambiguous send, before anything is sent again.

Where the provider takes an id of ours with a message, `Outgoing.ref` is that id: the job id, or, for
providers that want a number (`numeric_ref`), a number the worker allocates once per job from a counter per
provider account (`account`), so two jobs never share one and every attempt of a job carries the same.

`send_many` is for providers that take several messages in one request (`max_batch` > 1): one outcome per
message, in order — a refusal of one destination fails that message only, an error of the whole request
(transport, auth, a reply that says nothing) is every message's. The default sends them one by one, so an
adapter only overrides it when its API really batches (`BatchingGateway`, whose `send` is a batch of one).
`rate_per` says what the provider's rate limit counts: `"message"` (one slot of the sender's rate per
message) or `"request"` (one per request, however many messages it carries: Play Mobile's
PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import ClassVar, Generic, TypeVar

import aiohttp
import msgspec

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import KindSettings, secret_fields

from .errors import GatewayError

__all__ = [
    "BatchingGateway",
    "Callback",
    "CallbackRequest",
    "Gateway",
    "Inbound",
    "Outgoing",
    "Receipt",
    "Report",
    "StatusRef",
]

S = TypeVar("S", bound=KindSettings)

#: the settings that name a provider account, in the order they are looked for (see `Gateway.account`)
_IDENTITY_FIELDS = ("login", "user", "user_id", "service_id", "client_id")


class Outgoing(msgspec.Struct, frozen=True, kw_only=True):
    """One SMS as an adapter sees it: already validated, `to` in E.164."""

    job_id: str
    to: str
    text: str
    originator: str | None = None
    valid_until: datetime | None = None
    parts: int = 1
    #: the sender's SMS Receiving URL, for providers that take a report URL with each message
    callback_url: str | None = None
    #: the id the provider sees, allocated by the worker for kinds with `numeric_ref` ('' = the job id)
    ref: str = ""

    @property
    def wire_id(self) -> str:
        """Our id for this message at the provider: the same on every attempt of the job."""
        return self.ref or self.job_id


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """The provider took the message. `provider_ids` holds one id per part where the provider does that."""

    provider_message_id: str | None
    provider_ids: tuple[str, ...] = ()
    parts: int | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        if self.provider_ids:
            return self.provider_ids
        return (self.provider_message_id,) if self.provider_message_id else ()


class StatusRef(msgspec.Struct, frozen=True, kw_only=True):
    """What a status lookup needs: the provider's id and what we sent."""

    job_id: str
    provider_message_id: str | None
    to: str
    #: every id of the receipt (one per part where the provider does that), in send order
    provider_ids: tuple[str, ...] = ()


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery status for one provider message id (or, where the provider echoes it, our job id)."""

    provider_message_id: str | None
    state: State | None  # None: not final yet and nothing new (queued, sent to operator)
    job_id: str | None = None
    at: datetime | None = None
    error: ErrorInfo | None = None
    raw_status: str = ""
    #: the destination, where the report names it (E.164): a report for another number is not the job's
    to: str | None = None


class Inbound(msgspec.Struct, frozen=True, kw_only=True):
    """An SMS a subscriber sent to us."""

    from_: str
    to: str
    text: str
    provider_message_id: str | None = None
    at: datetime | None = None
    #: the keyword the provider matched in it, where it says (Infobip's `keyword`)
    keyword: str | None = None


class CallbackRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's HTTP callback as plain data, so parsers are tested without a server."""

    method: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        for k, v in self.headers.items():
            if k.lower() == "content-type":
                return v.split(";", 1)[0].strip().lower()
        return ""


class Callback(msgspec.Struct, frozen=True, kw_only=True):
    """What a callback carried, and the reply that provider expects."""

    reports: Sequence[Report] = ()
    inbound: Sequence[Inbound] = ()
    reply_status: int = 200
    reply_body: str = "OK"
    reply_content_type: str = "text/plain"


class Gateway(Generic[S]):
    """Base class of every adapter. Subclasses set the class attributes and override what they support."""

    kind: ClassVar[str]
    settings_type: ClassVar[type[KindSettings]]
    #: default requests per second for one sender, fleet-wide (a sender's `rate_limit` overrides it)
    default_rate: ClassVar[float] = 20.0
    #: the most parts one message may have at this provider
    max_parts: ClassVar[int] = 10
    has_status: ClassVar[bool] = False
    #: when the first status check runs, for kinds without an `await_delivery_s` setting
    default_await_delivery_s: ClassVar[int] = 60
    #: what this adapter assumes because the provider's documentation was not found or is thin
    assumptions: ClassVar[tuple[str, ...]] = ()
    #: `find` looks a message up by what we sent: an ambiguous send is reconciled, never blindly repeated
    can_find: ClassVar[bool] = False
    #: the provider wants a number as our message id: `Outgoing.ref` is allocated from a counter
    numeric_ref: ClassVar[bool] = False
    #: the most messages `send_many` puts in one request (the provider's documented maximum, or a safe guess)
    max_batch: ClassVar[int] = 1
    #: what the provider's rate limit counts: "message" or "request" (see the module docstring)
    rate_per: ClassVar[str] = "message"

    #: seconds a provider request may take; the worker sets it from its policy
    timeout_s: float = 10.0

    def __init__(self, settings: S, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.http = http

    @property
    def await_delivery_s(self) -> int:
        return int(getattr(self.settings, "await_delivery_s", self.default_await_delivery_s))

    async def send(self, message: Outgoing) -> Receipt:
        raise NotImplementedError

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        async def one(m: Outgoing) -> Receipt | GatewayError:
            try:
                return await self.send(m)
            except GatewayError as exc:
                return exc

        return list(await asyncio.gather(*(one(m) for m in messages)))

    @functools.cached_property
    def account(self) -> str:
        """Who this adapter sends as at the provider, as a short hash of (kind, endpoint, login — or the
        credential where the kind has no login). Senders that share it share one rate limit, since a provider
        limits an account, not our sender records, and one counter of numeric ids (`numeric_ref`)."""
        s = self.settings
        endpoint = str(getattr(s, "base_url", None) or getattr(s, "url", None) or "")
        who = next((str(v) for f in _IDENTITY_FIELDS if (v := getattr(s, f, None))), "")
        if not who:
            who = "|".join(str(getattr(s, f, "")) for f in secret_fields(type(s)))
        return hashlib.blake2b("|".join((self.kind, endpoint, who)).encode(), digest_size=10).hexdigest()

    async def status(self, ref: StatusRef) -> Report:
        raise NotImplementedError(f"{self.kind} has no status lookup")

    async def find(self, message: Outgoing) -> Receipt | None:
        """The provider's record of `message` (sent by an earlier attempt), or None when it has none.
        Raises `GatewayError` when the provider could not say."""
        raise NotImplementedError(f"{self.kind} cannot look a message up by what we sent")

    def parse_callback(self, request: CallbackRequest) -> Callback:
        raise NotImplementedError(f"{self.kind} does not push callbacks")


class BatchingGateway(Gateway[S]):
    """An adapter whose provider takes many messages in one request: `send_many` is its request (it must be
    overridden), and `send` a batch of one."""

    async def send(self, message: Outgoing) -> Receipt:
        [outcome] = await self.send_many([message])
        if isinstance(outcome, GatewayError):
            raise outcome
        return outcome
