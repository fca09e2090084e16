"""Sender documents without Redis: identifier and token rules, and the receiving URL of every kind."""

from __future__ import annotations

import re

import pytest

from admin.validation import missing
from smsfleet.kinds import KIND_SETTINGS, KINDS
from smsfleet.senders import SenderError, parse_sender, receiving_url, weak_token
from tests.samples import sample_sender

GOOD_TOKEN = "Gx2-kP9_qLm4ZrT7vWb1NcY8sDf3HjA6"  # 32 characters, 32 different


@pytest.mark.parametrize("sender_id", ["nl\n", "nl\r", "\nnl", "nl\n\n", "a b", "nl.x", "x" * 65, "ñ"])
def test_an_id_that_is_not_letters_digits_dash_underscore_is_refused(sender_id: str) -> None:
    """`$` matches before a final newline: `"nl\\n"` passed the old pattern, then could be neither edited nor
    deleted through the API. Anchored with `\\Z`, it is refused like any other bad id."""
    with pytest.raises(SenderError) as err:
        parse_sender(sample_sender("smsc", sender_id))
    assert err.value.field == "id"
    assert "letters, digits" in err.value.message or "length" in err.value.message
    assert "id" in missing(sample_sender("smsc", sender_id))  # the admin's own check says the same


def test_a_good_id_still_passes() -> None:
    assert parse_sender(sample_sender("smsc", "Acme_smsc-01")).id == "Acme_smsc-01"
    assert parse_sender(sample_sender("smsc", "x" * 64)).id == "x" * 64


def test_a_generated_webhook_token_has_256_bits() -> None:
    tokens = {parse_sender(sample_sender("infobip")).webhook_token for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) == 43 and weak_token(t) is None for t in tokens)  # token_urlsafe(32): 32 random bytes


@pytest.mark.parametrize(
    ("token", "needle"),
    [
        ("x", "1 characters long; use at least 32"),  # one character authenticated before
        ("Gx2-kP9_qLm4ZrT7vWb1NcY8sDf3HjA", "31 characters long"),
        ("a" * 32, "made of 1 different characters"),
        ("0123456780123456780123456780123456", "made of 9 different characters"),
        (GOOD_TOKEN + "&sender=other", "letters, digits, -, _, . and ~ only"),  # would break the URL
        (GOOD_TOKEN + " ", "letters, digits"),
        (GOOD_TOKEN * 9, "at most 256"),
    ],
)
def test_a_weak_webhook_token_is_refused_in_one_clear_line(token: str, needle: str) -> None:
    with pytest.raises(SenderError) as err:
        parse_sender(sample_sender("infobip", webhook_token=token))
    assert err.value.field == "webhook_token"
    assert needle in str(err.value)
    assert "leave it out to have one generated" in str(err.value)
    assert token not in str(err.value)
    assert "\n" not in str(err.value)


def test_a_strong_webhook_token_is_taken_as_given() -> None:
    assert parse_sender(sample_sender("infobip", webhook_token=GOOD_TOKEN)).webhook_token == GOOD_TOKEN


def test_an_existing_token_is_kept_and_not_judged_again() -> None:
    """A sender saved before the rules with a weaker token still saves (rotate it with `rotate-token`)."""
    old = parse_sender(sample_sender("infobip", webhook_token=GOOD_TOKEN))
    legacy = old.__class__(**{**{f: getattr(old, f) for f in old.__struct_fields__}, "webhook_token": "t0k"})
    assert parse_sender(sample_sender("infobip"), existing=legacy).webhook_token == "t0k"
    assert parse_sender({**sample_sender("infobip"), "webhook_token": "t0k"}, existing=legacy).webhook_token == "t0k"
    with pytest.raises(SenderError, match="webhook_token"):
        parse_sender({**sample_sender("infobip"), "webhook_token": "t1k"}, existing=legacy)


@pytest.mark.parametrize("kind", [k for k in KINDS if KIND_SETTINGS[k].callbacks])
def test_every_kind_with_callbacks_gets_the_per_sender_url_rapporto_too(kind: str) -> None:
    sender = parse_sender(sample_sender(kind, webhook_token=GOOD_TOKEN))
    assert receiving_url(sender, "https://hooks.test/") == (
        f"https://hooks.test/smslistener/listen_type/sms_{kind}?sender={kind}-1&token={GOOD_TOKEN}"
    )


def test_a_kind_that_pushes_nothing_has_no_receiving_url() -> None:
    assert receiving_url(parse_sender(sample_sender("mts")), "https://hooks.test") is None


def test_await_delivery_of_zero_is_refused_when_saved() -> None:
    """0 s would poll the provider about once a second for 72 h, spending the sender's rate."""
    doc = {"id": "s", "gateway": "smsc", "accounts": ["a"], "settings": {"login": "l", "password": "p"}}
    with pytest.raises(SenderError, match="await_delivery_s"):
        parse_sender(doc | {"settings": doc["settings"] | {"await_delivery_s": 0}})
    sender = parse_sender(doc | {"settings": doc["settings"] | {"await_delivery_s": 1}})
    assert getattr(sender.settings, "await_delivery_s", None) == 1


@pytest.mark.parametrize(
    ("kind", "url", "problem"),
    [
        ("infobip", "https://x.api.infobip.com/sms/2/logs", "Infobip base URL"),  # was silently given /sms/3/messages
        ("infobip", "x.api.infobip.com", "Infobip base URL"),
        ("edna", "sms.example.com/send", "absolute http(s) URL"),
        ("devino", "ftp://devino.test", "absolute http(s) URL"),
    ],
)
def test_a_url_that_cannot_be_right_is_refused_when_saved(kind: str, url: str, problem: str) -> None:
    doc = sample_sender(kind)
    with pytest.raises(SenderError, match=re.escape(problem)) as caught:
        parse_sender(doc | {"settings": doc["settings"] | {"url": url}})
    assert caught.value.field == "settings.url"
