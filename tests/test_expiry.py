"""Expiry: a key is gone for every read from the moment its expires_at passes.

The service decides expiry with its own clock, so reads do not wait for
MongoDB's TTL monitor, which removes expired documents only about once a
minute by default.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from execstore import ExecutionStoreService, MongoExecutionStoreRepo


@pytest.fixture
async def expired_key(service, clock):
    """Write settings/theme with a 10 s ttl and move the clock 11 s on."""
    await service.set_key("settings", "theme", "dark", ttl=10)
    clock.advance(11)


async def test_key_is_live_before_expiry(service, clock):
    await service.set_key("settings", "theme", "dark", ttl=10)

    clock.advance(9)

    assert (await service.get_key("settings", "theme")).value == "dark"
    assert await service.has_key("settings", "theme") is True


@pytest.mark.usefixtures("expired_key")
async def test_expired_key_is_not_returned(service):
    assert await service.get_key("settings", "theme") is None
    assert await service.has_key("settings", "theme") is False


@pytest.mark.usefixtures("expired_key")
async def test_expiry_precedes_server_removal(service, backend):
    assert await service.get_key("settings", "theme") is None
    assert await backend.count_documents({"key": "theme"}) == 1


async def test_expired_key_is_not_listed(service, clock):
    await service.set_key("settings", "theme", "dark", ttl=10)
    await service.set_key("settings", "font", "mono")

    clock.advance(11)

    assert await service.list_keys("settings") == ["font"]
    assert await service.count_keys("settings") == 1


@pytest.mark.usefixtures("expired_key")
async def test_store_of_expired_keys_vanishes(service):
    assert await service.has_store("settings") is False
    assert await service.get_store("settings") is None
    assert await service.list_stores() == []
    assert await service.count_stores() == 0


@pytest.mark.usefixtures("expired_key")
async def test_expired_store_vanishes_globally(service):
    assert await service.has_store_global("settings") is False
    assert await service.list_stores_global() == []
    assert await service.count_stores_global() == 0


async def test_explicit_store_outlives_its_keys(service, clock):
    await service.create_store("settings")
    await service.set_key("settings", "theme", "dark", ttl=10)

    clock.advance(11)

    assert await service.has_store("settings") is True
    assert await service.list_stores() == ["settings"]
    assert await service.list_keys("settings") == []


@pytest.mark.usefixtures("expired_key")
async def test_update_ttl_skips_expired_key(service, backend):
    before = await backend.find_one({"key": "theme"})

    assert await service.update_ttl("settings", "theme", 60) is None
    assert await backend.find_one({"key": "theme"}) == before


@pytest.mark.usefixtures("expired_key")
async def test_delete_key_of_expired_key_returns_false(service):
    assert await service.delete_key("settings", "theme") is False


async def test_writing_expired_key_creates_it_afresh(service, clock, backend):
    await service.set_key("settings", "theme", "dark", ttl=10)
    clock.advance(11)

    rewritten = await service.set_key("settings", "theme", "light")

    assert rewritten.created_at == clock.now
    assert rewritten.value == "light"
    assert rewritten.expires_at is None
    assert await backend.count_documents({"key": "theme"}) == 1


@pytest.mark.usefixtures("expired_key")
async def test_expired_key_rewrite_restores_store(service):
    await service.set_key("settings", "font", "mono")

    assert await service.list_stores() == ["settings"]
    assert await service.list_keys("settings") == ["font"]


@pytest.mark.mongod_only  # mongomock has no TTL monitor
async def test_server_removes_expired_document(mongod_collection):
    service = ExecutionStoreService(repo=MongoExecutionStoreRepo(mongod_collection))
    await service.set_key("settings", "theme", "dark", ttl=1)
    # The session's mongod runs its TTL monitor every second, so the document
    # should go within about two seconds of expiring.
    deadline = time.monotonic() + 10

    while await mongod_collection.count_documents({"key": "theme"}) > 0:
        assert time.monotonic() < deadline, "the TTL monitor kept the document 10 s"
        await asyncio.sleep(0.2)

    await service.close()
