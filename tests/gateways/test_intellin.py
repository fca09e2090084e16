"""Intellin: the gateway contract and the sadr/dadr family's wire (an assumption), not Intel Telecom's."""

from __future__ import annotations

import pytest

from gateways.intellin import IntellinGateway
from tests.fakes.sadr_dadr import FakeSadrDadr, SadrDadrContract


class TestIntellin(SadrDadrContract):
    kind = "intellin"
    path = "/api/sendsms.php"

    async def test_speaks_the_family_not_intel_telecom(self, gateway: IntellinGateway, fake: FakeSadrDadr) -> None:
        await gateway.send(self.message(originator="SHOP"))
        params = fake.requests[-1].params
        assert {"user", "pwd", "sadr", "dadr", "text"} <= set(params)
        assert not {"username", "api_key", "from", "to", "message"} & set(params)

    def test_no_default_host(self) -> None:
        with pytest.raises(ValueError, match="the SMS service URL that Intellin gives"):
            self.settings("")
        assert any("Intel Telecom" in a for a in IntellinGateway.assumptions)
