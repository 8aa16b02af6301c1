"""clear_cache deletes evictable keys and keeps persist keys and store documents.

A key is evictable when its policy is ``evict``, or, for documents written
without a policy field, when it has an expiry.
"""

from __future__ import annotations

from datetime import timedelta

import pytest


async def test_clear_cache_deletes_evictable_keys(service):
    await service.set_cache_key("digests", "cached", "0f3c")
    await service.set_key("digests", "expiring", "0f3c", ttl=60)
    await service.set_key("digests", "evict-policy", "0f3c", policy="evict")
    await service.set_key("digests", "kept", "0f3c")

    assert await service.clear_cache() == 3
    assert await service.list_keys("digests") == ["kept"]


async def test_clear_cache_spans_stores_of_context(service):
    await service.set_cache_key("digests", "a.txt", "0f3c")
    await service.set_cache_key("thumbnails", "a.png", b"\x89PNG")

    assert await service.clear_cache() == 2
    assert await service.list_stores() == []


async def test_clear_cache_of_one_store(service):
    await service.set_cache_key("digests", "a.txt", "0f3c")
    await service.set_cache_key("thumbnails", "a.png", b"\x89PNG")

    assert await service.clear_cache("digests") == 1
    assert await service.has_key("digests", "a.txt") is False
    assert await service.has_key("thumbnails", "a.png") is True


@pytest.mark.parametrize("store_policy", ["persist", "evict"])
async def test_clear_cache_keeps_store_documents(service, store_policy):
    created = await service.create_store(
        "digests", metadata={"owner": "plugin"}, policy=store_policy
    )
    await service.set_cache_key("digests", "a.txt", "0f3c")

    assert await service.clear_cache() == 1
    assert await service.get_store("digests") == created


async def test_clear_cache_without_evictable_keys_returns_zero(service):
    await service.create_store("settings")
    await service.set_key("settings", "theme", "dark")

    assert await service.clear_cache() == 0
    assert await service.clear_cache("settings") == 0
    assert await service.clear_cache("missing") == 0
    assert await service.has_key("settings", "theme") is True


async def test_expiring_key_without_policy_is_evictable(
    service, backend, dataset_id, clock
):
    # Documents from older writers have no policy field.
    expiring = {
        "store_name": "digests",
        "key": "expiring",
        "value": "0f3c",
        "dataset_id": dataset_id,
        "created_at": clock.now,
        "expires_at": clock.now + timedelta(hours=1),
    }
    persistent = {**expiring, "key": "kept", "expires_at": None}
    await backend.insert_many([expiring, persistent])

    assert await service.clear_cache() == 1
    assert await service.list_keys("digests") == ["kept"]
