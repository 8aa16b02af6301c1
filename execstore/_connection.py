"""The service's own MongoDB client, created lazily on the running event loop.

An asyncio client belongs to the event loop it first runs on. The connection
therefore creates its client on the first call and replaces it when a call
arrives on another loop, so a service built outside any loop keeps working
under successive ``asyncio.run`` calls.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timezone
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError

from ._config import Settings
from ._drivers import close_resource, create_client, discard_client
from ._errors import InvalidArgumentError
from ._repository import MongoExecutionStoreRepo

logger = logging.getLogger(__name__)


class DefaultConnection:
    """A client, collection and repository for the running event loop.

    Args:
        settings: Where to connect; without a URI the embedded mongod is used.
        collection_name: The collection of stores and keys.
        dataset_id: The context of the repository.
    """

    def __init__(
        self, settings: Settings, collection_name: str, dataset_id: ObjectId | None
    ) -> None:
        self._settings = settings
        self._collection_name = collection_name
        self._dataset_id = dataset_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._repo: MongoExecutionStoreRepo | None = None

    async def repo(self) -> MongoExecutionStoreRepo:
        """Return the repository bound to the running loop, connecting if needed."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._repo is not None:
            return self._repo

        uri = await self._resolve_uri()
        if self._loop is loop and self._repo is not None:
            return self._repo  # another task connected while this one waited

        self.discard()
        self._client = self._create_client(uri)
        collection = self._client[self._settings.database_name][self._collection_name]
        self._repo = MongoExecutionStoreRepo(collection, self._dataset_id)
        self._loop = loop
        return self._repo

    async def _resolve_uri(self) -> str:
        if self._settings.database_uri:
            return self._settings.database_uri
        from ._server import ensure_running

        return await asyncio.to_thread(ensure_running, self._settings)

    def _create_client(self, uri: str) -> Any:
        timeout_ms = int(self._settings.timeout_seconds * 1000)
        logger.debug(
            "Creating a MongoDB client for database %s", self._settings.database_name
        )
        options = {
            "tz_aware": True,
            # Datetimes decoded with timezone.utc itself take to_utc_millis's
            # fast path.
            "tzinfo": timezone.utc,
            "appname": "execstore",
            "serverSelectionTimeoutMS": timeout_ms,
            "connectTimeoutMS": timeout_ms,
            # A call to a server that stopped responding fails when the next
            # heartbeat fails. One heartbeat per timeout (at least 500 ms,
            # PyMongo's minimum) bounds that wait to about three timeouts.
            "heartbeatFrequencyMS": max(timeout_ms, 500),
            # A backstop for a socket read that nothing else interrupts, such
            # as one left in Motor's worker thread after Ctrl-C closed the
            # client: without it, interpreter exit would wait for that thread.
            "socketTimeoutMS": max(12 * timeout_ms, 60_000),
        }
        try:
            return create_client(self._settings.driver, uri, options)
        except PyMongoError as exc:
            # The message may contain the URI and its password, so it is not kept.
            raise InvalidArgumentError(
                "database_uri",
                f"MongoDB rejected the URI ({type(exc).__name__}); check "
                "EXECSTORE_DATABASE_URI or Settings.database_uri",
            ) from None

    async def close(self) -> None:
        """Close the client, if one was created; the next call creates another."""
        client, loop = self._client, self._loop
        self.forget()
        if client is None:
            return
        if loop is asyncio.get_running_loop():
            await close_resource(client)
        else:
            discard_client(client)  # its loop has finished

    def discard(self) -> None:
        """Release the client at once, without awaiting; the next call connects.

        After Ctrl-C, Motor's worker thread may still be waiting on the
        server, and closing the client lets the interpreter exit.
        """
        if self._client is not None:
            discard_client(self._client)
        self.forget()

    def forget(self) -> None:
        """Drop the client without closing it.

        A forked child must not close its parent's client.
        """
        self._client = None
        self._repo = None
        self._loop = None
