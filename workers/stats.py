"""Per-minute job counters in Redis, for the admin's overview: cheap, bounded, expiring.

Every status event a worker publishes goes through `Runtime.emit`, which calls `Stats.count` (in memory,
no I/O: a dict increment). Once a second a background task writes what was counted in ONE transaction
(MULTI/EXEC of HINCRBY + EXPIRE); a flush that fails (Redis away) keeps the counts for the next one, up to
`MAX_PENDING` (minute, sender) cells, the oldest dropped beyond. Nothing here ever blocks or fails a job.

    <ns>:stats:m:<minute>:<sender>   hash   "<gateway>:<field>" -> count in that minute (unix s // 60)   25 h
    <ns>:stats:h:<hour>:<sender>     hash   the same, for that hour (unix s // 3600)                      25 h
    <ns>:stats:failures              list   the last `FAILURES_KEPT` failures, newest first (JSON)        25 h
    <ns>:stats:queues                hash   send queue -> {"age_s", "at"}: age of the message its workers   25 h
                                            last took from its head (the `smsfleet_queue_oldest_message_age_
                                            seconds` gauge this process exports), and when that was read

Fields: every state (`accepted`, `delivered`, ... as events report them), `sent` (the provider answered a
send: accepted, or a provider error) and `provider_error` (the provider refused it, or it failed or stayed
ambiguous: a `rejected`, `failed` or `unknown` event whose code is not one of our own refusals). Replayed
events are not counted. A failure is a final state other than `delivered` and `suppressed`.

A flush whose reply is lost after Redis applied it (a timeout at the wrong moment) is counted again on the
next one: the counters are for looking at, not for billing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from smsfleet import metrics
from smsfleet.contracts import State, StatusEvent
from smsfleet.topology import Names

__all__ = [
    "DAY_HOURS",
    "FAILURES_KEPT",
    "HOUR_MINUTES",
    "MAX_PENDING",
    "TTL_S",
    "Failure",
    "Stats",
    "Window",
    "read_failures",
    "read_queue_ages",
    "read_windows",
]

log = structlog.get_logger("smsfleet.stats")

#: every stats key lives this long after its last write: the overview's 24 h, and an hour to spare
TTL_S = 25 * 3600
FLUSH_S = 1.0
FLUSH_TIMEOUT_S = 2.0
#: (minute, sender) cells kept in memory while Redis is away; beyond, the oldest minutes are dropped
MAX_PENDING = 10_000
FAILURES_KEPT = 50
HOUR_MINUTES = 60
DAY_HOURS = 24
#: our own refusals (checks, registry, status horizon): not the provider's errors
OWN_CODES = frozenset(
    {
        "account_not_assigned",
        "phone_not_verified",
        "caller_id_not_verified",
        "too_many_parts",
        "unknown_sender",
        "sender_mismatch",
        "id_reused",
        "no_final_report",
        "expired",
        "suppressed",
    }
)
_PROVIDER_STATES = frozenset({State.REJECTED, State.FAILED, State.UNKNOWN})
_NOT_FAILURES = frozenset({State.ACCEPTED, State.DELIVERED, State.SUPPRESSED})

#: the bench's switch (tests/bench/throughput.py --no-stats); workers always count
ENABLED = True

Cell = tuple[int, str]  # (minute, sender)


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of `<ns>:stats:failures`."""

    job_id: str
    sender: str
    gateway: str
    state: str
    code: str = ""
    message: str = ""
    at: str = ""


_failure_encoder = msgspec.json.Encoder()
_failure_decoder = msgspec.json.Decoder(Failure)


def minute_key(names: Names, minute: int, sender: str) -> str:
    return names.redis_key("stats", "m", str(minute), sender)


def hour_key(names: Names, hour: int, sender: str) -> str:
    return names.redis_key("stats", "h", str(hour), sender)


def failures_key(names: Names) -> str:
    return names.redis_key("stats", "failures")


def queues_key(names: Names) -> str:
    return names.redis_key("stats", "queues")


class Stats:
    """The counters of one worker process: `count` per event, `start` the flusher, `close` to flush at last."""

    def __init__(self, redis: aioredis.Redis, names: Names, *, enabled: bool | None = None) -> None:
        self.redis = redis
        self.names = names
        self.enabled = ENABLED if enabled is None else enabled
        self.dropped = 0  # cells given up while Redis was away
        self._pending: dict[Cell, dict[str, int]] = {}
        self._failures: deque[Failure] = deque(maxlen=FAILURES_KEPT)
        self._task: asyncio.Task[None] | None = None
        self._queue_prefix = f"{names.ns}.send."
        self._failing = False

    @property
    def pending(self) -> int:
        """(minute, sender) cells counted and not written yet."""
        return len(self._pending)

    # -- the hot path: memory only -----------------------------------------------------------------

    def count(self, event: StatusEvent, gateway: str, *, replay: bool = False) -> None:
        """Count one event (never raises, never waits)."""
        if replay or not self.enabled:
            return
        cell = (int(time.time()) // 60, event.sender)
        fields = self._pending.get(cell)
        if fields is None:
            fields = self._pending[cell] = {}
        state = event.state
        key = f"{gateway}:{state.value}"
        fields[key] = fields.get(key, 0) + 1
        provider_error = state in _PROVIDER_STATES and event.error is not None and event.error.code not in OWN_CODES
        if state is State.ACCEPTED or provider_error:
            key = f"{gateway}:sent"
            fields[key] = fields.get(key, 0) + 1
        if provider_error:
            key = f"{gateway}:provider_error"
            fields[key] = fields.get(key, 0) + 1
        if state not in _NOT_FAILURES:
            error = event.error
            self._failures.append(
                Failure(
                    job_id=event.job_id, sender=event.sender, gateway=gateway, state=state.value,
                    code=error.code if error else "", message=error.message[:300] if error else "",
                    at=event.at.isoformat(),
                )
            )  # fmt: skip

    # -- flushing ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="stats-flush")

    async def close(self) -> None:
        """Stop the flusher and write what is left (once; a failure leaves it unwritten)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()

    async def flush(self) -> bool:
        """Write the counts in one transaction; False (the counts kept for the next flush) when it failed."""
        ages = self._queue_ages()
        if not (self._pending or self._failures or ages):
            return True
        pending, self._pending = self._pending, {}
        failures = list(self._failures)
        self._failures.clear()
        try:
            await asyncio.wait_for(self._write(pending, failures, ages), FLUSH_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            self._keep(pending, failures)
            if not self._failing:
                log.warning("stats.flush_failed", error=type(exc).__name__, kept=len(self._pending))
            self._failing = True
            return False
        self._failing = False
        return True

    async def _write(
        self, pending: Mapping[Cell, Mapping[str, int]], failures: list[Failure], ages: dict[Any, bytes]
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for (minute, sender), fields in pending.items():
                keys = (minute_key(self.names, minute, sender), hour_key(self.names, minute // 60, sender))
                for key in keys:
                    for name, n in fields.items():
                        pipe.hincrby(key, name, n)
                    pipe.expire(key, TTL_S)
            if failures:
                key = failures_key(self.names)
                pipe.lpush(key, *(_failure_encoder.encode(f) for f in failures))
                pipe.ltrim(key, 0, FAILURES_KEPT - 1)
                pipe.expire(key, TTL_S)
            if ages:
                pipe.hset(queues_key(self.names), mapping=ages)
                pipe.expire(queues_key(self.names), TTL_S)
            await pipe.execute()

    def _keep(self, pending: dict[Cell, dict[str, int]], failures: list[Failure]) -> None:
        """Put back what a failed flush did not write (before what was counted meanwhile), within bounds."""
        for cell, fields in self._pending.items():
            into = pending.setdefault(cell, {})
            for name, n in fields.items():
                into[name] = into.get(name, 0) + n
        if len(pending) > MAX_PENDING:
            cells = sorted(pending)  # oldest minute first
            for cell in cells[: len(pending) - MAX_PENDING]:
                del pending[cell]
                self.dropped += 1
        self._pending = pending
        newer = list(self._failures)
        self._failures.clear()
        self._failures.extend(failures + newer)  # the deque keeps the newest FAILURES_KEPT

    def _queue_ages(self) -> dict[Any, bytes]:  # Any: redis-py types keys with an invariant Mapping
        """queue -> JSON {"age_s", "at"}, for this namespace's send queues, from this process's gauge."""
        now = round(time.time(), 1)
        ages = {}
        for family in metrics.QUEUE_OLDEST_AGE.collect():
            for sample in family.samples:
                queue = sample.labels.get("queue", "")
                if queue.startswith(self._queue_prefix):
                    ages[queue] = msgspec.json.encode({"age_s": round(sample.value, 1), "at": now})
        return ages


# -- reading (the admin's overview) -------------------------------------------------------------------


@dataclass
class Window:
    """One sender's counts: per minute over the last hour (oldest first), and summed by gateway and field."""

    minutes: list[dict[str, int]] = field(default_factory=list)  # field -> count, all gateways summed
    hour: dict[str, dict[str, int]] = field(default_factory=dict)  # gateway -> field -> count, last 60 minutes
    day: dict[str, dict[str, int]] = field(default_factory=dict)  # gateway -> field -> count, this hour + 23

    def total(self, span: str, name: str) -> int:
        counts = self.hour if span == "hour" else self.day
        return sum(fields.get(name, 0) for fields in counts.values())


async def read_windows(
    redis: aioredis.Redis, names: Names, senders: Iterable[str], now: float | None = None
) -> dict[str, Window]:
    """The counters of `senders`: their last 60 minutes (this one included) and 24 hours (this one and the 23
    before it), in one round trip (60 + 24 HGETALL a sender)."""
    senders = list(senders)
    minute = int(time.time() if now is None else now) // 60
    minutes = range(minute - HOUR_MINUTES + 1, minute + 1)
    hours = range(minute // 60 - DAY_HOURS + 1, minute // 60 + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for sender in senders:
            for m in minutes:
                pipe.hgetall(minute_key(names, m, sender))
            for h in hours:
                pipe.hgetall(hour_key(names, h, sender))
        replies = iter(await pipe.execute())
    windows = {}
    for sender in senders:
        window = Window()
        for _ in minutes:
            raw = _counts(next(replies))
            window.minutes.append(_by_field(raw))
            _add(window.hour, raw)
        for _ in hours:
            _add(window.day, _counts(next(replies)))
        windows[sender] = window
    return windows


async def read_failures(redis: aioredis.Redis, names: Names, limit: int = FAILURES_KEPT) -> list[Failure]:
    """The last failures, newest first (entries that do not decode are skipped)."""
    failures = []
    for raw in await redis.lrange(failures_key(names), 0, limit - 1):
        with contextlib.suppress(msgspec.DecodeError):
            failures.append(_failure_decoder.decode(raw))
    return failures


async def read_queue_ages(redis: aioredis.Redis, names: Names) -> dict[str, dict[str, float]]:
    """send queue -> {"age_s", "at"}, as the workers last wrote them."""
    ages = {}
    for queue, raw in (await redis.hgetall(queues_key(names))).items():
        with contextlib.suppress(msgspec.DecodeError, AttributeError):
            value: Any = msgspec.json.decode(raw)
            ages[_text(queue)] = {"age_s": float(value["age_s"]), "at": float(value["at"])}
    return ages


def _counts(raw: Mapping[Any, Any]) -> dict[str, int]:
    return {_text(k): int(v) for k, v in raw.items()}


def _by_field(counts: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, n in counts.items():
        name = key.rpartition(":")[2]
        out[name] = out.get(name, 0) + n
    return out


def _add(into: dict[str, dict[str, int]], counts: Mapping[str, int]) -> None:
    for key, n in counts.items():
        gateway, _, name = key.rpartition(":")
        fields = into.setdefault(gateway, {})
        fields[name] = fields.get(name, 0) + n


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
