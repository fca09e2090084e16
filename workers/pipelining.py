"""Auto-pipelining: the Lua scripts that concurrent jobs call in one event-loop turn go to Redis as one pipeline.

A redis-py call costs about 110 µs of CPU here, most of it the client's own machinery (taking a connection
from the pool, the retry wrapper, a socket write and a read per command); the send worker makes two or three
per job (the claim, the call's start where it waits for a slot, the record), the status worker one per report.
Every script of the ledger goes through here. In a pipeline the per-command part is a fraction of that, and
one write carries every command of the turn. Callers see no difference: each awaits its own reply, or its own
error.

A script Redis does not know (its script cache was flushed: a restart) is loaded and run again by redis-py's
own script call, for the commands that met NOSCRIPT only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["ScriptPipeline"]

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptPipeline:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._queued: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """`script(keys, args)`, sent with the other calls of this event-loop turn."""
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)
        reply = loop.create_future()
        self._queued.append((script, keys, args, reply))
        return await reply

    def _flush(self) -> None:
        calls, self._queued = self._queued, []
        task = asyncio.create_task(self._execute(calls))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, calls: list[_Call]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every call of the turn gets the error
            for *_, reply in calls:
                if not reply.done():
                    reply.set_exception(exc)
            return
        for (script, keys, args, reply), result in zip(calls, results, strict=True):
            outcome = result
            if isinstance(result, NoScriptError) and not reply.done():
                try:
                    outcome = await script(keys=keys, args=args)
                except Exception as exc:
                    outcome = exc
            if reply.done():  # its caller was cancelled
                continue
            if isinstance(outcome, Exception):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)
