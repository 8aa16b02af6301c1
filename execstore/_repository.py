"""Storage of stores and keys in one MongoDB collection: every driver call lives here.

A repository is bound to one context (a dataset id, or None for the global
context). Methods named ``*_global`` span every context. The service decides
the clock and passes ``now`` in, so one clock reading decides which keys are
live for a whole operation. A key is live when it has no ``expires_at`` or its
``expires_at`` is later than ``now``.

Driver errors are translated at this boundary into execstore errors.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from datetime import datetime, timezone
from typing import Any, ParamSpec, TypeVar

from bson import ObjectId
from bson.errors import InvalidDocument
from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from ._drivers import aggregate, close_resource
from ._errors import DatabaseError, DatabaseUnavailableError, InvalidValueError
from ._models import STORE_DOCUMENT_KEY, to_utc_millis
from ._validation import normalize_dataset_id

logger = logging.getLogger(__name__)

RawDocument = Mapping[str, Any]

UNIQUE_INDEX_NAME = "unique_store_index"
UNIQUE_INDEX_KEYS = [
    ("store_name", ASCENDING),
    ("key", ASCENDING),
    ("dataset_id", ASCENDING),
]
CONTEXT_INDEX_NAME = "context_store_key"
CONTEXT_INDEX_KEYS = [
    ("dataset_id", ASCENDING),
    ("store_name", ASCENDING),
    ("key", ASCENDING),
]
# The store names of every context, each with its contexts in order. It gives
# the global context's store names from the index alone (see list_store_names).
STORE_CONTEXTS_INDEX_NAME = "store_name_dataset_id"
STORE_CONTEXTS_INDEX_KEYS = [("store_name", ASCENDING), ("dataset_id", ASCENDING)]
# Only store documents: lists them in every context without a collection scan.
STORE_DOCUMENTS_INDEX_NAME = "store_documents"
STORE_DOCUMENTS_INDEX_KEYS = [("dataset_id", ASCENDING), ("store_name", ASCENDING)]
EXPIRY_INDEX_NAME = "expires_at_1"
EXPIRY_INDEX_KEYS = [("expires_at", ASCENDING)]

_AUTHENTICATION_FAILED_CODE = 18
_DUPLICATE_KEY_CODE = 11000
_LATEST_DATE = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
# Keys per step of set_keys. The $in query that reads their state stays far
# under MongoDB's 16 MiB command limit even when every key is 4096 bytes.
BULK_WRITE_CHUNK_KEYS = 1000
# MongoDB error codes meaning that a document is over the BSON size limit.
_DOCUMENT_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})

# Collections whose indexes are known to be in place, per client object, so
# index setup runs once per client and collection in a process. Keyed by
# id() with a weak reference to check it: clients compare equal by address,
# and mongomock clients with one address are still separate databases.
_indexed_collections: dict[int, tuple[weakref.ref[Any], set[str]]] = {}


def _indexed_names(client: Any) -> set[str]:
    """Return the set of collection names indexed through ``client``."""
    entry = _indexed_collections.get(id(client))
    if entry is None or entry[0]() is not client:
        key = id(client)
        reference = weakref.ref(client, lambda _: _indexed_collections.pop(key, None))
        entry = (reference, set())
        _indexed_collections[key] = entry
    return entry[1]


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _translate_driver_errors(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Re-raise driver errors from ``method`` as execstore errors."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except DocumentTooLarge as exc:
            raise InvalidValueError(
                "value", "the stored document is over MongoDB's size limit"
            ) from exc
        except ConnectionFailure as exc:
            raise DatabaseUnavailableError(
                f"MongoDB could not be reached ({_public_name(exc)}); check that "
                "the server that EXECSTORE_DATABASE_URI names is running, or, "
                "without that variable, run: python -m execstore server start"
            ) from exc
        except OperationFailure as exc:
            if exc.code in _DOCUMENT_TOO_LARGE_CODES:
                raise InvalidValueError(
                    "value", "the stored document is over MongoDB's size limit"
                ) from exc
            if exc.code == _AUTHENTICATION_FAILED_CODE:
                raise DatabaseError(
                    "MongoDB rejected the credentials (AuthenticationFailed); "
                    "check the user and password in EXECSTORE_DATABASE_URI"
                ) from exc
            code_name = (exc.details or {}).get("codeName", type(exc).__name__)
            raise DatabaseError(
                f"MongoDB rejected the operation: {code_name} (code {exc.code})"
            ) from exc
        except PyMongoError as exc:
            raise DatabaseError(
                f"MongoDB driver error: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        except InvalidDocument:
            # Values are checked before the call, so this one was changed since.
            # The driver's message shows the value, so it is not kept.
            raise InvalidValueError(
                "value",
                "BSON cannot encode it now. Do not change a value until the "
                "call returns",
            ) from None

    return wrapper


def _public_name(exc: Exception) -> str:
    # PyMongo raises private subclasses such as _OperationCancelled; name the
    # nearest public class instead.
    for cls in type(exc).__mro__:
        if not cls.__name__.startswith("_"):
            return cls.__name__
    return type(exc).__name__


def _first_line(exc: Exception) -> str:
    # Driver messages can be long; the first line names the problem.
    return str(exc).splitlines()[0][:200] if str(exc) else ""


def live_filter(now: datetime) -> dict[str, Any]:
    """Return the query part that matches documents not expired at ``now``."""
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


def _evictable_filter() -> dict[str, Any]:
    # Documents written without a policy field are evictable when they expire.
    return {
        "key": {"$ne": STORE_DOCUMENT_KEY},
        "$or": [
            {"policy": "evict"},
            {"policy": {"$exists": False}, "expires_at": {"$ne": None}},
        ],
    }


async def _translate_iteration(cursor: Any) -> AsyncIterator[RawDocument]:
    """Iterate a cursor, re-raising driver errors as execstore errors."""
    next_document = _translate_driver_errors(cursor.__anext__)
    while True:
        try:
            yield await next_document()
        except StopAsyncIteration:
            return


def _existing_store_filter(now: datetime) -> dict[str, Any]:
    # A store exists through its store document or through any live key.
    return {
        "$or": [
            {"key": STORE_DOCUMENT_KEY},
            {"expires_at": None},
            {"expires_at": {"$gt": now}},
        ]
    }


class ExecutionStoreRepo(abc.ABC):
    """Storage of the stores and keys of one context.

    Attributes:
        dataset_id: The context: a dataset's ObjectId, or None for global.
    """

    dataset_id: ObjectId | None

    @abc.abstractmethod
    async def upsert_key(
        self,
        store_name: str,
        key: str,
        value: Any,
        policy: str,
        expires_at: datetime | None,
        now: datetime,
    ) -> RawDocument:
        """Write a key in one round trip and return the stored document.

        ``created_at`` is kept when a live key is overwritten and set to
        ``now`` otherwise.
        """

    @abc.abstractmethod
    async def upsert_keys(
        self,
        store_name: str,
        values: Mapping[str, Any],
        policy: str,
        expires_at: datetime | None,
        now: datetime,
    ) -> int:
        """Write many keys of one store with upsert_key's rules; return how many."""

    @abc.abstractmethod
    async def find_keys(
        self, store_name: str, keys: list[str], now: datetime
    ) -> list[RawDocument]:
        """Return the documents of those keys that are live."""

    @abc.abstractmethod
    async def delete_keys(self, store_name: str, keys: list[str], now: datetime) -> int:
        """Delete those keys that are live; return how many were deleted."""

    @abc.abstractmethod
    def iter_keys(
        self, store_name: str, now: datetime, batch_size: int
    ) -> AsyncIterator[str]:
        """Yield the live keys of a store in order, ``batch_size`` per round trip."""

    @abc.abstractmethod
    async def find_key(
        self, store_name: str, key: str, now: datetime
    ) -> RawDocument | None:
        """Return the live key's document, or None."""

    @abc.abstractmethod
    async def has_key(self, store_name: str, key: str, now: datetime) -> bool:
        """Return whether the key is live, without reading its value."""

    @abc.abstractmethod
    async def delete_key(self, store_name: str, key: str, now: datetime) -> bool:
        """Delete a live key; return whether one was deleted."""

    @abc.abstractmethod
    async def update_expiry(
        self, store_name: str, key: str, expires_at: datetime, now: datetime
    ) -> RawDocument | None:
        """Set a live key's expiry, make it evictable, and return it, or None."""

    @abc.abstractmethod
    async def list_keys(self, store_name: str, now: datetime) -> list[str]:
        """Return the live keys of a store, sorted."""

    @abc.abstractmethod
    async def count_keys(self, store_name: str, now: datetime) -> int:
        """Count the live keys of a store."""

    @abc.abstractmethod
    async def insert_store_document(self, document: dict[str, Any]) -> bool:
        """Insert a store document; return False when the store already has one."""

    @abc.abstractmethod
    async def find_store_document(self, store_name: str) -> RawDocument | None:
        """Return the store's own document, or None."""

    @abc.abstractmethod
    async def summarize_live_keys(
        self, store_name: str, now: datetime
    ) -> RawDocument | None:
        """Return the earliest created_at and latest updated_at of a store's live keys.

        Returns None when the store has no live key.
        """

    @abc.abstractmethod
    async def has_store(self, store_name: str, now: datetime) -> bool:
        """Return whether the store has a store document or a live key."""

    @abc.abstractmethod
    async def list_store_names(self, now: datetime) -> list[str]:
        """Return the names of the stores that exist in this context, sorted."""

    @abc.abstractmethod
    async def delete_store(self, store_name: str) -> int:
        """Delete a store's document and keys; return how many documents went."""

    @abc.abstractmethod
    async def clear_cache(self, store_name: str | None, now: datetime) -> int:
        """Delete evictable keys, of one store or all; return how many were live."""

    @abc.abstractmethod
    async def delete_context(self) -> int:
        """Delete every store and key of this context; return the documents deleted."""

    @abc.abstractmethod
    async def find_store_documents_global(
        self, store_name: str | None
    ) -> list[RawDocument]:
        """Return the store documents of every context, of one store or all."""

    @abc.abstractmethod
    async def summarize_live_keys_global(
        self, store_name: str | None, now: datetime
    ) -> list[RawDocument]:
        """Summarize live keys per (store_name, dataset_id) across every context.

        Each entry has store_name, dataset_id, created_at and updated_at.
        """

    @abc.abstractmethod
    async def has_store_global(self, store_name: str, now: datetime) -> bool:
        """Return whether the store exists in any context."""

    @abc.abstractmethod
    async def delete_store_global(self, store_name: str) -> int:
        """Delete a store in every context; return how many documents went."""


class MongoExecutionStoreRepo(ExecutionStoreRepo):
    """ExecutionStoreRepo on an asyncio MongoDB collection.

    The collection may be Motor's, PyMongo's ``AsyncCollection`` or
    mongomock-motor's. On mongomock 4.3 with PyMongo 4.11 or later, upsert_keys
    fails once a key exists, because mongomock cannot run PyMongo's UpdateOne.
    Indexes are created on first use.

    Args:
        collection: The collection of stores and keys.
        dataset_id: The context, or None for the global context.
    """

    def __init__(
        self, collection: Any, dataset_id: ObjectId | str | None = None
    ) -> None:
        self.collection = collection
        self.dataset_id = normalize_dataset_id(dataset_id)
        self._indexes_ready = False
        self._index_lock: asyncio.Lock | None = None

    def _context(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id}

    def _key_filter(self, store_name: str, key: str) -> dict[str, Any]:
        return {"store_name": store_name, "key": key, "dataset_id": self.dataset_id}

    def _live_key_filter(
        self, store_name: str, key: str, now: datetime
    ) -> dict[str, Any]:
        return {**self._key_filter(store_name, key), **live_filter(now)}

    def _live_keys_filter(
        self, store_name: str, keys: list[str], now: datetime
    ) -> dict[str, Any]:
        return {
            **self._context(),
            "store_name": store_name,
            "key": {"$in": keys},
            **live_filter(now),
        }

    async def _ready(self) -> Any:
        if not self._indexes_ready:
            await self._ensure_indexes_once()
        return self.collection

    async def _ensure_indexes_once(self) -> None:
        if self._index_lock is None:
            self._index_lock = asyncio.Lock()
        async with self._index_lock:
            if self._indexes_ready:
                return
            done = _indexed_names(self.collection.database.client)
            if self.collection.full_name not in done:
                await ensure_indexes(self.collection)
                done.add(self.collection.full_name)
            self._indexes_ready = True

    @_translate_driver_errors
    async def upsert_key(
        self,
        store_name: str,
        key: str,
        value: Any,
        policy: str,
        expires_at: datetime | None,
        now: datetime,
    ) -> RawDocument:
        collection = await self._ready()
        document: RawDocument = await collection.find_one_and_update(
            self._key_filter(store_name, key),
            _upsert_pipeline(value, policy, expires_at, now),
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return document

    @_translate_driver_errors
    async def upsert_keys(
        self,
        store_name: str,
        values: Mapping[str, Any],
        policy: str,
        expires_at: datetime | None,
        now: datetime,
    ) -> int:
        collection = await self._ready()
        writer = _BulkWriter(
            collection, self._context(), store_name, policy, expires_at, now
        )
        items = list(values.items())
        for start in range(0, len(items), BULK_WRITE_CHUNK_KEYS):
            await writer.write(dict(items[start : start + BULK_WRITE_CHUNK_KEYS]))
        return len(items)

    @_translate_driver_errors
    async def find_keys(
        self, store_name: str, keys: list[str], now: datetime
    ) -> list[RawDocument]:
        collection = await self._ready()
        query = self._live_keys_filter(store_name, keys, now)
        documents: list[RawDocument] = await collection.find(query).to_list(None)
        return documents

    @_translate_driver_errors
    async def delete_keys(self, store_name: str, keys: list[str], now: datetime) -> int:
        collection = await self._ready()
        query = self._live_keys_filter(store_name, keys, now)
        result = await collection.delete_many(query)
        return int(result.deleted_count)

    async def iter_keys(
        self, store_name: str, now: datetime, batch_size: int
    ) -> AsyncIterator[str]:
        collection = await self._ready()
        cursor = collection.find(
            self._store_keys_filter(store_name, now),
            {"key": True, "_id": False},
            batch_size=batch_size,
        ).sort("key", ASCENDING)
        try:
            async for document in _translate_iteration(cursor):
                yield document["key"]
        finally:
            await close_resource(cursor)

    @_translate_driver_errors
    async def find_key(
        self, store_name: str, key: str, now: datetime
    ) -> RawDocument | None:
        collection = await self._ready()
        query = self._live_key_filter(store_name, key, now)
        document: RawDocument | None = await collection.find_one(query)
        return document

    @_translate_driver_errors
    async def has_key(self, store_name: str, key: str, now: datetime) -> bool:
        collection = await self._ready()
        query = self._live_key_filter(store_name, key, now)
        return await collection.find_one(query, {"_id": True}) is not None

    @_translate_driver_errors
    async def delete_key(self, store_name: str, key: str, now: datetime) -> bool:
        collection = await self._ready()
        query = self._live_key_filter(store_name, key, now)
        result = await collection.delete_one(query)
        return bool(result.deleted_count)

    @_translate_driver_errors
    async def update_expiry(
        self, store_name: str, key: str, expires_at: datetime, now: datetime
    ) -> RawDocument | None:
        collection = await self._ready()
        query = self._live_key_filter(store_name, key, now)
        changes = {"expires_at": expires_at, "policy": "evict", "updated_at": now}
        document: RawDocument | None = await collection.find_one_and_update(
            query, {"$set": changes}, return_document=ReturnDocument.AFTER
        )
        return document

    def _store_keys_filter(self, store_name: str, now: datetime) -> dict[str, Any]:
        return {
            **self._context(),
            "store_name": store_name,
            "key": {"$ne": STORE_DOCUMENT_KEY},
            **live_filter(now),
        }

    @_translate_driver_errors
    async def list_keys(self, store_name: str, now: datetime) -> list[str]:
        collection = await self._ready()
        cursor = collection.find(
            self._store_keys_filter(store_name, now), {"key": True, "_id": False}
        ).sort("key", ASCENDING)
        return [document["key"] async for document in cursor]

    @_translate_driver_errors
    async def count_keys(self, store_name: str, now: datetime) -> int:
        collection = await self._ready()
        count: int = await collection.count_documents(
            self._store_keys_filter(store_name, now)
        )
        return count

    @_translate_driver_errors
    async def insert_store_document(self, document: dict[str, Any]) -> bool:
        collection = await self._ready()
        try:
            await collection.insert_one({**document, "dataset_id": self.dataset_id})
        except DuplicateKeyError:
            return False
        return True

    @_translate_driver_errors
    async def find_store_document(self, store_name: str) -> RawDocument | None:
        collection = await self._ready()
        document: RawDocument | None = await collection.find_one(
            self._key_filter(store_name, STORE_DOCUMENT_KEY)
        )
        return document

    @_translate_driver_errors
    async def summarize_live_keys(
        self, store_name: str, now: datetime
    ) -> RawDocument | None:
        collection = await self._ready()
        match = self._store_keys_filter(store_name, now)
        summaries = await aggregate(collection, _summary_pipeline(match))
        return summaries[0] if summaries else None

    @_translate_driver_errors
    async def has_store(self, store_name: str, now: datetime) -> bool:
        collection = await self._ready()
        query = {
            **self._context(),
            "store_name": store_name,
            **_existing_store_filter(now),
        }
        return await collection.find_one(query, {"_id": True}) is not None

    @_translate_driver_errors
    async def list_store_names(self, now: datetime) -> list[str]:
        collection = await self._ready()
        context = self._context()
        names = set(await self._store_names_of_context(collection))

        # Only a store with expired keys can lack a live key. Expired keys are
        # few, because the TTL monitor removes them, so checking just those
        # stores keeps the cost tied to the number of stores, not of keys.
        expired = {**context, "expires_at": {"$lte": now}}
        suspects = await collection.distinct("store_name", expired)
        if suspects:
            existing = {**context, "store_name": {"$in": suspects}, **live_filter(now)}
            alive = await collection.distinct("store_name", existing)
            names -= set(suspects) - set(alive)
        return sorted(names)

    async def _store_names_of_context(self, collection: Any) -> list[str]:
        """Return the names of the stores with documents in this context.

        MongoDB reads a dataset context's names from the context index alone.
        It cannot do that for ``dataset_id: null``: null and missing fields share
        index entries, so it would fetch every document of the global context.
        Instead, for each store name, the smallest dataset_id in the
        (store_name, dataset_id) index is null exactly when the store has
        documents in the global context, and MongoDB reads those first
        entries alone, one per store name.
        """
        if self.dataset_id is not None:
            names: list[str] = await collection.distinct("store_name", self._context())
            return names
        firsts = await aggregate(collection, _GLOBAL_STORE_NAMES)
        return [entry["_id"] for entry in firsts if isinstance(entry["_id"], str)]

    @_translate_driver_errors
    async def delete_store(self, store_name: str) -> int:
        collection = await self._ready()
        result = await collection.delete_many(
            {**self._context(), "store_name": store_name}
        )
        return int(result.deleted_count)

    @_translate_driver_errors
    async def clear_cache(self, store_name: str | None, now: datetime) -> int:
        collection = await self._ready()
        query = {**self._context(), **_evictable_filter()}
        if store_name is not None:
            query["store_name"] = store_name
        live = await collection.delete_many({"$and": [query, live_filter(now)]})
        # Expired evictable keys are already invisible; delete them too rather
        # than wait for the TTL monitor, but do not count them.
        await collection.delete_many({"$and": [query, {"expires_at": {"$lte": now}}]})
        return int(live.deleted_count)

    @_translate_driver_errors
    async def delete_context(self) -> int:
        collection = await self._ready()
        result = await collection.delete_many(self._context())
        return int(result.deleted_count)

    @_translate_driver_errors
    async def find_store_documents_global(
        self, store_name: str | None
    ) -> list[RawDocument]:
        collection = await self._ready()
        query: dict[str, Any] = {"key": STORE_DOCUMENT_KEY}
        if store_name is not None:
            query["store_name"] = store_name
        # The sort lets MongoDB read the partial index of store documents
        # instead of scanning the collection.
        cursor = collection.find(query).sort(STORE_DOCUMENTS_INDEX_KEYS)
        return [document async for document in cursor]

    @_translate_driver_errors
    async def summarize_live_keys_global(
        self, store_name: str | None, now: datetime
    ) -> list[RawDocument]:
        collection = await self._ready()
        match: dict[str, Any] = {"key": {"$ne": STORE_DOCUMENT_KEY}, **live_filter(now)}
        if store_name is not None:
            match["store_name"] = store_name
        group_id = {
            "store_name": "$store_name",
            "dataset_id": {"$ifNull": ["$dataset_id", None]},
        }
        summaries = await aggregate(collection, _summary_pipeline(match, group_id))
        return [{**summary["_id"], **summary} for summary in summaries]

    @_translate_driver_errors
    async def has_store_global(self, store_name: str, now: datetime) -> bool:
        collection = await self._ready()
        query = {"store_name": store_name, **_existing_store_filter(now)}
        return await collection.find_one(query, {"_id": True}) is not None

    @_translate_driver_errors
    async def delete_store_global(self, store_name: str) -> int:
        collection = await self._ready()
        result = await collection.delete_many({"store_name": store_name})
        return int(result.deleted_count)


class _BulkWriter:
    """The writer of one set_keys call's keys, a chunk at a time.

    In bulk, MongoDB inserts a key or updates it by ``_id`` at a fraction of
    the cost of an upsert by the unique key (figures in docs/performance.md).
    So a chunk costs one read of the keys' state, then one insert of the new
    keys and one update of the live ones. Keys that exist but are not live,
    and keys that another writer created or deleted after the read, take
    upsert_key's update instead, which decides created_at on the server.

    NOTE: the update by ``_id`` does not check liveness again, because any
    condition beside ``_id`` doubles its cost. A key that another writer made
    expired (by our clock) between the read and the update keeps its
    created_at, where set_key would reset it. Only a writer whose clock is
    behind by more than its TTL, or a tool writing a past expiry, can do that.

    Args:
        collection: The store collection.
        context: The query part that selects the repository's context.
        store_name: The store written to.
        policy: The policy of every key written.
        expires_at: The expiry of every key written, or None.
        now: The time of the write.
    """

    def __init__(
        self,
        collection: Any,
        context: dict[str, Any],
        store_name: str,
        policy: str,
        expires_at: datetime | None,
        now: datetime,
    ) -> None:
        self.collection = collection
        self.context = context
        self.store_name = store_name
        self.policy = policy
        self.expires_at = expires_at
        self.now = now
        self.fields = {"policy": policy, "expires_at": expires_at, "updated_at": now}

    def _key_filter(self, key: str) -> dict[str, Any]:
        return {"store_name": self.store_name, "key": key, **self.context}

    async def write(self, values: dict[str, Any]) -> None:
        """Write one chunk of keys."""
        live_ids, stale = await self._read_state(list(values))
        new = {
            key: value
            for key, value in values.items()
            if key not in live_ids and key not in stale
        }

        redo = list(stale)
        redo += await self._insert_new(new)
        redo += await self._update_live(
            {live_ids[key]: (key, values[key]) for key in live_ids}
        )
        if redo:
            await self._upsert_by_key({key: values[key] for key in redo})

    async def _read_state(
        self, keys: list[str]
    ) -> tuple[dict[str, ObjectId], set[str]]:
        """Return the _id of each live key, and the keys that exist but are not live.

        A document without created_at counts as not live, so that the upsert
        gives it one.
        """
        query = {"store_name": self.store_name, "key": {"$in": keys}, **self.context}
        projection = {"key": True, "created_at": True, "expires_at": True}
        live_ids: dict[str, ObjectId] = {}
        stale: set[str] = set()
        for document in await self.collection.find(query, projection).to_list(None):
            if _has_live_created_at(document, self.now):
                live_ids[document["key"]] = document["_id"]
            else:
                stale.add(document["key"])
        return live_ids, stale

    async def _insert_new(self, values: dict[str, Any]) -> list[str]:
        """Insert keys that did not exist; return those another writer created first."""
        if not values:
            return []
        documents = [
            {
                **self._key_filter(key),
                "value": value,
                **self.fields,
                "created_at": self.now,
            }
            for key, value in values.items()
        ]
        try:
            await self.collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            return _keys_of_duplicates(exc, list(values))
        return []

    async def _update_live(self, live: dict[ObjectId, tuple[str, Any]]) -> list[str]:
        """Update live keys by _id; return them all if one was deleted meanwhile."""
        if not live:
            return []
        requests = [
            UpdateOne({"_id": key_id}, {"$set": {"value": value, **self.fields}})
            for key_id, (_, value) in live.items()
        ]
        result = await self.collection.bulk_write(requests, ordered=False)
        if result.matched_count == len(requests):
            return []
        return [key for key, _ in live.values()]

    async def _upsert_by_key(self, values: dict[str, Any]) -> None:
        """Write each key with upsert_key's update, in one bulk write."""
        requests = [
            UpdateOne(
                self._key_filter(key),
                _upsert_pipeline(value, self.policy, self.expires_at, self.now),
                upsert=True,
            )
            for key, value in values.items()
        ]
        await self.collection.bulk_write(requests, ordered=False)


def _has_live_created_at(document: RawDocument, now: datetime) -> bool:
    """Return whether a key's document is live at ``now`` and has a created_at."""
    if document.get("created_at") is None:
        return False
    expires_at = document.get("expires_at")
    if expires_at is None:
        return True
    # Like the live filter of reads, an expires_at that is not a date is expired.
    return isinstance(expires_at, datetime) and to_utc_millis(expires_at) > now


def _keys_of_duplicates(error: BulkWriteError, keys: list[str]) -> list[str]:
    """Return the keys that hit the unique index; re-raise any other error.

    A write concern error, alone or beside duplicates, is re-raised too.
    """
    failures = error.details.get("writeErrors", [])
    others = [
        failure for failure in failures if failure.get("code") != _DUPLICATE_KEY_CODE
    ]
    if others or not failures or error.details.get("writeConcernErrors"):
        raise error
    return [keys[failure["index"]] for failure in failures]


def _upsert_pipeline(
    value: Any, policy: str, expires_at: datetime | None, now: datetime
) -> list[dict[str, Any]]:
    """Return the update that writes a key and keeps created_at of a live key."""
    # Like the live filter of reads, an expires_at that is not a date is
    # expired. Timestamps and the other types that sort after dates in BSON
    # order are above the latest date. mongomock has no $type to test with.
    expires_later = {
        "$and": [
            {"$gt": ["$expires_at", now]},
            {"$lte": ["$expires_at", _LATEST_DATE]},
        ]
    }
    was_live = {
        "$and": [
            {"$gt": ["$created_at", None]},
            {"$or": [{"$lte": ["$expires_at", None]}, expires_later]},
        ]
    }
    stage = {
        # $literal keeps dict keys that start with "$" from being read as
        # expressions of the pipeline.
        "value": {"$literal": value},
        "policy": policy,
        "expires_at": expires_at,
        "updated_at": now,
        "created_at": {"$cond": [was_live, "$created_at", now]},
    }
    return [{"$set": stage}]


_GLOBAL_STORE_NAMES: list[dict[str, Any]] = [
    {"$sort": {"store_name": 1, "dataset_id": 1}},
    {"$group": {"_id": "$store_name", "dataset_id": {"$first": "$dataset_id"}}},
    # A condition on _id here would be moved before the $group by MongoDB and
    # cost the DISTINCT_SCAN, so documents without a store_name, which group
    # under None, are left out afterwards.
    {"$match": {"dataset_id": None}},
    {"$project": {"_id": True}},
]


def _summary_pipeline(
    match: dict[str, Any], group_id: Any = None
) -> list[dict[str, Any]]:
    return [
        {"$match": match},
        {
            "$group": {
                "_id": group_id,
                "created_at": {"$min": "$created_at"},
                "updated_at": {"$max": "$updated_at"},
                "keys": {"$sum": 1},
            }
        },
        # mongomock returns one empty group for an empty input; MongoDB none.
        {"$match": {"keys": {"$gt": 0}}},
    ]


@_translate_driver_errors
async def ensure_indexes(collection: Any) -> None:
    """Create the collection's indexes, converging a TTL index that differs.

    Safe to run again and from several processes at once: an index that exists
    with the same keys is left as it is, except that an ``expires_at`` index
    whose ``expireAfterSeconds`` is not 0 is changed to 0 with collMod.
    """
    existing = await collection.index_information()
    by_keys = {
        tuple(tuple(pair) for pair in spec["key"]): (name, spec)
        for name, spec in existing.items()
    }

    unique_keys = tuple(UNIQUE_INDEX_KEYS)
    if unique_keys not in by_keys:
        await collection.create_index(
            UNIQUE_INDEX_KEYS, name=UNIQUE_INDEX_NAME, unique=True
        )
    context_keys = tuple(CONTEXT_INDEX_KEYS)
    if context_keys not in by_keys:
        await collection.create_index(CONTEXT_INDEX_KEYS, name=CONTEXT_INDEX_NAME)
    store_contexts_keys = tuple(STORE_CONTEXTS_INDEX_KEYS)
    if store_contexts_keys not in by_keys:
        await collection.create_index(
            STORE_CONTEXTS_INDEX_KEYS, name=STORE_CONTEXTS_INDEX_NAME
        )
    store_documents_keys = tuple(STORE_DOCUMENTS_INDEX_KEYS)
    if store_documents_keys not in by_keys:
        await collection.create_index(
            STORE_DOCUMENTS_INDEX_KEYS,
            name=STORE_DOCUMENTS_INDEX_NAME,
            partialFilterExpression={"key": STORE_DOCUMENT_KEY},
        )

    expiry = by_keys.get(tuple(EXPIRY_INDEX_KEYS))
    if expiry is None:
        await collection.create_index(
            EXPIRY_INDEX_KEYS, name=EXPIRY_INDEX_NAME, expireAfterSeconds=0
        )
    elif expiry[1].get("expireAfterSeconds") != 0:
        logger.info(
            "Changing expireAfterSeconds of index %s on %s to 0",
            expiry[0],
            collection.full_name,
        )
        await collection.database.command(
            "collMod",
            collection.name,
            index={"name": expiry[0], "expireAfterSeconds": 0},
        )
