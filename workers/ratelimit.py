"""Fleet-wide rate limits: one GCRA bucket per provider account in Redis, on the Redis server clock.

Every worker process on every machine shares one bucket per provider account (`Gateway.account`: senders
that send as the same account share it, since the provider limits the account). The state is a single
number, the bucket's TAT ("theoretical arrival time", integer microseconds on the Redis clock),
and a Lua script reads ``redis.call('TIME')``, decides and advances the TAT in one atomic step. A
granted acquisition is a *reservation*: the script has already moved the TAT past it, so the caller just
sleeps the returned number of seconds and sends. Local clocks never enter the decision, so machines
with skewed clocks still share one schedule.

Algorithm (GCRA). With emission interval ``T`` and tolerance ``tau = (burst - 1) * T``, a request at
server time ``now`` gets the send time ``allow = max(TAT, now) - tau`` (never before ``now``, never
before a provider pause), and the TAT becomes ``max(TAT, now, allow) + T``.

Window bound. Every grant advances the TAT by ``T`` and sends no earlier than ``TAT - tau``, so any
``n`` sends span at least ``(n - burst) * T`` seconds. The emission interval is not ``1 / rate`` but
``T = (1 + margin) / rate`` (rounded *up* to the microsecond), so ``rate + burst`` sends span at least
``rate * T = 1 + margin`` seconds: any 1-s window, even a closed one, holds at most
``rate + burst - 1`` sends, i.e. at most ``rate`` with the default ``burst=1``, and this still holds
when the send times the provider observes are shifted against each other by up to ``margin`` seconds
(event-loop wake-up, the network, the provider's own timestamping). Exact for integral rates; a
fractional rate allows at most ``ceil(rate) + burst - 1``. The price is throughput: a saturated
sender gets ``1 / (1 + margin)`` of its limit, 97 % with the default ``margin=0.03`` (30 ms).

Keys, under the prefix given to the constructor (e.g. ``f"{namespace}:rate"``):

* ``<prefix>:<bucket>`` - the TAT in microseconds. Its TTL is the time until that TAT plus 1 s:
  once the TAT is in the past the bucket is full and an absent key means exactly the same thing, so
  idle senders leave nothing behind and no state is lost when the key expires.
* ``<prefix>:<bucket>:pause`` - the end of a provider-imposed pause (microseconds), expiring 1 s
  after that end. Set by :meth:`RateLimiter.pause`; no send is granted before it, burst or not.

Failure mode: nothing here catches Redis errors. If Redis is unreachable or slow,
``redis.exceptions.ConnectionError`` / ``redis.exceptions.TimeoutError`` propagate unchanged, and the
worker must stop taking jobs until Redis is back - it never sends unthrottled. A reservation whose
reply was lost (timeout after the script ran) only wastes one slot; that errs on the safe side, and so
does a :meth:`RateLimiter.wait` cancelled during its sleep.

Needs Redis >= 5 (scripts replicate their effects, so writing after ``TIME`` is allowed). The two keys
of a sender share no hash tag, so this is written for a single Redis (or a primary with replicas),
not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import math
import time

import redis.asyncio as aioredis

__all__ = ["DEFAULT_MARGIN", "GCRA_LUA", "RateLimitWait", "RateLimiter", "sleep_until"]

DEFAULT_MARGIN = 0.03
"""Seconds of send-time jitter the window bound tolerates; also the throughput cost (1 / 1.03 = 97 %)."""

_US = 1_000_000
_PAUSE_SUFFIX = ":pause"

# The GCRA step, a Lua function that other scripts include (the send worker's admission takes its slot in the
# same script as its claim). Returns granted (1/0) and the wait in us; reserves the slot only when granted.
# `gcra_allow` and `gcra_take` are its two halves, for a script that takes slots in several buckets at once.
# Every number is an integer below 2^53, so Lua's doubles are exact; '%.0f' writes them back without the
# 14-digit rounding of tostring().
GCRA_LUA = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- the earliest send time the bucket allows, and its TAT
local function gcra_allow(tat_key, pause_key, tau, now)
  local tat = tonumber(redis.call('GET', tat_key) or 0) or 0
  if tat < now then tat = now end
  local allow = tat - tau
  local resume = tonumber(redis.call('GET', pause_key) or 0) or 0
  if allow < resume then allow = resume end
  if allow < now then allow = now end
  return allow, tat
end
-- reserve the slot at `allow`
local function gcra_take(tat_key, tat, allow, interval, now)
  if tat < allow then tat = allow end
  tat = tat + interval
  redis.call('SET', tat_key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local function gcra(tat_key, pause_key, interval, tau, max_wait)
  local now = now_us()
  local allow, tat = gcra_allow(tat_key, pause_key, tau, now)
  local wait = allow - now
  if wait > max_wait then return 0, wait end
  gcra_take(tat_key, tat, allow, interval, now)
  return 1, wait
end
"""

# KEYS[1] TAT key, KEYS[2] pause key; ARGV[1] emission interval us, ARGV[2] tau us, ARGV[3] max wait us.
_ACQUIRE = (
    GCRA_LUA
    + """
local granted, wait = gcra(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {granted, wait}
"""
)

# A slot of a bucket that is also one of its share (`acquire_within`). While the share has no slot free now,
# nothing is reserved and the reply is {2, wait until it has}: a slot of the bucket reserved that far ahead would
# move its TAT past every slot in between. Otherwise both are taken at the bucket's time.
# KEYS[1..2] the bucket's TAT and pause keys, KEYS[3..4] the share's; ARGV[1..2] the bucket's interval and tau,
# ARGV[3..4] the share's, ARGV[5] max wait, all in us.
_ACQUIRE_WITHIN = (
    GCRA_LUA
    + """
local now = now_us()
local share_allow, share_tat = gcra_allow(KEYS[3], KEYS[4], tonumber(ARGV[4]), now)
if share_allow > now then return {2, share_allow - now} end
local allow, tat = gcra_allow(KEYS[1], KEYS[2], tonumber(ARGV[2]), now)
local wait = allow - now
if wait > tonumber(ARGV[5]) then return {0, wait} end
gcra_take(KEYS[1], tat, allow, tonumber(ARGV[1]), now)
gcra_take(KEYS[3], share_tat, allow, tonumber(ARGV[3]), now)
return {1, wait}
"""
)

# KEYS[1] TAT key, KEYS[2] pause key; ARGV[1] pause length us. A pause only ever grows; it also pushes
# the TAT to its end. Returns the remaining pause in us.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local resume = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[2]) or 0) or 0
if current > resume then
  resume = current
else
  redis.call('SET', KEYS[2], string.format('%.0f', resume), 'PX', math.ceil((resume - now) / 1000) + 1000)
end
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < resume then
  redis.call('SET', KEYS[1], string.format('%.0f', resume), 'PX', math.ceil((resume - now) / 1000) + 1000)
end
return resume - now
"""


async def sleep_until(deadline: float) -> None:
    """Sleep until `time.monotonic()` reaches `deadline`. An event loop's timer can fire early (uvloop's by up
    to a millisecond: libuv keeps its clock in whole milliseconds), and a reserved slot must never be used
    before its time: what is left is slept again."""
    while (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110 - a deadline, not an event to wait for
        await asyncio.sleep(left)


class RateLimitWait(Exception):
    """The next slot for the sender is further away than ``max_wait``; nothing was reserved.

    ``retry_after`` is the wait, in seconds, that the request would have had: the time until the
    sender's next free slot. Delay the job (e.g. through a delay queue) by about that much rather than
    holding it. Other processes may take that slot meanwhile, so the retry may be told to wait again.
    """

    def __init__(self, retry_after: float, bucket: str = "") -> None:
        super().__init__(retry_after, bucket)
        self.retry_after = retry_after
        self.bucket = bucket

    def __str__(self) -> str:
        who = f"bucket {self.bucket!r}" if self.bucket else "the bucket"
        return f"{who} is rate limited: next slot in {self.retry_after:.3f} s"


class RateLimiter:
    """Fleet-wide GCRA rate limits, one bucket per sender, kept in Redis (see the module docstring).

    ``burst`` is the number of requests a rested sender may send back to back (1: strictly spaced);
    any 1-s window holds at most ``rate + burst - 1`` sends. ``margin`` is the send-time jitter in
    seconds that bound tolerates, paid for with a throughput of ``1 / (1 + margin)`` of the rate.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        *,
        burst: int = 1,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, not {margin!r}")
        self._prefix = prefix
        self._burst = burst
        self._margin = margin
        # register_script only hashes the source; each call runs EVALSHA and loads it on NOSCRIPT.
        self._acquire = redis.register_script(_ACQUIRE)
        self._acquire_within = redis.register_script(_ACQUIRE_WITHIN)
        self._pause = redis.register_script(_PAUSE)

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def margin(self) -> float:
        return self._margin

    def keys(self, bucket: str) -> tuple[str, str]:
        """The bucket's TAT key and pause key."""
        if not bucket or bucket.endswith(_PAUSE_SUFFIX):
            raise ValueError(f"invalid bucket {bucket!r}")
        key = f"{self._prefix}:{bucket}"
        return key, key + _PAUSE_SUFFIX

    def interval(self, rate: float) -> float:
        """The emission interval in seconds for ``rate`` requests per second (``(1 + margin) / rate``)."""
        return self._interval_us(rate) / _US

    def _interval_us(self, rate: float) -> int:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, not {rate!r}")
        return max(1, math.ceil(_US * (1 + self._margin) / rate))

    def gcra_args(self, bucket: str, rate: float, *, max_wait: float) -> tuple[list[str], list[int]]:
        """The keys and arguments of one `gcra` call (`GCRA_LUA`), for a script that takes a slot itself."""
        interval = self._interval_us(rate)
        if not (math.isfinite(max_wait) and max_wait >= 0):
            raise ValueError(f"max_wait must be a finite number >= 0, not {max_wait!r}")
        return list(self.keys(bucket)), [interval, (self._burst - 1) * interval, math.floor(max_wait * _US)]

    async def acquire(self, bucket: str, rate: float, *, max_wait: float) -> float:
        """Reserve the sender's next slot and return the seconds to wait before sending (0.0: now).

        The reservation is made on the server, so sleep the returned time and send; do not ask again.
        If the wait would exceed ``max_wait`` seconds nothing is reserved and :class:`RateLimitWait`
        is raised. Redis connection and timeout errors propagate unchanged.
        """
        keys, args = self.gcra_args(bucket, rate, max_wait=max_wait)
        granted, wait_us = (int(v) for v in await self._acquire(keys=keys, args=args))
        if not granted:
            raise RateLimitWait(wait_us / _US, bucket)
        return wait_us / _US

    async def acquire_within(self, bucket: str, rate: float, share: float, *, max_wait: float) -> float:
        """:meth:`acquire` one slot of `bucket` that is also a slot of its share, a bucket of its own at `share` x
        `rate` (`<bucket>:share`): what takes its slots this way never spends more than that share of the rate,
        in any window, and leaves the rest to what takes slots of `bucket` alone. Waits here (up to `max_wait`)
        for the share's next slot, then returns the wait for the bucket's, as :meth:`acquire` does."""
        keys, args = self.gcra_args(bucket, rate, max_wait=max_wait)
        share_keys, share_args = self.gcra_args(f"{bucket}:share", rate * share, max_wait=max_wait)
        deadline = time.monotonic() + max_wait
        while True:
            left_us = max(0, math.floor((deadline - time.monotonic()) * _US))
            reply = await self._acquire_within(keys=keys + share_keys, args=[*args[:2], *share_args[:2], left_us])
            granted, wait_us = (int(v) for v in reply)
            if granted == 1:
                return wait_us / _US
            if granted == 0 or time.monotonic() + wait_us / _US > deadline:
                raise RateLimitWait(wait_us / _US, bucket)
            await sleep_until(time.monotonic() + wait_us / _US)  # the share's next slot, then ask again

    async def wait(self, bucket: str, rate: float, *, max_wait: float) -> None:
        """:meth:`acquire`, then sleep until the reserved slot. Cancelling the sleep wastes the slot."""
        delay = await self.acquire(bucket, rate, max_wait=max_wait)
        await sleep_until(time.monotonic() + delay)

    async def pause(self, bucket: str, seconds: float) -> None:
        """The provider asked us to back off (429 / Retry-After): grant no send for ``seconds``.

        Measured on the Redis clock from now, for every process. A pause only ever extends: a shorter
        pause while a longer one runs changes nothing. Slots already handed out are not revoked - they
        are at most ``max_wait`` ahead, so callers should keep ``max_wait`` small.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, not {seconds!r}")
        await self._pause(keys=list(self.keys(bucket)), args=[math.ceil(seconds * _US)])
