"""Concurrent load from several processes against one real mongod.

Each worker process runs many writers at once on one shared set of keys: async
tasks on ExecutionStoreService, or threads on SyncExecutionStoreService. The
writers set, overwrite, expire and delete the same keys for a few seconds.
Every operation is logged with its start and end on ``time.monotonic()``,
which on Linux is one system-wide clock, so the logs of all processes can be
compared after the run.

Every value is ``{"writer": writer_id, "seq": n}``, unique across the run, so
a value read identifies the write that stored it. The checks use only what a
single MongoDB document guarantees:

- no operation raises, and no (dataset_id, store_name, key) has two documents;
- a read returns None or a value written to that key by a write that started
  before the read ended;
- a read never returns the value of write X when another write or delete of
  the same key started after X was acknowledged and was itself acknowledged
  before the read started. A value that is live at the read was live ever
  since its write, because only ``update_ttl`` changes an expiry and it
  skips expired keys;
- after the run, every live key contains the value of a write that no later
  write or delete of that key followed, and counts agree with listings.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import threading
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from bson import ObjectId
from conftest import COLLECTION_NAME
from pymongo import MongoClient

from execstore import ExecutionStoreService, Settings, SyncExecutionStoreService

pytestmark = pytest.mark.mongod_only  # several processes need one shared server

PROCESSES = 3
WRITERS_PER_PROCESS = 20
LOAD_SECONDS = 3.0
KEYS = [f"key-{n:02d}" for n in range(24)]
STORES = ["load-a", "load-b"]
# Short TTLs, so that keys expire while the load runs. Every check waits for
# the longest one to pass before it reads the final state.
TTL_SECONDS = (0.05, 0.2, 0.5)
SHARED_STORES = [f"shared-{n:02d}" for n in range(30)]
# Bounds for a machine that other jobs load: they cap the test, never its pace.
WORKER_START_SECONDS = 90.0
WORKER_RESULT_SECONDS = 90.0


@dataclass(frozen=True)
class Operation:
    """One call that a writer made, as the checks need it.

    Attributes:
        kind: ``set``, ``delete``, ``read``, ``update_ttl`` or
            ``create_store``.
        store_name: The store of the call.
        key: The key of the call, or None for a store operation.
        written: (writer, seq) of the value written, for ``set``.
        started: ``time.monotonic()`` before the call.
        ended: ``time.monotonic()`` after the call returned.
        result: For ``read``, the (writer, seq) read or None. For ``delete``,
            the returned bool. For ``create_store``, the returned store's
            (metadata writer, created_at).
    """

    kind: str
    store_name: str
    key: str | None
    written: tuple[str, int] | None
    started: float
    ended: float
    result: Any


@dataclass(frozen=True)
class Call:
    """A service method to call, and how to log it once it returns."""

    method: str
    args: tuple[Any, ...]
    log: Callable[[Any, float, float], list[Operation]]


def value_id(value: Any) -> tuple[str, int]:
    """Return (writer, seq) of a value that a writer stored."""
    return (value["writer"], value["seq"])


def plan_key_call(rng: random.Random, writer: str, seq: int) -> Call:
    """Pick the next operation of a writer in the mixed load."""
    store_name = rng.choice(STORES)
    key = rng.choice(KEYS)
    value = {"writer": writer, "seq": seq}
    written = value_id(value)
    choice = rng.random()

    def log_set(keys: list[str]) -> Callable[[Any, float, float], list[Operation]]:
        return lambda result, started, ended: [
            Operation("set", store_name, k, written, started, ended, None) for k in keys
        ]

    def log_delete(keys: list[str]) -> Callable[[Any, float, float], list[Operation]]:
        return lambda result, started, ended: [
            Operation("delete", store_name, k, None, started, ended, result)
            for k in keys
        ]

    if choice < 0.35:
        return Call("set_key", (store_name, key, value), log_set([key]))
    if choice < 0.50:
        ttl = rng.choice(TTL_SECONDS)
        return Call("set_key", (store_name, key, value, ttl), log_set([key]))
    if choice < 0.58:
        keys = rng.sample(KEYS, 3)
        values = {k: value for k in keys}
        return Call("set_keys", (store_name, values), log_set(keys))
    if choice < 0.70:
        return Call("delete_key", (store_name, key), log_delete([key]))
    if choice < 0.75:
        keys = rng.sample(KEYS, 3)
        return Call("delete_keys", (store_name, keys), log_delete(keys))
    if choice < 0.80:
        return Call(
            "update_ttl",
            (store_name, key, rng.choice(TTL_SECONDS)),
            lambda result, started, ended: [
                Operation("update_ttl", store_name, key, None, started, ended, None)
            ],
        )
    if choice < 0.83:
        return Call(
            "create_store",
            (f"{store_name}-meta", {"writer": writer}, "persist", True),
            lambda result, started, ended: [],
        )
    if choice < 0.84:
        return Call(
            "delete_store", (f"{store_name}-meta",), lambda result, started, ended: []
        )
    return Call(
        "get_key",
        (store_name, key),
        lambda result, started, ended: [
            Operation(
                "read",
                store_name,
                key,
                None,
                started,
                ended,
                None if result is None else value_id(result.value),
            )
        ],
    )


def plan_create_store_call(rng: random.Random, writer: str, seq: int) -> Call:
    """Pick the next ``create_store(..., exist_ok=True)`` of a writer."""
    store_name = rng.choice(SHARED_STORES)
    return Call(
        "create_store",
        (store_name, {"writer": writer}, "persist", True),
        lambda result, started, ended: [
            Operation(
                "create_store",
                store_name,
                None,
                None,
                started,
                ended,
                (result.metadata["writer"], result.created_at),
            )
        ],
    )


PLANS = {"mixed": plan_key_call, "create_store": plan_create_store_call}


async def run_async_writers(
    service: ExecutionStoreService, plan: str, worker: int, deadline: float
) -> tuple[list[Operation], int]:
    """Run the writers of one process as asyncio tasks until ``deadline``."""
    log: list[Operation] = []
    calls = 0

    async def write(writer: str) -> None:
        nonlocal calls
        rng = random.Random(writer)
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            call = PLANS[plan](rng, writer, seq)
            started = time.monotonic()
            result = await getattr(service, call.method)(*call.args)
            log.extend(call.log(result, started, time.monotonic()))
            calls += 1

    writers = [f"p{worker}-w{n}" for n in range(WRITERS_PER_PROCESS)]
    await asyncio.gather(*(write(writer) for writer in writers))
    await service.close()
    return log, calls


def run_thread_writers(
    service: SyncExecutionStoreService, plan: str, worker: int, deadline: float
) -> tuple[list[Operation], int]:
    """Run the writers of one process as threads until ``deadline``."""
    log: list[Operation] = []
    calls = [0]
    errors: list[BaseException] = []
    lock = threading.Lock()

    def write(writer: str) -> None:
        rng = random.Random(writer)
        seq = 0
        try:
            while time.monotonic() < deadline:
                seq += 1
                call = PLANS[plan](rng, writer, seq)
                started = time.monotonic()
                result = getattr(service, call.method)(*call.args)
                operations = call.log(result, started, time.monotonic())
                with lock:
                    log.extend(operations)
                    calls[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(f"p{worker}-w{n}",))
        for n in range(WRITERS_PER_PROCESS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    service.close()
    if errors:
        raise errors[0]
    return log, calls[0]


def load_worker(
    worker: int,
    uri: str,
    database_name: str,
    dataset_id: ObjectId,
    plan: str,
    start: Any,
    results: Any,
) -> None:
    """Run one process of the load and put (worker, log, calls, error) in results.

    Worker 0 uses the sync wrapper from threads. The others use the async
    service, alternating between the Motor and PyMongo drivers.
    """
    warnings.simplefilter("error")
    try:
        driver = ("motor", "pymongo")[worker % 2]
        settings = Settings(
            database_uri=uri, database_name=database_name, driver=driver
        )
        start.wait(WORKER_START_SECONDS)
        deadline = time.monotonic() + LOAD_SECONDS
        if worker == 0:
            service = SyncExecutionStoreService(
                dataset_id=dataset_id, settings=settings
            )
            log, calls = run_thread_writers(service, plan, worker, deadline)
        else:
            async_service = ExecutionStoreService(
                dataset_id=dataset_id, settings=settings
            )
            log, calls = asyncio.run(
                run_async_writers(async_service, plan, worker, deadline)
            )
        results.put((worker, log, calls, None))
    except BaseException:
        results.put((worker, [], 0, traceback.format_exc()))


@dataclass
class LoadRun:
    """The merged logs of every worker process."""

    operations: list[Operation]
    calls: int
    errors: list[str]


def run_load(uri: str, database_name: str, dataset_id: ObjectId, plan: str) -> LoadRun:
    """Run PROCESSES worker processes at once and merge their logs."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(
            target=load_worker,
            args=(worker, uri, database_name, dataset_id, plan, start, results),
        )
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        replies = [results.get(timeout=WORKER_RESULT_SECONDS) for _ in processes]
        for process in processes:
            process.join(timeout=WORKER_RESULT_SECONDS)
    except queue.Empty:
        pytest.fail(f"a worker sent no result within {WORKER_RESULT_SECONDS} s")
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()

    operations = [operation for reply in replies for operation in reply[1]]
    return LoadRun(
        operations=operations,
        calls=sum(reply[2] for reply in replies),
        errors=[reply[3] for reply in replies if reply[3] is not None],
    )


def raw_duplicates(uri: str, database_name: str) -> list[dict[str, Any]]:
    """Return the (dataset_id, store_name, key) that have more than one document."""
    pipeline = [
        {
            "$group": {
                "_id": {
                    "dataset_id": "$dataset_id",
                    "store_name": "$store_name",
                    "key": "$key",
                },
                "documents": {"$sum": 1},
            }
        },
        {"$match": {"documents": {"$gt": 1}}},
    ]
    with MongoClient(uri) as client:
        collection = client[database_name][COLLECTION_NAME]
        return list(collection.aggregate(pipeline))


def operations_by_key(
    operations: list[Operation],
) -> dict[tuple[str, str], list[Operation]]:
    by_key: dict[tuple[str, str], list[Operation]] = defaultdict(list)
    for operation in operations:
        if operation.key is not None:
            by_key[(operation.store_name, operation.key)].append(operation)
    return by_key


def stale_or_unknown_reads(operations: list[Operation]) -> list[str]:
    """Return a description of every read that breaks the rules in the docstring."""
    problems = []
    for (store_name, key), history in operations_by_key(operations).items():
        writes = {op.written: op for op in history if op.kind == "set"}
        changes = [op for op in history if op.kind in ("set", "delete")]
        for read in (op for op in history if op.kind == "read"):
            if read.result is None:
                continue
            source = writes.get(read.result)
            if source is None or source.started > read.ended:
                problems.append(
                    f"{store_name}/{key}: read {read.result}, never written"
                )
                continue
            for change in changes:
                if source.ended < change.started and change.ended < read.started:
                    problems.append(
                        f"{store_name}/{key}: read {read.result} after {change.kind} "
                        f"{change.written} had replaced it"
                    )
                    break
    return problems


def superseded_final_values(
    operations: list[Operation], final: dict[tuple[str, str], tuple[str, int]]
) -> list[str]:
    """Return a description of every live key whose value a later change replaced."""
    problems = []
    history = operations_by_key(operations)
    for (store_name, key), found in final.items():
        writes = {
            op.written: op for op in history[(store_name, key)] if op.kind == "set"
        }
        source = writes.get(found)
        if source is None:
            problems.append(f"{store_name}/{key}: holds {found}, never written")
            continue
        for change in history[(store_name, key)]:
            if change.kind in ("set", "delete") and change.started > source.ended:
                problems.append(
                    f"{store_name}/{key}: holds {found} although {change.kind} "
                    f"{change.written} started after it was acknowledged"
                )
                break
    return problems


def print_load_figures(name: str, run: LoadRun) -> None:
    kinds = Counter(operation.kind for operation in run.operations)
    print(
        f"\n{name}: {PROCESSES} processes x {WRITERS_PER_PROCESS} writers x "
        f"{LOAD_SECONDS:g} s, {run.calls} calls, logged operations {dict(kinds)}"
    )


def test_mixed_load_from_processes(mongod, database_name):
    dataset_id = ObjectId()

    run = run_load(mongod.uri, database_name, dataset_id, "mixed")

    print_load_figures("mixed load", run)
    assert run.errors == []
    assert run.calls > PROCESSES * WRITERS_PER_PROCESS
    assert raw_duplicates(mongod.uri, database_name) == []
    assert stale_or_unknown_reads(run.operations) == []

    time.sleep(max(TTL_SECONDS) + 0.1)  # every key set with a TTL has expired
    settings = Settings(database_uri=mongod.uri, database_name=database_name)
    with SyncExecutionStoreService(dataset_id=dataset_id, settings=settings) as checker:
        final = {}
        for store_name in STORES:
            for key, document in checker.get_keys(store_name, KEYS).items():
                final[(store_name, key)] = value_id(document.value)
            live = sorted(key for (store, key) in final if store == store_name)
            assert checker.list_keys(store_name) == live
            assert checker.count_keys(store_name) == len(live)
            assert (store_name in checker.list_stores()) == bool(live)

    assert superseded_final_values(run.operations, final) == []


def test_create_store_exist_ok_from_processes(mongod, database_name):
    dataset_id = ObjectId()

    run = run_load(mongod.uri, database_name, dataset_id, "create_store")

    print_load_figures("create_store(exist_ok=True) load", run)
    assert run.errors == []
    assert raw_duplicates(mongod.uri, database_name) == []
    returned: dict[str, set[Any]] = defaultdict(set)
    for operation in run.operations:
        returned[operation.store_name].add(operation.result)
    settings = Settings(database_uri=mongod.uri, database_name=database_name)
    with SyncExecutionStoreService(dataset_id=dataset_id, settings=settings) as checker:
        for store_name, results in sorted(returned.items()):
            store = checker.get_store(store_name)
            assert results == {(store.metadata["writer"], store.created_at)}
        assert checker.list_stores() == sorted(returned)


def test_checks_flag_stale_read_and_final_value():
    # The checks above pass only if they can fail: feed them a history in which
    # write 2 replaced write 1 before a read and the final state still show 1.
    first = Operation("set", "s", "k", ("w", 1), 0.0, 1.0, None)
    second = Operation("set", "s", "k", ("w", 2), 2.0, 3.0, None)
    stale_read = Operation("read", "s", "k", None, 4.0, 5.0, ("w", 1))
    unknown_read = Operation("read", "s", "k", None, 4.0, 5.0, ("w", 9))
    history = [first, second, stale_read, unknown_read]

    problems = stale_or_unknown_reads(history)
    final_problems = superseded_final_values(history, {("s", "k"): ("w", 1)})

    assert len(problems) == 2
    assert "replaced" in problems[0]
    assert "never written" in problems[1]
    assert len(final_problems) == 1
    assert superseded_final_values(history, {("s", "k"): ("w", 2)}) == []
