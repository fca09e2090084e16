"""The status worker: rechecks ("Await delivery") and pushed reports, through one monotonic state machine.

A recheck arrives `await_delivery_s` after acceptance (through the delay tiers), looks the message up at
the provider (through the sender's rate limit: it is a request too), and either records the final state
— at most once per job, `Ledger.finish` is a compare-and-set — or schedules the next check with backoff,
until the status horizon, where the job ends `unknown`. For push-only gateways the one recheck comes at
the horizon, and only ends a job that no report finished.

A pushed report (from the receiver) is matched to its job through the provider ids we recorded, scoped by
sender: the sender whose authenticated URL it came to, or, on Rapporto's bare URL, each Rapporto sender in
turn. A job id the report echoes is trusted only on a sender's authenticated URL, and only for that sender's
jobs; a report that names the destination must name the job's. One that arrives before the send reply was
stored is retried through the delay tiers a few times, then counted unmatched. Reports that are not final
change nothing; a final report for a job already final publishes the job's final event again (events are
at least once: a lost one is repaired by the provider's own retry), and never changes its state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiormq
import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage
from redis.exceptions import RedisError

from gateways import Gateway, GatewayError, StatusRef, gateway_class
from smsfleet import metrics
from smsfleet.contracts import ErrorInfo, ReportMessage, SendJob, State, encode, status_event
from smsfleet.senders import Sender

from .consumer import QueueConsumer, ack
from .delays import remaining
from .ledger import Record
from .ratelimit import RateLimitWait, sleep_until
from .rechecks import Recheck
from .runtime import Runtime
from .send import sender_rate

__all__ = ["StatusWorker"]

log = structlog.get_logger("smsfleet.workers.status")

_recheck_decoder = msgspec.json.Decoder(Recheck)
_report_decoder = msgspec.json.Decoder(ReportMessage)
#: a report that names no known message is retried after 1, 2, 4, 8 and 16 s (the send reply may not be
#: stored yet: the early-report race), then counted as unmatched
MATCH_ATTEMPTS = 6
_FAILED_FIRST = (State.REJECTED, State.UNDELIVERED, State.EXPIRED)
MAX_RECHECK_INTERVAL_S = 3600.0
#: what a recheck found for one job: final (or nothing to do), on its way at the provider, no answer
DONE, PENDING, FAILED = "done", "pending", "failed"
#: status lookups of one recheck batch in flight at once (each also waits for the sender's rate limit)
RECHECK_CONCURRENCY = 20


class StatusWorker(QueueConsumer):
    role = "status"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt, rt.names.status_queue)
        self.horizon_s = rt.settings.status_horizon_s
        self._gateways: dict[str, tuple[Sender, Gateway[Any]]] = {}

    async def handle(self, msg: AbstractIncomingMessage) -> None:
        wait = remaining(msg)
        if wait >= 1.0:  # a long wait spans several tiers: on to the next
            await self.rt.delayer.delay(msg.body, routing_key=msg.routing_key or "", target="internal", seconds=wait)
        else:
            await asyncio.sleep(wait)
            key = msg.routing_key or ""
            if key.startswith("recheck."):
                await self.recheck(_recheck_decoder.decode(msg.body))
            elif key.startswith("report."):
                await self.report(_report_decoder.decode(msg.body), key)
        await ack(msg)

    def _gateway(self, sender: Sender) -> Gateway[Any]:
        cached = self._gateways.get(sender.id)
        if cached is None or cached[0] is not sender:
            cached = self._gateways[sender.id] = (
                sender,
                gateway_class(sender.gateway)(sender.settings, self.rt.http),
            )
        return cached[1]

    async def recheck(self, check: Recheck) -> None:
        """Look every job of the batch up. The ones the provider says are still on their way go on together to
        their next check, with backoff; the ones whose lookup failed are asked again at the same pace (a status
        API's bad minute must not push a job's check out by hours); the rate limit bounds both."""
        sender = self.rt.senders.get(check.sender)
        records = await self.rt.ledger.records(check.job_ids)
        lookups = asyncio.Semaphore(RECHECK_CONCURRENCY)

        async def one(job_id: str, record: Record) -> str:
            async with lookups:
                try:
                    return await self._recheck(check, sender, record)
                except (RedisError, aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
                    raise  # Redis away, the broker refusing or losing the event: the whole batch comes back (below)
                except Exception:  # a bug with one job must not cost the others their rechecks
                    log.exception("recheck.crashed", job_id=job_id, gateway=check.gateway)
                    return FAILED

        outcomes = await asyncio.gather(
            *(one(j, r) for j, r in zip(check.job_ids, records, strict=True)), return_exceptions=True
        )
        # once every lookup has ended: the batch is handled again (the consumer's way with a nacked publish, a
        # lost channel or Redis away), and the jobs it finished meanwhile are skipped then (final, event confirmed)
        if failure := next((o for o in outcomes if isinstance(o, BaseException)), None):
            raise failure
        found = [str(o) for o in outcomes]
        if sender is None:
            return
        gateway = self._gateway(sender)
        age = time.time() - check.accepted_at
        for outcome, attempt in ((PENDING, check.attempt + 1), (FAILED, check.attempt)):
            job_ids = tuple(j for j, f in zip(check.job_ids, found, strict=True) if f == outcome)
            if not job_ids:
                continue
            backoff = gateway.await_delivery_s * 2 ** (attempt - 1)
            interval = min(backoff, MAX_RECHECK_INTERVAL_S, self.horizon_s - age)
            if not gateway.has_status:  # push-only: nothing to ask, only the horizon to keep
                interval = self.horizon_s - age
            following = msgspec.structs.replace(check, job_ids=job_ids, attempt=attempt)
            await self.rt.delayer.delay(
                encode(following), routing_key=f"recheck.{check.gateway}", target="internal", seconds=max(interval, 1.0)
            )

    async def _recheck(self, check: Recheck, sender: Sender | None, record: Record) -> str:
        """One job of a recheck batch: DONE, PENDING (the provider says it is on its way) or FAILED (no answer)."""
        job = record.send_job()
        if job is None:
            return DONE
        if record.final:
            if record.emitted == "0":  # finished, but the event was not confirmed: publish it again
                await self._emit(job, record, State(record.state), None)
            return DONE
        bound = log.bind(job_id=job.id, sender=check.sender, gateway=check.gateway, attempt=check.attempt)
        if sender is None:
            error = ErrorInfo("unknown_sender", "the sender was deleted")
            await self._finish(job, record, State.UNKNOWN, error, "poll")
            return DONE
        gateway = self._gateway(sender)
        report = await self._lookup(gateway, sender, job, record) if gateway.has_status else None
        if report is not None and report.state is not None and report.state.final:
            await self._finish(job, record, report.state, report.error, "poll")
            bound.info("recheck.final", state=report.state)
            metrics.RECHECKS.labels(check.gateway, "final").inc()
            return DONE
        if time.time() - check.accepted_at >= self.horizon_s:
            error = ErrorInfo("no_final_report", f"no final status within {self.horizon_s:g} s")
            await self._finish(job, record, State.UNKNOWN, error, "horizon")
            bound.info("recheck.horizon")
            metrics.RECHECKS.labels(check.gateway, "horizon").inc()
            return DONE
        outcome = PENDING if report is not None else FAILED
        metrics.RECHECKS.labels(check.gateway, outcome).inc()
        return outcome

    async def _lookup(self, gateway: Gateway[Any], sender: Sender, job: SendJob, record: Record) -> Any:
        """A status lookup through the sender's rate limit (it is a request too); None when it failed.

        A lookup's slot is also one of the rechecks' share of the sender's rate (`recheck_share`): they never
        spend more than that share, and sends always have the rest."""
        rate, share = sender_rate(sender, gateway, self.rt.settings), self.rt.settings.recheck_share
        try:
            delay = await self.rt.limiter.acquire_within(gateway.account, rate, share, max_wait=5.0)
            await sleep_until(time.monotonic() + delay)
            pids = record.provider_ids
            ref = StatusRef(job_id=job.id, provider_message_id=record.provider_message_id, provider_ids=pids, to=job.to)
            return await gateway.status(ref)
        except (GatewayError, RateLimitWait) as exc:
            log.info("recheck.failed", job_id=job.id, gateway=sender.gateway, error=str(exc))
            return None

    async def report(self, report: ReportMessage, routing_key: str) -> None:
        """A pushed delivery report: match it to its job, then through the same state machine as rechecks."""
        matched = await self._match(report)
        if matched is None:
            if report.attempt < MATCH_ATTEMPTS:
                later = msgspec.structs.replace(report, attempt=report.attempt + 1)
                await self.rt.delayer.delay(
                    encode(later), routing_key=routing_key, target="internal", seconds=2.0 ** (report.attempt - 1)
                )
            else:
                log.warning("report.unmatched", gateway=report.gateway, provider_message_id=report.provider_message_id)
                metrics.REPORTS.labels(report.gateway, "unmatched").inc()
            return
        job, record = matched
        if report.state is None or not report.state.final:
            metrics.REPORTS.labels(report.gateway, "ignored").inc()
            return  # not final: nothing to record
        if record.final:  # late or repeated: the state stands, but its event goes out again (at least once)
            metrics.REPORTS.labels(report.gateway, "ignored").inc()
            await self._emit(job, record, State(record.state), None, replay=True)
            return
        metrics.REPORTS.labels(report.gateway, "matched").inc()
        state = await self._job_state(job.id, record, report)
        if state is not None:
            await self._finish(job, record, state, report.error, "report")
            log.info("report.final", job_id=job.id, gateway=report.gateway, state=state)

    async def _match(self, report: ReportMessage) -> tuple[SendJob, Record] | None:
        """The job a report is about, through the provider ids we recorded, scoped by sender (see the module doc)."""
        if report.sender is not None:
            senders = [report.sender]
        else:  # a URL that names no sender (Rapporto's bare path): any sender of that gateway
            senders = [s.id for s in self.rt.senders.all() if s.gateway == report.gateway]
        job_id = None
        if report.provider_message_id:
            for sender in senders:
                job_id = await self.rt.ledger.job_of(sender, report.provider_message_id)
                if job_id is not None:
                    break
        if job_id is None and report.sender is not None:
            job_id = report.job_id  # the provider's echo of our id, on this sender's authenticated URL only
        if job_id is None:
            return None
        record = await self.rt.ledger.record(job_id)
        job = record.send_job()
        if job is None or job.sender not in senders:
            return None
        if report.to and _digits(report.to) != _digits(job.to):
            return None  # a report for another number is not this job's
        return job, record

    async def _job_state(self, job_id: str, record: Record, report: ReportMessage) -> State | None:
        """The job's state after this report. A message sent as several parts, each with its own provider id,
        is delivered when every part is, and fails as soon as one part fails (with that part's state)."""
        assert report.state is not None
        pids = record.provider_ids
        if len(pids) <= 1 or report.state in _FAILED_FIRST or not report.provider_message_id:
            return report.state
        states = await self.rt.ledger.part_states(job_id, report.provider_message_id, report.state, pids)
        return State.DELIVERED if all(s == State.DELIVERED.value for s in states) else None

    async def _finish(self, job: SendJob, record: Record, state: State, error: ErrorInfo | None, source: str) -> None:
        if await self.rt.ledger.finish(job.id, state, source, error.code if error else ""):
            await self._emit(job, record, state, error)
            return
        # finished already: by a report, another recheck, or another delivery of this one (its channel closed
        # under it, and the broker delivered it again at once), whose event may yet fail with that channel.
        # Until that event is confirmed, this one publishes it too (events are at least once).
        now = await self.rt.ledger.record(job.id)
        if now.final and now.emitted == "0":
            await self._emit(job, now, State(now.state), None)

    async def _emit(
        self, job: SendJob, record: Record, state: State, error: ErrorInfo | None, *, replay: bool = False
    ) -> None:
        event = status_event(
            job, state, attempt=record.attempt, parts=record.parts, provider_message_id=record.provider_message_id,
            error=error,
        )  # fmt: skip
        await self.rt.emit(event, record.gateway, replay=replay or record.emitted == "0")
        if not replay:
            await self.rt.ledger.emitted(job.id)


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())
