"""The sender registry on the real Redis: CRUD, secrets at rest, and change notification."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from structlog.testing import capture_logs

from smsfleet.kinds import KINDS
from smsfleet.senders import (
    MASK,
    Cipher,
    SenderCache,
    SenderError,
    SenderRegistry,
    UnreadableSender,
    parse_sender,
    receiving_url,
    sender_doc,
)
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
    assert len(raw) == len(KINDS) == 17
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


async def test_the_webhook_token_is_encrypted_at_rest_and_plain_in_memory(
    redis: aioredis.Redis, names: Names, cipher: Cipher
) -> None:
    registry = SenderRegistry(redis, names, cipher)
    created = await registry.create(parse_sender(sample_sender("infobip")))
    raw = await redis.hget(names.senders_key, "infobip-1")
    assert raw is not None
    assert created.webhook_token.encode() not in raw
    stored = await registry.get("infobip-1")
    assert stored is not None
    assert stored.webhook_token == created.webhook_token  # the receiver compares the plaintext
    assert receiving_url(stored, "https://h.test") == receiving_url(created, "https://h.test")
    updated = await registry.update("infobip-1", {"accounts": ["other"]})  # kept through an update
    assert updated.webhook_token == created.webhook_token
    assert created.webhook_token.encode() not in (await redis.hget(names.senders_key, "infobip-1") or b"")
    # without a key it is stored like every other secret (readable), and read back the same
    plain = SenderRegistry(redis, names)
    other = await plain.create(parse_sender(sample_sender("smsc")))
    assert (await plain.get("smsc-1")) == other


async def test_a_rotated_token_replaces_the_old_one_in_every_running_cache(
    redis: aioredis.Redis, names: Names, cipher: Cipher
) -> None:
    registry = SenderRegistry(redis, names, cipher)
    old = await registry.create(parse_sender(sample_sender("rapporto")))
    cache = SenderCache(SenderRegistry(redis, names, cipher), poll_s=30)  # only the change message can do it
    await cache.start()
    try:
        await asyncio.sleep(0.1)  # subscribed
        new = await registry.rotate_token("rapporto-1")
        assert new.webhook_token != old.webhook_token
        assert len(new.webhook_token) == 43
        assert new.settings == old.settings
        await _until(lambda: (s := cache.get("rapporto-1")) is not None and s.webhook_token == new.webhook_token)
        assert (await registry.get("rapporto-1")) == new
    finally:
        await cache.stop()
    with pytest.raises(SenderError, match="no sender"):
        await registry.rotate_token("nobody")


async def test_a_record_that_does_not_decode_is_skipped_and_the_cache_keeps_following(
    redis: aioredis.Redis, names: Names
) -> None:
    """Issue 14, item 8: one bad record used to kill the follower task, silently: new senders then stayed
    unknown to every running worker and receiver."""
    registry = SenderRegistry(redis, names)
    await registry.create(parse_sender(sample_sender("smsc", "good")))
    await registry.create(parse_sender(sample_sender("smsc", "bad")))
    cache = SenderCache(registry, poll_s=0.2)
    garbage = [b'{"id": "bad", "gateway": "smsc", "GARBAGE-CONTENT": 1', b"GARBAGE-CONTENT", b'["GARBAGE-CONTENT"]']
    with capture_logs() as logs:
        await cache.start()
        try:
            await asyncio.sleep(0.1)  # subscribed
            for n, data in enumerate(garbage):  # a bad write as a writer makes it: record, version, message
                await _write_raw(redis, names, "bad", data)
                await _write_raw(redis, names, "bad", data)  # the same record again: logged once
                await registry.create(parse_sender(sample_sender("mts", f"new-{n}")))
                await _until(_has(cache, f"new-{n}"))  # still following
                kept = cache.get("bad")  # the last good copy
                assert kept is not None
                assert kept.gateway == "smsc"
            await registry.put(parse_sender(sample_sender("sandbox", "bad")))  # fixed
            await _until(lambda: (s := cache.get("bad")) is not None and s.gateway == "sandbox")
            await registry.create(parse_sender(sample_sender("mts", "after-fix")))
            await _until(lambda: cache.get("after-fix") is not None)
        finally:
            await cache.stop()
    unreadable = [e for e in logs if e["event"] == "sender.unreadable"]
    assert [e["sender"] for e in unreadable] == ["bad"] * 3, unreadable  # once per version of the record
    assert all(e["log_level"] == "error" for e in unreadable)
    assert "GARBAGE" not in repr(logs)
    assert not [e for e in logs if e["event"] == "sender_cache.error"]


async def test_a_process_that_starts_next_to_a_bad_record_skips_it(redis: aioredis.Redis, names: Names) -> None:
    registry = SenderRegistry(redis, names)
    await registry.create(parse_sender(sample_sender("smsc", "good")))
    await redis.hset(names.senders_key, "bad", b"not json")
    await redis.hset(names.senders_key, "nl\n", _stored_doc("nl\n"))  # a bad id, stored by an older version
    await redis.hset(names.senders_key, "other", _stored_doc("good"))  # stored under another id
    cache = SenderCache(registry, poll_s=30)
    with capture_logs() as logs:
        await cache.start()
        await cache.stop()
    assert [s.id for s in cache.all()] == ["good"]
    assert sorted(e["sender"] for e in logs if e["event"] == "sender.unreadable") == ["bad", "nl\n", "other"]
    with pytest.raises(UnreadableSender, match="'bad': its stored record cannot be read: not a sender document"):
        await registry.get("bad")
    with pytest.raises(UnreadableSender):
        await registry.list()  # strict: the CLI says which record, in one line
    assert await registry.exists("bad")
    assert await registry.delete("bad")


async def test_a_process_without_the_key_refuses_to_start_rather_than_skip_every_sender(
    redis: aioredis.Redis, names: Names, cipher: Cipher
) -> None:
    await SenderRegistry(redis, names, cipher).create(parse_sender(sample_sender("smsc")))
    with pytest.raises(UnreadableSender, match="SMSFLEET_SECRET_KEY is not set"):
        await SenderCache(SenderRegistry(redis, names)).start()
    with pytest.raises(UnreadableSender, match="does not decrypt"):
        await SenderCache(SenderRegistry(redis, names, Cipher(Fernet.generate_key().decode()))).start()


def _has(cache: SenderCache, sender_id: str) -> object:
    return lambda: cache.get(sender_id) is not None


def _stored_doc(sender_id: str) -> bytes:
    doc = sender_doc(parse_sender(sample_sender("smsc")), secrets_as="store")
    return json.dumps({**doc, "id": sender_id}).encode()


async def _write_raw(redis: aioredis.Redis, names: Names, sender_id: str, data: bytes) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(names.senders_key, sender_id, data)
        pipe.incr(names.senders_version_key)
        pipe.publish(names.senders_channel, sender_id)
        await pipe.execute()
