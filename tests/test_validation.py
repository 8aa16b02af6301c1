"""Argument checks: every bad argument is rejected before anything is written.

A wrong type raises InvalidArgumentTypeError (a TypeError) and a wrong value
raises InvalidArgumentError (a ValueError). Both name the argument in
``argument``. The tests check that the collection is still empty after a
rejected call, or, where a key was written first, that it is unchanged.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from execstore import (
    ExecutionStoreError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidValueError,
)

# Every method that takes a store name, called with ``name`` as the store name.
STORE_NAME_CALLS = {
    "create_store": lambda service, name: service.create_store(name),
    "get_store": lambda service, name: service.get_store(name),
    "has_store": lambda service, name: service.has_store(name),
    "delete_store": lambda service, name: service.delete_store(name),
    "set_key": lambda service, name: service.set_key(name, "theme", "dark"),
    "set_cache_key": lambda service, name: service.set_cache_key(name, "theme", "dark"),
    "get_key": lambda service, name: service.get_key(name, "theme"),
    "has_key": lambda service, name: service.has_key(name, "theme"),
    "delete_key": lambda service, name: service.delete_key(name, "theme"),
    "list_keys": lambda service, name: service.list_keys(name),
    "count_keys": lambda service, name: service.count_keys(name),
    "update_ttl": lambda service, name: service.update_ttl(name, "theme", 60),
    "clear_cache": lambda service, name: service.clear_cache(name),
    "has_store_global": lambda service, name: service.has_store_global(name),
    "delete_store_global": lambda service, name: service.delete_store_global(name),
}

# Every method that takes a key, called with ``key`` as the key.
KEY_CALLS = {
    "set_key": lambda service, key: service.set_key("settings", key, "dark"),
    "set_cache_key": lambda service, key: service.set_cache_key(
        "settings", key, "dark"
    ),
    "get_key": lambda service, key: service.get_key("settings", key),
    "has_key": lambda service, key: service.has_key("settings", key),
    "delete_key": lambda service, key: service.delete_key("settings", key),
    "update_ttl": lambda service, key: service.update_ttl("settings", key, 60),
}

INVALID_NAMES = [
    pytest.param(None, InvalidArgumentTypeError, id="none"),
    pytest.param(7, InvalidArgumentTypeError, id="int"),
    pytest.param(b"settings", InvalidArgumentTypeError, id="bytes"),
    pytest.param(["settings"], InvalidArgumentTypeError, id="list"),
    pytest.param({"$ne": None}, InvalidArgumentTypeError, id="query-operator"),
    pytest.param("", InvalidArgumentError, id="empty"),
    pytest.param("set\x00tings", InvalidArgumentError, id="nul"),
    pytest.param("x" * 4097, InvalidArgumentError, id="4097-bytes"),
    pytest.param("é" * 2049, InvalidArgumentError, id="4098-utf8-bytes"),
]


def name_cases(calls: dict) -> list:
    """Combine each method with each invalid name; clear_cache takes None."""
    cases = []
    for method, call in calls.items():
        for name in INVALID_NAMES:
            if method == "clear_cache" and name.values[0] is None:
                continue
            cases.append(pytest.param(call, *name.values, id=f"{method}-{name.id}"))
    return cases


async def snapshot(collection) -> list[dict]:
    """Return every stored document, in insertion order."""
    return [document async for document in collection.find({}, sort=[("_id", 1)])]


@pytest.mark.parametrize(("call", "name", "error"), name_cases(STORE_NAME_CALLS))
async def test_invalid_store_name_is_rejected(service, backend, call, name, error):
    with pytest.raises(error) as raised:
        await call(service, name)

    assert raised.value.argument == "store_name"
    assert await backend.count_documents({}) == 0


@pytest.mark.parametrize(("call", "key", "error"), name_cases(KEY_CALLS))
async def test_invalid_key_is_rejected(service, backend, call, key, error):
    with pytest.raises(error) as raised:
        await call(service, key)

    assert raised.value.argument == "key"
    assert await backend.count_documents({}) == 0


@pytest.mark.parametrize("call", list(KEY_CALLS.values()), ids=list(KEY_CALLS))
async def test_reserved_store_key_is_rejected(service, backend, call):
    await service.create_store("settings", metadata={"owner": "plugin"})
    before = await snapshot(backend)

    with pytest.raises(InvalidArgumentError) as raised:
        await call(service, "__store__")

    assert raised.value.argument == "key"
    assert await snapshot(backend) == before


async def test_query_operator_key_deletes_nothing(service):
    await service.set_key("settings", "theme", "dark")

    with pytest.raises(InvalidArgumentTypeError):
        await service.delete_key("settings", {"$ne": None})

    assert await service.has_key("settings", "theme") is True


async def test_query_operator_store_name_deletes_nothing(service):
    await service.create_store("settings")

    with pytest.raises(InvalidArgumentTypeError):
        await service.delete_store_global({"$ne": None})

    assert await service.has_store("settings") is True


ORDINARY_NAMES = [
    pytest.param("a.b.c", id="dots"),
    pytest.param("$set", id="dollar-prefix"),
    pytest.param("price $", id="dollar-inside"),
    pytest.param(" padded name ", id="spaces"),
    pytest.param("ключ-名前-🎉", id="non-ascii"),
    pytest.param("__store", id="near-reserved"),
    pytest.param("x" * 4096, id="4096-bytes"),
    pytest.param("é" * 2048, id="4096-utf8-bytes"),
]


@pytest.mark.parametrize("name", ORDINARY_NAMES)
async def test_unusual_names_round_trip(service, name):
    written = await service.set_key(name, name, "value")

    assert written.store_name == name
    assert written.key == name
    assert (await service.get_key(name, name)).value == "value"
    assert await service.list_keys(name) == [name]
    assert await service.list_stores() == [name]
    assert await service.delete_key(name, name) is True


async def test_reserved_key_is_allowed_as_store_name(service):
    await service.set_key("__store__", "theme", "dark")

    assert await service.list_stores() == ["__store__"]
    assert (await service.get_key("__store__", "theme")).value == "dark"


INVALID_TTLS = [
    pytest.param(0, InvalidArgumentError, id="zero"),
    pytest.param(0.0, InvalidArgumentError, id="zero-float"),
    pytest.param(-1, InvalidArgumentError, id="negative"),
    pytest.param(-0.5, InvalidArgumentError, id="negative-float"),
    pytest.param(math.nan, InvalidArgumentError, id="nan"),
    pytest.param(math.inf, InvalidArgumentError, id="infinity"),
    pytest.param(-math.inf, InvalidArgumentError, id="minus-infinity"),
    pytest.param(1e300, InvalidArgumentError, id="huge-float"),
    pytest.param(101 * 366 * 86400, InvalidArgumentError, id="101-years"),
    pytest.param(timedelta(0), InvalidArgumentError, id="zero-timedelta"),
    pytest.param(timedelta(seconds=-1), InvalidArgumentError, id="negative-timedelta"),
    pytest.param(
        timedelta(days=101 * 366), InvalidArgumentError, id="101-years-timedelta"
    ),
    pytest.param(timedelta.max, InvalidArgumentError, id="max-timedelta"),
    pytest.param(True, InvalidArgumentTypeError, id="bool"),
    pytest.param(False, InvalidArgumentTypeError, id="false"),
    pytest.param("60", InvalidArgumentTypeError, id="numeric-str"),
    pytest.param([60], InvalidArgumentTypeError, id="list"),
]

TTL_CALLS = {
    "set_key": lambda service, ttl: service.set_key(
        "settings", "theme", "dark", ttl=ttl
    ),
    "set_cache_key": lambda service, ttl: service.set_cache_key(
        "settings", "theme", "dark", ttl=ttl
    ),
    "update_ttl": lambda service, ttl: service.update_ttl("settings", "theme", ttl),
}


@pytest.mark.parametrize("call", list(TTL_CALLS.values()), ids=list(TTL_CALLS))
@pytest.mark.parametrize(("ttl", "error"), INVALID_TTLS)
async def test_invalid_ttl_is_rejected(service, backend, call, ttl, error):
    with pytest.raises(error) as raised:
        await call(service, ttl)

    assert raised.value.argument == "ttl"
    assert await backend.count_documents({}) == 0
    assert await service.has_store("settings") is False


@pytest.mark.parametrize("call", list(TTL_CALLS.values()), ids=list(TTL_CALLS))
async def test_invalid_ttl_keeps_existing_key(service, backend, call):
    await service.set_key("settings", "theme", "light", ttl=60)
    before = await snapshot(backend)

    with pytest.raises(InvalidArgumentError):
        await call(service, -5)

    assert await snapshot(backend) == before


async def test_update_ttl_rejects_none(service, backend):
    await service.set_key("settings", "theme", "light", ttl=60)
    before = await snapshot(backend)

    with pytest.raises(ExecutionStoreError) as raised:
        await service.update_ttl("settings", "theme", None)

    assert raised.value.argument == "ttl"
    assert await snapshot(backend) == before


@pytest.mark.parametrize(
    "ttl",
    [
        pytest.param(0.001, id="one-millisecond"),
        pytest.param(99 * 365 * 86400, id="99-years"),
        pytest.param(timedelta(days=99 * 365), id="99-years-timedelta"),
    ],
)
async def test_ttl_within_limits_is_accepted(service, clock, ttl):
    # mongomock and mongod both remove documents whose expires_at has passed in
    # real time, so a day ahead keeps a one-millisecond key long enough to read.
    clock.advance(86400)

    written = await service.set_key("settings", "theme", "dark", ttl=ttl)

    expected = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
    assert written.expires_at == clock.now + expected


INVALID_POLICIES = [
    pytest.param("forever", InvalidArgumentError, id="unknown"),
    pytest.param("", InvalidArgumentError, id="empty"),
    pytest.param(1, InvalidArgumentTypeError, id="int"),
    pytest.param(["evict"], InvalidArgumentTypeError, id="list"),
]

POLICY_CALLS = {
    "set_key": lambda service, policy: service.set_key(
        "settings", "theme", "dark", policy=policy
    ),
    "create_store": lambda service, policy: service.create_store(
        "settings", policy=policy
    ),
}


@pytest.mark.parametrize("call", list(POLICY_CALLS.values()), ids=list(POLICY_CALLS))
@pytest.mark.parametrize(("policy", "error"), INVALID_POLICIES)
async def test_invalid_policy_is_rejected(service, backend, call, policy, error):
    with pytest.raises(error) as raised:
        await call(service, policy)

    assert raised.value.argument == "policy"
    assert await backend.count_documents({}) == 0


async def test_invalid_policy_keeps_existing_key(service, backend):
    await service.set_key("settings", "theme", "light", policy="evict")
    before = await snapshot(backend)

    with pytest.raises(InvalidArgumentError):
        await service.set_key("settings", "theme", "dark", policy="forever")

    assert await snapshot(backend) == before


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(["owner"], id="list"),
        pytest.param("owner", id="str"),
        pytest.param(7, id="int"),
    ],
)
async def test_non_dict_metadata_is_rejected(service, backend, metadata):
    with pytest.raises(InvalidArgumentTypeError) as raised:
        await service.create_store("settings", metadata=metadata)

    assert raised.value.argument == "metadata"
    assert await backend.count_documents({}) == 0


async def test_unencodable_metadata_is_rejected(service, backend):
    with pytest.raises(InvalidValueError) as raised:
        await service.create_store("settings", metadata={"owner": object()})

    assert raised.value.argument == "metadata"
    assert await backend.count_documents({}) == 0


def test_argument_errors_are_builtin_errors():
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidArgumentTypeError, TypeError)
    assert issubclass(InvalidValueError, InvalidArgumentError)
    assert issubclass(InvalidArgumentError, ExecutionStoreError)
    assert issubclass(InvalidArgumentTypeError, ExecutionStoreError)


async def test_error_message_omits_rejected_value(service):
    secret = "hunter2-secret"

    with pytest.raises(InvalidArgumentTypeError) as wrong_type:
        await service.set_key("settings", {"token": secret}, "dark")
    with pytest.raises(InvalidValueError) as unencodable:
        await service.set_key("settings", "theme", {"token": secret, "x": object()})

    assert secret not in str(wrong_type.value)
    assert "key" in str(wrong_type.value)
    assert secret not in str(unencodable.value)
    assert "value" in str(unencodable.value)
