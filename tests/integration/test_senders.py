"""The sender registry on the real Redis: CRUD, secrets at rest, and change notification."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from smsfleet.kinds import KINDS
from smsfleet.senders import MASK, Cipher, SenderCache, SenderError, SenderRegistry, parse_sender, sender_doc
from smsfleet.topology import Names
from tests.samples import SECRET, sample_sender


@pytest.fixture
def cipher() -> Cipher:
    return Cipher(Fernet.generate_key().decode())


async def test_every_kind_round_trips_with_secrets_encrypted_at_rest(
    redis: aioredis.Redis, names: Names, cipher: Cipher
) -> None:
    registry = SenderRegistry(redis, names, cipher)
    for kind in KINDS:
        await registry.create(parse_sender(sample_sender(kind)))
    raw = await redis.hgetall(names.senders_key)
    assert len(raw) == len(KINDS) == 16
    assert not any(SECRET.encode() in v for v in raw.values())
    for kind in KINDS:
        sender = await registry.get(f"{kind}-1")
        assert sender is not None
        assert sender.gateway == kind
        assert sender.settings == parse_sender(sample_sender(kind)).settings  # decrypted back
    assert [s.id for s in await registry.list()] == sorted(f"{k}-1" for k in KINDS)


async def test_without_a_key_secrets_are_stored_readable_and_a_key_is_then_needed_to_read_encrypted(
    redis: aioredis.Redis, names: Names, cipher: Cipher
) -> None:
    await SenderRegistry(redis, names, cipher).create(parse_sender(sample_sender("infobip")))
    with pytest.raises(ValueError, match="SMSFLEET_SECRET_KEY is not set"):
        await SenderRegistry(redis, names).get("infobip-1")


async def test_duplicate_ids_are_refused(redis: aioredis.Redis, names: Names) -> None:
    registry = SenderRegistry(redis, names)
    await registry.create(parse_sender(sample_sender("smsc")))
    with pytest.raises(SenderError, match="already exists"):
        await registry.create(parse_sender(sample_sender("smsc")))


async def test_update_keeps_blank_or_masked_secrets_and_merges_settings(redis: aioredis.Redis, names: Names) -> None:
    registry = SenderRegistry(redis, names)
    await registry.create(parse_sender(sample_sender("smsc")))
    before = await registry.get("smsc-1")
    assert before is not None
    after = await registry.update("smsc-1", {"settings": {"password": MASK, "await_delivery_s": 5}})
    assert after.settings.password == before.settings.password  # type: ignore[attr-defined]
    assert after.settings.await_delivery_s == 5  # type: ignore[attr-defined]
    assert after.webhook_token == before.webhook_token
    after = await registry.update("smsc-1", {"settings": {"password": ""}, "accounts": ["other"]})
    assert after.settings.password == before.settings.password  # type: ignore[attr-defined]
    assert after.accounts == ["other"]
    with pytest.raises(SenderError, match="cannot change"):
        await registry.update("smsc-1", {"id": "smsc-2"})


async def test_masked_output_never_holds_a_secret() -> None:
    for kind in KINDS:
        doc = sender_doc(parse_sender(sample_sender(kind)), public_url="https://hooks.test")
        assert SECRET not in repr(doc)


async def test_a_running_cache_sees_changes_without_restart(redis: aioredis.Redis, names: Names) -> None:
    registry = SenderRegistry(redis, names)
    cache = SenderCache(registry, poll_s=0.2)
    await cache.start()
    try:
        assert cache.get("smsc-1") is None
        await registry.create(parse_sender(sample_sender("smsc")))
        await _until(lambda: cache.get("smsc-1") is not None)
        await registry.update("smsc-1", {"accounts": ["x"]})
        await _until(lambda: (s := cache.get("smsc-1")) is not None and s.accounts == ["x"])
        await registry.delete("smsc-1")
        await _until(lambda: cache.get("smsc-1") is None)
    finally:
        await cache.stop()


async def _until(predicate: object, within: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "change not seen in time"
        await asyncio.sleep(0.02)
