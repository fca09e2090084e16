"""Play Mobile end to end: workers in-process on the real broker and Redis, sending to the fake broker-api.

Play Mobile has no status lookup, so a job ends this path `accepted`, with our job id as the provider's id.
The rate is PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC (`Settings.play_mobile_rate`), not the adapter's 49/s.
"""

from __future__ import annotations

import base64
import itertools

import aio_pika
import msgspec
import redis.asyncio as aioredis

from gateways.playmobile import PlaymobileGateway
from smsfleet.contracts import State
from smsfleet.senders import SenderRegistry, parse_sender
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.fakes.playmobile import FakePlaymobile
from tests.integration.test_e2e_smsimple import status_events
from tests.integration.test_send_worker import fleet, publish, until

RATE = 4.0  # requests/s, set as the environment would; 6 sends then need at least 5 / RATE seconds
JOBS = {f"pm-{i}": f"+99890123450{i}" for i in range(6)}


async def test_sends_at_the_configured_rate(
    settings: Settings, amqp: aio_pika.abc.AbstractConnection, names: Names, redis: aioredis.Redis
) -> None:
    assert PlaymobileGateway.default_rate == 49.0  # what the adapter alone would allow
    settings = msgspec.structs.replace(settings, play_mobile_rate=RATE)
    async with FakePlaymobile(user_id="acme", password="pw") as fake:
        doc = {
            "id": "pm",
            "gateway": "playmobile",
            "accounts": ["acme"],
            "settings": {"user_id": "acme", "password": "pw", "base_url": fake.url},
        }
        await SenderRegistry(redis, names).create(parse_sender(doc))
        async with status_events(amqp, names) as seen, fleet(settings, ["playmobile"]):
            for job_id, to in JOBS.items():
                job = {"id": job_id, "sender": "pm", "account": "acme", "to": to, "text": "Salom", "originator": "ACME"}
                await publish(amqp, names, "playmobile.pm", msgspec.json.encode(job))
            await until(lambda: len(seen) == len(JOBS))

    auth = "Basic " + base64.b64encode(b"acme:pw").decode()
    assert all((path, headers["Authorization"]) == ("/broker-api/send", auth) for path, headers, _ in fake.requests)
    bodies = sorted((body for _, _, body in fake.requests), key=lambda b: b["messages"][0]["message-id"])
    assert bodies == [
        {
            "messages": [
                {
                    "recipient": to.lstrip("+"),
                    "message-id": job_id,
                    "sms": {"originator": "ACME", "content": {"text": "Salom"}},
                }
            ]
        }
        for job_id, to in sorted(JOBS.items())
    ]
    assert sorted((e.job_id, e.state, e.provider_message_id) for e in seen) == [
        (j, State.ACCEPTED, j) for j in sorted(JOBS)
    ]
    times = sorted(m.received_at for m in fake.messages)
    assert times[-1] - times[0] >= (len(JOBS) - 1) / RATE * 0.95  # at 49/s all six would arrive within ~0.1 s
    assert all(b - a >= 1 / RATE * 0.9 for a, b in itertools.pairwise(times))
