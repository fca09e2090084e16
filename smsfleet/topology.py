"""Every exchange, queue and Redis key name, built from the namespace, and the broker declarations.

    <ns>.send      topic    routing key <gateway>.<sender_id>   -> queue <ns>.send.<gateway> (one per kind)
    <ns>.internal  topic    report.<gateway> / recheck.<gateway> -> queue <ns>.status
                            inbound.<gateway>                    -> queue <ns>.inbound
    <ns>.events    topic    status.<state>, inbound.<sender>, suppression.added   (engines bind their own)
    <ns>.dead      fanout                                        -> queue <ns>.dead (never consumed)
    <ns>.delay     headers  smsfleet-target + smsfleet-tier      -> queue <ns>.delay.<target>.<tier>
                            each tier queue has a queue-level TTL and dead-letters, with no dead-letter
                            routing key, back to its target exchange: the message's own routing key
                            brings it back to the queue it came from.

All queues are quorum queues. Work queues have an explicit delivery limit and dead-letter at least once
(`overflow reject-publish`) into `<ns>.dead`, so a message that keeps crashing its handler is parked, not
lost.

Every queue is bounded (`settings.QueueLimits`, SMSFLEET_QUEUE_MAX_LENGTH and
SMSFLEET_DEAD_QUEUE_MAX_LENGTH; 0: unbounded): `x-max-length` with `x-overflow: reject-publish`, so a
publish to a full queue is nacked (the publisher sees it: the receiver answers 503, a worker gives the
delivery back) instead of the broker running out of memory, and a dead-lettering into a full queue waits
in its source queue (at-least-once). The broker does not change a queue's arguments in place: see the
README for moving an existing queue to new limits.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import aio_pika
import aiormq
import pamqp.frame
from aio_pika.abc import AbstractChannel, ExchangeType
from aiormq.abc import ChannelFrame
from pamqp.header import ContentHeader

from .kinds import KINDS
from .settings import QueueLimits

__all__ = [
    "DELAY_TIERS",
    "DELIVERY_LIMIT",
    "HEADER_ATTEMPT",
    "HEADER_NOT_BEFORE",
    "HEADER_REASON",
    "HEADER_TARGET",
    "HEADER_TIER",
    "Names",
    "PublishTimeout",
    "TopologyConflict",
    "declare",
    "publish_json",
    "queue_arguments",
]

#: redeliveries before a message that keeps failing its handler is dead-lettered
DELIVERY_LIMIT = 5
#: delay tiers, seconds: a wait is made of the largest tiers that fit, never overshooting
DELAY_TIERS = (1, 5, 15, 60, 300, 900, 3600)
DELAY_TARGETS = ("send", "internal")
#: a publish the broker has not confirmed by then fails (`PublishTimeout`: see workers/consumer.py)
CONFIRM_TIMEOUT_S = 10.0

HEADER_ATTEMPT = "x-smsfleet-attempt"
HEADER_NOT_BEFORE = "x-smsfleet-not-before"  # epoch ms: a delayed message is not handled before this
# routing headers of the delay exchange: RabbitMQ's headers exchange ignores binding keys that start with
# `x-` (with x-match all), so these two must not
HEADER_TIER = "smsfleet-tier"
HEADER_TARGET = "smsfleet-target"
HEADER_REASON = "x-smsfleet-reason"
HEADER_REASON_CODE = "x-smsfleet-reason-code"


class TopologyConflict(RuntimeError):
    """The broker already has an object of this name declared with other arguments."""


@dataclass(frozen=True, slots=True)
class Names:
    """Names of everything on the broker and in Redis for one namespace."""

    ns: str = "smsfleet"

    # exchanges
    @property
    def send_exchange(self) -> str:
        return f"{self.ns}.send"

    @property
    def internal_exchange(self) -> str:
        return f"{self.ns}.internal"

    @property
    def events_exchange(self) -> str:
        return f"{self.ns}.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.ns}.dead"

    @property
    def delay_exchange(self) -> str:
        return f"{self.ns}.delay"

    # queues
    def send_queue(self, gateway: str) -> str:
        return f"{self.ns}.send.{gateway}"

    @property
    def status_queue(self) -> str:
        return f"{self.ns}.status"

    @property
    def inbound_queue(self) -> str:
        return f"{self.ns}.inbound"

    @property
    def dead_queue(self) -> str:
        return f"{self.ns}.dead"

    def delay_queue(self, target: str, tier: int) -> str:
        return f"{self.ns}.delay.{target}.{tier}s"

    # routing keys
    @staticmethod
    def send_key(gateway: str, sender_id: str) -> str:
        return f"{gateway}.{sender_id}"

    # Redis keys
    @property
    def senders_key(self) -> str:
        return f"{self.ns}:senders"

    @property
    def senders_version_key(self) -> str:
        return f"{self.ns}:senders:version"

    @property
    def senders_names_key(self) -> str:
        """The sender name index: normalised name -> sender id (see `smsfleet.senders.name_key`)."""
        return f"{self.ns}:senders:names"

    @property
    def senders_channel(self) -> str:
        return f"{self.ns}:senders:changed"

    def suppress_account_key(self, account: str) -> str:
        return f"{self.ns}:suppress:account:{account}"

    @property
    def suppress_global_key(self) -> str:
        return f"{self.ns}:suppress:global"

    def redis_key(self, *parts: str) -> str:
        """An internal key: `<ns>:<part>:<part>...` (documented in the README with its TTL)."""
        return ":".join((self.ns, *parts))


def _bounded(max_length: int) -> dict[str, Any]:
    """A queue that refuses publishes once it holds `max_length` messages (0: unbounded; the overflow mode
    stays: at-least-once dead-lettering out of a queue needs it)."""
    return {"x-overflow": "reject-publish", **({"x-max-length": max_length} if max_length else {})}


def _quorum(limits: QueueLimits) -> dict[str, Any]:
    """A quorum queue, with the cluster placement the configuration asks for (none: the broker's defaults)."""
    placement: dict[str, Any] = {"x-quorum-initial-group-size": limits.replicas} if limits.replicas else {}
    placement |= {"x-queue-leader-locator": limits.leader_locator} if limits.leader_locator else {}
    return {"x-queue-type": "quorum", **placement}


def _work_queue_args(names: Names, limits: QueueLimits) -> dict[str, Any]:
    return {
        **_quorum(limits),
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": names.dead_exchange,
        "x-dead-letter-strategy": "at-least-once",
        **_bounded(limits.work),
    }


async def declare(channel: AbstractChannel, names: Names, limits: QueueLimits | None = None) -> None:
    """Declare everything. Idempotent; raises TopologyConflict when the broker disagrees on arguments.

    `limits`: the queues' max lengths (`settings.queue_limits`; default: the defaults). Every process of a
    namespace must pass the same. A conflict closes the channel (that is how AMQP reports it), so the
    caller needs a fresh channel after.
    """
    try:
        await _declare(channel, names, limits or QueueLimits())
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyConflict(
            f"the broker already has {_reply_text(exc)}; delete that object or use another "
            f"SMSFLEET_NAMESPACE (now {names.ns!r}); to change an existing queue's limits, see the README "
            "(Broker topology)"
        ) from None


def _reply_text(exc: aiormq.exceptions.ChannelPreconditionFailed) -> str:
    text = str(exc.args[0].reply_text if exc.args and hasattr(exc.args[0], "reply_text") else exc)
    return text.removeprefix("PRECONDITION_FAILED - ")


def queue_arguments(names: Names, limits: QueueLimits) -> dict[str, dict[str, Any]]:
    """Every queue of the namespace, with the arguments it is declared with."""
    work = _work_queue_args(names, limits)
    # unbounded, the dead queue is declared as before the bounds (it dead-letters nothing: no overflow mode)
    queues = {names.dead_queue: {**_quorum(limits), **(_bounded(limits.dead) if limits.dead else {})}}
    queues |= {names.send_queue(kind): work for kind in KINDS}
    queues |= {names.status_queue: work, names.inbound_queue: work}
    targets = {"send": names.send_exchange, "internal": names.internal_exchange}
    for target in DELAY_TARGETS:
        for tier in DELAY_TIERS:
            queues[names.delay_queue(target, tier)] = {
                **_quorum(limits),
                "x-message-ttl": tier * 1000,
                "x-dead-letter-exchange": targets[target],
                "x-dead-letter-strategy": "at-least-once",
                **_bounded(limits.work),
            }
    return queues


async def _declare(channel: AbstractChannel, names: Names, limits: QueueLimits) -> None:
    send = await channel.declare_exchange(names.send_exchange, ExchangeType.TOPIC, durable=True)
    # a report or inbound message whose routing key nothing binds is parked, never dropped: it would otherwise
    # also block the at-least-once dead-lettering of the delay tier it comes back from
    internal = await channel.declare_exchange(
        names.internal_exchange,
        ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": names.dead_exchange},
    )
    await channel.declare_exchange(names.events_exchange, ExchangeType.TOPIC, durable=True)
    dead = await channel.declare_exchange(names.dead_exchange, ExchangeType.FANOUT, durable=True)
    delay = await channel.declare_exchange(names.delay_exchange, ExchangeType.HEADERS, durable=True)

    queues = {
        name: await channel.declare_queue(name, durable=True, arguments=arguments)
        for name, arguments in queue_arguments(names, limits).items()
    }
    await queues[names.dead_queue].bind(dead)
    for kind in KINDS:
        await queues[names.send_queue(kind)].bind(send, routing_key=f"{kind}.*")
    await queues[names.status_queue].bind(internal, routing_key="report.*")
    await queues[names.status_queue].bind(internal, routing_key="recheck.*")
    await queues[names.inbound_queue].bind(internal, routing_key="inbound.*")
    for target in DELAY_TARGETS:
        for tier in DELAY_TIERS:
            await queues[names.delay_queue(target, tier)].bind(
                delay,
                arguments={"x-match": "all", HEADER_TARGET: target, HEADER_TIER: str(tier)},
            )


async def delete(channel: AbstractChannel, names: Names) -> None:
    """Remove a namespace's exchanges and queues (tests, tear-down of a demo namespace)."""
    for queue in queue_arguments(names, QueueLimits()):
        await channel.queue_delete(queue)
    for exchange in (
        names.send_exchange,
        names.internal_exchange,
        names.events_exchange,
        names.dead_exchange,
        names.delay_exchange,
    ):
        await channel.exchange_delete(exchange)


class PublishTimeout(TimeoutError):
    """A publish the broker did not confirm in time (a stalled or overloaded broker): it may have taken it still."""


async def publish_json(
    channel: AbstractChannel,
    exchange: str,
    body: bytes,
    routing_key: str,
    *,
    mandatory: bool = True,
    confirm_timeout_s: float | None = CONFIRM_TIMEOUT_S,
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish persistent JSON (the properties of `message`) on the channel's AMQP channel, and wait for the
    broker's confirm when the channel confirms. The frames `Exchange.publish(message(...))` sends, without
    aio-pika's Message and Exchange objects, whose building costs as much CPU as the publish itself, and
    written with the other publishes of the same event-loop turn (`_publish`). A nack or (on a channel with
    `on_return_raises`) a returned message raises as it does through aio-pika; a confirm that does not come
    within `confirm_timeout_s`, `PublishTimeout` (None: no bound of its own, for a caller that keeps one)."""
    properties = aiormq.spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        timestamp=datetime.now(UTC),
        message_id=message_id or (uuid.uuid4().hex if mandatory else None),  # a return is matched by it
        headers=headers,
    )
    for attempt in range(2):
        underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        try:
            await _publish(
                underlay,
                aiormq.spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
                ContentHeader(properties=properties, body_size=len(body)),
                body,
                confirm_timeout_s,
            )
            return
        except aiormq.exceptions.ChannelInvalidStateError:
            if attempt or not await _reopen(channel, underlay):
                raise


#: per AMQP channel, the publishes of this event-loop turn, which one task writes (`_write`)
_turn: weakref.WeakKeyDictionary[aiormq.Channel, list[_Publish]] = weakref.WeakKeyDictionary()
_writing: set[asyncio.Task[None]] = set()


def _publish(
    channel: aiormq.Channel,
    method: aiormq.spec.Basic.Publish,
    header: ContentHeader,
    body: bytes,
    timeout_s: float | None,
) -> asyncio.Future[None]:
    """Publish with the other publishes the channel is given in this event-loop turn: one task writes them as
    one frame under one hold of the channel's lock. aiormq's `basic_publish` does that for each publish alone,
    and its lock, timeout scope, queue put and socket write cost more CPU than the frames (`python -m
    tests.bench.events`). Each publish keeps its own delivery tag and confirm, registered as `basic_publish`
    registers them (the channel's `confirmations`, and `message_id_delivery_tag` for a mandatory one, which a
    return is matched by), so that aiormq settles it the same way: an ack, a nack (`DeliveryError`), a return
    (`PublishError`), or the channel's close (its reason). Its frames are marshalled here, where a bad value
    raises; a publish whose caller gave up before the write is not sent, as with `basic_publish`.

    Returns its outcome: None once confirmed (or written, on a channel without confirms), or its error;
    `PublishTimeout` when not confirmed within `timeout_s` (if not None)."""
    loop = asyncio.get_running_loop()
    frames: list[Any] = [method, header, *channel._split_body(body)]
    entry = _Publish(
        loop.create_future(),
        b"".join(pamqp.frame.marshal(frame, channel.number) for frame in frames),
        header.properties.message_id if method.mandatory else None,
    )
    if timeout_s is not None:
        entry.timer = loop.call_later(timeout_s, entry.expire, timeout_s)
    pending = _turn.setdefault(channel, [])
    if not pending:  # the first of this turn: the task runs after the others woken in it add theirs
        task = asyncio.create_task(_write(channel))
        _writing.add(task)
        task.add_done_callback(_writing.discard)
    pending.append(entry)
    return entry.settled


async def _write(channel: aiormq.Channel) -> None:
    try:
        async with channel.lock:  # raises ChannelInvalidStateError once the channel is closed
            batch = [p for p in _turn.pop(channel, ()) if not p.settled.done()]
            first = channel.delivery_tag + 1
            if channel.publisher_confirms:
                for tag, publish in enumerate(batch, first):
                    publish.register(channel, tag)
            channel.delivery_tag += len(batch)
            try:
                await channel.write_queue.put(ChannelFrame(b"".join(p.frames for p in batch), False))
            except BaseException:  # not written: the broker counts none of these tags
                channel.delivery_tag = first - 1
                for tag in range(first, first + len(batch)):
                    if (confirmation := channel.confirmations.pop(tag, None)) is not None:
                        confirmation.cancel()
                raise
    except aiormq.exceptions.ChannelInvalidStateError as exc:
        for publish in _turn.pop(channel, ()):
            publish.end(exc)
        return
    if not channel.publisher_confirms:
        for publish in batch:
            publish.end(None)


@dataclass(slots=True)
class _Publish:
    settled: asyncio.Future[None]
    frames: bytes
    message_id: str | None  # a mandatory publish's, which a return is matched by
    timer: asyncio.TimerHandle | None = None

    def register(self, channel: aiormq.Channel, tag: int) -> None:
        confirmation = channel.create_future()
        channel.confirmations[tag] = confirmation
        if self.message_id is not None:
            channel.message_id_delivery_tag[self.message_id] = tag
            confirmation.add_done_callback(partial(_forget, channel, self.message_id, tag))
        confirmation.add_done_callback(self.confirmed)

    def confirmed(self, confirmation: asyncio.Future[Any]) -> None:
        if confirmation.cancelled():  # not written after all (the writing task was cancelled)
            self.settled.cancel()
        else:
            self.end(confirmation.exception())

    def expire(self, timeout_s: float) -> None:
        self.end(PublishTimeout(f"not confirmed within {timeout_s:g} s"))

    def end(self, error: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.settled.done():
            return
        if error is None:
            self.settled.set_result(None)
        else:
            self.settled.set_exception(error)


def _forget(channel: aiormq.Channel, message_id: str, tag: int, _: object) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        del channel.message_id_delivery_tag[message_id]


_reopening: weakref.WeakKeyDictionary[AbstractChannel, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _reopen(channel: AbstractChannel, broken: aiormq.abc.AbstractChannel) -> bool:
    """Open again a robust channel that its connection's restore left closed (seen after a cluster node's clean
    stop: its publishes failed until the next reconnect). True: publish again; False: not ours to mend.
    Concurrent publishes that met the same closed channel reopen it once."""
    reopen = getattr(channel, "reopen", None)
    # not robust, or closed by its owner: a robust channel's `closed()` is done only then (not when the broker
    # or a lost connection closed it)
    finished = channel.closed()
    if reopen is None or (isinstance(finished, asyncio.Future) and finished.done()):
        return False
    async with _reopening.setdefault(channel, asyncio.Lock()):
        if await channel.get_underlay_channel() is not broken and not channel.is_closed:
            return True  # another publish reopened it, or the connection's restore did
        try:
            await asyncio.wait_for(reopen(), CONFIRM_TIMEOUT_S)
        except Exception:  # the connection is going too: its own reconnect restores the channel
            return False
    return True


def message(body: bytes, **kwargs: Any) -> aio_pika.Message:
    """A persistent JSON message, the only kind smsfleet publishes."""
    kwargs.setdefault("timestamp", datetime.now(UTC))  # lets consumers measure how long it queued
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **kwargs,
    )
