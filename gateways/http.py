"""Any HTTP SMS API, wired by settings alone (kind `http`), and the base of the presets built on it.

In the manner of Kannel's generic HTTP SMSC: the sender's `HttpSettings` (smsfleet/kinds.py, checked when the
sender is saved) say where each value goes in the request and how the reply reads:

    POST https://sms.example.com/api/send            encoding json; to_at json:messages.0.to; text_at ...
    {"auth": {"login": "acme"}, "messages": [{"to": "+79161234567", "text": "Hi"}]}
    -> 200 {"result": {"id": "m-17"}}                success_id_pointer /result/id

How a reply is read, in order:
1. transport failures, 429 and 5xx: `gateways.transport.request` (timeout or reset after sending: Ambiguous);
2. an HTTP status of `success_status` whose body matches the success rule (and the success flag, when set):
   a Receipt with the provider's id(s);
3. a body matching a `permanent_errors` regex: Permanent(`<kind>.<code>`); a `transient_errors` one: Transient;
4. any other reply with a success status: Ambiguous (`<kind>.unknown_reply`, `<kind>.empty_reply`): the provider
   may have taken the message, so it is never retried blindly (the worker's ambiguous-send policy decides);
5. any other status: 408 is Transient, the rest (3xx: the URL must be the final one; 4xx) Permanent(`http.<status>`).

Sends never go out twice on their own: redirects are not followed, and a connection lost after the request
was written is Ambiguous("reset"), not silently re-sent (`resend=False`). A status lookup (when
`status_id_at` is set) changes nothing at the provider, so every failure of one is Transient. Provider text
quoted in an error is cut short and scrubbed of the credentials.

Presets (`PresetGateway`): a provider without public documentation keeps its own kind, its seed's fields and a
required `url`; its module fills a fixed mapping (`preset`) with them, e.g. gateways/skymedia.py with the
sadr/dadr family's wire (gateways/_sadr_dadr.py).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl

import aiohttp
import msgspec
from yarl import URL

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import MESSAGE_VALUES, HttpSettings, KindSettings, Location, PresetSettings, json_pointer

from .base import Callback, CallbackRequest, Gateway, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, Transient
from .transport import FORM, Reply, request

__all__ = ["GATEWAY", "HttpGateway", "PresetGateway", "Wire"]

S = TypeVar("S", bound=KindSettings)

_IDS = re.compile(r"[\s,;]+")
_STATES = {"pending": None, **{s.value: s for s in (State.DELIVERED, State.UNDELIVERED, State.EXPIRED, State.REJECTED)}}
_MISSING = object()


class Wire:
    """An `HttpSettings` made ready to use: regexes compiled, places parsed, pointers split."""

    def __init__(self, s: HttpSettings) -> None:
        self.s = s
        self.places = {v: s.place(f"{v}_at") for v in ("login", "password", "client_id", *MESSAGE_VALUES)}
        self.success_status = frozenset(int(code) for code in s.success_status.split(","))
        self.success_regex = re.compile(s.success_regex) if s.success_regex else None
        self.id_pointer = json_pointer(s.success_id_pointer) if s.success_id_pointer is not None else None
        self.flag_pointer = json_pointer(s.success_flag_pointer) if s.success_flag_pointer is not None else None
        self.flag_values = frozenset(v.strip().lower() for v in (s.success_flag_values or "").split(","))
        self.errors = [(re.compile(p), Permanent, c) for p, c in s.permanent_errors.items()] + [
            (re.compile(p), Transient, c) for p, c in s.transient_errors.items()
        ]
        self.status_id = s.place("status_id_at", lookup=True)
        self.status_pointer = json_pointer(s.status_pointer) if s.status_pointer is not None else None
        self.status_regex = re.compile(s.status_regex) if s.status_regex else None
        self.states = {word.strip().lower(): _STATES[state] for word, state in s.states.items()}
        self.callback_id = s.place("callback_id_at", callback=True)
        self.callback_status = s.place("callback_status_at", callback=True)

    @property
    def credentials(self) -> dict[str, str]:
        return {c: v for c in ("login", "password", "client_id") if (v := getattr(self.s, c))}


class _Request:
    """A request being built: values put at their `Location`s."""

    def __init__(self) -> None:
        self.query: dict[str, str] = {}
        self.form: dict[str, str] = {}
        self.json: dict[str, Any] = {}
        self.headers: dict[str, str] = {}

    def put(self, where: Location, value: str) -> None:
        if where.place == "json":
            _json_put(self.json, where.path, value)
        else:
            {"query": self.query, "form": self.form, "header": self.headers}[where.place][where.name] = value

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": self.query, "headers": dict(self.headers)}
        if self.form:
            kwargs["data"] = self.form  # `request()` encodes it as a form
        elif self.json:
            kwargs["data"] = msgspec.json.encode(self.json)
            kwargs["headers"] = {"Content-Type": "application/json", **self.headers}
        return kwargs


def _json_put(doc: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    """Set `value` at dotted `path` in `doc`, making objects on the way (lists where the next segment is a number)."""
    node: Any = doc
    for token, after in itertools.pairwise(path):
        node = _slot(node, token, [] if after.isdigit() else {})
    _slot(node, path[-1], value, replace=True)


def _slot(node: Any, token: str, value: Any, *, replace: bool = False) -> Any:
    """`node[token]`, set to `value` when it is not there yet (or always, with `replace`)."""
    if isinstance(node, list):
        index = int(token)
        node.extend([None] * (index + 1 - len(node)))
        if replace or node[index] is None:
            node[index] = value
        return node[index]
    if replace or token not in node:
        node[token] = value
    return node[token]


def _json_get(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at `tokens` (a JSON pointer's, or a dotted path's) in `doc`, or `_MISSING`."""
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            return _MISSING
    return doc


def _word(value: Any) -> str:
    """A JSON scalar as the text a table compares: true -> 'true', 7 -> '7'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class _HttpBase(Gateway[S]):
    """Send, status lookup and callbacks over a `Wire`. Subclasses say how their settings make one (`wiring`)."""

    default_rate = 10.0
    has_status = True  # per sender: set from its settings in __init__

    def __init__(self, settings: S, http: aiohttp.ClientSession) -> None:
        super().__init__(settings, http)
        self.wire = Wire(self.wiring(settings))
        self.has_status = self.wire.status_id is not None  # type: ignore[misc] # the class default, per sender

    def wiring(self, settings: S) -> HttpSettings:
        raise NotImplementedError

    @property
    def title(self) -> str:
        return self.settings_type.title

    def __repr__(self) -> str:
        shown = str(URL(self.wire.s.url).with_query(None).with_user(None))
        return f"{type(self).__name__}(url={shown!r}, login={self.wire.s.login!r})"

    # --- send --------------------------------------------------------------------------------------------
    async def send(self, message: Outgoing) -> Receipt:
        values = {
            "originator": message.originator,
            "to": message.to.lstrip("+") if self.wire.s.to_format == "digits" else message.to,
            "text": message.text,
            "ref": message.wire_id,
        }
        built = self._with_credentials(self.wire.places)
        for name in MESSAGE_VALUES:
            if (where := self.wire.places[name]) is not None and values[name]:
                built.put(where, str(values[name]))
        reply = await request(
            self.http,
            self.wire.s.method,
            self.wire.s.url,
            provider=self.title,
            timeout_s=self.timeout_s,
            allow_redirects=False,
            resend=False,
            **built.kwargs(),
        )
        return self._receipt(reply)

    def _with_credentials(self, places: Mapping[str, Location | None]) -> _Request:
        built = _Request()
        for name, value in self.wire.credentials.items():
            if (where := places[name]) is not None:
                built.put(where, value)
        return built

    def _receipt(self, reply: Reply) -> Receipt:
        if reply.status in self.wire.success_status and (ids := self._success_ids(reply)) is not None:
            return Receipt(provider_message_id=ids[0] if ids else None, provider_ids=ids if len(ids) > 1 else ())
        if (error := self._known_error(reply.text)) is not None:
            raise error
        if reply.status in self.wire.success_status:
            if not reply.body.strip():
                raise Ambiguous(f"{self.kind}.empty_reply", f"{self.title} answered HTTP {reply.status} with nothing")
            said = self._quoted(reply.text)
            raise Ambiguous(f"{self.kind}.unknown_reply", f"unrecognised reply from {self.title}: {said}")
        cls = Transient if reply.status == 408 else Permanent
        raise cls(f"http.{reply.status}", f"{self.title} answered HTTP {reply.status}")

    def _success_ids(self, reply: Reply) -> tuple[str, ...] | None:
        """The provider's ids when the reply is a success (empty: a success without an id), else None."""
        wire, found = self.wire, ""
        if wire.success_regex is not None:
            if (match := wire.success_regex.search(reply.text)) is None:
                return None
            found = (match.groupdict().get("id") or "").strip()
        doc = reply.json() if wire.id_pointer is not None or wire.flag_pointer is not None else None
        if wire.flag_pointer is not None and _word(_json_get(doc, wire.flag_pointer)).lower() not in wire.flag_values:
            return None
        if wire.id_pointer is not None:
            value = _json_get(doc, wire.id_pointer)
            values = value if isinstance(value, list) else [value]
            if value is _MISSING or not all(isinstance(v, str | int) and _word(v) for v in values) or not values:
                return None
            return tuple(_word(v) for v in values)
        return tuple(i for i in _IDS.split(found) if i)

    def _known_error(self, text: str) -> GatewayError | None:
        for pattern, cls, code in self.wire.errors:
            if pattern.search(text):
                return cls(f"{self.kind}.{code}", f"{self.title} refused it: {self._quoted(text)}")
        return None

    def _quoted(self, text: str) -> str:
        """Provider text fit for an error: short, and without our credentials (a reply may echo them)."""
        text = text.strip()[:120]
        for secret in sorted(self.wire.credentials.values(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return repr(text[:80])

    # --- status lookup -----------------------------------------------------------------------------------
    async def status(self, ref: StatusRef) -> Report:
        wire = self.wire
        if wire.status_id is None:
            raise NotImplementedError(f"this {self.kind} sender has no status lookup (status_id_at)")
        if not ref.provider_message_id:
            raise Transient(f"{self.kind}.no_id", "no provider message id to look up")
        lookup_places = {n: wire.s.place(f"{n}_at", lookup=True) for n in wire.credentials}
        built = self._with_credentials(lookup_places)
        built.put(wire.status_id, ref.provider_message_id)
        try:
            reply = await request(
                self.http,
                wire.s.status_method,
                wire.s.status_url or wire.s.url,
                provider=self.title,
                timeout_s=self.timeout_s,
                allow_redirects=False,
                **built.kwargs(),
            )
            word = self._status_word(reply)
        except (Permanent, Ambiguous) as exc:  # a lookup changes nothing: the recheck simply tries again
            raise Transient(exc.code, exc.message) from None
        state = wire.states[word]
        failed = state is not None and state is not State.DELIVERED
        return Report(
            provider_message_id=ref.provider_message_id,
            state=state,
            job_id=ref.job_id,
            error=ErrorInfo(f"{self.kind}.status.{word}", f"{self.title} reports {word!r}") if failed else None,
            raw_status=word,
        )

    def _status_word(self, reply: Reply) -> str:
        if reply.status not in self.wire.success_status:
            raise Transient(f"http.{reply.status}", f"{self.title} answered HTTP {reply.status} to a status lookup")
        word: Any = _MISSING
        if self.wire.status_pointer is not None:
            word = _json_get(reply.json(), self.wire.status_pointer)
        elif self.wire.status_regex is not None and (match := self.wire.status_regex.search(reply.text)):
            word = match.groupdict().get("status", match.group(0))
        word = "" if word is _MISSING else _word(word).strip().lower()
        if word not in self.wire.states:
            if (error := self._known_error(reply.text)) is not None:
                raise error
            raise Transient(
                f"{self.kind}.unknown_status", f"unrecognised status from {self.title}: {self._quoted(word)}"
            )
        return str(word)

    # --- callbacks ---------------------------------------------------------------------------------------
    def parse_callback(self, request: CallbackRequest) -> Callback:
        wire = self.wire
        if wire.callback_id is None or wire.callback_status is None:
            raise ValueError(f"this {self.kind} sender reads no callbacks (callback_id_at)")
        pid, word = _pushed(request, wire.callback_id), _pushed(request, wire.callback_status)
        if not pid:
            raise ValueError(f"{self.title} callback has no message id at {wire.s.callback_id_at}")
        if word is None:
            raise ValueError(f"{self.title} callback has no status at {wire.s.callback_status_at}")
        word = word.strip().lower()
        state = wire.states.get(word)  # an unknown word: nothing final, kept as raw_status
        failed = state is not None and state is not State.DELIVERED
        report = Report(
            provider_message_id=pid,
            state=state,
            error=ErrorInfo(f"{self.kind}.status.{word}", f"{self.title} reports {word!r}") if failed else None,
            raw_status=word,
        )
        return Callback(reports=[report])


def _pushed(request: CallbackRequest, where: Location) -> str | None:
    """The value at `where` in a pushed request (a query place is also looked for in a form body), or None."""
    if where.place == "header":
        return next((v for k, v in request.headers.items() if k.lower() == where.name.lower()), None)
    if where.place == "json":
        try:
            value = _json_get(msgspec.json.decode(request.body), where.path)
        except msgspec.DecodeError:
            raise ValueError("callback body is not JSON") from None
        return None if value is _MISSING or isinstance(value, dict | list) else _word(value)
    if where.place == "query" and where.name in request.query:
        return request.query[where.name]
    if request.content_type in (FORM, ""):
        return dict(parse_qsl(request.body.decode("utf-8", "replace"))).get(where.name)
    return None


class HttpGateway(_HttpBase[HttpSettings]):
    kind = "http"
    settings_type = HttpSettings
    assumptions = (
        "everything about the provider is in the sender's settings: nothing is assumed beyond them",
        "a reply with a success status that matches neither the success rule nor a known error is Ambiguous",
        "no request rate is known: 10 requests/s per sender unless its rate_limit says otherwise",
    )

    def wiring(self, settings: HttpSettings) -> HttpSettings:
        return settings


class PresetGateway(_HttpBase[PresetSettings]):
    """A provider's kind wired by a fixed mapping: `preset` holds every `HttpSettings` value but the url and the
    credentials, which come from the sender's settings (its seed fields and `url`)."""

    preset: ClassVar[Mapping[str, Any]]

    def wiring(self, settings: PresetSettings) -> HttpSettings:
        given = {name: getattr(settings, name, None) for name in ("url", "login", "password", "client_id")}
        return msgspec.convert({**self.preset, **{k: v for k, v in given.items() if v is not None}}, HttpSettings)


GATEWAY = HttpGateway
