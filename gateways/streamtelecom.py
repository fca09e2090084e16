"""Stream Telecom (gateway.api.sc): send and status lookup over its session-based REST API.

Wire (shared/providers/providers-B.md §6.1): form POSTs to `{base}/rest/...` with JSON replies; `base_url`
replaces `https://gateway.api.sc`.

- `Session/` with `login`, `password` -> a JSON string: the session id;
- `Send/SendSms/` with `sessionId, sourceAddress, destinationAddress, data[, validity]` -> a JSON array of ids;
- `Send/SendBulkPacket/` with `sessionId, sourceAddress, phone_data[, validity]`, `phone_data` being the JSON
  `{"sms": [{"phone", "text"}, ...]}`: many messages, each with its own number and text (medium confidence);
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
- Batches (`send_many`) go as `Send/SendBulkPacket/`, whose name and `phone_data` are documented (medium
  confidence); its maximum, its reply, per-message errors and whether `sourceAddress` and `validity` apply to it are
  not (the cited clients send `sourceAddress` with it, one `validity` too). `max_batch` is 100, a guess; one packet
  per sender name and validity (what a request carries for all its messages); a message alone goes as
  `Send/SendSms/`, as before (so this is no `BatchingGateway`, whose `send` is a batch of one). Assumed reply: a
  list of one entry per message, in order, each the message's ids (an array, as SendSms answers; a bare integer too,
  as one cited client reads it) or a refusal text (ERRORS: that message only, classified as a single send's). A list
  of another length is Ambiguous for every message, an entry that is neither for its own: Stream may have taken
  them, so they are never sent again blindly. A refused packet (a 4xx, or a known text instead of a list) does not
  say which message it refused and took nothing: each is then sent alone, as unbatched sending would, unless the
  refusal is of what the request carries (login, account, sender name), which is every message's. The rate limit
  stays per message, the reading that cannot exceed a limit on either.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec

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


#: refusals of what a request carries for all its messages (login, account, sender name), not of one message
REQUEST_REFUSALS = {f"streamtelecom.{c}" for c in ("auth", "blocked", "no_sender", "unknown_sender")}


def _text(data: Any) -> str:
    """What a refusal in JSON says: a string, or a JSON object's text ('' for anything else)."""
    if isinstance(data, dict):
        texts = (v for k, v in data.items() if k.lower() in ("desc", "message", "error") and isinstance(v, str))
        data = next(texts, "")
    return data.strip()[:200] if isinstance(data, str) else ""


def _said(reply: Reply) -> str:
    """What a refused call says: its JSON's text, or the plain body when it is not JSON."""
    data = reply.json()
    return _text(data) if data is not None else reply.text.strip()[:200]


def _known(text: str) -> tuple[type[GatewayError], str, str] | None:
    return ERRORS.get(text.rstrip(".!").lower())


def _error(text: str, unknown: tuple[type[GatewayError], str, str]) -> GatewayError:
    """A refusal saying `text`, as ERRORS classifies it, else as `unknown` (class, code, meaning)."""
    cls, code, meaning = _known(text) or unknown
    return cls(f"streamtelecom.{code}", f"{meaning}: {text}" if text else meaning)


def _refusal(reply: Reply, unknown: type[GatewayError]) -> GatewayError:
    return _error(_said(reply), (unknown, f"http.{reply.status}", "refused"))


def _receipt(data: Any) -> Receipt | None:
    """A send's ids, a JSON array of them, as a receipt; None when `data` is not that."""
    if not (isinstance(data, list) and data and all(str(i).strip() for i in data)):
        return None
    ids = tuple(str(i).strip() for i in data)
    return Receipt(provider_message_id=ids[0], provider_ids=ids if len(ids) > 1 else ())


def _entry(entry: Any) -> Receipt | GatewayError:
    """One message's entry in a packet's reply: its ids (an array, or a bare integer), or a known refusal;
    anything else is Ambiguous, since Stream may have taken the message."""
    ids = [entry] if type(entry) is int else entry  # (a JSON true is a bool, not an id)
    return _receipt(ids) or _error(_text(entry), (Ambiguous, "bad_reply", "neither ids nor a known refusal"))


def _shared(message: Outgoing) -> dict[str, str]:
    """What a send carries for all its messages: the sender name and the validity (minutes, rounded up, >= 1)."""
    form = {"sourceAddress": message.originator} if message.originator else {}
    if message.valid_until is not None:
        minutes = math.ceil((message.valid_until - datetime.now(UTC)).total_seconds() / 60)
        form["validity"] = str(max(minutes, 1))
    return form


def _session_refused(reply: Reply) -> bool:
    text = _said(reply).lower()
    return reply.status == 401 or "session" in text or "сесси" in text


def _when(value: Any) -> datetime | None:
    digits = re.sub(r"\D", "", value)[:10] if isinstance(value, str) else ""  # "/Date(1700000000000)/"
    return datetime.fromtimestamp(int(digits), UTC) if len(digits) == 10 else None


class StreamtelecomGateway(Gateway[StreamtelecomSettings]):
    """Stream Telecom's REST API: one session per adapter, renewed when refused; batches as packets; status
    lookup by id."""

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
        "batches go as Send/SendBulkPacket/ of up to 100 messages (no maximum is documented), one per sender name "
        "and validity; its reply is assumed to be one id array (or refusal text) per message, in order: another "
        "count is ambiguous for all, and a refused packet is sent again message by message",
    )
    max_batch = 100

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
        form = {"destinationAddress": message.to.lstrip("+"), "data": message.text} | _shared(message)
        reply = await self._call("/Send/SendSms/", form)
        if reply.status == 200 and (receipt := _receipt(reply.json())):
            return receipt
        raise _refusal(reply, Ambiguous if reply.status < 300 else Permanent)

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        groups: dict[tuple[tuple[str, str], ...], list[int]] = {}  # what the request carries -> those messages
        for i, message in enumerate(messages):
            groups.setdefault(tuple(_shared(message).items()), []).append(i)
        sent = await asyncio.gather(*(self._packet(dict(k), [messages[i] for i in g]) for k, g in groups.items()))
        outcomes: dict[int, Receipt | GatewayError] = {}
        for group, results in zip(groups.values(), sent, strict=True):
            outcomes.update(zip(group, results, strict=True))
        return [outcomes[i] for i in range(len(messages))]

    async def _packet(self, shared: dict[str, str], messages: list[Outgoing]) -> list[Receipt | GatewayError]:
        """One `Send/SendBulkPacket/` for messages that share `shared`; one message goes as `Send/SendSms/`."""
        if len(messages) == 1:
            return await super().send_many(messages)
        sms = [{"phone": m.to.lstrip("+"), "text": m.text} for m in messages]
        form = shared | {"phone_data": msgspec.json.encode({"sms": sms}).decode()}
        try:
            reply = await self._call("/Send/SendBulkPacket/", form)
        except GatewayError as exc:
            return [exc] * len(messages)
        data = reply.json()
        if reply.status == 200 and isinstance(data, list):
            if len(data) != len(messages):
                said = f"HTTP 200 with {len(data)} entries for {len(messages)} messages"
                return [Ambiguous("streamtelecom.bad_reply", said)] * len(messages)
            return [_entry(entry) for entry in data]
        error = _refusal(reply, Ambiguous if reply.status < 300 else Permanent)
        if isinstance(error, Ambiguous) or error.code in REQUEST_REFUSALS:
            return [error] * len(messages)
        return await super().send_many(messages)  # which message was refused is not said: each alone

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
            raise _refusal(reply, Transient)
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
                    raise _refusal(reply, Permanent if reply.status < 500 else Transient)
                self._session_id = data.strip()
            return self._session_id

    async def _post(self, path: str, form: dict[str, str]) -> Reply:
        return await request(
            self.http, "POST", self.base_url + path, provider="Stream Telecom", timeout_s=self.timeout_s, data=form
        )


GATEWAY = StreamtelecomGateway
