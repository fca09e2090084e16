"""SberMobile (СберМобайл): send and status lookup, over a wire format that is an ASSUMPTION to confirm.

No public documentation of an A2P SMS API by SberMobile was found (shared/providers/providers-B.md §5):
publicly it is an MVNO on the t2 network, and an operator where aggregators register sender names; its
"Client ID" could not be verified. This adapter speaks the `sadr`/`dadr` HTTP GET family that most Russian
aggregators share (gateways/_sadr_dadr.py), with the client id as one more query parameter:

    GET <base_url>?user=<login>&pwd=<password>&client_id=<client_id>&sadr=<sender>&dadr=79161234567&text=...
    GET <base_url>?user=<login>&pwd=<password>&client_id=<client_id>&smsid=<id>

Confirm the endpoint, the parameter names (`client_id` above all) and the replies with SberMobile before
production use. There is no public endpoint: a sender without `base_url` fails its sends with
Permanent("config").
"""

from __future__ import annotations

from typing import ClassVar

from smsfleet.kinds import SbermobileSettings

from ._sadr_dadr import SadrDadrGateway, assumed

__all__ = ["GATEWAY", "SbermobileGateway"]


class SbermobileGateway(SadrDadrGateway[SbermobileSettings]):
    kind = "sbermobile"
    settings_type = SbermobileSettings
    wire_fields: ClassVar[dict[str, str]] = {"user": "login", "pwd": "password", "client_id": "client_id"}
    assumptions = assumed(
        "SberMobile",
        "no public API documentation was found (providers-B §5)",
        "the Client ID setting goes on every request as the query parameter client_id (name and role unverified)",
    )


GATEWAY = SbermobileGateway
