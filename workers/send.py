"""The send worker: consumes `<ns>.send.<gateway>` and takes each job to a provider, or to a final state.

For each delivery, in order (DESIGN §7.1): wait out a delay -> decode -> sender of this gateway -> checks
(account, expiry, suppression, verified phone and caller ID, segments) -> idempotency claim -> fleet-wide
rate limit -> provider call -> ledger and event -> ack; suppression, claim and rate-limit slot are one Redis
script (`admission`). Every outcome is published (with confirms) before the delivery is acknowledged, so a
crash at any point leads to a redelivery, never to a loss; the ledger makes the redelivery safe.

Nothing waits unacknowledged: retries, long rate-limit waits and status rechecks go through delay tiers.
The worker never names a provider: what differs between gateways lives in the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from typing import Any

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from redis.exceptions import RedisError

from gateways import Ambiguous, Gateway, GatewayError, Outgoing, Permanent, RateLimited, gateway_class
from smsfleet import metrics
from smsfleet.contracts import ErrorInfo, InvalidJob, SendJob, State, decode_job, encode
from smsfleet.segments import count
from smsfleet.senders import Sender, receiving_url
from smsfleet.topology import HEADER_ATTEMPT

from .admission import Outcome
from .checks import (
    SUPPRESSED,
    Check,
    account_assigned,
    not_expired,
    not_suppressed,
    run_checks,
    segments_within,
    verified_caller_id,
    verified_phone,
)
from .checks import Verdict as CheckVerdict
from .delays import attempt_of, backoff, remaining, tier_for
from .ratelimit import RateLimitWait, sleep_until
from .rechecks import RecheckBatcher
from .runtime import Runtime, status_event

__all__ = ["SendPolicy", "SendWorker"]

log = structlog.get_logger("smsfleet.workers.send")


class SendPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How the send worker behaves; defaults are what the README's guarantees table states."""

    concurrency: int = 100
    #: attempts before a job with transient errors ends `failed`
    max_attempts: int = 6
    #: a rate-limit wait longer than this goes through a delay tier instead of being slept
    max_rate_wait_s: float = 2.0
    #: after an ambiguous send to a provider that does not dedupe: `unknown` (never resend) or `resend`
    ambiguous: str = "unknown"
    provider_timeout_s: float = 10.0


class SendWorker:
    def __init__(self, rt: Runtime, kind: str, policy: SendPolicy | None = None) -> None:
        self.rt = rt
        self.kind = kind
        self.policy = policy or SendPolicy()
        self.gateway_cls = gateway_class(kind)
        self._gateways: dict[str, tuple[Sender, Gateway[Any]]] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}
        suppressed = not_suppressed(rt.suppression)
        self.checks: list[Check] = [
            account_assigned,
            not_expired(),
            suppressed,
            verified_phone,
            verified_caller_id,
            segments_within(self.gateway_cls.max_parts),
        ]
        # the suppression check runs in Redis with the claim (`admission`); the others need no I/O
        self.local_checks = [check for check in self.checks if check is not suppressed]
        self.rechecks = RecheckBatcher(rt.delayer, kind)
        self._owners = map(f"{uuid.uuid4().hex[:12]}-{{}}".format, itertools.count())
        self.draining = False
        self.in_flight: set[asyncio.Task[None]] = set()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._paused = asyncio.Event()
        self._redis_watch: asyncio.Task[None] | None = None

    # -- consuming ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._queue = await self.rt.consume_channel.get_queue(
            self.rt.names.send_queue(self.kind)
        )  # declared: restored after a reconnect
        await self._consume()
        log.info("worker.started", gateway=self.kind, concurrency=self.policy.concurrency)

    async def _consume(self) -> None:
        assert self._queue is not None
        self._tag = await self._queue.consume(self._on_message)

    async def _stop_consuming(self) -> None:
        if self._queue is not None and self._tag is not None:
            tag, self._tag = self._tag, None
            with contextlib.suppress(Exception):
                await self._queue.cancel(tag)

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        metrics.CONSUMED.labels(self.kind).inc()
        if msg.timestamp is not None:
            age = time.time() - msg.timestamp.timestamp()
            metrics.QUEUE_OLDEST_AGE.labels(self.rt.names.send_queue(self.kind)).set(max(0.0, age))
        try:
            await self.handle(msg)
        except (RedisError, OSError) as exc:
            # Redis is the rate limiter and the ledger: without it nothing may be sent. Give the job back
            # and stop taking new ones until Redis answers again.
            log.warning("worker.redis_unavailable", error=str(exc), gateway=self.kind)
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
            await self._pause_for_redis()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
            raise
        except Exception:
            # a bug or a broker failure: the delivery goes back; the delivery limit parks a poison message
            log.exception("job.crashed", gateway=self.kind)
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
        finally:
            self.in_flight.discard(task)

    @property
    def paused(self) -> bool:
        """Not consuming because Redis is unreachable."""
        return self._redis_watch is not None and not self._redis_watch.done()

    async def _pause_for_redis(self) -> None:
        if self._redis_watch is not None and not self._redis_watch.done():
            return
        await self._stop_consuming()

        async def watch() -> None:
            while not self.draining:
                try:
                    await self.rt.redis.ping()
                except (RedisError, OSError):
                    await asyncio.sleep(1.0)
                    continue
                log.info("worker.redis_back", gateway=self.kind)
                await self._consume()
                return

        self._redis_watch = asyncio.create_task(watch())

    async def drain(self, grace_s: float) -> None:
        """Stop consuming; let in-flight sends finish within `grace_s`; anything not started goes back."""
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
        log.info("worker.drained", gateway=self.kind)

    # -- one job -----------------------------------------------------------------------------------

    async def handle(self, msg: AbstractIncomingMessage) -> None:
        admitted = await self._admit(msg)
        if admitted is None:
            return
        job, sender, attempt = admitted
        gateway = self._gateway(sender)
        if await self._clear(msg, job, sender, gateway, attempt):
            await self._call(msg, job, sender, gateway, attempt)

    async def _admit(self, msg: AbstractIncomingMessage) -> tuple[SendJob, Sender, int] | None:
        """Delay, decode, sender and checks. Returns what to send, or None when the delivery is settled."""
        wait = remaining(msg)
        if wait >= 1.0:
            await self._redelay(msg, wait, attempt_of(msg))
            return None
        if wait > 0:
            await asyncio.sleep(wait)
        attempt = attempt_of(msg)
        try:
            job = decode_job(msg.body, self.rt.settings.default_region)
        except InvalidJob as exc:
            await self._invalid(msg, exc)
            return None
        sender = self.rt.senders.get(job.sender)
        if sender is None:
            await self._refuse(msg, job, "unknown_sender", f"no sender {job.sender!r} in the registry")
            return None
        if sender.gateway != self.kind:
            key = self.rt.names.send_key(sender.gateway, sender.id)
            await self.rt.publish(
                self.rt.names.send_exchange, msg.body, key, headers=dict(msg.headers or {}), message_id=job.id
            )
            await msg.ack()
            log.info("job.rerouted", job_id=job.id, sender=sender.id, to_gateway=sender.gateway)
            return None
        if await run_checks(self.local_checks, job, sender) is not None:
            verdict = await run_checks(self.checks, job, sender)  # all of them, in order: the first verdict wins
            assert verdict is not None
            await self._refused(msg, job, sender, attempt, verdict)
            return None
        return job, sender, attempt

    async def _refused(
        self, msg: AbstractIncomingMessage, job: SendJob, sender: Sender, attempt: int, verdict: CheckVerdict
    ) -> None:
        await self.rt.emit(status_event(job, verdict.state, attempt=attempt, error=verdict.error), self.kind)
        if verdict.state is State.SUPPRESSED:
            metrics.SUPPRESSION_HITS.labels(self.kind).inc()
        await msg.ack()
        log.info("job.refused", job_id=job.id, sender=sender.id, state=verdict.state, code=verdict.code)

    async def _clear(
        self, msg: AbstractIncomingMessage, job: SendJob, sender: Sender, gateway: Gateway[Any], attempt: int
    ) -> bool:
        """Suppression, idempotency claim and a slot of the fleet-wide rate limit. True: call the provider now.

        At most rate x GATE_S of this process's jobs for one sender ask Redis for a slot at once; the others
        wait their turn here (up to `max_rate_wait_s`), rather than all ask Redis and bounce through delay
        tiers. A job past that goes through a delay tier.
        """
        rate = sender.rate_limit or self.rt.settings.default_rates.get(self.kind) or gateway.default_rate
        gate = self._gates.get(sender.id)
        if gate is None:
            gate = self._gates[sender.id] = asyncio.Semaphore(max(1, math.ceil(rate * GATE_S)))
        if gate.locked():
            try:
                async with asyncio.timeout(self.policy.max_rate_wait_s):
                    await gate.acquire()
            except TimeoutError:
                await self._redelay(msg, 1.0, attempt)
                return False
        else:
            await gate.acquire()  # free: returns at once, without the cost of a timeout
        try:
            return await self._claim(msg, job, sender, gateway, attempt, rate)
        finally:
            gate.release()

    async def _claim(  # noqa: PLR0917 - the whole context of one delivery
        self,
        msg: AbstractIncomingMessage,
        job: SendJob,
        sender: Sender,
        gateway: Gateway[Any],
        attempt: int,
        rate: float,
    ) -> bool:
        """The admission script (see `admission`) and what each of its verdicts means for this delivery."""
        if self.draining:
            await msg.nack(requeue=True)
            return False
        owner = next(self._owners)
        admission = await self.rt.admitter.admit(job, owner, rate, max_wait=self.policy.max_rate_wait_s)
        match admission.outcome:
            case Outcome.CALL:
                metrics.RATE_LIMIT_WAIT.labels(self.kind).observe(0.0)
                return True
            case Outcome.CLAIMED:
                return await self._take_slot(msg, job, sender, attempt, owner, rate, first=admission.wait_s)
            case Outcome.RETRY:
                await self._redelay(msg, admission.wait_s, attempt)
            case Outcome.SUPPRESSED:
                await self._refused(msg, job, sender, attempt, SUPPRESSED)
            case Outcome.CALLING if gateway.dedupes or self.policy.ambiguous == "resend":
                return await self._take_slot(msg, job, sender, attempt, owner, rate, takeover=True)
            case Outcome.CALLING:
                await self._final(msg, job, State.UNKNOWN, attempt, 0, _AMBIGUOUS_REDELIVERY)
            case Outcome.ACCEPTED | Outcome.FINAL:
                await self._replay(job)
                if admission.outcome is Outcome.ACCEPTED:  # the holder may have died before scheduling the recheck
                    await self._schedule_recheck(job, gateway)
                await msg.ack()
                log.info("job.duplicate", job_id=job.id, state=admission.state)
        return False

    async def _take_slot(  # noqa: PLR0917 - the whole context of one delivery
        self,
        msg: AbstractIncomingMessage,
        job: SendJob,
        sender: Sender,
        attempt: int,
        owner: str,
        rate: float,
        *,
        first: float | None = None,
        takeover: bool = False,
    ) -> bool:
        """Sleep until a reserved slot (`first`, or one taken here), then move the claim to `calling`.

        The limiter spaces slots so that a send up to `margin` late still keeps every 1-s window within the
        rate; a process that reaches the provider call later than a third of that (a busy event loop, a slow
        Redis reply) gives its slot up and takes another, rather than send in a burst with others that were
        late too. True: call now.
        """
        calling = False
        delay = first
        for _ in range(MAX_SLOTS):
            if delay is None:
                try:
                    delay = await self.rt.limiter.acquire(sender.id, rate, max_wait=self.policy.max_rate_wait_s)
                except RateLimitWait as exc:
                    await self.rt.ledger.retry(job.id)
                    await self._redelay(msg, exc.retry_after, attempt)
                    return False
            slot = time.monotonic() + delay
            metrics.RATE_LIMIT_WAIT.labels(self.kind).observe(delay)
            await sleep_until(slot)
            if not calling:
                if self.draining:
                    await self.rt.ledger.retry(job.id)
                    await msg.nack(requeue=True)
                    return False
                if not await self.rt.ledger.begin_call(job.id, owner, takeover=takeover):
                    await msg.ack()  # another delivery of the same job holds the claim now
                    return False
                calling = True
            if time.monotonic() - slot <= self.rt.limiter.margin / 3:
                return True
            delay = None
        log.warning("rate_limit.late", job_id=job.id, sender=sender.id)
        await self.rt.ledger.retry(job.id)  # nothing was sent
        await self._redelay(msg, 1.0, attempt)
        return False

    async def _call(
        self, msg: AbstractIncomingMessage, job: SendJob, sender: Sender, gateway: Gateway[Any], attempt: int
    ) -> None:
        parts = count(job.text).parts
        outgoing = Outgoing(
            job_id=job.id, to=job.to, text=job.text, originator=job.originator, valid_until=job.valid_until,
            parts=parts, callback_url=self._callback_url(sender),
        )  # fmt: skip
        started = time.perf_counter()
        try:
            receipt = await gateway.send(outgoing)
        except GatewayError as exc:
            _observe(self.kind, started, _OUTCOMES.get(type(exc), "transient"))
            await self._failed_call(msg, job, sender, gateway, attempt, parts, exc)
            return
        _observe(self.kind, started, "ok")
        parts = receipt.parts or parts
        await _until_done(lambda: self.rt.ledger.accepted(job.id, self.kind, receipt.ids, encode(job), attempt, parts))
        pid = receipt.provider_message_id
        event = status_event(job, State.ACCEPTED, attempt=attempt, parts=parts, provider_message_id=pid)
        await asyncio.gather(self.rt.emit(event, self.kind), self._schedule_recheck(job, gateway))
        await msg.ack()
        log.info("sms.sent", job_id=job.id, sender=sender.id, provider_message_id=pid, parts=parts, attempt=attempt)

    # -- outcomes ----------------------------------------------------------------------------------

    def _callback_url(self, sender: Sender) -> str | None:
        """The sender's receiving URL, when one is configured (a default localhost URL reaches no provider)."""
        return receiving_url(sender, self.rt.settings.public_url) if self.rt.settings.public_url_set else None

    def _gateway(self, sender: Sender) -> Gateway[Any]:
        cached = self._gateways.get(sender.id)
        if cached is None or cached[0] is not sender:  # the sender changed: new settings
            adapter = self.gateway_cls(sender.settings, self.rt.http)
            adapter.timeout_s = self.policy.provider_timeout_s
            cached = self._gateways[sender.id] = (sender, adapter)
        return cached[1]

    async def _final(  # noqa: PLR0917 - the outcome of one delivery, all of it needed
        self,
        msg: AbstractIncomingMessage,
        job: SendJob,
        state: State,
        attempt: int,
        parts: int,
        error: ErrorInfo,
    ) -> None:
        recorded = await _until_done(lambda: self.rt.ledger.final(job.id, state, encode(job), error.code))
        if recorded:  # else a report finished the job first: its state stands
            await self.rt.emit(status_event(job, state, attempt=attempt, parts=parts, error=error), self.kind)
        await msg.ack()

    async def _failed_call(  # noqa: PLR0917 - the whole context of one failed call
        self,
        msg: AbstractIncomingMessage,
        job: SendJob,
        sender: Sender,
        gateway: Gateway[Any],
        attempt: int,
        parts: int,
        exc: GatewayError,
    ) -> None:
        """The provider did not take the message: rejected, retried, or (ambiguous) the policy decides."""
        if isinstance(exc, Permanent):
            await self._final(msg, job, State.REJECTED, attempt, parts, ErrorInfo(exc.code, exc.message))
            log.info("sms.rejected", job_id=job.id, sender=sender.id, code=exc.code)
        elif isinstance(exc, Ambiguous) and not (gateway.dedupes or self.policy.ambiguous == "resend"):
            await self._final(msg, job, State.UNKNOWN, attempt, parts, ErrorInfo(exc.code, _AMBIGUOUS))
        else:  # transient, rate limited, or ambiguous where a resend is safe
            if isinstance(exc, RateLimited):
                await self.rt.limiter.pause(sender.id, exc.retry_after)
            await self._retry(msg, job, attempt, exc)

    async def _retry(self, msg: AbstractIncomingMessage, job: SendJob, attempt: int, exc: GatewayError) -> None:
        if attempt >= self.policy.max_attempts:
            error = ErrorInfo(exc.code, f"gave up after {attempt} attempts: {exc.message}")
            await self._final(msg, job, State.FAILED, attempt, 0, error)
            log.info("sms.failed", job_id=job.id, code=exc.code, attempt=attempt)
            return
        await _until_done(lambda: self.rt.ledger.retry(job.id))
        wait = max(backoff(attempt), getattr(exc, "retry_after", 0.0))
        await self._redelay(msg, wait, attempt + 1)
        metrics.RETRIES.labels(self.kind, str(tier_for(wait))).inc()
        log.info("sms.retry_scheduled", job_id=job.id, code=exc.code, attempt=attempt, wait_s=round(wait, 1))

    async def _redelay(self, msg: AbstractIncomingMessage, seconds: float, attempt: int) -> None:
        headers = {k: v for k, v in (msg.headers or {}).items() if k.startswith("x-smsfleet-")}
        headers[HEADER_ATTEMPT] = attempt
        await self.rt.delayer.delay(
            msg.body,
            routing_key=msg.routing_key or "",
            target="send",
            seconds=seconds,
            headers=headers,
            message_id=msg.message_id,
        )
        await msg.ack()

    async def _invalid(self, msg: AbstractIncomingMessage, exc: InvalidJob) -> None:
        raw = _best_effort(msg.body)
        job = SendJob(
            id=raw.get("id") or msg.message_id or "?", sender=raw.get("sender") or "?",
            account=raw.get("account") or "?", to=raw.get("to") or "?", text="?",
        )  # fmt: skip
        await self.rt.emit(status_event(job, State.INVALID, attempt=attempt_of(msg), error=exc.info), self.kind)
        await self.rt.dead_letter(msg.body, exc.code, exc.message, msg.routing_key or "", msg.message_id)
        await msg.ack()
        log.info("job.invalid", job_id=job.id, code=exc.code)

    async def _refuse(self, msg: AbstractIncomingMessage, job: SendJob, code: str, reason: str) -> None:
        """A job that names something we do not have: `rejected`, and parked in the dead queue."""
        error = ErrorInfo(code, reason)
        await self.rt.emit(status_event(job, State.REJECTED, attempt=attempt_of(msg), error=error), self.kind)
        await self.rt.dead_letter(msg.body, code, reason, msg.routing_key or "", msg.message_id)
        await msg.ack()
        log.info("job.rejected", job_id=job.id, code=code)

    async def _replay(self, job: SendJob) -> None:
        """A job the ledger already finished or handed over: publish its last event again (at least once)."""
        record = await self.rt.ledger.get(job.id)
        state = State(record.get("state", State.ACCEPTED))
        pid = (record.get("pid") or "").split(",")[0] or None
        attempt = int(record.get("attempt") or 1)
        event = status_event(job, state, attempt=attempt, provider_message_id=pid)
        await self.rt.emit(event, self.kind, replay=True)

    async def _schedule_recheck(self, job: SendJob, gateway: Gateway[Any]) -> None:
        """The first status check: after `await_delivery_s`, or at the horizon for push-only kinds (batched)."""
        after_s = gateway.await_delivery_s if gateway.has_status else self.rt.settings.status_horizon_s
        await self.rechecks.add(job.sender, job.id, after_s)


#: slots a job may take in a row when it keeps waking too late for them (see `_take_slot`)
MAX_SLOTS = 5
#: each process lets at most rate x GATE_S of a sender's jobs ask for a slot at once (see `_clear`)
GATE_S = 0.5

_AMBIGUOUS = "the provider may have accepted the message; not resent (policy: unknown)"
_AMBIGUOUS_REDELIVERY = ErrorInfo(
    "ambiguous_send", "an earlier attempt may have reached the provider; not resent (policy: unknown)"
)


_OUTCOMES: dict[type[GatewayError], str] = {
    Permanent: "permanent",
    Ambiguous: "ambiguous",
    RateLimited: "rate_limited",
}


def _observe(gateway: str, started: float, outcome: str) -> None:
    metrics.PROVIDER_LATENCY.labels(gateway).observe(time.perf_counter() - started)
    metrics.PROVIDER_REQUESTS.labels(gateway, outcome).inc()


def _best_effort(body: bytes) -> dict[str, str]:
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, str) and k in ("id", "sender", "account", "to")}


async def _until_done(write: Any, attempts: int = 30) -> Any:
    """Bookkeeping after a provider call must not be lost to a short Redis outage: retry for ~30 s."""
    for i in range(attempts):
        try:
            return await write()
        except (RedisError, OSError):
            if i == attempts - 1:
                raise
            await asyncio.sleep(1.0)
    return None
