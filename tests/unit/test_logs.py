"""The log redaction processor hides secrets by key and by shape, and phone numbers in any common writing."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from smsfleet.logs import Redactor, configure, redact_text


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


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("phone:79161234567", "phone:…4567"),
        ("to +79161234567.", "to …4567."),
        ("+7 916 123-45-67", "…4567"),
        ("8 (916) 123-45-67", "…4567"),
        ("(916) 123-45-67", "…4567"),
        ("+7 (916) 123 45 67", "…4567"),
        ("8-916-123-45-67", "…4567"),
        ("clientId=79161234567&message=STOP", "clientId=…4567&message=STOP"),
        ("clientId=%2B79161234567", "clientId=…4567"),
        ("clientId=+7+916+123-45-67", "clientId=…4567"),  # a URL's + for a space
        ("to=%2B7%20916%20123%2045%2067", "to=…4567"),
        ("id79161234567", "id…4567"),
        ("79161234567 79031112233", "…4567 …2233"),
    ],
)
def test_phone_numbers_in_any_common_writing_keep_their_last_4_digits(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "job-20261125",
        "order-1234567890123",  # a job id joined by "-"
        "2026-11-25 12:50:31",
        "2026-11-25T12:50:31.092647Z",
        "took 1234 ms for 3 items",
        "retry in 10 20 30 40 s",
        "127.0.0.1:5672",
        "at 1764075031.25",
        "provider id 12345678901234567890",  # 20 digits: longer than any phone number
    ],
)
def test_ids_times_and_counts_are_kept(text: str) -> None:
    assert redact_text(text) == text


def test_values_of_id_keys_are_ids_not_phone_numbers() -> None:
    """An SMSC id has ten digits: under an id key it is kept; the same digits under any other key are not."""
    event = {"event": "sms.sent", "provider_message_id": "1622426053", "job_ids": ["79161234567"], "to": "79161234567"}
    assert Redactor()(None, "", event) == {
        "event": "sms.sent", "provider_message_id": "1622426053", "job_ids": ["79161234567"], "to": "…4567",
    }  # fmt: skip
    assert Redactor()(None, "", {"note": "sent 1622426053"})["note"] == "sent …6053"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("/p?sender=s1&token=abc&psw=pw1&x=1", "/p?sender=s1&token=***&psw=***&x=1"),
        ("password=a api_key=b apikey=c secret=d auth=e", "password=*** api_key=*** apikey=*** secret=*** auth=***"),
        ('{"password": "a", "x_api_key": "b"}', '{"password": "***", "x_api_key": "***"}'),
        ("Authorization: Bearer abc.def", "Authorization: ***"),
        ("amqp://acme:pw@broker:5672/", "amqp://acme:***@broker:5672/"),
        ("client_secret=s1; access_token=t1", "client_secret=***; access_token=***"),
    ],
)
def test_secret_pairs_inside_any_string_are_masked(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted


def test_secret_looking_keys_are_masked_whatever_their_value() -> None:
    event = {
        "auth": "a",
        "credentials": {"login": "l", "password": "p"},
        "x_api_key": "k",
        "Authorization": "Bearer t",
        "smtp_password": "p",
        "client-secret": "s",
        "routing_key": "report.rapporto",
        "count": 12345678901,
        "ms": 12.5,
    }
    out = Redactor()(None, "info", event)
    assert {k for k, v in out.items() if v == "***"} == {
        "auth", "credentials", "x_api_key", "Authorization", "smtp_password", "client-secret",
    }  # fmt: skip
    assert (out["routing_key"], out["count"], out["ms"]) == ("report.rapporto", 12345678901, 12.5)


def test_other_values_are_redacted_as_the_text_they_render_as() -> None:
    out = Redactor()(None, "info", {"url": ValueError("GET /x?token=t1 from 79161234567"), "body": b"psw=x"})
    assert out == {"url": "GET /x?token=*** from …4567", "body": "psw=***"}


def test_standard_library_records_go_through_the_same_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    configure("json", "debug")
    try:
        logging.getLogger("aiohttp.access").info('1.2.3.4 "GET /x?token=%s&to=%s HTTP/1.1" 200', "t1", "+79161234567")
        logging.getLogger("some.library").debug("below warning: not shown")
        logging.getLogger("some.library").warning("psw=%s", "pw1")
    finally:
        configure("console", "warning")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["logger"], line["event"]) for line in lines] == [
        ("aiohttp.access", '1.2.3.4 "GET /x?token=***&to=…4567 HTTP/1.1" 200'),
        ("some.library", "psw=***"),
    ]
    assert len([h for h in logging.getLogger().handlers if type(h).__name__ == "_OurHandler"]) == 1
