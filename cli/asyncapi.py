"""`smsfleet asyncapi`: the AsyncAPI 3.0 document of what smsfleet publishes and consumes.

Generated, never written by hand: the payload schemas come from the msgspec contracts
(`msgspec.json.schema_components`), the exchanges and routing keys from `smsfleet.topology.Names` (for the
default namespace). The committed copy, docs/asyncapi.yaml, is compared with a fresh one by
tests/unit/test_asyncapi.py. YAML is written here (block style, strings quoted as JSON where plain text
would be ambiguous), so the command needs no YAML library.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec

from smsfleet.contracts import (
    ClickEvent,
    InboundEvent,
    InboundMessage,
    ReportMessage,
    SendJob,
    State,
    StatusEvent,
    SuppressionEvent,
)
from smsfleet.kinds import KINDS
from smsfleet.settings import Settings
from smsfleet.topology import Names
from workers.rechecks import Recheck

__all__ = ["add_asyncapi", "document", "to_yaml"]

PARAMETERS: dict[str, dict[str, Any]] = {
    "gateway": {"description": "a gateway kind", "enum": list(KINDS)},
    "senderId": {"description": "a sender id from the registry"},
    "state": {"description": "a job state", "enum": [s.value for s in State]},
}


@dataclass(frozen=True)
class Channel:
    """One routing-key pattern on one exchange, carrying one message type."""

    id: str
    exchange: str
    address: str  # the routing key; `{name}` is one of PARAMETERS
    message: type[msgspec.Struct]
    description: str
    operations: tuple[tuple[str, str, str], ...]  # (operation id, send|receive, who does it)


def channels(names: Names) -> tuple[Channel, ...]:
    send, events, internal = names.send_exchange, names.events_exchange, names.internal_exchange
    return (
        Channel("sendJob", send, "{gateway}.{senderId}", SendJob,
                "Send jobs, from campaign engines (any AMQP client), the `producers` library or `smsfleet publish`; "
                f"each gateway's jobs wait in the queue `{names.send_queue('<gateway>')}`. The AMQP `message_id` is "
                "the job id. A job that violates a rule gets an `invalid` or `rejected` event and is parked in "
                f"`{names.dead_queue}`, with its reason in the header `x-smsfleet-reason`.",
                (("publishSendJob", "send", "an engine, `producers.Publisher` or `smsfleet publish` publishes a job"),
                 ("receiveSendJob", "receive", "the send worker of the gateway takes it"))),
        Channel("statusEvent", events, "status.{state}", StatusEvent,
                "A job entered a state; final states are never overwritten. Engines bind their own queues. The "
                "AMQP `message_id` is `<job id>.<state>`: an event published again (at least once) carries the "
                "same, so a consumer may deduplicate on it.",
                (("sendStatusEvent", "send", "the send and status workers report a job's state"),)),
        Channel("inboundEvent", events, "inbound.{senderId}", InboundEvent,
                "An SMS a subscriber sent to one of the senders.",
                (("sendInboundEvent", "send", "the suppression worker reports an inbound SMS"),)),
        Channel("suppressionEvent", events, "suppression.added", SuppressionEvent,
                "A number was added to suppression lists (a stop word).",
                (("sendSuppressionEvent", "send", "the suppression worker reports numbers it suppressed"),)),
        Channel("clickEvent", events, "click.{senderId}", ClickEvent,
                "A reader followed a shortened link of a job.",
                (("sendClickEvent", "send", "the receiver reports a followed link"),)),
        Channel("report", internal, "report.{gateway}", ReportMessage,
                f"Internal: a delivery report as the receiver got it, for the status worker (queue "
                f"`{names.status_queue}`).",
                (("sendReport", "send", "the receiver publishes a provider's delivery report"),
                 ("receiveReport", "receive", "the status worker matches it to a job"))),
        Channel("recheck", internal, "recheck.{gateway}", Recheck,
                f"Internal: scheduled status lookups, delayed through the delay tiers (queue `{names.status_queue}`).",
                (("sendRecheck", "send", "the send and status workers schedule a status lookup"),
                 ("receiveRecheck", "receive", "the status worker asks the provider"))),
        Channel("inboundMessage", internal, "inbound.{gateway}", InboundMessage,
                f"Internal: an inbound SMS as the receiver got it, for the suppression worker (queue "
                f"`{names.inbound_queue}`).",
                (("sendInboundMessage", "send", "the receiver publishes an inbound SMS"),
                 ("receiveInboundMessage", "receive", "the suppression worker checks it for stop words"))),
    )  # fmt: skip


def document(names: Names | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document, as plain data."""
    names = names or Names()
    chans = channels(names)
    types = [c.message for c in chans]
    _, schemas = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    _mark_timestamps(schemas, types)
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "smsfleet",
            "version": _version(),
            "description": (
                "Send jobs in, events out, and the internal messages between the receiver and the workers: JSON "
                "over AMQP 0-9-1 (RabbitMQ), persistent, content type application/json. Every exchange and queue "
                f"name starts with the namespace (SMSFLEET_NAMESPACE, here the default {names.ns!r}). Unknown "
                "fields are ignored, and new fields always get defaults. Generated by `smsfleet asyncapi`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ 3.10 or newer; SMSFLEET_AMQP_URL",
            }
        },
        "channels": {},
        "operations": {},
        "components": {"messages": {}, "schemas": schemas},
    }
    for c in chans:
        name = c.message.__name__
        doc["channels"][c.id] = {
            "address": c.address,
            "description": c.description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            **({"parameters": used} if (used := _parameters(c.address)) else {}),
            "bindings": {"amqp": _amqp_binding(c.exchange)},
        }
        for op_id, action, summary in c.operations:
            doc["operations"][op_id] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{c.id}"},
                "summary": summary,
                "messages": [{"$ref": f"#/channels/{c.id}/messages/{name}"}],
            }
        doc["components"]["messages"][name] = {
            "name": name,
            "title": name,
            "summary": (c.message.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
    return doc


def _mark_timestamps(schemas: dict[str, Any], types: list[type[msgspec.Struct]]) -> None:
    """`format: date-time` on every datetime field (RFC 3339), which msgspec's schemas leave out."""
    for struct in types:
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        for f in info.fields:
            options = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
            if any(isinstance(t, msgspec.inspect.DateTimeType) for t in options):
                prop = schemas[struct.__name__]["properties"][f.encode_name]
                for branch in prop.get("anyOf", [prop]):
                    if branch.get("type") == "string":
                        branch["format"] = "date-time"


def _parameters(address: str) -> dict[str, Any]:
    return {p: PARAMETERS[p] for p in re.findall(r"\{(\w+)\}", address)}


def _amqp_binding(exchange: str) -> dict[str, Any]:
    return {
        "is": "routingKey",
        "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
        "bindingVersion": "0.3.0",
    }


def _version() -> str:
    try:
        return version("smsfleet")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "0.0.0"


# -- YAML ---------------------------------------------------------------------------------------------

#: text that YAML reads back as the same string without quotes (no indicator, number, bool or null)
_PLAIN = re.compile(r"[A-Za-z_$/][ !\"$-9;-~]*")  # printable ASCII but `:` and `#`
_NOT_PLAIN = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and value == value.strip() and value.lower() not in _NOT_PLAIN
        return value if plain else json.dumps(value)
    return json.dumps(value)  # numbers, true/false, null: the same in YAML


def _lines(value: dict[str, Any] | list[Any], indent: str) -> list[str]:
    """A mapping or a sequence as block YAML lines, each starting with `indent`."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{indent}{_scalar(key)}:"
            out += [head, *_lines(item, indent + "  ")] if _nested(item) else [f"{head} {_inline(item)}"]
        return out
    for item in value:
        if _nested(item):  # `- first line` with the rest aligned under it
            first, *rest = _lines(item, indent + "  ")
            out += [f"{indent}- {first.lstrip()}", *rest]
        else:
            out.append(f"{indent}- {_inline(item)}")
    return out


def _nested(value: Any) -> bool:
    return isinstance(value, dict | list) and bool(value)


def _inline(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else _scalar(value)  # {} and [] when empty


def to_yaml(doc: dict[str, Any]) -> str:
    """Block-style YAML (1.2, and 1.1 readers agree) of JSON-like data."""
    return "\n".join(_lines(doc, "")) + "\n"


# -- the command ----------------------------------------------------------------------------------------


async def cmd_asyncapi(args: argparse.Namespace, settings: Settings) -> int:
    del settings  # the document is written for the default namespace
    doc = document()
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else to_yaml(doc))
    return 0


def add_asyncapi(sub: Any) -> None:
    p = sub.add_parser("asyncapi", help="the AsyncAPI 3.0 document of the messages (YAML)")
    p.add_argument("--json", action="store_true", help="JSON instead of YAML")
    p.set_defaults(func=cmd_asyncapi)
