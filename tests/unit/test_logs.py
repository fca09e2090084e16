"""The log redaction processor hides secrets by key and phone numbers by shape."""

from __future__ import annotations

from smsfleet.logs import Redactor


def test_secrets_and_phones_are_redacted() -> None:
    event = {
        "event": "sms.sent to +79161234567",
        "password": "hunter2",
        "settings": {"api_token": "tok", "login": "acme", "nested": ["+79161234567"]},
        "at": "2026-11-25T12:50:31.092647Z",
        "job_id": "job-20261125",
    }
    out = Redactor()(None, "info", event)
    assert out["password"] == "***"
    assert out["settings"] == {"api_token": "***", "login": "acme", "nested": ["…4567"]}
    assert out["event"] == "sms.sent to …4567"
    assert out["at"] == "2026-11-25T12:50:31.092647Z"
    assert out["job_id"] == "job-20261125"


def test_phones_can_be_kept() -> None:
    assert Redactor(phones=False)(None, "info", {"to": "+79161234567"})["to"] == "+79161234567"
