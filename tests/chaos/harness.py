"""What the worker tests share: worker fleets, the status events they emit, publishing, faults, and the books.

The books (`Books`) are the chaos suite's one accounting, kept the same way in every case:

1. every job is classified when it is published: the outcomes that count as right for it (final states, or
   `dead`: parked in `<ns>.dead`), and whether the broker confirmed it;
2. every side effect at the fake SMSC is counted per job, by the text the job carries (each job's text is
   its own, so this owes nothing to our bookkeeping): the messages the provider created, and the send
   requests that asked for one;
3. the fault heals, the system drains, and `settle` waits until every confirmed job has ended (a final status
   event, or parked) or progress stops, then writes one row and checks it:

    lost        confirmed, but never reached a final event (nor the dead queue)        must be 0
    duplicated  more than one message created at the provider for the job               must be 0
    misattributed  a final event naming a provider message that is not one of the job's own  must be 0
    unknown     ended `unknown`                                                         must be expected
    resends     send requests beyond the first per job (retries, resends after ambiguity): reported

Every case uses SMSC, whose fake behaves only as SMSC documents: an identical request is refused (error 9)
within a minute, and nothing is deduplicated by our id. An ambiguous send is reconciled by a status lookup
before it is sent again, so no case allows a duplicate; a resend shows as a request only.

Status events are collected from a durable queue of the test's own, bound to `status.*` before the first
publish and consumed with acks, so it survives a broker restart or its connections being closed. Events
are delivered at least once: outcomes are sets of distinct final states.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis

from smsfleet.contracts import FINAL_STATES, State, StatusEvent
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import QueueLimits, Settings
from smsfleet.topology import Names, message, queue_arguments
from tests.fakes.bulksms import FakeBulksms
from tests.fakes.bulksms import FakeMessage as FakeBulksmsMessage
from tests.fakes.playmobile import FakePlaymobile, SentMessage
from tests.fakes.smsc import FakeSmsc
from workers import SendPolicy, run_workers

#: the fakes a case can send through: SMSC (one request per SMS), BulkSMS (batched requests, its rate limit
#: counting messages) and Play Mobile (batched requests, its rate limit counting requests; no status lookup)
Provider = FakeSmsc | FakeBulksms | FakePlaymobile


def provider(kind: str, latency: float = 0.0) -> Provider:
    """The fake of `kind` ("smsc", "bulksms" or "playmobile"), answering after `latency`; every message is
    delivered at once, where the provider can be asked (Play Mobile cannot: its jobs end at the status horizon)."""
    if kind == "bulksms":
        return FakeBulksms("acme", "pw", initial_status="DELIVERED", latency=latency)
    if kind == "playmobile":
        return FakePlaymobile("acme", "pw", latency=latency)
    return FakeSmsc("acme", "pw", initial_status=1, latency=latency)


ROOT = Path(__file__).resolve().parents[2]
SEND_PHP = "/sys/send.php"
DEAD = "dead"  # the outcome of a job parked in `<ns>.dead`
DELIVERED = frozenset({State.DELIVERED.value})
ROW_KEY = "chaos"  # the key of a case's row in its test item's `user_properties` (the report reads it there)

_event_decoder = msgspec.json.Decoder(StatusEvent)
Running = subprocess.Popen[bytes] | asyncio.Task[None]


def _exited(worker: Running) -> bool:
    return worker.done() if isinstance(worker, asyncio.Task) else worker.poll() is not None


# -- workers ----------------------------------------------------------------------------------------------


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
        argv = [sys.executable, "-m", "smsfleet", "worker", "--gateway", "smsc", "--role", "all", *flags]
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


@contextlib.asynccontextmanager
async def fleet(settings: Settings, gateways: Sequence[str], policy: SendPolicy) -> AsyncIterator[asyncio.Task[None]]:
    """`run_workers` (send and status roles) as a task in this process, stopped and drained on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_workers(settings, gateways=gateways, status=True, policy=policy, grace_s=5.0, stop=stop)
    )
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(condition: Callable[[], object], timeout: float, what: str, procs: Sequence[Running] = ()) -> None:  # noqa: ASYNC109 - a polling deadline
    deadline = time.monotonic() + timeout
    while not condition():
        if dead := [p for p in procs if _exited(p)]:
            pytest.fail(f"worker {dead} exited while waiting until {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout:g} s")
        await asyncio.sleep(0.01)


# -- events -----------------------------------------------------------------------------------------------


class Events:
    """Status events by job id (and, with `dead=True`, the jobs parked in `<ns>.dead`, by message id)."""

    def __init__(self) -> None:
        self.by_job: dict[str, list[StatusEvent]] = defaultdict(list)
        self.final: set[str] = set()
        self.parked: dict[str, dict[str, Any]] = {}  # job id -> the dead letter's headers
        self.connection: aio_pika.abc.AbstractConnection | None = None  # to tell where the missing jobs wait

    @classmethod
    @contextlib.asynccontextmanager
    async def listen(
        cls, connection: aio_pika.abc.AbstractRobustConnection, names: Names, *, dead: bool = False
    ) -> AsyncIterator[Events]:
        """Collect from a durable queue bound to `status.*` (deleted on the way out); `dead`: also consume
        `<ns>.dead` (taking its messages off the queue)."""
        events = cls()
        events.connection = connection
        async with connection.channel() as channel:
            queue = await channel.declare_queue(f"{names.ns}.test-events", durable=True)
            try:
                await queue.bind(names.events_exchange, routing_key="status.*")
                await queue.consume(events._on_event)
                if dead:
                    parked = await channel.declare_queue(names.dead_queue, passive=True)
                    await parked.consume(events._on_dead)
                yield events
            finally:
                with contextlib.suppress(Exception):
                    await queue.delete(if_unused=False, if_empty=False)

    async def _on_event(self, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = _event_decoder.decode(msg.body)
        self.by_job[event.job_id].append(event)
        if event.state in FINAL_STATES:
            self.final.add(event.job_id)
        await msg.ack()

    async def _on_dead(self, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.parked[msg.message_id or "?"] = dict(msg.headers or {})
        await msg.ack()

    def finals(self, job_id: str) -> list[StatusEvent]:
        return [e for e in self.by_job.get(job_id, ()) if e.state in FINAL_STATES]

    def final_states(self, job_id: str) -> set[State]:
        return {e.state for e in self.finals(job_id)}

    def outcomes(self, job_id: str) -> set[str]:
        """How the job ended: its distinct final states, and `dead` when it was parked."""
        return {s.value for s in self.final_states(job_id)} | ({DEAD} if job_id in self.parked else set())

    async def wait(
        self,
        job_ids: Iterable[str],
        timeout: float,  # noqa: ASYNC109 - a polling deadline
        procs: Sequence[Running] = (),
        *,
        stall: float = 30.0,
    ) -> str | None:
        """Wait until every job has ended (a final event, or parked). None, or why the wait stopped first: at
        `timeout`, after `stall` s without progress, or when a worker exited."""
        missing = set(job_ids)
        deadline = time.monotonic() + timeout
        progress, last = time.monotonic(), len(missing)
        while True:
            missing -= self.final | self.parked.keys()
            if not missing:
                return None
            now = time.monotonic()
            if len(missing) != last:
                progress, last = now, len(missing)
            if dead := [p for p in procs if _exited(p)]:
                return f"worker {dead} exited"
            if now > deadline or now - progress > stall:
                return f"no progress for {now - progress:.0f} s" if now <= deadline else f"after {timeout:g} s"
            await asyncio.sleep(0.1)

    async def wait_final(
        self,
        job_ids: Iterable[str],
        timeout: float,  # noqa: ASYNC109 - a polling deadline
        procs: Sequence[Running] = (),
        *,
        stall: float = 30.0,
        ledger: tuple[aioredis.Redis, Names] | None = None,
    ) -> None:
        """`wait`, failing the test when a job has not ended, saying in which ledger phase the missing are."""
        job_ids = list(job_ids)
        why = await self.wait(job_ids, timeout, procs, stall=stall)
        if why is not None:
            pytest.fail(await self.missing(job_ids, why, ledger))

    async def missing(self, job_ids: Iterable[str], why: str, ledger: tuple[aioredis.Redis, Names] | None) -> str:
        missing = sorted(j for j in job_ids if not self.outcomes(j))
        phases = await ledger_phases(ledger, missing) if ledger else {}
        seen = Counter(e.state.value for j in missing for e in self.by_job.get(j, ()))
        queues = await queue_depths(self.connection, ledger[1]) if self.connection and ledger else {}
        return (
            f"{len(missing)} jobs without a final event ({why}), e.g. {missing[:3]}; "
            f"their ledger phases: {phases}; their events: {dict(seen)}; the queues (messages, consumers): {queues}"
        )


async def queue_depths(connection: aio_pika.abc.AbstractConnection, names: Names) -> dict[str, tuple[int, int]]:
    """The messages and consumers of the namespace's queues that hold messages, and of the status queue."""
    depths = {}
    with contextlib.suppress(Exception):  # a diagnosis: the broker in trouble must not hide the failure it explains
        async with connection.channel() as channel:
            for name in queue_arguments(names, QueueLimits()):
                declared = (await channel.declare_queue(name, passive=True)).declaration_result
                if declared.message_count or name == names.status_queue:
                    depths[name] = (declared.message_count, declared.consumer_count)
    return depths


async def ledger_phases(ledger: tuple[aioredis.Redis, Names], job_ids: Iterable[str]) -> dict[str, int]:
    redis, names = ledger
    phases: Counter[str] = Counter()
    for job_id in job_ids:
        phase, emitted = await redis.hmget(names.redis_key("job", job_id), "phase", "emitted")
        text = phase.decode() if isinstance(phase, bytes) else str(phase)
        phases[text + (" (its event unconfirmed)" if emitted == b"0" else "")] += 1
    return dict(phases)


async def all_final(redis: aioredis.Redis, names: Names, job_ids: Sequence[str], timeout: float) -> dict[str, str]:  # noqa: ASYNC109 - a polling deadline
    """Wait until the ledger holds a final state for every job; the states by job."""
    deadline = time.monotonic() + timeout
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(names.redis_key("job", job_id), ["phase", "state"])
            rows = await pipe.execute()
        states = {j: (s or b"").decode() for j, (p, s) in zip(job_ids, rows, strict=True) if p == b"final"}
        if len(states) == len(job_ids):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"{len(job_ids) - len(states)} of {len(job_ids)} jobs not final within {timeout:g} s")
        await asyncio.sleep(0.2)


# -- senders and jobs -------------------------------------------------------------------------------------


def smsc_sender(sender_id: str, fake: FakeSmsc, accounts: Sequence[str], **extra: Any) -> dict[str, Any]:
    settings = {"login": fake.login, "password": fake.password, "await_delivery_s": 1, "base_url": fake.url}
    settings |= extra.pop("settings", {})
    return {"id": sender_id, "gateway": "smsc", "accounts": list(accounts), "settings": settings,
            "rate_limit": 1e6, **extra}  # fmt: skip


async def create_senders(redis: aioredis.Redis, names: Names, docs: Iterable[dict[str, Any]]) -> None:
    registry = SenderRegistry(redis, names)
    for doc in docs:
        await registry.create(parse_sender(doc))


def bulksms_sender(sender_id: str, fake: FakeBulksms, accounts: Sequence[str], **extra: Any) -> dict[str, Any]:
    settings = {"login": fake.username, "password": fake.password, "await_delivery_s": 1, "base_url": fake.url}
    settings |= extra.pop("settings", {})
    return {"id": sender_id, "gateway": "bulksms", "accounts": list(accounts), "settings": settings,
            "rate_limit": 1e6, **extra}  # fmt: skip


def playmobile_sender(sender_id: str, fake: FakePlaymobile, accounts: Sequence[str], **extra: Any) -> dict[str, Any]:
    """At the account's limit of requests a second (PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC, 49) unless `rate_limit`
    lowers it."""
    settings = {"user_id": fake.user_id, "password": fake.password, "base_url": fake.url} | extra.pop("settings", {})
    return {"id": sender_id, "gateway": "playmobile", "accounts": list(accounts), "settings": settings, **extra}


async def create_sender(redis: aioredis.Redis, names: Names, fake: Provider, **extra: Any) -> None:
    """Sender `s1` of account `acme` on `fake`, unthrottled unless `rate_limit` says otherwise (Play Mobile: at
    its account's limit)."""
    if isinstance(fake, FakeBulksms):
        doc = bulksms_sender("s1", fake, ["acme"], **extra)
    elif isinstance(fake, FakePlaymobile):
        doc = playmobile_sender("s1", fake, ["acme"], **extra)
    else:
        doc = smsc_sender("s1", fake, ["acme"], **extra)
    await create_senders(redis, names, [doc])


def phone(i: int) -> str:
    return f"+7916{i % 10_000_000:07d}"


def _text_of(body: bytes) -> str:
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return ""
    return str(doc.get("text", "")) if isinstance(doc, dict) else ""


def job_body(job_id: str, sender: str, account: str, to: str, text: str = "", **extra: Any) -> bytes:
    doc = {"id": job_id, "sender": sender, "account": account, "to": to, "text": text or f"Your code is {job_id}"}
    return msgspec.json.encode(doc | extra)


class Job(NamedTuple):
    """One message to publish, and the outcomes that count as right for it."""

    id: str
    routing_key: str
    body: bytes
    expect: frozenset[str] = DELIVERED


def valid_jobs(
    prefix: str, n: int, sender: str = "s1", expect: frozenset[str] = DELIVERED, kind: str = "smsc"
) -> list[Job]:
    """`n` valid jobs for `sender` (of account `acme`, a `kind` sender), a phone number of their own each."""
    ids = [f"{prefix}-{i:05d}" for i in range(n)]
    return [Job(j, f"{kind}.{sender}", job_body(j, sender, "acme", phone(i)), expect) for i, j in enumerate(ids)]


async def publish_raw(
    connection: aio_pika.abc.AbstractRobustConnection,
    names: Names,
    items: Sequence[tuple[str, bytes, str]],
    in_flight: int = 500,
    confirmed: set[str] | None = None,
) -> None:
    """Publish `(routing_key, body, message_id)` to `<ns>.send`: persistent, mandatory, confirmed; each
    confirmed message id is added to `confirmed`."""
    async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
        exchange = await channel.get_exchange(names.send_exchange, ensure=False)
        slots = asyncio.Semaphore(in_flight)

        async def one(key: str, body: bytes, message_id: str) -> None:
            async with slots:
                await exchange.publish(message(body, message_id=message_id), key, mandatory=True, timeout=30)
            if confirmed is not None:
                confirmed.add(message_id)

        await asyncio.gather(*(one(*item) for item in items))


async def publish_jobs(
    connection: aio_pika.abc.AbstractRobustConnection, names: Names, sender: str, job_ids: Sequence[str]
) -> None:
    """Publish one valid job per id (a phone number of its own each), confirmed, 500 in flight."""
    items = [(f"smsc.{sender}", job_body(j, sender, "acme", phone(i)), j) for i, j in enumerate(job_ids)]
    await publish_raw(connection, names, items)


# -- faults -----------------------------------------------------------------------------------------------


def _local(url: str) -> bool:
    return "127.0.0.1" in url or "localhost" in url


def local_rabbitmqctl(settings: Settings) -> str:
    """The local broker's `rabbitmqctl`; the test is skipped when the broker is not a local one."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or not _local(settings.amqp_url):
        pytest.skip("needs the local RabbitMQ and its rabbitmqctl")
    return ctl


async def rabbitmqctl(ctl: str, *args: str) -> None:
    await asyncio.to_thread(subprocess.run, [ctl, *args], check=True, capture_output=True)


@contextlib.asynccontextmanager
async def broker_stopped(ctl: str) -> AsyncIterator[None]:
    """RabbitMQ's application stopped for the block; started again, and up, after it whatever happens."""
    await rabbitmqctl(ctl, "stop_app")
    try:
        yield
    finally:
        await rabbitmqctl(ctl, "start_app")
        await rabbitmqctl(ctl, "await_startup")


async def redis_pid(redis: aioredis.Redis, url: str) -> int:
    """The pid of the redis-server the tests use, from its own `INFO server` (`pidof` would also see any other
    redis-server on the machine). A Redis that is not local cannot be paused: skipped, or under CI=true failed."""
    if not _local(url):
        message = "needs the local redis-server to pause"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the Redis cases must run)", pytrace=False)
        pytest.skip(message)
    info = await redis.info("server")
    return int(info["process_id"])


_WATCHDOG = "import os, signal, sys, time; time.sleep(float(sys.argv[1])); os.kill(int(sys.argv[2]), signal.SIGCONT)"


async def broker_pid(ctl: str) -> int:
    """The pid of the local broker's Erlang VM, as the broker itself gives it (`pidof beam.smp` would also see
    any other Erlang VM on the machine)."""
    done = await asyncio.to_thread(
        subprocess.run, [ctl, "eval", "list_to_integer(os:getpid())."], check=True, capture_output=True, text=True
    )
    return int(done.stdout.strip())


@contextlib.contextmanager
def paused(pid: int, at_most: float = 15.0) -> Iterator[None]:
    """A server (redis-server, the broker) stopped (SIGSTOP) for the block: its connections stay open and hang, as
    on a network partition, a stalled disk or a paused VM.

    SIGCONT at the end of the block, and from a watchdog process after `at_most` s should this one die first.
    """
    argv = [sys.executable, "-c", _WATCHDOG, str(at_most), str(pid)]
    watchdog = subprocess.Popen(argv, start_new_session=True)  # noqa: S603 - our own one-liner
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        watchdog.kill()
        watchdog.wait()


@contextlib.asynccontextmanager
async def redis_refusing(url: str) -> AsyncIterator[None]:
    """Redis down for the block, as a stopped server is: every client's connection is dropped and new ones are
    refused at once ("max number of clients reached"), so each call fails fast instead of hanging. Only this
    block's own connection is kept, to restore the limit at the end."""
    async with aioredis.Redis.from_url(url, single_connection_client=True) as control:
        limit = int((await control.config_get("maxclients"))["maxclients"] or 10000)
        await control.config_set("maxclients", 1)
        try:
            for kind in ("normal", "pubsub"):
                await control.client_kill_filter(_type=kind, skipme=True)
            yield
        finally:
            await control.config_set("maxclients", limit)


@contextlib.asynccontextmanager
async def redis_away(fault: str, redis: aioredis.Redis, url: str, seconds: float) -> AsyncIterator[None]:
    """Redis away for the block: `paused` (SIGSTOP: calls hang) or `refusing` (`redis_refusing`, calls
    fail at once). `seconds`: how long the block is meant to last (the watchdog of a pause allows 10 s more)."""
    if fault == "paused":
        with paused(await redis_pid(redis, url), at_most=seconds + 10):
            yield
    else:
        async with redis_refusing(url):
            yield


# -- timing -----------------------------------------------------------------------------------------------


class TimedRequests(list[Any]):
    """A fake's `requests` with the arrival time of each request (the fakes keep none)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(time.time())
        super().append(item)

    def sends(self) -> list[float]:
        """The arrival times of `FakeSmsc`'s send requests."""
        return [t for t, (path, _) in zip(self.times, self, strict=True) if path == SEND_PHP]


def asked(fake: Provider, seen: Any) -> int:
    """How many messages a request to `fake` (an item of its `requests`) asked it to send."""
    if isinstance(fake, FakeBulksms):  # an array of messages, or one
        if (seen.method, seen.path) != ("POST", "/v1/messages"):
            return 0
        body = seen.json()
        return len(body) if isinstance(body, list) else 1
    if isinstance(fake, FakePlaymobile):
        _, _, body = seen
        return len(body.get("messages") or []) if isinstance(body, dict) else 0
    path, _ = seen
    return int(path == SEND_PHP)


def send_times(fake: Provider) -> list[float]:
    """When `fake` (its `requests` a `TimedRequests`) saw its sender's rate spent, once for each unit the
    provider limits: a message (SMSC, BulkSMS: a request of n messages counts n times) or a request (Play
    Mobile)."""
    assert isinstance(fake.requests, TimedRequests)
    per_request = isinstance(fake, FakePlaymobile)
    spent = ((t, asked(fake, seen)) for t, seen in zip(fake.requests.times, fake.requests, strict=True))
    return [t for t, n in spent for _ in range(min(n, 1) if per_request else n)]


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


# -- the books --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One case's line of the report."""

    case: str
    jobs: int
    published: int  # confirmed by the broker
    final: int  # ended: a final event, or parked as expected
    lost: int
    duplicated: int
    misattributed: int
    unknown: int
    resends: int
    states: dict[str, int]
    notes: str


class Books:
    """The accounting of one case (see the module doc). Made by the `books` fixture, named after the test."""

    def __init__(self, case: str, record: list[tuple[str, object]]) -> None:
        self.case = case
        self.record = record  # the test item's user_properties
        self.expected: dict[str, frozenset[str]] = {}
        self.texts: dict[str, str] = {}  # a job's text -> its id: what the fake received, told apart
        self.confirmed: set[str] = set()
        self.notes: list[str] = []
        self.row: dict[str, Any] | None = None  # as recorded for the report

    def note(self, text: str) -> None:
        """A remark for the row's notes (also after `settle`)."""
        self.notes.append(text)
        if self.row is not None:
            self.row["notes"] = "; ".join(self.notes)

    async def publish(
        self, connection: aio_pika.abc.AbstractRobustConnection, names: Names, jobs: Sequence[Job]
    ) -> None:
        self.expected |= {job.id: job.expect for job in jobs}
        self.texts |= {_text_of(job.body): job.id for job in jobs}
        await publish_raw(connection, names, [(j.routing_key, j.body, j.id) for j in jobs], confirmed=self.confirmed)

    async def settle(
        self,
        events: Events,
        fakes: Provider | Sequence[Provider],
        *,
        timeout: float,  # noqa: ASYNC109 - a polling deadline
        procs: Sequence[Running] = (),
        stall: float = 30.0,
        ledger: tuple[aioredis.Redis, Names] | None = None,
    ) -> Row:
        """Wait until every confirmed job has ended (or progress stops), write the row, and check it."""
        why = await events.wait(self.confirmed, timeout, procs, stall=stall)
        lost_detail = await events.missing(self.confirmed, why, ledger) if why else ""
        outcomes = {j: events.outcomes(j) for j in self.expected}
        row, problems = self._count(events, outcomes, [fakes] if isinstance(fakes, Provider) else fakes)
        if why:
            self.note(f"stopped waiting: {why}")
        row.notes = "; ".join(self.notes)
        self.row = dataclasses.asdict(row)
        self.record.append((ROW_KEY, self.row))
        if row.lost:
            problems.insert(0, lost_detail)
        if row.published != row.jobs:
            problems.insert(0, f"{row.jobs - row.published} publishes not confirmed")
        assert not problems, "; ".join(problems)
        return row

    def _count(self, events: Events, outcomes: dict[str, set[str]], fakes: Sequence[Provider]) -> tuple[Row, list[str]]:
        created: Counter[str] = Counter()
        asked: Counter[str] = Counter()
        own: defaultdict[str, set[str]] = defaultdict(set)  # job id -> the provider ids of its messages
        strays = 0
        for fake in fakes:
            for m in fake.messages:
                text = m.body if isinstance(m, FakeBulksmsMessage) else m.text
                if text in self.texts:  # (Play Mobile's id is ours: the job's `message-id`)
                    created[self.texts[text]] += 1
                    own[self.texts[text]].add(m.message_id if isinstance(m, SentMessage) else str(m.id))
                else:
                    strays += 1
            if isinstance(fake, FakeSmsc):  # (a batched request's entries are not counted as asks)
                for path, params in fake.requests:
                    if path == SEND_PHP and params.get("mes") in self.texts:
                        asked[self.texts[params["mes"]]] += 1
        misattributed = sorted(
            j for j in self.expected
            for e in events.finals(j) if e.provider_message_id and e.provider_message_id not in own[j]
        )  # fmt: skip
        ended = {j: o for j, o in outcomes.items() if o}
        states = Counter("+".join(sorted(o)) for o in ended.values())
        duplicated = sorted(j for j, n in created.items() if n > 1)
        conflicting = sorted(j for j, o in ended.items() if len(o) > 1)
        wrong = sorted(j for j, o in ended.items() if not o <= self.expected[j])
        problems = []
        if duplicated:
            problems.append(f"{len(duplicated)} jobs with more than one message at the provider, e.g. {duplicated[:3]}")
        if conflicting:
            problems.append(f"{len(conflicting)} jobs with two different final states, e.g. {conflicting[:3]}")
        if wrong:
            examples = [(j, sorted(ended[j]), sorted(self.expected[j])) for j in wrong[:3]]
            problems.append(f"{len(wrong)} jobs ended otherwise than expected, e.g. {examples}")
        if strays:
            problems.append(f"{strays} messages at the provider that belong to no job")
        if misattributed:
            problems.append(f"{len(misattributed)} final events naming another job's message, e.g. {misattributed[:3]}")
        row = Row(
            case=self.case,
            jobs=len(self.expected),
            published=len(self.confirmed & self.expected.keys()),
            final=len(ended),
            lost=sum(1 for j in self.confirmed if not outcomes.get(j)),
            duplicated=len(duplicated),
            misattributed=len(set(misattributed)),
            unknown=sum(State.UNKNOWN.value in o for o in ended.values()),
            resends=sum(n - 1 for n in asked.values() if n > 1),
            states=dict(sorted(states.items())),
            notes="",
        )
        return row, problems


@dataclasses.dataclass(frozen=True)
class Case:
    """One chaos case's fixtures (the `case` fixture) and the set-up every case starts from."""

    settings: Settings
    names: Names
    redis: aioredis.Redis
    amqp: aio_pika.abc.AbstractRobustConnection
    books: Books
    tmp_path: Path

    @contextlib.asynccontextmanager
    async def backlog(
        self, fake: Provider, jobs: Sequence[Job], *, dead: bool = False, **sender: Any
    ) -> AsyncIterator[Events]:
        """`fake` serving sender `s1` (`sender`: its fields beyond the defaults of `smsc_sender`), the
        events collected (`dead`: `<ns>.dead` too), then `jobs` published; the fake stops on the way out."""
        async with fake, Events.listen(self.amqp, self.names, dead=dead) as events:
            await create_sender(self.redis, self.names, fake, **sender)
            await self.books.publish(self.amqp, self.names, jobs)
            yield events

    async def settle(self, events: Events, fake: Provider, *, timeout: float, procs: Sequence[Running]) -> Row:  # noqa: ASYNC109 - a polling deadline
        """`Books.settle`, a lost job looked up in this case's ledger."""
        return await self.books.settle(events, fake, timeout=timeout, procs=procs, ledger=(self.redis, self.names))
