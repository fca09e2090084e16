"""Each pre-send check alone, then the order in which they run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from smsfleet.contracts import SendJob, State
from smsfleet.kinds import SmscSettings
from smsfleet.senders import Sender, parse_sender
from workers.checks import (
    account_assigned,
    not_expired,
    run_checks,
    segments_within,
    verified_caller_id,
    verified_phone,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
JOB = SendJob(id="j", sender="s", account="acme", to="+79161234567", text="hello", originator="ACME")


def sender(**changes: object) -> Sender:
    doc = {"id": "s", "gateway": "bulksms", "accounts": ["acme"], "settings": {"login": "l", "password": "p"}}
    return parse_sender({**doc, **changes})


def job(**changes: object) -> SendJob:
    return msgspec.structs.replace(JOB, **changes)


async def test_account_must_be_assigned() -> None:
    assert await account_assigned(JOB, sender()) is None
    verdict = await account_assigned(job(account="other"), sender())
    assert verdict is not None
    assert (verdict.state, verdict.code) == (State.REJECTED, "account_not_assigned")


async def test_expiry_uses_the_clock() -> None:
    check = not_expired(lambda: NOW)
    assert await check(JOB, sender()) is None
    assert await check(job(valid_until=NOW + timedelta(seconds=1)), sender()) is None
    verdict = await check(job(valid_until=NOW), sender())
    assert verdict is not None
    assert verdict.state is State.EXPIRED


async def test_verified_phones_only_when_listed() -> None:
    assert await verified_phone(JOB, sender()) is None
    assert await verified_phone(JOB, sender(verified_phones=["+7 916 123 45 67"])) is None
    verdict = await verified_phone(JOB, sender(verified_phones=["+79160000000"]))
    assert verdict is not None
    assert verdict.code == "phone_not_verified"


async def test_verified_caller_ids_only_when_listed_and_given() -> None:
    assert await verified_caller_id(JOB, sender()) is None
    assert await verified_caller_id(job(originator=None), sender(verified_caller_ids=["OTHER"])) is None
    verdict = await verified_caller_id(JOB, sender(verified_caller_ids=["OTHER"]))
    assert verdict is not None
    assert verdict.code == "caller_id_not_verified"


@pytest.mark.parametrize(
    ("text", "max_parts", "refused"),
    [("a" * 160, 1, False), ("a" * 161, 1, True), ("я" * 134, 2, False), ("я" * 135, 2, True)],
)
async def test_segments_against_the_senders_max_parts(text: str, max_parts: int, refused: bool) -> None:
    check = segments_within(provider_max=10)
    verdict = await check(job(text=text), sender(settings={"login": "l", "password": "p", "max_parts": max_parts}))
    assert (verdict is not None) is refused
    if verdict is not None:
        assert verdict.code == "too_many_parts"


async def test_segments_fall_back_to_the_provider_limit() -> None:
    smsc = msgspec.structs.replace(sender(), gateway="smsc", settings=SmscSettings(login="l", password="p"))
    assert await segments_within(provider_max=2)(job(text="a" * 306), smsc) is None
    assert await segments_within(provider_max=2)(job(text="a" * 307), smsc) is not None


async def test_the_first_verdict_wins() -> None:
    checks = [account_assigned, verified_phone]
    verdict = await run_checks(checks, job(account="other"), sender(verified_phones=["+79160000000"]))
    assert verdict is not None
    assert verdict.code == "account_not_assigned"
    assert await run_checks(checks, JOB, sender()) is None
