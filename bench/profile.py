"""Profile where the time of get_key and set_key goes, by category, in every thread.

Usage::

    python -m bench.profile [--ops N] [--uri URI]

Each scenario runs ``ops`` get_key and ``ops`` set_key calls under cProfile.
Every thread that does work for a call is profiled, Motor's executor threads
and the sync wrapper's helper thread included. Self time is summed per
category (execstore validation, pydantic, bson, the driver, asyncio, waiting
in epoll) and printed in microseconds per call. cProfile slows Python code
more than C code and waiting, so read the shares, not the absolute figures.
A second table times the library's per-call steps one by one with timeit,
without a profiler.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import signal
import sys
import threading
import timeit
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/profile.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from execstore import (
    ExecutionStoreService,
    MongoExecutionStoreRepo,
    Settings,
    SyncExecutionStoreService,
)
from execstore._models import key_document_from_raw, to_utc_millis
from execstore._repository import _upsert_pipeline, live_filter
from execstore._validation import validate_key, validate_name, validate_value

from . import raw
from .drivers import (
    DRIVERS,
    LoopThreadClient,
    close_async_client,
    create_async_client,
)
from .pairs import COLLECTION_NAME, DATASET_ID, GET_STORE, KEYS, SET_STORE, VALUE
from .run import drop_databases, mongodb_uri

WAITING = "waiting: epoll, queues, locks, sleep"
SOCKETS = "socket calls (a blocking read includes server time)"
# Substrings of a function's file, or of a built-in's name, and their
# category. The first match wins.
_FILE_CATEGORIES = [
    ("/execstore/_validation", "execstore validation"),
    ("/execstore/_models", "execstore models"),
    ("/execstore/_sync", "execstore sync wrapper and loop"),
    ("/execstore/_loop", "execstore sync wrapper and loop"),
    ("/execstore/", "execstore service and repository"),
    ("pydantic", "pydantic"),
    ("/bson/", "bson"),
    ("/motor/", "motor"),
    ("/pymongo/", "pymongo"),
    ("/asyncio/", "asyncio"),
    ("selectors", "asyncio"),
    ("/concurrent/", "threads and futures"),
    ("threading", "threads and futures"),
    ("/bench/", "benchmark harness"),
]
_BUILTIN_CATEGORIES = [
    ("poll", WAITING),
    ("SimpleQueue", WAITING),
    ("time.sleep", WAITING),
    ("acquire", WAITING),
    ("pydantic_core", "pydantic"),
    ("bson", "bson"),
    ("_cmessage", "pymongo"),
    ("_socket", SOCKETS),
]
# Threads that only watch the server or wait for shutdown: their idle time
# would swamp the figures, and they do no work for a call.
_BACKGROUND_THREADS = ("pymongo_", "asyncio_", "Thread-")


def category(filename: str, function: str) -> str:
    """Return the category of one profiled function."""
    if filename == "~":
        for marker, name in _BUILTIN_CATEGORIES:
            if marker in function:
                return name
        return "other built-ins"
    for marker, name in _FILE_CATEGORIES:
        if marker in filename:
            return name
    return "other Python"


def _location(code: Any) -> tuple[str, str]:
    # cProfile reports a built-in as a string such as "<built-in method ...>".
    if isinstance(code, str):
        return "~", code
    return code.co_filename, code.co_name


class ThreadProfiles:
    """One cProfile profiler per thread, for the caller and every thread it starts.

    Threads started after ``start`` install their profiler on their first
    call, through ``threading.setprofile``. The profilers keep running, so a
    thread pool that outlives one scenario (Motor's executor) is still counted
    in the next; ``snapshot`` differences give each scenario its own figures.
    """

    def __init__(self) -> None:
        self.profilers: dict[str, cProfile.Profile] = {}

    def _install(self, frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile()
        self.profilers[threading.current_thread().name] = profiler
        profiler.enable()

    def start(self) -> None:
        """Profile the calling thread and every thread started from now on."""
        threading.setprofile(self._install)
        self._install(None, "call", None)

    def stop(self) -> None:
        """Stop profiling the calling thread and stop installing profilers."""
        threading.setprofile(None)
        self.profilers[threading.current_thread().name].disable()

    def snapshot(self) -> dict[str, float]:
        """Return the seconds of self time so far per category, in working threads.

        The working threads are the caller's and Motor's executor threads. The
        driver's monitor threads are left out.
        """
        totals: dict[str, float] = defaultdict(float)
        for thread_name, profiler in list(self.profilers.items()):
            if thread_name.startswith(_BACKGROUND_THREADS):
                continue
            for entry in profiler.getstats():
                totals[category(*_location(entry.code))] += entry.inlinetime
        return dict(totals)


def _key(index: int) -> str:
    return KEYS[index % len(KEYS)]


async def _service_calls(uri: str, database: str, driver: str, ops: int) -> None:
    client = create_async_client(driver, uri)
    try:
        collection = client[database][COLLECTION_NAME]
        service = ExecutionStoreService(
            repo=MongoExecutionStoreRepo(collection, DATASET_ID)
        )
        await service.set_keys(GET_STORE, dict.fromkeys(KEYS, VALUE))
        for index in range(ops):
            await service.get_key(GET_STORE, _key(index))
            await service.set_key(SET_STORE, _key(index), VALUE)
    finally:
        await close_async_client(client)


async def _raw_calls(uri: str, database: str, driver: str, ops: int) -> None:
    client = create_async_client(driver, uri)
    try:
        collection = client[database][COLLECTION_NAME]
        for index in range(ops):
            await raw.get_key(collection, GET_STORE, _key(index), DATASET_ID)
            await raw.set_key(collection, SET_STORE, _key(index), VALUE, DATASET_ID)
    finally:
        await close_async_client(client)


def _sync_calls(uri: str, database: str, driver: str, ops: int) -> None:
    settings = Settings(database_uri=uri, database_name=database, driver=driver)
    with SyncExecutionStoreService(dataset_id=DATASET_ID, settings=settings) as store:
        for index in range(ops):
            store.get_key(GET_STORE, _key(index))
            store.set_key(SET_STORE, _key(index), VALUE)


def scenarios(
    uri: str, database: str, ops: int
) -> Iterator[tuple[str, Callable[[], Any]]]:
    """Yield (name, run) for every profiled scenario."""
    for driver in DRIVERS:
        service = _service_calls(uri, database, driver, ops)
        yield f"async service, {driver}", functools.partial(asyncio.run, service)
        baseline = _raw_calls(uri, database, driver, ops)
        yield f"raw driver, {driver}", functools.partial(asyncio.run, baseline)
        sync = functools.partial(_sync_calls, uri, database, driver, ops)
        yield f"sync wrapper, {driver}", sync


def format_profile(name: str, totals: dict[str, float], calls: int) -> str:
    """Return one scenario's self time per category, in µs per call."""
    lines = [f"{name}: self time per call in working threads ({calls} calls)"]
    working = {
        label: seconds
        for label, seconds in totals.items()
        if label != WAITING and seconds > 0
    }
    for label, seconds in sorted(working.items(), key=lambda item: -item[1]):
        lines.append(f"  {label:<52} {seconds * 1e6 / calls:>9.1f} µs")
    lines.append(
        f"  {'= work, all categories above':<52} "
        f"{sum(working.values()) * 1e6 / calls:>9.1f} µs"
    )
    lines.append(f"  {WAITING:<52} {totals.get(WAITING, 0.0) * 1e6 / calls:>9.1f} µs")
    return "\n".join(lines)


def step_costs() -> dict[str, float]:
    """Time the service's per-call steps one by one and return µs per step."""
    now = datetime.now(timezone.utc)
    stored = {
        "_id": None,
        "store_name": SET_STORE,
        "key": KEYS[0],
        "value": VALUE,
        "dataset_id": DATASET_ID,
        "created_at": now,
        "updated_at": now,
        "expires_at": None,
        "policy": "persist",
    }
    # Never connects: only the wrapper's own hand-off to its loop is timed.
    unused = Settings(database_uri="mongodb://127.0.0.1:9", database_name="unused")
    store = SyncExecutionStoreService(settings=unused)
    loop_thread = LoopThreadClient("pymongo", unused.database_uri or "")
    handler = signal.getsignal(signal.SIGINT)

    async def nothing() -> None:
        return None

    steps: dict[str, Callable[[], Any]] = {
        "validate_name + validate_key": lambda: (
            validate_name(SET_STORE, "store_name"),
            validate_key(KEYS[0]),
        ),
        "validate_value (bson.encode of the value)": lambda: validate_value(
            VALUE, "value", 32
        ),
        "clock: to_utc_millis(datetime.now(utc))": lambda: to_utc_millis(
            datetime.now(timezone.utc)
        ),
        "key_document_from_raw (pydantic KeyDocument)": lambda: key_document_from_raw(
            stored
        ),
        "live_filter + key filter": lambda: {
            "store_name": SET_STORE,
            "key": KEYS[0],
            "dataset_id": DATASET_ID,
            **live_filter(now),
        },
        "_upsert_pipeline": lambda: _upsert_pipeline(VALUE, "persist", None, now),
        "sync wrapper: run a no-op coroutine": lambda: store._run(nothing()),
        "SIGINT handler swap: two signal.signal calls": lambda: signal.signal(
            signal.SIGINT, signal.signal(signal.SIGINT, handler)
        ),
        "loop thread: run_coroutine_threadsafe(no-op).result()": lambda: (
            loop_thread.run(nothing())
        ),
    }
    try:
        return {name: _micros(step) for name, step in steps.items()}
    finally:
        store.close()
        loop_thread.close()


def _micros(step: Callable[[], Any]) -> float:
    timer = timeit.Timer(step)
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat=5, number=number))
    return best * 1e6 / number


def main(argv: Sequence[str] | None = None) -> int:
    """Profile every scenario, time the steps and return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument(
        "--ops", type=int, default=2000, help="calls of each kind (2000)"
    )
    parser.add_argument("--uri", help="use this MongoDB server instead of a new mongod")
    args = parser.parse_args(argv)

    database = "execstore_profile"
    profiles = ThreadProfiles()
    with mongodb_uri(args.uri) as uri:
        profiles.start()
        try:
            for name, run in scenarios(uri, database, args.ops):
                before = profiles.snapshot()
                run()
                after = profiles.snapshot()
                totals = {
                    label: after[label] - before.get(label, 0.0) for label in after
                }
                print(format_profile(name, totals, 2 * args.ops))
        finally:
            profiles.stop()
            drop_databases(uri, database)

    print("per-call steps, timeit, best of 5:")
    for name, micros in step_costs().items():
        print(f"  {name:<52} {micros:>9.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
