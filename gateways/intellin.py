"""Intellin: send and status lookup, over a wire format that is an ASSUMPTION to confirm with the provider.

No provider of that name was found (shared/providers/providers-B.md §7). The nearest candidate, Intel
Telecom (`api.sms.intel-tele.com/message/send/`), is not what this adapter speaks: that it is Intellin is
unconfirmed, and its API authenticates with `username` + an `api_key` from a list of five and answers JSON,
where Intellin's sender form asks for a login and a password. Those two fields are what the white-label
platforms of the `sadr`/`dadr` HTTP GET family take, so this adapter speaks that family
(gateways/_sadr_dadr.py):

    GET <base_url>?user=<login>&pwd=<password>&sadr=<sender>&dadr=79161234567&text=...   -> id | error text
    GET <base_url>?user=<login>&pwd=<password>&smsid=<id>                               -> status word

Should Intellin turn out to be Intel Telecom, this module gets its own wire instead (send: `username`,
`api_key`, `from`, `to`, `message`; reply `{"reply": [{"status": "OK", "message_id": ...}]}`); its host is not
used as a default for this one. Without `base_url` a send fails with Permanent("config").
"""

from __future__ import annotations

from smsfleet.kinds import IntellinSettings

from ._sadr_dadr import SadrDadrGateway, assumed

__all__ = ["GATEWAY", "IntellinGateway"]


class IntellinGateway(SadrDadrGateway[IntellinSettings]):
    kind = "intellin"
    settings_type = IntellinSettings
    assumptions = assumed(
        "Intellin",
        "no provider of that name was found (providers-B §7)",
        "Intellin is not taken to be Intel Telecom (the nearest candidate, unconfirmed): Intel Telecom's JSON "
        "API with username + api_key is not spoken, and its host is not a default",
    )


GATEWAY = IntellinGateway
