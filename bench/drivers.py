"""Clients of the two asyncio drivers, made by hand for the baseline side.

``LoopThreadClient`` drives an asyncio client from blocking code through a
private event loop in a thread, the usual way to call asyncio code from
blocking code. The sync wrapper is measured against it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

DRIVERS = ("motor", "pymongo")

_T = TypeVar("_T")


def create_async_client(driver: str, uri: str) -> Any:
    """Create a Motor or PyMongo asyncio client with the service's decoding options.

    ``tz_aware=True`` matches the client that the service makes for itself,
    so both sides decode datetimes the same way.
    """
    if driver == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        return AsyncIOMotorClient(uri, tz_aware=True)
    if driver == "pymongo":
        from pymongo import AsyncMongoClient

        return AsyncMongoClient(uri, tz_aware=True)
    raise ValueError(f"unknown driver {driver!r}, expected one of {DRIVERS}")


async def close_async_client(client: Any) -> None:
    """Close a client of either driver (PyMongo's close is a coroutine)."""
    closing = client.close()
    if inspect.isawaitable(closing):
        await closing


class LoopThreadClient:
    """An asyncio client owned by an event loop that runs in a daemon thread.

    Args:
        driver: ``"motor"`` or ``"pymongo"``.
        uri: The MongoDB URI.
    """

    def __init__(self, driver: str, uri: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bench-loop", daemon=True
        )
        self._thread.start()
        self.client = self.run(self._create(driver, uri))

    @staticmethod
    async def _create(driver: str, uri: str) -> Any:
        return create_async_client(driver, uri)

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the loop thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Close the client, stop the loop and wait for its thread."""
        self.run(close_async_client(self.client))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> LoopThreadClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
