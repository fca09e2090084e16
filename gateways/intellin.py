"""Intellin: a preset of the `http` kind, over a wire format that is an ASSUMPTION to confirm with the provider.

No provider of that name was found (shared/providers/providers-B.md §7). The nearest candidate, Intel
Telecom (`api.sms.intel-tele.com/message/send/`), is not what this adapter speaks: that it is Intellin is
unconfirmed, and its API authenticates with `username` + an `api_key` from a list of five and answers JSON,
where Intellin's sender form asks for a login and a password. Those two fields are what the white-label
platforms of the `sadr`/`dadr` HTTP GET family take, so this preset speaks that family
(gateways/_sadr_dadr.py):

    GET <url>?user=<login>&pwd=<password>&sadr=<sender>&dadr=79161234567&text=...   -> id | error text
    GET <url>?user=<login>&pwd=<password>&smsid=<id>                               -> status word

Should Intellin turn out to be Intel Telecom, a sender of the `http` kind can speak its wire without code
(send: `username`, `api_key`, `from`, `to`, `message`; reply `{"reply": [{"status": "OK", "message_id": ...}]}`);
its host is not used as a default for this one. `url` ("SMS service URL") is required when the sender is saved.
"""

from __future__ import annotations

from smsfleet.kinds import IntellinSettings

from ._sadr_dadr import SADR_DADR, assumed
from .http import PresetGateway

__all__ = ["GATEWAY", "IntellinGateway"]


class IntellinGateway(PresetGateway):
    kind = "intellin"
    settings_type = IntellinSettings
    preset = SADR_DADR
    assumptions = assumed(
        "Intellin",
        "no provider of that name was found (providers-B §7)",
        "Intellin is not taken to be Intel Telecom (the nearest candidate, unconfirmed): Intel Telecom's JSON "
        "API with username + api_key is not spoken, and its host is not a default",
    )


GATEWAY = IntellinGateway
