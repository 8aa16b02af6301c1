"""Bad input, exhaustively: every argument of every public method and constructor.

Each bad argument must raise an ExecutionStoreError that is also a ValueError
(a bad value) or a TypeError (a bad type). Its ``argument`` names the
parameter the caller got wrong, which for a bad key inside ``keys`` or
``values`` is that parameter, and its message does not contain the value. No
raw PyMongo, BSON or builtin exception may escape. Nothing may be written:
method tests compare every document of the collection before and after the
rejected call, and configuration tests check that no database appears.

A table lists the known cases. Validation runs before any database call, so
the whole table runs on mongomock and one case per method, argument and error
class runs on the real mongod (all of them with ``--run-slow``). Hypothesis
generates more cases, 400 on mongomock and 60 on the real mongod by default.
Values whose size or nesting depth only the server checks run on the real
mongod. Names that look like query syntax (``$``, ``.``, regex
metacharacters), spaces and non-ASCII characters are valid and must
round-trip.
"""

from __future__ import annotations

import asyncio
import collections
import math
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from bson import ObjectId
from conftest import COLLECTION_NAME, FakeClock, unique_database_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongomock_motor import AsyncMongoMockClient
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import MongoClient

from execstore import (
    ExecutionStoreError,
    ExecutionStoreService,
    MongoExecutionStoreRepo,
    Settings,
    SyncExecutionStoreService,
)

# Bad values contain this wherever their type allows, so that a message that
# echoes a value fails the check.
SECRET = "SECRET-7c41"

MAX_NAME_BYTES = 4096
MAX_TTL_SECONDS = 36525 * 24 * 3600  # 100 years of 365.25 days
BSON_LIMIT_BYTES = 16 * 1024 * 1024

# A loopback port that nothing listens on: constructors must reject their
# arguments without connecting anywhere.
UNREACHABLE = Settings(database_uri="mongodb://127.0.0.1:9/", timeout_seconds=0.2)

# Valid arguments of every method that takes any; they name what the harness
# seeds. Each bad call replaces one of them.
VALID_ARGUMENTS: dict[str, dict[str, Any]] = {
    "create_store": {
        "store_name": "settings",
        "metadata": None,
        "policy": "persist",
        "exist_ok": False,
    },
    "get_store": {"store_name": "settings"},
    "has_store": {"store_name": "settings"},
    "delete_store": {"store_name": "settings"},
    "set_key": {
        "store_name": "settings",
        "key": "theme",
        "value": "dark",
        "ttl": None,
        "policy": "persist",
    },
    "set_cache_key": {
        "store_name": "settings",
        "key": "theme",
        "value": "dark",
        "ttl": None,
    },
    "get_key": {"store_name": "settings", "key": "theme"},
    "has_key": {"store_name": "settings", "key": "theme"},
    "delete_key": {"store_name": "settings", "key": "theme"},
    "update_ttl": {"store_name": "settings", "key": "theme", "ttl": 60},
    "get_keys": {"store_name": "settings", "keys": ["theme"]},
    "set_keys": {
        "store_name": "settings",
        "values": {"theme": "dark"},
        "ttl": None,
        "policy": "persist",
    },
    "delete_keys": {"store_name": "settings", "keys": ["theme"]},
    "iter_keys": {"store_name": "settings", "batch_size": 1000},
    "list_keys": {"store_name": "settings"},
    "count_keys": {"store_name": "settings"},
    "clear_cache": {"store_name": "settings"},
    "has_store_global": {"store_name": "settings"},
    "delete_store_global": {"store_name": "settings"},
}


ARGUMENTS = sorted(
    {argument for valid in VALID_ARGUMENTS.values() for argument in valid}
)


def methods_taking(argument: str) -> list[str]:
    return [method for method, valid in VALID_ARGUMENTS.items() if argument in valid]


async def call(service: ExecutionStoreService, method: str, **changes: Any) -> Any:
    """Call ``method`` with valid arguments but ``changes``; drain iter_keys."""
    arguments = {**VALID_ARGUMENTS[method], **changes}
    result = getattr(service, method)(**arguments)
    if method == "iter_keys":
        return [key async for key in result]
    return await result


def call_sync(service: SyncExecutionStoreService, method: str, **changes: Any) -> Any:
    arguments = {**VALID_ARGUMENTS[method], **changes}
    result = getattr(service, method)(**arguments)
    if method == "iter_keys":
        return list(result)
    return result


def nested(depth: int) -> Any:
    """Return a value of ``depth`` dicts, each inside the previous one."""
    value: Any = "leaf"
    for _ in range(depth):
        value = {"level": value}
    return value


class Unencodable:
    """An object of a class that BSON has no encoder for."""


# The bad values of each kind: (value, the exception kind, test id).

BAD_NAMES = [
    (None, TypeError, "none"),
    (7, TypeError, "int"),
    (1.5, TypeError, "float"),
    (True, TypeError, "bool"),
    (b"settings", TypeError, "bytes"),
    (["settings"], TypeError, "list"),
    ({"$ne": None}, TypeError, "query-operator"),
    ({"$regex": ".*"}, TypeError, "regex-operator"),
    (ObjectId(), TypeError, "object-id"),
    ("", ValueError, "empty"),
    (SECRET + "\x00", ValueError, "nul"),
    (SECRET + "\ud800", ValueError, "lone-high-surrogate"),
    ("\udfff" + SECRET, ValueError, "lone-low-surrogate"),
    ("x" * (MAX_NAME_BYTES + 1), ValueError, "4097-bytes"),
    ("é" * (MAX_NAME_BYTES // 2 + 1), ValueError, "4098-utf8-bytes"),
    (SECRET * 1000, ValueError, "11000-bytes"),
]

BAD_KEYS_ONLY = [("__store__", ValueError, "reserved")]

BAD_TTLS = [
    (0, ValueError, "zero"),
    (0.0, ValueError, "zero-float"),
    (-0.0, ValueError, "negative-zero"),
    (-1, ValueError, "negative"),
    (-0.5, ValueError, "negative-float"),
    (math.nan, ValueError, "nan"),
    (math.inf, ValueError, "inf"),
    (-math.inf, ValueError, "minus-inf"),
    (MAX_TTL_SECONDS + 1, ValueError, "over-100-years"),
    (float(MAX_TTL_SECONDS) * 1.5, ValueError, "over-100-years-float"),
    (1e308, ValueError, "huge-float"),
    (-1e308, ValueError, "huge-negative-float"),
    (10**400, ValueError, "int-beyond-float"),
    (-(10**400), ValueError, "negative-int-beyond-float"),
    (timedelta(0), ValueError, "zero-timedelta"),
    (timedelta(seconds=-1), ValueError, "negative-timedelta"),
    (timedelta(days=36525, microseconds=1), ValueError, "timedelta-over-100-years"),
    (timedelta.max, ValueError, "timedelta-max"),
    (True, TypeError, "bool"),
    (False, TypeError, "bool-false"),
    ("60", TypeError, "str"),
    (SECRET, TypeError, "secret-str"),
    (b"60", TypeError, "bytes"),
    ([60], TypeError, "list"),
    ({"seconds": 60}, TypeError, "dict"),
    (Decimal("60"), TypeError, "decimal"),
    (Fraction(1, 2), TypeError, "fraction"),
    (1j, TypeError, "complex"),
    (datetime.now(timezone.utc), TypeError, "datetime"),
]

BAD_POLICIES = [
    ("", ValueError, "empty"),
    ("EVICT", ValueError, "upper-case"),
    (" evict", ValueError, "leading-space"),
    ("persist\x00", ValueError, "nul"),
    ("delete", ValueError, "unknown"),
    (SECRET, ValueError, "secret"),
    (None, TypeError, "none"),
    (1, TypeError, "int"),
    (True, TypeError, "bool"),
    (b"evict", TypeError, "bytes"),
    (["evict"], TypeError, "list"),
    ({"$ne": None}, TypeError, "query-operator"),
]

# Values that BSON cannot encode, or that MongoDB cannot store.
UNSTORABLE_VALUES = [
    (Unencodable(), "object"),
    ({1, 2}, "set"),
    (frozenset(), "frozenset"),
    (2**63, "int-over-int64"),
    (-(2**63) - 1, "int-under-int64"),
    (10**100, "huge-int"),
    ({1: SECRET}, "int-dict-key"),
    ({(SECRET,): 1}, "tuple-dict-key"),
    ({b"key": SECRET}, "bytes-dict-key"),
    ({SECRET + "\x00": 1}, "nul-dict-key"),
    (SECRET + "\ud800", "lone-surrogate"),
    ({SECRET + "\udc00": 1}, "lone-surrogate-dict-key"),
    (1j, "complex"),
    (Decimal("1.5"), "decimal"),
    (Fraction(1, 3), "fraction"),
    (date(2024, 1, 2), "date"),
    (timedelta(seconds=1), "timedelta"),
    (uuid.UUID(int=7), "uuid"),
    (bytearray(b"x"), "bytearray"),
    (range(3), "range"),
    (len, "function"),
    ({"deep": [{"deeper": [Unencodable()]}]}, "object-inside"),
    ({"ok": 1, "bad": SECRET + "\ud800"}, "lone-surrogate-inside"),
    ("x" * (BSON_LIMIT_BYTES + 1), "over-16-mib"),
    (
        ["x" * (BSON_LIMIT_BYTES // 2), "y" * (BSON_LIMIT_BYTES // 2)],
        "over-16-mib-total",
    ),
    (nested(5000), "5000-levels"),
]

BAD_EXIST_OK = [
    (None, "none"),
    (0, "zero"),
    (1, "one"),
    ("true", "str"),
    (SECRET, "secret"),
    ([True], "list"),
    ({"$ne": None}, "query-operator"),
]

BAD_METADATA_TYPES = [
    ("owner", "str"),
    (1, "int"),
    (["owner"], "list"),
    ((("owner", "ops"),), "tuple-of-pairs"),
    (b"owner", "bytes"),
    (True, "bool"),
]

BAD_BATCH_SIZES = [
    (0, ValueError, "zero"),
    (-1, ValueError, "negative"),
    (True, TypeError, "bool"),
    (False, TypeError, "bool-false"),
    (1.0, TypeError, "float"),
    ("10", TypeError, "str"),
    (None, TypeError, "none"),
    ([10], TypeError, "list"),
]

BAD_KEY_COLLECTIONS = [
    (None, TypeError, "none"),
    (7, TypeError, "int"),
    (True, TypeError, "bool"),
    (Unencodable(), TypeError, "object"),
    ("theme", TypeError, "str"),
    (b"theme", TypeError, "bytes"),
    ({"theme": 1}, TypeError, "dict"),
]

# A bad key among good ones. The error names ``keys``, the parameter.
BAD_KEY_ELEMENTS = [
    (["theme", None], TypeError, "none-element"),
    (["theme", 7], TypeError, "int-element"),
    ([b"theme"], TypeError, "bytes-element"),
    ([{"$ne": None}], TypeError, "query-operator-element"),
    (["theme", ""], ValueError, "empty-element"),
    (["theme", SECRET + "\x00"], ValueError, "nul-element"),
    (["theme", SECRET + "\ud800"], ValueError, "surrogate-element"),
    (["theme", "__store__"], ValueError, "reserved-element"),
    (["theme", "x" * (MAX_NAME_BYTES + 1)], ValueError, "long-element"),
    (
        [f"{index:05d}" + "x" * 4000 for index in range(2200)],
        ValueError,
        "over-8-mib-of-keys",
    ),
]

BAD_VALUE_MAPPINGS = [
    (None, TypeError, "none"),
    ([("theme", "dark")], TypeError, "list-of-pairs"),
    ("theme", TypeError, "str"),
    (7, TypeError, "int"),
    ({"theme"}, TypeError, "set"),
    ({"theme": "dark", 7: "dark"}, TypeError, "int-key"),
    ({"theme": "dark", None: "dark"}, TypeError, "none-key"),
    ({"theme": "dark", b"k": "dark"}, TypeError, "bytes-key"),
    ({"theme": "dark", "": "dark"}, ValueError, "empty-key"),
    ({"theme": "dark", "__store__": "dark"}, ValueError, "reserved-key"),
    ({"theme": "dark", SECRET + "\x00": "dark"}, ValueError, "nul-key"),
    ({"theme": "dark", "x" * (MAX_NAME_BYTES + 1): "dark"}, ValueError, "long-key"),
]

BAD_DATASET_IDS = [
    ("0" * 23, ValueError, "23-hex"),
    ("0" * 25, ValueError, "25-hex"),
    ("g" * 24, ValueError, "non-hex"),
    (SECRET.ljust(24, "x"), ValueError, "secret"),
    ("", ValueError, "empty"),
    (" " + "0" * 23, ValueError, "leading-space"),
    ("\uff10" * 24, ValueError, "full-width-digits"),
    (5, TypeError, "int"),
    (5.0, TypeError, "float"),
    (True, TypeError, "bool"),
    (b"0" * 12, TypeError, "12-bytes"),
    (b"0" * 24, TypeError, "24-bytes"),
    ({"$ne": None}, TypeError, "query-operator"),
    (["0" * 24], TypeError, "list"),
]


@dataclass(frozen=True)
class BadCall:
    """A method called with one bad argument, and the error it must raise."""

    method: str
    argument: str
    value: Any
    kind: type[Exception] | tuple[type[Exception], ...]

    def __repr__(self) -> str:
        # Failure reports print the call; values of megabytes stay short.
        text = repr(self.value)
        if len(text) > 80:
            text = f"{text[:60]}... ({len(text)} characters)"
        return f"BadCall({self.method}, {self.argument}={text})"


def bad_calls() -> list[Any]:
    """Return every known bad call as a pytest parameter."""
    calls: list[tuple[BadCall, str]] = []

    def add(method: str, argument: str, value: Any, kind: Any, label: str) -> None:
        call = BadCall(method, argument, value, kind)
        calls.append((call, f"{method}-{argument}-{label}"))

    for method in methods_taking("store_name"):
        for value, kind, label in BAD_NAMES:
            if method == "clear_cache" and value is None:
                continue  # clear_cache(None) clears every store
            add(method, "store_name", value, kind, label)
    for method in methods_taking("key"):
        for value, kind, label in BAD_NAMES + BAD_KEYS_ONLY:
            add(method, "key", value, kind, label)
    for method in methods_taking("ttl"):
        for value, kind, label in BAD_TTLS:
            add(method, "ttl", value, kind, label)
    add("update_ttl", "ttl", None, ValueError, "none")
    for method in methods_taking("policy"):
        for value, kind, label in BAD_POLICIES:
            add(method, "policy", value, kind, label)
    for method in ("set_key", "set_cache_key"):
        for value, label in UNSTORABLE_VALUES:
            add(method, "value", value, ValueError, label)
    for value, label in UNSTORABLE_VALUES:
        add("create_store", "metadata", {"owner": value}, ValueError, label)
        add("set_keys", "values", {"theme": "dark", "other": value}, ValueError, label)
    for value, label in BAD_METADATA_TYPES:
        add("create_store", "metadata", value, TypeError, label)
    for value, label in BAD_EXIST_OK:
        add("create_store", "exist_ok", value, TypeError, label)
    for value, kind, label in BAD_BATCH_SIZES:
        add("iter_keys", "batch_size", value, kind, label)
    for method in ("get_keys", "delete_keys"):
        for value, kind, label in BAD_KEY_COLLECTIONS + BAD_KEY_ELEMENTS:
            add(method, "keys", value, kind, label)
    for value, kind, label in BAD_VALUE_MAPPINGS:
        add("set_keys", "values", value, kind, label)

    return [pytest.param(call, id=label) for call, label in calls]


BAD_CALLS = bad_calls()


async def snapshot(collection: Any) -> list[dict[str, Any]]:
    """Return every document of the collection, in insertion order."""
    return [document async for document in collection.find({}, sort=[("_id", 1)])]


@dataclass
class Harness:
    """A seeded collection on one backend, and an event loop to call it on."""

    loop: asyncio.AbstractEventLoop
    collection: Any
    service: ExecutionStoreService

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def context(self, dataset_id: ObjectId | None) -> ExecutionStoreService:
        return ExecutionStoreService(
            repo=MongoExecutionStoreRepo(self.collection, dataset_id)
        )

    async def seed(self) -> None:
        """Write the stores and keys the bad calls name, in three contexts."""
        for context in (self.service, self.context(ObjectId()), self.context(None)):
            await context.create_store("settings", {"owner": "ops"})
            await context.set_key("settings", "theme", "dark")
            await context.set_cache_key("settings", "draft", "light", ttl=3600)
            await context.set_key("other", "theme", "dark")


async def _connect(uri: str) -> AsyncIOMotorClient:
    # Created inside a coroutine so that Motor binds to the harness's loop.
    return AsyncIOMotorClient(uri, tz_aware=True)


@pytest.fixture(scope="module")
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Return a seeded service, shared by this module's tests on one backend.

    Sharing is safe because each test that calls it compares the whole
    collection before and after, and the other tests use contexts of their own.
    """
    loop = asyncio.new_event_loop()
    client = None
    database_name = unique_database_name()
    if request.param == "mongomock":
        collection = AsyncMongoMockClient(tz_aware=True).db[COLLECTION_NAME]
    else:
        client = loop.run_until_complete(
            _connect(request.getfixturevalue("mongod").uri)
        )
        collection = client[database_name][COLLECTION_NAME]
    service = ExecutionStoreService(
        repo=MongoExecutionStoreRepo(collection, ObjectId()), clock=FakeClock()
    )
    shared = Harness(loop, collection, service)
    try:
        shared.run(shared.seed())
        yield shared
    finally:
        if client is not None:
            loop.run_until_complete(client.drop_database(database_name))
            client.close()
        loop.close()


def check_rejection(error: BaseException, bad: BadCall) -> None:
    """Check the error's classes, its ``argument`` and that it hides the value."""
    assert isinstance(error, ExecutionStoreError), type(error).__mro__
    assert isinstance(error, bad.kind), type(error).__mro__
    assert error.argument == bad.argument  # type: ignore[attr-defined]
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


def check_bad_call(harness: Harness, bad: BadCall) -> None:
    """Make the bad call; check the error and that the collection is unchanged."""
    before = harness.run(snapshot(harness.collection))

    with pytest.raises(Exception) as raised:
        harness.run(call(harness.service, bad.method, **{bad.argument: bad.value}))

    check_rejection(raised.value, bad)
    assert harness.run(snapshot(harness.collection)) == before


def one_per_kind(params: list[Any]) -> list[Any]:
    """Keep the first case of each method, argument and error kind."""
    first_cases = {}
    for param in params:
        bad = param.values[0]
        first_cases.setdefault((bad.method, bad.argument, bad.kind), param)
    return list(first_cases.values())


BAD_CALL_SAMPLE = one_per_kind(BAD_CALLS)


@pytest.mark.parametrize("harness", ["mongomock"], indirect=True)
@pytest.mark.parametrize("bad", BAD_CALLS)
def test_bad_argument_is_rejected(harness, bad):
    check_bad_call(harness, bad)


@pytest.mark.mongod_only
@pytest.mark.parametrize("harness", ["mongod"], indirect=True)
@pytest.mark.parametrize("bad", BAD_CALL_SAMPLE)
def test_bad_argument_is_rejected_on_mongod(harness, bad):
    check_bad_call(harness, bad)


@pytest.mark.slow
@pytest.mark.mongod_only
@pytest.mark.parametrize("harness", ["mongod"], indirect=True)
@pytest.mark.parametrize("bad", BAD_CALLS)
def test_every_bad_argument_is_rejected_on_mongod(harness, bad):
    check_bad_call(harness, bad)


@pytest.mark.parametrize("bad", BAD_CALL_SAMPLE)
def test_sync_wrapper_rejects_bad_argument(bad):
    collection = AsyncMongoMockClient(tz_aware=True).db[COLLECTION_NAME]
    repo = MongoExecutionStoreRepo(collection, ObjectId())
    with SyncExecutionStoreService(repo=repo) as service:
        service.set_key("settings", "theme", "dark")
        before = service.list_stores_global(), service.get_keys("settings", ["theme"])

        with pytest.raises(Exception) as raised:
            call_sync(service, bad.method, **{bad.argument: bad.value})

        check_rejection(raised.value, bad)
        assert (
            service.list_stores_global(),
            service.get_keys("settings", ["theme"]),
        ) == before


def test_every_argument_has_bad_cases():
    covered = {
        (param.values[0].method, param.values[0].argument) for param in BAD_CALLS
    }

    expected = {
        (method, argument)
        for method, arguments in VALID_ARGUMENTS.items()
        for argument in arguments
    }

    assert covered == expected


# What the real server rejects that a client-side check may let through.

NESTING_DEPTHS = [100, 101, 150, 179, 180, 200, 1000]


@pytest.mark.mongod_only
@pytest.mark.parametrize("depth", NESTING_DEPTHS)
@pytest.mark.parametrize("harness", ["mongod"], indirect=True)
def test_deep_value_stored_or_rejected(harness, depth):
    store_name = f"deep-{depth}"
    before = harness.run(snapshot(harness.collection))

    try:
        written = harness.run(
            harness.service.set_key(store_name, "deep", nested(depth))
        )
    except Exception as error:
        check_rejection(error, BadCall("set_key", "value", None, ValueError))
        assert harness.run(snapshot(harness.collection)) == before
        return

    stored = harness.run(harness.service.get_key(store_name, "deep"))
    harness.run(harness.service.delete_store(store_name))
    assert written.value == nested(depth)
    assert stored.value == nested(depth)


@pytest.mark.mongod_only
@pytest.mark.parametrize(
    ("method", "argument", "wrap"),
    [
        pytest.param(
            "set_keys", "values", lambda value: {"deep": value}, id="set_keys"
        ),
        pytest.param(
            "create_store", "metadata", lambda value: {"m": value}, id="create_store"
        ),
    ],
)
@pytest.mark.parametrize("depth", [180, 1000])
@pytest.mark.parametrize("harness", ["mongod"], indirect=True)
def test_too_deep_values_or_metadata_rejected(harness, method, argument, wrap, depth):
    bad = BadCall(method, argument, wrap(nested(depth)), ValueError)

    check_bad_call(harness, bad)


@pytest.mark.mongod_only
@pytest.mark.parametrize("harness", ["mongod"], indirect=True)
def test_oversized_store_document_is_rejected(harness):
    # About the largest metadata that fits beside a short store name; beside
    # a store name of 4096 bytes the store document is over 16 MiB.
    metadata = {"m": "x" * (BSON_LIMIT_BYTES - 256 - 30)}
    before = harness.run(snapshot(harness.collection))

    with pytest.raises(Exception) as raised:
        harness.run(harness.service.create_store("n" * MAX_NAME_BYTES, metadata))

    check_rejection(raised.value, BadCall("create_store", "metadata", None, ValueError))
    assert harness.run(snapshot(harness.collection)) == before


@pytest.mark.parametrize("batch_size", [2**63, 10**30], ids=["2**63", "10**30"])
@pytest.mark.parametrize("harness", ["mongomock", "mongod"], indirect=True)
def test_huge_batch_size_works_or_rejected(harness, batch_size):
    try:
        keys = harness.run(call(harness.service, "iter_keys", batch_size=batch_size))
    except Exception as error:
        check_rejection(error, BadCall("iter_keys", "batch_size", None, ValueError))
        return

    assert keys == ["draft", "theme"]


# Constructors and settings.

CONSTRUCTORS: dict[str, Callable[[Any, Any], Any]] = {
    "service": lambda dataset_id, _: ExecutionStoreService(
        dataset_id=dataset_id, settings=UNREACHABLE
    ),
    "service-with-repo": lambda dataset_id, collection: ExecutionStoreService(
        repo=MongoExecutionStoreRepo(collection, None), dataset_id=dataset_id
    ),
    "repo": lambda dataset_id, collection: MongoExecutionStoreRepo(
        collection, dataset_id
    ),
    "sync-service": lambda dataset_id, _: SyncExecutionStoreService(
        dataset_id=dataset_id, settings=UNREACHABLE
    ),
}


@pytest.mark.parametrize(
    "construct", list(CONSTRUCTORS.values()), ids=list(CONSTRUCTORS)
)
@pytest.mark.parametrize(
    ("dataset_id", "kind"),
    [pytest.param(value, kind, id=label) for value, kind, label in BAD_DATASET_IDS],
)
def test_bad_dataset_id_is_rejected(construct, dataset_id, kind):
    collection = AsyncMongoMockClient(tz_aware=True).db[COLLECTION_NAME]

    with pytest.raises(Exception) as raised:
        construct(dataset_id, collection)

    check_rejection(raised.value, BadCall("__init__", "dataset_id", dataset_id, kind))


@pytest.mark.parametrize(
    "dataset_id",
    [
        ObjectId("65a1b2c3d4e5f60718293a4b"),
        "65a1b2c3d4e5f60718293a4b",
        "65A1B2C3D4E5F60718293A4B",
    ],
    ids=["object-id", "hex", "upper-case-hex"],
)
def test_valid_dataset_id_is_normalized(dataset_id):
    collection = AsyncMongoMockClient(tz_aware=True).db[COLLECTION_NAME]

    for construct in (CONSTRUCTORS["service"], CONSTRUCTORS["repo"]):
        built = construct(dataset_id, collection)
        assert built.dataset_id == ObjectId("65a1b2c3d4e5f60718293a4b")


def run_first_call(service: ExecutionStoreService) -> None:
    """Run one read and one write on ``service``, then close it."""

    async def use() -> None:
        try:
            await service.list_stores()
            await service.set_key("settings", "theme", "dark")
        finally:
            await service.close()

    asyncio.run(use())


# Collection and database names that MongoDB rejects: some only on the server.
BAD_COLLECTION_NAMES = [
    (7, TypeError, "int"),
    (b"store", TypeError, "bytes"),
    (SECRET + "\x00", ValueError, "nul"),
    ("a$b", ValueError, "dollar"),
    (".store", ValueError, "leading-dot"),
    ("store.", ValueError, "trailing-dot"),
    ("a..b", ValueError, "double-dot"),
    ("system.store", ValueError, "system-prefix"),
    ("x" * 300, ValueError, "namespace-too-long"),
]

BAD_DATABASE_NAMES = [
    (7, TypeError, "int"),
    ("", ValueError, "empty"),
    ("a b", ValueError, "space"),
    ("a.b", ValueError, "dot"),
    ("a/b", ValueError, "slash"),
    ("a$b", ValueError, "dollar"),
    (SECRET + "\x00", ValueError, "nul"),
    ("x" * 100, ValueError, "too-long"),
]

BAD_TIMEOUTS = [
    (0, ValueError, "zero"),
    (-1, ValueError, "negative"),
    (math.nan, ValueError, "nan"),
    (math.inf, ValueError, "inf"),
    (1e30, ValueError, "huge"),
    ("5", TypeError, "str"),
    (None, TypeError, "none"),
    (True, TypeError, "bool"),
]


@pytest.fixture
def database_name(mongod) -> Iterator[str]:
    """Return a fresh database name on the real server; drop it afterwards."""
    name = unique_database_name()
    yield name
    with MongoClient(mongod.uri) as client:
        client.drop_database(name)


def database_exists(uri: str, name: str) -> bool:
    with MongoClient(uri) as client:
        return name in client.list_database_names()


@pytest.mark.mongod_only
@pytest.mark.parametrize(
    ("collection_name", "kind"),
    [
        pytest.param(value, kind, id=label)
        for value, kind, label in BAD_COLLECTION_NAMES
    ],
)
def test_bad_collection_name_is_rejected(mongod, database_name, collection_name, kind):
    config = Settings(database_uri=mongod.uri, database_name=database_name)

    with pytest.raises(Exception) as raised:
        run_first_call(
            ExecutionStoreService(collection_name=collection_name, settings=config)
        )

    expected = BadCall("__init__", "collection_name", collection_name, kind)
    check_rejection(raised.value, expected)
    assert not database_exists(mongod.uri, database_name)


@pytest.mark.mongod_only
@pytest.mark.parametrize(
    ("name", "kind"),
    [pytest.param(value, kind, id=label) for value, kind, label in BAD_DATABASE_NAMES],
)
def test_bad_database_name_is_rejected(mongod, name, kind):
    with pytest.raises(Exception) as raised:
        config = Settings(database_uri=mongod.uri, database_name=name)
        run_first_call(ExecutionStoreService(settings=config))

    check_rejection(raised.value, BadCall("Settings", "database_name", name, kind))


@pytest.mark.mongod_only
@pytest.mark.parametrize(
    ("timeout", "kind"),
    [pytest.param(value, kind, id=label) for value, kind, label in BAD_TIMEOUTS],
)
def test_bad_timeout_is_rejected(mongod, database_name, timeout, kind):
    with pytest.raises(Exception) as raised:
        config = Settings(
            database_uri=mongod.uri,
            database_name=database_name,
            timeout_seconds=timeout,
        )
        run_first_call(ExecutionStoreService(settings=config))

    check_rejection(
        raised.value,
        BadCall("Settings", "timeout_seconds", timeout, kind),
    )
    assert not database_exists(mongod.uri, database_name)


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        pytest.param(5, TypeError, id="int"),
        pytest.param(b"mongodb://127.0.0.1:9/", TypeError, id="bytes"),
        pytest.param("", ValueError, id="empty"),
        pytest.param("http://127.0.0.1:9/", ValueError, id="not-mongodb"),
    ],
)
def test_bad_database_uri_is_rejected(tmp_path, uri, kind):
    # With an empty URI a lax check would fall back to the embedded server;
    # the missing binary keeps that from starting a mongod.
    with pytest.raises(Exception) as raised:
        config = Settings(
            database_uri=uri,
            data_dir=tmp_path,
            mongod=str(tmp_path / "no-mongod"),
            timeout_seconds=0.2,
        )
        run_first_call(ExecutionStoreService(settings=config))

    check_rejection(raised.value, BadCall("Settings", "database_uri", uri, kind))


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        pytest.param("repo", "mongodb://127.0.0.1:9/", id="repo-str"),
        pytest.param(
            "settings", {"database_uri": "mongodb://127.0.0.1:9/"}, id="settings-dict"
        ),
        pytest.param("clock", 5, id="clock-int"),
        pytest.param("clock", SECRET, id="clock-str"),
    ],
)
def test_bad_constructor_type_is_rejected(argument, value):
    arguments: dict[str, Any] = {"settings": UNREACHABLE, argument: value}

    with pytest.raises(Exception) as raised:
        run_first_call(ExecutionStoreService(**arguments))

    check_rejection(raised.value, BadCall("__init__", argument, value, TypeError))


# Valid names that look like query syntax or are unusual must round-trip.

VALID_NAMES = [
    pytest.param("$set", id="dollar-operator"),
    pytest.param("$where", id="dollar-where"),
    pytest.param("a.b", id="dot"),
    pytest.param(".", id="only-dot"),
    pytest.param(".*", id="regex-any"),
    pytest.param("^a+$", id="regex-anchors"),
    pytest.param("[abc]|(d)", id="regex-class-group"),
    pytest.param("a\\d{2}?", id="regex-escape-quantifier"),
    pytest.param('{"$ne": null}', id="query-json"),
    pytest.param(" ", id="space"),
    pytest.param("  padded name  ", id="padded"),
    pytest.param("tab\tnew\nline", id="control-whitespace"),
    pytest.param("日本語の名前", id="cjk"),
    pytest.param("🙂 emoji", id="emoji"),
    pytest.param("\u202eright-to-left", id="bidi-override"),
    pytest.param("x" * MAX_NAME_BYTES, id="4096-bytes"),
    pytest.param("é" * (MAX_NAME_BYTES // 2), id="4096-utf8-bytes"),
]

# Names a regex or prefix match of the names above would wrongly include.
NEIGHBOUR_NAMES = ["abc", "ab", "aab", "a", "xa.b", "$sets", "日本語"]


@pytest.mark.parametrize("name", VALID_NAMES)
@pytest.mark.parametrize("harness", ["mongomock", "mongod"], indirect=True)
def test_valid_store_name_round_trips(harness, name):
    service = harness.context(ObjectId())

    async def round_trip() -> None:
        for neighbour in NEIGHBOUR_NAMES:
            await service.set_key(neighbour, "theme", "dark")

        created = await service.create_store(name, {"owner": name})
        written = await service.set_cache_key(name, "theme", name, ttl=60)

        assert created.store_name == name
        assert written.store_name == name
        assert (await service.get_store(name)).metadata == {"owner": name}
        assert (await service.get_key(name, "theme")).value == name
        assert await service.list_keys(name) == ["theme"]
        assert await service.count_keys(name) == 1
        assert [key async for key in service.iter_keys(name)] == ["theme"]
        assert await service.has_store(name) is True
        assert await service.has_store_global(name) is True
        assert await service.list_stores() == sorted({name, *NEIGHBOUR_NAMES})
        assert await service.clear_cache(name) == 1
        assert await service.delete_store_global(name) == 1
        assert await service.list_stores() == sorted(NEIGHBOUR_NAMES)
        for neighbour in NEIGHBOUR_NAMES:
            assert await service.list_keys(neighbour) == ["theme"]
        await service.cleanup()

    harness.run(round_trip())


@pytest.mark.parametrize("name", VALID_NAMES)
@pytest.mark.parametrize("harness", ["mongomock", "mongod"], indirect=True)
def test_valid_key_round_trips(harness, name):
    service = harness.context(ObjectId())

    async def round_trip() -> None:
        for neighbour in NEIGHBOUR_NAMES:
            await service.set_key("settings", neighbour, "dark")

        written = await service.set_key("settings", name, name)

        assert written.key == name
        assert (await service.get_key("settings", name)).value == name
        assert list(await service.get_keys("settings", [name])) == [name]
        assert name in await service.list_keys("settings")
        assert (await service.update_ttl("settings", name, 60)).key == name
        assert await service.delete_key("settings", name) is True
        assert await service.list_keys("settings") == sorted(NEIGHBOUR_NAMES)
        await service.cleanup()

    harness.run(round_trip())


async def test_normalization_forms_are_different_names(service):
    composed = unicodedata.normalize("NFC", "café")
    decomposed = unicodedata.normalize("NFD", "café")

    await service.set_key(composed, composed, "composed")
    await service.set_key(decomposed, decomposed, "decomposed")

    assert (await service.get_key(composed, composed)).value == "composed"
    assert (await service.get_key(decomposed, decomposed)).value == "decomposed"
    assert await service.list_stores() == sorted([composed, decomposed])


async def test_reserved_key_is_a_valid_store_name(service):
    await service.create_store("__store__", {"owner": "ops"})
    await service.set_key("__store__", "theme", "dark")

    assert (await service.get_store("__store__")).metadata == {"owner": "ops"}
    assert await service.list_keys("__store__") == ["theme"]


# Generated bad input.

_text = st.text(max_size=6)
_valid_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=6,
)

# Objects of many types, none of them a str.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.complex_numbers(),
    st.binary(max_size=6),
    st.decimals(),
    st.fractions(),
    st.datetimes(),
    st.timedeltas(),
    st.uuids(),
    st.builds(ObjectId),
    st.builds(Unencodable),
    st.lists(_text, max_size=3),
    st.tuples(_text),
    st.sets(st.integers(), max_size=3),
    st.dictionaries(_text, st.integers(), max_size=2),
    st.sampled_from([{"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, {"$exists": True}]),
    st.sampled_from(
        [int, bytes, bytearray, list, dict, frozenset, range, date]
    ).flatmap(st.from_type),
)

invalid_texts = st.one_of(
    st.just(""),
    st.tuples(_text, _text).map(lambda parts: f"{parts[0]}\x00{parts[1]}"),
    st.tuples(
        _text, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), _text
    ).map("".join),
    st.tuples(_valid_text.filter(bool), st.integers(0, 100)).map(
        lambda args: args[0] * (MAX_NAME_BYTES // len(args[0].encode()) + 1 + args[1])
    ),
)

bad_names = st.one_of(junk, invalid_texts)
bad_keys = st.one_of(bad_names, st.just("__store__"))


def _is_ttl_type(value: Any) -> bool:
    return isinstance(value, (int, float, timedelta)) and not isinstance(value, bool)


bad_ttls = st.one_of(
    junk.filter(lambda value: value is not None and not _is_ttl_type(value)),
    st.integers(max_value=0),
    st.floats(max_value=0),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(min_value=MAX_TTL_SECONDS + 1),
    st.floats(min_value=MAX_TTL_SECONDS + 1, allow_infinity=False),
    st.timedeltas(max_value=timedelta(0)),
    st.timedeltas(min_value=timedelta(seconds=MAX_TTL_SECONDS, microseconds=1)),
)
bad_policies = st.one_of(
    junk, st.text().filter(lambda text: text not in ("persist", "evict"))
)

_poison = st.one_of(
    st.builds(Unencodable),
    st.sets(st.integers(), max_size=2),
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63) - 1),
    st.complex_numbers(),
    st.decimals(),
    st.fractions(),
    st.uuids(),
    st.dates(),
    st.dictionaries(
        st.integers() | st.binary() | st.tuples(_text),
        st.integers(),
        min_size=1,
        max_size=2,
    ),
    _text.map(lambda text: {f"{text}\x00": 1}),
    invalid_texts.filter(lambda text: any(0xD800 <= ord(c) <= 0xDFFF for c in text)),
)
# Containers with poison at every leaf.
unstorable_values = st.recursive(
    _poison,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=2),
        st.dictionaries(_valid_text, children, min_size=1, max_size=2),
    ),
    max_leaves=4,
)


@st.composite
def generated_bad_calls(draw: st.DrawFn) -> BadCall:
    """Draw a method, one of its arguments and a bad value for it."""
    # The argument first, so that store_name, which every method takes, gets
    # no more cases than the rest.
    argument = draw(st.sampled_from(ARGUMENTS))
    method = draw(st.sampled_from(methods_taking(argument)))

    if argument == "store_name":
        value = draw(
            bad_names.filter(lambda name: method != "clear_cache" or name is not None)
        )
    elif argument == "key":
        value = draw(bad_keys)
    elif argument == "ttl":
        value = draw(bad_ttls | st.just(None) if method == "update_ttl" else bad_ttls)
    elif argument == "policy":
        value = draw(bad_policies)
    elif argument == "value":
        value = draw(unstorable_values)
    elif argument == "metadata":
        value = draw(
            junk.filter(lambda item: item is not None and not isinstance(item, dict))
            | st.dictionaries(_valid_text, unstorable_values, min_size=1, max_size=2)
        )
    elif argument == "exist_ok":
        value = draw(junk.filter(lambda item: not isinstance(item, bool)))
    elif argument == "batch_size":
        value = draw(
            junk.filter(
                lambda item: not isinstance(item, int) or isinstance(item, bool)
            )
            | st.integers(max_value=0)
        )
    elif argument == "keys":
        value = draw(
            st.one_of(
                # Lists, sets and ranges may be empty or contain only str keys,
                # which is valid; lists of bad keys come from the next line.
                junk.filter(
                    lambda item: (
                        not isinstance(
                            item, (list, tuple, set, frozenset, range, bytearray)
                        )
                    )
                ),
                st.lists(bad_keys, min_size=1, max_size=3).map(
                    lambda bad: ["theme", *bad]
                ),
            )
        )
    else:  # set_keys values
        value = draw(
            st.one_of(
                junk.filter(lambda item: not isinstance(item, dict)),
                bad_keys.filter(
                    lambda key: isinstance(key, (str, int, bytes, type(None)))
                ).map(lambda key: {"theme": "dark", key: "dark"}),
                unstorable_values.map(lambda bad: {"theme": "dark", "other": bad}),
            )
        )
    return BadCall(method, argument, value, (ValueError, TypeError))


# How many generated bad calls replaced each argument, over one test.
GENERATED_CALLS: collections.Counter[str] = collections.Counter()


def example_budget(
    request: pytest.FixtureRequest, on_mongomock: int, on_mongod: int
) -> int:
    """Return the example budget of this backend; ten times more with --run-slow."""
    on_mock = request.node.callspec.params["harness"] == "mongomock"
    examples = on_mongomock if on_mock else on_mongod
    return examples * 10 if request.config.getoption("--run-slow") else examples


@pytest.mark.parametrize("harness", ["mongomock", "mongod"], indirect=True)
def test_generated_bad_arguments_are_rejected(request, harness):
    @settings(
        max_examples=example_budget(request, on_mongomock=400, on_mongod=60),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(bad=generated_bad_calls())
    def check(bad: BadCall) -> None:
        GENERATED_CALLS[bad.argument] += 1
        check_bad_call(harness, bad)

    GENERATED_CALLS.clear()
    try:
        check()
    finally:
        counts = dict(sorted(GENERATED_CALLS.items()))
        print(f"\ngenerated bad calls by argument: {counts}")


@pytest.mark.parametrize("harness", ["mongomock", "mongod"], indirect=True)
def test_generated_valid_names_round_trip(request, harness):
    service = harness.context(ObjectId())
    names = st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs",), blacklist_characters="\x00"
        ),
        min_size=1,
        max_size=12,
    )

    @settings(
        max_examples=example_budget(request, on_mongomock=200, on_mongod=40),
        deadline=None,
    )
    @given(store_name=names, key=names.filter(lambda key: key != "__store__"))
    def check(store_name: str, key: str) -> None:
        async def round_trip() -> None:
            await service.set_key(store_name, key, [store_name, key])
            assert (await service.get_key(store_name, key)).value == [store_name, key]
            assert await service.list_keys(store_name) == [key]
            assert await service.list_stores() == [store_name]
            assert (await service.delete_store(store_name)).store_name == store_name
            assert await service.list_stores() == []

        harness.run(round_trip())

    check()
