"""BulkSMS.com over its JSON REST API (v1): send, status lookup, pushed reports and inbound SMS.

Wire (shared/providers/providers-A.md §1, from BulkSMS's own OpenAPI spec): `POST {base}/messages` with a JSON
array of SubmissionEntry objects, HTTP Basic auth sent up front (`login:password` is a username and password,
or an API token's id and secret), success 201 with an array of Message objects; `GET {base}/messages/{id}`
for a status; errors as problem JSON `{type, title, status, detail}` with a 4xx status. Pushed (webhook)
bodies are arrays of the same Message objects: `type` SENT for status updates, RECEIVED for inbound SMS.

Decisions:
- `deduplication-id` (query, int32) is BulkSMS's documented idempotency key: a resubmission with the same id
  within about 12 h "succeeds" and is "indistinguishable from a non-duplicated submission", and sends nothing.
  Ours is a number the worker allocates once per job from a counter per BulkSMS account (`Outgoing.ref`,
  `numeric_ref`): two jobs never share one (a hash of the job id did, and BulkSMS then silently dropped the
  second job), and every attempt of a job carries the same. Past the 12 h a resend would be sent again, so
  an ambiguous send is first reconciled by `find`: `GET /messages?filter=userSuppliedId=…`.
- `userSuppliedId` (the client correlation id, at most 20 characters) is the job id when it fits, else `~` and
  19 hex digits of its sha256 (`user_supplied_id`): it shows in BulkSMS's web app and filters. Reports are
  matched by BulkSMS's message id alone (we always hold it: a deduplicated resend answers the first ids), never
  by userSuppliedId, which another application on the same account may set to anything; `find` therefore
  also checks the number and the text of what it finds.
- BulkSMS takes no report URL per message (webhooks are registered per account), so `callback_url` is unused:
  the operator registers the sender's SMS Receiving URL as a SENT and a RECEIVED webhook.
- `longMessageMaxParts` is always sent: the sender's `max_parts`, else this class's `max_parts`. BulkSMS's
  default of 3 would refuse texts that the worker's segment check (which uses the same limit) let through.
- `auto-unicode=true`: a text outside GSM 03.38 (Cyrillic, say) goes as UNICODE; without it BulkSMS sends
  TEXT with every such character replaced by '?'. GSM texts stay TEXT (cheaper).
- `to` is our E.164 with its '+', as BulkSMS documents. `from`: a string (BulkSMS reads it as alphanumeric or
  international), except digits up to 6 long, which go as a SHORTCODE object.
- ACCEPTED, SCHEDULED, SENT and UNKNOWN are not final: a lasting UNKNOWN becomes `unknown` at the horizon.
- 403 (insufficient credits or another refusal) is Permanent, as the spec reads it ("until top-up").
- A 2xx reply without the created messages: Ambiguous. BulkSMS may have taken them, and a resend with the
  same deduplication-id is safe.

Batches (`send_many`, `max_batch` 4000). Documented [B1]: one POST takes an array of up to 30,000 entries,
~4,000 recommended "in order to make resubmissions on network failures more practical", because the
`deduplication-id` is set **per submission** (a query parameter), not per entry; 201 answers one Message per
recipient ("the messages that were created from the request"); a 400 refuses the request, its problem JSON
naming no entry. Each entry carries what `send` puts per message (`to`, `body`, `longMessageMaxParts`,
`userSuppliedId`, `from`). Decided:
- The submission's `deduplication-id` is the `ref` of its first message: a resubmission of the same batch is
  deduplicated, and a batch of one is exactly `send`. A later submission with the same first message but
  other company (a regrouped retry) is answered, if the first one was processed, with the *first* one's
  reply and sends nothing: so a 201 is adopted only when it has one Message per entry, in order, each with
  our `userSuppliedId` and number where it carries them; any other 201 is Ambiguous for every message, and
  the worker reconciles each by `find` (never a guess from position or count).
- A message without a numeric `ref` is refused alone (Permanent `bulksms.no_ref`); the others go.
- A 400 to a batch of several: nothing was created, and BulkSMS does not say which entry it refused, so each
  message is submitted again on its own (its own `ref` as deduplication-id): the one at fault gets its 400
  (Permanent), the good ones are sent. It costs one request per message, no more than unbatched sending,
  and only on a refusal the worker's checks (E.164 numbers, parts, caller IDs) did not foresee.
- Any other refusal (401, 403, 404), 429, 5xx, a timeout or a reset is the whole request's: every message's.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import BulksmsSettings

from ._json_api import call, e164, pushed_json, timestamp
from .base import BatchingGateway, Callback, CallbackRequest, Inbound, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient

__all__ = ["GATEWAY", "BulksmsGateway", "user_supplied_id"]

DEFAULT_BASE_URL = "https://api.bulksms.com/v1"

#: HTTP status of a refused request -> (class, meaning) [providers-A §1.4]; 429 and 5xx: see gateways.transport
ERRORS: dict[int, tuple[type[GatewayError], str]] = {
    400: (Permanent, "bad request"),
    401: (Permanent, "wrong username and password, or API token"),
    403: (Permanent, "refused (e.g. insufficient credits)"),
    404: (Permanent, "not found (check base_url)"),
}

#: `status.type` with its subtype (`FAILED.EXPIRED`), or the type alone -> (state, meaning) [providers-A §1.5]
STATUSES: dict[str, tuple[State | None, str]] = {
    "ACCEPTED": (None, "accepted"),
    "SCHEDULED": (None, "scheduled"),
    "SENT": (None, "relayed to the network"),
    "UNKNOWN": (None, "unknown state"),
    "DELIVERED": (State.DELIVERED, "delivered"),
    "FAILED": (State.UNDELIVERED, "delivery failed"),
    "FAILED.EXPIRED": (State.EXPIRED, "expired before delivery"),
    "FAILED.HANDSET_ERROR": (State.UNDELIVERED, "handset error"),
    "FAILED.BLOCKED": (State.REJECTED, "number blocked (e.g. the recipient replied STOP)"),
    "FAILED.NOT_SENT": (State.REJECTED, "not sent (e.g. no route)"),
}
_FAILED = {State.UNDELIVERED, State.EXPIRED, State.REJECTED}


def user_supplied_id(job_id: str) -> str:
    return job_id if len(job_id) <= 20 else "~" + hashlib.sha256(job_id.encode()).hexdigest()[:19]


def _report(message: Any) -> Report:
    status = message.get("status") if isinstance(message, dict) else None
    if not isinstance(status, dict) or not message.get("id") or not isinstance(status.get("type"), str):
        raise ValueError("a BulkSMS message needs id and status.type")
    subtype = status.get("subtype") or str(status.get("id") or "").partition(".")[2]  # id: "FAILED.EXPIRED"
    raw = f"{status['type']}.{subtype}" if subtype not in ("", "null") else status["type"]
    state, meaning = STATUSES.get(raw) or STATUSES.get(status["type"], (None, f"unknown status {raw}"))
    return Report(
        provider_message_id=str(message["id"]),
        state=state,
        error=ErrorInfo(f"bulksms.{raw}", meaning) if state in _FAILED else None,
        raw_status=raw,
        to=e164(message["to"]) if message.get("to") else None,
    )


def _inbound(message: dict[str, Any]) -> Inbound:
    sender, text = message.get("from"), message.get("body")
    if not isinstance(sender, str) or not sender or not isinstance(text, str):
        raise ValueError("a BulkSMS RECEIVED message needs from and body")
    submission = message.get("submission")
    return Inbound(
        from_=e164(sender),
        to=e164(message.get("to")),
        text=text,
        provider_message_id=str(message["id"]) if message.get("id") else None,
        at=timestamp(submission.get("date")) if isinstance(submission, dict) else None,
    )


def _receipt(message: Outgoing, usid: str, item: Any) -> Receipt | None:
    """The Receipt in `item`, the created Message answered for `message`; None if it is not that message's."""
    if not isinstance(item, dict) or not item.get("id"):
        return None
    if item.get("userSuppliedId") not in (None, usid):
        return None
    to = item.get("to")
    if to is not None and str(to).lstrip("+") != message.to.lstrip("+"):
        return None
    parts = item.get("numberOfParts")  # empty in the submit reply, filled in later
    return Receipt(provider_message_id=str(item["id"]), parts=parts if isinstance(parts, int) else None)


def _refused(status: int, data: Any) -> GatewayError:
    """The error of a submission refused with `status` (a 4xx; 429 and 5xx never get here)."""
    cls, meaning = ERRORS.get(status, (Permanent, f"HTTP {status}"))
    problem = data if isinstance(data, dict) else {}
    kind = str(problem.get("type", "")).partition("#")[2]  # ".../errors#insufficient-credits"
    detail = str(problem.get("detail") or problem.get("title") or "").strip()[:200]
    return cls(f"bulksms.{status}" + (f".{kind}" if kind else ""), f"{meaning}: {detail}" if detail else meaning)


class BulksmsGateway(BatchingGateway[BulksmsSettings]):
    """BulkSMS.com JSON API. Delivery reports: status lookup by message id, and webhooks (SENT and RECEIVED)."""

    kind = "bulksms"
    settings_type = BulksmsSettings
    max_parts = 10
    has_status = True
    can_find = True
    numeric_ref = True
    max_batch = 4000  # BulkSMS takes 30,000 per request and recommends ~4,000 (one deduplication-id each)
    assumptions = (
        "BulkSMS documents no request rate; 20 requests/s per sender is a guess",
        "BulkSMS documents no upper bound for longMessageMaxParts (default 3); 10 parts is our default limit",
        "the 401 body and any 429 are not documented: 401 is taken as wrong credentials (Permanent)",
        "BulkSMS has no validity period field: an expired job is stopped before sending, never at BulkSMS",
        "a submission refused with a 4xx does not use up its deduplication-id, so its messages may be submitted "
        "again (alone, after a 400 to a batch, which names no entry) with the same ids",
    )

    def __init__(self, settings: BulksmsSettings, http: aiohttp.ClientSession) -> None:
        super().__init__(settings, http)
        self.base_url = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        basic = base64.b64encode(f"{settings.login}:{settings.password}".encode()).decode()
        self._auth = {"Authorization": f"Basic {basic}"}  # sent up front, as BulkSMS asks

    def __repr__(self) -> str:
        return f"BulksmsGateway(login={self.settings.login!r}, base_url={self.base_url!r})"

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        if all(m.ref.isdigit() for m in messages):
            return await self._submit(messages) if messages else []
        no_ref = Permanent("bulksms.no_ref", "a BulkSMS message needs a numeric deduplication-id from the worker")
        outcomes: list[Receipt | GatewayError] = [no_ref] * len(messages)
        ready = [i for i, m in enumerate(messages) if m.ref.isdigit()]
        if ready:
            for i, outcome in zip(ready, await self._submit([messages[i] for i in ready]), strict=True):
                outcomes[i] = outcome
        return outcomes

    def _entry(self, message: Outgoing, usid: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "to": message.to,
            "body": message.text,
            "longMessageMaxParts": self.settings.max_parts or self.max_parts,
            "userSuppliedId": usid,
        }
        if message.originator:
            shortcode = message.originator.isdigit() and len(message.originator) <= 6
            entry["from"] = {"type": "SHORTCODE", "address": message.originator} if shortcode else message.originator
        return entry

    async def _submit(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        """One submission of `messages` (each with a numeric ref); one outcome per message (see the module doc)."""
        usids = [user_supplied_id(m.job_id) for m in messages]
        body = [self._entry(m, usid) for m, usid in zip(messages, usids, strict=True)]
        params = {"deduplication-id": messages[0].ref, "auto-unicode": "true"}
        try:
            status, data = await call(
                self, "POST", f"{self.base_url}/messages", provider="BulkSMS", headers=self._auth, body=body,
                params=params,
            )  # fmt: skip
        except GatewayError as exc:
            return [exc] * len(messages)
        if status == 201 and isinstance(data, list) and len(data) == len(messages):
            found = [_receipt(m, usid, item) for m, usid, item in zip(messages, usids, data, strict=True)]
            receipts: list[Receipt | GatewayError] = [r for r in found if r is not None]
            if len(receipts) == len(messages):
                return receipts
        if 200 <= status < 300:
            said = f"{len(data)} messages" if isinstance(data, list) else "no messages"
            error: GatewayError = Ambiguous("bulksms.bad_reply", f"HTTP {status} with {said} not matching ours")
            return [error] * len(messages)
        if status == 400 and len(messages) > 1:  # which entry is not said: each alone, as unbatched sending would
            return await super().send_many(messages)
        return [_refused(status, data)] * len(messages)

    async def find(self, message: Outgoing) -> Receipt | None:
        url = f"{self.base_url}/messages"
        clause = "userSuppliedId=" + quote(user_supplied_id(message.job_id), safe="")  # clauses are URL-encoded
        params = {"filter": clause, "limit": "100"}
        status, data = await call(self, "GET", url, provider="BulkSMS", headers=self._auth, params=params, lookup=True)
        if status != 200 or not isinstance(data, list):
            raise Transient(f"bulksms.lookup.{status}", f"BulkSMS message search answered HTTP {status}")
        to = message.to.lstrip("+")
        found = [
            m for m in data
            if isinstance(m, dict) and m.get("id") and m.get("type") != "RECEIVED"
            and str(m.get("to", "")).lstrip("+") == to and m.get("body") in (message.text, None)
        ]  # fmt: skip
        return Receipt(provider_message_id=str(found[0]["id"])) if found else None

    async def status(self, ref: StatusRef) -> Report:
        pid = ref.provider_message_id
        if not pid:
            raise Transient("bulksms.no_id", "no BulkSMS message id to look up")
        url = f"{self.base_url}/messages/{quote(pid, safe='')}"
        status, data = await call(self, "GET", url, provider="BulkSMS", headers=self._auth, lookup=True)
        if status == 404:
            return Report(provider_message_id=pid, state=None, job_id=ref.job_id, raw_status="NOT_FOUND")
        if status != 200:
            raise Transient(f"bulksms.lookup.{status}", f"BulkSMS status lookup answered HTTP {status}")
        try:
            report = _report(data)
        except ValueError as exc:
            raise Transient("bulksms.bad_reply", f"BulkSMS status lookup: {exc}") from None
        return msgspec.structs.replace(report, job_id=ref.job_id)

    def parse_callback(self, request: CallbackRequest) -> Callback:
        data = pushed_json(request, "BulkSMS")
        items = data if isinstance(data, list) else [data]  # `[]` is the check BulkSMS makes of a new webhook
        if not all(isinstance(item, dict) for item in items):
            raise ValueError("a BulkSMS webhook posts an array of Message objects")
        return Callback(
            reports=[_report(item) for item in items if item.get("type") != "RECEIVED"],
            inbound=[_inbound(item) for item in items if item.get("type") == "RECEIVED"],
        )


GATEWAY = BulksmsGateway
