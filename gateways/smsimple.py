"""SMSimple.ru over its simple HTTP API: send, and status lookup by message id. It pushes nothing.

Wire (shared/providers/providers-A.md §7.1, medium-low confidence; the official page was not found):
`{base}/http_send.php` with `user`, `pass`, `or_id`, `phone`, `message`, and `{base}/http_check.php` with
`user`, `pass`, `message_id`, all as query parameters in UTF-8. Replies are plain Russian text: a send
answers `Сообщение #12345 отослано.` (the number is the message id) or `Ошибка при отправке: <reason>`.

Decisions:
- The send is a POST whose parameters stay in the query string. SMSimple documents GET, which a PHP
  script reads from the query string whatever the method; a GET would be re-sent by aiohttp by itself
  when the connection drops, and for http_send.php that is a second SMS. Status lookups are plain GETs.
- `or_id` is always the sender's `originator_id` (the numeric id of an approved signature). SMSimple takes
  no sender name, so a job's `originator` cannot be passed on: one sender per signature.
- `max_parts` is enforced by the worker before sending (`workers.checks.segments_within` reads it); send()
  refuses a longer message too, so the adapter alone never sends one.
- `phone` is the E.164 number's digits (`79161234567`); there is no TTL parameter, so `valid_until` is
  enforced only by the worker before sending.
- Replies are decoded with the charset the Content-Type names, else as UTF-8, else as windows-1251.
- Error texts are not documented: ERRORS matches keywords of the reason, in order; an unmatched
  `Ошибка …` is Transient (SMSimple said it did not send, so trying again later cannot double-send).
- HTTP 200 that is neither `#id` nor `Ошибка`: Ambiguous, the message may have been taken.
- No client message id exists, so a resend after an ambiguous outcome is not safe (`dedupes` is False).
"""

from __future__ import annotations

import re
from typing import Any

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import SmsimpleSettings

from .base import Gateway, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, RateLimited, Transient
from .transport import Reply, request

__all__ = ["GATEWAY", "SmsimpleGateway"]

DEFAULT_BASE_URL = "https://smsimple.ru"
RATE_LIMIT_WAIT_S = 30.0

#: reason of an `Ошибка …` reply -> (code, class); first match wins, no match: Transient [inferred]
ERRORS: tuple[tuple[str, str, type[GatewayError]], ...] = (
    (r"логин|парол|пользовател|авториз|доступ", "auth", Permanent),
    (r"баланс|средств|денег|оплат", "balance", Permanent),
    (r"слишком част|много запрос|лимит|подожд", "rate", RateLimited),
    (r"номер|телефон|получател", "phone", Permanent),
    (r"подпис|отправител|or_id", "originator", Permanent),
    (r"текст|пуст|длин|запрещ|стоп", "message", Permanent),
)

#: http_check.php reply text -> (state, meaning); first match wins; None = not final yet [inferred]
STATUSES: tuple[tuple[str, State | None, str], ...] = (
    (r"не\s*доставлен", State.UNDELIVERED, "not delivered"),
    (r"доставлен", State.DELIVERED, "delivered"),
    (r"просроч|ист[её]к", State.EXPIRED, "expired"),
    (r"отклон|отказ|запрещ", State.REJECTED, "rejected"),
    (r"отправлен|отослан|передан|очеред|ожида|обработ", None, "on its way"),
)
_ERROR = re.compile(r"^\W*ошибка\b[^:]*:?\s*(.*)", re.IGNORECASE | re.DOTALL)
_ACCEPTED = re.compile(r"#\s*(\d+)")
_CHARSET = re.compile(r"charset=([\w.:-]+)", re.IGNORECASE)


def decode(reply: Reply) -> str:
    """The reply's text: the charset its Content-Type names, else UTF-8, else windows-1251."""
    named = _CHARSET.search(next((v for k, v in reply.headers.items() if k.lower() == "content-type"), ""))
    for charset in (named.group(1) if named else None, "utf-8"):
        if charset:
            try:
                return reply.body.decode(charset).strip()
            except (LookupError, UnicodeDecodeError):
                continue
    return reply.body.decode("cp1251", "replace").strip()


class SmsimpleGateway(Gateway[SmsimpleSettings]):
    """SMSimple.ru over http_send.php and http_check.php (plain text replies)."""

    kind = "smsimple"
    settings_type = SmsimpleSettings
    has_status = True
    assumptions = (
        "the send goes as a POST with the documented query parameters (a PHP script reads them the same "
        "as for GET), so aiohttp never re-sends it by itself after a dropped connection",
        "error texts are undocumented: reasons are classified by keywords (auth, balance, phone, signature, "
        "text: rejected; 'too frequent': slowed down 30 s; anything else: retried)",
        "http_check.php answers a Russian status word (Доставлено, Не доставлено, Отправлено, "
        "Просрочено, Отклонено...); its format was not found (providers-A §7.1: low-medium)",
        "no documented request rate: the base default applies; no TTL parameter: valid_until is checked "
        "only before sending",
        "a job's originator is not sent: or_id is always the sender's originator_id",
    )

    @property
    def base_url(self) -> str:
        return (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")

    def __repr__(self) -> str:
        return f"SmsimpleGateway(user={self.settings.user!r}, or_id={self.settings.originator_id!r})"

    async def send(self, message: Outgoing) -> Receipt:
        limit = self.settings.max_parts
        if limit is not None and message.parts > limit:
            raise Permanent("smsimple.too_many_parts", f"{message.parts} parts; the sender allows {limit}")
        params = {"or_id": self.settings.originator_id, "phone": message.to.lstrip("+"), "message": message.text}
        text = await self._call("POST", "/http_send.php", params)
        found = _ACCEPTED.search(text)
        if found is None:
            raise Ambiguous("smsimple.bad_reply", "HTTP 200 without a message id or an error")
        return Receipt(provider_message_id=found.group(1))

    async def status(self, ref: StatusRef) -> Report:
        if not ref.provider_message_id:
            raise Transient("smsimple.no_id", "no SMSimple message id to look up")
        try:
            text = await self._call("GET", "/http_check.php", {"message_id": ref.provider_message_id})
        except Ambiguous as exc:  # a lookup changes nothing: a lost reply is only transient
            raise Transient(exc.code, exc.message) from None
        low = text.lower()
        for pattern, state, meaning in STATUSES:
            if re.search(pattern, low):
                failed = state not in (None, State.DELIVERED)
                error = ErrorInfo(f"smsimple.status.{state}", f"{meaning}: {text[:100]}") if failed else None
                return Report(
                    provider_message_id=ref.provider_message_id,
                    state=state,
                    job_id=ref.job_id,
                    error=error,
                    raw_status=text[:100],
                )
        raise Transient("smsimple.bad_status", f"unrecognised status reply: {text[:100]}")

    async def _call(self, method: str, path: str, params: dict[str, str]) -> str:
        """One call; the reply text of a 200 that is not an error, or the error tree. No credentials leak."""
        query: dict[str, Any] = {"user": self.settings.user, "pass": self.settings.password} | params
        reply = await request(
            self.http, method, self.base_url + path, provider="SMSimple", timeout_s=self.timeout_s, params=query
        )
        if reply.status in (401, 403):
            raise Permanent(f"http.{reply.status}", "SMSimple refused the credentials or this IP")
        if reply.status != 200:
            kind: type[GatewayError] = Permanent if 400 <= reply.status < 500 else Transient
            raise kind(f"http.{reply.status}", f"SMSimple answered HTTP {reply.status}")
        text = decode(reply)
        if self.settings.password:  # in case a reply ever echoes the request
            text = text.replace(self.settings.password, "***")
        failed = _ERROR.match(text)
        if failed is None:
            return text
        reason = failed.group(1).strip()[:200] or text[:200]
        code, cls = next(((c, k) for p, c, k in ERRORS if re.search(p, reason.lower())), ("error", Transient))
        if cls is RateLimited:
            raise RateLimited(f"smsimple.{code}", reason, retry_after=RATE_LIMIT_WAIT_S)
        raise cls(f"smsimple.{code}", reason)


GATEWAY = SmsimpleGateway
