"""Stream Telecom end to end: workers in this process, the real RabbitMQ and Redis, the fake REST API.

Besides the sends and the status lookups, this checks that the session is shared: one login per worker role
(the send and the status worker each hold an adapter), not one per message, and that the jobs of one sender
share packets (`Send/SendBulkPacket/`) with a refused one failing alone.
"""

from __future__ import annotations

import json

from tests.fakes._base import Seen
from tests.fakes.streamtelecom import PACKET, SEND, SESSION, STATE, FakeStreamTelecom
from tests.integration.test_e2e_mts import EndToEnd, Run


class TestStreamtelecomEndToEnd(EndToEnd):
    async def test_jobs_are_sent_and_delivered(self, run: Run) -> None:
        jobs = [{"id": f"st{i}", "to": f"+7916123456{i}", "text": f"Код {i}", "originator": "ACME"} for i in range(4)]
        jobs.append({"id": "anon", "to": "+79160000000", "text": "no sender name"})  # Stream needs one
        async with FakeStreamTelecom(login="acme", password="pw", initial_state=0) as fake:
            config = {"login": "acme", "password": "pw", "base_url": fake.url}
            sender = {"id": "s1", "gateway": "streamtelecom", "settings": config}
            events = await run(sender, jobs)

        logins = [r.form for r in fake.requests if r.path == SESSION]
        assert 1 <= len(logins) <= 2
        assert all(form == {"login": "acme", "password": "pw"} for form in logins)
        sends = _sends(fake.requests)
        for i in range(4):
            form = sends[f"7916123456{i}"]
            assert form == {
                "destinationAddress": f"7916123456{i}",
                "data": f"Код {i}",
                "sourceAddress": "ACME",
                "sessionId": form["sessionId"],
            }
            assert form["sessionId"] in fake.sessions
        assert "sourceAddress" not in sends["79160000000"]
        ids = {f"st{i}": m.id for i, m in enumerate(sorted(fake.messages, key=lambda m: m.destination))}
        lookups = sorted(r.form["messageId"] for r in fake.requests if r.path == STATE)
        assert lookups == sorted(ids.values())
        for job_id, pid in ids.items():
            trail = events.by_job[job_id]
            assert [e.state for e in trail] == ["accepted", "delivered"]
            assert {e.provider_message_id for e in trail} == {pid}
        [rejected] = events.by_job["anon"]
        assert rejected.state == "rejected"
        assert rejected.error is not None
        assert rejected.error.code == "streamtelecom.no_sender"

    async def test_jobs_share_packets_and_a_refused_number_fails_alone(self, run: Run) -> None:
        """Stream's fake refuses a whole packet for one number it refuses: that job is rejected, and the others of
        its packet are sent on their own."""
        jobs = [{"id": f"b{i}", "to": f"+7916123{i:04d}", "text": f"Код {i}", "originator": "ACME"} for i in range(40)]
        jobs[5]["to"] = "+4721234567"  # a valid number whose direction the fake refuses
        async with FakeStreamTelecom(login="acme", password="pw", initial_state=0) as fake:
            config = {"login": "acme", "password": "pw", "base_url": fake.url}
            # its slots 1 ms apart (each message takes one), so that several fall within a request's linger
            events = await run({"id": "s2", "gateway": "streamtelecom", "settings": config, "rate_limit": 1000}, jobs)

        sizes = [len(json.loads(r.form["phone_data"])["sms"]) for r in fake.requests if r.path == PACKET]
        assert max(sizes, default=0) > 1, sizes  # batched
        assert len([r for r in fake.requests if r.path in (SEND, PACKET)]) < len(jobs)
        ids = {m.destination: m.id for m in fake.messages}
        assert len(fake.messages) == len(ids) == 39
        for job in jobs:
            trail = events.by_job[job["id"]]
            if job["id"] == "b5":
                assert [e.state for e in trail] == ["rejected"]
                assert trail[0].error is not None
                assert trail[0].error.code == "streamtelecom.direction"
            else:  # each job has its own message's id: the reply's entries were matched to the right jobs
                assert [e.state for e in trail] == ["accepted", "delivered"], (job["id"], trail)
                assert {e.provider_message_id for e in trail} == {ids[job["to"].lstrip("+")]}


def _sends(requests: list[Seen]) -> dict[str, dict[str, str]]:
    """Each message sent, by number, as the form of its single send, whether it went alone or in a packet."""
    sends = {}
    for r in requests:
        form = r.form
        if r.path == SEND:
            sends[form["destinationAddress"]] = form
        elif r.path == PACKET:
            shared = {k: v for k, v in form.items() if k != "phone_data"}
            for sms in json.loads(form["phone_data"])["sms"]:
                sends[sms["phone"]] = {"destinationAddress": sms["phone"], "data": sms["text"]} | shared
    return sends
