"""Gateway kinds and the typed settings of each (DESIGN §6).

One frozen Struct per kind holds the settings the product's sender form shows for that gateway (the names
are the seed's), plus `base_url` where the provider has a fixed public endpoint that a test or a private
installation may need to override. Kinds whose seed fields already include the sending `url` use that
field as the endpoint and have no separate `base_url`.

Each field carries its form label and whether it is a secret; `fields()` turns that into the table the
CLI (`smsfleet gateways`) and the admin API show, so there is one source of truth.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar

import msgspec

__all__ = ["KINDS", "KIND_SETTINGS", "PATTERN_MESSAGES", "FieldSpec", "KindSettings", "fields", "secret_fields"]


def _f(label: str, *, secret: bool = False, help: str = "") -> msgspec.Meta:
    return msgspec.Meta(title=label, description=help or None, extra={"secret": secret})


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
    _f("Endpoint override", help="replaces the provider's public endpoint"),
]
AwaitDelivery = Annotated[
    int,
    _f("Await delivery (seconds)", help="wait before the first delivery status check; at least 1 s"),
    msgspec.Meta(ge=1),
]
MaxParts = Annotated[
    Annotated[int, msgspec.Meta(ge=1)] | None,
    _f("Max SMS per message", help="longer texts are rejected before sending; empty: the provider's limit"),
]


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
    max_parts: MaxParts = None
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
    api_key: Annotated[str | None, _f("API key", secret=True)] = None
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
        _f("SMS status URL", help="empty: the sending URL with its final /send replaced by /status"),
    ] = None


class SkymediaSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "skymedia"
    title = "Sky Media"
    login: Login
    password: Password
    base_url: BaseUrl = None


class PlaymobileSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "playmobile"
    title = "Play Mobile"
    callbacks = True
    user_id: Annotated[str, _f("User ID")]
    password: Password
    base_url: BaseUrl = None


class RapportoSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "rapporto"
    title = "Rapporto"
    callbacks = True
    pushes_on_fixed_path = True
    service_number_field = "service_id"
    service_id: Annotated[str, _f("Service ID")]
    password: Password
    url: Url


class SbermobileSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "sbermobile"
    title = "SberMobile"
    login: Login
    password: Password
    client_id: Annotated[str, _f("Client ID")]
    base_url: BaseUrl = None


class StreamtelecomSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "streamtelecom"
    title = "Stream Telecom"
    login: Login
    password: Password
    base_url: BaseUrl = None


class IntellinSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "intellin"
    title = "Intellin"
    login: Login
    password: Password
    base_url: BaseUrl = None


class SeventechSettings(KindSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind = "seventech"
    title = "Seven Tech"
    callbacks = True
    url: Url
    login: Login
    password: Password
    shorten_links: Annotated[bool, _f("Shorten links in messages")] = False


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


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        return _type_name(typing.get_args(tp)[0])
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
        secret = any((m.extra or {}).get("secret") for m in metas)
        default = None if f.default is msgspec.NODEFAULT else f.default
        specs.append(FieldSpec(f.name, label, _type_name(f.type), f.required, secret, default, help_))
    return specs


def secret_fields(cls: type[KindSettings]) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls) if f.secret)
