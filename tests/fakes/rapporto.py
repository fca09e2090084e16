"""A wire-faithful fake of Rapporto's HTTP API v5.0 (shared/providers/providers-B.md §4.1), for tests.

    async with FakeRapporto(service_id="acme", password="s3cret") as fake:
        settings = RapportoSettings(service_id="acme", password="s3cret", url=fake.url)

Like Rapporto: one URI per client (`fake.url`, path `/<service_id>` as in Rapporto's examples), GET (query)
or POST (form, UTF-8); `serviceId` + `pass`, `clientId` in any documented form (`79036550550`, `+7…`, `8…`,
with dashes), `message` up to 2000 characters; success is HTTP 200 `text/plain` `OK\\n<id>` with a 64-bit id;
errors are HTTP statuses with a short text (only `Invalid password` is documented; the others are the fake's
wording). The `output=xml` variant is not reproduced: the adapter never asks for it.

`partnerMsgId` (1..50 characters) is the idempotency key when `dedup` is on (off by default: Rapporto's
manager enables it per account, and a fake is no kinder than the provider): a repeat creates nothing and gets
the first request's id; a repeat while the first is still being processed (during `latency`) gets 503.
With `anti_duplicates` on, the same text to the same number again gets 409. Faults: `fail_next(n, status)`
answers the next sends with a documented error status and its text; the others are `FakeProvider`'s
(tests/fakes/_base.py).

Reports are pushed only: `report(message, status, ext)` is the exact GET Rapporto makes to the partner's
status URL, `inbound(phone, text)` its inbound-SMS GET; `push(url, request)` makes either for real.

`FakeRapportoBatch` is Rapporto's REST batch API (providers-B §4.3): a JSON POST of `{"messages": [...]}` with
`Authorization: Key <key>`, answered `{"result": [...]}`, one entry per message in the order sent, `OK` with a
`messageId` and the `id` sent, or `REJECTED` with `reasons`; its `report(message, status)` is the JSON POST
Rapporto makes to a message's `callbackUrl`. Where the docs say nothing, it does the least helpful plausible
thing: only its `names` may be a message's `from`; a request over `max_messages` (3,000 by default, as
documented) or with no message gets one REJECTED entry for the whole request, not one per message; a wrong key
is a bare 401 and a body that is not a batch a bare 400; with `dedup` on, a repeated `id` is REJECTED
(`forbidden`), without the first message's id. `reject_next(n, key, ref)` rejects the next messages with a
documented reason; `result_next(result)` answers the next request with any `result`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Collection
from typing import Any

from aiohttp import web

from gateways import CallbackRequest

from ._rapporto_family import FakeServer, Seen, json_push

__all__ = ["ERROR_TEXTS", "FakeMessage", "FakeRapporto", "FakeRapportoBatch", "dlr_request"]

ERROR_TEXTS = {
    400: "Invalid parameters",
    401: "Invalid password",
    402: "Payment required",
    403: "Service is not active",
    406: "Cannot send message to this clientId",
    408: "Too many requests",
    409: "Duplicate message",
    414: "Message is too long",
    500: "Internal server error",
    503: "Request is being processed",
}


@dataclasses.dataclass
class FakeMessage:
    id: int
    phone: str  # digits, as Rapporto reports them
    text: str
    params: dict[str, str]

    @property
    def partner_msg_id(self) -> str | None:
        return self.params.get("partnerMsgId") or self.params.get("id")  # HTTP v5's name, or the batch API's


def dlr_request(
    transaction_id: str, status: int, partner_msg_id: str | None = None, ext: int | None = None
) -> CallbackRequest:
    """Rapporto's delivery report GET: `?msgType=SMS&transactionId=…&status=…[&partnerMsgId=…][&unifiedExtStatus=…]`."""
    query = {"msgType": "SMS", "transactionId": transaction_id, "status": str(status)}
    if partner_msg_id is not None:
        query["partnerMsgId"] = partner_msg_id
    if ext is not None:
        query["unifiedExtStatus"] = str(ext)
    return CallbackRequest(method="GET", query=query, headers={})


def _phone(client_id: str) -> str | None:
    """A documented clientId form as digits, or None when Rapporto could not send to it."""
    if len(client_id) > 25:
        return None
    number = "".join(c for c in client_id if c.isdigit())
    if len(number) == 11 and number.startswith("8"):
        number = "7" + number[1:]
    return number if 10 <= len(number) <= 15 and client_id.replace("-", "").lstrip("+").isdigit() else None


class FakeRapporto(FakeServer):
    def __init__(
        self,
        service_id: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        dedup: bool = False,
        anti_duplicates: bool = False,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.path = f"/{service_id}"
        self.service_id, self.password = service_id, password
        self.dedup, self.anti_duplicates = dedup, anti_duplicates
        self.messages: list[FakeMessage] = []
        self.by_partner_id: dict[str, FakeMessage] = {}
        self._in_flight: set[str] = set()
        self._fail: list[int] = []
        self._next_id = 4095284974

    def fail_next(self, n: int, status: int) -> None:
        self._fail += [status] * n

    def report(self, message: FakeMessage, status: int, ext: int | None = None) -> CallbackRequest:
        return dlr_request(str(message.id), status, message.partner_msg_id, ext)

    def inbound(self, phone: str, text: str, short_number: str = "0000") -> CallbackRequest:
        """Rapporto's inbound-SMS GET to the partner's service URL."""
        self._next_id += 1
        number = phone.lstrip("+")
        query = {
            "clientId": number, "message": text, "connectorId": "50", "serviceId": self.service_id,
            "receivedDate": time.strftime("%Y-%m-%d %H:%M:%S"), "shortNumber": short_number, "mtSent": "0",
            "messageId": str(self._next_id), "clientPhone": number, "sum_sms": "1",
        }  # fmt: skip
        return CallbackRequest(method="GET", query=query, headers={})

    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:  # noqa: PLR0911 - one return per documented status
        params = seen.form
        if self._fail:
            return _reply(self._fail.pop(0))
        if any(not params.get(p) for p in ("serviceId", "pass", "clientId", "message")):
            return _reply(400)
        if (params["serviceId"], params["pass"]) != (self.service_id, self.password):
            return _reply(401)
        phone, text, key = _phone(params["clientId"]), params["message"], params.get("partnerMsgId")
        if phone is None:
            return _reply(406)
        if len(text) > 2000:
            return _reply(414)
        if key is not None and not 1 <= len(key) <= 50:
            return _reply(400)
        if key and self.dedup and key in self._in_flight:
            return _reply(503)
        if key and self.dedup and key in self.by_partner_id:
            return _reply(200, self.by_partner_id[key].id)
        if self.anti_duplicates and any((m.phone, m.text) == (phone, text) for m in self.messages):
            return _reply(409)
        if key:
            self._in_flight.add(key)
        try:
            await self.wait(self.latency)
        finally:
            self._in_flight.discard(key or "")
        self._next_id += 1
        message = FakeMessage(self._next_id, phone, text, params)
        self.messages.append(message)
        if key:
            self.by_partner_id[key] = message
        self.dropped(request)
        return _reply(200, message.id)


def _reply(status: int, message_id: int | None = None) -> web.Response:
    if status == 200:
        return web.Response(text=f"OK\n{message_id}\n")
    return web.Response(status=status, text=ERROR_TEXTS.get(status, "Error"))


class FakeRapportoBatch(FakeServer):
    path = "/batch"

    def __init__(
        self,
        key: str = "K3y0fAcme",
        names: Collection[str] = ("acme",),
        *,
        max_messages: int = 3000,
        dedup: bool = False,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.key, self.names, self.max_messages, self.dedup = key, set(names), max_messages, dedup
        self.messages: list[FakeMessage] = []
        self.by_partner_id: dict[str, FakeMessage] = {}
        self._reject: list[tuple[str, str]] = []
        self._results: list[Any] = []
        self._ids = itertools.count(3482512350952730368)

    def result_next(self, result: Any) -> None:
        """The next request takes nothing and is answered `{"result": result}`, whatever `result` is."""
        self._results.append(result)

    def reject_next(self, n: int, key: str = "invalid", ref: str = "to") -> None:
        """The next `n` messages are REJECTED with reason `key` for their field `ref`."""
        self._reject += [(key, ref)] * n

    def report(self, message: FakeMessage, status: str) -> CallbackRequest:
        """The JSON POST Rapporto makes to the message's `callbackUrl`."""
        body: dict[str, Any] = {"messageId": str(message.id), "ts": int(time.time() * 1000), "status": status}
        if status in ("REJECTED", "UNDELIVERABLE"):
            body["errorCode"] = 0
        if message.partner_msg_id:
            body["id"] = message.partner_msg_id
        return json_push(body)

    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        if seen.headers.get("Authorization") != f"Key {self.key}":
            return web.Response(status=401, text="Unauthorized")
        try:
            batch = seen.json
        except ValueError:
            batch = None
        items = batch.get("messages") if isinstance(batch, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return web.Response(status=400, text="Bad Request")
        if self._results:
            return web.json_response({"result": self._results.pop(0)})
        if not items or len(items) > self.max_messages:
            key = "must.be.not.null" if not items else "too.many.messages"
            return web.json_response({"result": [_rejected(key, "messages")]})
        await self.wait(self.latency)
        result = [self._take(i, item) for i, item in enumerate(items)]
        self.dropped(request)
        return web.json_response({"result": result})

    def _take(self, i: int, item: dict[str, Any]) -> dict[str, Any]:
        """One message's entry: taken (into `messages`), or rejected."""
        partner_id = item.get("id")
        echo = {"id": partner_id} if partner_id is not None else {}
        reason = self._reason(item)
        if reason is None and self._reject:
            reason = self._reject.pop(0)
        if reason is not None:
            return {**_rejected(reason[0], f"messages[{i}].{reason[1]}"), **echo}
        message = FakeMessage(next(self._ids), _phone(str(item["to"])) or "", item["text"], item)
        self.messages.append(message)
        if partner_id:
            self.by_partner_id[partner_id] = message
        return {"code": "OK", "messageId": str(message.id), **echo}

    def _reason(self, item: dict[str, Any]) -> tuple[str, str] | None:
        """Why Rapporto would reject `item` (a reason key and the field), or None."""
        to, text, validity = item.get("to"), item.get("text"), item.get("validity", 172_800)
        callback, partner_id = item.get("callbackUrl", "http://"), item.get("id", "-")
        checks = (
            (item.get("from") not in self.names, "not.available", "from"),
            (not isinstance(to, str) or _phone(to) is None, "invalid", "to"),
            (not isinstance(text, str) or not text, "must.be.not.null", "text"),
            (isinstance(text, str) and len(text) > 2000, "length.too.long", "text"),
            (not isinstance(validity, int) or not 60 <= validity <= 259_200, "invalid", "validity"),
            (not str(callback).startswith(("http://", "https://")), "invalid", "callbackUrl"),
            (not isinstance(partner_id, str) or not 1 <= len(partner_id) <= 50, "invalid", "id"),
            (self.dedup and partner_id in self.by_partner_id, "forbidden", ""),
        )
        return next(((key, ref) for bad, key, ref in checks if bad), None)


def _rejected(key: str, ref: str) -> dict[str, Any]:
    return {
        "code": "REJECTED",
        "messageId": None,
        "reasons": [{"key": key, "ref": ref}],
        "description": f"Error: {key}",
    }
