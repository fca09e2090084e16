"""The dead queue `<ns>.dead`, for operators: read it without losing a message, requeue, purge.

What lands there, and what a dead letter says about itself:

    parked by a worker       x-smsfleet-reason-code / x-smsfleet-reason (an invalid or refused job, a
                             message that does not decode), x-smsfleet-routing-key; `timestamp` = when
    dead-lettered by the     x-death[0]: reason (`delivery_limit`: it crashed its handler too often), queue,
    broker                   time, count, routing-keys; x-first-death-*
    unroutable               neither: an internal message no queue took (the internal exchange's alternate
                             exchange), or one back from a delay tier with nowhere to go

Reading: messages are taken with basic.get and manual acknowledgement, never acknowledged, and go back when
the channel closes. A scan stops at the number of messages the queue held when it began, so messages
dead-lettered meanwhile (a requeued job failing again) are not taken twice. On a quorum queue every return
counts as a delivery (`x-delivery-count`); the dead queue declares no delivery limit, but RabbitMQ 4 gives
quorum queues a default one (20) and would then drop a message read that often. So a message whose count
reaches `REFRESH_AT` is replaced by a fresh copy (published with confirms, then the old one acknowledged:
a crash in between leaves a duplicate, never a loss).

Requeue: the message goes to its home exchange (`<ns>.send` for `<gateway>.<sender>`, `<ns>.internal` for
`report.*`, `recheck.*`, `inbound.*`) with its routing key, its body and its message id (the job id, so
the job's idempotency record applies: a job that was already sent is not sent again), and without the
broker's and our bookkeeping headers (a fresh retry budget). It is acknowledged out of the dead queue only
once the broker confirmed the publish. A copy identical to one already requeued by the same run is
acknowledged without a second publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
import msgspec
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from .kinds import KINDS
from .topology import CONFIRM_TIMEOUT_S, HEADER_REASON, HEADER_REASON_CODE, Names, message

__all__ = [
    "REFRESH_AT",
    "SCAN_LIMIT",
    "DeadLetter",
    "DeadQueue",
    "DeadQueueMissing",
    "Listing",
    "Requeued",
    "Selection",
    "home_exchange",
    "read",
    "reasons",
]

#: messages one scan reads at most (they are held unacknowledged meanwhile)
SCAN_LIMIT = 100_000
#: a message returned this often is replaced by a fresh copy (see the module's docstring)
REFRESH_AT = 10
#: how long a scan waits, after closing, for the messages it held to be back in the queue
RETURN_WAIT_S = 2.0
HEADER_ROUTING_KEY = "x-smsfleet-routing-key"  # set by `workers.Runtime.dead_letter`
#: routing-key prefixes of the internal exchange (its bindings, in topology.py)
INTERNAL_PREFIXES = ("report", "recheck", "inbound")
#: headers a requeued message leaves behind: the broker's bookkeeping, and ours (reason, attempt, delay tier)
_BOOKKEEPING = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count", "x-smsfleet-", "smsfleet-")


class DeadQueueMissing(LookupError):
    """The namespace's dead queue does not exist (the topology was never declared)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead queue, as an operator reads it."""

    id: str  # the id in the body (a send job's id), else the message id, else `body-<hash>`
    reason: str  # our reason code, the broker's dead-letter reason, or `unroutable`
    detail: str  # the reason in words
    routing_key: str
    exchange: str | None  # where a requeue publishes it; None: no exchange of ours takes this routing key
    gateway: str | None
    at: datetime | None  # when it was parked
    count: int  # how many times the broker dead-lettered it from its queue (1 when a worker parked it)
    source_queue: str | None  # the queue the broker dead-lettered it from
    message_id: str | None
    headers: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """The line `list` shows (JSON-ready)."""
        return {
            "id": self.id,
            "reason": self.reason,
            "gateway": self.gateway,
            "routing_key": self.routing_key,
            "at": self.at.isoformat() if self.at else None,
            "count": self.count,
        }

    def details(self) -> dict[str, Any]:
        """Everything `show` shows (JSON-ready): the body decoded when it is JSON, else as text."""
        try:
            body: Any = msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            body = self.body.decode("utf-8", "replace")
        return {
            **self.summary(),
            "detail": self.detail,
            "exchange": self.exchange,
            "source_queue": self.source_queue,
            "message_id": self.message_id,
            "headers": _jsonable(self.headers),
            "body": body,
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters an operation takes: given ids and/or one reason (all must match), or everything."""

    ids: frozenset[str] = frozenset()
    reason: str | None = None
    everything: bool = False

    def __post_init__(self) -> None:
        if self.everything and (self.ids or self.reason):
            raise ValueError("everything selects every message: give it without ids or a reason")
        if not (self.everything or self.ids or self.reason):
            raise ValueError("select messages by id, by reason, or all of them")

    def __contains__(self, letter: DeadLetter) -> bool:
        return self.everything or (
            (not self.ids or letter.id in self.ids) and (self.reason is None or letter.reason == self.reason)
        )


@dataclass(frozen=True, slots=True)
class Listing:
    letters: list[DeadLetter]
    total: int  # messages in the queue when the scan began
    by_reason: dict[str, int]  # of the letters read

    @property
    def more(self) -> bool:
        """Some messages were not read (the limit)."""
        return self.total > len(self.letters)


@dataclass(slots=True)
class Requeued:
    requeued: list[str] = field(default_factory=list)  # ids, in order
    duplicates: int = 0  # identical copies removed without a second publish
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, why): left in the dead queue
    unread: int = 0  # messages beyond the scan's limit, not looked at


class DeadQueue:
    """The dead queue of one namespace, on a connection the caller owns."""

    def __init__(
        self,
        connection: AbstractConnection,
        names: Names,
        *,
        refresh_at: int = REFRESH_AT,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
    ) -> None:
        self.connection = connection
        self.names = names
        self.refresh_at = refresh_at
        self.confirm_timeout_s = confirm_timeout_s

    async def listing(self, limit: int = SCAN_LIMIT) -> Listing:
        """The messages (up to `limit`), with the queue's size and the count per reason."""
        async with self._scan(limit) as scan:
            letters = [letter async for letter, _ in scan]
            return Listing(letters, scan.total, reasons(letters))

    async def find(self, letter_id: str, limit: int = SCAN_LIMIT) -> list[DeadLetter]:
        """The dead letters with this id (a job dead-lettered twice has two)."""
        async with self._scan(limit) as scan:
            return [letter async for letter, _ in scan if letter.id == letter_id]

    async def requeue(self, selection: Selection, limit: int = SCAN_LIMIT) -> Requeued:
        """Publish the selected messages back home (with confirms), then take them out of the dead queue."""
        result = Requeued()
        done: set[tuple[str, bytes]] = set()
        async with self._scan(limit) as scan:
            result.unread = scan.total - scan.bound
            async for letter, msg in scan:
                if letter not in selection:
                    continue
                key = (letter.id, hashlib.sha256(letter.body).digest())
                if key in done:
                    await scan.settle(msg)
                    result.duplicates += 1
                    continue
                if letter.exchange is None:
                    result.failed.append((letter.id, f"no exchange of ours takes routing key {letter.routing_key!r}"))
                    continue
                try:
                    await scan.publish(letter.exchange, letter.routing_key, _requeued(letter))
                except (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
                    result.failed.append((letter.id, f"not confirmed by the broker: {type(exc).__name__} {exc}"))
                    break  # the publishing channel may be closed now; what is left stays where it is
                await scan.settle(msg)
                done.add(key)
                result.requeued.append(letter.id)
        return result

    async def purge(self, selection: Selection, limit: int = SCAN_LIMIT) -> int:
        """Delete the selected messages; how many were deleted."""
        if selection.everything:
            channel = await self.connection.channel()
            try:
                queue = await self._queue(channel)
                ok = await queue.purge()
                return int(ok.message_count or 0) if ok is not None else 0
            finally:
                if not channel.is_closed:
                    await channel.close()
        deleted = 0
        async with self._scan(limit) as scan:
            async for letter, msg in scan:
                if letter in selection:
                    await scan.settle(msg)
                    deleted += 1
        return deleted

    @contextlib.asynccontextmanager
    async def _scan(self, limit: int) -> AsyncIterator[_Scan]:
        reading = await self.connection.channel()
        publishing = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        scan: _Scan | None = None
        try:
            queue = await self._queue(reading)
            total = int(queue.declaration_result.message_count or 0)
            scan = _Scan(self, queue, publishing, total, min(limit, total))
            yield scan
            with contextlib.suppress(aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, TimeoutError):
                await scan.refresh()  # a failure leaves the messages as they are: they go back on closing
        finally:
            for channel in (publishing, reading):  # closing returns what was not acknowledged
                if not channel.is_closed:
                    with contextlib.suppress(Exception):
                        await channel.close()
            if scan is not None and len(scan.held) > len(scan.settled):
                with contextlib.suppress(Exception):
                    await self._returned(scan.total - len(scan.settled))

    async def _returned(self, expected: int) -> None:
        """Wait (up to RETURN_WAIT_S) until the messages a closed scan held are back in the queue: a quorum
        queue takes them back a moment after the channel closed, and the next scan must see them."""
        deadline = asyncio.get_running_loop().time() + RETURN_WAIT_S
        async with self.connection.channel() as channel:
            while asyncio.get_running_loop().time() < deadline:
                declared = await (await channel.get_underlay_channel()).queue_declare(
                    self.names.dead_queue, passive=True
                )
                if (declared.message_count or 0) >= expected:
                    return
                await asyncio.sleep(0.02)

    async def _queue(self, channel: AbstractChannel) -> aio_pika.abc.AbstractQueue:
        try:
            return await channel.declare_queue(self.names.dead_queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise DeadQueueMissing(
                f"there is no queue {self.names.dead_queue}: run `smsfleet topology declare` "
                f"(namespace {self.names.ns!r})"
            ) from None


class _Scan:
    """One pass over the dead queue: the messages it holds unacknowledged, and how to settle them."""

    def __init__(
        self,
        dead: DeadQueue,
        queue: aio_pika.abc.AbstractQueue,
        publishing: AbstractChannel,
        total: int,
        bound: int,
    ) -> None:
        self.dead = dead
        self.queue = queue
        self.publishing = publishing
        self.total = total
        self.bound = bound
        self.held: list[AbstractIncomingMessage] = []
        self.settled: set[int] = set()  # delivery tags

    async def __aiter__(self) -> AsyncIterator[tuple[DeadLetter, AbstractIncomingMessage]]:
        for _ in range(self.bound):
            msg = await self.queue.get(no_ack=False, fail=False)
            if msg is None:  # taken meanwhile by another reader
                return
            self.held.append(msg)
            yield read(msg, self.dead.names), msg

    async def settle(self, msg: AbstractIncomingMessage) -> None:
        """Take the message out of the dead queue."""
        await msg.ack()
        self.settled.add(msg.delivery_tag or 0)

    async def publish(self, exchange: str, routing_key: str, msg: aio_pika.Message) -> None:
        target = await self.publishing.get_exchange(exchange, ensure=False)
        await target.publish(msg, routing_key=routing_key, mandatory=True, timeout=self.dead.confirm_timeout_s)

    async def refresh(self) -> None:
        """Replace each message left in the queue that has been returned `refresh_at` times by a fresh copy."""
        for msg in self.held:
            count = (msg.headers or {}).get("x-delivery-count")
            if msg.delivery_tag in self.settled or not isinstance(count, int) or count < self.dead.refresh_at:
                continue
            headers = {k: v for k, v in (msg.headers or {}).items() if k != "x-delivery-count"}
            copy = message(msg.body, message_id=msg.message_id, timestamp=msg.timestamp, headers=headers)
            await self.publish(self.dead.names.dead_exchange, msg.routing_key or "", copy)
            await self.settle(msg)


def read(msg: AbstractIncomingMessage, names: Names) -> DeadLetter:
    """What a dead-lettered message says about itself (see the module's docstring)."""
    headers: dict[str, Any] = dict(msg.headers or {})
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
    latest = deaths[0] if deaths else {}
    keys = latest.get("routing-keys") or []
    routing_key = str(headers.get(HEADER_ROUTING_KEY) or (keys[0] if keys else "") or msg.routing_key or "")
    source = str(latest["queue"]) if latest.get("queue") else None
    at = latest.get("time") if isinstance(latest.get("time"), datetime) else msg.timestamp
    if headers.get(HEADER_REASON_CODE):
        reason, detail = str(headers[HEADER_REASON_CODE]), str(headers.get(HEADER_REASON) or "")
    elif latest and not (source or "").startswith(f"{names.ns}.delay."):
        reason, detail = str(latest.get("reason") or "dead_lettered"), f"dead-lettered by the broker from {source}"
    else:
        reason = "unroutable"
        detail = f"back from {source}, no queue took it" if source else "no queue took it"
    count = latest.get("count")
    return DeadLetter(
        id=_letter_id(msg),
        reason=reason,
        detail=detail,
        routing_key=routing_key,
        exchange=home_exchange(names, routing_key),
        gateway=_gateway(routing_key),
        at=at,
        count=count if isinstance(count, int) and count > 0 else 1,
        source_queue=source,
        message_id=msg.message_id,
        headers=headers,
        body=msg.body,
    )


def home_exchange(names: Names, routing_key: str) -> str | None:
    """The exchange of ours whose bindings take `routing_key` (None: none does)."""
    head = routing_key.split(".", 1)[0]
    if head in KINDS and "." in routing_key:
        return names.send_exchange
    if head in INTERNAL_PREFIXES and "." in routing_key:
        return names.internal_exchange
    return None


def _gateway(routing_key: str) -> str | None:
    """`<gateway>.<sender>` or `<report|recheck|inbound>.<gateway>` -> the gateway."""
    parts = routing_key.split(".")
    if parts[0] in KINDS:
        return parts[0]
    if parts[0] in INTERNAL_PREFIXES and len(parts) > 1 and parts[1] in KINDS:
        return parts[1]
    return None


def _letter_id(msg: AbstractIncomingMessage) -> str:
    """The id in the body (a send job's id), else the message id, else a hash of the body."""
    with contextlib.suppress(msgspec.DecodeError):
        data = msgspec.json.decode(msg.body)
        body_id = data.get("id") if isinstance(data, dict) else None
        if isinstance(body_id, str) and body_id:
            return body_id
    return msg.message_id or f"body-{hashlib.sha256(msg.body).hexdigest()[:12]}"


def _requeued(letter: DeadLetter) -> aio_pika.Message:
    """The message a requeue publishes: the same body and message id, without the bookkeeping headers."""
    headers = {k: v for k, v in letter.headers.items() if not k.startswith(_BOOKKEEPING)}
    return message(letter.body, message_id=letter.message_id, headers=headers or None)


def _jsonable(value: Any) -> Any:
    """AMQP header values (tables, arrays, timestamps, bytes) as JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def reasons(letters: Iterable[DeadLetter]) -> dict[str, int]:
    """Count of letters per reason, most frequent first."""
    return dict(Counter(letter.reason for letter in letters).most_common())
