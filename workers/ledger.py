"""Delivery bookkeeping in Redis: one state record per job id, claimed atomically before a provider call.

    <ns>:pid:<gateway>:<provider id>   string -> job id, TTL 8 days: matches delivery reports to jobs
    <ns>:history:<id>   list of transitions {state, at, source, detail}, TTL 7 days (`smsfleet status`)
    <ns>:job:<id>   hash, TTL 7 days (refreshed on every write)
        phase     claimed | calling | retry | accepted | final
        owner     the delivery that holds the claim (worker instance + a counter)
        state     the last State reported for the job
        pid       provider message id(s), comma-separated
        job       the job JSON (so status reports can emit full events later)
        gateway, parts  for events and reports
        emitted   0 between a final state recorded by the status worker and its event confirmed
        attempt   attempts so far

The record is claimed, and moved to `calling` when the send may happen now, by the send worker's admission
script (`admission`); a claim that must first wait for its rate-limit slot moves to `calling` with
`begin_call` (compare-and-set on the owner, in Lua), so two deliveries of one job can never both reach the
provider. A record found in `calling` means an earlier attempt may have reached the provider: the send is
ambiguous.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from smsfleet.contracts import State, now
from smsfleet.topology import Names

from .pipelining import ScriptPipeline

__all__ = ["JOB_TTL_S", "Ledger"]

JOB_TTL_S = 7 * 24 * 3600
#: provider id -> job id: past the default status horizon (72 h) and the job record itself
PID_TTL_S = 8 * 24 * 3600

_BEGIN_CALL = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local phase = redis.call('HGET', KEYS[1], 'phase')
if phase ~= 'claimed' and phase ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'phase', 'calling')
return 1
"""


_FINISH = """
if redis.call('HGET', KEYS[1], 'phase') == 'final' then return 0 end
redis.call('HSET', KEYS[1], 'phase', 'final', 'state', ARGV[1], 'emitted', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'job', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# a final state recorded meanwhile (a report that echoed our job id) is never replaced by `accepted`
_ACCEPT = """
if redis.call('HGET', KEYS[1], 'phase') == 'final' then return 0 end
redis.call('HSET', KEYS[1], 'phase', 'accepted', 'state', 'accepted', 'gateway', ARGV[1], 'pid', ARGV[2],
           'job', ARGV[3], 'attempt', ARGV[4], 'parts', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('RPUSH', KEYS[2], ARGV[9])
redis.call('EXPIRE', KEYS[2], ARGV[6])
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[7], 'EX', ARGV[8]) end
return 1
"""


class Ledger:
    def __init__(self, redis: aioredis.Redis, names: Names) -> None:
        self.redis = redis
        self.names = names
        self._begin = redis.register_script(_BEGIN_CALL)
        self._finish = redis.register_script(_FINISH)
        self._accept = redis.register_script(_ACCEPT)
        self.scripts = ScriptPipeline(redis)

    def key(self, job_id: str) -> str:
        return self.names.redis_key("job", job_id)

    async def begin_call(self, job_id: str, owner: str, *, takeover: bool = False) -> bool:
        """Move the claim to `calling`. `takeover` also accepts a record left in `calling` (resend)."""
        ok = await self._begin(keys=[self.key(job_id)], args=[owner, "calling" if takeover else "claimed"])
        return bool(ok)

    async def retry(self, job_id: str) -> None:
        await self.redis.hset(self.key(job_id), "phase", "retry")

    def pid_key(self, gateway: str, provider_id: str) -> str:
        return self.names.redis_key("pid", gateway, provider_id)

    async def accepted(  # noqa: PLR0917 - one record, written at once
        self, job_id: str, gateway: str, provider_ids: tuple[str, ...], job: bytes, attempt: int, parts: int
    ) -> None:
        """Record the provider's acceptance, and map each provider id back to the job (for reports)."""
        keys = [self.key(job_id), self.history_key(job_id), *(self.pid_key(gateway, pid) for pid in provider_ids)]
        args: list[str | bytes | int] = [
            gateway,
            ",".join(provider_ids),
            job,
            attempt,
            parts,
            JOB_TTL_S,
            job_id,
            PID_TTL_S,
            _entry(State.ACCEPTED, "send", ",".join(provider_ids)),
        ]
        await self.scripts.run(self._accept, keys, args)

    async def final(self, job_id: str, state: State, job: bytes = b"", detail: str = "") -> bool:
        """Record a final state from the send path; False when the job was finished already."""
        entry = _entry(state, "send", detail)
        keys = [self.key(job_id), self.history_key(job_id)]
        return bool(await self._finish(keys=keys, args=[state.value, "1", JOB_TTL_S, job, entry]))

    async def finish(self, job_id: str, state: State, source: str, detail: str = "") -> bool:
        """Record a final state unless one is recorded already: a final state is never overwritten.
        `emitted` stays 0 until the caller's event is confirmed (see `StatusWorker`)."""
        entry = _entry(state, source, detail)
        keys = [self.key(job_id), self.history_key(job_id)]
        return bool(await self._finish(keys=keys, args=[state.value, "0", JOB_TTL_S, "", entry]))

    def history_key(self, job_id: str) -> str:
        return self.names.redis_key("history", job_id)

    async def history(self, job_id: str) -> list[dict[str, str]]:
        """The job's recorded transitions, oldest first: state, at, source, and a detail (error code, provider ids)."""
        return [msgspec.json.decode(e) for e in await self.redis.lrange(self.history_key(job_id), 0, -1)]

    async def job_of(self, gateway: str, provider_id: str) -> str | None:
        value = await self.redis.get(self.pid_key(gateway, provider_id))
        return None if value is None else _text(value)

    async def get(self, job_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.key(job_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def get_many(self, job_ids: Sequence[str]) -> list[dict[str, str]]:
        """The records of several jobs in one round trip (empty for a job with none)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.key(job_id))
            raws = await pipe.execute()
        return [{_text(k): _text(v) for k, v in raw.items()} for raw in raws]


def _entry(state: State, source: str, detail: str = "") -> bytes:
    entry = {"state": state.value, "at": now().isoformat(), "source": source}
    return msgspec.json.encode(entry | {"detail": detail} if detail else entry)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
