"""The blocking twin of ExecutionStoreService, for scripts.

Each call runs the async service's coroutine on a private event loop, which
the calling thread drives itself when it can (see ``_loop.py``). That loop,
not the caller's, owns the MongoDB client, so the wrapper works in a plain
script, inside a running event loop (a Jupyter cell, an ``async def`` that
calls sync code) and from several threads at once. The methods are one-line
delegates, because the rules live in the async service.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import (
    AsyncIterator,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
)
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from bson import ObjectId

from ._config import Settings
from ._errors import ServiceClosedError
from ._loop import CallerDrivenLoop
from ._models import KeyDocument, StoreDocument
from ._repository import ExecutionStoreRepo
from ._service import Clock, ExecutionStoreService

_T = TypeVar("_T")


async def _next_batch(keys: AsyncIterator[str], size: int) -> list[str]:
    batch: list[str] = []
    async for key in keys:
        batch.append(key)
        if len(batch) == size:
            break
    return batch


_sync_services: weakref.WeakSet[SyncExecutionStoreService] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for service in list(_sync_services):
        service._forget_after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)


class SyncExecutionStoreService:
    """ExecutionStoreService with plain blocking methods.

    Takes the same arguments as ExecutionStoreService and offers the same
    methods; see there for what each does. Close it with ``close()`` or use it
    as a context manager; a call after ``close()`` raises ServiceClosedError.

    Example:
        >>> with SyncExecutionStoreService(dataset_id=None) as store:
        ...     store.set_key("runs", "last", {"ok": True}, ttl=3600)
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
        self._service = ExecutionStoreService(
            repo, dataset_id, collection_name, settings=settings, clock=clock
        )
        self._loop = CallerDrivenLoop()
        self._closed = False
        _sync_services.add(self)

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coroutine.close()
            raise ServiceClosedError("the service is closed; create a new one")
        try:
            return self._loop.run(coroutine)
        except KeyboardInterrupt:
            self._service._discard_connection()
            raise

    def _forget_after_fork(self) -> None:
        self._loop.forget()
        self._service._forget_connection()

    def close(self) -> None:
        """Close the client and the private loop; closing twice is allowed."""
        if self._closed:
            return
        self._closed = True
        self._loop.run(self._service.close())
        self._loop.stop()

    def __enter__(self) -> SyncExecutionStoreService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def dataset_id(self) -> ObjectId | None:
        """The context: the dataset's ObjectId, or None for the global context."""
        return self._service.dataset_id

    def create_store(
        self,
        store_name: str,
        metadata: dict[str, Any] | None = None,
        policy: str = "persist",
        exist_ok: bool = False,
    ) -> StoreDocument:
        return self._run(
            self._service.create_store(store_name, metadata, policy, exist_ok)
        )

    def get_store(self, store_name: str) -> StoreDocument | None:
        return self._run(self._service.get_store(store_name))

    def has_store(self, store_name: str) -> bool:
        return self._run(self._service.has_store(store_name))

    def list_stores(self) -> list[str]:
        return self._run(self._service.list_stores())

    def count_stores(self) -> int:
        return self._run(self._service.count_stores())

    def delete_store(self, store_name: str) -> StoreDocument | None:
        return self._run(self._service.delete_store(store_name))

    def cleanup(self) -> None:
        return self._run(self._service.cleanup())

    def set_key(
        self,
        store_name: str,
        key: str,
        value: Any,
        ttl: float | timedelta | None = None,
        policy: str = "persist",
    ) -> KeyDocument:
        return self._run(self._service.set_key(store_name, key, value, ttl, policy))

    def set_cache_key(
        self,
        store_name: str,
        key: str,
        value: Any,
        ttl: float | timedelta | None = None,
    ) -> KeyDocument:
        return self._run(self._service.set_cache_key(store_name, key, value, ttl))

    def get_key(self, store_name: str, key: str) -> KeyDocument | None:
        return self._run(self._service.get_key(store_name, key))

    def has_key(self, store_name: str, key: str) -> bool:
        return self._run(self._service.has_key(store_name, key))

    def delete_key(self, store_name: str, key: str) -> bool:
        return self._run(self._service.delete_key(store_name, key))

    def update_ttl(
        self, store_name: str, key: str, ttl: float | timedelta
    ) -> KeyDocument | None:
        return self._run(self._service.update_ttl(store_name, key, ttl))

    def get_keys(self, store_name: str, keys: Iterable[str]) -> dict[str, KeyDocument]:
        return self._run(self._service.get_keys(store_name, keys))

    def set_keys(
        self,
        store_name: str,
        values: Mapping[str, Any],
        ttl: float | timedelta | None = None,
        policy: str = "persist",
    ) -> int:
        return self._run(self._service.set_keys(store_name, values, ttl, policy))

    def delete_keys(self, store_name: str, keys: Iterable[str]) -> int:
        return self._run(self._service.delete_keys(store_name, keys))

    def iter_keys(
        self, store_name: str, batch_size: int = 1000
    ) -> Generator[str, None, None]:
        """Yield the live keys of the store in order, ``batch_size`` per hop."""
        keys = self._service.iter_keys(store_name, batch_size)
        try:
            while batch := self._run(_next_batch(keys, batch_size)):
                yield from batch
        finally:
            if not self._closed:
                self._run(keys.aclose())

    def list_keys(self, store_name: str) -> list[str]:
        return self._run(self._service.list_keys(store_name))

    def count_keys(self, store_name: str) -> int:
        return self._run(self._service.count_keys(store_name))

    def clear_cache(self, store_name: str | None = None) -> int:
        return self._run(self._service.clear_cache(store_name))

    def list_stores_global(self) -> list[StoreDocument]:
        return self._run(self._service.list_stores_global())

    def count_stores_global(self) -> int:
        return self._run(self._service.count_stores_global())

    def has_store_global(self, store_name: str) -> bool:
        return self._run(self._service.has_store_global(store_name))

    def delete_store_global(self, store_name: str) -> int:
        return self._run(self._service.delete_store_global(store_name))
