"""The `sadr`/`dadr` HTTP GET family: the protocol that `sbermobile`, `skymedia` and `intellin` are assumed to speak.

Many Russian SMS aggregators run white-label copies of one platform whose "HTTP GET" interface is one query
string per call (shared/providers/providers-B.md §6.2: Stream Telecom's `gateway.api.sc/get/`, medium
confidence; the same parameters are published for Webcom/MySMPP `sendsms.php`, and clients of SMSGorod,
TargetSMS and BSG's legacy API use them):

    send:    GET <endpoint>?user=<login>&pwd=<password>&sadr=<sender>&dadr=79161234567&text=<UTF-8 text>
             -> HTTP 200 text/plain: the message id (digits), or an error text (Russian, see ERRORS)
    status:  GET <endpoint>?user=<login>&pwd=<password>&smsid=<id>
             -> HTTP 200 text/plain: one word of STATUSES, empty while nothing is known

No public documentation exists for the three gateways themselves (providers-B §3, §5, §7), so each of their
modules says which parameters its settings fill (`wire_fields`) and what it assumes; everything on the wire
is here, with the family's error and status tables. Decisions:

- The endpoint is the sender's `base_url`, used as given: members differ in host and path (`/get/`,
  `/sendsms.php`). There is no public default, so without `base_url` a call fails Permanent("config") rather
  than guess a host.
- GET, because that is the family's method. But aiohttp sends an idempotent request again by itself when the
  connection drops after it was written, which for a send is a second SMS. So every call carries
  `Connection: close` (a fresh connection each time: a stale kept-alive one cannot fail a send that was never
  written), and sends go through a request middleware that turns such a drop into an error aiohttp does not
  retry; `request()` reports it as Ambiguous("reset"). Status lookups may be retried.
- `dadr` is the E.164 number without '+', the form every member shows. `sadr` is the job's originator; without
  one it is left out and the account's default sender applies (without a default the provider answers "Нет
  отправителя": Permanent).
- The GET interface has no client message id, so the job id is not sent and nothing is deduplicated.
- `valid_until` is not sent: only one member documents `validity_period`, in local time of no stated zone; the
  worker never sends a job past its `valid_until` anyway.
- Error texts are matched case-insensitively, trailing punctuation ignored. A reply that is neither ids nor a
  known error is Transient (the platform answers an id when it takes a message); an empty HTTP 200 is
  Ambiguous. Provider text quoted in an error is cut short and scrubbed of the credentials.
"""

from __future__ import annotations

import re
from typing import ClassVar, TypeVar

from yarl import URL

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import KindSettings

from .base import Gateway, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient
from .transport import Reply, request

__all__ = ["ERRORS", "FAMILY_ASSUMPTIONS", "STATUSES", "SadrDadrGateway", "assumed"]

S = TypeVar("S", bound=KindSettings)

#: error text (lowercase, no trailing punctuation) -> (class, code suffix, meaning) [providers-B §6.1, §6.2]
ERRORS: dict[str, tuple[type[GatewayError], str, str]] = {
    "неправильный логин или пароль": (Permanent, "auth", "wrong login or password"),
    "ваш аккаунт заблокирован": (Permanent, "blocked", "account blocked"),
    "данное направление закрыто для вас": (Permanent, "direction", "direction closed: bad number, or no funds"),
    "нет отправителя": (Permanent, "no_sender", "no sender name, and no default one"),
    "такого отправителя нет": (Permanent, "unknown_sender", "sender name not registered"),
    "нет текста сообщения": (Permanent, "no_text", "no message text"),
    "укажите номер телефона": (Permanent, "no_phone", "no phone number"),
    "flood sms": (Permanent, "flood", "the same text to this number too often"),
}

#: status word -> (state, meaning); None = not final yet [providers-B §6.2; Webcom's HTTP GET spec]
STATUSES: dict[str, tuple[State | None, str]] = {
    "": (None, "no status yet"),
    "send": (None, "sent, no report yet"),
    "partly_deliver": (None, "sent, report not received"),
    "deliver": (State.DELIVERED, "delivered"),
    "read": (State.DELIVERED, "read"),
    "not_deliver": (State.UNDELIVERED, "not delivered"),
    "expired": (State.EXPIRED, "subscriber unreachable until the message expired"),
}

FAMILY_ASSUMPTIONS = (
    "the sadr/dadr HTTP GET family (providers-B §6.2): GET base_url?user&pwd&sadr&dadr&text answers the "
    "message id or a Russian error text; GET base_url?user&pwd&smsid answers deliver|not_deliver|expired|...",
    "base_url is the provider's full sending URL; there is no public default",
    "dadr is the number without '+'; text is UTF-8; no client message id, so no deduplication",
    "a job without an originator is sent without sadr, and the account's default sender name applies",
    "no request rate is published; 10 requests/s per sender is a guess",
)


def assumed(provider: str, why: str, *specific: str) -> tuple[str, ...]:
    """A gateway's `assumptions`: that its wire is this family's, why, what else it assumes, then the family's."""
    return (
        f"the wire format is an assumption to confirm with {provider}: {why}, so this adapter speaks the "
        "sadr/dadr HTTP GET family of Russian aggregators",
        *specific,
        *FAMILY_ASSUMPTIONS,
    )


_SPLIT = re.compile(r"[\s,;]+")


class SadrDadrGateway(Gateway[S]):
    """Send and status lookup of the family. Subclasses set `kind`, `settings_type`, `assumptions` and, when
    more than login and password go on the wire, `wire_fields`."""

    default_rate = 10.0
    has_status = True
    #: query parameter -> settings field, sent with every request
    wire_fields: ClassVar[dict[str, str]] = {"user": "login", "pwd": "password"}

    def auth(self) -> dict[str, str]:
        return {param: str(getattr(self.settings, field)) for param, field in self.wire_fields.items()}

    @property
    def endpoint(self) -> str:
        url = str(getattr(self.settings, "base_url", None) or "").strip()
        if not url:
            title = self.settings_type.title
            raise Permanent("config", f"set base_url: {title} has no public endpoint; ask it for its HTTP GET URL")
        return url

    def __repr__(self) -> str:
        url = str(getattr(self.settings, "base_url", None) or "").strip()
        shown = str(URL(url).with_query(None).with_user(None)) if url else None
        return f"{type(self).__name__}(login={self.auth()['user']!r}, base_url={shown!r})"

    async def send(self, message: Outgoing) -> Receipt:
        params = {"dadr": message.to.lstrip("+"), "text": message.text}
        if message.originator:
            params = {"sadr": message.originator} | params
        body = (await self._get(params, resend=False)).text.strip()
        ids = _SPLIT.split(body) if body else []
        if ids and all(i.isdigit() for i in ids):
            return Receipt(provider_message_id=ids[0], provider_ids=tuple(ids) if len(ids) > 1 else ())
        if not body:
            raise Ambiguous(f"{self.kind}.empty_reply", "HTTP 200 with an empty body")
        raise self._error(body)

    async def status(self, ref: StatusRef) -> Report:
        if not ref.provider_message_id:
            raise Transient(f"{self.kind}.no_id", "no provider message id to look up")
        try:
            word = (await self._get({"smsid": ref.provider_message_id}, resend=True)).text.strip()
            if word.lower() not in STATUSES:
                raise self._error(word)
        except (Permanent, Ambiguous) as exc:  # a lookup changes nothing: the recheck simply tries again
            raise Transient(exc.code, exc.message) from None
        state, meaning = STATUSES[word.lower()]
        failed = state is not None and state is not State.DELIVERED
        return Report(
            provider_message_id=ref.provider_message_id,
            state=state,
            job_id=ref.job_id,
            error=ErrorInfo(f"{self.kind}.status.{word.lower()}", meaning) if failed else None,
            raw_status=word.lower(),
        )

    async def _get(self, params: dict[str, str], *, resend: bool) -> Reply:
        """One GET of the family; any reply but HTTP 200 is an error (429 and 5xx: see `request()`)."""
        title = self.settings_type.title
        reply = await request(
            self.http,
            "GET",
            self.endpoint,
            provider=title,
            timeout_s=self.timeout_s,
            params=self.auth() | params,
            allow_redirects=False,
            resend=resend,
        )
        if reply.status == 200:
            return reply
        cls = Transient if reply.status == 408 else Permanent  # 3xx too: base_url must be the final URL
        raise cls(f"http.{reply.status}", f"{title} answered HTTP {reply.status}")

    def _error(self, text: str) -> GatewayError:
        key = text.strip().rstrip(".!").lower()
        for known, (cls, suffix, meaning) in ERRORS.items():
            if key.startswith(known):
                return cls(f"{self.kind}.{suffix}", meaning)
        for secret in self.auth().values():
            text = text.replace(secret, "***") if secret else text
        return Transient(f"{self.kind}.unknown_reply", f"unrecognised reply: {text[:80]!r}")
