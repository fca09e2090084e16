"""Auto-pipelining: the Redis calls that concurrent jobs make in one event-loop turn go to Redis as one pipeline.

A redis-py call costs about 110 µs of CPU here, most of it the client's own machinery (taking a connection
from the pool, the retry wrapper, a socket write and a read per command); the send worker makes two or three
per job (the claim, the call's start where it waits for a slot, the record), the status worker three or four
per report (the job a provider id names, its record, the final state, the event's confirmation). Every call of
the ledger goes through here: its Lua scripts (`run`) and its plain commands (`command`). In a pipeline the
per-command part is a fraction of that, and one write carries every command of the turn. Callers see no
difference: each awaits its own reply, as redis-py would have given it, or its own error.

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

__all__ = ["AutoPipeline"]

#: a script, its keys and its arguments (or None and a plain command's words), and its caller's reply
_Call = tuple[AsyncScript | None, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class AutoPipeline:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._queued: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """`script(keys, args)`, sent with the other calls of this event-loop turn."""
        return await self._queue(script, keys, args)

    async def command(self, *words: Any) -> Any:
        """A plain command (`GET`, `HGETALL`, `HSET`...), sent with the other calls of this event-loop turn."""
        return await self._queue(None, words, ())

    def _queue(self, script: AsyncScript | None, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)
        reply = loop.create_future()
        self._queued.append((script, keys, args, reply))
        return reply

    def _flush(self) -> None:
        calls, self._queued = self._queued, []
        task = asyncio.create_task(self._execute(calls))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, calls: list[_Call]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in calls:
                    if script is None:
                        pipe.execute_command(*keys)
                    else:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every call of the turn gets the error
            for *_, reply in calls:
                if not reply.done():
                    reply.set_exception(exc)
            return
        for (script, keys, args, reply), result in zip(calls, results, strict=True):
            outcome = result
            if isinstance(result, NoScriptError) and script is not None and not reply.done():
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
