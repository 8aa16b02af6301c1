"""Storage layout: the documents and indexes of FiftyOne's execution_store collection.

Each key is one document with the fields below. A store's own document has the
key ``__store__`` and keeps the store's metadata in ``value``. Documents written
by other tools may lack ``dataset_id`` (global context), ``policy`` or
``updated_at``, and the service reads them all the same.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId, Timestamp
from mongomock_motor import AsyncMongoMockClient

from execstore import (
    ExecutionStoreService,
    KeyPolicy,
    MongoExecutionStoreRepo,
    StoreExistsError,
)

STORED_FIELDS = {
    "_id",
    "store_name",
    "key",
    "value",
    "dataset_id",
    "created_at",
    "updated_at",
    "expires_at",
    "policy",
}
UNIQUE_KEY = [("store_name", 1), ("key", 1), ("dataset_id", 1)]
EXPIRY_KEY = [("expires_at", 1)]


def indexes_on(information: dict, key: list) -> list[dict]:
    """Return the descriptions of the indexes whose key pattern is ``key``."""
    return [index for index in information.values() if list(index["key"]) == key]


def stored_key(dataset_id: ObjectId | None, clock, **fields) -> dict:
    """Return a raw key document as FiftyOne writes it, with ``fields`` replaced."""
    document = {
        "store_name": "settings",
        "key": "theme",
        "value": "dark",
        "dataset_id": dataset_id,
        "created_at": clock.now - timedelta(days=1),
        "updated_at": clock.now - timedelta(hours=1),
        "expires_at": None,
        "policy": "persist",
    }
    document.update(fields)
    return document


async def test_key_document_has_stored_fields(service, backend, dataset_id):
    written = await service.set_key("settings", "theme", {"mode": "dark"}, ttl=60)

    stored = await backend.find_one({"key": "theme"})

    assert set(stored) == STORED_FIELDS
    assert stored["store_name"] == "settings"
    assert stored["value"] == {"mode": "dark"}
    assert stored["dataset_id"] == dataset_id
    assert stored["created_at"] == written.created_at
    assert stored["updated_at"] == written.updated_at
    assert stored["expires_at"] == written.expires_at
    assert stored["policy"] == "evict"


async def test_persist_key_stores_null_expiry(service, backend):
    await service.set_key("settings", "theme", "dark")

    stored = await backend.find_one({"key": "theme"})

    assert "expires_at" in stored
    assert stored["expires_at"] is None
    assert stored["policy"] == "persist"


async def test_store_document_has_reserved_key(service, backend, dataset_id):
    await service.create_store("settings", metadata={"owner": "plugin"})

    stored = await backend.find_one({"store_name": "settings"})

    assert set(stored) == STORED_FIELDS
    assert stored["key"] == "__store__"
    assert stored["value"] == {"owner": "plugin"}
    assert stored["dataset_id"] == dataset_id
    assert stored["policy"] == "persist"


async def test_global_key_stores_null_dataset_id(global_service, backend):
    await global_service.set_key("settings", "theme", "dark")

    stored = await backend.find_one({"key": "theme"})

    assert stored.get("dataset_id") is None


async def test_unique_index_covers_store_key_dataset(service, backend):
    await service.set_key("settings", "theme", "dark")

    unique = indexes_on(await backend.index_information(), UNIQUE_KEY)

    assert len(unique) == 1
    assert unique[0].get("unique") is True


async def test_expiry_index_removes_at_expires_at(service, backend):
    await service.set_key("settings", "theme", "dark")

    expiry = indexes_on(await backend.index_information(), EXPIRY_KEY)

    assert len(expiry) == 1
    assert expiry[0].get("expireAfterSeconds") == 0


async def test_index_setup_is_idempotent(make_service, dataset_id, backend):
    first, second = make_service(dataset_id), make_service(None)

    for _ in range(3):
        await first.set_key("settings", "theme", "dark")
        await second.create_store("settings", exist_ok=True)
        await first.list_stores()
    information = await backend.index_information()

    assert len(indexes_on(information, UNIQUE_KEY)) == 1
    assert len(indexes_on(information, EXPIRY_KEY)) == 1


async def test_existing_unique_index_is_reused(backend, service):
    await backend.create_index(UNIQUE_KEY, unique=True, name="fiftyone_unique")

    await service.set_key("settings", "theme", "dark")

    assert len(indexes_on(await backend.index_information(), UNIQUE_KEY)) == 1
    assert (await service.get_key("settings", "theme")).value == "dark"


@pytest.mark.mongod_only  # mongomock cannot change an index's expireAfterSeconds
@pytest.mark.parametrize("index_name", ["expires_at_1", "legacy_expiry"])
async def test_expiry_index_converges_to_zero(
    mongod_collection, dataset_id, index_name
):
    await mongod_collection.create_index(
        EXPIRY_KEY, expireAfterSeconds=3600, name=index_name
    )
    service = ExecutionStoreService(
        repo=MongoExecutionStoreRepo(mongod_collection, dataset_id)
    )

    await service.set_key("settings", "theme", "dark")
    expiry = indexes_on(await mongod_collection.index_information(), EXPIRY_KEY)

    assert len(expiry) == 1
    assert expiry[0]["expireAfterSeconds"] == 0
    await service.close()


async def test_raw_key_document_reads_through_service(
    service, backend, dataset_id, clock
):
    raw = stored_key(dataset_id, clock, expires_at=clock.now + timedelta(hours=1))
    await backend.insert_one(dict(raw, policy="evict"))

    stored = await service.get_key("settings", "theme")

    assert stored.value == "dark"
    assert stored.created_at == raw["created_at"]
    assert stored.updated_at == raw["updated_at"]
    assert stored.expires_at == raw["expires_at"]
    assert stored.policy == KeyPolicy.EVICT


async def test_raw_store_document_reads_as_store(service, backend, dataset_id, clock):
    raw = stored_key(dataset_id, clock, key="__store__", value={"owner": "fiftyone"})
    await backend.insert_one(raw)

    store = await service.get_store("settings")

    assert store.metadata == {"owner": "fiftyone"}
    assert store.created_at == raw["created_at"]
    assert await service.list_stores() == ["settings"]
    assert await service.list_keys("settings") == []


@pytest.mark.parametrize(
    ("expires_in", "policy"),
    [(None, KeyPolicy.PERSIST), (timedelta(hours=1), KeyPolicy.EVICT)],
    ids=["no-expiry", "expiring"],
)
async def test_missing_policy_follows_expiry(
    service, backend, dataset_id, clock, expires_in, policy
):
    expires_at = None if expires_in is None else clock.now + expires_in
    raw = stored_key(dataset_id, clock, expires_at=expires_at)
    del raw["policy"], raw["updated_at"]
    await backend.insert_one(raw)

    stored = await service.get_key("settings", "theme")

    assert stored.value == "dark"
    assert stored.created_at == raw["created_at"]
    assert stored.policy == policy


async def test_non_date_timestamps_fall_back(service, backend, dataset_id, clock):
    raw = stored_key(dataset_id, clock, created_at="2020-01-01", updated_at=7)
    await backend.insert_one(raw)

    stored = await service.get_key("settings", "theme")

    assert stored.value == "dark"
    assert stored.created_at == raw["_id"].generation_time
    assert stored.updated_at is None


@pytest.mark.mongod_only  # mongomock cannot compare a BSON Timestamp with a date
@pytest.mark.parametrize("backend", ["mongod"], indirect=True)
@pytest.mark.parametrize("method", ["set_key", "set_keys"])
async def test_non_date_expiry_counts_as_expired(
    service, backend, dataset_id, clock, method
):
    raw = stored_key(dataset_id, clock, expires_at=Timestamp(2**31 - 1, 0))
    await backend.insert_one(raw)

    has_key = await service.has_key("settings", "theme")
    if method == "set_key":
        await service.set_key("settings", "theme", "light")
    else:
        await service.set_keys("settings", {"theme": "light"})

    stored = await service.get_key("settings", "theme")
    assert has_key is False
    assert stored.value == "light"
    assert stored.created_at == clock.now


async def test_global_key_without_dataset_id_field(
    global_service, service, backend, clock
):
    raw = stored_key(None, clock)
    del raw["dataset_id"]
    await backend.insert_one(raw)

    assert (await global_service.get_key("settings", "theme")).value == "dark"
    assert await global_service.list_keys("settings") == ["theme"]
    assert await global_service.list_stores() == ["settings"]
    assert await service.get_key("settings", "theme") is None


async def test_global_store_without_dataset_id_field(global_service, backend, clock):
    raw = stored_key(None, clock, key="__store__", value={"owner": "fiftyone"})
    del raw["dataset_id"]
    await backend.insert_one(raw)

    assert (await global_service.get_store("settings")).metadata == {
        "owner": "fiftyone"
    }
    assert await global_service.has_store_global("settings") is True
    assert [
        (s.store_name, s.dataset_id) for s in await global_service.list_stores_global()
    ] == [("settings", None)]
    with pytest.raises(StoreExistsError):
        await global_service.create_store("settings")


async def test_global_overwrite_reuses_legacy_document(global_service, backend, clock):
    raw = stored_key(None, clock)
    del raw["dataset_id"]
    await backend.insert_one(raw)

    written = await global_service.set_key("settings", "theme", "light")

    assert await backend.count_documents({"key": "theme"}) == 1
    assert written.created_at == raw["created_at"]
    assert (await global_service.get_key("settings", "theme")).value == "light"


async def test_global_cleanup_removes_legacy_documents(
    global_service, service, backend, clock
):
    raw = stored_key(None, clock)
    del raw["dataset_id"]
    await backend.insert_one(raw)
    await service.set_key("settings", "theme", "dataset")

    await global_service.cleanup()

    assert await backend.count_documents({"dataset_id": {"$exists": False}}) == 0
    assert await service.has_key("settings", "theme") is True


async def test_second_mongomock_client_gets_indexes():
    # Clients compare equal by address, so an index cache keyed by equality
    # skipped the second client's indexes while the first was alive.
    first = AsyncMongoMockClient(tz_aware=True).db.execution_store
    await ExecutionStoreService(MongoExecutionStoreRepo(first)).set_key("s", "k", 1)
    second = AsyncMongoMockClient(tz_aware=True).db.execution_store

    await ExecutionStoreService(MongoExecutionStoreRepo(second)).set_key("s", "k", 1)

    indexes = await second.index_information()
    assert "unique_store_index" in indexes
    assert await first.count_documents({}) == 1
