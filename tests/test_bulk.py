"""set_keys follows set_key's rules on each of its write paths and races.

set_keys inserts the keys that do not exist, updates the live ones by _id and
sends the rest (expired keys, documents without created_at, and keys that
another writer created or deleted after set_keys read them) through set_key's upsert.
These tests reach every path, and inject each race by changing the collection
right after set_keys has read it. They also check the clock reading per 1,000
keys, the copy of the mapping that is written, and where an error points.
They run on the real server only: mongomock 4.3 cannot run PyMongo 4.11's
UpdateOne in a bulk write.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from bson import ObjectId
from pymongo.errors import BulkWriteError

from execstore import (
    DatabaseError,
    InvalidValueError,
    KeyPolicy,
    MongoExecutionStoreRepo,
)
from execstore._repository import BULK_WRITE_CHUNK_KEYS, _BulkWriter

pytestmark = pytest.mark.parametrize("backend", ["mongod"], indirect=True)


@pytest.fixture(params=["dataset", "global"])
def dataset_id(request):
    """Run each test in a dataset context and in the global context."""
    return ObjectId() if request.param == "dataset" else None


def after_read(monkeypatch, change):
    """Run ``change(keys)`` right after set_keys reads the state of ``keys``."""
    read = _BulkWriter._read_state

    async def read_then_change(writer, keys):
        state = await read(writer, keys)
        await change(keys)
        return state

    monkeypatch.setattr(_BulkWriter, "_read_state", read_then_change)


async def documents_of(backend, key):
    return [document async for document in backend.find({"key": key})]


async def test_new_keys_created_now(service, clock):
    written = await service.set_keys("runs", {"a": 1, "b": [2], "c": {"d": 3}})

    documents = await service.get_keys("runs", ["a", "b", "c"])
    assert written == 3
    assert {key: doc.value for key, doc in documents.items()} == {
        "a": 1,
        "b": [2],
        "c": {"d": 3},
    }
    for document in documents.values():
        assert document.created_at == document.updated_at == clock.now
        assert document.policy == KeyPolicy.PERSIST
        assert document.expires_at is None


async def test_overwrite_keeps_created_at(service, clock):
    first_write = clock.now
    await service.set_keys("runs", {"a": 1, "b": 2})
    clock.advance(5)

    await service.set_keys("runs", {"a": 10, "b": 20})

    documents = await service.get_keys("runs", ["a", "b"])
    assert {key: doc.value for key, doc in documents.items()} == {"a": 10, "b": 20}
    for document in documents.values():
        assert document.created_at == first_write
        assert document.updated_at == clock.now


async def test_expired_key_starts_afresh(service, clock):
    first_write = clock.now
    await service.set_key("runs", "short", 1, ttl=10)
    await service.set_key("runs", "long", 2, ttl=3600)
    clock.advance(20)

    await service.set_keys("runs", {"short": 10, "long": 20, "new": 30}, ttl=60)

    documents = await service.get_keys("runs", ["short", "long", "new"])
    assert documents["short"].created_at == clock.now
    assert documents["long"].created_at == first_write
    assert documents["new"].created_at == clock.now
    for document in documents.values():
        assert document.expires_at == clock.now + timedelta(seconds=60)
        assert document.policy == KeyPolicy.EVICT


async def test_persist_overwrite_clears_expiry(service, clock):
    await service.set_keys("runs", {"a": 1}, ttl=60)

    await service.set_keys("runs", {"a": 2})

    document = await service.get_key("runs", "a")
    assert document.expires_at is None
    assert document.policy == KeyPolicy.PERSIST


async def test_write_larger_than_one_chunk(service, backend):
    total = 2 * BULK_WRITE_CHUNK_KEYS + 500
    existing = {f"key-{i:05d}": "old" for i in range(0, total, 2)}
    await service.set_keys("big", existing)

    written = await service.set_keys("big", {f"key-{i:05d}": i for i in range(total)})

    assert written == total
    assert await service.count_keys("big") == total
    assert await backend.count_documents({"store_name": "big"}) == total
    last = await service.get_key("big", f"key-{total - 1:05d}")
    assert last.value == total - 1


@pytest.mark.parametrize("existing", [False, True], ids=["insert", "update"])
async def test_dollar_and_dotted_names_stored(service, existing):
    value = {"$set": {"a.b": 1}, "$": [{"$in": 2}]}
    if existing:
        await service.set_keys("runs", {"k": "old"})

    await service.set_keys("runs", {"k": value})

    assert (await service.get_key("runs", "k")).value == value


@pytest.mark.parametrize(
    "fields",
    [{}, {"created_at": "2020-01-01", "expires_at": "soon"}],
    ids=["no-created-at", "expiry-not-a-date"],
)
async def test_legacy_document_gets_created_at(
    service, backend, dataset_id, clock, fields
):
    legacy = {"store_name": "runs", "key": "k", "dataset_id": dataset_id, "value": 1}
    await backend.insert_one({**legacy, "updated_at": clock.now, **fields})
    clock.advance(5)

    await service.set_keys("runs", {"k": 2})

    stored = (await documents_of(backend, "k"))[0]
    assert stored["created_at"] == clock.now
    assert stored["value"] == 2


async def test_key_deleted_after_read(service, backend, clock, monkeypatch):
    await service.set_keys("runs", {"gone": 1, "kept": 2})
    clock.advance(5)

    async def delete_one(keys):
        await backend.delete_one({"key": "gone"})

    after_read(monkeypatch, delete_one)
    await service.set_keys("runs", {"gone": 10, "kept": 20})

    documents = await service.get_keys("runs", ["gone", "kept"])
    assert documents["gone"].value == 10
    assert documents["gone"].created_at == clock.now
    assert documents["kept"].value == 20
    assert documents["kept"].created_at == clock.now - timedelta(seconds=5)


async def test_key_created_after_read(
    service, make_service, dataset_id, backend, clock, monkeypatch
):
    other = make_service(dataset_id)

    async def create_first(keys):
        await other.set_key("runs", "raced", "theirs")

    after_read(monkeypatch, create_first)
    await service.set_keys("runs", {"raced": "ours", "plain": 1})

    assert (await service.get_key("runs", "raced")).value == "ours"
    assert len(await documents_of(backend, "raced")) == 1
    assert (await service.get_key("runs", "plain")).value == 1


async def test_key_recreated_after_read(
    service, make_service, dataset_id, backend, clock, monkeypatch
):
    other = make_service(dataset_id)
    await service.set_keys("runs", {"raced": 1})
    clock.advance(5)

    async def delete_and_create(keys):
        await backend.delete_one({"key": "raced"})
        await other.set_key("runs", "raced", "theirs")

    after_read(monkeypatch, delete_and_create)
    await service.set_keys("runs", {"raced": "ours"})

    documents = await documents_of(backend, "raced")
    assert [document["value"] for document in documents] == ["ours"]
    assert documents[0]["created_at"] == clock.now


async def test_concurrent_writes_one_document_per_key(service, backend, clock):
    keys = [f"k{i}" for i in range(50)]

    async def write(writer):
        # Each writer writes an overlapping, shifted half of the keys.
        chosen = keys[writer % 25 : writer % 25 + 25]
        return await service.set_keys("shared", dict.fromkeys(chosen, writer))

    results = await asyncio.gather(*(write(writer) for writer in range(20)))

    writers_of = {}
    for writer in range(20):
        for key in keys[writer % 25 : writer % 25 + 25]:
            writers_of.setdefault(key, set()).add(writer)
    assert results == [25] * 20
    assert await backend.count_documents({"store_name": "shared"}) == len(writers_of)
    documents = await service.get_keys("shared", keys)
    assert documents.keys() == writers_of.keys()
    for key, document in documents.items():
        assert document.value in writers_of[key]
        assert document.created_at == clock.now


@pytest.mark.parametrize(
    "write_errors",
    [[], [{"index": 0, "code": 11000, "errmsg": "duplicate key"}]],
    ids=["alone", "beside-duplicates"],
)
async def test_write_concern_error_on_insert_raises(
    service, backend, monkeypatch, write_errors
):
    details = {
        "writeErrors": write_errors,
        "writeConcernErrors": [{"code": 64, "errmsg": "waiting timed out"}],
        "nInserted": 2 - len(write_errors),
    }

    async def insert_many(documents, ordered):
        raise BulkWriteError(details)

    monkeypatch.setattr(backend, "insert_many", insert_many)
    with pytest.raises(DatabaseError):
        await service.set_keys("runs", {"a": 1, "b": 2})


class SteppingClock:
    """A clock that moves one second forward on every reading."""

    def __init__(self, start):
        self.now = start

    def __call__(self):
        self.now += timedelta(seconds=1)
        return self.now


async def test_clock_read_per_chunk(make_service, clock):
    stepping = SteppingClock(clock.now)
    service = make_service(None, clock=stepping)
    keys = [f"key-{i:05d}" for i in range(2 * BULK_WRITE_CHUNK_KEYS + 1)]

    await service.set_keys("runs", dict.fromkeys(keys, 1), ttl=60)

    first, last = keys[0], keys[-1]
    documents = await service.get_keys("runs", [first, last])
    assert documents[last].updated_at - documents[first].updated_at == timedelta(
        seconds=2
    )
    for document in documents.values():
        assert document.expires_at == document.updated_at + timedelta(seconds=60)


async def test_mapping_changed_during_write_ignored(service, backend, monkeypatch):
    values = {"a": 1}
    get_collection = MongoExecutionStoreRepo._ready

    async def add_entries_then_get_collection(repo):
        # The first call waits here on MongoDB to set up the indexes.
        values["__store__"] = "not checked"
        values["b"] = 2
        return await get_collection(repo)

    monkeypatch.setattr(
        MongoExecutionStoreRepo, "_ready", add_entries_then_get_collection
    )
    written = await service.set_keys("runs", values)

    assert written == 1
    assert await backend.count_documents({}) == 1


async def test_bad_entry_named_by_index(service, backend):
    values = {f"key-{i}": i for i in range(1500)}
    values["bad"] = {1, 2}

    with pytest.raises(InvalidValueError) as raised:
        await service.set_keys("runs", values)

    assert raised.value.argument == "values"
    assert "the mapping's entry at index 1500" in str(raised.value)
    assert await backend.count_documents({}) == 0


@pytest.mark.parametrize("method", ["set_key", "set_keys"])
async def test_value_spoiled_during_call(service, monkeypatch, method):
    value = {"n": 1}
    get_collection = MongoExecutionStoreRepo._ready

    async def spoil_value_then_get_collection(repo):
        value["bad"] = {"SECRET"}
        return await get_collection(repo)

    monkeypatch.setattr(
        MongoExecutionStoreRepo, "_ready", spoil_value_then_get_collection
    )
    with pytest.raises(InvalidValueError) as raised:
        if method == "set_key":
            await service.set_key("runs", "k", value)
        else:
            await service.set_keys("runs", {"k": value})

    assert "SECRET" not in str(raised.value)
