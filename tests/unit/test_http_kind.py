"""The `http` kind's settings are checked when a sender is saved: each bad mapping is refused naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from smsfleet.kinds import json_pointer, location
from smsfleet.senders import SenderError, parse_sender
from tests.fakes.json_sms import HTTP_SETTINGS

GOOD = HTTP_SETTINGS | {"url": "https://sms.example.com/api/send", "login": "acme", "password": "pw"}


def save(**changes: Any) -> Any:
    settings = {k: v for k, v in (GOOD | changes).items() if v is not None}
    return parse_sender({"id": "h1", "gateway": "http", "accounts": ["acme"], "settings": settings})


def test_the_json_provider_mapping_is_accepted() -> None:
    assert save().settings.to_at == "json:messages.0.to"


@pytest.mark.parametrize(
    ("changes", "field", "said"),
    [
        ({"success_id_pointer": None}, "success_regex", "give success_regex or success_id_pointer"),
        ({"success_regex": "(?P<id>\\d+"}, "success_regex", "is not a regular expression"),
        ({"success_regex": "(?P<msg>\\d+)"}, "success_regex", "unknown named group 'msg'"),
        ({"success_id_pointer": "result.id"}, "success_id_pointer", "is not a JSON pointer"),
        ({"success_id_pointer": "/a~2b"}, "success_id_pointer", "is not a JSON pointer"),
        ({"status_pointer": "status"}, "status_pointer", "is not a JSON pointer"),
        ({"to_at": "cookie:to"}, "to_at", "'cookie' is not a place"),
        ({"to_at": "json:messages..to"}, "to_at", "is not a dotted JSON path"),
        ({"login_at": "header:X Login"}, "login_at", "is not a header name"),
        ({"text_at": "form:text"}, "text_at", "form: is not a place in a send: it has a json body"),
        ({"method": "GET"}, "login_at", "json: is not a place in a send: it has no body"),
        ({"status_method": "GET"}, "status_id_at", "json: is not a place in a status lookup"),
        ({"status_method": "GET", "status_id_at": "id"}, "login_at", "json: is not a place in a status lookup"),
        ({"to_at": None}, "to_at", "required"),
        ({"password_at": None}, "password_at", "required with password"),
        ({"login": None}, "login", "required with login_at"),
        ({"permanent_errors": {"(": "x"}}, "permanent_errors", "is not a regular expression"),
        ({"permanent_errors": {"x": "Not A Code"}}, "permanent_errors", ""),
        ({"transient_errors": "BUSY"}, "transient_errors", "Expected `object`"),
        ({"success_flag_pointer": "/ok"}, "success_flag_values", "give both"),
        ({"status_pointer": None}, "status_regex", "give status_regex or status_pointer"),
        ({"states": {}}, "states", "required with a status lookup or callbacks"),
        ({"states": {"ok": "fine"}}, "states", "Invalid enum value 'fine'"),
        ({"callback_status_at": None}, "callback_status_at", "give both"),
        ({"success_status": "2xx"}, "success_status", "Expected `str` matching"),
        ({"method": "PUT"}, "method", "Invalid enum value 'PUT'"),
        ({"url": "sms.example.com/send"}, "url", "must be an absolute http(s) URL"),
        ({"colour": "red"}, "colour", "Object contains unknown field"),
    ],
)
def test_bad_mappings_are_refused_naming_the_field(changes: dict[str, Any], field: str, said: str) -> None:
    with pytest.raises(SenderError) as info:
        save(**changes)
    assert info.value.field.startswith(f"settings.{field}"), info.value
    assert said in info.value.message


def test_places_and_pointers() -> None:
    assert location("user") == ("query", "user")
    assert location("messages.0.to", "json").path == ("messages", "0", "to")
    assert location("header:X-Login") == ("header", "X-Login")
    assert json_pointer("") == ()
    assert json_pointer("/a~1b/~0c/0") == ("a/b", "~c", "0")
    with pytest.raises(ValueError, match="needs a name"):
        location("form:")
