"""A deterministic fuzz of the receiver: every route and kind, with what attackers send (random bytes, broken
compressed streams, unknown charsets, JSON nested 100,000 deep, 3,000-parameter query strings and forms, huge
fields, invalid UTF-8, wrong methods, malformed HTTP on a raw socket).

No answer may be a 5xx, the process may not grow by 50 MB, no traceback may reach the log, and the log stays
within the per-client budget however many requests are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import io
import json
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from gateways import available
from smsfleet.kinds import KIND_SETTINGS
from smsfleet.logs import configure
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.samples import sample_sender
from webhooks import MAX_BODY, SERVER_OPTIONS, Options, Receiver, build_app

from .conftest import BARE, RAPPORTO, create, path_of

REQUESTS = 6_000
SEEDS = [
    b'{"id": "1", "state": "delivered"}',
    b'{"job_id": "j", "state": "undelivered", "error": {"code": "x"}}',
    b'{"from": "+79161234567", "to": "ACME", "text": "STOP"}',
    b'{"results": [{"messageId": "1", "status": {"groupName": "DELIVERED"}}]}',
    b'[{"messageId": "1", "status": "DELIVRD"}]',
    b"id=1&status=1&err=0&phone=79161234567",
    b"transactionId=5&status=2&partnerMsgId=j&unifiedExtStatus=0",
    b"clientId=79161234567&message=STOP&shortNumber=svc-17",
    b"<?xml version='1.0'?><reply><result>OK</result></reply>",
]
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "text/xml",
    "multipart/form-data; boundary=zz",
    "application/json; charset=utf-16",
    "application/json; charset=no-such-charset",
    "text/plain; charset=koi8-r",
    "application/x-www-form-urlencoded; charset=\xff",
    "",
]
METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO"]
RAW = [
    b"GET /smslistener/listen_type/sms_rapporto?token=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    b"POST /smslistener/listen_type/sms_sandbox HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /smslistener/listen_type/sms_sandbox HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /smslistener/listen_type/sms_sandbox HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
    b"GET /healthz HTTP/9.9\r\n\r\n",
    b"GET /smslistener/listen_type/sms_rapporto?clientId=79161234567&message=\xd0 HTTP/1.1\r\nHost: x\r\n\r\n",
]


def rss() -> int:
    """Resident set size of this process (the receiver runs in it), in bytes."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


def mutate(rng: random.Random, body: bytes) -> bytes:
    out = bytearray(body)
    for _ in range(rng.randint(0, 8)):
        if out:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def case(rng: random.Random, i: int, paths: list[str]) -> tuple[str, str, bytes, dict[str, str]]:  # noqa: PLR0911 - one return per shape
    """The i-th request: method, path, body, headers."""
    path = paths[(i // 12) % len(paths)]  # every shape on every path, however many paths there are
    headers = {"Content-Type": rng.choice(CONTENT_TYPES)}
    shape = i % 12
    if shape == 0:
        return "POST", path, rng.randbytes(rng.randint(0, 400)), headers
    if shape == 1:
        encoding = rng.choice(["deflate", "gzip", "br", "zstd", "compress", "x-unknown", "gzip, deflate"])
        body = rng.choice([rng.randbytes(64), zlib.compress(rng.randbytes(64))[:-4], gzip.compress(b"{}")[:10]])
        return "POST", path, body, {**headers, "Content-Encoding": encoding}
    if shape == 2:
        depth = rng.choice([1_000, 100_000])
        body = rng.choice([b"[" * depth, b'{"a":' * depth, b"[" * depth + b"]" * depth])
        return "POST", path, body, {"Content-Type": "application/json"}
    if shape == 3:
        params = "&".join(f"p{n}={n}" for n in range(3_000))
        if rng.random() < 0.5:  # over aiohttp's 8,190-byte request line: its own 400
            return "GET", f"{path}&{params}" if "?" in path else f"{path}?{params}", b"", {}
        return "POST", path, params.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    if shape == 4:
        field = "x" * rng.choice([10_000, 200_000, MAX_BODY + 10])  # the last one: 413
        return "POST", path, json.dumps({"id": field, "state": "delivered", "text": field}).encode(), headers
    if shape == 5:
        bad = rng.choice([b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
        return "POST", path, b'{"from": "+79161234567", "text": "' + bad + b'"}', headers
    if shape == 6:
        sep = "&" if "?" in path else "?"
        return "GET", f"{path}{sep}clientId=%FF%FE&message=%C3%28&status=%00&id=%ED%A0%80", b"", {}
    if shape == 7:
        return rng.choice(METHODS), path, rng.choice(SEEDS), headers
    if shape == 8:
        noise = "".join(rng.choice("ab/%.?&=:;@~") for _ in range(rng.randint(1, 60)))
        return rng.choice(["GET", "POST"]), rng.choice([f"/x{noise}", f"/smslistener/listen_type/sms_{noise}"]), b"", {}
    if shape == 9:
        return "GET", rng.choice(["/healthz", "/readyz", "/metrics", "/"]), rng.randbytes(16), headers
    if shape == 10:  # a forged or missing token
        forged = path.replace("token=", rng.choice(["token=x", "token=", "tok="]))
        return rng.choice(["GET", "POST"]), forged, rng.choice(SEEDS), headers
    return "POST", path, mutate(rng, rng.choice(SEEDS)), headers


async def raw_status(port: int, data: bytes) -> int | None:
    """The status a raw request gets, or None when the receiver closes the connection without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
    except ConnectionError:
        return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return int(line.split()[1]) if line.startswith(b"HTTP/") else None


@contextlib.contextmanager
def captured_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    saved, sys.stderr = sys.stderr, out
    configure("json", "info")
    try:
        yield out
    finally:
        configure("console", "warning")
        sys.stderr = saved


@pytest.mark.slow
async def test_no_request_gets_a_5xx_grows_the_process_or_floods_the_log(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: object
) -> None:
    paths = [BARE]
    for kind in available():
        if KIND_SETTINGS[kind].callbacks:
            doc = RAPPORTO if kind == "rapporto" else sample_sender(kind)
            paths.append(path_of(await create(redis, names, doc)))
    rng = random.Random(20_151)
    receiver = Receiver(settings, rapporto_ips=("127.0.0.1",), options=Options(rate_limit=0))
    server = TestServer(build_app(receiver))
    await server.start_server(**SERVER_OPTIONS)
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    with captured_log() as log:
        async with TestClient(server, connector=aiohttp.TCPConnector(force_close=True)) as client:
            before = 0
            for i in range(REQUESTS):
                if i == 300:  # after the warm-up: imports, caches, the first connections
                    gc.collect()
                    before = rss()
                method, path, body, headers = case(rng, i, paths)
                async with client.request(method, path, data=body, headers=headers) as reply:
                    await reply.read()
                    statuses[reply.status] += 1
                    assert reply.status < 500, (method, path[:120], body[:60], headers, reply.status)
            for data in RAW * 10:
                status = await raw_status(server.port or 0, data)
                statuses[status or 0] += 1
                assert status is None or status < 500, (data[:80], status)
            gc.collect()
            grown = rss() - before
    elapsed = time.monotonic() - started
    assert sum(statuses.values()) == REQUESTS + len(RAW) * 10
    assert not any(s >= 500 for s in statuses), statuses
    assert {200, 204, 400, 401, 404, 405, 413} <= set(statuses), statuses  # every way to fail was reached
    assert grown < 50 * 2**20, f"RSS grew by {grown / 2**20:.1f} MB"
    assert elapsed < 90, f"the fuzz took {elapsed:.0f} s"
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    # no traceback for any request (a broker connection closed by a chaos test nearby may log its own)
    requests = [line for line in lines if line.get("logger", "").startswith("aiohttp") or "client" in line]
    assert not [line for line in requests if "exception" in line]
    per_event = Counter(line["event"] for line in lines)
    # one client (127.0.0.1): 20 lines a minute of each kind of rejection, whatever the number of requests
    assert per_event["request.rejected"] <= 2 * 20, per_event
    assert per_event["http.bad_request"] <= 2 * 20, per_event
