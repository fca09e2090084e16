"""The sender form shows each gateway's fields exactly as the seed lists and labels them (the seed's typos
fixed); anything else a kind has is flagged advanced, shown apart by `smsfleet gateways` and the admin form."""

from __future__ import annotations

import json

import pytest

from cli import main
from smsfleet.kinds import KIND_SETTINGS, fields

#: the seed's fields per gateway (shared/seed: "SMS and telecom gateways"), in its order and words; the three
#: providers without public documentation add the required "SMS service URL" they give
SEED = {
    "bulksms": ["Login", "Password", "Max SMS per message", "Await delivery (seconds)"],
    "devino": ["SMS service sending script/URL", "API-key", "Login", "Password"],
    "infobip": ["SMS service sending script/URL", "API token"],
    "intellin": ["Login", "Password", "SMS service URL"],
    "edna": ["SMS service URL", "Login", "Login field name", "Password", "Password field name"],
    "mts": ["Login", "Password"],
    "playmobile": ["User ID", "Password"],
    "rapporto": ["Service ID", "Password", "SMS service sending URL"],
    "smstraffic": ["SMS service sending script", "Login", "Password"],
    "smsc": ["Login", "Password or MD5 hash", "Await delivery (seconds)"],
    "smsimple": ["User", "Password", "Original identifier", "Max SMS per message number"],  # seed: "identifie"
    "sbermobile": ["Login", "Password", "Client ID", "SMS service URL"],
    "seventech": ["SMS service sending URL", "Login", "Password", "Shorten links in messages"],
    "skymedia": ["Login", "Password", "SMS service URL"],
    "streamtelecom": ["Login", "Password"],
}


@pytest.mark.parametrize("kind", sorted(SEED))
def test_the_form_shows_the_seed_fields_as_labelled(kind: str) -> None:
    assert [f.label for f in fields(KIND_SETTINGS[kind]) if not f.advanced] == SEED[kind]


def test_every_seed_gateway_is_a_kind_and_the_others_are_ours() -> None:
    assert set(KIND_SETTINGS) - set(SEED) == {"sandbox", "http"}


def test_the_extras_are_kept_as_advanced() -> None:
    advanced = {k: [f.name for f in fields(cls) if f.advanced] for k, cls in KIND_SETTINGS.items()}
    assert advanced["edna"] == ["status_url"]
    assert advanced["rapporto"] == ["key"]  # its REST batch API's, instead of the seed's password
    for kind in ("smsc", "smsimple", "bulksms", "mts", "playmobile", "streamtelecom", "skymedia"):
        assert advanced[kind] == ["base_url"], kind
    assert not any(f.required for cls in KIND_SETTINGS.values() for f in fields(cls) if f.advanced)


def test_the_preset_url_is_required_in_the_form() -> None:
    for kind in ("skymedia", "sbermobile", "intellin"):
        [url] = [f for f in fields(KIND_SETTINGS[kind]) if f.name == "url"]
        assert (url.required, url.advanced, url.default) == (True, False, None)


def test_gateways_lists_the_advanced_apart(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateways", "edna", "--json"]) == 0
    [edna] = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["advanced"]) for s in edna["settings"]][-1] == ("status_url", True)
    assert main(["gateways", "smsimple"]) == 0
    out = capsys.readouterr().out
    seed, _, advanced = out.partition("advanced:")
    assert "Original identifier" in seed
    assert "Max SMS per message number" in seed
    assert "base_url" in advanced
    assert "base_url" not in seed
