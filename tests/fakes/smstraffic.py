"""A wire-faithful fake of SMS Traffic's HTTP API (shared/providers/providers-A.md §6), for tests.

    async with FakeSmsTraffic(login="acme", password="s3cret") as fake:
        settings = SmstrafficSettings(login="acme", password="s3cret", url=fake.url + "/multi.php")

Like SMS Traffic: one script, `/multi.php`, by GET or POST (form), `login` + `password`; no `operation` sends,
`operation=status&sms_id=a,b` looks parts up, `operation=account` gives the balance. Every reply is XML with
HTTP 200, errors as `<reply><result>ERROR</result><code>N</code><description>…</description></reply>`.
`message` is read as UTF-8 with `rus=5` and as windows-1251 otherwise, so a client that sends UTF-8 Cyrillic
without `rus=5` sees it garbled here as it would there. A send makes one message per phone and one `sms_id` per
part (GSM 160/153 characters with `rus=0`, UCS-2 70/67 otherwise), listed in `message_infos` only with
`want_sms_ids=1`; `code` is `0` on success (`empty_code=True`: empty, as in the 2015 document). A lookup of one
id answers flat, of several with one `<sms>` each; an unknown id has the error text SMS Traffic uses.

Parts start with status `initial_status` (default "", no report yet); `set_status` moves them. `report_body` and
`inbound_body` build SMS Traffic's pushes. Faults: `fail_next(n, code)` (sends), `raw_reply_next(n, body)`
(any request: HTTP 200 text/xml with that body), and those of `FakeProvider` (tests/fakes/_base.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from ._base import FakeProvider
from ._devino_smstraffic import Seen

__all__ = ["DESCRIPTIONS", "FakeMessage", "FakeSmsTraffic"]

DESCRIPTIONS = {
    401: "login param is missing",
    402: "password param is missing",
    403: "phones param is missing",
    405: "message param is missing",
    407: "phones param is empty",
    411: "authentication failed",
    415: "not enough money",
    418: "sms ids cannot be provided",
    421: "originator is too long",
    425: "phone is too short",
    426: "phone is too long",
    428: "wrong phone format",
    433: "sms_id param is missing",
    1000: "temporary error, try again later",
}
MOSCOW = timezone(timedelta(hours=3))  # dates are Moscow time for Russian numbers
NOT_FOUND = "no such message or this message does not belong to you"


def _moscow_now() -> str:
    return datetime.now(MOSCOW).strftime("%Y-%m-%d %H:%M:%S")


@dataclasses.dataclass
class FakeMessage:
    phone: str
    text: str
    params: dict[str, str]
    sms_ids: list[str]
    statuses: dict[str, str]
    submitted: str = dataclasses.field(default_factory=_moscow_now)


def _parts(text: str, ucs2: bool) -> int:
    one, many = (70, 67) if ucs2 else (160, 153)
    return 1 if len(text) <= one else -(-len(text) // many)


def _reply(fields: dict[str, Any], *children: ET.Element) -> web.Response:
    root = ET.Element("reply")
    for name, value in fields.items():
        ET.SubElement(root, name).text = str(value)
    root.extend(children)
    return web.Response(body=ET.tostring(root, encoding="utf-8", xml_declaration=True), content_type="text/xml")


def _error(code: int) -> web.Response:
    return _reply({"result": "ERROR", "code": code, "description": DESCRIPTIONS.get(code, "error")})


class FakeSmsTraffic(FakeProvider[Seen]):
    endpoints = (("*", "/multi.php"),)

    def __init__(
        self,
        login: str = "acme",
        password: str = "s3cret",  # noqa: S107 - a fake's default account
        *,
        latency: float = 0.0,
        initial_status: str = "",
        empty_code: bool = False,
    ) -> None:
        super().__init__(latency=latency)
        self.login, self.password = login, password
        self.initial_status, self.empty_code = initial_status, empty_code
        self.messages: list[FakeMessage] = []
        self.by_id: dict[str, FakeMessage] = {}
        self._fail: list[int] = []
        self._raw: list[bytes] = []
        self._ids = itertools.count(1_000_472_891)

    # knobs
    def fail_next(self, n: int, code: int) -> None:
        self._fail += [code] * n

    def raw_reply_next(self, n: int, body: bytes) -> None:
        self._raw += [body] * n

    def set_status(self, sms_id: str, status: str, *, all_parts: bool = True) -> None:
        message = self.by_id[sms_id]
        for part in message.sms_ids if all_parts else [sms_id]:
            message.statuses[part] = status

    def report_body(self, sms_id: str, status: str, delivery_date: str = "2013-11-07 17:04:00") -> bytes:
        return urlencode({"sms_id": sms_id, "status": status, "delivery_date": delivery_date}).encode()

    def inbound_body(self, phone: str, text: str, sms_id: str, charset: str = "cp1251") -> bytes:
        return urlencode({"phone": phone, "message": text, "sms_id": sms_id}, encoding=charset).encode()

    # server
    async def record(self, request: web.Request) -> Seen:
        raw = request.rel_url.raw_query_string
        if request.method == "POST":
            raw += "&" + (await request.read()).decode("latin-1")
        charset = "utf-8" if dict(parse_qsl(raw)).get("rus") == "5" else "cp1251"
        params = dict(parse_qsl(raw, keep_blank_values=True, encoding=charset, errors="replace"))
        return Seen(request.method, request.path, params, dict(request.headers))

    async def handle(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        params = seen.params
        if self._raw:
            return web.Response(body=self._raw.pop(0), content_type="text/xml")
        if refused := self._auth_error(params):
            return refused
        operation = params.get("operation", "")
        if operation == "status":
            return self._status(params)
        if operation == "account":
            return _reply({"account": 10025})
        return self._send(request, params)

    def _auth_error(self, params: dict[str, str]) -> web.Response | None:
        for code, name in ((401, "login"), (402, "password")):
            if name not in params:
                return _error(code)
        if (params["login"], params["password"]) != (self.login, self.password):
            return _error(411)
        return None

    def _send(self, request: web.Request, params: dict[str, str]) -> web.Response:  # noqa: PLR0911 - one return per error
        if self._fail:
            return _error(self._fail.pop(0))
        if "phones" not in params or "message" not in params:
            return _error(403 if "phones" not in params else 405)
        phones = [p.strip() for p in params["phones"].split(",") if p.strip()]
        if not phones:
            return _error(407)
        for phone in phones:
            if not phone.isdigit():
                return _error(428)
            if not 10 <= len(phone) <= 15:
                return _error(425 if len(phone) < 10 else 426)
        originator = params.get("originator", "")
        if len(originator) > (15 if originator.isdigit() else 11):
            return _error(421)
        if params.get("want_sms_ids") == "1" and params.get("start_date"):
            return _error(418)
        text, ucs2 = params["message"], params.get("rus", "0") in ("1", "5")
        parts = min(_parts(text, ucs2), int(params.get("max_parts") or 255))
        infos = ET.Element("message_infos")
        for phone in phones:
            ids = [str(next(self._ids)) for _ in range(parts)]
            message = FakeMessage(phone, text, params, ids, dict.fromkeys(ids, self.initial_status))
            self.messages.append(message)
            self.by_id |= dict.fromkeys(ids, message)
            for sms_id in ids:
                info = ET.SubElement(infos, "message_info")
                ET.SubElement(info, "phone").text = phone
                ET.SubElement(info, "sms_id").text = sms_id
        if self.dropped(request):
            return web.Response()
        fields = {"result": "OK", "code": "" if self.empty_code else 0, "description": f"queued {len(infos)} messages"}
        return _reply(fields, *([infos] if params.get("want_sms_ids") == "1" else []))

    def _status(self, params: dict[str, str]) -> web.Response:
        ids = [i.strip() for i in params.get("sms_id", "").split(",") if i.strip()]
        if not ids or not all(re.fullmatch(r"\d+", i) for i in ids):
            return _error(433)
        items = []
        for sms_id in ids:
            message = self.by_id.get(sms_id)
            status = message.statuses[sms_id] if message else ""
            changed = _moscow_now() if status else ""
            item = {
                "submition_date": message.submitted if message else "",  # sic: SMS Traffic's spelling
                "send_date": message.submitted if message else "",
                "last_status_change_date": changed,
                "status": status,
                "error": "" if message else NOT_FOUND,
                "sms_id": sms_id,
            }
            items.append(item)
        if len(items) == 1:
            return _reply(items[0])
        elements = []
        for item in items:
            sms = ET.Element("sms")
            for name, value in item.items():
                ET.SubElement(sms, name).text = value
            elements.append(sms)
        return _reply({}, *elements)
