"""Sender names without Redis: what counts as one name, the ids made from names, and the name rules."""

from __future__ import annotations

import re

import msgspec
import pytest

from smsfleet.senders import Sender, SenderError, name_key, parse_sender, sender_doc, slug
from tests.samples import sample_sender


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Infobip main (RU)", "infobip MAIN (ru) "),
        ("  Рассылка АКМЕ", "рассылка акме"),
        ("Straße", "STRASSE"),  # casefold, not lower
        ("Cafe\u0301", "Café"),  # decomposed and composed é
        ("ＡＣＭＥ", "acme"),  # full-width letters
    ],
)
def test_names_that_differ_only_in_case_spaces_or_unicode_form_are_one_name(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)


def test_names_that_differ_otherwise_are_two() -> None:
    assert name_key("Infobip main") != name_key("Infobip  main")
    assert name_key("ACME-1") != name_key("ACME 1")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Infobip main (RU)", "infobip-main-ru"),
        ("Инфобип основной", "infobip-osnovnoy"),
        ("Play Mobile — Ўзбекистон", "play-mobile-uzbekiston"),
        ("Çà et là", "ca-et-la"),
        ("acme_smsc", "acme_smsc"),
        ("日本", ""),
        ("---", ""),
        ("a" * 80, "a" * 64),
    ],
)
def test_an_id_is_made_from_the_name(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_a_document_without_an_id_gets_one_made_from_its_name() -> None:
    doc = {k: v for k, v in sample_sender("smsc").items() if k != "id"}
    sender = parse_sender({**doc, "name": "  Infobip main (RU) "})
    assert (sender.id, sender.name) == ("infobip-main-ru", "Infobip main (RU)")  # stored as entered, stripped
    assert parse_sender({**doc, "id": "", "name": "SMSC"}).id == "smsc"  # a blank id is no id
    nothing = parse_sender({**doc, "name": "日本の送信者"})  # no letter to make it from: a random one
    assert nothing.name == "日本の送信者"
    assert re.fullmatch(r"sender-[0-9a-f]{6}", nothing.id)


def test_a_document_without_a_name_is_named_after_its_id_and_an_update_keeps_the_name() -> None:
    sender = parse_sender(sample_sender("smsc", "acme-smsc"))
    assert sender.name == "acme-smsc"
    named = parse_sender({**sample_sender("smsc", "acme-smsc"), "name": "ACME"})
    assert parse_sender(sample_sender("smsc", "acme-smsc"), existing=named).name == "ACME"


def test_a_stored_document_without_a_name_reads_as_name_equals_id() -> None:
    doc = sender_doc(parse_sender(sample_sender("smsc", "old-one")), secrets_as="keep")
    del doc["name"]
    sender = msgspec.convert({**doc, "settings": {}}, Sender)
    assert sender.name == "old-one"


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("", "this field is required"),
        ("   ", "this field is required"),
        ("x" * 101, "at most 100 characters (this one has 101)"),
        ("two\nlines", "one line of text"),
        ("tab\there", "one line of text"),
        (5, "Expected `str | null`, got `int`"),
    ],
)
def test_a_bad_name_is_refused_on_the_name_field(name: object, needle: str) -> None:
    with pytest.raises(SenderError) as err:
        parse_sender({**sample_sender("smsc"), "name": name})
    assert err.value.field == "name"
    assert needle in err.value.message


def test_names_of_any_script_up_to_100_characters_are_accepted() -> None:
    for name in ("Рассылка", "送信者", "مرسل", "Ω" * 100, " a "):
        assert parse_sender({**sample_sender("smsc"), "name": name}).name == name.strip()


def test_neither_a_name_nor_an_id_is_refused_on_the_name_field() -> None:
    doc = {k: v for k, v in sample_sender("smsc").items() if k != "id"}
    with pytest.raises(SenderError) as err:
        parse_sender(doc)
    assert err.value.field == "name"
