"""Unique sender names on the real Redis: one winner among concurrent writers, renames and deletes that free
a name, ids made from names, and records stored before names existed."""

from __future__ import annotations

import asyncio
import re
from typing import cast

import msgspec
import pytest
import redis.asyncio as aioredis

from smsfleet.senders import (
    Sender,
    SenderCache,
    SenderConflict,
    SenderRegistry,
    name_key,
    parse_sender,
    sender_doc,
)
from smsfleet.topology import Names
from tests.samples import sample_sender

N = 20


@pytest.fixture
def registry(redis: aioredis.Redis, names: Names) -> SenderRegistry:
    return SenderRegistry(redis, names)


def named(name: str, sender_id: str | None = None, kind: str = "smsc") -> Sender:
    doc = {k: v for k, v in sample_sender(kind, sender_id).items() if sender_id or k != "id"}
    return parse_sender({**doc, "name": name})


async def index(redis: aioredis.Redis, names: Names) -> dict[str, str]:
    raw = cast("dict[bytes, bytes]", await redis.hgetall(names.senders_names_key))  # no decode_responses
    return {k.decode(): v.decode() for k, v in raw.items()}


async def store_without_name(redis: aioredis.Redis, names: Names, sender_id: str) -> None:
    """A record as written before names existed."""
    doc = sender_doc(parse_sender(sample_sender("smsc", sender_id)), secrets_as="keep")
    del doc["name"]
    await redis.hset(names.senders_key, sender_id, msgspec.json.encode(doc))


async def test_of_concurrent_creates_of_one_name_exactly_one_wins(
    registry: SenderRegistry, redis: aioredis.Redis, names: Names
) -> None:
    spellings = ["Infobip main (RU)", "infobip MAIN (ru) ", " INFOBIP main (Ru)"]
    senders = [named(spellings[i % 3], f"s{i}") for i in range(N)]
    results = await asyncio.gather(*(registry.create(s) for s in senders), return_exceptions=True)
    won = [r for r in results if isinstance(r, Sender)]
    lost = [r for r in results if not isinstance(r, Sender)]
    assert len(won) == 1, results
    assert all(isinstance(r, SenderConflict) and r.field == "name" for r in lost), lost
    assert f"is taken by sender {won[0].id!r}" in str(lost[0])
    assert list(await redis.hkeys(names.senders_key)) == [won[0].id.encode()]
    assert await index(redis, names) == {"infobip main (ru)": won[0].id}
    assert await registry.version() == 1  # a refused write bumps nothing


async def test_of_concurrent_creates_without_ids_exactly_one_wins_and_gets_the_id_from_the_name(
    registry: SenderRegistry,
) -> None:
    results = await asyncio.gather(
        *(registry.create(named("Infobip main (RU)"), id_given=False) for _ in range(N)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, Sender)]
    assert [s.id for s in won] == ["infobip-main-ru"]
    assert all(isinstance(r, SenderConflict) and r.field == "name" for r in results if r not in won)


async def test_names_that_make_the_same_id_all_get_one_with_a_suffix(registry: SenderRegistry) -> None:
    names_ = [f"ACME{'!' * i}" for i in range(N)]  # twenty names, one id made from each: "acme"
    created = await asyncio.gather(*(registry.create(named(n), id_given=False) for n in names_))
    ids = sorted(s.id for s in created)
    assert len(set(ids)) == N
    assert ids[0] == "acme"
    assert all(re.fullmatch(r"acme-[0-9a-f]{6}", i) for i in ids[1:]), ids
    assert sorted(s.name for s in await registry.list()) == sorted(names_)


async def test_a_given_id_that_is_taken_is_refused_not_suffixed(registry: SenderRegistry) -> None:
    await registry.create(named("One", "acme"))
    with pytest.raises(SenderConflict) as err:
        await registry.create(named("Two", "acme"))
    assert (err.value.field, err.value.message) == ("id", "a sender with id 'acme' already exists")


async def test_of_concurrent_renames_to_one_name_exactly_one_wins(
    registry: SenderRegistry, redis: aioredis.Redis, names: Names
) -> None:
    for i in range(N):
        await registry.create(named(f"Sender {i}", f"s{i}"))
    results = await asyncio.gather(
        *(registry.update(f"s{i}", {"name": "Target" if i % 2 else "TARGET "}) for i in range(N)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Sender)]
    assert len(won) == 1, results
    assert all(isinstance(r, SenderConflict) and r.field == "name" for r in results if r not in won)
    expected = {name_key(f"Sender {i}"): f"s{i}" for i in range(N) if f"s{i}" != won[0].id}
    assert await index(redis, names) == {**expected, "target": won[0].id}  # the winner's old name is free


async def test_rename_and_delete_free_the_name(registry: SenderRegistry, redis: aioredis.Redis, names: Names) -> None:
    await registry.create(named("ACME via SMSC", "acme"))
    renamed = await registry.update("acme", {"name": "Рассылка АКМЕ"})
    assert (renamed.id, renamed.name) == ("acme", "Рассылка АКМЕ")
    assert await index(redis, names) == {"рассылка акме": "acme"}
    other = await registry.create(named("acme via smsc", "other"))  # the old name is free again
    with pytest.raises(SenderConflict, match="taken by sender 'acme'"):
        await registry.update("other", {"name": "РАССЫЛКА акме"})
    await registry.update("acme", {"name": " рассылка АКМЕ "})  # its own name, in other letters: fine
    assert (await registry.get("acme")).name == "рассылка АКМЕ"  # type: ignore[union-attr]
    assert await registry.delete("acme")
    assert await index(redis, names) == {"acme via smsc": other.id}
    assert (await registry.create(named("Рассылка АКМЕ", "again"))).id == "again"
    assert await registry.name_owner(" РАССЫЛКА акме") == "again"
    assert await registry.name_owner("nobody") is None


async def test_records_stored_before_names_read_as_name_equals_id_and_keep_their_name(
    registry: SenderRegistry, redis: aioredis.Redis, names: Names
) -> None:
    await store_without_name(redis, names, "acme-smsc")
    await store_without_name(redis, names, "Twin")
    await store_without_name(redis, names, "twin")  # ids differ in case: their names (the ids) are one
    old = await registry.get("acme-smsc")
    assert old is not None
    assert old.name == "acme-smsc"
    assert sender_doc(old)["name"] == "acme-smsc"
    assert await registry.name_owner("ACME-SMSC") == "acme-smsc"
    with pytest.raises(SenderConflict, match="taken by sender 'acme-smsc'"):
        await registry.create(named("ACME-smsc", "new"))
    for sender_id in ("Twin", "twin", "acme-smsc"):  # an update that leaves the name alone always saves
        await registry.update(sender_id, {"accounts": ["x"]})
    assert await index(redis, names) == {"acme-smsc": "acme-smsc", "twin": "Twin"}
    await registry.update("twin", {"name": "Twin two"})
    assert await index(redis, names) == {"acme-smsc": "acme-smsc", "twin": "Twin", "twin two": "twin"}


async def test_a_name_left_in_the_index_by_a_record_removed_by_hand_is_free(
    registry: SenderRegistry, redis: aioredis.Redis, names: Names
) -> None:
    await registry.create(named("ACME", "acme"))
    await redis.hdel(names.senders_key, "acme")
    assert await registry.name_owner("acme") is None
    created = await registry.create(named("Acme", "acme2"))
    assert await index(redis, names) == {"acme": created.id}


async def renamed(cache: SenderCache, sender_id: str, name: str) -> Sender:
    """The cache's copy of the sender once it carries `name` (within 3 s)."""
    for _ in range(150):
        if (sender := cache.get(sender_id)) is not None and sender.name == name:
            return sender
        await asyncio.sleep(0.02)
    pytest.fail(f"the rename to {name!r} was not seen within 3 s")


async def test_running_processes_see_a_rename(registry: SenderRegistry) -> None:
    await registry.create(named("Before", "acme"))
    cache = SenderCache(registry, poll_s=0.2)
    await cache.start()
    try:
        await registry.update("acme", {"name": "After"})
        await renamed(cache, "acme", "After")
    finally:
        await cache.stop()


async def test_a_reload_keeps_the_copy_of_a_sender_that_did_not_change(registry: SenderRegistry) -> None:
    """Workers keep what they built on a sender (its adapter, with a provider session) while it is the same
    object: editing one sender must not make every other one log in again."""
    await registry.create(named("One", "one"))
    await registry.create(named("Two", "two"))
    cache = SenderCache(registry, poll_s=0.2)
    await cache.start()
    try:
        one, two = cache.get("one"), cache.get("two")
        await registry.update("two", {"name": "Two, renamed"})
        seen = await renamed(cache, "two", "Two, renamed")
        await cache.reload()  # everything again, as after a version change
        assert cache.get("one") is one
        assert cache.get("two") is seen
        assert seen is not two
    finally:
        await cache.stop()
