"""The comparisons that ``bench.run`` measures, each execstore call beside its baseline.

Every pair works on the same keys and values on both sides: reads cycle over
``KEY_COUNT`` keys written beforehand, writes overwrite ``KEY_COUNT`` keys of
another store, so after the warm-up round every write updates an existing key.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

from execstore import (
    ExecutionStoreService,
    MongoExecutionStoreRepo,
    Settings,
    SyncExecutionStoreService,
)

from . import raw
from .drivers import DRIVERS, LoopThreadClient, close_async_client, create_async_client
from .measure import PairResult, compare_async, compare_blocking

COLLECTION_NAME = "execution_store"
DATASET_ID = ObjectId("64b000000000000000000001")
GET_STORE = "bench-get"
SET_STORE = "bench-set"
BULK_STORE = "bench-bulk"
KEY_COUNT = 1000
KEYS = [f"key-{i:04d}" for i in range(KEY_COUNT)]
# A small structured value, typical of an operator's run record.
VALUE = {"status": "done", "count": 42, "tags": ["a", "b", "c"], "note": "x" * 64}
CONCURRENCIES = (1, 64)


@dataclass(frozen=True)
class Config:
    """How much work each comparison does.

    Attributes:
        ops: Operations per round at concurrency 1.
        ops_per_task: Operations per round of each of the 64 concurrent tasks.
        rounds: Measured rounds per side.
        bulk_keys: Keys per bulk write in the set_keys comparison.
        bulk_rounds: Measured rounds per side of the set_keys comparison.
    """

    ops: int
    ops_per_task: int
    rounds: int
    bulk_keys: int
    bulk_rounds: int


def _key(index: int) -> str:
    return KEYS[index % KEY_COUNT]


async def run_async_pairs(uri: str, database: str, config: Config) -> list[PairResult]:
    """Compare the async service with the raw driver, for each asyncio driver."""
    results: list[PairResult] = []
    for driver in DRIVERS:
        client = create_async_client(driver, uri)
        try:
            collection = client[database][COLLECTION_NAME]
            results += await _async_pairs_of_driver(driver, collection, config)
        finally:
            await close_async_client(client)
    return results


async def _async_pairs_of_driver(
    driver: str, collection: Any, config: Config
) -> list[PairResult]:
    # Both sides share one client, so they share its connection pool.
    service = ExecutionStoreService(
        repo=MongoExecutionStoreRepo(collection, DATASET_ID)
    )
    await service.set_keys(GET_STORE, dict.fromkeys(KEYS, VALUE))

    async def service_get(index: int) -> Any:
        return await service.get_key(GET_STORE, _key(index))

    async def raw_get(index: int) -> Any:
        return await raw.get_key(collection, GET_STORE, _key(index), DATASET_ID)

    async def service_set(index: int) -> Any:
        return await service.set_key(SET_STORE, _key(index), VALUE)

    async def raw_set(index: int) -> Any:
        return await raw.set_key(collection, SET_STORE, _key(index), VALUE, DATASET_ID)

    results = []
    for concurrency in CONCURRENCIES:
        get_pair = PairResult(
            f"get_key {driver} c={concurrency}", "async", "service.get_key", "find_one"
        )
        set_pair = PairResult(
            f"set_key {driver} c={concurrency}",
            "async",
            "service.set_key",
            "find_one_and_update",
        )
        for pair, side_a, side_b in (
            (get_pair, service_get, raw_get),
            (set_pair, service_set, raw_set),
        ):
            results.append(
                await compare_async(
                    pair,
                    side_a,
                    side_b,
                    ops=config.ops if concurrency == 1 else config.ops_per_task,
                    rounds=config.rounds,
                    concurrency=concurrency,
                )
            )
    results += await _bulk_pairs(driver, service, config)
    return results


async def _bulk_pairs(
    driver: str, service: ExecutionStoreService, config: Config
) -> list[PairResult]:
    """Compare set_keys with one set_key per key, on existing keys and on new ones.

    The two cases take different paths in set_keys: existing live keys are
    updated by _id, new keys are inserted. For new keys every call writes to
    a store of its own.
    """
    values = {f"bulk-{i:05d}": VALUE for i in range(config.bulk_keys)}
    fresh_stores = (f"{BULK_STORE}-{n}" for n in itertools.count())
    await service.set_keys(BULK_STORE, values)

    async def set_keys_existing(index: int) -> Any:
        return await service.set_keys(BULK_STORE, values)

    async def set_key_existing(index: int) -> None:
        for key, value in values.items():
            await service.set_key(BULK_STORE, key, value)

    async def set_keys_new(index: int) -> Any:
        return await service.set_keys(next(fresh_stores), values)

    async def set_key_new(index: int) -> None:
        store_name = next(fresh_stores)
        for key, value in values.items():
            await service.set_key(store_name, key, value)

    results = []
    for case, side_a, side_b in (
        ("existing", set_keys_existing, set_key_existing),
        ("new", set_keys_new, set_key_new),
    ):
        pair = PairResult(
            f"bulk {config.bulk_keys} {case} keys {driver}",
            "bulk",
            "service.set_keys",
            f"{config.bulk_keys} x service.set_key",
            unit=f"{config.bulk_keys} keys",
        )
        results.append(
            await compare_async(pair, side_a, side_b, ops=1, rounds=config.bulk_rounds)
        )
    return results


def run_sync_pairs(uri: str, database: str, config: Config) -> list[PairResult]:
    """Compare the sync wrapper with a loop-thread driver and with blocking PyMongo."""
    results: list[PairResult] = []
    blocking_client: MongoClient[dict[str, Any]]
    with MongoClient(uri, tz_aware=True) as blocking_client:
        blocking: Any = blocking_client[database][COLLECTION_NAME]
        for driver in DRIVERS:
            settings = Settings(database_uri=uri, database_name=database, driver=driver)
            with (
                SyncExecutionStoreService(
                    dataset_id=DATASET_ID, settings=settings
                ) as store,
                LoopThreadClient(driver, uri) as loop_client,
            ):
                store.set_keys(GET_STORE, dict.fromkeys(KEYS, VALUE))
                loop_collection = loop_client.client[database][COLLECTION_NAME]
                results += _sync_loop_pairs(
                    driver, store, loop_client, loop_collection, config
                )
                results += _sync_blocking_pairs(driver, store, blocking, config)
    return results


def _sync_loop_pairs(
    driver: str,
    store: SyncExecutionStoreService,
    loop_client: LoopThreadClient,
    collection: Any,
    config: Config,
) -> list[PairResult]:
    def sync_get(index: int) -> Any:
        return store.get_key(GET_STORE, _key(index))

    def loop_get(index: int) -> Any:
        return loop_client.run(
            raw.get_key(collection, GET_STORE, _key(index), DATASET_ID)
        )

    def sync_set(index: int) -> Any:
        return store.set_key(SET_STORE, _key(index), VALUE)

    def loop_set(index: int) -> Any:
        return loop_client.run(
            raw.set_key(collection, SET_STORE, _key(index), VALUE, DATASET_ID)
        )

    get_pair = PairResult(
        f"sync get_key {driver} vs loop thread",
        "sync-loop",
        "SyncExecutionStoreService.get_key",
        f"{driver} find_one on a loop thread",
    )
    set_pair = PairResult(
        f"sync set_key {driver} vs loop thread",
        "sync-loop",
        "SyncExecutionStoreService.set_key",
        f"{driver} find_one_and_update on a loop thread",
    )
    return [
        compare_blocking(
            get_pair, sync_get, loop_get, ops=config.ops, rounds=config.rounds
        ),
        compare_blocking(
            set_pair, sync_set, loop_set, ops=config.ops, rounds=config.rounds
        ),
    ]


def _sync_blocking_pairs(
    driver: str, store: SyncExecutionStoreService, collection: Any, config: Config
) -> list[PairResult]:
    def sync_get(index: int) -> Any:
        return store.get_key(GET_STORE, _key(index))

    def blocking_get(index: int) -> Any:
        return raw.get_key_blocking(collection, GET_STORE, _key(index), DATASET_ID)

    def sync_set(index: int) -> Any:
        return store.set_key(SET_STORE, _key(index), VALUE)

    def blocking_set(index: int) -> Any:
        return raw.set_key_blocking(
            collection, SET_STORE, _key(index), VALUE, DATASET_ID
        )

    get_pair = PairResult(
        f"sync get_key {driver} vs blocking",
        "sync-blocking",
        "SyncExecutionStoreService.get_key",
        "MongoClient find_one",
    )
    set_pair = PairResult(
        f"sync set_key {driver} vs blocking",
        "sync-blocking",
        "SyncExecutionStoreService.set_key",
        "MongoClient find_one_and_update",
    )
    return [
        compare_blocking(
            get_pair, sync_get, blocking_get, ops=config.ops, rounds=config.rounds
        ),
        compare_blocking(
            set_pair, sync_set, blocking_set, ops=config.ops, rounds=config.rounds
        ),
    ]
