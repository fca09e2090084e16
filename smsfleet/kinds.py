"""Gateway kinds and the typed settings of each (DESIGN §6).

One frozen Struct per kind holds the settings the product's sender form shows for that gateway (the names
are the seed's), plus `base_url` where the provider has a fixed public endpoint that a test or a private
installation may need to override. Kinds whose seed fields already include the sending `url` use that
field as the endpoint and have no separate `base_url`.

Each field carries its form label (the seed's words), whether it is a secret, and whether it is `advanced`
(a setting the seed's form does not show: an endpoint override, EDNA's status URL); `fields()` turns that into
the table the CLI (`smsfleet gateways`) and the admin API and form show, so there is one source of truth.

`HttpSettings` wires any HTTP API without code (kind `http`, gateways/http.py); `PresetSettings` are the kinds
built on it for providers without public documentation (Sky Media, SberMobile, Intellin). Rules that one
field's type cannot say are checked in `__post_init__`, so a sender is refused when it is saved, naming the
field (`refused`).
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, ClassVar

import msgspec

__all__ = [
    "KINDS",
    "KIND_SETTINGS",
    "MESSAGE_VALUES",
    "PATTERN_MESSAGES",
    "FieldSpec",
    "HttpSettings",
    "KindSettings",
    "Location",
    "PresetSettings",
    "fields",
    "json_pointer",
    "location",
    "refused",
    "secret_fields",
]


def _f(
    label: str, *, secret: bool = False, help: str = "", advanced: bool = False, required: bool = False
) -> msgspec.Meta:
    """A field's form metadata. `advanced`: not among the seed's fields for the kind (an endpoint override...),
    shown apart; `required`: required although the struct gives it a default (checked in `__post_init__`)."""
    extra = {"secret": secret, "advanced": advanced} | ({"required": True} if required else {})
    return msgspec.Meta(title=label, description=help or None, extra=extra)


#: an absolute http(s) URL: a URL without a scheme or a host is refused when the sender is saved, not at send
HTTP_URL = r"\Ahttps?://[^\s/?#]+[^\s]*\Z"
#: Infobip's account base URL, optionally ending in one of the send paths the adapter knows (v3 or v2)
INFOBIP_URL = r"\Ahttps?://[^\s/?#]+(?:/sms/3/messages|/sms/2/text/advanced)?/?\Z"
#: what a value failing each pattern should be, said to a person
PATTERN_MESSAGES = {
    HTTP_URL: "must be an absolute http(s) URL, e.g. https://sms.example.com/send",
    INFOBIP_URL: "must be your Infobip base URL (https://<id>.api.infobip.com), optionally ending in "
    "/sms/3/messages or /sms/2/text/advanced",
}

Login = Annotated[str, _f("Login")]
Password = Annotated[str, _f("Password", secret=True)]
Url = Annotated[
    str, _f("SMS service sending URL", help="the endpoint given by the provider"), msgspec.Meta(pattern=HTTP_URL)
]
BaseUrl = Annotated[
    Annotated[str, msgspec.Meta(pattern=HTTP_URL)] | None,
    _f("Endpoint override", help="replaces the provider's public endpoint", advanced=True),
]
AwaitDelivery = Annotated[
    int,
    _f("Await delivery (seconds)", help="wait before the first delivery status check; at least 1 s"),
    msgspec.Meta(ge=1),
]
_MAX_PARTS_HELP = "longer texts are rejected before sending; empty: the provider's limit"
MaxParts = Annotated[Annotated[int, msgspec.Meta(ge=1)] | None, _f("Max SMS per message", help=_MAX_PARTS_HELP)]


class KindSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every kind's settings. Class attributes describe the kind itself."""

    kind: ClassVar[str]
    title: ClassVar[str]
    #: the provider pushes delivery reports or inbound SMS, so the sender gets an SMS Receiving URL
    callbacks: ClassVar[bool] = False
    #: the provider may also call one fixed URL for every account, with no sender or token in it (the seed's
    #: `…/sms_rapporto`): only what no stranger can forge is taken from it (see `webhooks`)
    pushes_on_fixed_path: ClassVar[bool] = False
    #: the setting naming the account's service id or short number, which credits an inbound SMS on that URL
    service_number_field: ClassVar[str | None] = None

    def __repr__(self) -> str:  # secrets never reach a log line or a traceback through repr()
        hidden = secret_fields(type(self))
        shown = ", ".join(
            f"{f}={'***' if f in hidden and getattr(self, f) else repr(getattr(self, f))}"
            for f in self.__struct_fields__
        )
        return f"{type(self).__name__}({shown})"


class SmscSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "smsc"
    title = "SMSC.ru"
    callbacks = True
    login: Login
    password: Annotated[str, _f("Password or MD5 hash", secret=True)]
    await_delivery_s: AwaitDelivery = 60
    base_url: BaseUrl = None


class SmsimpleSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "smsimple"
    title = "SMSimple.ru"
    user: Annotated[str, _f("User")]
    password: Password
    originator_id: Annotated[str, _f("Original identifier", help="the sender-name id (or_id)")]
    max_parts: Annotated[
        Annotated[int, msgspec.Meta(ge=1)] | None, _f("Max SMS per message number", help=_MAX_PARTS_HELP)
    ] = None
    base_url: BaseUrl = None


class BulksmsSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "bulksms"
    title = "BulkSMS.com"
    callbacks = True
    login: Annotated[str, _f("Login", help="username, or API token id")]
    password: Annotated[str, _f("Password", secret=True, help="password, or API token secret")]
    max_parts: MaxParts = None
    await_delivery_s: AwaitDelivery = 60
    base_url: BaseUrl = None


class DevinoSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """With `api_key`: the Devino.Online JSON API; with login and password: the classic REST API."""

    kind = "devino"
    title = "Devino.Online SMS"
    callbacks = True
    url: Annotated[
        Annotated[str, msgspec.Meta(pattern=HTTP_URL)] | None,
        _f("SMS service sending script/URL", help="empty: the API's public URL"),
    ] = None
    api_key: Annotated[str | None, _f("API-key", secret=True)] = None
    login: Annotated[str | None, _f("Login")] = None
    password: Annotated[str | None, _f("Password", secret=True)] = None

    def __post_init__(self) -> None:
        if not self.api_key and not (self.login and self.password):
            raise ValueError("devino needs api_key, or login and password")


class SmstrafficSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "smstraffic"
    title = "SMS Traffic"
    callbacks = True
    url: Annotated[str, _f("SMS service sending script"), msgspec.Meta(pattern=HTTP_URL)] = (
        "https://api.smstraffic.ru/multi.php"
    )
    login: Login
    password: Password


class InfobipSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "infobip"
    title = "Infobip"
    callbacks = True
    url: Annotated[
        str,
        _f("SMS service sending script/URL", help="your account's base URL (https://<id>.api.infobip.com)"),
        msgspec.Meta(pattern=INFOBIP_URL),
    ]
    api_token: Annotated[str, _f("API token", secret=True)]


class MtsSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "mts"
    title = "MTS"
    login: Login
    password: Password
    base_url: BaseUrl = None


class EdnaSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "edna"
    title = "MFMS EDNA"
    callbacks = True
    url: Annotated[str, _f("SMS service URL", help="called as given"), msgspec.Meta(pattern=HTTP_URL)]
    login: Login
    login_field: Annotated[str, _f("Login field name", help="empty: login")] = "login"
    password: Password
    password_field: Annotated[str, _f("Password field name", help="empty: password")] = "password"  # noqa: S105 - a field name
    status_url: Annotated[
        Annotated[str, msgspec.Meta(pattern=HTTP_URL)] | None,
        _f("SMS status URL", help="empty: the sending URL with its final /send replaced by /status", advanced=True),
    ] = None


#: a preset's endpoint: required (see `PresetSettings`), typed optional so that a stored `base_url` can fill it
PresetUrl = Annotated[
    Annotated[str, msgspec.Meta(pattern=HTTP_URL)] | None,
    _f("SMS service URL", help="the full sending URL the provider gives (no public default)", required=True),
]
#: what a preset's `url` was called before it was required: read into `url`
FormerUrl = Annotated[
    Annotated[str, msgspec.Meta(pattern=HTTP_URL)] | None,
    _f("SMS service URL (former name)", help="read into url; leave empty", advanced=True),
]


class PresetSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A preset of the `http` kind (gateways/http.py) for a provider without public documentation: the seed's
    fields, then the required "SMS service URL" (`url`: `PresetUrl`) the provider gives. `base_url`
    (`FormerUrl`), the name of that URL before, is still read (stored senders, old files) and moved into `url`
    when `url` is not given (`url` wins: an update setting `url` on an old sender replaces its `base_url`); a
    document with neither is refused when it is saved."""

    def __post_init__(self) -> None:
        url, former = getattr(self, "url", None), getattr(self, "base_url", None)
        if not (url or former):
            raise refused("url", f"required: the SMS service URL that {self.title} gives (it has no public one)")
        msgspec.structs.force_setattr(self, "url", url or former)
        msgspec.structs.force_setattr(self, "base_url", None)


class SkymediaSettings(PresetSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "skymedia"
    title = "Sky Media"
    login: Login
    password: Password
    url: PresetUrl = None
    base_url: FormerUrl = None


class PlaymobileSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "playmobile"
    title = "Play Mobile"
    callbacks = True
    user_id: Annotated[str, _f("User ID")]
    password: Password
    base_url: BaseUrl = None


class RapportoSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """With `key`: Rapporto's REST batch API at `url` (many messages a request); else its HTTP API v5.0 with
    service_id and password."""

    kind = "rapporto"
    title = "Rapporto"
    callbacks = True
    pushes_on_fixed_path = True
    service_number_field = "service_id"
    service_id: Annotated[str, _f("Service ID", help="with key: the service name a job without one is sent from")]
    password: Annotated[str | None, _f("Password", secret=True, help="HTTP API v5.0; empty with key")] = None
    key: Annotated[
        str | None, _f("Batch API key", secret=True, help="REST batch API: `url` is its URI", advanced=True)
    ] = None
    url: Url

    def __post_init__(self) -> None:
        if self.password is None and self.key is None:
            raise refused("password", "required, unless key (Rapporto's REST batch API) is given")


class SbermobileSettings(PresetSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "sbermobile"
    title = "SberMobile"
    login: Login
    password: Password
    client_id: Annotated[str, _f("Client ID")]
    url: PresetUrl = None
    base_url: FormerUrl = None


class StreamtelecomSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "streamtelecom"
    title = "Stream Telecom"
    login: Login
    password: Password
    base_url: BaseUrl = None


class IntellinSettings(PresetSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "intellin"
    title = "Intellin"
    login: Login
    password: Password
    url: PresetUrl = None
    base_url: FormerUrl = None


class SeventechSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "seventech"
    title = "Seven Tech"
    callbacks = True
    url: Url
    login: Login
    password: Password
    shorten_links: Annotated[bool, _f("Shorten links in messages")] = False


# -- the configurable HTTP kind ------------------------------------------------------------------------------


def refused(field: str, message: str) -> ValueError:
    """A setting refused from a struct's `__post_init__`, naming the field: msgspec reports it as said here
    (`… - at `$.field``), so `smsfleet.senders` answers `settings.<field>` (CLI exit 2, admin API 422)."""
    return ValueError(f"{message} - at `$.{field}`")


class Location(typing.NamedTuple):
    """Where a value goes in a request (or is read from a callback): `place` is query, form, json or header;
    `name` is the parameter, field or header name, or for json a dotted path (`messages.0.to`)."""

    place: str
    name: str

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.name.split(".")) if self.place == "json" else (self.name,)


PLACES = ("query", "form", "json", "header")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def location(text: str, default: str = "query") -> Location:
    """`query:user`, `form:pwd`, `json:messages.0.to`, `header:X-Login`, or a bare name (in `default`).
    Raises ValueError saying what is wrong."""
    place, sep, name = text.strip().partition(":")
    if not sep:
        place, name = default, text.strip()
    if place not in PLACES:
        raise ValueError(f"{place!r} is not a place: use query:NAME, form:NAME, json:PATH or header:NAME")
    if not name:
        raise ValueError(f"{place}: needs a name")
    if place == "header" and not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a header name")
    if place == "json" and not all(name.split(".")):
        raise ValueError(f"{name!r} is not a dotted JSON path (e.g. messages.0.to)")
    return Location(place, name)


def json_pointer(text: str) -> tuple[str, ...]:
    """The reference tokens of an RFC 6901 JSON pointer (`/result/id` -> ('result', 'id')); ValueError if
    `text` is not one."""
    if text and not text.startswith("/"):
        raise ValueError(f"{text!r} is not a JSON pointer: it starts with / (e.g. /result/id)")
    if re.search(r"~(?![01])", text):
        raise ValueError(f"{text!r} is not a JSON pointer: ~ is written ~0 and / inside a name ~1")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in text.split("/")[1:])


def _regex(field: str, text: str, groups: frozenset[str] | None = None) -> re.Pattern[str]:
    """`text` compiled, or the refusal of `field`; `groups`: the named groups it may have (None: any)."""
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise refused(field, f"{text!r} is not a regular expression ({exc})") from None
    if groups is not None and (unknown := set(pattern.groupindex) - groups):
        allowed = f"only {', '.join(sorted(groups))}" if groups else "none"
        raise refused(field, f"unknown named group {sorted(unknown)[0]!r} ({allowed} is read)")
    return pattern


Place = Annotated[str, msgspec.Meta(max_length=200)] | None
Regex = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)] | None
Pointer = Annotated[str, msgspec.Meta(max_length=200)] | None
ErrorTable = dict[
    Annotated[str, msgspec.Meta(min_length=1)], Annotated[str, msgspec.Meta(pattern=r"\A[a-z0-9_.-]{1,40}\Z")]
]
_CREDENTIALS = ("login", "password", "client_id")
#: the values of a message, in the order they go on the wire after the credentials
MESSAGE_VALUES = ("originator", "to", "text", "ref")


class HttpSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Any HTTP SMS API, wired by settings alone (gateways/http.py, in the manner of Kannel's generic HTTP SMSC).

    Each `*_at` says where a value goes: `query:NAME`, `form:NAME`, `json:dotted.path` (digits index lists:
    `messages.0.to`) or `header:NAME`; a bare NAME is a query parameter for GET, else a field of the body
    (`encoding`). Nothing is sent for a value without a place. Success is an HTTP status of `success_status`
    and a body matching `success_regex` (its `id` group is the message id; several ids, one per part, may be
    separated by spaces, commas or semicolons) or holding an id at the JSON pointer `success_id_pointer`
    (a list: one id per part); with `success_flag_pointer`, the value there must also be one of
    `success_flag_values`. `permanent_errors` / `transient_errors` map a regex (searched in the body) to an
    error code. Any other reply with a success status is Ambiguous: the provider may have taken the message.
    With `status_id_at`, a status lookup is made to `status_url` (default `url`) with the credentials in their
    places and reads a status word (`status_pointer`, or the `status` group / whole match of `status_regex`),
    mapped by `states` (word -> pending|delivered|undelivered|expired|rejected). With `callback_id_at` and
    `callback_status_at`, the provider's pushed reports are read from those places of its request.
    """

    kind = "http"
    title = "Any HTTP API (configurable)"
    callbacks = True  # when `callback_id_at` is set; without it a push is refused with a 400
    url: Annotated[str, _f("SMS service URL", help="the provider's sending URL"), msgspec.Meta(pattern=HTTP_URL)]
    method: Annotated[typing.Literal["GET", "POST"], _f("HTTP method")] = "POST"
    encoding: Annotated[
        typing.Literal["query", "form", "json"], _f("Body encoding", help="of a POST: query, form or json")
    ] = "form"
    login: Annotated[str | None, _f("Login")] = None
    password: Annotated[str | None, _f("Password", secret=True)] = None
    client_id: Annotated[str | None, _f("Client ID")] = None
    login_at: Annotated[Place, _f("Where the login goes", help="query:NAME, form:NAME, json:PATH or header:NAME")] = (
        None
    )
    password_at: Annotated[Place, _f("Where the password goes")] = None
    client_id_at: Annotated[Place, _f("Where the client ID goes")] = None
    originator_at: Annotated[Place, _f("Where the originator goes", help="left out when a job has none")] = None
    to_at: Annotated[Place, _f("Where the destination goes", required=True)] = None
    text_at: Annotated[Place, _f("Where the text goes", required=True)] = None
    ref_at: Annotated[Place, _f("Where our message id goes", help="the job id, the same on every attempt")] = None
    to_format: Annotated[
        typing.Literal["e164", "digits"], _f("Destination format", help="e164: +79161234567; digits: 79161234567")
    ] = "e164"
    success_status: Annotated[
        str, _f("Success HTTP statuses", help="comma-separated"), msgspec.Meta(pattern=r"\A\d{3}(?:\s*,\s*\d{3})*\Z")
    ] = "200"
    success_regex: Annotated[Regex, _f("Success regex", help="searched in the body; group id: the message id")] = None
    success_id_pointer: Annotated[Pointer, _f("Message id JSON pointer", help="e.g. /result/id")] = None
    success_flag_pointer: Annotated[Pointer, _f("Success flag JSON pointer", help="e.g. /status")] = None
    success_flag_values: Annotated[str | None, _f("Success flag values", help="comma-separated, e.g. ok,true")] = None
    permanent_errors: Annotated[ErrorTable, _f("Permanent errors", help="regex -> error code")] = {}
    transient_errors: Annotated[ErrorTable, _f("Transient errors", help="regex -> error code")] = {}
    status_url: Annotated[
        Annotated[str, msgspec.Meta(pattern=HTTP_URL)] | None, _f("Status lookup URL", help="empty: url")
    ] = None
    status_method: Annotated[typing.Literal["GET", "POST"], _f("Status lookup HTTP method")] = "GET"
    status_id_at: Annotated[Place, _f("Where the id goes in a status lookup", help="empty: no lookup")] = None
    status_pointer: Annotated[Pointer, _f("Status word JSON pointer")] = None
    status_regex: Annotated[Regex, _f("Status word regex", help="group status, or the whole match")] = None
    states: Annotated[
        dict[str, typing.Literal["pending", "delivered", "undelivered", "expired", "rejected"]],
        _f("Status words", help="word -> pending|delivered|undelivered|expired|rejected"),
    ] = {}
    callback_id_at: Annotated[Place, _f("Where a pushed report has the message id", help="empty: no callbacks")] = None
    callback_status_at: Annotated[Place, _f("Where a pushed report has the status word")] = None

    def __post_init__(self) -> None:  # noqa: PLR0912 - one check per rule, in field order
        for name in (*(f"{c}_at" for c in _CREDENTIALS), *(f"{v}_at" for v in MESSAGE_VALUES)):
            self.place(name)
        for credential in _CREDENTIALS:
            if bool(getattr(self, credential)) != bool(getattr(self, f"{credential}_at")):
                given, missing = (
                    (credential, f"{credential}_at") if getattr(self, credential) else (f"{credential}_at", credential)
                )
                raise refused(missing, f"required with {given}")
        for name in ("to_at", "text_at"):
            if not getattr(self, name):
                raise refused(name, "required: where the provider wants it")
        if not (self.success_regex or self.success_id_pointer):
            raise refused(
                "success_regex", "give success_regex or success_id_pointer: how a reply taking the message looks"
            )
        if self.success_regex:
            _regex("success_regex", self.success_regex, frozenset({"id"}))
        for name in ("success_id_pointer", "success_flag_pointer", "status_pointer"):
            if (value := getattr(self, name)) is not None:
                try:
                    json_pointer(value)
                except ValueError as exc:
                    raise refused(name, str(exc)) from None
        if bool(self.success_flag_pointer) != bool(self.success_flag_values):
            raise refused("success_flag_values", "give both success_flag_pointer and success_flag_values, or neither")
        for name in ("permanent_errors", "transient_errors"):
            for pattern in getattr(self, name):
                _regex(name, pattern)
        if self.status_id_at:
            self.place("status_id_at", lookup=True)
            for credential in _CREDENTIALS:
                if getattr(self, credential):
                    self.place(f"{credential}_at", lookup=True)
            if not (self.status_pointer is not None or self.status_regex):
                raise refused("status_regex", "give status_regex or status_pointer: where the lookup's status word is")
            if self.status_regex:
                _regex("status_regex", self.status_regex, frozenset({"status"}))
        if bool(self.callback_id_at) != bool(self.callback_status_at):
            raise refused("callback_status_at", "give both callback_id_at and callback_status_at, or neither")
        for name in ("callback_id_at", "callback_status_at"):
            if getattr(self, name):
                self.place(name, callback=True)
        if (self.status_id_at or self.callback_id_at) and not self.states:
            raise refused("states", "required with a status lookup or callbacks: status word -> state")

    def place(self, field: str, *, lookup: bool = False, callback: bool = False) -> Location | None:
        """The `Location` of setting `field` in a send (or a status lookup, or a pushed report), or None when it
        is not set. Raises the refusal of a place the request cannot have (a body place in a GET...)."""
        text = getattr(self, field)
        if not text:
            return None
        method, encoding = (self.status_method, self.encoding) if lookup else (self.method, self.encoding)
        body = None if method == "GET" or encoding == "query" else encoding
        try:
            where = location(text, "query" if callback else body or "query")  # a callback's query: its form too
        except ValueError as exc:
            raise refused(field, str(exc)) from None
        if not callback and where.place in ("form", "json") and where.place != body:
            request = "a status lookup" if lookup else "a send"
            has = f"a {body} body" if body else "no body (GET, or encoding query)"
            raise refused(field, f"{where.place}: is not a place in {request}: it has {has}")
        return where


class SandboxSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sends nothing: simulates a provider's acceptance and delivery reports."""

    kind = "sandbox"
    title = "Sandbox (sends nothing)"
    callbacks = True
    latency_ms: Annotated[float, _f("Simulated latency (ms)"), msgspec.Meta(ge=0)] = 20.0
    failure_rate: Annotated[float, _f("Share of transient failures"), msgspec.Meta(ge=0, le=1)] = 0.0
    delivered_rate: Annotated[
        float, _f("Share delivered", help="the rest is reported undelivered"), msgspec.Meta(ge=0, le=1)
    ] = 1.0
    await_delivery_s: AwaitDelivery = 5
    max_parts: MaxParts = None


KIND_SETTINGS: dict[str, type[KindSettings]] = {
    cls.kind: cls
    for cls in (
        SmscSettings,
        SmsimpleSettings,
        BulksmsSettings,
        DevinoSettings,
        SmstrafficSettings,
        InfobipSettings,
        MtsSettings,
        EdnaSettings,
        SkymediaSettings,
        PlaymobileSettings,
        RapportoSettings,
        SbermobileSettings,
        StreamtelecomSettings,
        IntellinSettings,
        SeventechSettings,
        HttpSettings,
        SandboxSettings,
    )
}
KINDS = tuple(KIND_SETTINGS)


class FieldSpec(msgspec.Struct, frozen=True):
    name: str
    label: str
    type: str
    required: bool
    secret: bool
    default: Any = None
    help: str | None = None
    #: not one of the fields the seed's form shows for this kind (an endpoint override...): shown apart
    advanced: bool = False


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is typing.Literal:
        return "text"
    if origin is dict:
        return "mapping"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:
        return _type_name(args[0])
    return {str: "text", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


@typing.no_type_check
def fields(cls: type[KindSettings]) -> list[FieldSpec]:
    """The settings of a kind, in form order, with labels, types and which are required or secret."""
    hints = typing.get_type_hints(cls, include_extras=True)
    specs = []
    for f in msgspec.structs.fields(cls):
        metas = [m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, msgspec.Meta)]
        label = next((m.title for m in metas if m.title), f.name)
        help_ = next((m.description for m in metas if m.description), None)
        extra = {k: v for m in metas for k, v in (m.extra or {}).items()}
        required = f.required or bool(extra.get("required"))
        default = None if f.default is msgspec.NODEFAULT else f.default
        specs.append(
            FieldSpec(
                f.name,
                label,
                _type_name(f.type),
                required,
                bool(extra.get("secret")),
                default,
                help_,
                bool(extra.get("advanced")),
            )
        )
    return specs


def secret_fields(cls: type[KindSettings]) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls) if f.secret)
