"""The differences between the two asyncio MongoDB drivers, in one place.

execstore runs on Motor (``motor.motor_asyncio``) and on PyMongo's own asyncio
API (``pymongo.AsyncMongoClient``, PyMongo 4.9 and later). Their collections
share almost every method. The exceptions: PyMongo's ``aggregate`` is a
coroutine that returns a cursor while Motor's returns the cursor at once, and
PyMongo's ``close`` is a coroutine while Motor's is a plain method.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ._errors import InvalidArgumentError, InvalidArgumentTypeError

DRIVERS = ("motor", "pymongo")
DEFAULT_DRIVER = "motor"


def validate_driver(driver: object) -> str:
    """Return ``driver`` if it names a supported driver."""
    if not isinstance(driver, str):
        raise InvalidArgumentTypeError("driver", " or ".join(DRIVERS), driver)
    if driver not in DRIVERS:
        raise InvalidArgumentError("driver", f"expected one of {', '.join(DRIVERS)}")
    return driver


def create_client(driver: str, uri: str, options: Mapping[str, Any]) -> Any:
    """Create an asyncio client of ``driver``; it connects on first use."""
    if driver == "pymongo":
        from pymongo import AsyncMongoClient

        return AsyncMongoClient(uri, **options)
    from motor.motor_asyncio import AsyncIOMotorClient

    return AsyncIOMotorClient(uri, **options)


async def close_resource(resource: Any) -> None:
    """Close a client or cursor of either driver, awaiting the close if needed."""
    closing = resource.close()
    if inspect.isawaitable(closing):
        await closing


async def aggregate(collection: Any, pipeline: list[dict[str, Any]]) -> list[Any]:
    """Run an aggregation on a collection of either driver; return every result."""
    cursor = collection.aggregate(pipeline)
    if inspect.isawaitable(cursor):
        cursor = await cursor
    return [document async for document in cursor]


def discard_client(client: Any) -> None:
    """Release a client whose event loop has finished.

    Motor's ``close`` is synchronous and works from any loop. PyMongo's asyncio
    client can only be closed on the loop it ran on. Once that loop is gone,
    the client is dropped, and Python may report its sockets as unclosed.
    """
    if not inspect.iscoroutinefunction(client.close):
        client.close()
