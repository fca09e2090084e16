"""From a checked job to a provider call in one Redis round trip: suppression, claim and rate-limit slot.

The send worker needs three answers before it may call a provider: is the number suppressed (DESIGN §5),
is the job ours to send (the idempotency claim, see `ledger`), and when may it send (the sender's GCRA
bucket, see `ratelimit`). Asked one by one they cost three round trips and a fourth to move the claim to
`calling`; this script asks them in one, in this order:

1. a job the ledger finished or saw accepted is a redelivery: its state is returned, nothing changes;
2. a suppressed number: nothing changes;
3. a record left in `calling` (an earlier holder may have reached the provider): the claim is taken over,
   and the caller decides, by its ambiguity policy, whether it may send again;
4. otherwise a slot is reserved and the record claimed: `calling` at once when the slot is now (the caller
   sends straight away), `claimed` when the caller must first sleep until the slot (it moves the record
   to `calling` with `Ledger.begin_call` when it wakes, so a crash while sleeping is no ambiguous send),
   and `retry` with nothing reserved when the slot is further away than `max_wait`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from smsfleet.contracts import SendJob

from .ledger import JOB_TTL_S, Ledger
from .ratelimit import GCRA_LUA, RateLimiter

__all__ = ["Admission", "Admitter", "Outcome"]

# KEYS: job record, account suppression set, global suppression set, TAT, pause.
# ARGV: owner, record TTL, number, then the gcra arguments (interval, tau, max wait).
_ADMIT = (
    GCRA_LUA
    + """
local phase = redis.call('HGET', KEYS[1], 'phase')
if phase == 'accepted' or phase == 'final' then
  return {phase, redis.call('HGET', KEYS[1], 'state') or '', 0}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 or redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then
  return {'suppressed', '', 0}
end
if phase == 'calling' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1])
  return {'calling', '', 0}
end
local granted, wait = gcra(KEYS[4], KEYS[5], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
local outcome = 'retry'
if granted == 1 then
  outcome = wait == 0 and 'call' or 'claimed'
end
redis.call('HSET', KEYS[1], 'phase', outcome == 'call' and 'calling' or outcome, 'owner', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {outcome, '', wait}
"""
)


class Outcome(enum.Enum):
    CALL = "call"  # claimed, slot now, record in `calling`: send
    CLAIMED = "claimed"  # claimed, slot reserved `wait_s` ahead: sleep, `begin_call`, send
    RETRY = "retry"  # claimed, but the next slot is more than `max_wait` away: delay the job `wait_s`
    CALLING = "calling"  # taken over from a holder that may have reached the provider (ambiguous)
    SUPPRESSED = "suppressed"
    ACCEPTED = "accepted"  # a redelivery of a job the provider took already
    FINAL = "final"  # a redelivery of a finished job


@dataclass(frozen=True, slots=True)
class Admission:
    outcome: Outcome
    state: str  # the recorded state, for ACCEPTED and FINAL
    wait_s: float  # until the slot (CLAIMED), or until the next free one (RETRY)


class Admitter:
    def __init__(self, ledger: Ledger, limiter: RateLimiter) -> None:
        self.ledger = ledger
        self.limiter = limiter
        self._admit = ledger.redis.register_script(_ADMIT)

    async def admit(self, job: SendJob, owner: str, rate: float, *, max_wait: float) -> Admission:
        gcra_keys, gcra_args = self.limiter.gcra_args(job.sender, rate, max_wait=max_wait)
        keys = [
            self.ledger.key(job.id),
            self.ledger.names.suppress_account_key(job.account),
            self.ledger.names.suppress_global_key,
            *gcra_keys,
        ]
        args = [owner, JOB_TTL_S, job.to, *gcra_args]
        outcome, state, wait_us = await self.ledger.scripts.run(self._admit, keys, args)
        return Admission(Outcome(_text(outcome)), _text(state), int(wait_us) / 1e6)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
