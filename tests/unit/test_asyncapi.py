"""docs/asyncapi.yaml is what `smsfleet asyncapi` prints today, is well-formed AsyncAPI 3.0, and covers the
contracts: so the document cannot drift from smsfleet/contracts.py and smsfleet/topology.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli import main
from cli.asyncapi import document, to_yaml
from smsfleet import contracts
from smsfleet.contracts import State
from smsfleet.kinds import KINDS
from smsfleet.topology import Names

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
REGENERATE = "run: .venv/bin/python -m cli asyncapi > docs/asyncapi.yaml"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict), ref
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_the_committed_document_is_the_generated_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == to_yaml(document()), REGENERATE
    assert main(["asyncapi"]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text(encoding="utf-8")
    assert main(["asyncapi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))


def test_the_yaml_reads_back_as_the_document(doc: dict[str, Any]) -> None:
    assert doc == json.loads(json.dumps(document()))


@pytest.mark.parametrize(
    "value",
    ["yes", "No", "null", "true", "~", "", " x", "x ", "a: b", "a #b", "#x", "-", "- x", "3.0.0", "1e3", "0x10",
     "{a}.{b}", "[x]", "*x", "&x", "!x", "|", ">", "'q'", '"q"', "x\ny", "tab\there", "Привет", "$ref", "/", "%x",
     "@x", "`x`", "x,y", "2026-01-01", "=", "<<", ".inf"],
)  # fmt: skip
def test_every_string_reads_back_unchanged(value: str) -> None:
    data = {value: [value, {value: value}], "k": {"n": [1, 2.5, True, None, [], {}], "s": [[value]]}}
    assert yaml.safe_load(to_yaml(data)) == data


def test_structure(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"]
    assert doc["info"]["version"]
    assert doc["channels"]
    assert doc["operations"]
    assert doc["components"]["messages"]
    for ref in refs(doc):
        resolve(doc, ref)
    for name, message in doc["components"]["messages"].items():
        assert message["contentType"] == "application/json", name
        payload = resolve(doc, message["payload"]["$ref"])
        assert payload["type"] == "object", name
        assert payload["properties"], name
    for cid, channel in doc["channels"].items():
        assert channel["messages"], cid
        assert set(re.findall(r"\{(\w+)\}", channel["address"])) == set(channel.get("parameters", {})), cid
        assert channel["bindings"]["amqp"]["is"] == "routingKey"
    for oid, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), oid
        channel = resolve(doc, operation["channel"]["$ref"])
        assert operation["messages"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/"), oid
            assert resolve(doc, message["$ref"]) in channel["messages"].values()


def test_it_covers_the_contracts_and_the_topology(doc: dict[str, Any]) -> None:
    messages = set(doc["components"]["messages"])
    structs = {name for name in contracts.__all__ if isinstance(getattr(contracts, name), type)}
    structs = {n for n in structs if hasattr(getattr(contracts, n), "__struct_fields__")} - {"ErrorInfo"}
    assert structs <= messages, f"contracts without a message in the document: {structs - messages}"
    assert "Recheck" in messages

    names = Names()
    exchanges = {c["bindings"]["amqp"]["exchange"]["name"] for c in doc["channels"].values()}
    assert exchanges == {names.send_exchange, names.events_exchange, names.internal_exchange}
    channels = {c["address"]: c for c in doc["channels"].values()}
    assert channels["{gateway}.{senderId}"]["parameters"]["gateway"]["enum"] == list(KINDS)
    assert channels["status.{state}"]["parameters"]["state"]["enum"] == [s.value for s in State]
    send_job = doc["components"]["schemas"]["SendJob"]
    assert set(send_job["required"]) == {"id", "sender", "account", "to", "text"}
    assert send_job["properties"]["valid_until"]["anyOf"][0] == {"type": "string", "format": "date-time"}
    assert doc["components"]["schemas"]["InboundMessage"]["properties"]["from"]
