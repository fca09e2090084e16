"""Sky Media: a preset of the `http` kind, over a wire format that is an ASSUMPTION to confirm with the provider.

Nothing public was found about a Russian "Sky Media" SMS aggregator (shared/providers/providers-B.md §3): no
documentation and no client; the SkySMS service that searches turn up is unrelated and its API-key format is
deliberately not used. Its sender form asks for a login and a password only, as the white-label platforms of
the `sadr`/`dadr` HTTP GET family do, so this preset speaks that family (gateways/_sadr_dadr.py):

    GET <url>?user=<login>&pwd=<password>&sadr=<sender>&dadr=79161234567&text=...   -> id | error text
    GET <url>?user=<login>&pwd=<password>&smsid=<id>                               -> status word

`url` ("SMS service URL", required when the sender is saved) is the full URL Sky Media gives for its HTTP GET
interface, any fixed query parameters included (they are kept). Should the real wire differ, a sender of the
`http` kind can speak it without code.
"""

from __future__ import annotations

from smsfleet.kinds import SkymediaSettings

from ._sadr_dadr import SADR_DADR, assumed
from .http import PresetGateway

__all__ = ["GATEWAY", "SkymediaGateway"]


class SkymediaGateway(PresetGateway):
    kind = "skymedia"
    settings_type = SkymediaSettings
    preset = SADR_DADR
    assumptions = assumed("Sky Media", "nothing public was found about its API (providers-B §3)")


GATEWAY = SkymediaGateway
