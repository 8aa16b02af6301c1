"""Values: anything BSON can encode round-trips; anything else is rejected unwritten."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

import pytest
from bson import ObjectId

from execstore import InvalidValueError
from execstore._validation import MAX_NESTING_DEPTH

BSON_LIMIT_BYTES = 16 * 1024 * 1024

ROUND_TRIP_VALUES = [
    pytest.param("dark", id="str"),
    pytest.param("", id="empty-str"),
    pytest.param("ключ 名前 🎉", id="non-ascii-str"),
    pytest.param(42, id="int"),
    pytest.param(2**63 - 1, id="int64-max"),
    pytest.param(-(2**63), id="int64-min"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
    pytest.param(None, id="none"),
    pytest.param([1, "two", 3.0, None], id="list"),
    pytest.param([[1, [2, [3, []]]]], id="nested-lists"),
    pytest.param([], id="empty-list"),
    pytest.param({}, id="empty-dict"),
    pytest.param({"mode": "dark", "sizes": {"font": 12, "margins": [1, 2]}}, id="dict"),
    pytest.param({"$set": {"$inc": 1}, "$literal": 2}, id="dollar-keys"),
    pytest.param({"a.b": 1, "c": {"d.e": [{"f.g": 2}]}}, id="dotted-keys"),
    pytest.param({"missing": None}, id="dict-with-none"),
    pytest.param(b"\x00\xffbinary", id="bytes"),
    pytest.param(
        datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc), id="datetime"
    ),
    pytest.param(ObjectId("65a1b2c3d4e5f60718293a4b"), id="object-id"),
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES)
async def test_value_round_trips(service, value):
    written = await service.set_key("settings", "theme", value)
    stored = await service.get_key("settings", "theme")

    assert written.value == value
    assert stored.value == value
    assert isinstance(stored.value, type(value))


async def test_tuples_come_back_as_lists(service):
    await service.set_key("settings", "margins", (1, (2, 3)))

    assert (await service.get_key("settings", "margins")).value == [1, [2, 3]]


async def test_stored_none_is_a_value(service):
    await service.set_key("settings", "theme", None)

    stored = await service.get_key("settings", "theme")

    assert stored is not None
    assert stored.value is None
    assert await service.has_key("settings", "theme") is True
    assert await service.list_keys("settings") == ["theme"]


async def test_value_is_not_mutated(service):
    value = {"sizes": [1, {"margins": (2, 3)}], "$set": {"a.b": 1}}
    original = copy.deepcopy(value)

    await service.set_key("settings", "layout", value)

    assert value == original
    assert "_id" not in value
    assert type(value["sizes"][1]["margins"]) is tuple


async def test_metadata_is_not_mutated(service):
    metadata = {"owner": "plugin", "tags": ("a", "b")}
    original = copy.deepcopy(metadata)

    await service.create_store("settings", metadata=metadata)

    assert metadata == original
    assert "_id" not in metadata


UNENCODABLE_VALUES = [
    pytest.param(object(), id="object"),
    pytest.param({1, 2}, id="set"),
    pytest.param(1j, id="complex"),
    pytest.param(2**63, id="int-over-int64"),
    pytest.param(-(2**63) - 1, id="int-under-int64"),
    pytest.param({1: "one"}, id="int-dict-key"),
    pytest.param({"a\x00b": 1}, id="nul-in-dict-key"),
    pytest.param({"nested": [1, {"deep": object()}]}, id="nested-object"),
    pytest.param("x" * BSON_LIMIT_BYTES, id="16-mib-str"),
    pytest.param(b"x" * (BSON_LIMIT_BYTES - 100), id="just-under-16-mib-bytes"),
]


@pytest.mark.parametrize("value", UNENCODABLE_VALUES)
async def test_unencodable_value_keeps_previous_value(service, value):
    await service.set_key("settings", "theme", "dark")

    with pytest.raises(InvalidValueError) as raised:
        await service.set_key("settings", "theme", value)

    assert raised.value.argument == "value"
    assert (await service.get_key("settings", "theme")).value == "dark"


@pytest.mark.parametrize("value", UNENCODABLE_VALUES)
async def test_unencodable_value_creates_no_store(service, backend, value):
    with pytest.raises(InvalidValueError) as raised:
        await service.set_cache_key("settings", "theme", value)

    assert raised.value.argument == "value"
    assert await service.has_store("settings") is False
    assert await backend.count_documents({}) == 0


async def test_value_near_limit_is_stored(service):
    value = b"x" * (BSON_LIMIT_BYTES - 64 * 1024)

    await service.set_key("blobs", "large", value)

    assert (await service.get_key("blobs", "large")).value == value


def tightly_nested(depth: int, kind: str) -> Any:
    """Return ``depth`` dicts with empty keys, or lists, each inside the last.

    These are the smallest encodings of a nesting depth, where the size-based
    skip of the depth check is closest to letting a value through.
    """
    value: Any = {} if kind == "dict" else []
    for _ in range(depth - 1):
        value = {"": value} if kind == "dict" else [value]
    return value


@pytest.mark.parametrize("kind", ["dict", "list"])
async def test_nesting_limit_exact_at_smallest_encodings(service, kind):
    deepest = tightly_nested(MAX_NESTING_DEPTH, kind)
    await service.set_key("nesting", "deepest", deepest)

    with pytest.raises(InvalidValueError) as raised:
        await service.set_key("nesting", "too-deep", tightly_nested(101, kind))

    assert raised.value.argument == "value"
    assert (await service.get_key("nesting", "deepest")).value == deepest
    assert await service.has_key("nesting", "too-deep") is False
