"""SMSC.ru (and its twins smsc.kz, smsc.ua, smscentre.com): send, status lookup, pushed reports.

Wire (shared/providers/providers-A.md §3): a form POST to `{base}/sys/send.php` or `{base}/sys/status.php`,
always with `fmt=3` (JSON) and `charset=utf-8`. Auth is `login` + `psw`; the `password` setting may be the
password or its lowercase md5 hex and is sent exactly as configured, since SMSC accepts both. We POST, never
GET: credentials stay out of URLs (which proxies and access logs keep), and aiohttp re-sends a GET by itself
when a kept-alive connection turns out dead, which for send.php would be a second SMS.

Decisions:
- `phones` is our E.164 with its '+'. Numbers reach us already validated and normalized; without '+' SMSC
  may "auto-correct" a number, which for a valid one can only make it another number. With '+' it does not.
  Status lookups send the digits, the form in which SMSC itself reports phones.
- `id` is ours: a number the worker allocates once per job from a counter per SMSC account
  (`Outgoing.ref`, `numeric_ref`), so two jobs never share one and every attempt of a job carries the same.
  SMSC does not deduplicate by it: error 9 only refuses an *identical request within a minute*. What makes
  a resend safe is `find`: status.php by (id, phone) says whether an earlier attempt reached SMSC, and the
  worker looks before it sends again.
- Error 9 (duplicate request) on a send means an identical request came within the minute. We look the
  message up: found, the earlier attempt was accepted and this is a success; not found, or the lookup
  fails: Ambiguous.
- HTTP 200 whose body is neither a success nor an error: Ambiguous, since SMSC may have taken the message.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import SmscSettings

from .base import Callback, CallbackRequest, Gateway, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, RateLimited, Transient
from .transport import request

__all__ = ["GATEWAY", "SmscGateway"]

DEFAULT_BASE_URL = "https://smsc.ru"

#: send.php / status.php `error_code` -> (class, meaning) [providers-A §3.4]
ERRORS: dict[int, tuple[type[GatewayError], str]] = {
    1: (Permanent, "bad parameters"),
    2: (Permanent, "wrong login or password, or IP not allowed"),
    3: (Permanent, "insufficient funds"),
    4: (RateLimited, "IP temporarily blocked after frequent errors"),
    5: (Permanent, "bad date format"),
    6: (Permanent, "message prohibited (text or sender)"),
    7: (Permanent, "bad phone number format"),
    8: (Permanent, "cannot deliver to this number"),
    9: (Ambiguous, "duplicate request"),  # send() reconciles it first
}

#: status.php / callback `status` -> (state, meaning); None = not final yet [providers-A §3.5]
STATUSES: dict[int, tuple[State | None, str]] = {
    -3: (None, "not found"),
    -2: (None, "stopped"),
    -1: (None, "waiting to be sent"),
    0: (None, "handed to the operator"),
    1: (State.DELIVERED, "delivered"),
    2: (State.DELIVERED, "read"),
    3: (State.EXPIRED, "expired"),
    4: (State.DELIVERED, "link clicked"),
    20: (State.UNDELIVERED, "impossible to deliver"),
    22: (State.REJECTED, "wrong number"),
    23: (State.REJECTED, "prohibited"),
    24: (State.REJECTED, "insufficient funds"),
    25: (State.UNDELIVERED, "unavailable number"),
}
_FAILED = {State.UNDELIVERED, State.EXPIRED, State.REJECTED}


def _report(  # noqa: PLR0917 - the fields of one SMSC status
    provider_id: str, status: int, err: int, job_id: str | None = None, ts: Any = None, phone: str = ""
) -> Report:
    state, meaning = STATUSES.get(status, (None, f"unknown status {status}"))
    error = None
    if err:
        error = ErrorInfo(f"smsc.err.{err}", f"{meaning} (err {err})")
    elif state in _FAILED:
        error = ErrorInfo(f"smsc.status.{status}", meaning)
    at = datetime.fromtimestamp(ts, UTC) if isinstance(ts, int | float) and 0 < ts < 1e11 else None
    return Report(
        provider_message_id=provider_id,
        state=state,
        job_id=job_id,
        at=at,
        error=error,
        raw_status=str(status),
        to="+" + phone.lstrip("+") if phone.lstrip("+").isdigit() else None,
    )


class SmscGateway(Gateway[SmscSettings]):
    """SMSC.ru over its HTTP API. Delivery reports: status lookup by (id, phone), and pushed reports."""

    kind = "smsc"
    settings_type = SmscSettings
    default_rate = 30.0
    has_status = True
    can_find = True
    numeric_ref = True
    assumptions = (
        "SMSC publishes no request rate; 30 requests/s per sender is a guess",
        "SMSC does not deduplicate by our id: an identical request is refused (error 9) within one minute "
        "only; an ambiguous send is reconciled by status.php (id, phone) before any resend",
        "status.php answers status -3 for a message it does not have, at once after the send was taken",
        "pushed reports are form fields id, status, err (and phone), as a POST body or a query string; "
        "other fields and any signature are not documented (providers-A §3.5: low-medium)",
        "`valid` is the lifetime in whole hours, 1..24 (medium)",
        "status.php takes the phone as digits without '+'",
    )

    @property
    def base_url(self) -> str:
        return (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")

    def __repr__(self) -> str:
        return f"SmscGateway(login={self.settings.login!r}, base_url={self.base_url!r})"

    async def send(self, message: Outgoing) -> Receipt:
        sid = _sid(message)
        params = {"phones": message.to, "mes": message.text, "id": sid}
        if message.originator:
            params["sender"] = message.originator
        if message.valid_until is not None:
            hours = math.ceil((message.valid_until - datetime.now(UTC)).total_seconds() / 3600)
            params["valid"] = str(min(max(hours, 1), 24))
        try:
            data = await self._call("/sys/send.php", params)
        except Ambiguous as exc:
            if exc.code != "smsc.9":
                raise
            try:
                found = await self.find(message)
            except GatewayError:
                found = None
            if found is None:
                raise Ambiguous("smsc.9", "duplicate request, and no earlier message found") from None
            return found
        if "id" not in data:
            raise Ambiguous("smsc.bad_reply", "HTTP 200 without id or error")
        cnt = data.get("cnt")
        return Receipt(provider_message_id=str(data["id"]), parts=cnt if isinstance(cnt, int) else None)

    async def find(self, message: Outgoing) -> Receipt | None:
        sid = _sid(message)
        ref = StatusRef(job_id=message.job_id, provider_message_id=sid, to=message.to)
        found = await self.status(ref)
        return None if found.raw_status == "-3" else Receipt(provider_message_id=sid)

    async def status(self, ref: StatusRef) -> Report:
        pid = ref.provider_message_id
        if not pid:
            raise Transient("smsc.no_id", "no SMSC message id to look up")
        try:
            data = await self._call("/sys/status.php", {"phone": ref.to.lstrip("+"), "id": pid})
        except Ambiguous as exc:  # a lookup changes nothing: a lost reply is only transient
            raise Transient(exc.code, exc.message) from None
        status, err = data.get("status"), data.get("err", 0)
        if not isinstance(status, int) or not isinstance(err, int):
            raise Transient("smsc.bad_reply", "status reply without an integer status")
        return _report(pid, status, err, ref.job_id, data.get("last_timestamp"))

    def parse_callback(self, request: CallbackRequest) -> Callback:
        fields = dict(request.query)
        if request.body and request.content_type in ("", "application/x-www-form-urlencoded"):
            fields.update(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        pid, status = fields.get("id", "").strip(), fields.get("status", "").strip()
        if not pid or not status:
            raise ValueError("smsc callback needs id and status")
        try:
            code, err = int(status), int(fields.get("err") or 0)
        except ValueError:
            raise ValueError("smsc callback status and err must be integers") from None
        return Callback(reports=[_report(pid, code, err, phone=fields.get("phone", "").strip())])

    async def _call(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """POST to SMSC; the JSON object of a success, or the error tree. Messages never hold credentials."""
        form = {"login": self.settings.login, "psw": self.settings.password, "fmt": "3", "charset": "utf-8"}
        reply = await request(
            self.http, "POST", self.base_url + path, provider="SMSC", timeout_s=self.timeout_s, data=form | params
        )
        if reply.status != 200:
            raise Transient(f"http.{reply.status}", f"SMSC answered HTTP {reply.status}")
        data = reply.json()
        if not isinstance(data, dict):
            raise Ambiguous("smsc.bad_reply", "HTTP 200 without a JSON object")
        if "error" in data or "error_code" in data:
            raw = data.get("error_code")
            code = raw if isinstance(raw, int) else 0
            cls, meaning = ERRORS.get(code, (Transient, "unknown error"))
            text = f"{meaning}: {str(data.get('error', ''))[:200]}"
            if cls is RateLimited:
                raise RateLimited(f"smsc.{code}", text, retry_after=60.0)
            raise cls(f"smsc.{code}", text)
        return data


def _sid(message: Outgoing) -> str:
    """Our SMSC id of the message: the worker's numeric ref (SMSC's ids are integers up to 2**31-1)."""
    if not message.ref.isdigit():
        raise Permanent("smsc.no_ref", "an SMSC message needs a numeric id from the worker")
    return message.ref


GATEWAY = SmscGateway
