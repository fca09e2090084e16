"""Every `smsfleet` command runs on uvloop where it is installed (a dependency on Linux and macOS), whose
timers can fire up to a millisecond early: a rate-limit slot is slept to on the monotonic clock."""

import asyncio
import time

from cli import run
from workers.ratelimit import sleep_until


def test_commands_run_on_uvloop() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(loop_module()).startswith("uvloop")


def test_a_slot_is_never_slept_to_early() -> None:
    async def earliest() -> float:
        early = 0.0
        for i in range(200):
            deadline = time.monotonic() + 0.001 + (i % 9) * 0.0007  # fractions of a millisecond
            await sleep_until(deadline)
            early = max(early, deadline - time.monotonic())
        return early

    assert run(earliest()) <= 0.0
