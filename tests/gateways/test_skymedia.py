"""Sky Media: the gateway contract and the sadr/dadr family's wire (an assumption), then its URL."""

from __future__ import annotations

import aiohttp

from gateways.skymedia import SkymediaGateway
from tests.fakes.sadr_dadr import FakeSadrDadr, SadrDadrContract


class TestSkymedia(SadrDadrContract):
    kind = "skymedia"
    path = "/get/"

    async def test_fixed_query_of_base_url_is_kept(self, http: aiohttp.ClientSession, fake: FakeSadrDadr) -> None:
        gateway = SkymediaGateway(self.settings(fake.url + "?route=2"), http)
        await gateway.send(self.message())
        assert fake.requests[-1].params["route"] == "2"
        assert fake.requests[-1].path == "/get/"
        assert "route" not in repr(gateway)

    async def test_only_login_and_password_go_on_the_wire(self, gateway: SkymediaGateway, fake: FakeSadrDadr) -> None:
        await gateway.send(self.message())
        assert set(fake.requests[-1].params) == {"user", "pwd", "dadr", "text"}
