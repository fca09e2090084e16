"""MFMS EDNA end to end: workers in this process, the real RabbitMQ and Redis, the fake connector.

The sender names its credential parameters `user` and `pass`; every request the fake saw must carry them.
"""

from __future__ import annotations

from tests.fakes.edna import FakeEdna
from tests.integration.test_e2e_mts import EndToEnd, Run


class TestEdnaEndToEnd(EndToEnd):
    async def test_jobs_are_sent_and_delivered(self, run: Run) -> None:
        jobs = [
            {"id": "e1", "to": "+79161234567", "text": "Код; 1234", "originator": "ACME"},
            {"id": "e2", "to": "+79167654321", "text": "hello"},
            {"id": "e3", "to": "+79160000000", "text": "nope", "originator": "OTHER"},  # not allowed at the connector
        ]
        async with FakeEdna(
            login="acme", password="pw", login_field="user", password_field="pass", initial_status="delivered"
        ) as fake:
            config = {
                "url": fake.send_url,
                "login": "acme",
                "password": "pw",
                "login_field": "user",
                "password_field": "pass",
            }
            events = await run({"id": "s1", "gateway": "edna", "settings": config}, jobs)

        assert all((r.method, r.query["user"], r.query["pass"]) == ("GET", "acme", "pw") for r in fake.requests)
        assert not any({"login", "password"} & set(r.query) for r in fake.requests)
        sends = {r.query["clientId"]: r.query for r in fake.requests if r.path.endswith("/send")}
        auth = {"user": "acme", "pass": "pw"}
        assert sends["e1"] == auth | {
            "address": "79161234567",
            "text": "Код; 1234",
            "clientId": "e1",
            "subject": "ACME",
        }
        assert sends["e2"] == auth | {"address": "79167654321", "text": "hello", "clientId": "e2"}
        assert sends["e3"]["subject"] == "OTHER"
        ids = {m.client_id: m.provider_id for m in fake.messages}
        assert set(ids) == {"e1", "e2"}
        lookups = sorted(r.query["providerId[0]"] for r in fake.requests if r.path.endswith("/status"))
        assert lookups == sorted(ids.values())
        for job_id in ("e1", "e2"):
            trail = events.by_job[job_id]
            assert [e.state for e in trail] == ["accepted", "delivered"]
            assert {e.provider_message_id for e in trail} == {ids[job_id]}
        [rejected] = events.by_job["e3"]
        assert rejected.state == "rejected"
        assert rejected.error is not None
        assert rejected.error.code == "edna.error-subject-unknown"
