"""Publishing send jobs with publisher confirms: the library campaign engines use (DESIGN §1, §3).

The errors a publish can end in — each names its job and carries a stable `code`:

    PublishError                  code              what happened
     ├── UnknownSender            unknown_sender    `route` knows no such sender; nothing was sent
     ├── Unroutable               unroutable        the broker returned the message (no queue is bound
     │                                              for the gateway) or the send exchange is missing
     └── NotConfirmed             not_confirmed     the broker nacked it (`why="nack"`, e.g. a full
                                                    queue), no confirm came within the timeout
                                                    (`"timeout"`, a reconnect included), or the
                                                    connection was closed (`"closed"`). The message
                                                    may or may not be queued.

Delivery is at least once: a publish that fails with NotConfirmed may still have reached the queue, and
a retry (yours, or ours after a reconnect) can queue the job twice. Workers deduplicate on the job id
(DESIGN §7.4), so retrying with the same id is always safe.

Reconnects: aio-pika's robust connection reconnects and reopens our channel by itself. A publish that
meets a closed or reopening channel waits for it and tries again until its own timeout runs out; only a
connection closed on purpose (`connection.close()`) fails at once, with NotConfirmed(why="closed").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Literal, Self, TypeVar, cast

import aiormq.exceptions as amqp_errors
import msgspec
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from smsfleet.connect import connect_amqp, redis_client
from smsfleet.contracts import JOB_ID_MAX_BYTES, SendJob, encode
from smsfleet.senders import SenderCache, open_registry
from smsfleet.settings import Settings
from smsfleet.topology import Names, publish_json

__all__ = [
    "InvalidJobId",
    "NotConfirmed",
    "PublishError",
    "Publisher",
    "Result",
    "Route",
    "UnknownSender",
    "Unroutable",
    "sender_route",
]

T = TypeVar("T")

#: sender id -> the sender's gateway kind, or None when no such sender exists
Route = Callable[[str], str | None]

#: errors that mean "the channel is closed or being reopened": wait for it and try again
_RECONNECTING = (
    amqp_errors.ChannelInvalidStateError,
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelClosed,
    ConnectionError,
)
_START_TIMEOUT_S: Final = 30.0  # opening the channel: the publish timeout may be far shorter
_RETRY_FIRST_S: Final = 0.05
_RETRY_MAX_S: Final = 1.0


class PublishError(Exception):
    """A job was not (or not surely) queued. `code` is stable and machine-readable."""

    code = "publish_error"

    def __init__(self, job_id: str | None, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.message = message

    @property
    def reason(self) -> str:
        """`<code>: <message>`, the form bulk summaries and logs show."""
        return f"{self.code}: {self.message}"


class UnknownSender(PublishError):
    code = "unknown_sender"


class InvalidJobId(PublishError):
    code = "invalid_id"


class Unroutable(PublishError):
    code = "unroutable"


class NotConfirmed(PublishError):
    code = "not_confirmed"

    def __init__(self, job_id: str | None, message: str, why: Literal["nack", "timeout", "closed"]) -> None:
        super().__init__(job_id, message)
        self.why = why


class Result(msgspec.Struct, frozen=True, gc=False):
    """The outcome of one job of `publish_many`: `error` is None when the broker confirmed it.

    Not tracked by the garbage collector (`gc=False`): a publish_many of 10^5 jobs would otherwise make
    the collector walk 10^5 long-lived results again and again while the publishes run. It holds no
    cycles: `publish_many` drops the error's traceback and context before storing it.
    """

    job: SendJob
    error: PublishError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def sender_route(cache: SenderCache) -> Route:
    """The route of a SenderCache: follows registry changes while the process runs."""

    def route(sender_id: str) -> str | None:
        sender = cache.get(sender_id)
        return None if sender is None else sender.gateway

    return route


class Publisher:
    """Publishes SendJobs to `<ns>.send` with routing key `<gateway>.<sender_id>`, confirmed by the broker.

    One channel with publisher confirms; every publish is mandatory (an unroutable job raises, it is
    never dropped), persistent JSON with `message_id = job.id`, and has `timeout` seconds (from the moment
    it gets one of the `max_in_flight` slots) to be confirmed. Any number of `publish` calls may run at
    once; `publish_many` / `publish_stream` keep up to `max_in_flight` outstanding for you.

    The jobs must already be valid (`decode_job`, or built from values you checked): the publisher
    checks only that the sender is known, the workers check the rest.

        async with Publisher(connection, names, sender_route(cache)) as publisher:
            await publisher.publish(job)
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        names: Names,
        route: Route,
        *,
        timeout: float = 10.0,
        max_in_flight: int = 1000,
    ) -> None:
        if timeout <= 0 or max_in_flight < 1:
            raise ValueError("timeout must be above 0 and max_in_flight at least 1")
        self.connection = connection
        self.names = names
        self.route = route
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._deadlines = _Deadlines(timeout)
        self._channel: AbstractRobustChannel | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        # job id -> None, or a future that waiters on that id sleep on. aiormq matches a returned
        # (unroutable) message to its publish by message_id, so two publishes of one job id in flight at
        # once could make the broker's "returned" land on the wrong one and the other look confirmed.
        self._inflight: dict[str, asyncio.Future[None] | None] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        settings: Settings,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the Publisher's per-publish timeout, not one for connect
        max_in_flight: int = 1000,
    ) -> AsyncIterator[Self]:
        """A publisher with its own broker connection, Redis client and sender cache, all closed on exit."""
        names = Names(settings.namespace)
        async with contextlib.AsyncExitStack() as stack:
            redis = redis_client(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            cache = SenderCache(open_registry(redis, names, settings.secret_key))
            await cache.start()
            stack.push_async_callback(cache.stop)
            connection = await connect_amqp(settings.amqp_url)  # the first node that answers, then the next
            stack.push_async_callback(connection.close)
            publisher = cls(connection, names, sender_route(cache), timeout=timeout, max_in_flight=max_in_flight)
            await publisher.start()
            stack.push_async_callback(publisher.close)
            yield publisher

    async def start(self) -> None:
        """Check that the send exchange exists and open the confirming channel. Idempotent."""
        async with self._start_lock:
            if self._closed:
                raise NotConfirmed(None, "the publisher is closed", "closed")
            if self._channel is not None:
                return
            # a failed passive declare closes its channel, so check on a throwaway one
            async with self.connection.channel(publisher_confirms=False) as probe:
                try:
                    await probe.declare_exchange(self.names.send_exchange, passive=True, timeout=_START_TIMEOUT_S)
                except amqp_errors.ChannelNotFoundEntity:
                    raise Unroutable(
                        None,
                        f"exchange {self.names.send_exchange!r} does not exist: declare the topology first "
                        f"(smsfleet topology declare, SMSFLEET_NAMESPACE={self.names.ns})",
                    ) from None
            channel = self.connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.initialize(timeout=_START_TIMEOUT_S)
            self._channel = channel

    async def close(self) -> None:
        """Close the channel (not the connection, which is the caller's)."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            await channel.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def publish(self, job: SendJob) -> None:
        """Publish one job and wait for the broker's confirm. Raises a PublishError when it is not queued."""
        gateway = self._gateway(job)
        if self._channel is None:
            await self.start()
        await self._slots.acquire()
        try:
            await self._publish_in_slot(job, gateway)
        finally:
            self._slots.release()

    async def publish_many(self, jobs: Iterable[SendJob] | AsyncIterable[SendJob]) -> list[Result]:
        """Publish every job, `max_in_flight` at a time; one Result per job, in input order.

        A failed job does not stop the others. For very long streams use `publish_stream`, which keeps
        nothing in memory.
        """
        results: list[Result | None]

        def done(index: int, job: SendJob, error: PublishError | None) -> None:
            if error is not None:  # its traceback holds frames that hold `results`: a cycle the GC cannot see
                error.__traceback__ = error.__context__ = None
            results[index] = Result(job, error)

        if isinstance(jobs, Sequence):
            results = [None] * len(jobs)
            await self._stream(enumerate(jobs), done, min(self.max_in_flight, len(jobs)))
            return cast(list[Result], results)  # every index was filled by `done`

        results = []

        def numbered(jobs: Iterable[SendJob]) -> Iterator[tuple[int, SendJob]]:
            for job in jobs:
                results.append(None)
                yield len(results) - 1, job

        async def anumbered(jobs: AsyncIterable[SendJob]) -> AsyncIterator[tuple[int, SendJob]]:
            async for job in jobs:
                results.append(None)
                yield len(results) - 1, job

        if isinstance(jobs, AsyncIterable):
            await self._stream(anumbered(jobs), done, self.max_in_flight)
        else:
            await self._stream(numbered(jobs), done, self.max_in_flight)
        return cast(list[Result], results)

    async def publish_stream(
        self,
        items: Iterable[tuple[T, SendJob]] | AsyncIterable[tuple[T, SendJob]],
        on_result: Callable[[T, SendJob, PublishError | None], object],
    ) -> None:
        """Publish `(tag, job)` pairs, `max_in_flight` at a time, calling `on_result(tag, job, error)`
        as each one is confirmed (error None) or fails. Pulls items only as slots free up, so a
        generator over a huge file is never read ahead. An exception other than a PublishError (from
        the iterable or from `on_result`) stops everything and is raised.
        """
        workers = min(self.max_in_flight, len(items)) if isinstance(items, Sequence) else self.max_in_flight
        await self._stream(items, on_result, workers)

    async def _stream(
        self,
        items: Iterable[tuple[T, SendJob]] | AsyncIterable[tuple[T, SendJob]],
        on_result: Callable[[T, SendJob, PublishError | None], object],
        workers: int,
    ) -> None:
        await self.start()
        gateway_of, publish = self._gateway, self._publish_in_slot
        if isinstance(items, AsyncIterable):
            pairs = aiter(items)
            lock = asyncio.Lock()

            async def worker() -> None:
                while True:
                    async with lock:  # an async generator cannot be advanced by two tasks at once
                        item = await anext(pairs, None)
                    if item is None:
                        return
                    tag, job = item
                    try:
                        # a slot per job, not per worker: the iterable itself may be publishing
                        async with self._slots:
                            await publish(job, gateway_of(job))
                    except PublishError as exc:
                        on_result(tag, job, exc)
                    else:
                        on_result(tag, job, None)

        else:
            shared = iter(items)  # one iterator shared by every worker: next() never runs concurrently

            async def worker() -> None:
                async with self._slots:  # one slot for the worker's whole life: cheaper than one per job
                    for tag, job in shared:
                        try:
                            await publish(job, gateway_of(job))
                        except PublishError as exc:
                            on_result(tag, job, exc)
                        else:
                            on_result(tag, job, None)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None  # the first failure; the others are its echoes

    def _gateway(self, job: SendJob) -> str:
        """The job's gateway; also refuses an id that cannot be an AMQP message id (a job built by hand)."""
        if len(job.id.encode()) > JOB_ID_MAX_BYTES:
            raise InvalidJobId(
                job.id, f"the job id is {len(job.id.encode())} bytes in UTF-8; at most {JOB_ID_MAX_BYTES}"
            )
        gateway = self.route(job.sender)
        if gateway is None:
            raise UnknownSender(job.id, f"unknown sender {job.sender!r}")
        return gateway

    async def _publish_in_slot(self, job: SendJob, gateway: str) -> None:
        """The publish itself, once the caller holds a slot: the deadline starts now."""
        body = encode(job)
        key = Names.send_key(gateway, job.sender)
        job_id = job.id
        inflight = self._inflight
        task = asyncio.current_task()
        assert task is not None  # a coroutine awaited by asyncio always runs in a task
        watched = self._deadlines.watch(task)
        try:
            if job_id in inflight:
                await self._wait_turn(job_id)
            inflight[job_id] = None
            try:
                channel = self._channel
                if channel is None:
                    raise NotConfirmed(job_id, "the publisher is closed", "closed")
                try:  # the first attempt inline: one coroutine frame less on every resume
                    await self._publish(channel, body, key, job_id)
                except _RECONNECTING as exc:
                    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
                        raise self._failure(exc, job_id, key) from None
                    await self._republish(body, key, job_id)
                except amqp_errors.DeliveryError as exc:
                    raise self._failure(exc, job_id, key) from None
            finally:
                waiter = inflight.pop(job_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        except asyncio.CancelledError:
            if self._deadlines.expired(task):
                raise NotConfirmed(job_id, f"not confirmed by the broker within {self.timeout}s", "timeout") from None
            raise
        finally:
            watched.discard(task)

    async def _wait_turn(self, job_id: str) -> None:
        """Wait until no other publish of `job_id` is in flight (see `_inflight`)."""
        while job_id in self._inflight:
            waiter = self._inflight[job_id]
            if waiter is None:
                waiter = self._inflight[job_id] = asyncio.get_running_loop().create_future()
            await asyncio.wait((waiter,))  # unlike `await waiter`, a cancel here leaves it to the others

    async def _publish(self, channel: AbstractRobustChannel, body: bytes, key: str, job_id: str) -> None:
        """One publish, written with the others of this event-loop turn (`publish_json`), confirmed or failed. A
        closed channel (its connection lost or closed) fails at once, for `_republish` to wait for it."""
        if channel.is_closed:
            raise amqp_errors.ChannelInvalidStateError(f"{channel!r} closed")
        # bounded by the publish's deadline (`_Deadlines`), not by a timer of its own
        await publish_json(channel, self.names.send_exchange, body, key, message_id=job_id, confirm_timeout_s=None)

    async def _republish(self, body: bytes, key: str, job_id: str) -> None:
        """The channel is closed or being reopened: wait for the robust connection to restore it and
        publish again, until done or the deadline cancels us. Fails at once when the connection was
        closed on purpose."""
        pause = _RETRY_FIRST_S
        while True:
            if self.connection.is_closed or self._channel is None:
                raise NotConfirmed(job_id, "the connection to the broker is closed", "closed")
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RETRY_MAX_S)
            channel = self._channel
            if channel is None:
                continue
            await channel.ready()
            try:
                await self._publish(channel, body, key, job_id)
            except _RECONNECTING as exc:
                if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
                    raise self._failure(exc, job_id, key) from None
            except amqp_errors.DeliveryError as exc:
                raise self._failure(exc, job_id, key) from None
            else:
                return

    def _failure(self, exc: amqp_errors.AMQPError, job_id: str, key: str) -> PublishError:
        """The PublishError for a broker's final answer: returned, nacked, or no such exchange."""
        if isinstance(exc, amqp_errors.PublishError):  # returned: mandatory, and no queue is bound
            reply = getattr(exc.frame, "reply_text", "NO_ROUTE")
            return Unroutable(
                job_id,
                f"{reply}: no queue is bound for routing key {key!r} on {self.names.send_exchange!r} "
                "(is the topology declared for this gateway?)",
            )
        if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
            return Unroutable(job_id, f"{exc}: declare the topology first (smsfleet topology declare)")
        # nack: e.g. a queue at its length limit with overflow reject-publish
        return NotConfirmed(job_id, "the broker refused it (nack)", "nack")


class _Deadlines:
    """Cancels publishes that outlive the timeout: one timer per short slice of time, not one per publish.

    `asyncio.timeout()` schedules and cancels a timer on every publish, a measurable share of a publish's
    CPU time at thousands per second. Here a publish joins the set of the slice its deadline falls in;
    the slice's single timer cancels whatever is still in it, and `expired()` tells the cancelled
    publish that the cancel was ours (and removes it, as `asyncio.timeout` does), so it raises
    NotConfirmed instead of CancelledError. A deadline fires at most one slice (<= 50 ms) late.
    """

    __slots__ = ("_cancelled", "_slices", "step", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.step = min(0.05, timeout / 10)
        self._slices: dict[int, set[asyncio.Task[Any]]] = {}
        self._cancelled: set[asyncio.Task[Any]] = set()

    def watch(self, task: asyncio.Task[Any]) -> set[asyncio.Task[Any]]:
        """Start the clock for `task`; discard it from the returned set when its publish ends."""
        loop = task.get_loop()
        number = math.ceil((loop.time() + self.timeout) / self.step)
        tasks = self._slices.get(number)
        if tasks is None:
            tasks = self._slices[number] = set()
            loop.call_at(number * self.step, self._expire, number)
        tasks.add(task)
        return tasks

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """After a CancelledError: was it our deadline, and the only cancel request pending?"""
        if task not in self._cancelled:
            return False
        self._cancelled.discard(task)
        return task.uncancel() == 0

    def _expire(self, number: int) -> None:
        for task in self._slices.pop(number, ()):
            self._cancelled.add(task)
            task.cancel()
