"""SberMobile: the gateway contract and the sadr/dadr family's wire (an assumption), then its client id."""

from __future__ import annotations

import aiohttp
import pytest

from gateways import Permanent, StatusRef
from gateways.sbermobile import SbermobileGateway
from tests.fakes.sadr_dadr import FakeSadrDadr, SadrDadrContract


class TestSbermobile(SadrDadrContract):
    kind = "sbermobile"
    path = "/sendsms.php"
    extra = {"client_id": "c-4217"}  # noqa: RUF012 - read only

    async def test_client_id_on_every_request(self, gateway: SbermobileGateway, fake: FakeSadrDadr) -> None:
        receipt = await gateway.send(self.message())
        await gateway.status(StatusRef(job_id="job-1", provider_message_id=receipt.provider_message_id, to=self.phone))
        assert [r.params["client_id"] for r in fake.requests] == ["c-4217", "c-4217"]
        assert [r.query.count("client_id=") for r in fake.requests] == [1, 1]

    async def test_wrong_client_id_is_refused(self, http: aiohttp.ClientSession, fake: FakeSadrDadr) -> None:
        gateway = SbermobileGateway(self.settings(fake.url, client_id="c-0000"), http)
        with pytest.raises(Permanent, match=r"sbermobile\.auth"):
            await gateway.send(self.message())
        assert fake.messages == {}
        assert fake.requests[-1].params["client_id"] == "c-0000"

    def test_assumptions_name_the_client_id(self) -> None:
        assert any("client_id" in a for a in SbermobileGateway.assumptions)
