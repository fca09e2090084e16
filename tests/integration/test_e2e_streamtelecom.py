"""Stream Telecom end to end: workers in this process, the real RabbitMQ and Redis, the fake REST API.

Besides the sends and the status lookups, this checks that the session is shared: one login per worker role
(the send and the status worker each hold an adapter), not one per message.
"""

from __future__ import annotations

from tests.fakes.streamtelecom import SEND, SESSION, STATE, FakeStreamTelecom
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
        sends = {r.form["destinationAddress"]: r.form for r in fake.requests if r.path == SEND}
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
