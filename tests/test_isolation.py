"""Isolation: operations in one context never change what another context shows.

A property test on a real mongod. Three contexts (two datasets and the global
context) are seeded with the same store names and keys in every state: store
documents, persistent keys, evictable keys and keys that have already expired.
Each context also gets a document in the layout other tools write, without
policy or created_at, and for the global context without a dataset_id field.

Hypothesis then runs a random sequence of operations in one context, on the
same names, and checks that each other context shows exactly what it showed
before: its stores and store documents, its keys and values, its counts, its
entries in ``list_stores_global``, and its raw documents. The clock stands
still during a sequence, so nothing expires in between.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId
from conftest import COLLECTION_NAME, FakeClock, unique_database_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from motor.motor_asyncio import AsyncIOMotorClient

from execstore import ExecutionStoreService, MongoExecutionStoreRepo

CONTEXTS = ("first", "second", "global")
STORE_NAMES = ("settings", "cache", "$runs.v1")
KEYS = ("theme", "draft", "k.1", "$k2")

store_names = st.sampled_from(STORE_NAMES)
keys = st.sampled_from(KEYS)
key_lists = st.lists(keys, max_size=5)
ttls = st.sampled_from([None, 0.001, 1, 60, timedelta(hours=1)])
policies = st.sampled_from(["persist", "evict"])
values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=5),
    st.lists(st.integers(min_value=0, max_value=9), max_size=3),
)

# Every method that stays in the service's context, and the global reads.
operations = st.one_of(
    st.tuples(
        st.just("create_store"),
        st.fixed_dictionaries(
            {
                "store_name": store_names,
                "metadata": st.none() | st.just({"owner": "other"}),
                "policy": policies,
                "exist_ok": st.just(True),
            }
        ),
    ),
    st.tuples(st.just("get_store"), st.fixed_dictionaries({"store_name": store_names})),
    st.tuples(st.just("has_store"), st.fixed_dictionaries({"store_name": store_names})),
    st.tuples(st.just("list_stores"), st.just({})),
    st.tuples(st.just("count_stores"), st.just({})),
    st.tuples(
        st.just("delete_store"), st.fixed_dictionaries({"store_name": store_names})
    ),
    st.tuples(st.just("cleanup"), st.just({})),
    st.tuples(
        st.just("set_key"),
        st.fixed_dictionaries(
            {
                "store_name": store_names,
                "key": keys,
                "value": values,
                "ttl": ttls,
                "policy": policies,
            }
        ),
    ),
    st.tuples(
        st.just("set_cache_key"),
        st.fixed_dictionaries(
            {"store_name": store_names, "key": keys, "value": values, "ttl": ttls}
        ),
    ),
    st.tuples(
        st.just("get_key"),
        st.fixed_dictionaries({"store_name": store_names, "key": keys}),
    ),
    st.tuples(
        st.just("has_key"),
        st.fixed_dictionaries({"store_name": store_names, "key": keys}),
    ),
    st.tuples(
        st.just("delete_key"),
        st.fixed_dictionaries({"store_name": store_names, "key": keys}),
    ),
    st.tuples(
        st.just("update_ttl"),
        st.fixed_dictionaries(
            {"store_name": store_names, "key": keys, "ttl": ttls.filter(bool)}
        ),
    ),
    st.tuples(st.just("list_keys"), st.fixed_dictionaries({"store_name": store_names})),
    st.tuples(
        st.just("count_keys"), st.fixed_dictionaries({"store_name": store_names})
    ),
    st.tuples(
        st.just("iter_keys"),
        st.fixed_dictionaries(
            {"store_name": store_names, "batch_size": st.sampled_from([1, 1000])}
        ),
    ),
    st.tuples(
        st.just("clear_cache"),
        st.fixed_dictionaries({"store_name": st.none() | store_names}),
    ),
    st.tuples(
        st.just("get_keys"),
        st.fixed_dictionaries({"store_name": store_names, "keys": key_lists}),
    ),
    st.tuples(
        st.just("set_keys"),
        st.fixed_dictionaries(
            {
                "store_name": store_names,
                "values": st.dictionaries(keys, values, max_size=4),
                "ttl": ttls,
                "policy": policies,
            }
        ),
    ),
    st.tuples(
        st.just("delete_keys"),
        st.fixed_dictionaries({"store_name": store_names, "keys": key_lists}),
    ),
    st.tuples(st.just("list_stores_global"), st.just({})),
    st.tuples(st.just("count_stores_global"), st.just({})),
    st.tuples(
        st.just("has_store_global"), st.fixed_dictionaries({"store_name": store_names})
    ),
)

OPERATION_NAMES = frozenset(
    {
        "create_store",
        "get_store",
        "has_store",
        "list_stores",
        "count_stores",
        "delete_store",
        "cleanup",
        "set_key",
        "set_cache_key",
        "get_key",
        "has_key",
        "delete_key",
        "update_ttl",
        "list_keys",
        "count_keys",
        "iter_keys",
        "clear_cache",
        "get_keys",
        "set_keys",
        "delete_keys",
        "list_stores_global",
        "count_stores_global",
        "has_store_global",
    }
)

# How often each operation ran over one test run.
OPERATION_CALLS: collections.Counter[str] = collections.Counter()


@dataclass
class Contexts:
    """Services of three contexts on one collection, with their event loop."""

    loop: asyncio.AbstractEventLoop
    collection: Any
    clock: FakeClock
    dataset_ids: dict[str, ObjectId | None]
    services: dict[str, ExecutionStoreService]

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)


async def _connect(uri: str) -> AsyncIOMotorClient:
    # Created inside a coroutine so that Motor binds to the test's loop.
    return AsyncIOMotorClient(uri, tz_aware=True)


@pytest.fixture
def contexts(mongod) -> Iterator[Contexts]:
    """Return services of two datasets and the global context on the real server.

    The second dataset's service is built from the id's hex string. The clock
    starts a day ahead of the real time, so the server's TTL monitor removes no
    document that the test counts on.
    """
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(_connect(mongod.uri))
    database_name = unique_database_name()
    collection = client[database_name][COLLECTION_NAME]
    clock = FakeClock(FakeClock().now + timedelta(days=1))
    first, second = ObjectId(), ObjectId()
    dataset_ids = {"first": first, "second": second, "global": None}
    arguments = {"first": first, "second": str(second), "global": None}
    services = {
        name: ExecutionStoreService(
            repo=MongoExecutionStoreRepo(collection, arguments[name]), clock=clock
        )
        for name in CONTEXTS
    }
    try:
        yield Contexts(loop, collection, clock, dataset_ids, services)
    finally:
        loop.run_until_complete(client.drop_database(database_name))
        client.close()
        loop.close()


async def seed(contexts: Contexts) -> None:
    """Give every context the same names in every state a key can be in."""
    await contexts.collection.delete_many({})
    for name, service in contexts.services.items():
        await service.set_cache_key("cache", "theme", f"{name} expired", ttl=1)
        await service.set_key(
            "$runs.v1", "k.1", f"{name} expired", ttl=timedelta(seconds=1)
        )
    contexts.clock.advance(2)
    for name, service in contexts.services.items():
        await service.create_store("settings", {"owner": name}, policy="evict")
        await service.set_key("settings", "theme", f"{name} theme")
        await service.set_key("settings", "draft", f"{name} draft", policy="evict")
        await service.set_cache_key("cache", "draft", f"{name} draft", ttl=3600)
        await service.set_keys("$runs.v1", {"$k2": name, "theme": [1, 2]}, ttl=60)

    # Documents in the layout other tools write: no policy, no created_at, and
    # for the global context no dataset_id field at all.
    expires_at = contexts.clock() + timedelta(hours=1)
    for name, dataset_id in contexts.dataset_ids.items():
        document = {"store_name": "cache", "key": "k.1", "value": name}
        document["expires_at"] = expires_at
        if dataset_id is not None:
            document["dataset_id"] = dataset_id
        await contexts.collection.insert_one(document)


async def visible_state(contexts: Contexts, name: str) -> dict[str, Any]:
    """Return all that context ``name`` shows, and its raw documents."""
    service = contexts.services[name]
    dataset_id = contexts.dataset_ids[name]
    state: dict[str, Any] = {
        "list_stores": await service.list_stores(),
        "count_stores": await service.count_stores(),
        "global_entries": [
            store
            for store in await service.list_stores_global()
            if store.dataset_id == dataset_id
        ],
        "raw": [
            document
            async for document in contexts.collection.find(
                {"dataset_id": dataset_id}, sort=[("_id", 1)]
            )
        ],
    }
    for store_name in STORE_NAMES:
        state[store_name] = {
            "get_store": await service.get_store(store_name),
            "has_store": await service.has_store(store_name),
            "list_keys": await service.list_keys(store_name),
            "count_keys": await service.count_keys(store_name),
            "iter_keys": [key async for key in service.iter_keys(store_name)],
            "get_keys": await service.get_keys(store_name, KEYS),
        }
    return state


async def apply(
    service: ExecutionStoreService, method: str, arguments: dict[str, Any]
) -> None:
    OPERATION_CALLS[method] += 1
    result = getattr(service, method)(**arguments)
    if method == "iter_keys":
        [key async for key in result]
    else:
        await result


def run_isolation_check(contexts: Contexts, examples: int) -> None:
    OPERATION_CALLS.clear()
    sequences = 0

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        acting=st.sampled_from(CONTEXTS),
        sequence=st.lists(operations, min_size=10, max_size=40),
    )
    def check(acting: str, sequence: list[tuple[str, dict[str, Any]]]) -> None:
        nonlocal sequences
        sequences += 1
        contexts.run(seed(contexts))
        others = [name for name in CONTEXTS if name != acting]
        before = {name: contexts.run(visible_state(contexts, name)) for name in others}
        assert all(before[name]["raw"] for name in others)

        for method, arguments in sequence:
            contexts.run(apply(contexts.services[acting], method, arguments))

        for name in others:
            after = contexts.run(visible_state(contexts, name))
            assert after == before[name], f"{acting} changed what {name} shows"

    check()
    operations_run = sum(OPERATION_CALLS.values())
    print(
        f"\nisolation: {sequences} sequences, {operations_run} operations; "
        f"{dict(sorted(OPERATION_CALLS.items()))}"
    )
    assert set(OPERATION_CALLS) == OPERATION_NAMES


@pytest.mark.mongod_only
def test_operations_leave_other_contexts_unchanged(contexts):
    run_isolation_check(contexts, examples=60)


@pytest.mark.mongod_only
@pytest.mark.slow
def test_operations_leave_other_contexts_unchanged_long(contexts):
    run_isolation_check(contexts, examples=1000)
