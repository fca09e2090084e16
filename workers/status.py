"""The status worker: scheduled rechecks ("Await delivery") through one monotonic state machine.

A recheck arrives `await_delivery_s` after acceptance (through the delay tiers), looks the message up at
the provider (through the sender's rate limit: it is a request too), and either records the final state
— at most once per job, `Ledger.finish` is a compare-and-set — or schedules the next check with backoff,
until the status horizon, where the job ends `unknown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from redis.exceptions import RedisError

from gateways import Gateway, GatewayError, StatusRef, gateway_class
from smsfleet.contracts import ErrorInfo, SendJob, State, encode
from smsfleet.senders import Sender

from .delays import remaining
from .ratelimit import RateLimitWait
from .runtime import Runtime, status_event
from .send import Recheck

__all__ = ["StatusWorker"]

log = structlog.get_logger("smsfleet.workers.status")

_recheck_decoder = msgspec.json.Decoder(Recheck)
MAX_RECHECK_INTERVAL_S = 3600.0


class StatusWorker:
    def __init__(self, rt: Runtime, *, concurrency: int = 50) -> None:
        self.rt = rt
        self.concurrency = concurrency
        self.horizon_s = rt.settings.status_horizon_s
        self._gateways: dict[str, tuple[Sender, Gateway[Any]]] = {}
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self.in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._queue = await self.rt.consume_channel.get_queue(self.rt.names.status_queue, ensure=False)
        self._tag = await self._queue.consume(self._on_message)
        log.info("worker.started", role="status")

    async def drain(self, grace_s: float) -> None:
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=grace_s)

    async def _on_message(self, msg: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        try:
            wait = remaining(msg)
            if wait >= 1.0:
                await self.rt.delayer.delay(
                    msg.body, routing_key=msg.routing_key or "", target="internal", seconds=wait
                )
                await msg.ack()
                return
            await asyncio.sleep(wait)
            if (msg.routing_key or "").startswith("recheck."):
                await self.recheck(_recheck_decoder.decode(msg.body))
            await msg.ack()
        except msgspec.DecodeError as exc:
            await self.rt.dead_letter(msg.body, "malformed", str(exc), msg.routing_key or "")
            await msg.ack()
        except (RedisError, OSError) as exc:
            log.warning("worker.redis_unavailable", role="status", error=str(exc))
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
        except Exception:
            log.exception("recheck.crashed")
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)
        finally:
            self.in_flight.discard(task)

    def _gateway(self, sender: Sender) -> Gateway[Any]:
        cached = self._gateways.get(sender.id)
        if cached is None or cached[0] is not sender:
            cached = self._gateways[sender.id] = (
                sender,
                gateway_class(sender.gateway)(sender.settings, self.rt.http),
            )
        return cached[1]

    async def recheck(self, check: Recheck) -> None:
        record = await self.rt.ledger.get(check.job_id)
        if not record or "job" not in record:
            return
        job = msgspec.json.decode(record["job"], type=SendJob)
        if record.get("phase") == "final":
            if record.get("emitted") == "0":  # finished, but the event was not confirmed: publish it again
                await self._emit(job, record, State(record["state"]), None)
            return
        sender = self.rt.senders.get(check.sender)
        bound = log.bind(job_id=job.id, sender=check.sender, gateway=check.gateway, attempt=check.attempt)
        if sender is None:
            await self._finish(job, record, State.UNKNOWN, ErrorInfo("unknown_sender", "the sender was deleted"))
            return
        gateway = self._gateway(sender)
        rate = sender.rate_limit or self.rt.settings.default_rates.get(sender.gateway) or gateway.default_rate
        try:
            await self.rt.limiter.wait(sender.id, rate, max_wait=5.0)
            pid = (record.get("pid") or "").split(",")[0] or None
            report = await gateway.status(StatusRef(job_id=job.id, provider_message_id=pid, to=job.to))
        except (GatewayError, RateLimitWait) as exc:
            bound.info("recheck.failed", error=str(exc))
            report = None
        if report is not None and report.state is not None:
            await self._finish(job, record, report.state, report.error)
            bound.info("recheck.final", state=report.state)
            return
        age = time.time() - check.accepted_at
        if age >= self.horizon_s:
            error = ErrorInfo("no_final_report", f"no final status within {self.horizon_s:g} s")
            await self._finish(job, record, State.UNKNOWN, error)
            bound.info("recheck.horizon")
            return
        interval = min(gateway.await_delivery_s * 2**check.attempt, MAX_RECHECK_INTERVAL_S, self.horizon_s - age)
        following = msgspec.structs.replace(check, attempt=check.attempt + 1)
        await self.rt.delayer.delay(
            encode(following),
            routing_key=f"recheck.{check.gateway}",
            target="internal",
            seconds=max(interval, 1.0),
        )

    async def _finish(self, job: SendJob, record: dict[str, str], state: State, error: ErrorInfo | None) -> None:
        if not await self.rt.ledger.finish(job.id, state):
            return  # finished already (a report or another recheck got there first)
        await self._emit(job, record, state, error)

    async def _emit(self, job: SendJob, record: dict[str, str], state: State, error: ErrorInfo | None) -> None:
        pid = (record.get("pid") or "").split(",")[0] or None
        parts = int(record.get("parts") or 0)
        attempt = int(record.get("attempt") or 1)
        await self.rt.emit(status_event(job, state, attempt=attempt, parts=parts, provider_message_id=pid, error=error))
        await self.rt.ledger.redis.hset(self.rt.ledger.key(job.id), "emitted", "1")
