"""Checks and normalization of every argument, run before any write.

Each check raises InvalidArgumentError or InvalidArgumentTypeError naming the
argument. Messages describe the value's type or the rule it breaks, never the
value itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta, timezone
from typing import Any

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions

from ._errors import InvalidArgumentError, InvalidArgumentTypeError, InvalidValueError
from ._models import STORE_DOCUMENT_KEY, KeyPolicy

MAX_NAME_BYTES = 4096
MAX_TTL = timedelta(days=36525)  # 100 years of 365.25 days
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # MongoDB's BSON document size limit
MAX_BULK_KEYS_BYTES = 8 * 1024 * 1024  # keeps a bulk query well under 16 MiB
# MongoDB documents support 100 levels of nesting; 6.0.5 rejects from about 180.
MAX_NESTING_DEPTH = 100
MAX_BATCH_SIZE = 2**31 - 1  # MongoDB's batchSize is a 32-bit int
# Room for every field but the value: ids, timestamps, policy and field names.
_FIELDS_OVERHEAD_BYTES = 256
# A nested dict or list costs at least a type byte, an empty key's NUL byte,
# a 4-byte length and a closing NUL byte in BSON.
_MIN_BYTES_PER_LEVEL = 7

_DECODE_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True, tzinfo=timezone.utc
)
_UNENCODABLE_TYPE = re.compile(r"of type: <class '([^']+)'>")


def normalize_dataset_id(dataset_id: object) -> ObjectId | None:
    """Return the context's ObjectId, or None for the global context."""
    if dataset_id is None or isinstance(dataset_id, ObjectId):
        return dataset_id
    if not isinstance(dataset_id, str):
        raise InvalidArgumentTypeError(
            "dataset_id", "an ObjectId, a 24-character hex str or None", dataset_id
        )
    if not ObjectId.is_valid(dataset_id) or len(dataset_id) != 24:
        raise InvalidArgumentError(
            "dataset_id", "expected a 24-character hex string of an ObjectId"
        )
    return ObjectId(dataset_id)


def validate_name(name: object, argument: str) -> str:
    """Return ``name`` if it is a usable store name or key."""
    if not isinstance(name, str):
        raise InvalidArgumentTypeError(argument, "a non-empty str", name)
    if not name:
        raise InvalidArgumentError(argument, "must not be empty")
    if "\x00" in name:
        raise InvalidArgumentError(argument, "must not contain the NUL character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            argument, "must be valid Unicode without lone surrogates"
        ) from None
    if size > MAX_NAME_BYTES:
        raise InvalidArgumentError(
            argument, f"is {size} bytes in UTF-8, over the limit of {MAX_NAME_BYTES}"
        )
    return name


def validate_key(key: object, argument: str = "key") -> str:
    """Return ``key`` if it is a usable key; the store document's key is reserved."""
    validate_name(key, argument)
    if key == STORE_DOCUMENT_KEY:
        raise InvalidArgumentError(
            argument, f"{STORE_DOCUMENT_KEY!r} is reserved for the store's own document"
        )
    return key  # type: ignore[return-value]


def validate_policy(policy: object) -> KeyPolicy:
    """Return the KeyPolicy named by ``policy``."""
    if not isinstance(policy, str):
        raise InvalidArgumentTypeError("policy", "'persist' or 'evict'", policy)
    try:
        return KeyPolicy(policy)
    except ValueError:
        raise InvalidArgumentError("policy", "expected 'persist' or 'evict'") from None


def validate_ttl(ttl: object, argument: str = "ttl") -> timedelta | None:
    """Return ``ttl`` as a timedelta, or None when there is no expiry."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        duration = ttl
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        duration = _seconds_to_timedelta(ttl, argument)
    else:
        raise InvalidArgumentTypeError(
            argument, "an int or float of seconds, a timedelta or None", ttl
        )
    if duration <= timedelta(0):
        raise InvalidArgumentError(argument, "must be a positive duration")
    if duration > MAX_TTL:
        raise InvalidArgumentError(argument, "must be at most 100 years")
    return duration


def _seconds_to_timedelta(seconds: float, argument: str) -> timedelta:
    # Checked before converting: timedelta and math.isfinite overflow on
    # huge ints, while comparing an int with a float never does.
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise InvalidArgumentError(argument, "must be a finite number of seconds")
    if seconds <= 0:
        raise InvalidArgumentError(argument, "must be a positive duration")
    if seconds > MAX_TTL.total_seconds():
        raise InvalidArgumentError(argument, "must be at most 100 years")
    # A positive TTL below timedelta's resolution still expires after the write.
    return max(timedelta(seconds=seconds), timedelta(microseconds=1))


def validate_metadata(metadata: object, store_name: str) -> dict[str, Any]:
    """Return the store metadata as MongoDB will store it; ``{}`` for None.

    The result is a decoded copy, so tuples are lists and datetimes are aware
    UTC with millisecond precision, exactly as a later read returns them.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidArgumentTypeError("metadata", "a dict or None", metadata)
    names_bytes = len(store_name.encode()) + len(STORE_DOCUMENT_KEY)
    encoded = validate_value(metadata, "metadata", names_bytes)
    stored: dict[str, Any] = bson.decode(encoded, codec_options=_DECODE_OPTIONS)
    return stored["value"]  # type: ignore[no-any-return]


def validate_value(value: object, argument: str, names_bytes: int) -> bytes:
    """Return ``{"value": value}`` encoded, if MongoDB can store it.

    The value must be BSON-encodable, nested at most ``MAX_NESTING_DEPTH``
    levels deep and fit MongoDB's document size limit.

    Args:
        value: The value to store.
        argument: The argument's name for errors.
        names_bytes: UTF-8 size of the store name and key stored beside it.
    """
    try:
        encoded = bson.encode({"value": value})
    except Exception as exc:  # the encoder raises several types, user code others
        raise InvalidValueError(argument, _describe_encoding_error(exc)) from None
    # Each level of nesting takes at least _MIN_BYTES_PER_LEVEL encoded bytes,
    # so only a value this large can nest too deeply. Most values skip the walk.
    if len(encoded) >= _MIN_BYTES_PER_LEVEL * (MAX_NESTING_DEPTH + 1):
        _check_nesting(value, argument)
    size = len(encoded) + names_bytes + _FIELDS_OVERHEAD_BYTES
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidValueError(
            argument,
            f"the stored document would be about {size} bytes, over MongoDB's "
            f"limit of {MAX_DOCUMENT_BYTES} bytes",
        )
    return encoded


def _check_nesting(value: object, argument: str) -> None:
    """Reject a value whose dicts and lists nest deeper than MongoDB supports."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > MAX_NESTING_DEPTH:
            raise InvalidValueError(
                argument, f"nests dicts and lists over {MAX_NESTING_DEPTH} levels deep"
            )
        pending.extend((child, depth + 1) for child in children)


def _describe_encoding_error(exc: Exception) -> str:
    if isinstance(exc, OverflowError):
        return "contains an int outside the signed 64-bit range that BSON holds"
    if isinstance(exc, UnicodeEncodeError):
        return "contains a str with a lone surrogate, which is not valid UTF-8"
    if isinstance(exc, RecursionError):
        return "refers to itself or nests too deeply to encode"
    text = str(exc)
    if "uuid.UUID" in text:
        return "contains a uuid.UUID; store it as str or as bson.Binary"
    unencodable = _UNENCODABLE_TYPE.search(text)
    if unencodable:
        return f"BSON cannot encode a value of type {unencodable.group(1)}"
    if "string keys" in text:
        return "contains a dict with a key that is not a str"
    if "NULL byte" in text:
        return "contains a dict key with the NUL character"
    return f"BSON cannot encode it ({type(exc).__name__})"


def validate_keys(keys: object) -> list[str]:
    """Return the keys of a bulk read or delete as a list without duplicates."""
    if isinstance(keys, (str, bytes, Mapping)) or not isinstance(keys, Iterable):
        raise InvalidArgumentTypeError("keys", "an iterable of str keys", keys)
    unique = list(dict.fromkeys(validate_key(key, "keys") for key in keys))
    total = sum(len(key.encode()) for key in unique)
    if total > MAX_BULK_KEYS_BYTES:
        raise InvalidArgumentError(
            "keys",
            f"the keys total {total} bytes in UTF-8, over the limit of "
            f"{MAX_BULK_KEYS_BYTES} per call; split the call",
        )
    return unique


def validate_mapping(values: object, store_name: str) -> dict[str, Any]:
    """Return a copy of the key-to-value mapping of a bulk write, every entry checked.

    The copy is what gets written, so a caller that changes the mapping while
    the write runs cannot slip in an entry that was not checked.
    """
    if not isinstance(values, Mapping):
        raise InvalidArgumentTypeError("values", "a mapping of keys to values", values)
    entries = dict(values)
    for position, (key, value) in enumerate(entries.items()):
        try:
            validate_key(key, "values")
            names_bytes = len(store_name.encode()) + len(key.encode())
            validate_value(value, "values", names_bytes)
        except (InvalidArgumentError, InvalidArgumentTypeError) as exc:
            exc.args = (f"{exc} (the mapping's entry at index {position})",)
            raise
    return entries


def validate_batch_size(batch_size: object) -> int:
    """Return ``batch_size`` if it is a usable cursor batch size."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        raise InvalidArgumentTypeError("batch_size", "a positive int", batch_size)
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidArgumentError("batch_size", f"must be from 1 to {MAX_BATCH_SIZE}")
    return batch_size


# Characters MongoDB does not allow in database names, on any platform.
_DATABASE_NAME_FORBIDDEN = frozenset('/\\. "$*<>:|?\x00')
MAX_DATABASE_NAME_BYTES = 63
MAX_NAMESPACE_BYTES = 255  # "<database>.<collection>" in MongoDB 4.4 and later
MIN_TIMEOUT_SECONDS = 0.001  # PyMongo's timeouts are whole milliseconds
MAX_TIMEOUT_SECONDS = 3600.0


def validate_database_name(name: object) -> str:
    """Return ``name`` if MongoDB accepts it as a database name."""
    if not isinstance(name, str):
        raise InvalidArgumentTypeError("database_name", "a non-empty str", name)
    if not name or len(name.encode()) > MAX_DATABASE_NAME_BYTES:
        raise InvalidArgumentError(
            "database_name", f"must be 1 to {MAX_DATABASE_NAME_BYTES} bytes long"
        )
    if _DATABASE_NAME_FORBIDDEN.intersection(name):
        raise InvalidArgumentError(
            "database_name",
            'must not contain /, \\, ., space, ", $, *, <, >, :, |, ? or NUL',
        )
    return name


def validate_collection_name(name: object, database_name: str) -> str:
    """Return ``name`` if MongoDB accepts it as a collection in that database."""
    if not isinstance(name, str):
        raise InvalidArgumentTypeError("collection_name", "a non-empty str", name)
    if not name or "$" in name or "\x00" in name:
        raise InvalidArgumentError(
            "collection_name", "must be non-empty, without $ or the NUL character"
        )
    if name.startswith((".", "system.")) or name.endswith(".") or ".." in name:
        raise InvalidArgumentError(
            "collection_name",
            "must not start with 'system.' or a dot, end with a dot, or contain '..'",
        )
    if len(f"{database_name}.{name}".encode()) > MAX_NAMESPACE_BYTES:
        raise InvalidArgumentError(
            "collection_name",
            f"with the database name it must fit in {MAX_NAMESPACE_BYTES} bytes",
        )
    return name


def validate_timeout(seconds: object) -> float:
    """Return ``seconds`` if it is a usable server timeout."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise InvalidArgumentTypeError(
            "timeout_seconds", "a number of seconds", seconds
        )
    # Compared before float(): a huge int would overflow, and NaN fails both.
    if not MIN_TIMEOUT_SECONDS <= seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidArgumentError(
            "timeout_seconds",
            f"must be from {MIN_TIMEOUT_SECONDS:g} to {MAX_TIMEOUT_SECONDS:g} seconds",
        )
    return float(seconds)
