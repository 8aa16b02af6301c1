"""Contexts: a dataset id, or None for the global context, scopes stores and keys.

Methods without ``_global`` stay inside the service's context; the ``_global``
methods span every context of the collection.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from bson import ObjectId

from execstore import (
    ExecutionStoreService,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MongoExecutionStoreRepo,
    Settings,
    StoreDocument,
)


@dataclass
class Contexts:
    first_id: ObjectId
    second_id: ObjectId
    first: ExecutionStoreService
    second: ExecutionStoreService
    global_: ExecutionStoreService

    def all(self) -> list[ExecutionStoreService]:
        return [self.first, self.second, self.global_]


@pytest.fixture
def contexts(make_service) -> Contexts:
    """Return services for two dataset contexts and the global context."""
    first_id, second_id = ObjectId(), ObjectId()
    return Contexts(
        first_id=first_id,
        second_id=second_id,
        first=make_service(first_id),
        second=make_service(second_id),
        global_=make_service(None),
    )


async def test_global_listing_with_shared_names(contexts, backend):
    # The global context's names come from the first dataset_id of each store
    # name, where null sorts first. These cases put names on both sides of it.
    await contexts.first.set_key("shared", "k", 1)
    await contexts.global_.set_key("shared", "k", 2)
    await contexts.second.set_key("datasets-only", "k", 3)
    await contexts.first.create_store("datasets-only")
    await contexts.global_.create_store("global-only")
    await backend.insert_one({"store_name": "no-context-field", "key": "k"})
    await backend.insert_one({"key": "no-store-name-field", "dataset_id": None})

    assert await contexts.global_.list_stores() == [
        "global-only",
        "no-context-field",
        "shared",
    ]
    assert await contexts.global_.count_stores() == 3
    assert await contexts.first.list_stores() == ["datasets-only", "shared"]
    assert await contexts.second.list_stores() == ["datasets-only"]


async def test_key_is_invisible_in_other_contexts(contexts):
    await contexts.first.set_key("settings", "theme", "dark")

    for other in [contexts.second, contexts.global_]:
        assert await other.get_key("settings", "theme") is None
        assert await other.has_key("settings", "theme") is False
        assert await other.list_keys("settings") == []
        assert await other.count_keys("settings") == 0


async def test_same_key_holds_one_value_per_context(contexts, backend):
    await contexts.first.set_key("settings", "theme", "first")
    await contexts.second.set_key("settings", "theme", "second")
    await contexts.global_.set_key("settings", "theme", "global")

    assert (await contexts.first.get_key("settings", "theme")).value == "first"
    assert (await contexts.second.get_key("settings", "theme")).value == "second"
    assert (await contexts.global_.get_key("settings", "theme")).value == "global"
    assert await backend.count_documents({"key": "theme"}) == 3


async def test_stores_are_listed_per_context(contexts):
    await contexts.first.create_store("alpha")
    await contexts.second.create_store("bravo")
    await contexts.global_.set_key("charlie", "theme", "dark")

    assert await contexts.first.list_stores() == ["alpha"]
    assert await contexts.second.list_stores() == ["bravo"]
    assert await contexts.global_.list_stores() == ["charlie"]
    assert await contexts.first.count_stores() == 1
    assert await contexts.first.has_store("bravo") is False
    assert await contexts.global_.has_store("alpha") is False


async def test_create_store_is_per_context(contexts):
    await contexts.first.create_store("settings", metadata={"owner": "first"})

    created = await contexts.second.create_store(
        "settings", metadata={"owner": "second"}
    )

    assert created.metadata == {"owner": "second"}
    assert (await contexts.first.get_store("settings")).metadata == {"owner": "first"}


async def test_delete_store_keeps_other_contexts(contexts):
    for service in contexts.all():
        await service.create_store("settings")
        await service.set_key("settings", "theme", "dark")

    await contexts.first.delete_store("settings")

    assert await contexts.first.has_store("settings") is False
    assert await contexts.second.has_store("settings") is True
    assert await contexts.global_.has_key("settings", "theme") is True


async def test_delete_key_keeps_other_contexts(contexts):
    for service in contexts.all():
        await service.set_key("settings", "theme", "dark")

    await contexts.global_.delete_key("settings", "theme")

    assert await contexts.first.has_key("settings", "theme") is True
    assert await contexts.second.has_key("settings", "theme") is True


async def test_update_ttl_keeps_other_contexts(contexts):
    await contexts.second.set_key("settings", "theme", "dark")

    assert await contexts.first.update_ttl("settings", "theme", 60) is None
    assert (await contexts.second.get_key("settings", "theme")).expires_at is None


@pytest.mark.parametrize("cleaned", ["first", "global_"], ids=["dataset", "global"])
async def test_cleanup_keeps_other_contexts(contexts, cleaned):
    for service in contexts.all():
        await service.create_store("settings")
        await service.set_cache_key("digests", "a.txt", "0f3c")
    cleaned_service = getattr(contexts, cleaned)

    await cleaned_service.cleanup()

    assert await cleaned_service.list_stores() == []
    for service in contexts.all():
        if service is not cleaned_service:
            assert await service.list_stores() == ["digests", "settings"]


async def test_clear_cache_keeps_other_contexts(contexts):
    for service in contexts.all():
        await service.set_cache_key("digests", "a.txt", "0f3c")

    assert await contexts.first.clear_cache() == 1
    assert await contexts.second.has_key("digests", "a.txt") is True
    assert await contexts.global_.has_key("digests", "a.txt") is True


async def test_list_stores_global_spans_contexts(contexts):
    await contexts.first.create_store("settings", metadata={"owner": "first"})
    await contexts.first.set_key("settings", "theme", "dark")
    await contexts.first.set_key("digests", "a.txt", "0f3c")
    await contexts.second.set_key("settings", "theme", "light")
    await contexts.global_.create_store("settings")

    stores = await contexts.second.list_stores_global()

    assert all(isinstance(store, StoreDocument) for store in stores)
    assert sorted((s.store_name, str(s.dataset_id)) for s in stores) == sorted(
        [
            ("settings", str(contexts.first_id)),
            ("digests", str(contexts.first_id)),
            ("settings", str(contexts.second_id)),
            ("settings", "None"),
        ]
    )


async def test_list_stores_global_carries_metadata(contexts):
    await contexts.first.create_store("settings", metadata={"owner": "first"})
    await contexts.second.set_key("settings", "theme", "light")

    stores = await contexts.global_.list_stores_global()
    by_context = {store.dataset_id: store for store in stores}

    assert by_context[contexts.first_id].metadata == {"owner": "first"}
    assert by_context[contexts.second_id].metadata == {}


async def test_count_stores_global_matches_list(contexts):
    await contexts.first.create_store("settings")
    await contexts.first.set_key("settings", "theme", "dark")
    await contexts.second.set_key("settings", "theme", "light")
    await contexts.global_.set_key("digests", "a.txt", "0f3c")

    stores = await contexts.first.list_stores_global()

    assert len(stores) == 3
    assert await contexts.first.count_stores_global() == 3


async def test_has_store_global_finds_any_context(contexts):
    await contexts.second.set_key("settings", "theme", "light")

    assert await contexts.first.has_store_global("settings") is True
    assert await contexts.global_.has_store_global("settings") is True
    assert await contexts.first.has_store_global("missing") is False


async def test_delete_store_global_counts_deleted_stores(contexts):
    await contexts.first.create_store("settings")
    await contexts.first.set_key("settings", "theme", "dark")
    await contexts.second.set_key("settings", "theme", "light")
    await contexts.global_.create_store("settings")

    assert await contexts.first.delete_store_global("settings") == 3


async def test_delete_store_global_removes_every_context(contexts, backend):
    for service in contexts.all():
        await service.create_store("settings")
        await service.set_key("settings", "theme", "dark")
    await contexts.first.set_key("digests", "a.txt", "0f3c")

    await contexts.second.delete_store_global("settings")

    for service in contexts.all():
        assert await service.has_store("settings") is False
    assert await contexts.first.has_store_global("settings") is False
    assert await backend.count_documents({"store_name": "settings"}) == 0
    assert await contexts.first.list_stores() == ["digests"]


async def test_delete_store_global_missing_returns_zero(contexts):
    await contexts.first.create_store("settings")

    assert await contexts.first.delete_store_global("missing") == 0
    assert await contexts.first.has_store("settings") is True


async def test_hex_dataset_id_is_normalized(make_service, backend):
    dataset_id = ObjectId()
    by_string = make_service(str(dataset_id))
    by_object_id = make_service(dataset_id)

    written = await by_string.set_key("settings", "theme", "dark")
    stored = await backend.find_one({"key": "theme"})

    assert type(written.dataset_id) is ObjectId
    assert written.dataset_id == dataset_id
    assert stored["dataset_id"] == dataset_id
    assert (await by_object_id.get_key("settings", "theme")).value == "dark"


async def test_service_accepts_matching_dataset_id(backend):
    dataset_id = ObjectId()
    repo = MongoExecutionStoreRepo(backend, dataset_id)

    service = ExecutionStoreService(repo=repo, dataset_id=str(dataset_id))
    written = await service.set_key("settings", "theme", "dark")

    assert written.dataset_id == dataset_id


async def test_service_rejects_conflicting_dataset_id(backend):
    repo = MongoExecutionStoreRepo(backend, ObjectId())

    with pytest.raises(InvalidArgumentError) as raised:
        ExecutionStoreService(repo=repo, dataset_id=ObjectId())

    assert raised.value.argument == "dataset_id"


INVALID_DATASET_IDS = [
    pytest.param(12, InvalidArgumentTypeError, id="int"),
    pytest.param(True, InvalidArgumentTypeError, id="bool"),
    pytest.param(b"twelve bytes", InvalidArgumentTypeError, id="12-bytes"),
    pytest.param({"$ne": None}, InvalidArgumentTypeError, id="query-operator"),
    pytest.param("", InvalidArgumentError, id="empty-str"),
    pytest.param("65a1b2c3", InvalidArgumentError, id="short-hex"),
    pytest.param("65a1b2c3d4e5f60718293a4b0", InvalidArgumentError, id="25-hex"),
    pytest.param("not-an-object-id-at-all!", InvalidArgumentError, id="24-non-hex"),
]


@pytest.mark.parametrize(("dataset_id", "error"), INVALID_DATASET_IDS)
async def test_repo_rejects_invalid_dataset_id(backend, dataset_id, error):
    with pytest.raises(error) as raised:
        ExecutionStoreService(repo=MongoExecutionStoreRepo(backend, dataset_id))

    assert raised.value.argument == "dataset_id"


@pytest.mark.mongod_only  # a service built from settings makes a real Motor client
@pytest.mark.parametrize(("dataset_id", "error"), INVALID_DATASET_IDS)
async def test_service_rejects_invalid_dataset_id(mongod, dataset_id, error):
    settings = Settings(database_uri=mongod.uri, database_name="execstore_unused")

    with pytest.raises(error) as raised:
        ExecutionStoreService(dataset_id=dataset_id, settings=settings)

    assert raised.value.argument == "dataset_id"
