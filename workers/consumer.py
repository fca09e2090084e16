"""What every consumer shares — send, status and suppression: consume one queue, track deliveries in flight,
pause while Redis is away, drain, and turn a failure into the right fate for the delivery.

    a message that does not decode            parked in the dead queue, with the reason
    Redis unreachable while handling it       given back through the shortest delay tier (re-published, then
                                              acked: its delivery count is not spent), and consuming pauses
                                              until Redis answers a ping again, by itself; then `recover` does
                                              what the outage left undone (the send worker: give up the claims
                                              of the jobs it gave back), and consuming resumes
    a publish the broker nacked, or did not   handled again, on the same delivery, after a pause (0.5 to 8 s,
    confirm in time (a stalled broker)        15.5 s in all), then back to the queue (nack)
    anything else that escapes `handle`       back to the queue (nack); the queue's delivery limit parks a
                                              message that keeps crashing its handler
    cancelled (a drain past its grace)        back to the queue
    an ack or nack not written in `SETTLE_S`  left to its channel: the connection is stuck or gone (see `ack`);
                                              so is the consumer's cancel when consuming stops

Quorum queues count every return of a message towards its delivery limit, so a message nacked once a second
through a 20-s Redis outage would be dead-lettered after five: a delivery report or a STOP lost for nothing.
Giving it back through a delay tier instead costs one publish and spends nothing. A nacked publish is the
broker's trouble too (a node lost a moment ago: seen for ~6 s after a node's kill -9), and so is one not
confirmed in time (a broker that stopped answering, its connections open: a stalled disk, a paused VM);
the queue would redeliver a returned message at once: five rounds within the trouble, and a job already
`accepted` in the ledger would be parked in the dead queue without its event or its status check. So the
delivery is kept and handled again, as its redelivery would be (the ledger makes that safe), spending
nothing.

A delivery whose channel closes while it is handled (its connection lost, a node stopped) goes back to the
queue, and the broker delivers it again at once, but its handling is not abandoned: a job already claimed,
or at its provider, is recorded and reported by it (only its acknowledgement fails). Cancelled with its
channel, it would leave the job `calling` until its lease ran out (`SendPolicy.lease_s`, 30 s) before the
redelivery could take it over.

`handle` acknowledges (or otherwise settles) its message itself, with `ack` and `nack`: the acks of deliveries
handled in about the order they came go out together, in one frame (`_Acks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections.abc import Awaitable, Iterable

import aiormq
import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import MessageProcessError
from redis.exceptions import RedisError

from smsfleet import metrics
from smsfleet.topology import PublishTimeout

from .runtime import Runtime

__all__ = ["QueueConsumer", "SettleTimeout", "ack", "nack"]

log = structlog.get_logger("smsfleet.workers")

#: how long a message given back during a Redis outage waits (the shortest delay tier)
GIVE_BACK_S = 1.0
#: how often a paused consumer asks Redis whether it is back
PING_EVERY_S = 1.0
#: pauses before a delivery whose handling met a broker nack is handled again (then it goes back to the queue)
NACKED_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0)
#: the longest an acknowledgement may wait to be written (see `ack`)
SETTLE_S = 5.0
#: the longest an acknowledged delivery waits for the ones before it on its channel (see `_Acks`)
ACK_LINGER_S = 0.01


class SettleTimeout(Exception):
    """An ack or nack not written within `SETTLE_S`."""


async def ack(msg: AbstractIncomingMessage) -> None:
    """Acknowledge `msg`, waiting at most `SETTLE_S` for the frame to be written.

    A delivery that `QueueConsumer` tracks is acknowledged by its channel's `_Acks`: together with the ones
    before it, in one frame (`multiple`), once none before it is still being handled, else on its own after
    at most `ACK_LINGER_S`; the bound is then on the frame that covers it.

    aiormq queues an outgoing frame for its connection's writer in a queue of ten, and waits for it to be
    written. Once the writer is stuck (the broker stopped reading) or gone (the connection lost while frames
    were queued), an ack waits there for good: the handler never ends, and a drain waits out its whole grace.
    Bounded, the delivery is left to its channel: redelivered when the channel closes, settled if the frame
    was written after all; the ledger makes either safe."""
    acks = _ACKS.get(msg.channel)
    await (_settle(msg.ack(), "ack") if acks is None else acks.acked(msg))


async def nack(msg: AbstractIncomingMessage) -> None:
    """Give `msg` back to its queue, bounded as `ack` is. A delivery already acked, or on its way to be, stays
    so (a handler cancelled after its ack nacks)."""
    acks = _ACKS.get(msg.channel)
    await (_settle(msg.nack(requeue=True), "nack") if acks is None else acks.nacked(msg))


async def _settle(op: Awaitable[None], name: str) -> None:
    try:
        async with asyncio.timeout(SETTLE_S):
            await op
    except TimeoutError:
        raise SettleTimeout(name) from None


class _Acks:
    """The acknowledgements of one channel's deliveries, in as few frames as the order of handling allows.

    A delivery is `open` from its arrival until its handler acks it, or until its nack is written; an acked
    one waits in `acking` until a frame covers it. While the lowest acked tags are below every open one, one
    `multiple` ack settles them all: deliveries handled in about the order they came (a batch of jobs, the
    status and suppression queues) cost one frame for many. One below which a delivery is still handled (a
    slow provider, a job waiting for its rate slot) is acked on its own after `ACK_LINGER_S`. A delivery
    left unsettled (its nack not written: the connection stuck) stays open, so no `multiple` ack passes it.
    Frames are written one at a time, by one task, in order: a `multiple` ack never reaches the broker ahead
    of an ack it covers. (Measured by `tests.bench.acks`: an ack costs the broker about a fifth, and this
    client about two thirds, when 50 go in one frame.)"""

    def __init__(self) -> None:
        self.open: set[int] = set()
        self._lowest: list[int] = []  # a heap of the open tags (and of some settled since: pruned lazily)
        self.acking: dict[int, tuple[AbstractIncomingMessage, asyncio.Future[None]]] = {}
        self._queue: list[int] = []  # a heap of `acking`'s tags
        self._more = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def received(self, tag: int) -> None:
        self.open.add(tag)
        heapq.heappush(self._lowest, tag)

    def acked(self, msg: AbstractIncomingMessage) -> asyncio.Future[None]:
        """A future done when a frame acknowledging `msg` is written; failed with `SettleTimeout` when a frame
        waits `SETTLE_S` to be written (every ack waiting then fails with it)."""
        tag = msg.delivery_tag
        if tag in self.acking:
            return self.acking[tag][1]
        if tag not in self.open:  # written already, maybe by a `multiple` ack: another would close the channel
            raise MessageProcessError("Message already processed", msg)
        self.open.discard(tag)
        future = asyncio.get_running_loop().create_future()
        self.acking[tag] = (msg, future)
        heapq.heappush(self._queue, tag)
        self._more.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return future

    async def nacked(self, msg: AbstractIncomingMessage) -> None:
        """Nack `msg` unless it is acked, or on its way to be (a nack then would close the channel)."""
        if msg.delivery_tag not in self.open:
            return
        await _settle(msg.nack(requeue=True), "nack")
        self.open.discard(msg.delivery_tag)  # written: a `multiple` ack may pass it now
        self._more.set()

    async def _write(self) -> None:
        deadline: float | None = None
        while self._queue:
            while self._lowest and self._lowest[0] not in self.open:
                heapq.heappop(self._lowest)
            lowest_open = self._lowest[0] if self._lowest else math.inf
            covered = []
            while self._queue and self._queue[0] < lowest_open:
                covered.append(heapq.heappop(self._queue))
            if covered:
                await self._send(covered, multiple=True)
                deadline = None
                continue
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + ACK_LINGER_S
            self._more.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._more.wait()
                continue
            late, self._queue = sorted(self._queue), []
            for tag in late:  # the linger is over: each on its own
                if tag in self.acking:  # (else failed meanwhile, with a stuck connection)
                    await self._send([tag], multiple=False)
            deadline = None

    async def _send(self, tags: list[int], *, multiple: bool) -> None:
        entries = [self.acking.pop(tag) for tag in tags]
        try:
            await _settle(entries[-1][0].ack(multiple=multiple), "ack")
        except SettleTimeout:  # the connection is stuck: the acks waiting behind this one would be too
            entries += self.acking.values()
            self.acking.clear()
            self._queue.clear()
            _fail(entries, SettleTimeout("ack"))
        except Exception as exc:  # its channel closed: every waiter hears why
            _fail(entries, exc)
        else:
            for _, future in entries:
                if not future.done():  # (cancelled: its handler was, and the delivery is acked all the same)
                    future.set_result(None)


def _fail(entries: Iterable[tuple[object, asyncio.Future[None]]], error: Exception) -> None:
    for _, future in entries:
        if not future.done():
            future.set_exception(error)


#: the deliveries' channels and their acknowledgements (see `_Acks`)
_ACKS: dict[aiormq.abc.AbstractChannel, _Acks] = {}


def _track(msg: AbstractIncomingMessage) -> None:
    """Hand `msg`'s acknowledgement to its channel's `_Acks`: called as it arrives, in the channel's order."""
    channel, tag = msg.channel, msg.delivery_tag
    if tag is None:
        return
    acks = _ACKS.get(channel)
    if acks is None:
        for closed in [c for c in _ACKS if c.is_closed]:
            del _ACKS[closed]
        acks = _ACKS[channel] = _Acks()
    acks.received(tag)


class QueueConsumer:
    """Subclasses set `role` and `target` (the delay target that brings a message back to this queue) and
    implement `handle`."""

    role: str
    target: str = "internal"

    def __init__(self, rt: Runtime, queue_name: str) -> None:
        self.rt = rt
        self.queue_name = queue_name
        self.draining = False
        self.in_flight: set[asyncio.Task[None]] = set()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._redis_watch: asyncio.Task[None] | None = None
        self._cancelling: asyncio.Task[None] | None = None  # the consumer's cancel, which may outlive its wait

    async def start(self) -> None:
        # declared, not just named: the robust channel then restores the consumer after a reconnect
        self._queue = await self.rt.consume_channel.get_queue(self.queue_name)
        await self._consume()
        log.info("worker.started", role=self.role, queue=self.queue_name)

    @property
    def paused(self) -> bool:
        """Not consuming because Redis is unreachable."""
        return self._redis_watch is not None and not self._redis_watch.done()

    async def drain(self, grace_s: float) -> None:
        """Stop consuming; let deliveries in flight finish within `grace_s`; the others go back."""
        self.draining = True
        await self._stop_consuming()
        if self._redis_watch is not None:
            self._redis_watch.cancel()
        if self.in_flight:
            _, pending = await asyncio.wait(set(self.in_flight), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        log.info("worker.drained", role=self.role, queue=self.queue_name)

    async def handle(self, msg: AbstractIncomingMessage) -> None:
        raise NotImplementedError

    def received(self, msg: AbstractIncomingMessage) -> None:
        """Called for every delivery before `handle` (metrics)."""

    async def recover(self) -> None:
        """Called once Redis answers again after an outage, before consuming resumes: what the outage left
        undone (raise to be called again later)."""

    async def _consume(self) -> None:
        assert self._queue is not None
        self._tag = await self._queue.consume(self._on_message)

    async def _stop_consuming(self) -> None:
        if self._queue is not None and self._tag is not None:
            queue, tag, self._tag = self._queue, self._tag, None

            async def cancel() -> None:
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)

            # bounded as an ack is (the connection may be stuck); not cancelled, as aiormq's RPC task would
            # outlive that anyway: left waiting, it ends with its channel
            self._cancelling = asyncio.create_task(cancel())
            await asyncio.wait({self._cancelling}, timeout=SETTLE_S)

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        # aiormq runs this in a task of the delivery's channel and cancels it when the channel closes (its
        # connection lost, a node stopped): the handling goes on to its end in a task of its own (see the doc),
        # which this does not wait for (the tasks of aiormq and aio-pika end at once, and hold no memory)
        _track(msg)
        task = asyncio.create_task(self._process(msg))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _process(self, msg: AbstractIncomingMessage) -> None:
        self.received(msg)
        try:
            await self._handle(msg)
        except msgspec.DecodeError as exc:
            await self.rt.dead_letter(msg.body, "malformed", str(exc), msg.routing_key or "", msg.message_id)
            await ack(msg)
        except RedisError as exc:  # (not OSError: a broker connection error is one too, and no reason to pause)
            # Redis holds the claims, the limits and the lists: without it nothing may be decided. Give the
            # message back without spending its delivery count, and stop taking new ones until Redis answers.
            log.warning("worker.redis_unavailable", role=self.role, error=type(exc).__name__)
            await self._give_back(msg)
            self._pause_for_redis()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await nack(msg)
            raise
        except SettleTimeout as exc:  # the connection is stuck or gone: the channel settles the delivery
            log.info("worker.settle_timed_out", role=self.role, queue=self.queue_name, op=str(exc))
        except PublishTimeout:  # the broker still not confirming, after every pause (see `_handle`)
            log.warning("worker.publish_timed_out", role=self.role, queue=self.queue_name)
            with contextlib.suppress(Exception):
                await nack(msg)
        except Exception:
            if _channel_closed(msg):  # went back to the queue with its channel, as the doc says: not a crash
                log.info("worker.delivery_returned", role=self.role, queue=self.queue_name)
                return
            log.exception("message.crashed", role=self.role, queue=self.queue_name)
            with contextlib.suppress(Exception):
                await nack(msg)

    async def _handle(self, msg: AbstractIncomingMessage) -> None:
        """`handle`, again after a pause while the broker nacks what it publishes (see the module doc), as long
        as the delivery is unsettled and its channel open (else the broker redelivers it anyway)."""
        for pause in NACKED_RETRY_S:
            try:
                await self.handle(msg)
                return
            except (aiormq.exceptions.DeliveryError, PublishTimeout) as exc:
                if not _broker_trouble(exc) or msg.processed or self.draining:
                    raise
                why = "timed_out" if isinstance(exc, PublishTimeout) else "nacked"
                metrics.PUBLISH_RETRIES.labels(self.role, why).inc()
                log.warning("worker.publish_failed", role=self.role, queue=self.queue_name, why=why, retry_in_s=pause)
            await asyncio.sleep(pause)
            if _channel_closed(msg):  # the delivery went back to the queue with its channel
                return
        await self.handle(msg)

    async def _give_back(self, msg: AbstractIncomingMessage) -> None:
        try:
            await self.rt.delayer.delay(
                msg.body,
                routing_key=msg.routing_key or "",
                target=self.target,
                seconds=GIVE_BACK_S,
                headers={k: v for k, v in (msg.headers or {}).items() if k.startswith("x-smsfleet-")},
                message_id=msg.message_id,
            )
            await ack(msg)
        except Exception:  # the broker is in trouble too: the queue keeps the message
            with contextlib.suppress(Exception):
                await nack(msg)

    def _pause_for_redis(self) -> None:
        if self.paused or self.draining:
            return

        async def watch() -> None:
            await self._stop_consuming()
            while not self.draining:
                try:
                    await self.rt.redis.ping()
                    await self.recover()
                    await self._consume()  # fails while the broker is away too: then try again
                except Exception as exc:  # Redis or the broker still away: wait and ask again
                    log.debug("worker.still_paused", role=self.role, error=type(exc).__name__)
                    await asyncio.sleep(PING_EVERY_S)
                    continue
                log.info("worker.redis_back", role=self.role, queue=self.queue_name)
                return

        self._redis_watch = asyncio.create_task(watch())


def _broker_trouble(exc: Exception) -> bool:
    """A publish the broker nacked or did not confirm in time (not one it returned as unroutable)."""
    return isinstance(exc, PublishTimeout) or isinstance(getattr(exc, "frame", None), aiormq.spec.Basic.Nack)


def _channel_closed(msg: AbstractIncomingMessage) -> bool:
    try:
        return msg.channel.is_closed
    except aiormq.exceptions.ChannelInvalidStateError:  # aio-pika's way of saying so
        return True
