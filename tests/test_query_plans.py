"""Every query that the service sends is served by an index, without an in-memory sort.

A module fixture runs each public method of ExecutionStoreService on the real
mongod with PyMongo command monitoring on, and records the commands each method
sends. Each test explains one method's commands with verbosity "queryPlanner"
and fails when a winning plan has a COLLSCAN stage (a scan of the whole
collection) or a SORT stage (a sort in memory, instead of reading an index in
order).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from bson import ObjectId
from conftest import COLLECTION_NAME, unique_database_name
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import MongoClient
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from execstore import ExecutionStoreService, MongoExecutionStoreRepo
from execstore._repository import _GLOBAL_STORE_NAMES, ensure_indexes
from execstore._server import MongodProcess

pytestmark = pytest.mark.mongod_only

EXPLAINABLE_COMMANDS = {
    "find",
    "aggregate",
    "distinct",
    "count",
    "update",
    "delete",
    "findAndModify",
}
# Stages that read every document, or sort in memory.
FORBIDDEN_STAGES = {"COLLSCAN", "SORT"}
# Fields of a sent command that explain rejects or that belong to the session.
_NOT_EXPLAINED_FIELDS = {"lsid", "txnNumber", "writeConcern", "readConcern"}

PUBLIC_METHODS = [
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
    "get_keys",
    "set_keys",
    "delete_keys",
    "iter_keys",
    "list_keys",
    "count_keys",
    "clear_cache",
    "list_stores_global",
    "count_stores_global",
    "has_store_global",
    "delete_store_global",
]


class CommandRecorder(CommandListener):
    """Recorder of the commands sent while a method name is set, grouped by method."""

    def __init__(self) -> None:
        self.method: str | None = None
        self.commands: dict[str, list[dict[str, Any]]] = {}

    @contextlib.contextmanager
    def recording(self, method: str) -> Iterator[None]:
        """Record the commands sent inside the block as ``method``'s."""
        self.method = method
        try:
            yield
        finally:
            self.method = None

    def started(self, event: CommandStartedEvent) -> None:
        if self.method is not None and event.command_name in EXPLAINABLE_COMMANDS:
            command = copy.deepcopy(dict(event.command))
            self.commands.setdefault(self.method, []).append(command)

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


async def _fill(service: ExecutionStoreService, other: ExecutionStoreService) -> None:
    # Several hundred documents in three contexts, so that the planner has
    # indexes and data to choose among. Some keys expire, some are evictable.
    for store_index in range(10):
        store_name = f"store-{store_index}"
        values = {f"key-{i:03d}": {"n": i} for i in range(20)}
        await service.set_keys(store_name, values)
        await other.set_keys(store_name, values, ttl=3600)
    await service.create_store("runs", {"owner": "tests"})
    await service.set_keys("cache", {f"c-{i}": i for i in range(10)}, ttl=3600)
    await service.set_keys("doomed", {"a": 1, "b": 2})


async def _run_every_method(
    recorder: CommandRecorder,
    service: ExecutionStoreService,
    scratch: ExecutionStoreService,
    global_service: ExecutionStoreService,
) -> None:
    calls: list[tuple[str, Any]] = [
        ("create_store", lambda: service.create_store("new-store", {"a": 1})),
        ("create_store", lambda: service.create_store("runs", exist_ok=True)),
        ("get_store", lambda: service.get_store("runs")),
        ("get_store", lambda: service.get_store("store-1")),
        ("has_store", lambda: service.has_store("store-2")),
        ("list_stores", service.list_stores),
        ("count_stores", service.count_stores),
        ("list_stores", global_service.list_stores),
        ("count_stores", global_service.count_stores),
        ("delete_store", lambda: service.delete_store("doomed")),
        ("cleanup", scratch.cleanup),
        ("set_key", lambda: service.set_key("store-3", "key-001", {"x": 1})),
        ("set_key", lambda: service.set_key("store-3", "fresh", 1, ttl=60)),
        ("set_cache_key", lambda: service.set_cache_key("cache", "c-1", 2, ttl=60)),
        ("get_key", lambda: service.get_key("store-3", "key-002")),
        ("has_key", lambda: service.has_key("store-3", "key-003")),
        ("delete_key", lambda: service.delete_key("store-3", "key-004")),
        ("update_ttl", lambda: service.update_ttl("store-3", "key-005", 60)),
        ("get_keys", lambda: service.get_keys("store-4", ["key-001", "key-002"])),
        ("set_keys", lambda: service.set_keys("store-4", {"key-001": 1, "new": 2})),
        ("delete_keys", lambda: service.delete_keys("store-4", ["key-003"])),
        ("iter_keys", lambda: _consume(service.iter_keys("store-5", batch_size=7))),
        ("list_keys", lambda: service.list_keys("store-5")),
        ("count_keys", lambda: service.count_keys("store-5")),
        ("clear_cache", lambda: service.clear_cache("cache")),
        ("clear_cache", service.clear_cache),
        ("list_stores_global", service.list_stores_global),
        ("count_stores_global", service.count_stores_global),
        ("has_store_global", lambda: service.has_store_global("store-6")),
        ("delete_store_global", lambda: service.delete_store_global("store-7")),
    ]
    for method, call in calls:
        with recorder.recording(method):
            await call()


async def _consume(keys: Any) -> list[str]:
    return [key async for key in keys]


async def _record_commands(uri: str, database_name: str) -> CommandRecorder:
    recorder = CommandRecorder()
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
        uri, tz_aware=True, event_listeners=[recorder]
    )
    try:
        collection = client[database_name][COLLECTION_NAME]

        def build(dataset_id: ObjectId | None) -> ExecutionStoreService:
            repo = MongoExecutionStoreRepo(collection, dataset_id)
            return ExecutionStoreService(repo=repo)

        service, other, scratch = build(ObjectId()), build(None), build(ObjectId())
        await _fill(service, other)
        await _fill(scratch, other)
        await _run_every_method(recorder, service, scratch, other)
    finally:
        client.close()
    return recorder


def _explain_commands(command: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the commands to explain: one per statement of an update or delete."""
    body = {
        name: value
        for name, value in command.items()
        if not name.startswith("$") and name not in _NOT_EXPLAINED_FIELDS
    }
    for statements in ("updates", "deletes"):
        if statements in body:
            return [{**body, statements: [one]} for one in body[statements]]
    return [body]


def winning_plan_stages(explain: Any, in_winning_plan: bool = False) -> list[str]:
    """Return the stage names in the winning plans of an explain output."""
    stages: list[str] = []
    if isinstance(explain, list):
        for item in explain:
            stages += winning_plan_stages(item, in_winning_plan)
    elif isinstance(explain, Mapping):
        for name, value in explain.items():
            if name == "rejectedPlans":
                continue
            if in_winning_plan and name == "stage":
                stages.append(value)
            in_value = in_winning_plan or name == "winningPlan"
            stages += winning_plan_stages(value, in_value)
    return stages


def _describe(command: Mapping[str, Any]) -> str:
    name = next(iter(command))
    fields = ("filter", "query", "pipeline", "updates", "deletes", "key", "sort")
    shown = {field: command[field] for field in fields if field in command}
    return f"{name} {shown}"


@pytest.fixture(scope="module")
def explained_plans(mongod: MongodProcess) -> dict[str, list[tuple[str, list[str]]]]:
    """Run every method, then explain what it sent: {method: [(command, stages)]}."""
    database_name = unique_database_name()
    recorder = asyncio.run(_record_commands(mongod.uri, database_name))
    plans: dict[str, list[tuple[str, list[str]]]] = {}
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongod.uri, tz_aware=True) as client:
        database: Any = client[database_name]
        for method, commands in recorder.commands.items():
            for command in commands:
                for explained in _explain_commands(command):
                    output = database.command(
                        {"explain": explained, "verbosity": "queryPlanner"}
                    )
                    stages = winning_plan_stages(output)
                    plans.setdefault(method, []).append((_describe(explained), stages))
        client.drop_database(database_name)
    return plans


def test_public_methods_all_listed() -> None:
    public = {
        name
        for name, member in inspect.getmembers(ExecutionStoreService)
        if not name.startswith("_")
        and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member))
    }
    assert public - {"close"} == set(PUBLIC_METHODS)


@pytest.mark.parametrize("method", PUBLIC_METHODS)
def test_query_plan_uses_index(
    method: str, explained_plans: dict[str, list[tuple[str, list[str]]]]
) -> None:
    plans = explained_plans.get(method, [])
    assert plans, f"{method} sent no command that explain accepts"
    for command, stages in plans:
        assert stages, f"{method}: no winning plan found in the explain of {command}"
        forbidden = FORBIDDEN_STAGES.intersection(stages)
        assert not forbidden, (
            f"{method} sends {command}, whose winning plan has "
            f"{sorted(forbidden)}: stages {stages}"
        )


async def _build_indexes(uri: str, database_name: str) -> None:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(uri)
    try:
        await ensure_indexes(client[database_name][COLLECTION_NAME])
    finally:
        client.close()


@pytest.mark.parametrize("context", ["dataset", "global"])
def test_store_listing_uses_distinct_scan(mongod: MongodProcess, context: str) -> None:
    # An index scan over every key of a context passes the check above, yet
    # makes list_stores grow with the keys. A DISTINCT_SCAN reads one index
    # entry per store instead.
    datasets = [ObjectId(), ObjectId(), None]
    database_name = unique_database_name()
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongod.uri, tz_aware=True) as client:
        database: Any = client[database_name]
        asyncio.run(_build_indexes(mongod.uri, database_name))
        database[COLLECTION_NAME].insert_many(
            {"store_name": f"store-{i % 20}", "key": f"k{i}", "dataset_id": dataset}
            for dataset in datasets
            for i in range(300)
        )
        if context == "global":
            command = {
                "aggregate": COLLECTION_NAME,
                "pipeline": _GLOBAL_STORE_NAMES,
                "cursor": {},
            }
        else:
            query = {"dataset_id": datasets[0]}
            command = {"distinct": COLLECTION_NAME, "key": "store_name", "query": query}
        output = database.command({"explain": command, "verbosity": "queryPlanner"})
        client.drop_database(database_name)

    assert "DISTINCT_SCAN" in winning_plan_stages(output)
