"""Devino Telecom: the classic REST API (integrationapi.net) and Devino.Online (api.devino.online).

Wire (shared/providers/providers-A.md §5). One kind, two APIs, chosen by the settings: with an `api_key`,
Devino.Online (it wins when login and password are set too); else the classic API with login and password.
`DevinoGateway(settings, http)` returns the adapter of that API, `DevinoOnlineGateway` or `DevinoRestGateway`.
`url` empty is the API's public base; a full sending URL (`…/sms/messages`, `…/rest/Sms/Send`) works too.

Classic REST:
- A session id from `GET /rest/user/sessionid?login&password` (a JSON string, valid 120 min; the only form
  documented for it, so the credentials travel in that query string, never in an error) is cached per
  adapter instance and renewed 10 min early, fetched by one call at a time. A call refused with code 3
  (invalid session) or 4 (unauthorized, "SessionID expired") gets a new session and is made again ONCE: the
  provider took nothing, so repeating cannot double a send. A second refusal is Permanent; a session fetch
  that times out is Transient (nothing was sent).
- `POST /rest/Sms/Send` (form): SourceAddress, DestinationAddress (digits), Data, Validity (minutes). The
  reply holds one id per part: all go to `Receipt.provider_ids`, the first is `provider_message_id`.
- `GET /rest/Sms/State?sessionId&messageId`, one part per call, parts in send order; the job's state is the
  parts' state by `gateways._multipart.combine`: the first failed part decides, `delivered` when every part
  is, else not final. The lookup stops at the first failed part.
Devino.Online: `POST /sms/messages?includeSegmentId=true`, `Authorization: Key …`, JSON
`{"messages": [{from, to (digits), text, validity (s), options: {"job_id": …}}]}`; `options` is echoed in
status callbacks, so reports carry our job id. No status lookup is documented: that adapter has none.
HTTP 200 whose body is neither a success nor an error: Ambiguous, since Devino may have taken the message.
It batches (`send_many`, `max_batch` 1,000; Devino documents up to 32,000 a request): the reply has one
result per message, in order, so a rejected message fails its job only; a reply whose results do not match
the messages is Ambiguous for every one of them, and a 400 for the whole request (which message is not said)
has each message sent alone, as unbatched sending would. Its rate limit is not documented: a message, not a
request, takes a slot, the reading that can never exceed a limit on either.
Neither API documents deduplication by a client id, so `dedupes` stays False.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import DevinoSettings

from ._multipart import combine, segment_ids
from .base import BatchingGateway, Callback, CallbackRequest, Gateway, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient
from .transport import Reply, request

__all__ = ["ERRORS", "GATEWAY", "STATUSES", "DevinoGateway", "DevinoOnlineGateway", "DevinoRestGateway"]

#: error key -> (class, meaning): the classic API's `Code` (HTTP 400/401/403/500 beside it) [§5.A], a
#: Devino.Online result `code` [§5.B], and HTTP statuses that came without either
ERRORS: dict[str, tuple[type[GatewayError], str]] = {
    "1": (Permanent, "argument null or empty"),
    "2": (Permanent, "invalid argument"),
    "3": (Permanent, "invalid session id"),  # after one new session
    "4": (Permanent, "unauthorized"),  # bad login, or the session refused twice
    "5": (Permanent, "not enough credits"),
    "6": (Permanent, "invalid operation"),
    "7": (Permanent, "forbidden"),
    "8": (Transient, "gateway error"),
    "9": (Transient, "internal server error"),
    "REJECTED": (Permanent, "message rejected"),
    "http.400": (Permanent, "request refused"),
    "http.401": (Permanent, "API key refused"),
    "http.403": (Permanent, "forbidden"),
}
_NEW_SESSION = {3, 4}

#: classic `State` (int) and Devino.Online callback `status` (str) -> (state, meaning); None = not final
STATUSES: dict[int | str, tuple[State | None, str]] = {
    -2: (None, "queued"),
    -1: (None, "sent to the network"),
    0: (State.DELIVERED, "delivered"),
    10: (State.REJECTED, "bad sender address"),
    11: (State.REJECTED, "bad recipient address"),
    41: (State.REJECTED, "recipient address not allowed"),
    42: (State.REJECTED, "rejected by the SMSC"),
    46: (State.EXPIRED, "expired"),
    47: (State.UNDELIVERED, "deleted"),
    48: (State.REJECTED, "rejected by the platform"),
    69: (State.REJECTED, "rejected"),
    -98: (State.REJECTED, "stopped"),
    99: (State.UNKNOWN, "unknown"),
    255: (None, "not in the database yet, or older than 48 h"),
    "ACCEPTED": (None, "accepted"),
    "SENT": (None, "sent to the operator"),
    "DELIVERED": (State.DELIVERED, "delivered"),
    "CLICKED": (State.DELIVERED, "link clicked"),
    "UNDELIVERED": (State.UNDELIVERED, "undelivered"),
    "EXPIRED": (State.EXPIRED, "expired"),
    "REJECTED": (State.REJECTED, "rejected"),
}
_NET_DATE = re.compile(r"/Date\((-?\d+)")


def report(pid: str, raw: int | str, job_id: str | None = None, at: datetime | None = None) -> Report:
    state, meaning = STATUSES.get(raw, (None, f"unknown status {raw}"))
    error = ErrorInfo(f"devino.state.{raw}", meaning) if state not in (None, State.DELIVERED) else None
    return Report(provider_message_id=pid, state=state, job_id=job_id, at=at, error=error, raw_status=str(raw))


def _net_date(value: Any) -> datetime | None:
    found = _NET_DATE.match(value) if isinstance(value, str) else None
    return datetime.fromtimestamp(int(found.group(1)) / 1000, UTC) if found else None


class DevinoGateway(Gateway[DevinoSettings]):
    """Devino; constructing it gives the adapter of the API the settings select."""

    kind = "devino"
    settings_type = DevinoSettings
    default_rate = 10.0
    has_status = True  # the classic API's; Devino.Online has no lookup
    public_url = "https://integrationapi.net"
    assumptions = (
        "10 requests/s per sender: documented for Devino's SOAP API only",
        "Devino.Online status callbacks are JSON objects (or arrays of them) with messageId, status and the "
        "options sent (job_id); their vocabulary is assumed from the API's naming: ACCEPTED, SENT, DELIVERED, "
        "CLICKED, UNDELIVERED, EXPIRED, REJECTED, and answered 200 OK (not retrieved, providers-A §5.B)",
        "Devino.Online: callbackUrl is the sender's SMS Receiving URL, given with each message",
        "the classic API's Validity is in whole minutes, at least 1; Devino.Online's validity in seconds, 1..259200",
        "a session is renewed after 110 minutes (documented lifetime: 120)",
        "Devino.Online: up to 1,000 messages a request (32,000 documented); its rate limit is not documented and "
        "is taken per message",
    )

    def __new__(cls, settings: DevinoSettings, http: aiohttp.ClientSession) -> DevinoGateway:
        target: type[DevinoGateway] = cls
        if cls is DevinoGateway:
            target = DevinoOnlineGateway if settings.api_key else DevinoRestGateway
        return object.__new__(target)

    @property
    def base_url(self) -> str:
        base = (self.settings.url or self.public_url).rstrip("/")
        for tail in ("/sms/messages", "/rest/sms/send", "/rest"):
            if base.lower().endswith(tail):
                return base[: -len(tail)]
        return base

    def __repr__(self) -> str:
        return f"{type(self).__name__}(login={self.settings.login!r}, base_url={self.base_url!r})"

    def parse_callback(self, request: CallbackRequest) -> Callback:
        try:
            data = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            raise ValueError("devino callback is not JSON") from None
        reports = []
        for item in data if isinstance(data, list) else [data]:
            pid = item.get("messageId") if isinstance(item, dict) else None
            status = item.get("status") if isinstance(item, dict) else None
            if not isinstance(pid, str | int) or not pid or not isinstance(status, str) or not status:
                raise ValueError("devino callback needs objects with messageId and status")
            options = item.get("options")
            job_id = options.get("job_id") if isinstance(options, dict) else None
            reports.append(report(str(pid), status.upper(), job_id if isinstance(job_id, str) else None))
        if not reports:
            raise ValueError("devino callback holds no report")
        return Callback(reports=reports)

    def _error(self, key: str, detail: Any = "") -> GatewayError:
        """The error for `key`; an unlisted 4xx is the request's fault, anything else unlisted the provider's."""
        cls, meaning = ERRORS.get(key, (Permanent if key.startswith("http.4") else Transient, "unexpected reply"))
        text = str(detail or "")[:200]
        for secret in (self.settings.password, self.settings.api_key, getattr(self, "_sid", None)):
            text = text.replace(secret, "***") if secret else text
        return cls(f"devino.{key}", f"{meaning}: {text}" if text else meaning)


class DevinoOnlineGateway(BatchingGateway[DevinoSettings], DevinoGateway):
    """Devino.Online's JSON API: send, many messages a request; reports come by callback."""

    has_status = False
    public_url = "https://api.devino.online"
    max_batch = 1000  # of the 32,000 Devino takes: a request of ~200 KB at most

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        if not messages:
            return []
        headers = {"Authorization": f"Key {self.settings.api_key}", "Accept": "application/json"}
        headers["Content-Type"] = "application/json"
        body = msgspec.json.encode({"messages": [_item(m) for m in messages]})
        try:
            reply = await request(
                self.http, "POST", self.base_url + "/sms/messages", provider="Devino", timeout_s=self.timeout_s,
                params={"includeSegmentId": "true"}, headers=headers, data=body,
            )  # fmt: skip
        except GatewayError as exc:
            return [exc] * len(messages)
        data = reply.json()
        if reply.status == 400 and len(messages) > 1:  # which message is not said: each alone, as unbatched
            return await super().send_many(messages)
        if reply.status != 200:
            error = self._error(f"http.{reply.status}", data.get("description") if isinstance(data, dict) else "")
            return [error] * len(messages)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list) or len(result) != len(messages):
            said = f"{len(result)} results" if isinstance(result, list) else "no result"
            return [Ambiguous("devino.bad_reply", f"HTTP 200 with {said} for {len(messages)} messages")] * len(messages)
        return [self._outcome(item) for item in result]

    def _outcome(self, item: Any) -> Receipt | GatewayError:
        """One message's result: `OK` with its id, or a rejection with its reasons."""
        found: dict[str, Any] = item if isinstance(item, dict) else {}
        code, pid = found.get("code"), found.get("messageId")
        if code == "OK" and isinstance(pid, str | int) and pid:
            segments = found.get("segmentsId")
            return Receipt(provider_message_id=str(pid), parts=len(segments) if isinstance(segments, list) else None)
        if isinstance(code, str) and code:
            return self._error(code, msgspec.json.encode(found.get("reasons") or {}).decode())
        return Ambiguous("devino.bad_reply", "HTTP 200 with a result that is neither OK nor a rejection")


def _item(message: Outgoing) -> dict[str, Any]:
    """A message as Devino.Online takes it (the module doc)."""
    item: dict[str, Any] = {"to": message.to.lstrip("+"), "text": message.text}
    item |= {"from": message.originator} if message.originator else {}
    if message.valid_until is not None:
        seconds = math.ceil((message.valid_until - datetime.now(UTC)).total_seconds())
        item["validity"] = min(max(seconds, 1), 259_200)
    item["options"] = {"job_id": message.job_id}
    if message.callback_url:
        item["callbackUrl"] = message.callback_url
    return item


class DevinoRestGateway(DevinoGateway):
    """The classic REST API with its session id."""

    #: seconds a session is used (Devino keeps one 120 min)
    session_ttl_s: float = 110 * 60.0

    def __init__(self, settings: DevinoSettings, http: aiohttp.ClientSession) -> None:
        super().__init__(settings, http)
        self._lock = asyncio.Lock()
        self._sid: str | None = None
        self._sid_until = 0.0

    async def send(self, message: Outgoing) -> Receipt:
        form = {"DestinationAddress": message.to.lstrip("+"), "Data": message.text}
        form |= {"SourceAddress": message.originator} if message.originator else {}
        if message.valid_until is not None:
            minutes = math.ceil((message.valid_until - datetime.now(UTC)).total_seconds() / 60)
            form["Validity"] = str(max(minutes, 1))
        data = await self._call("POST", "/rest/Sms/Send", "SessionID", form)
        if not isinstance(data, list) or not data or not all(isinstance(i, str | int) and i for i in data):
            raise Ambiguous("devino.bad_reply", "HTTP 200 without message ids")
        ids = tuple(str(i) for i in data)
        return Receipt(provider_message_id=ids[0], provider_ids=ids, parts=len(ids))

    async def status(self, ref: StatusRef) -> Report:
        ids = segment_ids(ref)
        if not ids:
            raise Transient("devino.no_id", "no provider id to look up")
        parts = []
        for pid in ids:
            try:
                data = await self._call("GET", "/rest/Sms/State", "sessionId", {"messageId": pid})
            except Ambiguous as exc:  # a lookup changes nothing: a lost reply is only transient
                raise Transient(exc.code, exc.message) from None
            raw = data.get("State") if isinstance(data, dict) else None
            if not isinstance(raw, int):
                raise Transient("devino.bad_reply", "state reply without an integer State")
            parts.append(report(pid, raw, ref.job_id, _net_date(data.get("TimeStampUtc"))))
            if parts[-1].state not in (None, State.DELIVERED):
                break  # this part decides
        return combine(parts, ids[0], ref.job_id)

    async def _call(self, method: str, path: str, session_field: str, fields: dict[str, str]) -> Any:
        """A call with the session, made once more with a new session if Devino refuses the session."""
        renewed = False
        while True:
            sid = await self._session()
            where = "data" if method == "POST" else "params"
            reply = await self._request(method, path, **{where: {session_field: sid} | fields})
            data = reply.json()
            if reply.status == 200:
                return data
            if isinstance(data, dict) and data.get("Code") in _NEW_SESSION and not renewed:
                renewed = True
                if self._sid == sid:
                    self._sid = None
                continue
            raise self._refusal(reply.status, data)

    async def _session(self) -> str:
        async with self._lock:
            if self._sid is not None and time.monotonic() < self._sid_until:
                return self._sid
            login = {"login": self.settings.login or "", "password": self.settings.password or ""}
            try:
                reply = await self._request("GET", "/rest/user/sessionid", params=login)
            except Ambiguous as exc:  # nothing was sent yet
                raise Transient(exc.code, f"no session: {exc.message}") from None
            data = reply.json()
            if reply.status != 200:
                raise self._refusal(reply.status, data)
            if not isinstance(data, str) or not data:
                raise Transient("devino.bad_reply", "session reply without a session id")
            self._sid, self._sid_until = data, time.monotonic() + self.session_ttl_s
            return data

    def _refusal(self, status: int, data: Any) -> GatewayError:
        """A classic API error reply: `{"Code", "Desc"}` beside the HTTP status, or the status alone."""
        code = data.get("Code") if isinstance(data, dict) else None
        key = str(code) if isinstance(code, int) else f"http.{status}"
        return self._error(key, data.get("Desc") if isinstance(data, dict) else "")

    async def _request(self, method: str, path: str, **kwargs: Any) -> Reply:
        return await request(
            self.http, method, self.base_url + path, provider="Devino", timeout_s=self.timeout_s,
            server_errors_are_replies=True, **kwargs,
        )  # fmt: skip


GATEWAY = DevinoGateway
