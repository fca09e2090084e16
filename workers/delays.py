"""Waiting without holding a message: the delay tiers of the topology.

A delayed message is republished to `<ns>.delay` with the largest tier that does not overshoot the wait,
and a `not-before` header. When it comes back to its work queue before that instant (a long wait spans
several tiers), `remaining()` says how long is left and the consumer delays it again; a remainder under
the smallest tier is slept in-process. So a message is never handled earlier than asked, and never held
unacknowledged for longer than a second while it waits.
"""

from __future__ import annotations

import random
import time
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from smsfleet.topology import (
    DELAY_TIERS,
    HEADER_ATTEMPT,
    HEADER_NOT_BEFORE,
    HEADER_TARGET,
    HEADER_TIER,
    Names,
    publish_json,
)

__all__ = ["Delayer", "attempt_of", "backoff", "remaining"]


def backoff(attempt: int, *, base: float = 5.0, cap: float = 900.0) -> float:
    """Exponential backoff with full jitter between half and all of the step: 5 s, 10 s, 20 s ... 15 min."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(step / 2, step)


def tier_for(seconds: float) -> int:
    fitting = [t for t in DELAY_TIERS if t <= seconds]
    return fitting[-1] if fitting else DELAY_TIERS[0]


def attempt_of(msg: AbstractIncomingMessage) -> int:
    value = (msg.headers or {}).get(HEADER_ATTEMPT, 1)
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 1


def remaining(msg: AbstractIncomingMessage) -> float:
    """Seconds until this message may be handled (0 when it may be handled now)."""
    value = (msg.headers or {}).get(HEADER_NOT_BEFORE)
    if not isinstance(value, int):
        return 0.0
    return max(0.0, value / 1000 - time.time())


class Delayer:
    def __init__(self, channel: AbstractChannel, names: Names) -> None:
        self.channel = channel
        self.names = names

    async def delay(
        self,
        body: bytes,
        *,
        routing_key: str,
        target: str,
        seconds: float,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish `body` to come back to `target` (`send`/`internal`) with `routing_key` after `seconds`."""
        not_before = int((time.time() + seconds) * 1000)
        tier = tier_for(seconds)
        all_headers = {
            **(headers or {}),
            HEADER_NOT_BEFORE: not_before,
            HEADER_TARGET: target,
            HEADER_TIER: str(tier),
        }
        await publish_json(
            self.channel, self.names.delay_exchange, body, routing_key, headers=all_headers, message_id=message_id
        )
