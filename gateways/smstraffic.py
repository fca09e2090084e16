"""SMS Traffic (smstraffic.ru): send, status lookup by sms_id, pushed delivery reports and inbound SMS.

Wire (shared/providers/providers-A.md §6): a form POST to the sender's `url` (default
https://api.smstraffic.ru/multi.php) with `login` and `password`; the reply is XML, HTTP 200 even for errors.

Decisions:
- `phones` is our number without '+'. `want_sms_ids=1` always: the reply then lists one `sms_id` per part,
  all of them go to `Receipt.provider_ids` (the first is `provider_message_id`).
- `rus=0` for ASCII-only text (GSM, 160 characters a part), else `rus=5` (UTF-8 in, UCS-2 out): `rus=5` on a
  Latin text would bill 70 characters a part. `timeout` (validity) in seconds, 1..86400, from `valid_until`.
- No `push_id`: `with_push_id` needs `individual_messages` (the text then travels in `phones`, newlines not
  allowed, no ':' in the id), and is echoed only by the send reply, which answers one message anyway; reports
  and lookups never carry it and SMS Traffic does not dedupe by it. Hence `dedupes = False`.
- Failover: for the documented hosts (api. and www.smstraffic.ru) a request that could not connect is made
  once to api2 (www2). Only then: after a timeout or a reset it may have reached SMS Traffic. The target is
  the instance's `failover_url` (None for other hosts).
- XML is parsed by `xml.etree` only after refusing bodies with a DOCTYPE or ENTITY (or a NUL byte, which could
  hide one in UTF-16): nothing is ever expanded. Such a reply, or an unreadable one, is a bad reply:
  Ambiguous for a send (it may have been taken), Transient for a lookup. A non-200 is a transport failure.
- Lookups ask for every part in one request (`operation=status&sms_id=a,b`); parts are combined by
  `gateways._multipart.combine`: the first failed part decides, `delivered` when all are, else not final.
- Pushes: a delivery report (form `sms_id`, `status`, `delivery_date`, Moscow time) gets 200 with an empty
  body; an inbound SMS (`phone`, `message`, `sms_id`; windows-1251 unless it decodes as UTF-8) gets "OK".
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import SmstrafficSettings

from ._multipart import combine, segment_ids
from .base import Callback, CallbackRequest, Gateway, Inbound, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient
from .transport import Reply, request

__all__ = ["ERRORS", "GATEWAY", "STATUSES", "SmstrafficGateway", "failover_for"]

#: the reply's `<code>` with `<result>ERROR</result>` -> (class, meaning) [§6.4]; unlisted: Permanent
ERRORS: dict[int, tuple[type[GatewayError], str]] = {
    401: (Permanent, "missing parameter login"),
    402: (Permanent, "missing parameter password"),
    403: (Permanent, "missing parameter phones"),
    404: (Permanent, "incompatible parameters"),
    405: (Permanent, "missing parameter message"),
    406: (Permanent, "WAP push too long"),
    407: (Permanent, "phones empty"),
    408: (Permanent, "unsupported message type"),
    409: (Permanent, "missing UDH"),
    410: (Permanent, "max_parts cannot be given"),
    411: (Permanent, "authentication failed"),
    412: (Permanent, "IP address not allowed"),
    413: (Permanent, "no such group"),
    414: (Permanent, "group empty"),
    415: (Permanent, "not enough funds"),
    416: (Permanent, "bad start_date"),
    417: (Permanent, "start_date in the past"),
    418: (Permanent, "sms ids cannot be given for this request"),
    419: (Permanent, "route not allowed"),
    420: (Permanent, "message too long"),
    421: (Permanent, "originator too long"),
    422: (Permanent, "phone missing in a line"),
    423: (Permanent, "empty message for a phone"),
    424: (Permanent, "message for a phone too long"),
    425: (Permanent, "phone too short"),
    426: (Permanent, "phone too long"),
    427: (Permanent, "phone of a wrong length"),
    428: (Permanent, "phone in a wrong format"),
    429: (Permanent, "phone not supported"),
    430: (Permanent, "phone invalid"),
    431: (Permanent, "no open subscription"),
    432: (Permanent, "phone blocked"),
    433: (Permanent, "missing parameter sms_id"),
    434: (Permanent, "no such message, or not yours"),
    435: (Permanent, "cannot cancel"),
    436: (Permanent, "originator forbidden"),
    437: (Permanent, "too long after transliteration"),
    438: (Permanent, "template without group"),
    439: (Permanent, "HTTP sending not allowed"),
    440: (Permanent, "phones parameter wrong"),
    441: (Permanent, "wrong file format"),
    442: (Permanent, "wrong number of parameters"),
    501: (Permanent, "end date in the past"),
    502: (Permanent, "start date later than end date"),
    1000: (Transient, "temporary error"),
}

#: `<status>` (lower case) -> (state, meaning); None = not final yet [§6.5; the last two: smart delivery]
STATUSES: dict[str, tuple[State | None, str]] = {
    "": (None, "no report yet"),
    "buffered smsc": (None, "buffered at the SMSC"),
    "delivered": (State.DELIVERED, "delivered"),
    "non delivered": (State.UNDELIVERED, "not delivered"),
    "rejected": (State.REJECTED, "rejected"),
    "expired": (State.EXPIRED, "expired"),
    "deleted": (State.UNDELIVERED, "deleted"),
    "unknown status": (State.UNKNOWN, "unknown status"),
    "read": (State.DELIVERED, "read"),
    "undelivered": (State.UNDELIVERED, "undelivered"),
}
FAILOVER_HOSTS = {"api.smstraffic.ru": "api2.smstraffic.ru", "www.smstraffic.ru": "www2.smstraffic.ru"}
MOSCOW = timezone(timedelta(hours=3), "MSK")
_UNSAFE = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)|\x00", re.IGNORECASE)


def failover_for(url: str) -> str | None:
    """The documented failover twin of `url` (same path, api2/www2 host), or None."""
    parts = urlsplit(url)
    host = FAILOVER_HOSTS.get((parts.hostname or "").lower())
    if host is None:
        return None
    return urlunsplit(parts._replace(netloc=host if parts.port is None else f"{host}:{parts.port}"))


def _xml(body: bytes) -> ET.Element | None:
    """The `<reply>` element, or None for anything unsafe or unreadable."""
    if _UNSAFE.search(body):
        return None
    try:
        root = ET.fromstring(body)  # noqa: S314 - DOCTYPE and ENTITY refused above: nothing to expand
    except ET.ParseError:
        return None
    return root if root.tag == "reply" else None


def _moscow(value: str | None) -> datetime | None:
    try:
        return datetime.strptime((value or "").strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=MOSCOW).astimezone(UTC)
    except ValueError:
        return None


def _report(pid: str, status: str, job_id: str | None = None, at: datetime | None = None) -> Report:
    state, meaning = STATUSES.get(status.strip().lower(), (None, f"unknown status {status!r}"))
    error = (
        ErrorInfo(f"smstraffic.{status.strip().lower() or 'none'}", meaning)
        if state not in (None, State.DELIVERED)
        else None
    )
    return Report(provider_message_id=pid, state=state, job_id=job_id, at=at, error=error, raw_status=status.strip())


def _form(body: bytes) -> dict[str, str]:
    text = body.decode("latin-1")  # the form is percent-encoded: its bytes are ASCII
    try:
        return dict(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict"))
    except UnicodeDecodeError:  # SMS Traffic's default for inbound texts
        return dict(parse_qsl(text, keep_blank_values=True, encoding="cp1251"))


class SmstrafficGateway(Gateway[SmstrafficSettings]):
    """SMS Traffic's HTTP API (multi.php)."""

    kind = "smstraffic"
    settings_type = SmstrafficSettings
    default_rate = 20.0
    has_status = True
    assumptions = (
        "no HTTP request rate is documented; 20 requests/s per sender is the documented SMPP default",
        "rus=0 keeps ASCII text in GSM (160 characters a part); other text goes as rus=5",
        "delivery_date and status dates are Moscow time (documented for RU/UA numbers)",
        "an inbound SMS to a shortcode is answered with an empty body: SMS Traffic sends a shortcode's answer "
        "text back to the subscriber",
    )

    def __init__(self, settings: SmstrafficSettings, http: aiohttp.ClientSession) -> None:
        super().__init__(settings, http)
        #: where a request goes when `settings.url` cannot be reached (None: nowhere)
        self.failover_url = failover_for(settings.url)

    def __repr__(self) -> str:
        return f"SmstrafficGateway(login={self.settings.login!r}, url={self.settings.url!r})"

    async def send(self, message: Outgoing) -> Receipt:
        fields = {"phones": message.to.lstrip("+"), "message": message.text, "want_sms_ids": "1"}
        fields["rus"] = "0" if message.text.isascii() else "5"
        fields |= {"originator": message.originator} if message.originator else {}
        if message.valid_until is not None:
            seconds = math.ceil((message.valid_until - datetime.now(UTC)).total_seconds())
            fields["timeout"] = str(min(max(seconds, 1), 86_400))
        root = await self._call(fields)
        if (root.findtext("result") or "").strip().upper() != "OK":
            raise Ambiguous("smstraffic.bad_reply", "reply neither OK nor ERROR")
        infos = root.findall("message_infos/message_info")
        ids = tuple(i for i in ((m.findtext("sms_id") or m.findtext("id") or "").strip() for m in infos) if i)
        return Receipt(provider_message_id=ids[0] if ids else None, provider_ids=ids, parts=len(ids) or None)

    async def status(self, ref: StatusRef) -> Report:
        ids = segment_ids(ref)
        if not ids:
            raise Transient("smstraffic.no_id", "no sms_id to look up")
        try:
            root = await self._call({"operation": "status", "sms_id": ",".join(ids)})
        except Ambiguous as exc:  # a lookup changes nothing: a lost reply is only transient
            raise Transient(exc.code, exc.message) from None
        found: dict[str, Report] = {}
        for item in root.findall("sms") or [root]:
            pid, error = (item.findtext("sms_id") or "").strip(), (item.findtext("error") or "").strip()
            if not pid:
                raise Transient("smstraffic.bad_reply", "status reply without sms_id")
            at = _moscow(item.findtext("last_status_change_date"))
            found[pid] = _report(pid, "" if error else item.findtext("status") or "", ref.job_id, at)
        parts = [found.get(pid) or _report(pid, "", ref.job_id) for pid in ids]
        return combine(parts, ids[0], ref.job_id)

    def parse_callback(self, request: CallbackRequest) -> Callback:
        fields = dict(request.query)
        if request.body and request.content_type in ("", "application/x-www-form-urlencoded"):
            fields.update(_form(request.body))
        if "sms_id" in fields and "status" in fields:
            pid = fields["sms_id"].strip()
            if not pid.isdigit():
                raise ValueError("smstraffic report needs a numeric sms_id")
            at = _moscow(fields.get("delivery_date"))
            return Callback(reports=[_report(pid, fields["status"], at=at)], reply_body="")
        phone = fields.get("phone", "").strip().lstrip("+")
        if not phone.isdigit() or "message" not in fields:
            raise ValueError("smstraffic push needs sms_id and status, or phone and message")
        shortcode = fields.get("shortcode", "").strip()
        sms = Inbound(from_=f"+{phone}", to=shortcode, text=fields["message"], provider_message_id=fields.get("sms_id"))
        return Callback(inbound=[sms], reply_body="" if shortcode else "OK")

    async def _call(self, fields: dict[str, str]) -> ET.Element:
        """POST to SMS Traffic; the `<reply>` of anything but an error, or the error tree."""
        reply = await self._post({"login": self.settings.login, "password": self.settings.password} | fields)
        if reply.status != 200:
            raise Transient(f"http.{reply.status}", f"SMS Traffic answered HTTP {reply.status}")
        root = _xml(reply.body)
        if root is None:
            raise Ambiguous("smstraffic.bad_reply", "HTTP 200 without a safe XML reply")
        if (root.findtext("result") or "").strip().upper() == "ERROR":
            raw = (root.findtext("code") or "").strip()
            code = int(raw) if raw.isdigit() else 0
            cls, meaning = ERRORS.get(code, (Permanent, "undocumented error"))
            detail = (root.findtext("description") or "").replace(self.settings.password, "***")[:200]
            raise cls(f"smstraffic.{code}", f"{meaning}: {detail}" if detail else meaning)
        return root

    async def _post(self, form: dict[str, str]) -> Reply:
        try:
            return await request(
                self.http, "POST", self.settings.url, provider="SMS Traffic", timeout_s=self.timeout_s, data=form
            )
        except Transient as exc:
            if exc.code != "connect" or self.failover_url is None:
                raise
            return await request(
                self.http, "POST", self.failover_url, provider="SMS Traffic", timeout_s=self.timeout_s, data=form
            )


GATEWAY = SmstrafficGateway
