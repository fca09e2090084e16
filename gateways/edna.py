"""MFMS EDNA (the legacy MFMS "connector" HTTP API): send, status lookup, pushed delivery reports.

Wire (shared/providers/providers-B.md §2): HTTP GET with a query string at the account's own connector URL,
the `url` setting, called exactly as entered (e.g. `https://<host>:<port>/revoup/connector0/send`, or an
installation's own script such as `…/hpg_send.php`). Status lookups go to `status_url`, or, when it is
empty, to the sending URL with a final `/send` replaced by `/status`; a sending URL that does not end in
`/send` and no `status_url`: no lookup (reports must be pushed). Replies are
`text/plain` fields separated by `;`, and logical errors come back with HTTP 200:

- send: `<login>, <password>, subject, address, text, clientId` -> `ok;<clientId>;<providerId>` | `<error-code>`
- status: `<login>, <password>, providerId[0]` -> `ok;<providerId>;<status>;<date>;<reason>` | `<error-code>`

Decisions:
- The credentials' parameter names differ between integrations (`password`, `pass`): the seed's "Login field
  name" and "Password field name" (`login_field`, `password_field`) name them, for send and status alike;
  empty means `login` and `password`.
- `address` is the E.164 number without '+'; names are scalar (`subject`, not `subject[0]`), as Bitrix and
  i-tools send them. `subject` (the sender name) only when the job has an originator.
- `clientId` is our job id. GET is the connector's only documented form, so a send goes with `resend=False`:
  aiohttp does not repeat it by itself when the connection drops, which is then Ambiguous. A repeated
  `clientId` is refused with `error-id-not-unique`; that code, and any 200 that is neither `ok` nor an error
  code, are Ambiguous: the message may have been taken. No `dedupes`: uniqueness of `clientId` is an
  edna-era code (medium confidence) and a refusal gives us no provider id.
- Never judged by HTTP status alone: the first field decides (ERRORS). Only `error-system` is worth a retry;
  other `error-*` codes, known or not, are permanent, as the provider notes read them. Non-200: transient.
- Status words (STATUSES): enqueued, delayed and sent are not final; failed and cancelled are `rejected`.
  There is no "expired" word: expiry shows as `undelivered`.
- Pushed reports: a JSON object (or a list of them) with `smsOutMessageId` and `dlvStatus`, as Bitrix's edna
  handler reads it; the connector's push format is otherwise undocumented (low confidence).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import EdnaSettings

from .base import Callback, CallbackRequest, Gateway, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient
from .transport import request

__all__ = ["GATEWAY", "EdnaGateway"]

MSK = timezone(timedelta(hours=3))

#: the first field of a reply -> (class, meaning); any other `error-*` is permanent [providers-B §2.3, §2.4]
ERRORS: dict[str, tuple[type[GatewayError], str]] = {
    "error-system": (Transient, "platform error"),
    "error-auth": (Permanent, "wrong login or password"),
    "error-syntax": (Permanent, "bad request syntax"),
    "error-address-format": (Permanent, "bad phone number"),
    "error-address-unknown": (Permanent, "direction not allowed"),
    "error-address-not-specified": (Permanent, "no phone number"),
    "error-subject-format": (Permanent, "bad sender name"),
    "error-subject-unknown": (Permanent, "sender name not allowed"),
    "error-subject-id-format": (Permanent, "bad sender id"),
    "error-content-format": (Permanent, "bad text"),
    "error-content-not-specified": (Permanent, "no text"),
    "error-insufficient-balance": (Permanent, "insufficient balance"),
    "error-id-not-unique": (Ambiguous, "clientId used before: an earlier attempt may have been taken"),
    "error-provider-id-unknown": (Permanent, "unknown provider id"),
}

#: status word -> (state, meaning); None = not final yet [providers-B §2.4]
STATUSES: dict[str, tuple[State | None, str]] = {
    "enqueued": (None, "enqueued"),
    "delayed": (None, "scheduled"),
    "sent": (None, "sent to the operator"),
    "delivered": (State.DELIVERED, "delivered"),
    "read": (State.DELIVERED, "read"),
    "undelivered": (State.UNDELIVERED, "not delivered"),
    "failed": (State.REJECTED, "platform error"),
    "cancelled": (State.REJECTED, "cancelled"),
    "no-match-template": (State.REJECTED, "no matching template"),
}


def _when(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=MSK)


def _report(pid: str, word: str, job_id: str | None = None, date: str = "", reason: str = "") -> Report:
    state, meaning = STATUSES.get(word, (None, f"unknown status {word}"))
    error = None
    if state is not None and state is not State.DELIVERED:
        error = ErrorInfo(f"edna.{word}", f"{meaning}: {reason}" if reason else meaning)
    return Report(provider_message_id=pid, state=state, job_id=job_id, at=_when(date), error=error, raw_status=word)


class EdnaGateway(Gateway[EdnaSettings]):
    """The MFMS connector: GET requests, `;`-separated text replies, status lookup by provider id."""

    kind = "edna"
    settings_type = EdnaSettings
    has_status = True
    assumptions = (
        "without a status URL, the status URL is the sending URL with a final /send replaced by /status",
        "the configured login/password field names are used for both send and status (Bitrix uses `pass` "
        "for send and `password` for status: such an account cannot be served by one pair of names)",
        "clientId carries our job id and a repeat is refused with error-id-not-unique (edna-era code, medium)",
        "unknown error-* codes are permanent; only error-system is retried",
        "no validity or priority parameter is sent: none is documented for the GET connector",
        "status dates without an offset are Moscow time",
        "pushed reports are JSON {smsOutMessageId, dlvStatus} as Bitrix reads them (low confidence)",
        "edna publishes no request rate for the connector; 20 requests/s per sender is a guess",
    )

    @property
    def send_url(self) -> str:
        return self.settings.url  # as entered: the connector's path is the installation's, not ours to guess

    @property
    def status_url(self) -> str | None:
        if self.settings.status_url:
            return self.settings.status_url
        url = self.settings.url.rstrip("/")
        return url.removesuffix("/send") + "/status" if url.endswith("/send") else None

    def __repr__(self) -> str:
        return f"EdnaGateway(login={self.settings.login!r}, url={self.settings.url!r})"

    async def send(self, message: Outgoing) -> Receipt:
        params = {"address": message.to.lstrip("+"), "text": message.text, "clientId": message.job_id}
        if message.originator:
            params["subject"] = message.originator
        fields = await self._call(self.send_url, params, resend=False)  # a send is a GET: never twice
        if len(fields) < 3 or not fields[2]:
            raise Ambiguous("edna.bad_reply", "ok without a provider id")
        return Receipt(provider_message_id=fields[2])

    async def status(self, ref: StatusRef) -> Report:
        pid = ref.provider_message_id
        if not pid:
            raise Transient("edna.no_provider_id", "edna looks messages up by provider id only")
        if self.status_url is None:
            raise Transient("edna.no_status_url", "no SMS status URL is set, and the sending URL ends not in /send")
        try:
            fields = await self._call(self.status_url, {"providerId[0]": pid})
        except Ambiguous as exc:  # a lookup changes nothing: a lost reply is only transient
            raise Transient(exc.code, exc.message) from None
        if len(fields) < 3:
            raise Transient("edna.bad_reply", "status reply without a status")
        date, reason = [*fields[3:], "", ""][:2]
        return _report(pid, fields[2], ref.job_id, date, reason)

    def parse_callback(self, request: CallbackRequest) -> Callback:
        try:
            data = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            raise ValueError("edna callback body is not JSON") from None
        items = data if isinstance(data, list) else [data]
        reports = []
        for item in items:
            pid, word = (item.get("smsOutMessageId"), item.get("dlvStatus")) if isinstance(item, dict) else (0, 0)
            if not isinstance(pid, str | int) or not str(pid).strip() or not isinstance(word, str) or not word:
                raise ValueError("edna callback needs smsOutMessageId and dlvStatus")
            reports.append(_report(str(pid).strip(), word.strip().lower()))
        if not reports:
            raise ValueError("edna callback carries no report")
        return Callback(reports=reports)

    async def _call(self, url: str, params: dict[str, str], *, resend: bool = True) -> list[str]:
        """GET the connector; the fields of an `ok` reply, or the error tree. Messages never hold credentials."""
        names = (self.settings.login_field or "login", self.settings.password_field or "password")
        auth = dict(zip(names, (self.settings.login, self.settings.password), strict=True))
        reply = await request(
            self.http, "GET", url, provider="edna", timeout_s=self.timeout_s, params=auth | params, resend=resend
        )
        if reply.status != 200:
            raise Transient(f"http.{reply.status}", f"edna answered HTTP {reply.status}")
        lines = reply.text.strip().splitlines()
        fields = [f.strip() for f in lines[0].split(";")] if lines else []
        code = fields[0][:60] if fields else ""
        if code == "ok":
            return fields
        if code.startswith("error"):
            cls, meaning = ERRORS.get(code, (Permanent, "refused"))
            raise cls(f"edna.{code}", meaning)
        raise Ambiguous("edna.bad_reply", "HTTP 200 without ok or an error code")


GATEWAY = EdnaGateway
