"""Sky Media: send and status lookup, over a wire format that is an ASSUMPTION to confirm with the provider.

Nothing public was found about a Russian "Sky Media" SMS aggregator (shared/providers/providers-B.md §3): no
documentation and no client; the SkySMS service that searches turn up is unrelated and its API-key format is
deliberately not used. Its sender form asks for a login and a password only, as the white-label platforms of
the `sadr`/`dadr` HTTP GET family do, so this adapter speaks that family (gateways/_sadr_dadr.py):

    GET <base_url>?user=<login>&pwd=<password>&sadr=<sender>&dadr=79161234567&text=...   -> id | error text
    GET <base_url>?user=<login>&pwd=<password>&smsid=<id>                               -> status word

`base_url` is the full URL Sky Media gives for its HTTP GET interface, any fixed query parameters included
(they are kept). There is no public endpoint: without `base_url` a send fails with Permanent("config").
"""

from __future__ import annotations

from smsfleet.kinds import SkymediaSettings

from ._sadr_dadr import SadrDadrGateway, assumed

__all__ = ["GATEWAY", "SkymediaGateway"]


class SkymediaGateway(SadrDadrGateway[SkymediaSettings]):
    kind = "skymedia"
    settings_type = SkymediaSettings
    assumptions = assumed("Sky Media", "nothing public was found about its API (providers-B §3)")


GATEWAY = SkymediaGateway
