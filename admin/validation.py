"""Sender documents checked for people: every missing field at once, then `parse_sender`'s verdict, in words.

`parse_sender` (the kernel's, the same the CLI uses) stops at the first problem and speaks msgspec
("Expected `int` >= 1"). A form is nicer when all its empty required fields are marked in one go and each
message reads like a sentence, so this module looks for missing fields first and rewords the rest. The
keys are the document's own paths: `name`, `id`, `accounts`, `gateway`, `settings.<name>`, `verified_phones`...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from smsfleet.kinds import KIND_SETTINGS, fields
from smsfleet.senders import Sender, SenderError, parse_sender

from .errors import Invalid

__all__ = ["REQUIRED", "error_key", "humanize", "invalid", "missing", "validate"]

REQUIRED = "this field is required"
ID_RULE = "use 1 to 64 letters, digits, - or _ (the id is part of routing keys and URLs)"  # the kernel's words
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # fullmatch: `$` would let a final newline through
_OPS = {">=": "at least", ">": "above", "<=": "at most", "<": "below"}
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^Object missing required field"), REQUIRED),
    (re.compile(r"^Expected `int`, got"), "enter a whole number"),
    (re.compile(r"^Expected `float`, got"), "enter a number"),
    (re.compile(r"^Expected `bool`, got"), "must be true or false"),
    (re.compile(r"^Expected `array`, got"), "must be a list"),
    (re.compile(r"^Expected `str`, got"), "must be text"),
    (re.compile(r"^Expected `object`, got"), "must be an object"),
    (re.compile(r"^Expected `str` of length >= 1"), "must not be empty"),
    (re.compile(r"^Object contains unknown field"), "unknown field"),
]
_BOUND = re.compile(r"Expected `(int|float)` (>=|>|<=|<) (\S+)")


def error_key(field: str) -> str:
    """`accounts[0]` -> `accounts`; a problem with the whole document -> `document`."""
    return re.sub(r"(\[\d+\])+\Z", "", field) or "document"


def humanize(field: str, message: str) -> str:
    if field == "accounts" and message.startswith("Expected `array` of length >= 1"):
        return "assign at least one account"
    if field.startswith("settings.") and message.startswith("Object contains unknown field"):
        return "not a setting of this gateway"
    if bound := _BOUND.fullmatch(message):
        kind, op, value = bound.groups()
        number = f"{float(value):g}"
        return f"must be {'a whole number ' if kind == 'int' else ''}{_OPS[op]} {number}"
    for pattern, text in _RULES:
        if pattern.match(message):
            return text
    return message


def invalid(exc: SenderError) -> Invalid:
    key = error_key(exc.field)
    return Invalid({key: humanize(key, exc.message)})


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def missing(doc: Mapping[str, Any], existing: Sender | None = None) -> dict[str, str]:
    """Every required field left out or blank, and a malformed id, at once (a secret kept from `existing`
    is not missing). The name is required, except that a new sender given only an id is named after it and
    an update that leaves the name out keeps it; a blank id is made from the name."""
    errors: dict[str, str] = {}
    sender_id = doc.get("id")
    if _blank(doc.get("name")) and ("name" in doc or (existing is None and _blank(sender_id))):
        errors["name"] = REQUIRED
    if isinstance(sender_id, str) and sender_id and not _ID.fullmatch(sender_id):
        errors["id"] = ID_RULE
    if _blank(doc.get("accounts")):
        errors["accounts"] = "assign at least one account"
    gateway = doc.get("gateway")
    if _blank(gateway):
        errors["gateway"] = "choose the delivery service (gateway)"
        return errors
    cls = KIND_SETTINGS.get(gateway) if isinstance(gateway, str) else None
    settings = doc.get("settings") or {}
    if cls is None or not isinstance(settings, Mapping):
        return errors  # parse_sender words these
    kept = existing.settings if existing is not None and existing.gateway == gateway else None
    for spec in fields(cls):
        if spec.required and _blank(settings.get(spec.name)):
            if spec.secret and kept is not None and getattr(kept, spec.name, None):
                continue
            errors[f"settings.{spec.name}"] = REQUIRED
    return errors


def validate(doc: Any, *, existing: Sender | None = None, default_region: str | None = None) -> Sender:
    """The sender, or `Invalid` with a message per field."""
    if not isinstance(doc, Mapping):
        raise Invalid({"document": "expected a sender object"})
    if errors := missing(doc, existing):
        raise Invalid(errors)
    try:
        return parse_sender(doc, existing=existing, default_region=default_region)
    except SenderError as exc:
        raise invalid(exc) from None
