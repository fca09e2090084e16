"""From a checked job to a provider call in one Redis round trip: suppression, claim and rate-limit slot.

The send worker needs three answers before it may call a provider: is the number suppressed (DESIGN §5),
is the job ours to send (the idempotency claim, see `ledger`), and when may it send (the sender's GCRA
bucket, see `ratelimit`). Asked one by one they cost three round trips and a fourth to move the claim to
`calling`; this script asks them in one, in this order:

1. a job id already recorded for another job (sender, account, number or text differ): `reused`, nothing
   changes — the id belongs to the first job;
2. a job the ledger finished or saw accepted is a redelivery: its state is returned, nothing changes;
3. a record in `calling` whose holder's lease runs: `busy` (another delivery of the job is at the provider
   now), with the time left; nothing changes;
4. a record left in `calling` with its lease run out (the holder died, or an ambiguous send waits to be
   reconciled): the claim is taken over, and marked `unsure` (an attempt may have reached the provider); the
   caller reconciles before it may send again;
5. a suppressed number: nothing changes;
6. otherwise a slot is reserved (unless the caller takes one per request: `slot=False`, then `claimed`
   with no wait) and the record claimed: `calling` at once when the slot is now (the caller
   sends straight away), `claimed` when the caller must first sleep until the slot (it moves the record
   to `calling` with `Ledger.begin_call` when it wakes, so a crash while sleeping is no ambiguous send),
   and `retry` with nothing reserved when the slot is further away than `max_wait`.

With `wait_replicas` (SMSFLEET_REDIS_WAIT_REPLICAS), the script is followed, on the same connection, by
`WAIT wait_replicas timeout`: the provider is not called before that many replicas have the claim, so a
failover to one of them cannot forget it (and let a redelivery send the job again). Fewer replicas within
the timeout raise `NotReplicated`, a Redis error: the consumer gives the job back and pauses as it does when
Redis is away. The claim may then survive on the primary: the job's next delivery finds it and waits for
its lease, as after a crash (see 4. above).

A kind whose provider wants a number as our id (`Gateway.numeric_ref`) gets one on the first claim, from a
counter per provider account, kept in the record: every attempt of the job sends the same, and no two jobs
share one. A new counter starts from the clock (64 a second since 2024, modulo 2**31-1), so a counter lost
with its Redis does not start again at ids the provider saw in the last days.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from smsfleet.contracts import SendJob

from .ledger import JOB_TTL_S, NOW_MS_LUA, Ledger
from .ratelimit import GCRA_LUA, RateLimiter

__all__ = ["Admission", "Admitter", "NotReplicated", "Outcome", "fingerprint"]

# KEYS: job record, account suppression set, global suppression set, TAT, pause, ref counter.
# ARGV: owner, record TTL, number, the gcra arguments (interval, tau, max wait), fingerprint, lease ms,
# numeric ref wanted (1/0), slot wanted (1/0: 0 claims without one, for kinds limited per request).
_ADMIT = (
    GCRA_LUA
    + NOW_MS_LUA
    + """
local rec = redis.call('HMGET', KEYS[1], 'phase', 'state', 'fp', 'lease', 'ref')
local phase, fp, ref = rec[1], rec[3], rec[5] or ''
if fp and fp ~= ARGV[7] then return {'reused', '', 0, ''} end
if phase == 'accepted' or phase == 'final' then return {phase, rec[2] or '', 0, ref} end
if phase == 'calling' then
  local lease = tonumber(rec[4] or '0') or 0
  if lease > now_ms then return {'busy', '', (lease - now_ms) * 1000, ref} end
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', now_ms + tonumber(ARGV[8]), 'unsure', '1')
  return {'calling', '', 0, ref}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 or redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then
  return {'suppressed', '', 0, ''}
end
local granted, wait, slot = 1, 0, ARGV[10] == '1'
if slot then granted, wait = gcra(KEYS[4], KEYS[5], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])) end
local outcome = 'retry'
if granted == 1 then
  outcome = (slot and wait == 0) and 'call' or 'claimed'
end
if ref == '' and ARGV[9] == '1' then
  if redis.call('EXISTS', KEYS[6]) == 0 then
    redis.call('SET', KEYS[6], string.format('%.0f', ((math.floor(now_ms / 1000) - 1704067200) * 64) % 2147483646))
  end
  ref = tostring(((redis.call('INCR', KEYS[6]) - 1) % 2147483647) + 1)
end
redis.call('HSET', KEYS[1], 'phase', outcome == 'call' and 'calling' or outcome, 'owner', ARGV[1], 'fp', ARGV[7],
           'lease', now_ms + tonumber(ARGV[8]), 'ref', ref, 'unsure', '0')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {outcome, '', wait, ref}
"""
)


class Outcome(enum.Enum):
    CALL = "call"  # claimed, slot now, record in `calling`: send
    CLAIMED = "claimed"  # claimed, slot reserved `wait_s` ahead: sleep, `begin_call`, send
    RETRY = "retry"  # claimed, but the next slot is more than `max_wait` away: delay the job `wait_s`
    CALLING = "calling"  # taken over from a holder that may have reached the provider: reconcile first
    BUSY = "busy"  # another delivery of the job holds `calling` for `wait_s` more
    SUPPRESSED = "suppressed"
    REUSED = "reused"  # the id was recorded for another job
    ACCEPTED = "accepted"  # a redelivery of a job the provider took already
    FINAL = "final"  # a redelivery of a finished job


@dataclass(frozen=True, slots=True)
class Admission:
    outcome: Outcome
    state: str  # the recorded state, for ACCEPTED and FINAL
    wait_s: float  # until the slot (CLAIMED), until the next free one (RETRY), until the lease ends (BUSY)
    ref: str  # the id the provider sees, for `numeric_ref` kinds ('' otherwise)


def fingerprint(job: SendJob) -> str:
    """What makes a job the same job: a redelivery matches, another job under a reused id does not."""
    fields = "\x1f".join((job.sender, job.account, job.to, job.text))
    return hashlib.blake2b(fields.encode(), digest_size=12).hexdigest()


class NotReplicated(RedisError):
    """Fewer replicas than asked had the claim within the WAIT timeout."""


class Admitter:
    def __init__(self, ledger: Ledger, limiter: RateLimiter, wait_replicas: int = 0, wait_ms: int = 1000) -> None:
        self.ledger = ledger
        self.limiter = limiter
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self._admit = ledger.redis.register_script(_ADMIT)

    async def admit(
        self,
        job: SendJob,
        owner: str,
        rate: float,
        *,
        account: str,
        numeric_ref: bool,
        max_wait: float,
        lease_s: float,
        slot: bool = True,
    ) -> Admission:
        """`account`: the provider account (`Gateway.account`) whose rate limit gives the slot and whose counter
        gives the job its numeric id when `numeric_ref`."""
        gcra_keys, gcra_args = self.limiter.gcra_args(account, rate, max_wait=max_wait)
        names = self.ledger.names
        keys = [self.ledger.key(job.id), names.suppress_account_key(job.account), names.suppress_global_key]
        keys += [*gcra_keys, names.redis_key("ref", account)]
        args = [
            owner,
            JOB_TTL_S,
            job.to,
            *gcra_args,
            fingerprint(job),
            int(lease_s * 1000),
            int(numeric_ref),
            int(slot),
        ]
        if self.wait_replicas:
            outcome, state, wait_us, ref = await self._replicated(keys, args)
        else:
            outcome, state, wait_us, ref = await self.ledger.pipeline.run(self._admit, keys, args)
        return Admission(Outcome(_text(outcome)), _text(state), int(wait_us) / 1e6, _text(ref))

    async def _replicated(self, keys: list[str], args: list[Any]) -> Any:
        """The script's reply once `wait_replicas` replicas have its writes (WAIT counts those of the connection
        it is sent on: one pipeline carries both)."""
        for _ in range(2):  # a second time after loading a script Redis did not know (restarted, failed over)
            async with self.ledger.redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(self._admit.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
                reply, replicas = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError):
                await self.ledger.redis.script_load(_ADMIT)
                continue
            for result in (reply, replicas):
                if isinstance(result, Exception):
                    raise result
            if int(replicas) < self.wait_replicas:
                raise NotReplicated(
                    f"the claim reached {replicas} of {self.wait_replicas} replicas in {self.wait_ms} ms"
                )
            return reply
        raise NoScriptError("the admission script could not be loaded")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
