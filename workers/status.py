"""The status worker: rechecks ("Await delivery") and pushed reports, through one monotonic state machine.

A recheck arrives `await_delivery_s` after acceptance (through the delay tiers), looks the message up at
the provider (through the sender's rate limit: it is a request too), and either records the final state
— at most once per job, `Ledger.finish` is a compare-and-set — or schedules the next check with backoff,
until the status horizon, where the job ends `unknown`. For push-only gateways the one recheck comes at
the horizon, and only ends a job that no report finished.

A pushed report (from the receiver) is matched to its job by the provider id map; one that arrives before
the send reply was stored is retried through the delay tiers a few times, then counted unmatched. Reports
that are not final, late, duplicated or out of order change nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage
from redis.exceptions import RedisError

from gateways import Gateway, GatewayError, StatusRef, gateway_class
from smsfleet import metrics
from smsfleet.contracts import ErrorInfo, ReportMessage, SendJob, State, encode
from smsfleet.senders import Sender

from .consumer import QueueConsumer
from .delays import remaining
from .ratelimit import RateLimitWait
from .rechecks import Recheck
from .runtime import Runtime, status_event

__all__ = ["StatusWorker"]

log = structlog.get_logger("smsfleet.workers.status")

_recheck_decoder = msgspec.json.Decoder(Recheck)
_report_decoder = msgspec.json.Decoder(ReportMessage)
#: a report that names no known message is retried after 1, 2, 4, 8 and 16 s (the send reply may not be
#: stored yet: the early-report race), then counted as unmatched
MATCH_ATTEMPTS = 6
_FAILED_FIRST = (State.REJECTED, State.UNDELIVERED, State.EXPIRED)
MAX_RECHECK_INTERVAL_S = 3600.0
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
            return
        await asyncio.sleep(wait)
        key = msg.routing_key or ""
        if key.startswith("recheck."):
            await self.recheck(_recheck_decoder.decode(msg.body))
        elif key.startswith("report."):
            await self.report(_report_decoder.decode(msg.body), key)

    def _gateway(self, sender: Sender) -> Gateway[Any]:
        cached = self._gateways.get(sender.id)
        if cached is None or cached[0] is not sender:
            cached = self._gateways[sender.id] = (
                sender,
                gateway_class(sender.gateway)(sender.settings, self.rt.http),
            )
        return cached[1]

    async def recheck(self, check: Recheck) -> None:
        """Look every job of the batch up; the ones still pending go on together to their next check."""
        sender = self.rt.senders.get(check.sender)
        records = await self.rt.ledger.get_many(check.job_ids)
        lookups = asyncio.Semaphore(RECHECK_CONCURRENCY)

        async def one(job_id: str, record: dict[str, str]) -> bool:
            async with lookups:
                try:
                    return await self._recheck(check, sender, record)
                except (RedisError, OSError):
                    raise  # the whole batch comes back once Redis does
                except Exception:  # a bug with one job must not cost the others their rechecks
                    log.exception("recheck.crashed", job_id=job_id, gateway=check.gateway)
                    return True

        pending = await asyncio.gather(*(one(j, r) for j, r in zip(check.job_ids, records, strict=True)))
        job_ids = tuple(j for j, p in zip(check.job_ids, pending, strict=True) if p)
        if not job_ids or sender is None:
            return
        gateway = self._gateway(sender)
        age = time.time() - check.accepted_at
        interval = min(gateway.await_delivery_s * 2**check.attempt, MAX_RECHECK_INTERVAL_S, self.horizon_s - age)
        if not gateway.has_status:  # push-only: nothing to ask, only the horizon to keep
            interval = self.horizon_s - age
        following = msgspec.structs.replace(check, job_ids=job_ids, attempt=check.attempt + 1)
        await self.rt.delayer.delay(
            encode(following),
            routing_key=f"recheck.{check.gateway}",
            target="internal",
            seconds=max(interval, 1.0),
        )

    async def _recheck(self, check: Recheck, sender: Sender | None, record: dict[str, str]) -> bool:
        """One job of a recheck batch. True: still pending, check it again later."""
        if "job" not in record:
            return False
        job = msgspec.json.decode(record["job"], type=SendJob)
        if record.get("phase") == "final":
            if record.get("emitted") == "0":  # finished, but the event was not confirmed: publish it again
                await self._emit(job, record, State(record["state"]), None)
            return False
        bound = log.bind(job_id=job.id, sender=check.sender, gateway=check.gateway, attempt=check.attempt)
        if sender is None:
            error = ErrorInfo("unknown_sender", "the sender was deleted")
            await self._finish(job, record, State.UNKNOWN, error, "poll")
            return False
        gateway = self._gateway(sender)
        report = await self._lookup(gateway, sender, job, record) if gateway.has_status else None
        if report is not None and report.state is not None and report.state.final:
            await self._finish(job, record, report.state, report.error, "poll")
            bound.info("recheck.final", state=report.state)
            metrics.RECHECKS.labels(check.gateway, "final").inc()
            return False
        if time.time() - check.accepted_at >= self.horizon_s:
            error = ErrorInfo("no_final_report", f"no final status within {self.horizon_s:g} s")
            await self._finish(job, record, State.UNKNOWN, error, "horizon")
            bound.info("recheck.horizon")
            metrics.RECHECKS.labels(check.gateway, "horizon").inc()
            return False
        metrics.RECHECKS.labels(check.gateway, "pending" if report is not None else "failed").inc()
        return True

    async def _lookup(self, gateway: Gateway[Any], sender: Sender, job: SendJob, record: dict[str, str]) -> Any:
        """A status lookup through the sender's rate limit (it is a request too); None when it failed."""
        rate = sender.rate_limit or self.rt.settings.default_rates.get(sender.gateway) or gateway.default_rate
        try:
            await self.rt.limiter.wait(sender.id, rate, max_wait=5.0)
            pids = tuple(p for p in (record.get("pid") or "").split(",") if p)
            ref = StatusRef(job_id=job.id, provider_message_id=pids[0] if pids else None, provider_ids=pids, to=job.to)
            return await gateway.status(ref)
        except (GatewayError, RateLimitWait) as exc:
            log.info("recheck.failed", job_id=job.id, gateway=sender.gateway, error=str(exc))
            return None

    async def report(self, report: ReportMessage, routing_key: str) -> None:
        """A pushed delivery report: match it to its job, then through the same state machine as rechecks."""
        job_id = report.job_id
        if job_id is None and report.provider_message_id:
            job_id = await self.rt.ledger.job_of(report.gateway, report.provider_message_id)
        record = await self.rt.ledger.get(job_id) if job_id else {}
        if report.sender and "job" in record and msgspec.json.decode(record["job"]).get("sender") != report.sender:
            record = {}  # a sender's callback URL only reports on that sender's jobs
        if "job" not in record:
            if report.attempt < MATCH_ATTEMPTS:
                later = msgspec.structs.replace(report, attempt=report.attempt + 1)
                await self.rt.delayer.delay(
                    encode(later), routing_key=routing_key, target="internal", seconds=2.0 ** (report.attempt - 1)
                )
            else:
                log.warning("report.unmatched", gateway=report.gateway, provider_message_id=report.provider_message_id)
                metrics.REPORTS.labels(report.gateway, "unmatched").inc()
            return
        if report.state is None or not report.state.final or record.get("phase") == "final":
            metrics.REPORTS.labels(report.gateway, "ignored").inc()
            return  # not final, or a late or duplicate report: final states are never overwritten
        metrics.REPORTS.labels(report.gateway, "matched").inc()
        job = msgspec.json.decode(record["job"], type=SendJob)
        state = await self._job_state(job.id, record, report)
        if state is not None:
            await self._finish(job, record, state, report.error, "report")
            log.info("report.final", job_id=job.id, gateway=report.gateway, state=state)

    async def _job_state(self, job_id: str, record: dict[str, str], report: ReportMessage) -> State | None:
        """The job's state after this report. A message sent as several parts, each with its own provider id,
        is delivered when every part is, and fails as soon as one part fails (with that part's state)."""
        assert report.state is not None
        pids = [p for p in record.get("pid", "").split(",") if p]
        if len(pids) <= 1 or report.state in _FAILED_FIRST:
            return report.state
        key = self.rt.ledger.key(job_id)
        await self.rt.ledger.redis.hset(key, f"part:{report.provider_message_id}", report.state.value)
        states = await self.rt.ledger.redis.hmget(key, [f"part:{p}" for p in pids])
        if all(s in (b"delivered", "delivered") for s in states):
            return State.DELIVERED
        return None

    async def _finish(
        self, job: SendJob, record: dict[str, str], state: State, error: ErrorInfo | None, source: str
    ) -> None:
        if not await self.rt.ledger.finish(job.id, state, source, error.code if error else ""):
            return  # finished already (a report or another recheck got there first)
        await self._emit(job, record, state, error)

    async def _emit(self, job: SendJob, record: dict[str, str], state: State, error: ErrorInfo | None) -> None:
        pid = (record.get("pid") or "").split(",")[0] or None
        parts = int(record.get("parts") or 0)
        attempt = int(record.get("attempt") or 1)
        event = status_event(job, state, attempt=attempt, parts=parts, provider_message_id=pid, error=error)
        await self.rt.emit(event, record.get("gateway", ""), replay=record.get("emitted") == "0")
        await self.rt.ledger.redis.hset(self.rt.ledger.key(job.id), "emitted", "1")
