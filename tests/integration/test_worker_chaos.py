"""Worker processes under abuse: `kill -9` mid-run, three processes sharing one sender's rate, SIGTERM with
sends in flight.

Each test runs real `smsfleet worker` processes (`python -m smsfleet.cli worker --gateway smsc --role all`)
against a fake SMSC served from the test's own event loop, so the test sees every request the workers
make. Status events are counted from an exclusive queue bound to `status.*` before the first job is
published. Events are delivered at least once, so the tests count distinct (job, final state) pairs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from gateways.smsc import smsc_id
from smsfleet.contracts import FINAL_STATES, State, StatusEvent
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.fakes.smsc import FakeSmsc

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SEND_PHP = "/sys/send.php"
_event_decoder = msgspec.json.Decoder(StatusEvent)


# -- helpers -------------------------------------------------------------------------------------------------


class Workers:
    """`smsfleet worker` processes, logging to files; every one still running is killed on exit."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.env = {
            **os.environ,
            "SMSFLEET_AMQP_URL": settings.amqp_url,
            "SMSFLEET_REDIS_URL": settings.redis_url,
            "SMSFLEET_NAMESPACE": settings.namespace,
            "SMSFLEET_LOG_FORMAT": "json",
            "SMSFLEET_LOG_LEVEL": os.environ.get("SMSFLEET_TEST_WORKER_LOG_LEVEL", "warning"),
        }
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *flags: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        argv = [sys.executable, "-m", "smsfleet.cli", "worker", "--gateway", "smsc", "--role", "all", *flags]
        with (self.logs / f"worker-{n}.log").open("wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603 - our own CLI
        self.procs.append(proc)
        return proc

    async def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:  # noqa: ASYNC109 - a polling deadline
        """SIGTERM, then wait for the exit status (polling, so the fake keeps serving meanwhile)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return await self.wait(proc, timeout)

    @staticmethod
    async def wait(proc: subprocess.Popen[bytes], timeout: float) -> int:  # noqa: ASYNC109 - a polling deadline
        deadline = time.monotonic() + timeout
        while (code := proc.poll()) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"worker {proc.pid} still running after {timeout:g} s")
            await asyncio.sleep(0.05)
        return code

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.logs / f"worker-{self.procs.index(proc)}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def workers(settings: Settings, logs: Path) -> Iterator[Workers]:
    fleet = Workers(settings, logs)
    try:
        yield fleet
    finally:
        fleet.kill_all()


class Events:
    """Status events by job id, from an exclusive queue bound to `status.*`."""

    def __init__(self) -> None:
        self.by_job: dict[str, list[StatusEvent]] = defaultdict(list)
        self.final: set[str] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def listen(cls, connection: aio_pika.abc.AbstractRobustConnection, names: Names) -> AsyncIterator[Events]:
        events = cls()
        async with connection.channel() as channel:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(names.events_exchange, routing_key="status.*")
            tag = await queue.consume(events._on_message, no_ack=True)
            yield events
            await queue.cancel(tag)

    async def _on_message(self, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = _event_decoder.decode(msg.body)
        self.by_job[event.job_id].append(event)
        if event.state in FINAL_STATES:
            self.final.add(event.job_id)

    def finals(self, job_id: str) -> list[StatusEvent]:
        return [e for e in self.by_job.get(job_id, ()) if e.state in FINAL_STATES]

    def final_states(self, job_id: str) -> set[State]:
        return {e.state for e in self.by_job.get(job_id, ()) if e.state in FINAL_STATES}

    async def wait_final(
        self,
        job_ids: Iterable[str],
        timeout: float,  # noqa: ASYNC109 - a polling deadline
        procs: Sequence[subprocess.Popen[bytes]] = (),
        *,
        stall: float = 30.0,
        ledger: tuple[aioredis.Redis, Names] | None = None,
    ) -> None:
        """Wait until every job has a final event; fail at `timeout`, after `stall` s without progress, or
        when a worker exits, saying in which ledger phase the missing jobs are."""
        missing = set(job_ids)
        deadline = time.monotonic() + timeout
        progress, last = time.monotonic(), len(missing)
        while True:
            missing -= self.final
            if not missing:
                return
            if len(missing) != last:
                progress, last = time.monotonic(), len(missing)
            dead = [p.pid for p in procs if p.poll() is not None]
            now = time.monotonic()
            if dead or now > deadline or now - progress > stall:
                why = f"worker {dead} exited" if dead else f"after {min(timeout, now - progress):.0f} s"
                phases = await ledger_phases(ledger, missing) if ledger else {}
                pytest.fail(
                    f"{len(missing)} jobs without a final event ({why}), e.g. {sorted(missing)[:3]}; "
                    f"their ledger phases: {phases}; their events: "
                    f"{dict(Counter(e.state.value for j in missing for e in self.by_job.get(j, ())))}"
                )
            await asyncio.sleep(0.1)


async def ledger_phases(ledger: tuple[aioredis.Redis, Names], job_ids: Iterable[str]) -> dict[str, int]:
    redis, names = ledger
    phases: Counter[str] = Counter()
    for job_id in job_ids:
        phase = await redis.hget(names.redis_key("job", job_id), "phase")
        phases[phase.decode() if isinstance(phase, bytes) else str(phase)] += 1
    return dict(phases)


async def publish_jobs(
    connection: aio_pika.abc.AbstractRobustConnection, names: Names, sender: str, job_ids: Sequence[str]
) -> None:
    """Publish one valid job per id (a phone number of its own each), confirmed, 500 in flight."""
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
        exchange = await channel.get_exchange(names.send_exchange, ensure=False)
        slots = asyncio.Semaphore(500)

        async def one(i: int, job_id: str) -> None:
            doc = {"id": job_id, "sender": sender, "account": "acme", "to": f"+7916{i:07d}", "text": f"Code {i}"}
            async with slots:
                await exchange.publish(
                    message(msgspec.json.encode(doc), message_id=job_id), f"smsc.{sender}", mandatory=True, timeout=30
                )

        await asyncio.gather(*(one(i, j) for i, j in enumerate(job_ids)))


async def create_sender(redis: aioredis.Redis, names: Names, fake: FakeSmsc, **settings: Any) -> None:
    doc = {
        "id": "s1",
        "gateway": "smsc",
        "accounts": ["acme"],
        "settings": {"login": fake.login, "password": fake.password, "await_delivery_s": 1, "base_url": fake.url}
        | settings.pop("settings", {}),
        "rate_limit": 1e6,
    }
    await SenderRegistry(redis, names).create(parse_sender(doc | settings))


async def until(condition: Any, timeout: float, what: str, procs: Sequence[Any] = ()) -> None:  # noqa: ASYNC109 - a polling deadline
    deadline = time.monotonic() + timeout
    while not condition():
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead:
            pytest.fail(f"worker {dead} exited while waiting until {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout:g} s")
        await asyncio.sleep(0.01)


def no_job_sent_twice(fake: FakeSmsc, job_ids: Sequence[str]) -> dict[str, int]:
    """Assert the fake created exactly one message per job; return request counts for the report."""
    per_id = Counter(m.id for m in fake.messages)
    assert per_id == Counter(smsc_id(j) for j in job_ids), "the fake's messages differ from the jobs"
    sends = [p for path, p in fake.requests if path == SEND_PHP]
    resends = len(sends) - len(fake.messages)  # requests that created nothing: SMSC's error 9, or failures
    return {"messages": len(fake.messages), "send_requests": len(sends), "requests_without_message": resends}


# -- 1. kill -9 --------------------------------------------------------------------------------------------


@pytest.mark.timeout(200)
async def test_kill_9_mid_run_loses_nothing_and_sends_nothing_twice(
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    n = 5000
    job_ids = [f"k9-{i:05d}" for i in range(n)]
    async with FakeSmsc("acme", "pw", initial_status=1) as fake, Events.listen(amqp, names) as events:
        await create_sender(redis, names, fake)
        await publish_jobs(amqp, names, "s1", job_ids)
        with workers(settings, tmp_path) as fleet:
            first = fleet.start()
            started = time.monotonic()
            await until(lambda: len(fake.messages) >= n // 3, 90, f"{n // 3} messages sent", [first])
            first.kill()  # SIGKILL: no drain, no acks, sends in flight cut off
            killed_at = len(fake.messages)
            assert await fleet.wait(first, 10) == -signal.SIGKILL
            second = fleet.start()
            await events.wait_final(job_ids, 150, [second], ledger=(redis, names))
            elapsed = time.monotonic() - started
            assert await fleet.stop(second) == 0, fleet.log(second)

    finals = {j: events.final_states(j) for j in job_ids}
    two = {j: s for j, s in finals.items() if len(s) > 1}
    assert not two, f"{len(two)} jobs with two different final states, e.g. {list(two.items())[:5]}"
    outcome = Counter(next(iter(s)) for s in finals.values())
    counts = no_job_sent_twice(fake, job_ids)
    duplicate_events = sum(len(evs) for evs in events.by_job.values()) - 2 * n
    print(f"\nkill -9 after {killed_at} of {n} sent; all final {elapsed:.1f} s after the first start")
    print(f"final states { {s.value: c for s, c in outcome.items()} }; {counts}; "
          f"events beyond one accepted + one final per job: {duplicate_events}")  # fmt: skip
    assert outcome[State.UNKNOWN] == 0, "SMSC dedupes, so an ambiguous send is resent, never left unknown"
    assert outcome == Counter({State.DELIVERED: n})


# -- 2. three processes, one sender at 49/s -----------------------------------------------------------------


class TimedRequests(list[tuple[str, dict[str, str]]]):
    """`FakeSmsc.requests` with the arrival time of each request (the fake keeps none)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: tuple[str, dict[str, str]]) -> None:
        self.times.append(time.time())
        super().append(item)


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    """The worst lateness of a 5 ms timer in this event loop (where the fake stamps its requests), in s."""
    worst = [0.0]

    async def watch() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            worst[0] = max(worst[0], time.monotonic() - before - 0.005)

    task = asyncio.create_task(watch())
    try:
        yield worst
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def max_per_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most events in any closed window of `window` seconds."""
    ordered = sorted(times)
    return max((bisect.bisect_right(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


@pytest.mark.timeout(120)
async def test_three_processes_keep_one_sender_under_49_per_second(
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    rate, n = 49, 1100  # about 23 s of sends
    job_ids = [f"rl-{i:05d}" for i in range(n)]
    async with FakeSmsc("acme", "pw", initial_status=1) as fake:
        fake.requests = TimedRequests()
        # await_delivery_s an hour: no status lookup shares the rate during the run, so the fake sees only sends
        await create_sender(redis, names, fake, rate_limit=rate, settings={"await_delivery_s": 3600})
        await publish_jobs(amqp, names, "s1", job_ids)
        with workers(settings, tmp_path) as fleet:
            async with loop_lag() as lag:  # the fake stamps arrivals: its loop must keep up for them to be true
                procs = [fleet.start() for _ in range(3)]
                await until(lambda: len(fake.messages) >= n, 90, f"{n} messages sent", procs)
            for proc in procs:
                assert await fleet.stop(proc) == 0, fleet.log(proc)

    times = [t for t, (path, _) in zip(fake.requests.times, fake.requests, strict=True) if path == SEND_PHP]
    no_job_sent_twice(fake, job_ids)
    worst = max_per_window(times)
    achieved = (len(times) - 1) / (max(times) - min(times))
    print(f"\n{len(times)} sends by 3 processes in {max(times) - min(times):.1f} s: max {worst} in any 1-s "
          f"window, {achieved:.2f}/s = {achieved / rate:.1%} of {rate}/s; the fake's loop lagged "
          f"<= {lag[0] * 1000:.1f} ms")  # fmt: skip
    (tmp_path / "send_times.json").write_text(json.dumps(times))
    assert worst <= rate
    assert achieved >= 0.95 * rate


# -- 3. SIGTERM with sends in flight --------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_sigterm_drains_sends_in_flight_and_exits_0(
    settings: Settings,
    names: Names,
    redis: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    n, grace = 500, 10.0
    job_ids = [f"term-{i:04d}" for i in range(n)]
    async with FakeSmsc("acme", "pw", latency=0.5, initial_status=1) as fake, Events.listen(amqp, names) as events:
        await create_sender(redis, names, fake)
        await publish_jobs(amqp, names, "s1", job_ids)
        with workers(settings, tmp_path) as fleet:
            first = fleet.start("--concurrency", "50", "--grace", str(grace))
            await until(lambda: len(fake.requests) > 0, 30, "the first request arrived", [first])
            await asyncio.sleep(2.0)
            in_flight = sum(path == SEND_PHP for path, _ in fake.requests) - len(fake.messages)
            first.send_signal(signal.SIGTERM)
            term = time.monotonic()
            code = await fleet.wait(first, grace + 5)
            took = time.monotonic() - term
            assert code == 0, fleet.log(first)
            assert took <= grace + 2.5, f"exited {took:.1f} s after SIGTERM"
            sent_by_first = len(fake.messages)
            second = fleet.start("--concurrency", "50", "--grace", str(grace))
            await events.wait_final(job_ids, 60, [second], ledger=(redis, names))
            assert await fleet.stop(second) == 0, fleet.log(second)

    finals = {j: events.final_states(j) for j in job_ids}
    assert all(len(s) == 1 for s in finals.values()), "a job with two different final states"
    outcome = Counter(next(iter(s)) for s in finals.values())
    counts = no_job_sent_twice(fake, job_ids)
    print(f"\nSIGTERM with ~{in_flight} sends in flight: exit 0 after {took:.1f} s, {sent_by_first} sent by then; "
          f"final states { {s.value: c for s, c in outcome.items()} }; {counts}")  # fmt: skip
    assert outcome == Counter({State.DELIVERED: n}), "a drained send must finish, not end unknown"
