"""Keys: writes that behave like Redis SET, reads, deletion and update_ttl."""

from __future__ import annotations

from datetime import timedelta

import pytest

from execstore import KeyDocument, KeyPolicy


async def test_set_key_returns_stored_document(service, dataset_id, clock):
    document = await service.set_key("settings", "theme", "dark")

    assert isinstance(document, KeyDocument)
    assert document.store_name == "settings"
    assert document.key == "theme"
    assert document.value == "dark"
    assert document.dataset_id == dataset_id
    assert document.created_at == clock.now
    assert document.updated_at == clock.now
    assert document.expires_at is None
    assert document.policy == KeyPolicy.PERSIST


async def test_get_key_returns_written_document(service):
    written = await service.set_key("settings", "theme", "dark", ttl=60)

    assert await service.get_key("settings", "theme") == written


async def test_get_key_of_missing_key_returns_none(service):
    await service.set_key("settings", "theme", "dark")

    assert await service.get_key("settings", "font") is None
    assert await service.get_key("other", "theme") is None


async def test_has_key_reports_only_existing_keys(service):
    await service.set_key("settings", "theme", "dark")

    assert await service.has_key("settings", "theme") is True
    assert await service.has_key("settings", "font") is False
    assert await service.has_key("other", "theme") is False


async def test_overwrite_replaces_value(service):
    await service.set_key("settings", "theme", {"mode": "dark", "contrast": 2})

    written = await service.set_key("settings", "theme", {"mode": "light"})

    assert written.value == {"mode": "light"}
    assert (await service.get_key("settings", "theme")).value == {"mode": "light"}


async def test_overwrite_keeps_created_at(service, clock):
    first = await service.set_key("settings", "theme", "dark")
    clock.advance(5)

    second = await service.set_key("settings", "theme", "light")

    assert second.created_at == first.created_at
    assert (await service.get_key("settings", "theme")).created_at == first.created_at


async def test_overwrite_moves_updated_at(service, clock):
    await service.set_key("settings", "theme", "dark")
    later = clock.advance(5)

    second = await service.set_key("settings", "theme", "light")

    assert second.updated_at == later
    assert (await service.get_key("settings", "theme")).updated_at == later


async def test_overwrite_without_ttl_clears_expiry(service):
    await service.set_key("settings", "theme", "dark", ttl=60)

    written = await service.set_key("settings", "theme", "light")
    stored = await service.get_key("settings", "theme")

    assert written.expires_at is None
    assert written.policy == KeyPolicy.PERSIST
    assert stored.expires_at is None
    assert stored.policy == KeyPolicy.PERSIST


async def test_overwrite_with_ttl_restarts_expiry(service, clock):
    await service.set_key("settings", "theme", "dark", ttl=60)
    clock.advance(30)

    written = await service.set_key("settings", "theme", "light", ttl=10)

    assert written.expires_at == clock.now + timedelta(seconds=10)
    assert (await service.get_key("settings", "theme")).expires_at == written.expires_at


async def test_overwrite_recomputes_evict_policy(service):
    await service.set_key("settings", "theme", "dark", policy="evict")

    written = await service.set_key("settings", "theme", "light")

    assert written.policy == KeyPolicy.PERSIST
    assert (await service.get_key("settings", "theme")).policy == KeyPolicy.PERSIST


@pytest.mark.parametrize(
    "ttl",
    [
        pytest.param(90, id="int"),
        pytest.param(90.0, id="float"),
        pytest.param(timedelta(seconds=90), id="timedelta"),
    ],
)
async def test_ttl_sets_expiry_from_now(service, clock, ttl):
    written = await service.set_key("settings", "theme", "dark", ttl=ttl)

    assert written.expires_at == clock.now + timedelta(seconds=90)


async def test_fractional_ttl_keeps_milliseconds(service, clock):
    written = await service.set_key("settings", "theme", "dark", ttl=90.25)

    assert written.expires_at == clock.now + timedelta(milliseconds=90250)


async def test_ttl_makes_persist_key_evictable(service):
    written = await service.set_key(
        "settings", "theme", "dark", ttl=60, policy="persist"
    )

    assert written.policy == KeyPolicy.EVICT
    assert (await service.get_key("settings", "theme")).policy == KeyPolicy.EVICT


@pytest.mark.parametrize(
    "policy",
    [pytest.param("evict", id="str"), pytest.param(KeyPolicy.EVICT, id="enum")],
)
async def test_evict_policy_without_ttl_never_expires(service, clock, policy):
    written = await service.set_key("settings", "theme", "dark", policy=policy)
    clock.advance(timedelta(days=3650).total_seconds())

    assert written.policy == KeyPolicy.EVICT
    assert written.expires_at is None
    assert await service.has_key("settings", "theme") is True


async def test_persist_policy_accepts_enum_member(service):
    written = await service.set_key(
        "settings", "theme", "dark", policy=KeyPolicy.PERSIST
    )

    assert written.policy == KeyPolicy.PERSIST


async def test_set_cache_key_writes_evictable_key(service):
    written = await service.set_cache_key("digests", "a.txt", "0f3c")

    assert written.policy == KeyPolicy.EVICT
    assert written.expires_at is None
    assert (await service.get_key("digests", "a.txt")) == written


async def test_set_cache_key_applies_ttl(service, clock):
    written = await service.set_cache_key("digests", "a.txt", "0f3c", ttl=30)

    assert written.policy == KeyPolicy.EVICT
    assert written.expires_at == clock.now + timedelta(seconds=30)


async def test_list_keys_returns_sorted_names(service):
    for key in ["beta", "alpha", "Zulu", "gamma"]:
        await service.set_key("settings", key, 1)

    assert await service.list_keys("settings") == ["Zulu", "alpha", "beta", "gamma"]
    assert await service.count_keys("settings") == 4


async def test_list_keys_is_per_store(service):
    await service.set_key("settings", "theme", 1)
    await service.set_key("digests", "a.txt", 2)

    assert await service.list_keys("settings") == ["theme"]
    assert await service.list_keys("digests") == ["a.txt"]


async def test_list_keys_excludes_store_document(service):
    await service.create_store("settings", metadata={"owner": "plugin"})

    assert await service.list_keys("settings") == []
    assert await service.count_keys("settings") == 0


async def test_list_keys_of_missing_store_is_empty(service):
    assert await service.list_keys("missing") == []
    assert await service.count_keys("missing") == 0


async def test_delete_key_removes_live_key(service):
    await service.set_key("settings", "theme", "dark")

    assert await service.delete_key("settings", "theme") is True
    assert await service.get_key("settings", "theme") is None
    assert await service.has_key("settings", "theme") is False


async def test_delete_key_of_missing_key_returns_false(service):
    await service.set_key("settings", "theme", "dark")

    assert await service.delete_key("settings", "font") is False
    assert await service.delete_key("other", "theme") is False
    assert await service.has_key("settings", "theme") is True


async def test_delete_key_twice_returns_false(service):
    await service.set_key("settings", "theme", "dark")
    await service.delete_key("settings", "theme")

    assert await service.delete_key("settings", "theme") is False


async def test_delete_key_keeps_other_stores(service):
    await service.set_key("settings", "theme", "dark")
    await service.set_key("defaults", "theme", "light")

    await service.delete_key("settings", "theme")

    assert (await service.get_key("defaults", "theme")).value == "light"


async def test_update_ttl_sets_expiry_from_now(service, clock):
    await service.set_key("settings", "theme", "dark")
    clock.advance(5)

    updated = await service.update_ttl("settings", "theme", 30)

    assert isinstance(updated, KeyDocument)
    assert updated.expires_at == clock.now + timedelta(seconds=30)
    assert updated.value == "dark"


async def test_update_ttl_makes_key_evictable(service):
    await service.set_key("settings", "theme", "dark")

    updated = await service.update_ttl("settings", "theme", 30)

    assert updated.policy == KeyPolicy.EVICT
    assert (await service.get_key("settings", "theme")).policy == KeyPolicy.EVICT


async def test_update_ttl_result_matches_read(service):
    await service.set_key("settings", "theme", "dark")

    updated = await service.update_ttl("settings", "theme", timedelta(minutes=2))

    assert await service.get_key("settings", "theme") == updated


async def test_update_ttl_replaces_earlier_expiry(service, clock):
    await service.set_key("settings", "theme", "dark", ttl=10)

    await service.update_ttl("settings", "theme", 100)
    clock.advance(50)

    assert await service.has_key("settings", "theme") is True


async def test_update_ttl_keeps_created_at(service, clock):
    written = await service.set_key("settings", "theme", "dark")
    clock.advance(5)

    updated = await service.update_ttl("settings", "theme", 30)

    assert updated.created_at == written.created_at


async def test_update_ttl_of_missing_key_writes_nothing(service, backend):
    assert await service.update_ttl("settings", "theme", 30) is None
    assert await backend.count_documents({}) == 0
    assert await service.has_store("settings") is False
