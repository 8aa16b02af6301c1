"""The baseline: the driver calls that a get_key and a set_key need, by hand.

Nothing here imports execstore, so the baseline cannot pick up the library's
own costs by accident. The queries and the update pipeline repeat those of
``execstore/_repository.py``, so change them together with the repository.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

# Any expires_at above this is not a date (a Timestamp, say) and counts as expired.
LATEST_DATE = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)


def key_filter(
    store_name: str, key: str, dataset_id: ObjectId | None
) -> dict[str, Any]:
    """Return the filter on the unique index (store_name, key, dataset_id)."""
    return {"store_name": store_name, "key": key, "dataset_id": dataset_id}


def live_key_query(
    store_name: str, key: str, dataset_id: ObjectId | None, now: datetime
) -> dict[str, Any]:
    """Return the query of one key that has not expired at ``now``."""
    return {
        **key_filter(store_name, key, dataset_id),
        "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}],
    }


def upsert_pipeline(
    value: Any, policy: str, expires_at: datetime | None, now: datetime
) -> list[dict[str, Any]]:
    """Return the update pipeline that writes a key in one round trip.

    ``created_at`` is kept when a live key is overwritten and set to ``now``
    otherwise, as the contract of set_key requires.
    """
    expires_later = {
        "$and": [
            {"$gt": ["$expires_at", now]},
            {"$lte": ["$expires_at", LATEST_DATE]},
        ]
    }
    was_live = {
        "$and": [
            {"$gt": ["$created_at", None]},
            {"$or": [{"$lte": ["$expires_at", None]}, expires_later]},
        ]
    }
    return [
        {
            "$set": {
                "value": {"$literal": value},
                "policy": policy,
                "expires_at": expires_at,
                "updated_at": now,
                "created_at": {"$cond": [was_live, "$created_at", now]},
            }
        }
    ]


async def get_key(
    collection: Any, store_name: str, key: str, dataset_id: ObjectId | None
) -> Any:
    """Read a live key with an asyncio driver: one find_one."""
    now = datetime.now(timezone.utc)
    return await collection.find_one(live_key_query(store_name, key, dataset_id, now))


async def set_key(
    collection: Any, store_name: str, key: str, value: Any, dataset_id: ObjectId | None
) -> Any:
    """Write a key with an asyncio driver: one find_one_and_update with upsert."""
    now = datetime.now(timezone.utc)
    return await collection.find_one_and_update(
        key_filter(store_name, key, dataset_id),
        upsert_pipeline(value, "persist", None, now),
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )


def get_key_blocking(
    collection: Any, store_name: str, key: str, dataset_id: ObjectId | None
) -> Any:
    """Read a live key with blocking PyMongo: one find_one."""
    now = datetime.now(timezone.utc)
    return collection.find_one(live_key_query(store_name, key, dataset_id, now))


def set_key_blocking(
    collection: Any, store_name: str, key: str, value: Any, dataset_id: ObjectId | None
) -> Any:
    """Write a key with blocking PyMongo: one find_one_and_update with upsert."""
    now = datetime.now(timezone.utc)
    return collection.find_one_and_update(
        key_filter(store_name, key, dataset_id),
        upsert_pipeline(value, "persist", None, now),
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
