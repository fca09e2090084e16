"""Stream Telecom (gateway.api.sc): send and status lookup over its session-based REST API.

Wire (shared/providers/providers-B.md §6.1): form POSTs to `{base}/rest/...` with JSON replies; `base_url`
replaces `https://gateway.api.sc`.

- `Session/` with `login`, `password` -> a JSON string: the session id;
- `Send/SendSms/` with `sessionId, sourceAddress, destinationAddress, data[, validity]` -> a JSON array of ids;
- `State/state.php` with `sessionId, messageId` -> `{"State", "StateDescription", "ReportedDateUtc", "Price"}`.

Why this API and not the one-shot GET API (`/get/?user&pwd&sadr&dadr&text`), which needs no session:
- only REST documents a status lookup (`State/state.php`, medium confidence); for GET it is an inference;
- a send is a POST. aiohttp repeats a GET by itself once when the connection drops before the reply, and the
  GET API has no client id to refuse the repeat with: that would be a second SMS. A POST is never repeated;
- the password travels once per session in a form body, not in every URL (proxies and access logs keep URLs).
Session state is the price, and it is small: one login per adapter, under a lock so concurrent sends share it;
a call refused for its session (HTTP 401, or an error naming the session: the expiry signal is not
documented) logs in again and is repeated once, which is safe for a send since a refused session sent nothing.

Decisions:
- `destinationAddress` is the E.164 number without '+'. `sourceAddress` is the job's originator; Stream needs
  one, so a job without it is refused by Stream ("Нет отправителя") and ends `rejected`.
- `validity` is minutes until `valid_until`, rounded up, at least 1.
- Errors are Russian texts, matched case-insensitively without trailing punctuation against ERRORS, the table
  of `gateways._sadr_dadr` (the family of Stream's own GET API: the same texts; all permanent for that
  request), whether they come as a JSON string, inside a JSON object or as plain text, with HTTP 200 or 4xx
  (which one is unclear). An unknown refusal is permanent with a 4xx; with a 200 on a send it is Ambiguous (the
  message may have been taken).
- States (STATUSES): -1 sent (not final), 0 delivered, 42 undelivered, 46 expired, 255 status unavailable
  (archived, or no access to it) -> `unknown`, final, since asking again cannot bring it back. Other codes: not
  final. Several ids in a send reply (one per part, by inference) are all kept; the first is looked up.
"""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import StreamtelecomSettings

from ._sadr_dadr import ERRORS  # Stream Telecom's error texts, also those of its GET API's family
from .base import Gateway, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient
from .transport import Reply, request

__all__ = ["GATEWAY", "StreamtelecomGateway"]

DEFAULT_BASE_URL = "https://gateway.api.sc"

#: `State` -> (state, meaning); None = not final yet [providers-B §6.1]
STATUSES: dict[int, tuple[State | None, str]] = {
    -1: (None, "sent to the mobile network"),
    0: (State.DELIVERED, "delivered"),
    42: (State.UNDELIVERED, "not delivered"),
    46: (State.EXPIRED, "expired"),
    255: (State.UNKNOWN, "status unavailable (archived or no access)"),
}


def _said(reply: Reply) -> str:
    """What a refusal says: a JSON string, a JSON object's text, or the plain body."""
    data = reply.json()
    if isinstance(data, dict):
        texts = (v for k, v in data.items() if k.lower() in ("desc", "message", "error") and isinstance(v, str))
        data = next(texts, "")
    return (data if isinstance(data, str) else "" if data is not None else reply.text).strip()[:200]


def _known(text: str) -> tuple[type[GatewayError], str, str] | None:
    return ERRORS.get(text.rstrip(".!").lower())


def _refusal(reply: Reply, unknown: type[GatewayError]) -> NoReturn:
    text = _said(reply)
    cls, code, meaning = _known(text) or (unknown, f"http.{reply.status}", "refused")
    raise cls(f"streamtelecom.{code}", f"{meaning}: {text}" if text else meaning)


def _session_refused(reply: Reply) -> bool:
    text = _said(reply).lower()
    return reply.status == 401 or "session" in text or "сесси" in text


def _when(value: Any) -> datetime | None:
    digits = re.sub(r"\D", "", value)[:10] if isinstance(value, str) else ""  # "/Date(1700000000000)/"
    return datetime.fromtimestamp(int(digits), UTC) if len(digits) == 10 else None


class StreamtelecomGateway(Gateway[StreamtelecomSettings]):
    """Stream Telecom's REST API: one session per adapter, renewed when refused; status lookup by id."""

    kind = "streamtelecom"
    settings_type = StreamtelecomSettings
    has_status = True
    assumptions = (
        "the session REST API (gateway.api.sc/rest) is used; its docs are client libraries, not the vendor's",
        "an expired session is refused with HTTP 401 or an error naming the session; then we log in again once",
        "a sender name (originator) is required by Stream: jobs without one are rejected",
        "error texts are permanent (matched case-insensitively); whether they come with HTTP 200 or 4xx is unclear",
        "state 255 (status unavailable) is final `unknown`; unknown state codes are not final",
        "`validity` is in minutes; the provider documents no request rate: 20 requests/s is a guess",
    )

    def __init__(self, settings: StreamtelecomSettings, http: aiohttp.ClientSession) -> None:
        super().__init__(settings, http)
        self._session_id: str | None = None
        self._login = asyncio.Lock()

    @property
    def base_url(self) -> str:
        return (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/") + "/rest"

    def __repr__(self) -> str:
        return f"StreamtelecomGateway(login={self.settings.login!r}, base_url={self.base_url!r})"

    async def send(self, message: Outgoing) -> Receipt:
        form = {"destinationAddress": message.to.lstrip("+"), "data": message.text}
        if message.originator:
            form["sourceAddress"] = message.originator
        if message.valid_until is not None:
            minutes = math.ceil((message.valid_until - datetime.now(UTC)).total_seconds() / 60)
            form["validity"] = str(max(minutes, 1))
        reply = await self._call("/Send/SendSms/", form)
        data = reply.json()
        if reply.status == 200 and isinstance(data, list) and data and all(str(i).strip() for i in data):
            ids = tuple(str(i).strip() for i in data)
            return Receipt(provider_message_id=ids[0], provider_ids=ids if len(ids) > 1 else ())
        _refusal(reply, Ambiguous if reply.status < 300 else Permanent)

    async def status(self, ref: StatusRef) -> Report:
        pid = ref.provider_message_id
        if not pid:
            raise Transient("streamtelecom.no_message_id", "Stream Telecom looks messages up by its id only")
        try:
            reply = await self._call("/State/state.php", {"messageId": pid})
        except Ambiguous as exc:  # a lookup changes nothing: a lost reply is only transient
            raise Transient(exc.code, exc.message) from None
        data = reply.json()
        fields = {str(k).lower(): v for k, v in data.items()} if isinstance(data, dict) else {}
        raw = fields.get("state")
        if reply.status != 200 or not re.fullmatch(r"-?\d+", str(raw)):
            _refusal(reply, Transient)
        code = int(str(raw))
        state, meaning = STATUSES.get(code, (None, f"unknown state {code}"))
        error = None
        if state is not None and state is not State.DELIVERED:
            error = ErrorInfo(f"streamtelecom.state.{code}", str(fields.get("statedescription") or meaning)[:200])
        at = _when(fields.get("reporteddateutc"))
        return Report(provider_message_id=pid, state=state, job_id=ref.job_id, at=at, error=error, raw_status=str(code))

    async def _call(self, path: str, form: dict[str, str]) -> Reply:
        """POST with a session; a session refused for being stale is renewed once and the call repeated."""
        for _ in range(2):
            session_id = await self._session()
            reply = await self._post(path, form | {"sessionId": session_id})
            if not _session_refused(reply):
                return reply
            if self._session_id == session_id:
                self._session_id = None
        raise Transient("streamtelecom.session", "a new session was refused as well")

    async def _session(self) -> str:
        async with self._login:
            if self._session_id is None:
                form = {"login": self.settings.login, "password": self.settings.password}
                try:
                    reply = await self._post("/Session/", form)
                except Ambiguous as exc:  # nothing was sent: a lost login reply is only transient
                    raise Transient(exc.code, exc.message) from None
                data = reply.json()
                if reply.status != 200 or not isinstance(data, str) or not data.strip() or _known(data):
                    _refusal(reply, Permanent if reply.status < 500 else Transient)
                self._session_id = data.strip()
            return self._session_id

    async def _post(self, path: str, form: dict[str, str]) -> Reply:
        return await request(
            self.http, "POST", self.base_url + path, provider="Stream Telecom", timeout_s=self.timeout_s, data=form
        )


GATEWAY = StreamtelecomGateway
