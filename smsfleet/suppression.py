"""Suppression lists (DESIGN §5): one Redis set of E.164 numbers per account, and one global set."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

from .topology import Names

__all__ = ["SuppressionStore"]


class SuppressionStore:
    def __init__(self, redis: aioredis.Redis, names: Names) -> None:
        self.redis = redis
        self.names = names

    def _key(self, account: str | None) -> str:
        return self.names.suppress_global_key if account is None else self.names.suppress_account_key(account)

    async def is_suppressed(self, account: str, number: str) -> bool:
        """True when `number` is on the account's list or the global one (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(self._key(account), number)
            pipe.sismember(self._key(None), number)
            on_account, on_global = await pipe.execute()
        return bool(on_account or on_global)

    async def add(self, numbers: Iterable[str], accounts: Iterable[str | None]) -> int:
        """Add numbers to each account's list (`None` = the global list). Returns how many were new."""
        numbers = list(numbers)
        if not numbers:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            for account in accounts:
                pipe.sadd(self._key(account), *numbers)
            return sum(await pipe.execute())

    async def remove(self, numbers: Iterable[str], account: str | None) -> int:
        numbers = list(numbers)
        return int(await self.redis.srem(self._key(account), *numbers)) if numbers else 0

    async def members(self, account: str | None) -> list[str]:
        return sorted(m.decode() if isinstance(m, bytes) else m for m in await self.redis.smembers(self._key(account)))
