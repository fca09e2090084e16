"""SberMobile (СберМобайл): a preset of the `http` kind, over a wire format that is an ASSUMPTION to confirm.

No public documentation of an A2P SMS API by SberMobile was found (shared/providers/providers-B.md §5):
publicly it is an MVNO on the t2 network, and an operator where aggregators register sender names; its
"Client ID" could not be verified. This preset speaks the `sadr`/`dadr` HTTP GET family that most Russian
aggregators share (gateways/_sadr_dadr.py), with the client id as one more query parameter:

    GET <url>?user=<login>&pwd=<password>&client_id=<client_id>&sadr=<sender>&dadr=79161234567&text=...
    GET <url>?user=<login>&pwd=<password>&client_id=<client_id>&smsid=<id>

Confirm the endpoint, the parameter names (`client_id` above all) and the replies with SberMobile before
production use. There is no public endpoint: `url` ("SMS service URL") is required when the sender is saved.
"""

from __future__ import annotations

from smsfleet.kinds import SbermobileSettings

from ._sadr_dadr import SADR_DADR, assumed
from .http import PresetGateway

__all__ = ["GATEWAY", "SbermobileGateway"]


class SbermobileGateway(PresetGateway):
    kind = "sbermobile"
    settings_type = SbermobileSettings
    preset = SADR_DADR | {"client_id_at": "client_id"}
    assumptions = assumed(
        "SberMobile",
        "no public API documentation was found (providers-B §5)",
        "the Client ID setting goes on every request as the query parameter client_id (name and role unverified)",
    )


GATEWAY = SbermobileGateway
