"""Stores: explicit creation, implicit existence through keys, listing, deletion."""

from __future__ import annotations

import pytest

from execstore import KeyPolicy, StoreDocument, StoreExistsError


async def test_create_store_returns_store_document(service, dataset_id, clock):
    created = await service.create_store("settings", metadata={"owner": "plugin"})

    assert isinstance(created, StoreDocument)
    assert created.store_name == "settings"
    assert created.dataset_id == dataset_id
    assert created.metadata == {"owner": "plugin"}
    assert created.policy == KeyPolicy.PERSIST
    assert created.created_at == clock.now


async def test_create_store_defaults_to_empty_metadata(service):
    created = await service.create_store("settings")

    assert created.metadata == {}
    assert (await service.get_store("settings")).metadata == {}


async def test_create_store_keeps_evict_policy(service):
    created = await service.create_store("digests", policy="evict")

    assert created.policy == KeyPolicy.EVICT
    assert (await service.get_store("digests")).policy == KeyPolicy.EVICT


async def test_get_store_returns_created_document(service):
    created = await service.create_store("settings", metadata={"owner": "plugin"})

    assert await service.get_store("settings") == created


async def test_get_store_of_missing_store_returns_none(service):
    await service.create_store("settings")

    assert await service.get_store("other") is None


async def test_create_store_twice_raises_store_exists(service):
    await service.create_store("settings")

    with pytest.raises(StoreExistsError):
        await service.create_store("settings")


async def test_exist_ok_returns_existing_store_unchanged(service, clock):
    first = await service.create_store("settings", metadata={"version": 1})
    clock.advance(5)

    again = await service.create_store(
        "settings", metadata={"version": 2}, policy="evict", exist_ok=True
    )

    assert again == first
    assert await service.get_store("settings") == first


@pytest.mark.parametrize("exist_ok", [False, True], ids=["default", "exist-ok"])
async def test_create_store_upgrades_implicit_store(service, exist_ok):
    await service.set_key("settings", "theme", "dark")

    created = await service.create_store(
        "settings", metadata={"owner": "plugin"}, exist_ok=exist_ok
    )

    assert created.metadata == {"owner": "plugin"}
    assert (await service.get_store("settings")).metadata == {"owner": "plugin"}
    assert await service.list_keys("settings") == ["theme"]


async def test_implicit_store_has_empty_metadata(service, dataset_id):
    await service.set_key("settings", "theme", "dark")

    store = await service.get_store("settings")

    assert isinstance(store, StoreDocument)
    assert store.store_name == "settings"
    assert store.dataset_id == dataset_id
    assert store.metadata == {}


async def test_has_store_reports_explicit_and_implicit(service):
    await service.create_store("explicit")
    await service.set_key("implicit", "theme", "dark")

    assert await service.has_store("explicit") is True
    assert await service.has_store("implicit") is True
    assert await service.has_store("missing") is False


async def test_list_stores_returns_sorted_names(service):
    await service.create_store("charlie")
    await service.set_key("alpha", "k", 1)
    await service.create_store("bravo")
    await service.set_key("bravo", "k", 1)

    assert await service.list_stores() == ["alpha", "bravo", "charlie"]
    assert await service.count_stores() == 3


async def test_list_stores_starts_empty(service):
    assert await service.list_stores() == []
    assert await service.count_stores() == 0


async def test_delete_store_returns_deleted_document(service):
    created = await service.create_store("settings", metadata={"owner": "plugin"})
    await service.set_key("settings", "theme", "dark")

    assert await service.delete_store("settings") == created


async def test_delete_store_removes_store_and_keys(service, backend):
    await service.create_store("settings")
    await service.set_key("settings", "theme", "dark")
    await service.set_cache_key("settings", "font", "mono")

    await service.delete_store("settings")

    assert await service.has_store("settings") is False
    assert await service.get_key("settings", "theme") is None
    assert await service.list_keys("settings") == []
    assert await backend.count_documents({"store_name": "settings"}) == 0


async def test_delete_store_removes_implicit_store(service):
    await service.set_key("settings", "theme", "dark")

    await service.delete_store("settings")

    assert await service.has_store("settings") is False
    assert await service.get_key("settings", "theme") is None


async def test_delete_store_of_missing_store_returns_none(service):
    await service.create_store("settings")

    assert await service.delete_store("other") is None
    assert await service.has_store("settings") is True


async def test_delete_store_keeps_other_stores(service):
    await service.create_store("settings")
    await service.set_key("digests", "a.txt", "0f3c")

    await service.delete_store("settings")

    assert await service.list_stores() == ["digests"]
    assert (await service.get_key("digests", "a.txt")).value == "0f3c"


async def test_cleanup_deletes_whole_context(service, backend, dataset_id):
    await service.create_store("settings")
    await service.set_key("settings", "theme", "dark")
    await service.set_cache_key("digests", "a.txt", "0f3c")

    assert await service.cleanup() is None
    assert await service.list_stores() == []
    assert await service.count_stores() == 0
    assert await backend.count_documents({"dataset_id": dataset_id}) == 0
