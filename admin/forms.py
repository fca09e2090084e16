"""The sender form: what the page shows for each gateway, and the form's values to and from a sender document.

The gateways and their fields come from `smsfleet.kinds` (`fields(cls)`), the same typed settings the CLI
and the API describe: adding a setting to a kind adds it to the form. Every gateway's fieldset is on the
page; the one of the chosen gateway is enabled, the others are `hidden disabled` (so their inputs are not
sent). A small script switches them when the gateway changes; without it, the form's "Show fields" button
posts the form back and the page comes again with the new gateway's fields.

A gateway's advanced settings (`FieldSpec.advanced`: extras the product's form does not show, such as
`base_url`, "Endpoint override") come after its other fields, in a collapsed "Advanced" section that opens
when one of them has an error. The sender's Name is required; its ID may be left empty on creation (it is
then made from the name) and is read-only afterwards.

Form fields are named after the document's paths (`name`, `id`, `accounts`, `settings.login`...), so a
validation error's key is the field it belongs next to. Lists are typed as text: commas or new lines separate
items. Secrets are never put back into the page: a secret input is always empty, and on an edit an empty secret
keeps the stored value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from smsfleet.kinds import KIND_SETTINGS, FieldSpec, fields
from smsfleet.senders import MASK, Sender, sender_doc

__all__ = ["GATEWAYS", "FieldView", "GatewayView", "SenderForm", "split_list"]

_LISTS = ("accounts", "verified_caller_ids", "verified_phones", "stop_words")
_LABELS = {
    "name": "Name",
    "id": "ID",
    "accounts": "Assigned accounts",
    "gateway": "Delivery service",
    "verified_caller_ids": "Only verified CallerIDs",
    "verified_phones": "Only verified Phones",
    "stop_words": "Keywords",
    "add_to_global_suppress": "Add to global suppress list",
    "shorten_links": "Shorten links in messages",
    "rate_limit": "Rate limit",
    "document": "Sender",
}


_ORDER = {"name": 0, "id": 1, "gateway": 2, "accounts": 3, "settings": 9, "verified_caller_ids": 50,
          "verified_phones": 51, "stop_words": 52, "add_to_global_suppress": 53, "shorten_links": 54,
          "rate_limit": 60}  # fmt: skip


@dataclass(frozen=True)
class FieldView:
    kind: str
    name: str
    label: str
    type: str
    required: bool
    secret: bool
    default: Any
    help: str | None
    #: shown in the gateway's collapsed "Advanced" section
    advanced: bool = False

    @property
    def input_id(self) -> str:
        return f"f-{self.kind}-{self.name}"

    @property
    def input_name(self) -> str:
        return f"settings.{self.name}"

    @property
    def input_type(self) -> str:
        if self.secret:
            return "password"
        return {"integer": "number", "number": "number", "boolean": "checkbox"}.get(self.type, "text")

    @property
    def step(self) -> str | None:
        return {"integer": "1", "number": "any"}.get(self.type)

    @property
    def is_url(self) -> bool:
        return "url" in self.name


@dataclass(frozen=True)
class GatewayView:
    kind: str
    title: str
    callbacks: bool
    fields: tuple[FieldView, ...]

    @property
    def basic_fields(self) -> tuple[FieldView, ...]:
        return tuple(f for f in self.fields if not f.advanced)

    @property
    def advanced_fields(self) -> tuple[FieldView, ...]:
        return tuple(f for f in self.fields if f.advanced)


def _field_view(kind: str, s: FieldSpec) -> FieldView:
    return FieldView(kind, s.name, s.label, s.type, s.required, s.secret, s.default, s.help, s.advanced)


GATEWAYS: tuple[GatewayView, ...] = tuple(
    GatewayView(
        kind,
        cls.title,
        cls.callbacks,
        tuple(_field_view(kind, s) for s in fields(cls)),
    )
    for kind, cls in KIND_SETTINGS.items()
)
_BY_KIND = {g.kind: g for g in GATEWAYS}


def split_list(text: str) -> list[str]:
    """`"acme, acme-promo\\nother"` -> `["acme", "acme-promo", "other"]`."""
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass
class SenderForm:
    """The form's state: what to show in each input, and the errors to show next to them."""

    gateway: str = ""
    #: text of the top-level inputs: name, id, accounts, verified_caller_ids, verified_phones, stop_words, rate_limit
    values: dict[str, str] = field(default_factory=lambda: {"stop_words": "STOP"})
    #: the chosen gateway's settings as typed (booleans as bool); secrets are kept here, never shown
    settings: dict[str, Any] = field(default_factory=dict)
    add_to_global_suppress: bool = False
    shorten_links: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    #: the id of the sender being edited, None on the create form
    editing: str | None = None
    #: secrets the edited sender has (their inputs say "leave blank to keep")
    stored_secrets: frozenset[str] = frozenset()

    # -- building --------------------------------------------------------------------------------------

    @classmethod
    def for_sender(cls, sender: Sender) -> SenderForm:
        doc = sender_doc(sender)  # masked
        stored = frozenset(k for k, v in doc["settings"].items() if v == MASK)
        return cls(
            gateway=sender.gateway,
            values={
                **{key: ", ".join(doc[key]) for key in _LISTS},
                "name": sender.name,
                "id": sender.id,
                "rate_limit": _text(sender.rate_limit),
            },
            settings={k: v for k, v in doc["settings"].items() if k not in stored},
            add_to_global_suppress=sender.add_to_global_suppress,
            shorten_links=sender.shorten_links,
            editing=sender.id,
            stored_secrets=stored,
        )

    @classmethod
    def from_post(
        cls, data: Mapping[str, Any], *, editing: Sender | None = None, previous: str | None = None
    ) -> SenderForm:
        """The form as posted. `previous`: on a gateway switch, the gateway whose fields were posted."""
        gateway = _str(data, "gateway")
        values = {key: _str(data, key) for key in (*_LISTS, "rate_limit")}
        values["name"] = _str(data, "name").strip()
        values["id"] = editing.id if editing is not None else _str(data, "id").strip()
        if "callbacks_section" not in data:  # the gateway pushes nothing: keep the defaults
            values["stop_words"] = ", ".join(editing.stop_words) if editing is not None else "STOP"
        view = _BY_KIND.get(gateway)
        settings: dict[str, Any] = {}
        if view is not None:
            posted_by = _BY_KIND.get(previous or gateway, view)
            posted = {f.name for f in posted_by.fields}
            for f in view.fields:
                if f.name not in posted or (f.secret and posted_by is not view):
                    continue
                if f.type == "boolean":
                    settings[f.name] = f.input_name in data
                elif f.input_name in data:
                    settings[f.name] = _str(data, f.input_name).strip()
        stored: frozenset[str] = frozenset()
        if editing is not None and editing.gateway == gateway:
            stored = frozenset(k for k, v in sender_doc(editing)["settings"].items() if v == MASK)
        return cls(
            gateway=gateway,
            values=values,
            settings=settings,
            add_to_global_suppress="add_to_global_suppress" in data,
            shorten_links="shorten_links" in data,
            editing=editing.id if editing is not None else None,
            stored_secrets=stored,
        )

    def input_errors(self) -> dict[str, str]:
        """Mistakes the form itself sees, reported with the missing fields (those stop the kernel's checks)."""
        rate = self.values.get("rate_limit", "").strip()
        try:
            float(rate or 0)
        except ValueError:
            return {"rate_limit": "enter a number of requests per second"}
        return {}

    def to_doc(self) -> dict[str, Any]:
        """The sender document the form stands for (to validate with `admin.validation.validate`)."""
        doc: dict[str, Any] = {
            "name": self.values.get("name", ""),
            "gateway": self.gateway,
            **{key: split_list(self.values.get(key, "")) for key in _LISTS},
            "settings": {k: v for k, v in self.settings.items() if v != ""},
            "add_to_global_suppress": self.add_to_global_suppress,
            "shorten_links": self.shorten_links,
        }
        if self.values.get("id"):  # else made from the name
            doc["id"] = self.values["id"]
        rate = self.values.get("rate_limit", "").strip()
        if rate:
            try:
                doc["rate_limit"] = float(rate)
            except ValueError:
                doc["rate_limit"] = rate  # validation says "enter a number"
        return doc

    # -- showing ---------------------------------------------------------------------------------------

    @property
    def gateways(self) -> tuple[GatewayView, ...]:
        return GATEWAYS

    @property
    def chosen(self) -> GatewayView | None:
        return _BY_KIND.get(self.gateway)

    @property
    def callbacks(self) -> bool:
        chosen = self.chosen
        return chosen is not None and chosen.callbacks

    def value(self, f: FieldView) -> Any:
        """What an input of the page shows: typed values for the chosen gateway, defaults for the others."""
        if f.secret:
            return ""
        if f.kind == self.gateway and f.name in self.settings:
            value = self.settings[f.name]
            return value if f.type == "boolean" else _text(value)
        return bool(f.default) if f.type == "boolean" else _text(f.default)

    def error(self, key: str) -> str | None:
        message = self.errors.get(key)
        return None if message is None else message[:1].upper() + message[1:] + ("" if message[-1:] == "." else ".")

    def setting_error(self, f: FieldView) -> str | None:
        return self.error(f"settings.{f.name}") if f.kind == self.gateway else None

    def advanced_open(self, g: GatewayView) -> bool:
        """The gateway's "Advanced" section starts open when one of its fields has an error."""
        return any(self.setting_error(f) for f in g.advanced_fields)

    def anchor(self, key: str) -> str:
        """The id of the element an error is about, for the links of the error summary."""
        if key.startswith("settings.") and self.gateway:
            return f"f-{self.gateway}-{key.removeprefix('settings.')}"
        if key == "settings" and self.gateway:
            return f"gw-{self.gateway}"
        if key == "document":
            return "sender-form"
        return f"f-{key}"

    def label(self, key: str) -> str:
        chosen = self.chosen
        if key.startswith("settings.") and chosen is not None:
            name = key.removeprefix("settings.")
            return next((f.label for f in chosen.fields if f.name == name), name)
        if key == "settings":
            return f"{chosen.title if chosen else 'Gateway'} settings"
        return _LABELS.get(key, key)

    @property
    def error_items(self) -> list[tuple[str, str, str]]:
        """(anchor, label, message) for the error summary at the top of the form, in the form's order."""
        return [(self.anchor(k), self.label(k), self.error(k) or "") for k in sorted(self.errors, key=self._order)]

    def _order(self, key: str) -> int:
        chosen = self.chosen
        if key.startswith("settings.") and chosen is not None:
            names = [f.name for f in chosen.fields]
            name = key.removeprefix("settings.")
            return 10 + (names.index(name) if name in names else len(names))
        return _ORDER.get(key, 100)


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    return value if isinstance(value, str) else ""
