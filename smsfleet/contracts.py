"""The wire contracts (DESIGN §3): send jobs in, events out.

Every message is JSON over AMQP. Schemas are frozen msgspec Structs; new fields always get defaults, and
unknown fields are ignored so that producers and consumers can be upgraded one at a time. One encoder and
one decoder per type live at module level.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import phonenumbers

__all__ = [
    "FINAL_STATES",
    "JOB_ID_MAX_BYTES",
    "ClickEvent",
    "ErrorInfo",
    "InboundEvent",
    "InboundMessage",
    "InvalidJob",
    "ReportMessage",
    "SendJob",
    "State",
    "StatusEvent",
    "SuppressionEvent",
    "decode_job",
    "encode",
    "normalize_phone",
    "now",
    "status_event",
]


class State(enum.StrEnum):
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    SUPPRESSED = "suppressed"
    INVALID = "invalid"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        return self is not State.ACCEPTED


FINAL_STATES = frozenset(s for s in State if s.final)

#: a job id is also the AMQP `message_id`, a shortstr of at most 255 bytes: the limit is in UTF-8 bytes
#: (`decode_job` checks the bytes; the character limit here only stops the longest ids early)
JOB_ID_MAX_BYTES = 128
JobId = Annotated[str, msgspec.Meta(min_length=1, max_length=JOB_ID_MAX_BYTES)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class SendJob(msgspec.Struct, frozen=True, kw_only=True):
    """One SMS to send. Published to `<ns>.send` with routing key `<gateway>.<sender_id>`."""

    id: JobId
    sender: NonEmpty
    account: NonEmpty
    to: NonEmpty
    text: NonEmpty
    originator: str | None = None
    valid_until: datetime | None = None
    meta: dict[str, str] = {}


class ErrorInfo(msgspec.Struct, frozen=True):
    code: str
    message: str


class StatusEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A job's state changed. Routing key `status.<state>`."""

    job_id: str
    sender: str
    account: str
    to: str
    state: State
    at: datetime
    attempt: int = 1
    parts: int = 0
    provider_message_id: str | None = None
    error: ErrorInfo | None = None
    meta: dict[str, str] = {}

    @property
    def routing_key(self) -> str:
        return f"status.{self.state}"


def status_event(
    job: SendJob,
    state: State,
    *,
    attempt: int = 1,
    parts: int = 0,
    provider_message_id: str | None = None,
    error: ErrorInfo | None = None,
) -> StatusEvent:
    """The event of `job` entering `state`, now."""
    return StatusEvent(
        job_id=job.id, sender=job.sender, account=job.account, to=job.to, state=state, at=now(), attempt=attempt,
        parts=parts, provider_message_id=provider_message_id, error=error, meta=job.meta,
    )  # fmt: skip


class InboundEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An SMS a subscriber sent to one of our senders. Routing key `inbound.<sender_id>`."""

    id: str
    sender: str
    gateway: str
    from_: str = msgspec.field(name="from")
    to: str
    text: str
    at: datetime
    provider_message_id: str | None = None

    @property
    def routing_key(self) -> str:
        return f"inbound.{self.sender}"


class SuppressionEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A number was added to suppression lists. Routing key `suppression.added`."""

    number: str
    accounts: list[str]
    global_: bool = msgspec.field(default=False, name="global")
    sender: str | None = None
    inbound_id: str | None = None
    reason: str = "stop_word"
    at: datetime

    routing_key = "suppression.added"


class ClickEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A reader followed a shortened link of a job. Routing key `click.<sender_id>`."""

    job_id: str
    sender: str
    url: str
    code: str
    at: datetime

    @property
    def routing_key(self) -> str:
        return f"click.{self.sender}"


class InvalidJob(ValueError):
    """A job that can never be sent as it is. `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def info(self) -> ErrorInfo:
        return ErrorInfo(self.code, self.message)


_job_decoder = msgspec.json.Decoder(SendJob)
_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def now() -> datetime:
    return datetime.now(UTC)


def normalize_phone(number: str, default_region: str | None = None) -> str:
    """Return `number` in E.164, or raise InvalidJob(`bad_phone`) saying why it is not a phone number."""
    try:
        parsed = phonenumbers.parse(number, default_region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if default_region else " (write it in international format, e.g. +79161234567)"
        raise InvalidJob("bad_phone", f"phone {number!r} is not parseable: {exc._msg}{hint}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidJob("bad_phone", f"phone {number!r} is not a valid number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def decode_job(data: bytes | str, default_region: str | None = None) -> SendJob:
    """Decode and validate a job; the phone comes back in E.164. Raises InvalidJob with a precise reason."""
    try:
        job = _job_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidJob("schema", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidJob("malformed", f"not a JSON job: {exc}") from None
    if (size := len(job.id.encode())) > JOB_ID_MAX_BYTES:
        raise InvalidJob("schema", f"id is {size} bytes in UTF-8; at most {JOB_ID_MAX_BYTES} - at `$.id`")
    if not job.text.strip():
        raise InvalidJob("empty_text", "text is empty")
    if job.valid_until is not None and job.valid_until.tzinfo is None:
        raise InvalidJob("bad_valid_until", "valid_until needs a time zone (RFC 3339, e.g. ...Z)")
    to = normalize_phone(job.to, default_region)
    return job if to == job.to else msgspec.structs.replace(job, to=to)


# -- internal messages: the receiver -> the status and suppression workers (queue `<ns>.status`/`.inbound`)


class ReportMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery report as received, routed `report.<gateway>`. `state` None: not final, nothing to do."""

    gateway: str
    sender: str | None  # None where the URL names no sender (Rapporto)
    provider_message_id: str | None
    job_id: str | None = None
    state: State | None = None
    at: datetime | None = None
    error: ErrorInfo | None = None
    raw_status: str = ""
    received_at: datetime
    attempt: int = 1  # matching attempts (a report can arrive before the send reply is stored)
    to: str | None = None  # the destination, where the report names it: a report for another number is not ours


class InboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    """An inbound SMS as received, routed `inbound.<gateway>`."""

    id: str
    gateway: str
    sender: str
    from_: str = msgspec.field(name="from")
    to: str
    text: str
    provider_message_id: str | None = None
    at: datetime
    keyword: str | None = None  # the keyword the provider matched in it, where it says
