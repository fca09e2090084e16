"""The send worker: consumes `<ns>.send.<gateway>` and takes each job to a provider, or to a final state.

For each delivery, in order (DESIGN §7.1): wait out a delay -> decode -> the routing key's sender is the
body's -> sender of this gateway -> checks (account, expiry, suppression, verified phone and caller ID,
segments) -> idempotency claim -> fleet-wide rate limit -> provider call -> ledger and event -> ack;
suppression, claim and rate-limit slot are one Redis script (`admission`). Every outcome is published (with
confirms) before the delivery is acknowledged, so a crash at any point leads to a redelivery, never to a
loss; the ledger makes the redelivery safe.

A send that may have reached the provider without our knowing (a timeout after the request was written, a
reset, a worker killed mid-call) is never blindly repeated: the job is first looked up at the provider by
what we sent (`Gateway.find`) — found, it is adopted as accepted; not found, it is sent — and where the
provider has no such lookup the `ambiguous` policy decides. Every ledger write of a delivery is a
compare-and-set on its claim, and an event is published only when its write took effect: of two deliveries
of one job, only the one holding the claim reports.

Kinds whose provider takes several messages in one request (`Gateway.max_batch` > 1) go through a batching
stage after the claim (`batching.Batch`): the cleared jobs of one sender leave together, each with its own
outcome, record, event and acknowledgement; where the provider limits requests rather than messages
(`Gateway.rate_per`), a job is claimed without a slot and each request takes one.

Nothing waits unacknowledged: retries, long rate-limit waits and status rechecks go through delay tiers.
The worker never names a provider: what differs between gateways lives in the adapter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import math
import time
import uuid
import weakref
from typing import Any

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage
from redis.exceptions import RedisError

from gateways import Ambiguous, Gateway, GatewayError, Outgoing, Permanent, RateLimited, Receipt, gateway_class
from smsfleet import metrics
from smsfleet.contracts import ErrorInfo, InvalidJob, SendJob, State, decode_job, status_event
from smsfleet.segments import count
from smsfleet.senders import Sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.topology import HEADER_ATTEMPT

from .admission import Outcome
from .batching import Batch, NoSlot
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
from .consumer import QueueConsumer, ack, nack
from .delays import attempt_of, backoff, remaining, tier_for
from .ratelimit import RateLimitWait, sleep_until
from .rechecks import RecheckBatcher
from .runtime import Runtime

__all__ = ["SendPolicy", "SendWorker", "sender_rate"]

log = structlog.get_logger("smsfleet.workers.send")


class SendPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How the send worker behaves; defaults are what the README's guarantees table states."""

    concurrency: int = 100
    #: attempts before a job with transient errors ends `failed`
    max_attempts: int = 6
    #: a rate-limit wait longer than this goes through a delay tier instead of being slept
    max_rate_wait_s: float = 2.0
    #: after an ambiguous send that the provider cannot look up: `unknown` (never resend) or `resend`
    ambiguous: str = "unknown"
    provider_timeout_s: float = 10.0
    #: how long a job cleared to go waits for others of its sender to share its request (0: no batching);
    #: at most a third of the rate limiter's margin (see `batching`)
    linger_s: float = 0.005
    #: the most messages in one request, below the kind's own maximum (`Gateway.max_batch`)
    batch_max: int = 500

    @property
    def lease_s(self) -> float:
        """How long a delivery in `calling` is presumed alive: its provider call, and time to record it."""
        return self.provider_timeout_s + LEASE_MARGIN_S


@dataclasses.dataclass
class Delivery:
    """One delivery of a job, as far as it got: what every step of the send path needs."""

    msg: AbstractIncomingMessage
    job: SendJob
    sender: Sender
    gateway: Gateway[Any]
    attempt: int
    rate: float  # of the sender, within its provider account's limit (`sender_rate`)
    text: str  # what is sent: the job's text, its links shortened where the sender asks for that
    owner: str = ""  # the claim this delivery holds in the ledger
    ref: str = ""  # the id the provider sees, for `numeric_ref` kinds
    calling: bool = False  # the record is in `calling`: the provider may be called
    called: bool = False  # the provider call began: the message may have reached it

    def outgoing(self, callback_url: str | None) -> Outgoing:
        job = self.job
        return Outgoing(
            job_id=job.id, to=job.to, text=self.text, originator=job.originator, valid_until=job.valid_until,
            parts=count(self.text).parts, callback_url=callback_url, ref=self.ref,
        )  # fmt: skip


#: what a batched job's request gave it: its receipt or error; None, not sent (settled already); or what
#: moving its claim to `calling` raised
Sent = Receipt | GatewayError | BaseException | None


class SendWorker(QueueConsumer):
    role = "send"
    target = "send"

    def __init__(self, rt: Runtime, kind: str, policy: SendPolicy | None = None) -> None:
        super().__init__(rt, rt.names.send_queue(kind))
        self.kind = kind
        self.policy = policy or SendPolicy()
        self.gateway_cls = gateway_class(kind)
        self._gateways: dict[str, tuple[Sender, Gateway[Any]]] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._batches: weakref.WeakKeyDictionary[Gateway[Any], Batch[Delivery, Sent]] = weakref.WeakKeyDictionary()
        self._unreleased: list[tuple[str, str, bool]] = []  # claims to give up once Redis answers (`_release`)
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
        # the metrics every job touches, their labels looked up once (a lookup costs as much as the update)
        self._consumed = metrics.CONSUMED.labels(kind)
        self._oldest = metrics.QUEUE_OLDEST_AGE.labels(self.queue_name)
        self._rate_wait = metrics.RATE_LIMIT_WAIT.labels(kind)
        self._latency = metrics.PROVIDER_LATENCY.labels(kind)
        outcomes = (*_OUTCOMES.values(), "transient", "ok")
        self._requests = {outcome: metrics.PROVIDER_REQUESTS.labels(kind, outcome) for outcome in outcomes}

    def received(self, msg: AbstractIncomingMessage) -> None:
        self._consumed.inc()
        if msg.timestamp is not None:
            age = time.time() - msg.timestamp.timestamp()
            self._oldest.set(max(0.0, age))

    # -- one job -----------------------------------------------------------------------------------

    async def handle(self, msg: AbstractIncomingMessage) -> None:
        d = await self._admit(msg)
        if d is None:
            return
        batch = self._batch(d)
        coming = batch is not None
        if batch is not None:
            batch.coming += 1
        try:
            if await self._clear(d):
                if batch is None:
                    await self._call(d)
                else:
                    batch.coming, coming = batch.coming - 1, False
                    await self._batched(d, batch)
        except BaseException:  # also cancelled: a drain past its grace
            if d.owner:  # a failure after the claim (or with its reply lost): the next delivery takes over at once
                await self._release(d)
            raise
        finally:
            if batch is not None and coming:
                batch.coming -= 1

    async def _release(self, d: Delivery) -> None:
        """Give up the claim of a delivery that failed before it settled its job (`Ledger.release`): unsent, the
        next delivery sends at once; else it reconciles at once, rather than wait out the lease (30 s). With
        Redis away (the usual cause) that is done once Redis answers again, before consuming resumes (`recover`).
        Left undone, a claim whose admission reply was lost in an outage would hold its job for the lease, and
        then be taken for an ambiguous send: `unknown` where the provider cannot be asked, though never sent."""
        try:
            await asyncio.shield(self.rt.ledger.release(d.job.id, d.owner, called=d.called))
        except Exception:
            self._unreleased.append((d.job.id, d.owner, d.called))

    async def recover(self) -> None:
        while self._unreleased:
            job_id, owner, called = self._unreleased[0]
            await self.rt.ledger.release(job_id, owner, called=called)
            self._unreleased.pop(0)

    async def _admit(self, msg: AbstractIncomingMessage) -> Delivery | None:  # noqa: PLR0911 - one return per way a job is settled early
        """Delay, decode, routing key, sender and checks. Returns what to send, or None when settled."""
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
        # the routing key is what broker permissions can restrict: a body may not send as another sender
        routed_to = (msg.routing_key or "").partition(".")[2]
        if routed_to and routed_to != job.sender:
            reason = f"routed to sender {routed_to!r}, but the job names {job.sender!r}"
            await self._invalid(msg, InvalidJob("sender_mismatch", reason), job)
            return None
        sender = self.rt.senders.get(job.sender)
        if sender is None:
            await self._refuse(msg, job, "unknown_sender", f"no sender {job.sender!r} in the registry")
            return None
        if sender.gateway != self.kind:  # the sender moved to another gateway since the job was published
            key = self.rt.names.send_key(sender.gateway, sender.id)
            await self.rt.publish(
                self.rt.names.send_exchange, msg.body, key, headers=dict(msg.headers or {}), message_id=job.id
            )
            await ack(msg)
            log.info("job.rerouted", job_id=job.id, sender=sender.id, to_gateway=sender.gateway)
            return None
        gateway = self._gateway(sender)
        sendable = await self.rt.shortener.shorten(job) if sender.shorten_links else job  # parts counted on this
        rate = sender_rate(sender, gateway, self.rt.settings)
        d = Delivery(msg, job, sender, gateway, attempt, rate, sendable.text)
        if await run_checks(self.local_checks, sendable, sender) is not None:
            verdict = await run_checks(self.checks, sendable, sender)  # all of them, in order: the first verdict wins
            assert verdict is not None
            await self._refused(d, verdict)
            return None
        return d

    async def _refused(self, d: Delivery, verdict: CheckVerdict) -> None:
        await self.rt.emit(status_event(d.job, verdict.state, attempt=d.attempt, error=verdict.error), self.kind)
        if verdict.state is State.SUPPRESSED:
            metrics.SUPPRESSION_HITS.labels(self.kind).inc()
        await ack(d.msg)
        log.info("job.refused", job_id=d.job.id, sender=d.sender.id, state=verdict.state, code=verdict.code)

    async def _clear(self, d: Delivery) -> bool:
        """Suppression, idempotency claim and a slot of the fleet-wide rate limit. True: call the provider now.

        At most rate x GATE_S of this process's jobs for one sender ask Redis for a slot at once; the others
        wait their turn here (up to `max_rate_wait_s`), rather than all ask Redis and bounce through delay
        tiers. A job past that goes through a delay tier.
        """
        if d.gateway.rate_per == "request" and self._batch(d) is not None:
            return await self._claim(d, slot=False)  # the request takes the slot (`_request_slot`)
        gate = self._gates.get(d.gateway.account)
        if gate is None:
            gate = self._gates[d.gateway.account] = asyncio.Semaphore(max(1, math.ceil(d.rate * GATE_S)))
        if gate.locked():
            try:
                async with asyncio.timeout(self.policy.max_rate_wait_s):
                    await gate.acquire()
            except TimeoutError:
                await self._redelay(d.msg, 1.0, d.attempt)
                return False
        else:
            await gate.acquire()  # free: returns at once, without the cost of a timeout
        try:
            return await self._claim(d)
        finally:
            gate.release()

    async def _claim(self, d: Delivery, *, slot: bool = True) -> bool:
        """The admission script (see `admission`) and what each of its verdicts means for this delivery.
        `slot=False`: claimed without a rate-limit slot, for a batch whose request takes one."""
        if self.draining:
            await nack(d.msg)
            return False
        d.owner = next(self._owners)
        admission = await self.rt.admitter.admit(
            d.job, d.owner, d.rate, account=d.gateway.account, numeric_ref=d.gateway.numeric_ref,
            max_wait=self.policy.max_rate_wait_s, lease_s=self.policy.lease_s, slot=slot,
        )  # fmt: skip
        d.ref = admission.ref
        match admission.outcome:
            case Outcome.CALL:
                self._rate_wait.observe(0.0)
                d.calling = True
                return True
            case Outcome.CLAIMED if not slot:
                return True
            case Outcome.CLAIMED:
                return await self._take_slot(d, first=admission.wait_s)
            case Outcome.RETRY:
                await self._redelay(d.msg, admission.wait_s, d.attempt)
            case Outcome.BUSY:  # another delivery of this job is at the provider: see how it ended, later
                await self._redelay(d.msg, max(admission.wait_s, 1.0), d.attempt)
                log.info("job.busy", job_id=d.job.id, wait_s=round(admission.wait_s, 1))
            case Outcome.SUPPRESSED:
                await self._refused(d, SUPPRESSED)
            case Outcome.REUSED:
                reason = "the id was used before for another job (sender, account, number or text differ)"
                await self._invalid(d.msg, InvalidJob("id_reused", reason), d.job)
            case Outcome.CALLING:
                return await self._reconcile(d)
            case Outcome.ACCEPTED | Outcome.FINAL:
                await self._replay(d.job)
                if admission.outcome is Outcome.ACCEPTED:  # the holder may have died before scheduling the recheck
                    await self._recheck(d.job, d.gateway)
                await ack(d.msg)
                log.info("job.duplicate", job_id=d.job.id, state=admission.state)
        return False

    async def _reconcile(self, d: Delivery) -> bool:
        """An earlier attempt may have reached the provider. Look the message up where the provider can: found,
        it is adopted; not found, it is sent (True). Where it cannot, the `ambiguous` policy decides."""
        if not d.gateway.can_find:
            if self.policy.ambiguous == "resend":
                return await self._take_slot(d, takeover=True)
            await self._final(d, State.UNKNOWN, 0, _AMBIGUOUS_REDELIVERY)
            return False
        try:
            await self.rt.limiter.wait(d.gateway.account, d.rate, max_wait=self.policy.max_rate_wait_s)  # a request too
            found = await d.gateway.find(d.outgoing(self._callback_url(d.sender)))
        except (GatewayError, RateLimitWait) as exc:
            log.info("sms.reconcile_failed", job_id=d.job.id, sender=d.sender.id, error=str(exc), attempt=d.attempt)
            await self._reconcile_later(d, getattr(exc, "code", "rate_limited"))
            return False
        if found is None:
            log.info("sms.not_found_resent", job_id=d.job.id, sender=d.sender.id, attempt=d.attempt)
            return await self._take_slot(d, takeover=True)
        log.info("sms.reconciled", job_id=d.job.id, sender=d.sender.id, provider_message_id=found.provider_message_id)
        await self._accepted(d, found)
        return False

    async def _reconcile_later(self, d: Delivery, code: str) -> None:
        """Keep the claim in `calling` and come back when it runs out, to look the message up then."""
        if d.attempt >= self.policy.max_attempts:
            error = ErrorInfo("ambiguous_send", f"the provider could not say whether it took the message ({code})")
            await self._final(d, State.UNKNOWN, 0, error)
            return
        wait = backoff(d.attempt)
        if await _until_done(lambda: self.rt.ledger.hold(d.job.id, d.owner, wait)):
            await self._redelay(d.msg, wait, d.attempt + 1)
        else:  # another delivery took the job over meanwhile: it reports
            await ack(d.msg)

    async def _take_slot(self, d: Delivery, *, first: float | None = None, takeover: bool = False) -> bool:
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
                    limiter, wait = self.rt.limiter, self.policy.max_rate_wait_s
                    delay = await limiter.acquire(d.gateway.account, d.rate, max_wait=wait)
                except RateLimitWait as exc:
                    await self._give_up_claim(d, exc.retry_after)
                    return False
            slot = time.monotonic() + delay
            self._rate_wait.observe(delay)
            await sleep_until(slot)
            if not calling:
                if self.draining:
                    await self.rt.ledger.retry(d.job.id, d.owner)
                    await nack(d.msg)
                    return False
                if not await self.rt.ledger.begin_call(d.job.id, d.owner, self.policy.lease_s, takeover=takeover):
                    await ack(d.msg)  # another delivery of the same job holds the claim now
                    return False
                calling = d.calling = True
            if self._on_time(slot):
                return True
            delay = None
        log.warning("rate_limit.late", job_id=d.job.id, sender=d.sender.id)
        await self._give_up_claim(d, 1.0)  # nothing was sent
        return False

    def _on_time(self, slot: float) -> bool:
        """Whether it is at most a third of the limiter's margin past `slot`: late enough for a send still to keep
        every 1-s window within the rate (see `_take_slot`)."""
        return time.monotonic() - slot <= self.rt.limiter.margin / 3

    async def _give_up_claim(self, d: Delivery, wait: float) -> None:
        """Nothing was sent: the claim goes back (unless another delivery holds it now), the job comes back."""
        await self.rt.ledger.retry(d.job.id, d.owner)
        await self._redelay(d.msg, wait, d.attempt)

    async def _call(self, d: Delivery) -> None:
        outgoing = d.outgoing(self._callback_url(d.sender))
        started = time.perf_counter()
        d.called = True
        try:
            receipt = await d.gateway.send(outgoing)
        except GatewayError as exc:
            self._observe(started, exc)
            await self._failed_call(d, outgoing.parts, exc)
            return
        self._observe(started, receipt)
        await self._accepted(d, receipt)

    # -- batches -----------------------------------------------------------------------------------

    def _batch(self, d: Delivery) -> Batch[Delivery, Sent] | None:
        """The batch of the delivery's sender, for kinds that batch (None: one request per job)."""
        size = min(d.gateway.max_batch, self.policy.batch_max)
        if size < 2 or self.policy.linger_s <= 0:
            return None
        batch = self._batches.get(d.gateway)
        if batch is None:
            per_request = d.gateway.rate_per == "request"
            # a job that took its own slot may leave at most a third of the limiter's margin after it
            linger = self.policy.linger_s if per_request else min(self.policy.linger_s, self.rt.limiter.margin / 3)
            batch = self._batches[d.gateway] = Batch(
                self._send_batch, size=size, linger_s=linger,
                slot=functools.partial(self._request_slot, d.gateway, d.rate) if per_request else None,
            )  # fmt: skip
        return batch

    async def _request_slot(self, gateway: Gateway[Any], rate: float) -> float | None:
        """Sleep until the sender's next request slot, and return its time; None: none within `max_rate_wait_s`."""
        try:
            delay = await self.rt.limiter.acquire(gateway.account, rate, max_wait=self.policy.max_rate_wait_s)
        except RateLimitWait:
            return None
        self._rate_wait.observe(delay)
        slot = time.monotonic() + delay
        await sleep_until(slot)
        return slot

    async def _in_time(self, d: Delivery, slot: float) -> bool:
        """Whether a request whose slot was `slot` leaves in time for it: within a third of the limiter's margin,
        as `_take_slot` holds a job to. One that is later (a busy event loop, a slow Redis reply to its jobs'
        `begin_call`) takes the next slot instead, rather than go out in a burst with the requests after it;
        False: no slot soon enough."""
        for _ in range(MAX_SLOTS):
            if self._on_time(slot):
                return True
            next_slot = await self._request_slot(d.gateway, d.rate)
            if next_slot is None:
                return False
            slot = next_slot
        log.warning("rate_limit.late", sender=d.sender.id)
        return False

    async def _batched(self, d: Delivery, batch: Batch[Delivery, Sent]) -> None:
        """Send the job in its sender's next request, then record, report and acknowledge its own outcome."""
        try:
            result = await batch.add(d)
        except NoSlot as exc:  # no request slot soon enough
            result = exc
        if isinstance(result, NoSlot):  # (or none in time after its jobs began): nothing was sent, it comes back
            await self._give_up_claim(d, 1.0)
            return
        if isinstance(result, Receipt):
            await self._accepted(d, result)
        elif isinstance(result, GatewayError):
            await self._failed_call(d, count(d.text).parts, result)
        elif result is not None:  # moving its claim to `calling` failed (Redis): the consumer handles it
            raise result

    async def _send_batch(self, batch: list[Delivery], slot: float | None) -> list[Sent]:
        """One request for the batch's jobs, at its request `slot` (kinds limited per request); per job, its
        receipt or error, or None when it was not sent (its claim moved on: settled already), or what moving its
        claim to `calling` raised, or `NoSlot` (none in time: not sent)."""
        began: list[bool | BaseException] = [True] * len(batch)
        if waiting := [i for i, d in enumerate(batch) if not d.calling]:  # claimed without a slot (`_clear`)
            outcomes = await asyncio.gather(*(self._begin_call(batch[i]) for i in waiting), return_exceptions=True)
            for i, outcome in zip(waiting, outcomes, strict=True):
                began[i] = outcome
        going = [d for d, b in zip(batch, began, strict=True) if b is True]
        if not going or (slot is not None and not await self._in_time(going[0], slot)):
            return [NoSlot() if b is True else b if isinstance(b, BaseException) else None for b in began]
        callback = self._callback_url(going[0].sender)
        started = time.perf_counter()
        for d in going:
            d.called = True
        results = iter(await going[0].gateway.send_many([d.outgoing(callback) for d in going]))
        metrics.BATCH_SIZE.labels(self.kind).observe(len(going))
        sent: list[Sent] = []
        for b in began:
            if b is True:
                result = next(results)
                self._observe(started, result)
                sent.append(result)
            else:
                sent.append(b if isinstance(b, BaseException) else None)
        return sent

    async def _begin_call(self, d: Delivery) -> bool:
        """A job claimed without a slot moves to `calling` as its request goes: True, send it."""
        if self.draining:
            await self.rt.ledger.retry(d.job.id, d.owner)
            await nack(d.msg)
            return False
        if not await self.rt.ledger.begin_call(d.job.id, d.owner, self.policy.lease_s):
            await ack(d.msg)  # another delivery of the same job holds the claim now
            return False
        d.calling = True
        return True

    async def _accepted(self, d: Delivery, receipt: Receipt) -> None:
        """The provider took the message: record it, report it, schedule its status check — if this delivery
        still holds the claim (else the one that took it over does all that)."""
        job, parts = d.job, receipt.parts or count(d.text).parts
        pid = receipt.provider_message_id
        took = await _until_done(
            lambda: self.rt.ledger.accepted(job, d.owner, self.kind, receipt.ids, d.attempt, parts)
        )
        if took:
            event = status_event(job, State.ACCEPTED, attempt=d.attempt, parts=parts, provider_message_id=pid)
            recheck = self._recheck(job, d.gateway)  # published with its batch while the event is
            await self.rt.emit(event, self.kind)
            await recheck
            log.info("sms.sent", job_id=job.id, sender=d.sender.id, provider_message_id=pid, attempt=d.attempt)
        else:
            log.warning("sms.claim_lost", job_id=job.id, sender=d.sender.id, provider_message_id=pid)
        await ack(d.msg)

    # -- outcomes ----------------------------------------------------------------------------------

    def _observe(self, started: float, result: Receipt | GatewayError) -> None:
        self._latency.observe(time.perf_counter() - started)
        outcome = _OUTCOMES.get(type(result), "transient") if isinstance(result, GatewayError) else "ok"
        self._requests[outcome].inc()

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

    async def _final(self, d: Delivery, state: State, parts: int, error: ErrorInfo) -> None:
        """Record a final state under this delivery's claim, and publish it if the write took effect."""
        recorded = await _until_done(lambda: self.rt.ledger.final(d.job, d.owner, state, error.code))
        if recorded:  # else a report finished the job first, or another delivery holds it: theirs stands
            await self.rt.emit(status_event(d.job, state, attempt=d.attempt, parts=parts, error=error), self.kind)
        await ack(d.msg)

    async def _failed_call(self, d: Delivery, parts: int, exc: GatewayError) -> None:
        """The provider did not take the message: rejected, retried, or (ambiguous) reconciled later."""
        if isinstance(exc, Permanent):
            await self._final(d, State.REJECTED, parts, ErrorInfo(exc.code, exc.message))
            log.info("sms.rejected", job_id=d.job.id, sender=d.sender.id, code=exc.code)
        elif isinstance(exc, Ambiguous) and (d.gateway.can_find or self.policy.ambiguous == "resend"):
            log.info("sms.ambiguous", job_id=d.job.id, sender=d.sender.id, code=exc.code, attempt=d.attempt)
            await self._reconcile_later(d, exc.code)
        elif isinstance(exc, Ambiguous):
            await self._final(d, State.UNKNOWN, parts, ErrorInfo(exc.code, _AMBIGUOUS))
        else:  # transient or rate limited
            if isinstance(exc, RateLimited):
                await self.rt.limiter.pause(d.gateway.account, exc.retry_after)
            await self._retry(d, exc)

    async def _retry(self, d: Delivery, exc: GatewayError) -> None:
        if d.attempt >= self.policy.max_attempts:
            error = ErrorInfo(exc.code, f"gave up after {d.attempt} attempts: {exc.message}")
            await self._final(d, State.FAILED, 0, error)
            log.info("sms.failed", job_id=d.job.id, code=exc.code, attempt=d.attempt)
            return
        await _until_done(lambda: self.rt.ledger.retry(d.job.id, d.owner))
        wait = max(backoff(d.attempt), getattr(exc, "retry_after", 0.0))
        await self._redelay(d.msg, wait, d.attempt + 1)
        metrics.RETRIES.labels(self.kind, str(tier_for(wait))).inc()
        log.info("sms.retry_scheduled", job_id=d.job.id, code=exc.code, attempt=d.attempt, wait_s=round(wait, 1))

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
        await ack(msg)

    async def _invalid(self, msg: AbstractIncomingMessage, exc: InvalidJob, job: SendJob | None = None) -> None:
        """A job that is not valid: an `invalid` event, and parked in the dead queue with the reason."""
        if job is None:
            raw = _best_effort(msg.body)
            job = SendJob(
                id=raw.get("id") or msg.message_id or "?", sender=raw.get("sender") or "?",
                account=raw.get("account") or "?", to=raw.get("to") or "?", text="?",
            )  # fmt: skip
        await self.rt.emit(status_event(job, State.INVALID, attempt=attempt_of(msg), error=exc.info), self.kind)
        await self.rt.dead_letter(msg.body, exc.code, exc.message, msg.routing_key or "", msg.message_id)
        await ack(msg)
        log.info("job.invalid", job_id=job.id, code=exc.code)

    async def _refuse(self, msg: AbstractIncomingMessage, job: SendJob, code: str, reason: str) -> None:
        """A job that names something we do not have: `rejected`, and parked in the dead queue."""
        error = ErrorInfo(code, reason)
        await self.rt.emit(status_event(job, State.REJECTED, attempt=attempt_of(msg), error=error), self.kind)
        await self.rt.dead_letter(msg.body, code, reason, msg.routing_key or "", msg.message_id)
        await ack(msg)
        log.info("job.rejected", job_id=job.id, code=code)

    async def _replay(self, job: SendJob) -> None:
        """A job the ledger already finished or handed over: publish its last event again (at least once)."""
        record = await self.rt.ledger.record(job.id)
        state = State(record.state or State.ACCEPTED)
        event = status_event(job, state, attempt=record.attempt, provider_message_id=record.provider_message_id)
        await self.rt.emit(event, self.kind, replay=True)

    def _recheck(self, job: SendJob, gateway: Gateway[Any]) -> asyncio.Future[None]:
        """Schedule the first status check: after `await_delivery_s`, or at the horizon for push-only kinds
        (batched: see `rechecks`). The future is done when the message that carries it is confirmed."""
        after_s = gateway.await_delivery_s if gateway.has_status else self.rt.settings.status_horizon_s
        return self.rechecks.schedule(job.sender, job.id, after_s)


def sender_rate(sender: Sender, gateway: Gateway[Any], settings: Settings) -> float:
    """Requests a second for `sender`, on the bucket of its provider account (`Gateway.account`), which senders
    sharing the account share. Where configuration sets the account's limit (Play Mobile's
    PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC), a sender's `rate_limit` may lower it, never raise it; elsewhere it
    replaces the kind's default (those are guesses, not a provider's documented limit)."""
    limit = settings.default_rates.get(gateway.kind)
    rate = sender.rate_limit or limit or gateway.default_rate
    return min(rate, limit) if limit else rate


#: slots a job may take in a row when it keeps waking too late for them (see `_take_slot`)
MAX_SLOTS = 5
#: each process lets at most rate x GATE_S of a sender's jobs ask for a slot at once (see `_clear`)
GATE_S = 0.5
#: a `calling` claim outlives its provider call by this much (recording the reply, a short Redis blink)
LEASE_MARGIN_S = 20.0

_AMBIGUOUS = "the provider may have accepted the message; not resent (policy: unknown)"
_AMBIGUOUS_REDELIVERY = ErrorInfo(
    "ambiguous_send", "an earlier attempt may have reached the provider; not resent (policy: unknown)"
)


_OUTCOMES: dict[type[GatewayError], str] = {
    Permanent: "permanent",
    Ambiguous: "ambiguous",
    RateLimited: "rate_limited",
}


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
