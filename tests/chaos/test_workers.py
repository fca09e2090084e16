"""Worker processes that die: `kill -9` in the middle of sending, and SIGTERM with sends in flight.

Real `smsfleet worker` processes against a fake SMSC served from the test's own event loop; the books
(`harness.Books`) count what each job became and what the provider received.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.chaos.harness import SEND_PHP, Case, until, valid_jobs, workers
from tests.fakes.smsc import FakeSmsc

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


@pytest.mark.timeout(150)
async def test_kill_9_mid_send_then_restart(case: Case) -> None:
    n = 5000
    fake = FakeSmsc("acme", "pw", initial_status=1)
    async with case.backlog(fake, valid_jobs("k9", n)) as events:
        with workers(case.settings, case.tmp_path) as fleet:
            first = fleet.start()
            await until(lambda: len(fake.messages) >= n // 3, 60, f"{n // 3} messages sent", [first])
            first.kill()  # SIGKILL: no drain, no acks, sends in flight cut off
            case.books.note(f"killed after {len(fake.messages)} sent")
            assert await fleet.wait(first, 10) == -signal.SIGKILL
            second = fleet.start()
            await case.settle(events, fake, timeout=100, procs=[second])
            assert await fleet.stop(second) == 0, fleet.log(second)


@pytest.mark.timeout(120)
async def test_sigterm_with_sends_in_flight(case: Case) -> None:
    """The provider answers in 0.5 s, so 50 sends are always in flight: SIGTERM lets them finish within the
    grace period (none may end `unknown`), exits 0, and a second worker sends the rest."""
    n, grace, concurrency = 500, 10.0, 50
    fake = FakeSmsc("acme", "pw", latency=0.5, initial_status=1)
    async with case.backlog(fake, valid_jobs("term", n)) as events:

        def in_flight() -> int:
            return sum(path == SEND_PHP for path, _ in fake.requests) - len(fake.messages)

        def busy() -> bool:
            return len(fake.messages) >= 100 and in_flight() >= concurrency * 0.8

        with workers(case.settings, case.tmp_path) as fleet:
            flags = ("--concurrency", str(concurrency), "--grace", str(grace))
            first = fleet.start(*flags)
            await until(busy, 30, "100 sent and the worker's sends in flight", [first])
            cut = in_flight()
            first.send_signal(signal.SIGTERM)
            term = time.monotonic()
            code = await fleet.wait(first, grace + 5)
            took = time.monotonic() - term
            assert code == 0, fleet.log(first)
            assert took <= grace + 2.5, f"exited {took:.1f} s after SIGTERM"
            case.books.note(
                f"SIGTERM with {cut} in flight: exit 0 after {took:.1f} s, {len(fake.messages)} sent by then"
            )
            second = fleet.start(*flags)
            await case.settle(events, fake, timeout=60, procs=[second])
            assert await fleet.stop(second) == 0, fleet.log(second)
