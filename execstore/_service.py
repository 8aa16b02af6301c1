"""The asynchronous execution store service: the contract's rules live here.

Every public method validates all of its arguments before it touches the
database, reads the clock once, and calls the repository of its context.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId

from ._config import Settings
from ._connection import DefaultConnection
from ._errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ServiceClosedError,
    StoreExistsError,
)
from ._models import (
    STORE_DOCUMENT_KEY,
    KeyDocument,
    KeyPolicy,
    StoreDocument,
    implicit_store_document,
    key_document_from_raw,
    store_document_from_raw,
    to_utc_millis,
)
from ._repository import BULK_WRITE_CHUNK_KEYS, ExecutionStoreRepo
from ._validation import (
    normalize_dataset_id,
    validate_batch_size,
    validate_collection_name,
    validate_key,
    validate_keys,
    validate_mapping,
    validate_metadata,
    validate_name,
    validate_policy,
    validate_ttl,
    validate_value,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_MILLISECOND = timedelta(milliseconds=1)


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def _resolve_context(
    repo: ExecutionStoreRepo | None, dataset_id: object
) -> ObjectId | None:
    context = normalize_dataset_id(dataset_id)
    if repo is None or dataset_id is None:
        return repo.dataset_id if repo is not None else context
    if repo.dataset_id != context:
        raise InvalidArgumentError(
            "dataset_id",
            "differs from the dataset_id of the repo; pass only one of them",
        )
    return context


def _check_constructor_types(repo: object, settings: object, clock: object) -> None:
    if repo is not None and not isinstance(repo, ExecutionStoreRepo):
        raise InvalidArgumentTypeError("repo", "an ExecutionStoreRepo or None", repo)
    if settings is not None and not isinstance(settings, Settings):
        raise InvalidArgumentTypeError(
            "settings", "an execstore.Settings or None", settings
        )
    if clock is not None and not callable(clock):
        raise InvalidArgumentTypeError(
            "clock", "a callable returning a datetime", clock
        )


class ExecutionStoreService:
    """Named stores of keys for one context: a dataset, or the global context.

    Every method but the ``*_global`` ones touches only this context. Keys
    either persist until deleted or are evictable. A key with a TTL expires at
    an exact time and is invisible to every read from then on.

    Args:
        repo: The storage to use. Without it, the service connects to MongoDB
            with ``settings`` on the first call.
        dataset_id: The context: an ObjectId, its 24-character hex string, or
            None for the global context. With ``repo``, it must match the
            repo's context or be None.
        collection_name: The collection to use when the service connects by
            itself; ignored with ``repo``.
        settings: Connection settings; by default read from the environment.
        clock: Returns the current aware UTC time; every expiry decision uses
            it. Tests pass a fake clock.
    """

    def __init__(
        self,
        repo: ExecutionStoreRepo | None = None,
        dataset_id: ObjectId | str | None = None,
        collection_name: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
    ) -> None:
        _check_constructor_types(repo, settings, clock)
        self._dataset_id = _resolve_context(repo, dataset_id)
        self._clock = clock or utc_now
        self._repo = repo
        self._connection: DefaultConnection | None = None
        if repo is None:
            settings = settings or Settings.from_env()
            name = settings.collection_name
            if collection_name is not None:
                name = validate_collection_name(collection_name, settings.database_name)
            self._connection = DefaultConnection(settings, name, self._dataset_id)
        self._closed = False

    @property
    def dataset_id(self) -> ObjectId | None:
        """The context: the dataset's ObjectId, or None for the global context."""
        return self._dataset_id

    async def _get_repo(self) -> ExecutionStoreRepo:
        if self._closed:
            raise ServiceClosedError("the service is closed; create a new one")
        if self._repo is not None:
            return self._repo
        assert self._connection is not None
        return await self._connection.repo()

    def _now(self) -> datetime:
        now = self._clock()
        if not isinstance(now, datetime):
            raise InvalidArgumentTypeError(
                "clock", "a callable returning a datetime", now
            )
        return to_utc_millis(now)

    async def close(self) -> None:
        """Close the client that the service created; further calls raise.

        A repo passed in by the caller is left open. Closing twice is allowed.
        """
        self._closed = True
        if self._connection is not None:
            await self._connection.close()

    def _forget_connection(self) -> None:
        if self._connection is not None:
            self._connection.forget()

    def _discard_connection(self) -> None:
        if self._connection is not None:
            self._connection.discard()

    # Stores of this context.

    async def create_store(
        self,
        store_name: str,
        metadata: dict[str, Any] | None = None,
        policy: str = "persist",
        exist_ok: bool = False,
    ) -> StoreDocument:
        """Create a store document and return the store.

        Args:
            store_name: The store's name.
            metadata: Any BSON-encodable dict to keep with the store.
            policy: The store's policy, ``"persist"`` or ``"evict"``.
            exist_ok: Return the existing store unchanged instead of raising.

        Raises:
            StoreExistsError: The store has a store document and ``exist_ok`` is
                False. A store that exists only through its keys gets one.
        """
        validate_name(store_name, "store_name")
        store_metadata = validate_metadata(metadata, store_name)
        store_policy = validate_policy(policy)
        if not isinstance(exist_ok, bool):
            raise InvalidArgumentTypeError("exist_ok", "a bool", exist_ok)
        repo = await self._get_repo()

        now = self._now()
        document = {
            "store_name": store_name,
            "key": STORE_DOCUMENT_KEY,
            "value": store_metadata,
            "policy": store_policy.value,
            "created_at": now,
            "updated_at": now,
            "expires_at": None,
        }
        if await repo.insert_store_document(document):
            return store_document_from_raw({**document, "dataset_id": self._dataset_id})
        if not exist_ok:
            raise StoreExistsError(store_name)

        existing = await repo.find_store_document(store_name)
        if existing is None:  # deleted since the insert failed; create it again
            return await self.create_store(store_name, metadata, policy, exist_ok)
        return store_document_from_raw(existing)

    async def get_store(self, store_name: str) -> StoreDocument | None:
        """Return the store, or None when it does not exist in this context.

        A store that exists only through its live keys has ``metadata == {}``,
        the earliest ``created_at`` and the latest ``updated_at`` of its keys.
        """
        validate_name(store_name, "store_name")
        repo = await self._get_repo()

        document = await repo.find_store_document(store_name)
        if document is not None:
            return store_document_from_raw(document)
        summary = await repo.summarize_live_keys(store_name, self._now())
        if summary is None:
            return None
        return implicit_store_document(store_name, self._dataset_id, summary)

    async def has_store(self, store_name: str) -> bool:
        """Return whether the store has a store document or a live key here."""
        validate_name(store_name, "store_name")
        repo = await self._get_repo()
        return await repo.has_store(store_name, self._now())

    async def list_stores(self) -> list[str]:
        """Return the names of this context's stores, sorted."""
        repo = await self._get_repo()
        return await repo.list_store_names(self._now())

    async def count_stores(self) -> int:
        """Count this context's stores; always ``len(list_stores())``."""
        return len(await self.list_stores())

    async def delete_store(self, store_name: str) -> StoreDocument | None:
        """Delete the store and all its keys in this context.

        Returns:
            The store as it was, or None when it did not exist.
        """
        store = await self.get_store(store_name)
        repo = await self._get_repo()
        await repo.delete_store(store_name)
        return store

    async def cleanup(self) -> None:
        """Delete every store and key of this context."""
        repo = await self._get_repo()
        deleted = await repo.delete_context()
        logger.debug("Deleted %d documents of context %s", deleted, self._dataset_id)

    # Keys of this context.

    async def set_key(
        self,
        store_name: str,
        key: str,
        value: Any,
        ttl: float | timedelta | None = None,
        policy: str = "persist",
    ) -> KeyDocument:
        """Write a key, replacing its value, expiry and policy, like Redis SET.

        Args:
            store_name: The store's name; the store appears if it did not exist.
            key: The key; ``"__store__"`` is reserved.
            value: Any BSON-encodable value; tuples are stored as lists.
            ttl: Seconds (int or float) or a timedelta until the key expires, up
                to 100 years; None keeps the key until it is deleted.
            policy: ``"persist"`` or ``"evict"``. A key with a TTL is always
                ``"evict"``.

        Returns:
            The stored key. ``created_at`` is kept when a live key is
            overwritten; ``updated_at`` is the time of this write.
        """
        validate_name(store_name, "store_name")
        validate_key(key)
        duration = validate_ttl(ttl)
        key_policy = validate_policy(policy)
        names_bytes = len(store_name.encode()) + len(key.encode())
        validate_value(value, "value", names_bytes)
        if duration is not None:
            key_policy = KeyPolicy.EVICT
        repo = await self._get_repo()

        now = self._now()
        raw = await repo.upsert_key(
            store_name, key, value, key_policy.value, self._expiry(now, duration), now
        )
        return key_document_from_raw(raw)

    async def set_cache_key(
        self,
        store_name: str,
        key: str,
        value: Any,
        ttl: float | timedelta | None = None,
    ) -> KeyDocument:
        """Write an evictable key: ``set_key`` with ``policy="evict"``."""
        return await self.set_key(store_name, key, value, ttl, KeyPolicy.EVICT.value)

    @staticmethod
    def _expiry(now: datetime, duration: timedelta | None) -> datetime | None:
        # Rounded up to the millisecond MongoDB stores, so that any positive TTL
        # expires strictly after the write.
        if duration is None:
            return None
        exact = now + duration
        stored = to_utc_millis(exact)
        return stored if stored == exact else stored + _MILLISECOND

    async def get_key(self, store_name: str, key: str) -> KeyDocument | None:
        """Return the live key, or None when it is missing or expired."""
        validate_name(store_name, "store_name")
        validate_key(key)
        repo = await self._get_repo()
        raw = await repo.find_key(store_name, key, self._now())
        return None if raw is None else key_document_from_raw(raw)

    async def has_key(self, store_name: str, key: str) -> bool:
        """Return whether the key is live; a stored None value counts."""
        validate_name(store_name, "store_name")
        validate_key(key)
        repo = await self._get_repo()
        return await repo.has_key(store_name, key, self._now())

    async def delete_key(self, store_name: str, key: str) -> bool:
        """Delete the key; return True only when a live key was deleted."""
        validate_name(store_name, "store_name")
        validate_key(key)
        repo = await self._get_repo()
        return await repo.delete_key(store_name, key, self._now())

    async def update_ttl(
        self, store_name: str, key: str, ttl: float | timedelta
    ) -> KeyDocument | None:
        """Make a live key expire ``ttl`` from now and make it evictable.

        Returns:
            The updated key, or None when the key is missing or expired, in
            which case nothing is written.
        """
        validate_name(store_name, "store_name")
        validate_key(key)
        duration = validate_ttl(ttl)
        if duration is None:
            raise InvalidArgumentError("ttl", "must be a positive duration, not None")
        repo = await self._get_repo()

        now = self._now()
        expires_at = self._expiry(now, duration)
        assert expires_at is not None
        raw = await repo.update_expiry(store_name, key, expires_at, now)
        return None if raw is None else key_document_from_raw(raw)

    async def get_keys(
        self, store_name: str, keys: Iterable[str]
    ) -> dict[str, KeyDocument]:
        """Return the live ones of ``keys``, by key, in one round trip."""
        validate_name(store_name, "store_name")
        key_list = validate_keys(keys)
        repo = await self._get_repo()
        raws = await repo.find_keys(store_name, key_list, self._now())
        return {raw["key"]: key_document_from_raw(raw) for raw in raws}

    async def set_keys(
        self,
        store_name: str,
        values: Mapping[str, Any],
        ttl: float | timedelta | None = None,
        policy: str = "persist",
    ) -> int:
        """Write many keys of one store with ``set_key``'s rules.

        Every key gets the same ``ttl`` and ``policy``. Nothing is written when
        any key or value is invalid. The keys are written 1,000 at a time, in
        two to four round trips each (more for values of many MiB), and each
        1,000 take their own clock reading for ``updated_at`` and the expiry.
        The call is not a transaction.

        Returns:
            How many keys were written.
        """
        validate_name(store_name, "store_name")
        entries = validate_mapping(values, store_name)
        duration = validate_ttl(ttl)
        key_policy = validate_policy(policy)
        if duration is not None:
            key_policy = KeyPolicy.EVICT
        repo = await self._get_repo()

        items = list(entries.items())
        for start in range(0, len(items), BULK_WRITE_CHUNK_KEYS):
            chunk = dict(items[start : start + BULK_WRITE_CHUNK_KEYS])
            now = self._now()
            expires_at = self._expiry(now, duration)
            await repo.upsert_keys(store_name, chunk, key_policy.value, expires_at, now)
        return len(items)

    async def delete_keys(self, store_name: str, keys: Iterable[str]) -> int:
        """Delete ``keys`` in one round trip; return how many live keys went."""
        validate_name(store_name, "store_name")
        key_list = validate_keys(keys)
        repo = await self._get_repo()
        return await repo.delete_keys(store_name, key_list, self._now())

    async def iter_keys(
        self, store_name: str, batch_size: int = 1000
    ) -> AsyncGenerator[str, None]:
        """Yield the live keys of the store in order, streaming from MongoDB.

        Memory stays flat however large the store is: the cursor fetches
        ``batch_size`` keys per round trip. Liveness is judged at the start.
        """
        validate_name(store_name, "store_name")
        validate_batch_size(batch_size)
        repo = await self._get_repo()
        async for key in repo.iter_keys(store_name, self._now(), batch_size):
            yield key

    async def list_keys(self, store_name: str) -> list[str]:
        """Return the live keys of the store, sorted."""
        validate_name(store_name, "store_name")
        repo = await self._get_repo()
        return await repo.list_keys(store_name, self._now())

    async def count_keys(self, store_name: str) -> int:
        """Count the live keys of the store."""
        validate_name(store_name, "store_name")
        repo = await self._get_repo()
        return await repo.count_keys(store_name, self._now())

    async def clear_cache(self, store_name: str | None = None) -> int:
        """Delete the evictable keys of this context, or of one of its stores.

        Store documents and persistent keys stay. A key is evictable when its
        policy is ``"evict"``, or when it has an expiry and no policy field.

        Returns:
            How many live keys were deleted.
        """
        if store_name is not None:
            validate_name(store_name, "store_name")
        repo = await self._get_repo()
        return await repo.clear_cache(store_name, self._now())

    # Every context.

    async def list_stores_global(self) -> list[StoreDocument]:
        """Return one StoreDocument per (store_name, dataset_id) that exists.

        Sorted by store name, then with the global context first.
        """
        repo = await self._get_repo()
        return await self._stores_global(repo, None)

    async def count_stores_global(self) -> int:
        """Count the stores of every context; ``len(list_stores_global())``."""
        return len(await self.list_stores_global())

    async def has_store_global(self, store_name: str) -> bool:
        """Return whether the store exists in any context."""
        validate_name(store_name, "store_name")
        repo = await self._get_repo()
        return await repo.has_store_global(store_name, self._now())

    async def delete_store_global(self, store_name: str) -> int:
        """Delete the store and its keys in every context.

        Returns:
            How many (store_name, dataset_id) stores existed and were deleted.
        """
        validate_name(store_name, "store_name")
        repo = await self._get_repo()
        stores = await self._stores_global(repo, store_name)
        await repo.delete_store_global(store_name)
        return len(stores)

    async def _stores_global(
        self, repo: ExecutionStoreRepo, store_name: str | None
    ) -> list[StoreDocument]:
        now = self._now()
        stores = {}
        for raw in await repo.find_store_documents_global(store_name):
            store = store_document_from_raw(raw)
            stores[(store.store_name, store.dataset_id)] = store
        for summary in await repo.summarize_live_keys_global(store_name, now):
            context = (summary["store_name"], summary.get("dataset_id"))
            if context not in stores:
                stores[context] = implicit_store_document(*context, summary)
        return sorted(stores.values(), key=_global_order)


def _global_order(store: StoreDocument) -> tuple[str, str]:
    return (store.store_name, "" if store.dataset_id is None else str(store.dataset_id))
