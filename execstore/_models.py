"""Documents that the service returns, and their conversion from MongoDB.

The stored layout is the one of FiftyOne's ``execution_store`` collection: one
document per key, with fields store_name, key, value, dataset_id, created_at,
updated_at, expires_at and policy. A store's own document has the reserved key
``__store__`` and keeps the store's metadata in ``value``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ConfigDict

STORE_DOCUMENT_KEY = "__store__"


class KeyPolicy(str, Enum):
    """Eviction policy of a key: kept until deleted, or removable by clear_cache."""

    PERSIST = "persist"
    EVICT = "evict"


class KeyDocument(BaseModel):
    """A key, its value and its timestamps, as stored in one context."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    store_name: str
    key: str
    value: Any = None
    dataset_id: ObjectId | None = None
    created_at: datetime
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    policy: KeyPolicy = KeyPolicy.PERSIST


class StoreDocument(BaseModel):
    """A store of one context, from its store document or from its live keys."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    store_name: str
    dataset_id: ObjectId | None = None
    metadata: dict[str, Any]
    policy: KeyPolicy = KeyPolicy.PERSIST
    created_at: datetime
    updated_at: datetime | None = None


def to_utc_millis(moment: datetime) -> datetime:
    """Return ``moment`` as aware UTC truncated to MongoDB's millisecond precision.

    A naive datetime is taken to be UTC already, as PyMongo writes them.
    """
    offset = moment.utcoffset()
    if offset:
        moment = moment.astimezone(timezone.utc)
    elif moment.tzinfo is not timezone.utc:
        # Naive, or UTC under another tzinfo such as the one BSON decodes to.
        moment = moment.replace(tzinfo=timezone.utc)
    extra_microseconds = moment.microsecond % 1000
    if extra_microseconds:
        moment = moment.replace(microsecond=moment.microsecond - extra_microseconds)
    return moment


def _optional_utc(moment: object) -> datetime | None:
    # Another tool may have stored something other than a date, which counts as none.
    return to_utc_millis(moment) if isinstance(moment, datetime) else None


def _created_at(raw: Mapping[str, Any]) -> datetime:
    # Documents written by other tools may lack created_at, or contain something
    # other than a date there. The ObjectId still records the insertion time.
    created = _optional_utc(raw.get("created_at")) or _optional_utc(
        raw.get("updated_at")
    )
    if created is None and isinstance(raw.get("_id"), ObjectId):
        created = raw["_id"].generation_time
    return to_utc_millis(created or datetime.fromtimestamp(0, timezone.utc))


def _policy(raw: Mapping[str, Any]) -> KeyPolicy:
    # Documents without a policy field are evictable exactly when they expire.
    policy = raw.get("policy")
    if policy in (KeyPolicy.PERSIST.value, KeyPolicy.EVICT.value):
        return KeyPolicy(policy)
    return KeyPolicy.EVICT if raw.get("expires_at") else KeyPolicy.PERSIST


def key_document_from_raw(raw: Mapping[str, Any]) -> KeyDocument:
    """Build a KeyDocument from a stored document."""
    return KeyDocument(
        store_name=raw["store_name"],
        key=raw["key"],
        value=raw.get("value"),
        dataset_id=raw.get("dataset_id"),
        created_at=_created_at(raw),
        updated_at=_optional_utc(raw.get("updated_at")),
        expires_at=_optional_utc(raw.get("expires_at")),
        policy=_policy(raw),
    )


def store_document_from_raw(raw: Mapping[str, Any]) -> StoreDocument:
    """Build a StoreDocument from a stored ``__store__`` document."""
    metadata = raw.get("value")
    return StoreDocument(
        store_name=raw["store_name"],
        dataset_id=raw.get("dataset_id"),
        metadata=metadata if isinstance(metadata, dict) else {},
        policy=_policy(raw),
        created_at=_created_at(raw),
        updated_at=_optional_utc(raw.get("updated_at")),
    )


def implicit_store_document(
    store_name: str, dataset_id: ObjectId | None, summary: Mapping[str, Any]
) -> StoreDocument:
    """Build the StoreDocument of a store that exists only through its live keys.

    ``summary`` has the earliest ``created_at`` and latest ``updated_at`` of
    those keys; either may be None when the keys were written without it.
    """
    return StoreDocument(
        store_name=store_name,
        dataset_id=dataset_id,
        metadata={},
        created_at=_created_at(summary),
        updated_at=_optional_utc(summary.get("updated_at")),
    )
