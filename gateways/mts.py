"""MTS (the MTS Marketolog "omnichannel" HTTP API, what enterprise A2P senders use): send and status lookup.

Wire (shared/providers/providers-B.md §1): JSON over HTTPS at `{base}/http-api/v1`, HTTP Basic auth with the
`login` and `password` of the cabinet's integration section; `base_url` replaces `https://omnichannel.mts.ru`.

- send: `POST /messages` `{"messages": [{"content": {"short_text"}, "from": {"sms_address"}, "to": [{"msisdn",
  "message_id"}]}]}` -> 200 `{"messages": [{"internal_id", "msisdn"}]}`; `internal_id` is the provider id.
- status: `POST /messages/info` `{"int_ids": [...]}` -> `{"events_info": [{"key", "events_info": [event, ...]}]}`,
  a list of events per message, each with a numeric `status` and `internal_errors`.

Decisions:
- `msisdn` is the E.164 number without '+' (`7916...`), as every client sends it.
- `to[].message_id` is our job id (the doc's client message id), so a message can be looked up by it
  (`msg_ids`) when we hold no `internal_id`. What MTS does with a repeated `message_id` is not documented,
  hence no `dedupes`: an ambiguous send follows the worker's policy.
- The code table ("Коды и ошибки") was not available, so errors are classified by HTTP status (ERRORS);
  the provider's own `code` and `message` go into the error message. A 200 carrying `{code, message}` and no
  `messages` is a refusal; a 200 with neither is Ambiguous (MTS may have taken the message).
- Status codes are reconstructed from client code, not from the doc (medium-low confidence): 200 sent,
  201 not sent, 300 delivered, 301 not delivered (STATUSES). Several events: a final one wins over "sent",
  so the order of the list does not matter. Codes we do not know are not final: polling goes on, and the
  status horizon ends the job `unknown` if nothing final comes.
- No callbacks: the doc lists them, but their payload was not found (the kind has no receiving URL).
- Batches (`send_many`, `max_batch` 100, a guess: no maximum is documented): the messages of one request go
  as `messages[]`, and each reply entry is matched to its message by `msisdn` (in order among the messages to
  one number), not by position, which the doc does not promise; a reply that does not match them one to one
  is Ambiguous for every message. A refused request (4xx, or a 200 with an error body) does not say which
  message it refused: each is then sent alone, as unbatched sending would (a refusal took nothing). The
  request rate is not documented either: a message, not a request, takes a slot.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import MtsSettings

from .base import BatchingGateway, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient
from .transport import request

__all__ = ["GATEWAY", "MtsGateway"]

DEFAULT_BASE_URL = "https://omnichannel.mts.ru"
API = "/http-api/v1"

#: HTTP status of a reply carrying `{code, message}` -> (class, meaning); 429 and 5xx are `http.request`'s
ERRORS: dict[int, tuple[type[GatewayError], str]] = {
    200: (Permanent, "refused"),  # an error body in a 200 reply
    400: (Permanent, "bad request"),
    401: (Permanent, "wrong login or password"),
    402: (Permanent, "no SMS package bought"),
    403: (Permanent, "forbidden (sender name not connected?)"),
    404: (Permanent, "unknown endpoint"),
    408: (Transient, "request timeout"),
    413: (Permanent, "request too large"),
    422: (Permanent, "unprocessable message"),
}

#: `/messages/info` event `status` -> (state, meaning); None = not final yet [providers-B §1.5: M-L]
STATUSES: dict[int, tuple[State | None, str]] = {
    200: (None, "sent to the operator"),
    201: (State.REJECTED, "not sent"),
    300: (State.DELIVERED, "delivered"),
    301: (State.UNDELIVERED, "not delivered"),
}


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _report(key: str, events: list[Any], job_id: str) -> Report:
    codes = [e for e in events if isinstance(e, dict) and isinstance(e.get("status"), int)]
    final = [e for e in codes if STATUSES.get(e["status"], (None,))[0] is not None]
    if not (final or codes):
        return Report(provider_message_id=key, state=None, job_id=job_id)
    event = (final or codes)[-1]
    code = event["status"]
    state, meaning = STATUSES.get(code, (None, f"unknown status {code}"))
    error = None
    if state is not None and state is not State.DELIVERED:
        reasons = event.get("internal_errors") or []
        error = ErrorInfo(f"mts.status.{code}", meaning + (f" (internal errors {reasons})" if reasons else ""))
    pid = str(event.get("internal_id") or key)
    return Report(
        provider_message_id=pid,
        state=state,
        job_id=job_id,
        at=_when(event.get("event_at")),
        error=error,
        raw_status=str(code),
    )


class MtsGateway(BatchingGateway[MtsSettings]):
    """MTS Marketolog over its omnichannel HTTP API. Delivery reports: status lookup by internal id."""

    kind = "mts"
    settings_type = MtsSettings
    has_status = True
    assumptions = (
        "the API is MTS Marketolog's omnichannel HTTP API (POST /http-api/v1/messages, Basic auth)",
        "error codes are not public: classified by HTTP status (4xx permanent, 408/429/5xx transient)",
        "status codes 200 sent, 201 not sent, 300 delivered, 301 not delivered come from client code, not "
        "the doc (medium-low confidence); other codes are treated as not final",
        "`to[].message_id` carries our job id; MTS's handling of a repeated id is unknown, so no dedup",
        "without an originator `from` is left out and the account's default sender name applies",
        "no validity field is documented: `valid_until` is not sent (the worker drops expired jobs)",
        "callbacks exist per the doc's contents, payload unknown: delivery comes from status lookups only",
        "MTS publishes no request rate here; 20 requests/s per sender is a guess",
        "batches of up to 100 messages (no maximum is documented); the reply's entries are matched to the "
        "messages by msisdn, and a refused batch is sent again message by message",
    )
    max_batch = 100

    @property
    def base_url(self) -> str:
        return (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/") + API

    def __repr__(self) -> str:
        return f"MtsGateway(login={self.settings.login!r}, base_url={self.base_url!r})"

    async def send_many(self, messages: Sequence[Outgoing]) -> list[Receipt | GatewayError]:
        if not messages:
            return []
        try:
            data = await self._call("/messages", {"messages": [_item(m) for m in messages]})
        except Permanent as exc:
            return await super().send_many(messages) if len(messages) > 1 else [exc]
        except GatewayError as exc:
            return [exc] * len(messages)
        ids = _internal_ids(messages, data.get("messages"))
        if ids is None:
            error = Ambiguous("mts.bad_reply", f"HTTP 200 whose messages do not match the {len(messages)} sent")
            return [error] * len(messages)
        return [Receipt(provider_message_id=i) for i in ids]

    async def status(self, ref: StatusRef) -> Report:
        key = ref.provider_message_id or ref.job_id
        body = {"int_ids": [key]} if ref.provider_message_id else {"msg_ids": [key]}
        try:
            data = await self._call("/messages/info", body)
        except Ambiguous as exc:  # a lookup changes nothing: a lost reply is only transient
            raise Transient(exc.code, exc.message) from None
        found = data.get("events_info")
        if not isinstance(found, list):
            raise Transient("mts.bad_reply", "status reply without events_info")
        for item in found:
            if isinstance(item, dict) and str(item.get("key")) == key:
                events = item.get("events_info")
                return _report(key, events if isinstance(events, list) else [], ref.job_id)
        return Report(provider_message_id=ref.provider_message_id, state=None, job_id=ref.job_id)

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to MTS; the JSON object of a success, or the error tree. Messages never hold credentials."""
        pair = base64.b64encode(f"{self.settings.login}:{self.settings.password}".encode()).decode()
        auth = {"Authorization": f"Basic {pair}"}
        url = self.base_url + path
        reply = await request(self.http, "POST", url, provider="MTS", timeout_s=self.timeout_s, json=body, headers=auth)
        data = reply.json()
        failed = reply.status != 200 or (isinstance(data, dict) and "code" in data and "messages" not in data)
        if failed:
            cls, meaning = ERRORS.get(reply.status, (Permanent if reply.status < 500 else Transient, "refused"))
            said = f"{data.get('code')} {str(data.get('message', ''))[:200]}" if isinstance(data, dict) else ""
            raise cls(f"mts.{reply.status}", f"{meaning}: {said}".rstrip(": "))
        if not isinstance(data, dict):
            raise Ambiguous("mts.bad_reply", "HTTP 200 without a JSON object")
        return data


def _item(message: Outgoing) -> dict[str, Any]:
    item: dict[str, Any] = {
        "content": {"short_text": message.text},
        "to": [{"msisdn": message.to.lstrip("+"), "message_id": message.job_id}],
    }
    if message.originator:
        item["from"] = {"sms_address": message.originator}
    return item


def _internal_ids(messages: Sequence[Outgoing], taken: Any) -> list[str] | None:
    """Each message's `internal_id` from the reply's `messages`, matched by `msisdn` (in order among the messages
    to one number; a lone message takes the lone entry, `msisdn` or not); None unless they match one to one."""
    entries = taken if isinstance(taken, list) and len(taken) == len(messages) else []
    if not entries or not all(isinstance(e, dict) and e.get("internal_id") for e in entries):
        return None
    if len(messages) == 1:
        return [str(entries[0]["internal_id"])]
    by_number: dict[str, list[str]] = {}
    for entry in entries:
        by_number.setdefault(str(entry.get("msisdn") or "").lstrip("+"), []).append(str(entry["internal_id"]))
    ids = []
    for message in messages:
        waiting = by_number.get(message.to.lstrip("+"))
        if not waiting:
            return None
        ids.append(waiting.pop(0))
    return ids


GATEWAY = MtsGateway
