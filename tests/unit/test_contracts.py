"""The SendJob contract: what decodes, what is refused, and why."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from smsfleet.contracts import FINAL_STATES, InvalidJob, SendJob, State, StatusEvent, decode_job, encode

GOOD = {"id": "j1", "sender": "acme-smsc", "account": "acme", "to": "+7 916 123-45-67", "text": "Hi"}


def _json(**changes: object) -> bytes:
    return msgspec.json.encode({**GOOD, **changes})


def test_a_good_job_decodes_with_the_phone_in_e164() -> None:
    job = decode_job(_json(meta={"campaign": "c1"}, valid_until="2030-01-01T00:00:00Z"))
    assert job.to == "+79161234567"
    assert job.meta == {"campaign": "c1"}
    assert job.valid_until == datetime(2030, 1, 1, tzinfo=UTC)


def test_unknown_fields_are_ignored() -> None:
    assert decode_job(_json(priority=5, future={"x": 1})).id == "j1"


def test_a_national_number_needs_a_default_region() -> None:
    with pytest.raises(InvalidJob, match="international format") as err:
        decode_job(_json(to="89161234567"))
    assert err.value.code == "bad_phone"
    assert decode_job(_json(to="89161234567"), default_region="RU").to == "+79161234567"


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        (b"not json", "malformed", "not a JSON job"),
        (b"[1, 2]", "schema", "Expected `object`"),
        (_json(id=""), "schema", "$.id"),
        (_json(id="x" * 129), "schema", "length <= 128"),
        (_json(text=""), "schema", "$.text"),
        (_json(text="   "), "empty_text", "text is empty"),
        (_json(to="hello"), "bad_phone", "not parseable"),
        (_json(to="+7123"), "bad_phone", "not a valid number"),
        (_json(valid_until="tomorrow"), "schema", "$.valid_until"),
        (_json(valid_until="2030-01-01T00:00:00"), "bad_valid_until", "time zone"),
        (_json(meta={"n": 1}), "schema", "$.meta"),
        (msgspec.json.encode({k: v for k, v in GOOD.items() if k != "account"}), "schema", "account"),
    ],
)
def test_each_bad_job_gets_a_precise_reason(body: bytes, code: str, needle: str) -> None:
    with pytest.raises(InvalidJob) as err:
        decode_job(body)
    assert err.value.code == code
    assert needle in err.value.message


def test_events_round_trip_and_route_by_state() -> None:
    event = StatusEvent(
        job_id="j1",
        sender="s",
        account="a",
        to="+79161234567",
        state=State.DELIVERED,
        at=datetime(2030, 1, 1, tzinfo=UTC),
        parts=2,
        meta={"c": "1"},
    )
    assert event.routing_key == "status.delivered"
    assert msgspec.json.decode(encode(event), type=StatusEvent) == event
    assert b'"state":"delivered"' in encode(event)


def test_only_accepted_is_not_final() -> None:
    assert set(State) - FINAL_STATES == {State.ACCEPTED}


def test_send_job_is_frozen() -> None:
    job = msgspec.convert(GOOD, SendJob)
    with pytest.raises(AttributeError):
        job.text = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("job_id", "valid"),
    [
        ("x" * 128, True),
        ("д" * 64, True),  # 128 bytes
        ("😀" * 32, True),  # 128 bytes
        ("д" * 65, False),  # 130 bytes, 65 characters
        ("😀" * 33, False),
        ("😀" * 128, False),  # 128 characters, 512 bytes: the AMQP message id (a shortstr) takes 255
    ],
)
def test_a_job_id_is_limited_to_128_bytes_in_utf8(job_id: str, valid: bool) -> None:
    if valid:
        assert decode_job(_json(id=job_id)).id == job_id
        return
    with pytest.raises(InvalidJob) as err:
        decode_job(_json(id=job_id))
    assert err.value.code == "schema"
    assert err.value.message == f"id is {len(job_id.encode())} bytes in UTF-8; at most 128 - at `$.id`"
