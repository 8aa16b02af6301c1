"""The blocking twin of ExecutionStoreService, for scripts.

Each call runs the async service's coroutine on a private event loop in a
background thread and waits for it. That loop, not the caller's, owns the
MongoDB client, so the wrapper works in a plain script, inside a running
event loop (a Jupyter cell, an ``async def`` that calls sync code) and from
several threads at once. The methods are one-line delegates; the rules live in
the async service.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from bson import ObjectId

from ._config import Settings
from ._errors import ExecutionStoreError, ServiceClosedError
from ._models import KeyDocument, StoreDocument
from ._repository import ExecutionStoreRepo
from ._service import Clock, ExecutionStoreService

_T = TypeVar("_T")


class LoopThread:
    """A private event loop running in a daemon thread, started on first use.

    After ``os.fork()`` the child starts a loop of its own on its next call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        _loop_threads.add(self)

    @property
    def started(self) -> bool:
        """Whether the loop thread is running."""
        return self._loop is not None

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the loop and return its result.

        An interrupt such as Ctrl-C while waiting cancels the coroutine.
        """
        loop = self._start()
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise ExecutionStoreError(
                "a SyncExecutionStoreService method was called from its own event "
                "loop thread; await the ExecutionStoreService method instead"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="execstore-loop", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def stop(self) -> None:
        """Stop the loop and wait for its thread; it restarts on the next run."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join()
        loop.close()

    def forget(self) -> None:
        """Drop the loop without stopping it: a forked child has no such thread."""
        self._loop = self._thread = None
        self._lock = threading.Lock()


async def _next_batch(keys: AsyncIterator[str], size: int) -> list[str]:
    batch: list[str] = []
    async for key in keys:
        batch.append(key)
        if len(batch) == size:
            break
    return batch


_loop_threads: weakref.WeakSet[LoopThread] = weakref.WeakSet()
_sync_services: weakref.WeakSet[SyncExecutionStoreService] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for service in list(_sync_services):
        service._forget_after_fork()


def _stop_at_exit() -> None:
    for loop_thread in list(_loop_threads):
        loop_thread.stop()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_stop_at_exit)


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
        self._loop_thread = LoopThread()
        self._closed = False
        _sync_services.add(self)

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coroutine.close()
            raise ServiceClosedError("the service is closed; create a new one")
        return self._loop_thread.run(coroutine)

    def _forget_after_fork(self) -> None:
        self._loop_thread.forget()
        self._service._forget_connection()

    def close(self) -> None:
        """Close the client and stop the loop thread; closing twice is allowed."""
        if self._closed:
            return
        self._closed = True
        if self._loop_thread.started:
            self._loop_thread.run(self._service.close())
            self._loop_thread.stop()
        else:
            asyncio.run(self._service.close())

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

    def iter_keys(self, store_name: str, batch_size: int = 1000) -> Iterator[str]:
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
