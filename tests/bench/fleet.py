"""Real `smsfleet worker` processes for the benchmarks, and what /proc says about their memory.

    with WorkerProcesses(settings) as fleet:
        fleet.start("--concurrency", "1000")
        await fleet.wait_until(lambda: len(seen) >= n, 600, "all sent")
        await fleet.stop()

Each process is `python -m smsfleet worker --gateway smsc --role send FLAGS`, configured by environment
(SMSFLEET_AMQP_URL / REDIS_URL / NAMESPACE) as in production, logging JSON warnings to a file of its own in
a temporary folder; a worker that exits early fails the wait with the end of its log. Leaving the `with`
kills every process still running and removes the logs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import aiohttp

from smsfleet.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class WorkerExited(RuntimeError):
    pass


class WorkerProcesses:
    def __init__(self, settings: Settings) -> None:
        self.env = {
            **os.environ,
            "SMSFLEET_AMQP_URL": settings.amqp_url,
            "SMSFLEET_REDIS_URL": settings.redis_url,
            "SMSFLEET_NAMESPACE": settings.namespace,
            "SMSFLEET_LOG_FORMAT": "json",
            "SMSFLEET_LOG_LEVEL": "warning",
        }
        self._logs = tempfile.TemporaryDirectory(prefix="smsfleet-bench-")
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(10)
        self._logs.cleanup()

    def start(self, *flags: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "smsfleet", "worker", "--gateway", "smsc", "--role", "send", *flags]
        with self._log_path(len(self.procs)).open("wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603 - our own CLI
        self.procs.append(proc)
        return proc

    def _log_path(self, n: int) -> Path:
        return Path(self._logs.name) / f"worker-{n}.log"

    def check(self) -> None:
        """Raise `WorkerExited` when a worker has exited, with the end of its log."""
        for n, proc in enumerate(self.procs):
            if proc.poll() is not None:
                tail = self._log_path(n).read_text(errors="replace")[-2000:]
                raise WorkerExited(f"worker {proc.pid} exited with {proc.returncode}:\n{tail}")

    async def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109 - a polling deadline
        deadline = time.monotonic() + timeout
        while not condition():
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"not {what} within {timeout:g} s")
            await asyncio.sleep(0.01)

    async def stop(self, timeout: float = 30) -> None:  # noqa: ASYNC109 - a polling deadline
        """SIGTERM every running worker and wait for them to exit; kill those still running after `timeout`."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def proc_status_kb(pid: int) -> dict[str, int]:
    """The `Vm*` lines of /proc/<pid>/status, in kB (VmRSS: resident now; VmHWM: the peak of VmRSS)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_ready(fleet: WorkerProcesses, port: int, timeout: float = 60) -> None:  # noqa: ASYNC109 - a polling deadline
    """Until the worker started with `--metrics-port port` answers 200 on /readyz (connected and consuming)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            fleet.check()
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker on port {port} not ready within {timeout:g} s")
            await asyncio.sleep(0.05)
