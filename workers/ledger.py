"""Delivery bookkeeping in Redis: one state record per job id, claimed atomically before a provider call.

    <ns>:pid:<sender>:<provider id>   string -> job id, TTL 8 days: matches delivery reports to jobs
    <ns>:ref:<account>   counter: the provider-visible numeric ids of one provider account (no TTL)
    <ns>:history:<id>   list of transitions {state, at, source, detail}, TTL 7 days (`smsfleet status`)
    <ns>:job:<id>   hash, TTL 7 days (refreshed on every write)
        phase     claimed | calling | retry | accepted | final
        owner     the delivery that holds the claim (worker instance + a counter)
        lease     until when (ms, Redis clock) a `calling` holder is presumed alive
        unsure    1 when the claim was taken over from a `calling` holder (an attempt may have reached the
                  provider), 0 on a fresh claim: whether `release` may give the claim back as unsent
        fp        what the job is (sender, account, number, text): a reused id with another job is refused
        ref       the id the provider sees, where it takes ours (a counter value, or empty: the job id)
        state     the last State reported for the job
        pid       provider message id(s), comma-separated
        job       the job JSON (so status reports can emit full events later)
        gateway, parts  for events and reports
        emitted   0 between a final state recorded by the status worker and its event confirmed
        attempt   attempts so far
        part:<pid>  the state of one part, for a message sent as several

The record is claimed, and moved to `calling` when the send may happen now, by the send worker's admission
script (`admission`); a claim that must first wait for its rate-limit slot moves to `calling` with
`begin_call`. Every write of the send path is a compare-and-set on the owner (and the phase), so a delivery
that lost its claim — another delivery of the same job took it over — changes nothing and publishes
nothing. A record found in `calling` with its lease run out means an earlier attempt may have reached the
provider: the send is ambiguous, and is reconciled before anything is sent again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from smsfleet.contracts import SendJob, State, now
from smsfleet.topology import Names

from .pipelining import AutoPipeline

__all__ = ["JOB_TTL_S", "NOW_MS_LUA", "Ledger", "Record"]

JOB_TTL_S = 7 * 24 * 3600
#: provider id -> job id: past the default status horizon (72 h) and the job record itself
PID_TTL_S = 8 * 24 * 3600

#: `now_ms` on the Redis clock, for leases: every process shares it (a Lua fragment other scripts include)
NOW_MS_LUA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# ARGV: owner, phase expected besides `claimed` (the takeover of `calling`), lease ms
_BEGIN_CALL = (
    NOW_MS_LUA
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local phase = redis.call('HGET', KEYS[1], 'phase')
if phase ~= 'claimed' and phase ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'phase', 'calling', 'lease', now_ms + tonumber(ARGV[3]))
return 1
"""
)

# ARGV: owner, lease ms. The holder of a `calling` record keeps it for `lease ms` more (an ambiguous send
# waiting to be reconciled): a redelivery meanwhile waits rather than takes it over.
_HOLD = (
    NOW_MS_LUA
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'phase') ~= 'calling' then
  return 0
end
redis.call('HSET', KEYS[1], 'lease', now_ms + tonumber(ARGV[2]))
return 1
"""
)

# ARGV: owner. Nothing was sent: the claim is given up (the job comes back later).
_RETRY = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local phase = redis.call('HGET', KEYS[1], 'phase')
if phase ~= 'calling' and phase ~= 'claimed' then return 0 end
redis.call('HSET', KEYS[1], 'phase', 'retry')
return 1
"""

# ARGV: owner, called (1: this delivery may have reached the provider). A delivery that failed before it settled
# (a crash, Redis away): a fresh claim nothing was sent on goes back (`retry`: the next delivery sends at once);
# one that may have been sent, by this delivery or one before it (`unsure`), is left for the next delivery to
# reconcile at once (its lease ends now) rather than after the lease.
_RELEASE = (
    NOW_MS_LUA
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local phase = redis.call('HGET', KEYS[1], 'phase')
local unsent = ARGV[2] == '0' and redis.call('HGET', KEYS[1], 'unsure') == '0'
if phase == 'claimed' or (phase == 'calling' and unsent) then
  redis.call('HSET', KEYS[1], 'phase', 'retry')
elseif phase == 'calling' then
  redis.call('HSET', KEYS[1], 'lease', now_ms)
else
  return 0
end
return 1
"""
)

# ARGV: state, emitted, TTL, job JSON, history entry, owner ('' = any: a report or a recheck). A write repeated
# by the same owner (its first reply was lost to a Redis blink) reports success again.
_FINISH = """
local phase = redis.call('HGET', KEYS[1], 'phase')
local mine = ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'owner') == ARGV[6]
if phase == 'final' then return (mine and redis.call('HGET', KEYS[1], 'state') == ARGV[1]) and 1 or 0 end
if ARGV[6] ~= '' and (not mine or phase == 'accepted') then return 0 end
redis.call('HSET', KEYS[1], 'phase', 'final', 'state', ARGV[1], 'emitted', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'job', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# ARGV: gateway, provider ids, job, attempt, parts, TTL, job id, pid TTL, history entry, owner.
# Only the holder of the `calling` record records the acceptance: a delivery that lost its claim writes nothing.
# The holder's own write repeated (its first reply was lost to a Redis blink) reports success again.
_ACCEPT = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[10] then return 0 end
local phase = redis.call('HGET', KEYS[1], 'phase')
if phase == 'accepted' and redis.call('HGET', KEYS[1], 'pid') == ARGV[2] then return 1 end
if phase ~= 'calling' then return 0 end
redis.call('HSET', KEYS[1], 'phase', 'accepted', 'state', 'accepted', 'gateway', ARGV[1], 'pid', ARGV[2],
           'job', ARGV[3], 'attempt', ARGV[4], 'parts', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('RPUSH', KEYS[2], ARGV[9])
redis.call('EXPIRE', KEYS[2], ARGV[6])
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[7], 'EX', ARGV[8]) end
return 1
"""


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """A job's record as the status path reads it (see the module doc for the fields)."""

    phase: str = ""
    state: str = ""
    gateway: str = ""
    pid: str = ""
    job: bytes = b""
    attempt: int = 1
    parts: int = 0
    emitted: str = ""

    @classmethod
    def of(cls, raw: Mapping[Any, Any]) -> Record:
        fields = {_text(k): v for k, v in raw.items()}
        job = fields.get("job", b"")
        return cls(
            phase=_text(fields.get("phase", "")),
            state=_text(fields.get("state", "")),
            gateway=_text(fields.get("gateway", "")),
            pid=_text(fields.get("pid", "")),
            job=job.encode() if isinstance(job, str) else job,
            attempt=int(fields.get("attempt") or 1),
            parts=int(fields.get("parts") or 0),
            emitted=_text(fields.get("emitted", "")),
        )

    @property
    def provider_ids(self) -> tuple[str, ...]:
        return tuple(p for p in self.pid.split(",") if p)

    @property
    def provider_message_id(self) -> str | None:
        return self.provider_ids[0] if self.provider_ids else None

    @property
    def final(self) -> bool:
        return self.phase == "final"

    def send_job(self) -> SendJob | None:
        return msgspec.json.decode(self.job, type=SendJob) if self.job else None


class Ledger:
    def __init__(self, redis: aioredis.Redis, names: Names) -> None:
        self.redis = redis
        self.names = names
        self._begin = redis.register_script(_BEGIN_CALL)
        self._hold = redis.register_script(_HOLD)
        self._retry = redis.register_script(_RETRY)
        self._release = redis.register_script(_RELEASE)
        self._finish = redis.register_script(_FINISH)
        self._accept = redis.register_script(_ACCEPT)
        self.pipeline = AutoPipeline(redis)

    def key(self, job_id: str) -> str:
        return self.names.redis_key("job", job_id)

    def pid_key(self, sender: str, provider_id: str) -> str:
        return self.names.redis_key("pid", sender, provider_id)

    def history_key(self, job_id: str) -> str:
        return self.names.redis_key("history", job_id)

    # -- the send path: compare-and-set on the owner ------------------------------------------------

    async def begin_call(self, job_id: str, owner: str, lease_s: float, *, takeover: bool = False) -> bool:
        """Move the claim to `calling`. `takeover` also accepts a record left in `calling` (a resend)."""
        args = [owner, "calling" if takeover else "claimed", int(lease_s * 1000)]
        return bool(await self.pipeline.run(self._begin, [self.key(job_id)], args))

    async def hold(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Keep a `calling` record for `lease_s` more: an ambiguous send that will be reconciled then."""
        return bool(await self.pipeline.run(self._hold, [self.key(job_id)], [owner, int(lease_s * 1000)]))

    async def retry(self, job_id: str, owner: str) -> bool:
        """Give the claim up: nothing was sent, the job comes back later."""
        return bool(await self.pipeline.run(self._retry, [self.key(job_id)], [owner]))

    async def release(self, job_id: str, owner: str, *, called: bool) -> bool:
        """The delivery failed before it settled the job: give the claim back if nothing can have been sent
        (`called`: this delivery may have reached the provider), else let the next delivery reconcile at once."""
        return bool(await self.pipeline.run(self._release, [self.key(job_id)], [owner, int(called)]))

    async def accepted(  # noqa: PLR0917 - one record, written at once
        self,
        job: SendJob,
        owner: str,
        gateway: str,
        provider_ids: tuple[str, ...],
        attempt: int,
        parts: int,
    ) -> bool:
        """Record the provider's acceptance, and map each provider id back to the job (for reports), scoped
        by sender. False when this delivery no longer holds the claim: it must publish nothing."""
        keys = [self.key(job.id), self.history_key(job.id), *(self.pid_key(job.sender, p) for p in provider_ids)]
        pids = ",".join(provider_ids)
        args: list[str | bytes | int] = [
            gateway, pids, msgspec.json.encode(job), attempt, parts, JOB_TTL_S, job.id, PID_TTL_S,
            _entry(State.ACCEPTED, "send", pids), owner,
        ]  # fmt: skip
        return bool(await self.pipeline.run(self._accept, keys, args))

    async def final(self, job: SendJob, owner: str, state: State, detail: str = "") -> bool:
        """Record a final state from the send path; False when this delivery no longer holds the claim."""
        keys = [self.key(job.id), self.history_key(job.id)]
        entry = _entry(state, "send", detail)
        args = [state.value, "1", JOB_TTL_S, msgspec.json.encode(job), entry, owner]
        return bool(await self.pipeline.run(self._finish, keys, args))

    # -- the status path ----------------------------------------------------------------------------

    async def finish(self, job_id: str, state: State, source: str, detail: str = "") -> bool:
        """Record a final state unless one is recorded already: a final state is never overwritten.
        `emitted` stays 0 until the caller's event is confirmed (see `StatusWorker`)."""
        entry = _entry(state, source, detail)
        keys = [self.key(job_id), self.history_key(job_id)]
        return bool(await self.pipeline.run(self._finish, keys, [state.value, "0", JOB_TTL_S, "", entry, ""]))

    async def emitted(self, job_id: str) -> None:
        """The final state's event is confirmed: a recheck need not publish it again."""
        await self.pipeline.command("HSET", self.key(job_id), "emitted", "1")

    async def part_states(self, job_id: str, provider_id: str, state: State, provider_ids: Sequence[str]) -> list[str]:
        """Record the state of one part of a message sent as several; the states of all its parts ('' unknown)."""
        key = self.key(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, f"part:{provider_id}", state.value)
            pipe.hmget(key, [f"part:{p}" for p in provider_ids])
            _, states = await pipe.execute()
        return [_text(s) if s is not None else "" for s in states]

    async def history(self, job_id: str) -> list[dict[str, str]]:
        """The job's recorded transitions, oldest first: state, at, source, and a detail (error code, provider ids)."""
        return [msgspec.json.decode(e) for e in await self.redis.lrange(self.history_key(job_id), 0, -1)]

    async def job_of(self, sender: str, provider_id: str) -> str | None:
        value = await self.pipeline.command("GET", self.pid_key(sender, provider_id))
        return None if value is None else _text(value)

    async def record(self, job_id: str) -> Record:
        return Record.of(await self.pipeline.command("HGETALL", self.key(job_id)))

    async def get(self, job_id: str) -> dict[str, str]:
        """Every field of the record as text (for `smsfleet status` and tests)."""
        raw = await self.redis.hgetall(self.key(job_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def records(self, job_ids: Sequence[str]) -> list[Record]:
        """The records of several jobs in one round trip (empty for a job with none)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.key(job_id))
            raws = await pipe.execute()
        return [Record.of(raw) for raw in raws]


def _entry(state: State, source: str, detail: str = "") -> bytes:
    entry = {"state": state.value, "at": now().isoformat(), "source": source}
    return msgspec.json.encode(entry | {"detail": detail} if detail else entry)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
