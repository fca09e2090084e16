"""`smsfleet worker --processes N`: one command, N worker processes — what gunicorn or Celery give a VM operator.

The group starts N copies of the worker command (the same roles and flags, without `--processes` and
`--metrics-port`), and then:

- restarts a child that exits while the group runs, after a pause that doubles from 1 s to 30 s while
  children keep dying young (a crash loop must not spin), and is reset once a child has lived a minute;
- on SIGTERM or SIGINT forwards SIGTERM to every child, waits for them to drain (`grace_s` plus a margin),
  then kills what is left, and exits 0 when every child exited 0;
- serves one `/metrics` for the whole group on `metrics_port`, through prometheus-client's multiprocess mode:
  every child writes its samples to a directory the group made (`PROMETHEUS_MULTIPROC_DIR`) and the group adds
  them up; `/livez` is the group's own loop, `/readyz` is every child running.

Each child is a whole worker (its own connections, consumers and prefetch), so N processes take N times the
prefetch from the queue and use N cores; fleet-wide limits live in Redis and hold across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence

import structlog
from prometheus_client import multiprocess

from smsfleet import metrics
from smsfleet.signals import forget_signals, stop_on_signals

__all__ = ["run_group"]

log = structlog.get_logger("smsfleet.workers.group")

#: a child that lived this long resets the restart pause
HEALTHY_AFTER_S = 60.0
MAX_PAUSE_S = 30.0
#: beyond the drain grace, how long children get to exit before they are killed
EXIT_MARGIN_S = 10.0


class _Child:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.pause = 1.0


async def run_group(argv: Sequence[str], processes: int, *, grace_s: float, metrics_port: int | None) -> int:
    """Run `python -m cli <argv>` `processes` times until SIGTERM/SIGINT; the exit code of the group."""
    stop = stop_on_signals(asyncio.Event())
    with tempfile.TemporaryDirectory(prefix="smsfleet-metrics-") as samples:
        env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": samples}
        children = [_Child(i) for i in range(processes)]

        def ready() -> bool:
            return all(c.process is not None and c.process.returncode is None for c in children)

        async with metrics.probe_server(metrics_port, ready, samples=samples):
            exit_within = grace_s + EXIT_MARGIN_S
            keepers = [asyncio.create_task(_keep(c, argv, env, samples, stop, exit_within)) for c in children]
            log.info("group.running", processes=processes)
            await stop.wait()
            log.info("group.draining", grace_s=grace_s)
            for child in children:
                if child.process is not None and child.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.process.terminate()
            codes = await asyncio.gather(*keepers)
    forget_signals()
    log.info("group.stopped", exit_codes=codes)
    return 0 if all(code == 0 for code in codes) else 1


async def _keep(  # noqa: PLR0917
    child: _Child, argv: Sequence[str], env: dict[str, str], samples: str, stop: asyncio.Event, exit_within: float
) -> int:
    """Keep one child running until `stop`; then its exit code (killed after `exit_within` seconds)."""
    while True:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", *argv, env=env, preexec_fn=_die_with_parent
        )
        child.started = time.monotonic()
        log.info("group.child_started", child=child.index, pid=child.process.pid)
        exited = asyncio.create_task(child.process.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            stopping.cancel()
            try:
                code = await asyncio.wait_for(exited, exit_within)
            except TimeoutError:
                log.warning("group.child_killed", child=child.index, pid=child.process.pid)
                child.process.kill()
                code = await exited
            multiprocess.mark_process_dead(child.process.pid, samples)  # type: ignore[no-untyped-call]
            return code
        stopping.cancel()
        code = exited.result()
        multiprocess.mark_process_dead(child.process.pid, samples)  # type: ignore[no-untyped-call]
        lived = time.monotonic() - child.started
        pause = 1.0 if lived >= HEALTHY_AFTER_S else child.pause
        child.pause = min(pause * 2, MAX_PAUSE_S)
        log.warning("group.child_exited", child=child.index, code=code, lived_s=round(lived, 1), restart_in_s=pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        if stop.is_set():
            return 0


def _die_with_parent() -> None:
    """In the child, before it runs: a SIGTERM when the group dies (even by SIGKILL), so no worker outlives it
    unwatched (Linux; elsewhere a child outlives a killed group)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
