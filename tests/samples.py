"""Valid settings for a sender of every kind, with a recognisable secret in every secret field."""

from __future__ import annotations

from typing import Any

from smsfleet.kinds import KIND_SETTINGS, fields

SECRET = "Sup3r-Secr3t-Value"


def sample_settings(kind: str, secret: str = SECRET) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in fields(KIND_SETTINGS[kind]):
        if spec.secret:
            values[spec.name] = f"{secret}-{kind}-{spec.name}"
        elif spec.required:
            values[spec.name] = "https://provider.test/api" if "url" in spec.name else f"{kind}-{spec.name}"
    if kind == "devino":
        values["login"] = "devino-login"
    if kind == "infobip":
        values["url"] = "https://provider.test"  # Infobip's url is the account's base URL
    if kind == "edna":
        values["url"] = "https://provider.test/api/send"
    if kind == "http":  # where the password goes, and how a reply taking the message looks
        values |= {"password_at": "header:X-Password", "success_id_pointer": "/id"}
    return values


def sample_sender(kind: str, sender_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": sender_id or f"{kind}-1",
        "gateway": kind,
        "accounts": ["acme", "acme-promo"],
        "settings": sample_settings(kind),
        **extra,
    }
