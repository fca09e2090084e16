"""/metrics of a worker, and the receiver's counters (served on its metrics port), after a short run:
the series are there, with the right values."""

from __future__ import annotations

import socket

import aio_pika
import aiohttp
import msgspec
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smsfleet.contracts import SendJob
from smsfleet.senders import SenderRegistry, parse_sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.integration.test_send_worker import fleet, until
from webhooks import Receiver, build_app


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_and_receiver_metrics(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis, namespace: str
) -> None:
    sender_id = f"m-{namespace}"  # labels of this test only: the registry of metrics is per process
    doc = {"id": sender_id, "gateway": "sandbox", "accounts": ["acme"], "settings": {"await_delivery_s": 1}}
    sender = await SenderRegistry(redis, names).create(parse_sender(doc))
    port = free_port()
    delivered = (("gateway", "sandbox"), ("sender", sender_id), ("state", "delivered"))
    async with fleet(settings, ["sandbox"], metrics_port=port), aiohttp.ClientSession() as http:
        async with amqp.channel() as channel:
            exchange = await channel.get_exchange(names.send_exchange)
            for i in range(12):
                job = SendJob(id=f"{namespace}-{i}", sender=sender_id, account="acme", to="+79161234567", text="hi")
                await exchange.publish(message(msgspec.json.encode(job)), routing_key=f"sandbox.{sender_id}")

        async def scrape() -> str:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as reply:
                return await reply.text()

        async def all_delivered() -> bool:
            return samples(await scrape(), "smsfleet_jobs_total").get(delivered) == 12

        await until(all_delivered, within=20)
        text = await scrape()
        assert samples(text, "smsfleet_provider_requests_total")[(("gateway", "sandbox"), ("outcome", "ok"))] >= 12
        assert samples(text, "smsfleet_provider_latency_seconds_count")[(("gateway", "sandbox"),)] >= 12
        assert samples(text, "smsfleet_rechecks_total")[(("gateway", "sandbox"), ("result", "final"))] >= 12
        assert (("queue", names.send_queue("sandbox")),) in samples(text, "smsfleet_queue_depth")
        for probe in ("livez", "readyz"):
            async with http.get(f"http://127.0.0.1:{port}/{probe}") as reply:
                assert reply.status == 200

    async with TestClient(TestServer(build_app(Receiver(settings)))) as client:
        url = receiving_url(sender, "http://x") or ""
        path = url.removeprefix("http://x")
        before = samples(generate_latest().decode(), "smsfleet_callbacks_total")
        key = (("gateway", "sandbox"), ("status", "200"))
        assert (await client.post(path, json={"job_id": f"{namespace}-0", "state": "delivered"})).status == 200
        assert (await client.post(path.replace("token=", "token=x"), json={})).status == 401
        after = samples(generate_latest().decode(), "smsfleet_callbacks_total")
        assert after[key] == before.get(key, 0) + 1
        assert after[(("gateway", "sandbox"), ("status", "401"))] >= 1
