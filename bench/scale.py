"""Scale mode: the same service calls on a large collection and on a nearly empty one.

The large collection contains ``keys`` keys spread over 1,000 stores, a third
of them in each of three contexts (the global one and two datasets). The
measured dataset context also has one large store of ``big_store_keys`` keys,
a store of 1,000 keys and a small store of 10 keys, and the global context a
small store of 10 keys. The nearly empty collection contains one key in each of
the 1,000 stores, the small stores and the 1,000-key store, so that listing
stores gives the same answer on both collections. Documents are bulk-inserted
in the stored layout, then the service builds the indexes on its first call.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

from execstore import ExecutionStoreService, MongoExecutionStoreRepo

from .drivers import DRIVERS, close_async_client, create_async_client
from .measure import PairResult, compare_async
from .pairs import COLLECTION_NAME, DATASET_ID, Config

STORES = 1000
CONTEXTS = (DATASET_ID, None, ObjectId("64b000000000000000000002"))
SMALL_STORE = "small"
SMALL_STORE_KEYS = 10
THOUSAND_STORE = "thousand"
BIG_STORE = "big"
INSERT_BATCH = 10_000
# Stored keys are small: the measured costs are those of indexes and scans.
STORED_VALUE = {"n": 1}


@dataclass(frozen=True)
class ScaleConfig:
    """Sizes of the scale run.

    Attributes:
        keys: Keys spread over the stores of the three contexts.
        big_store_keys: Keys of the one large store that iter_keys walks.
        pairs: Ops and rounds per comparison.
    """

    keys: int
    big_store_keys: int
    pairs: Config


def _document(
    store_name: str, key: str, dataset_id: ObjectId | None, now: datetime, index: int
) -> dict[str, Any]:
    # One key in ten is evictable with an expiry a day ahead, so the live
    # filter has both kinds of documents to tell apart.
    evictable = index % 10 == 0
    return {
        "store_name": store_name,
        "key": key,
        "value": STORED_VALUE,
        "dataset_id": dataset_id,
        "created_at": now,
        "updated_at": now,
        "expires_at": now + timedelta(days=1) if evictable else None,
        "policy": "evict" if evictable else "persist",
    }


def _spread_documents(keys: int, now: datetime) -> Iterator[dict[str, Any]]:
    for index in range(keys):
        store = index % STORES
        context = CONTEXTS[store % len(CONTEXTS)]
        yield _document(f"store-{store:04d}", f"key-{index:07d}", context, now, index)


def _store_documents(
    store_name: str, count: int, now: datetime, dataset_id: ObjectId | None
) -> Iterator[dict[str, Any]]:
    for index in range(count):
        yield _document(store_name, f"key-{index:07d}", dataset_id, now, index)


def _insert_all(collection: Any, documents: Iterator[dict[str, Any]]) -> None:
    batch: list[dict[str, Any]] = []
    for document in documents:
        batch.append(document)
        if len(batch) == INSERT_BATCH:
            collection.insert_many(batch, ordered=False)
            batch = []
    if batch:
        collection.insert_many(batch, ordered=False)


def fill(uri: str, database: str, config: ScaleConfig) -> dict[str, float]:
    """Fill the large and the nearly empty collection and return the seconds taken."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    started = time.monotonic()
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        large: Any = client[f"{database}_scale"][COLLECTION_NAME]
        _insert_all(large, _spread_documents(config.keys, now))
        big_store = _store_documents(BIG_STORE, config.big_store_keys, now, DATASET_ID)
        _insert_all(large, big_store)
        empty: Any = client[f"{database}_empty"][COLLECTION_NAME]
        _insert_all(empty, _spread_documents(STORES, now))
        for collection in (large, empty):
            for context in (DATASET_ID, None):
                small = _store_documents(SMALL_STORE, SMALL_STORE_KEYS, now, context)
                _insert_all(collection, small)
            thousand = _store_documents(THOUSAND_STORE, 1000, now, DATASET_ID)
            _insert_all(collection, thousand)
    return {"fill_seconds": round(time.monotonic() - started, 1)}


def _small_key(index: int) -> str:
    return f"key-{index % SMALL_STORE_KEYS:07d}"


async def _get_key(service: ExecutionStoreService, index: int) -> Any:
    return await service.get_key(SMALL_STORE, _small_key(index))


async def _set_key(service: ExecutionStoreService, index: int) -> Any:
    return await service.set_key(SMALL_STORE, _small_key(index), index)


async def _count_keys(service: ExecutionStoreService, index: int) -> Any:
    return await service.count_keys(SMALL_STORE)


async def _get_store(service: ExecutionStoreService, index: int) -> Any:
    return await service.get_store(SMALL_STORE)


async def _list_stores(service: ExecutionStoreService, index: int) -> Any:
    return await service.list_stores()


async def _count_stores(service: ExecutionStoreService, index: int) -> Any:
    return await service.count_stores()


Operation = tuple[str, int, int, Callable[[ExecutionStoreService, int], Any]]


def _dataset_operations(config: Config) -> list[Operation]:
    """Return the calls measured in the dataset context: name, ops, rounds, call."""
    # A listing call returns hundreds of names, so it runs once per round.
    small_store = f"a {SMALL_STORE_KEYS}-key store"
    return [
        ("get_key", config.ops, config.rounds, _get_key),
        ("set_key", config.ops, config.rounds, _set_key),
        (f"count_keys of {small_store}", config.ops, config.rounds, _count_keys),
        (f"get_store of {small_store}", config.ops, config.rounds, _get_store),
        ("list_stores", 1, config.rounds, _list_stores),
        ("count_stores", 1, config.rounds, _count_stores),
    ]


def _global_operations(config: Config) -> list[Operation]:
    """Return the calls measured in the global context."""
    return [
        ("list_stores, global context", 1, config.rounds, _list_stores),
        ("count_stores, global context", 1, config.rounds, _count_stores),
    ]


async def _measure_pairs(
    large: ExecutionStoreService,
    empty: ExecutionStoreService,
    operations: list[Operation],
) -> list[PairResult]:
    results = []
    for name, ops, rounds, call in operations:
        print(f"  measuring {name}", flush=True)
        pair = PairResult(
            f"scale {name}", "scale", "large collection", "nearly empty collection"
        )

        async def on_large(index: int, call: Any = call) -> Any:
            return await call(large, index)

        async def on_empty(index: int, call: Any = call) -> Any:
            return await call(empty, index)

        results.append(
            await compare_async(pair, on_large, on_empty, ops=ops, rounds=rounds)
        )
    return results


async def _iteration_memory(
    service: ExecutionStoreService, store_name: str
) -> dict[str, Any]:
    """Iterate a store's keys and return the count, time and peak memory growth."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        started = time.perf_counter()
        count = 0
        async for _ in service.iter_keys(store_name):
            count += 1
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {
        "keys": count,
        "seconds": round(seconds, 2),
        "peak_growth_bytes": peak - baseline,
    }


def _services(
    client: Any, database: str, dataset_id: ObjectId | None
) -> tuple[ExecutionStoreService, ExecutionStoreService]:
    """Return services of one context on the large and the nearly empty collection."""
    large, empty = (
        ExecutionStoreService(
            repo=MongoExecutionStoreRepo(client[name][COLLECTION_NAME], dataset_id)
        )
        for name in (f"{database}_scale", f"{database}_empty")
    )
    return large, empty


async def build_indexes(uri: str, database: str) -> float:
    """Let the service build its indexes on both collections and return the seconds."""
    client = create_async_client(DRIVERS[0], uri)
    started = time.monotonic()
    try:
        for service in _services(client, database, DATASET_ID):
            await service.has_store(SMALL_STORE)
    finally:
        await close_async_client(client)
    return round(time.monotonic() - started, 1)


async def _scale_with_driver(
    driver: str, uri: str, database: str, config: ScaleConfig
) -> dict[str, Any]:
    client = create_async_client(driver, uri)
    try:
        large, empty = _services(client, database, DATASET_ID)
        pairs = await _measure_pairs(large, empty, _dataset_operations(config.pairs))
        global_large, global_empty = _services(client, database, None)
        pairs += await _measure_pairs(
            global_large, global_empty, _global_operations(config.pairs)
        )
        small = await _iteration_memory(large, THOUSAND_STORE)
        big = await _iteration_memory(large, BIG_STORE)
    finally:
        await close_async_client(client)
    return {
        "driver": driver,
        "pairs": pairs,
        "iter_keys": {"1000 keys": small, f"{config.big_store_keys} keys": big},
    }


def format_scale(report: dict[str, Any]) -> str:
    """Return the scale results as a plain-text table."""
    lines = [
        f"scale: {report['keys']} keys over {STORES} stores in 3 contexts, "
        f"a store of {report['big_store_keys']} keys, filled in "
        f"{report['fill_seconds']} s, indexed in {report['index_seconds']} s",
        f"{'operation':<40} {'large µs':>10} {'empty µs':>10} {'ratio':>7}",
    ]
    for run in report["drivers"]:
        lines.append(f"[{run['driver']}]")
        for pair in run["pairs"]:
            lines.append(
                f"{pair['name']:<40} {pair['a_median_us']:>10.1f} "
                f"{pair['b_median_us']:>10.1f} {pair['ratio']:>7.2f}"
            )
        for label, figures in run["iter_keys"].items():
            lines.append(
                f"iter_keys over {label}: {figures['keys']} keys in "
                f"{figures['seconds']} s, peak traced memory growth "
                f"{figures['peak_growth_bytes'] / 1024:.0f} KiB"
            )
    return "\n".join(lines)


def run_scale(uri: str, database: str, config: ScaleConfig) -> dict[str, Any]:
    """Fill the collections, measure with each driver, print and return the figures."""
    report: dict[str, Any] = {
        "keys": config.keys,
        "big_store_keys": config.big_store_keys,
    }
    print(f"scale: filling {config.keys + config.big_store_keys} keys", flush=True)
    report |= fill(uri, database, config)
    print("scale: building the indexes", flush=True)
    report["index_seconds"] = asyncio.run(build_indexes(uri, database))
    report["drivers"] = []
    for driver in DRIVERS:
        print(f"scale: measuring with {driver}", flush=True)
        run = asyncio.run(_scale_with_driver(driver, uri, database, config))
        run["pairs"] = [pair.to_json() for pair in run["pairs"]]
        report["drivers"].append(run)
    print(format_scale(report))
    return report
