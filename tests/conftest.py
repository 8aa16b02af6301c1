"""Fixtures shared by the behaviour tests.

Most tests run twice: on mongomock-motor (in memory, fast) and on a real
mongod that this module starts once per session on a free loopback port. Each
real-server test gets its own database, dropped afterwards, and its own Motor
client, because pytest-asyncio gives every test a fresh event loop.

Expiry is tested with ``FakeClock`` instead of sleeping. Both backends also
remove expired documents on the real clock: mongod's TTL monitor does so every
second here, and mongomock on every read of a collection with a TTL index. The
fake clock therefore starts at the real current time and tests only move it
forward, so that no key a test treats as live expires in real time first.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from mongomock_motor import AsyncMongoMockClient
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection
from pymongo import MongoClient

from execstore import (
    ExecutionStoreService,
    MongoExecutionStoreRepo,
    Settings,
    SyncExecutionStoreService,
)
from execstore._server import MongodProcess, find_mongod

COLLECTION_NAME = "execution_store"
BACKENDS = ["mongomock", "mongod"]


class FakeClock:
    """A settable clock that returns aware UTC datetimes.

    Args:
        start: The first time returned; defaults to the real current time,
            truncated to whole milliseconds as MongoDB stores it.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime.now(timezone.utc)
            start = start.replace(
                microsecond=start.microsecond - start.microsecond % 1000
            )
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by ``seconds`` and return the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now


def unique_database_name() -> str:
    """Return a database name that no other test uses."""
    return f"execstore_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the caller's ``EXECSTORE_*`` variables from every test."""
    for name in list(os.environ):
        if name.startswith("EXECSTORE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def mongod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongodProcess]:
    """Run one mongod for the session; fail, never skip, when none can start.

    ``ttlMonitorSleepSecs=1`` makes the server's TTL monitor run every second
    instead of every minute, so the test of server-side removal stays short.
    """
    data_dir = tmp_path_factory.mktemp("mongod")
    binary = find_mongod(Settings.from_env())
    server = MongodProcess.start(
        binary,
        data_dir / "db",
        set_parameters={"ttlMonitorSleepSecs": 1},
        log_path=data_dir / "mongod.log",
    )
    yield server
    server.stop()


@pytest.fixture
def mongod_collection(mongod: MongodProcess) -> Iterator[AsyncIOMotorCollection]:
    """Return the store collection in a fresh database on the real server.

    The Motor client binds to the test's event loop on first use. The database
    is dropped through a blocking client because that loop is closed by then.
    """
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongod.uri, tz_aware=True)
    database_name = unique_database_name()
    yield client[database_name][COLLECTION_NAME]
    client.close()
    with MongoClient(mongod.uri) as blocking_client:
        blocking_client.drop_database(database_name)


@pytest.fixture
def database_name(mongod: MongodProcess) -> Iterator[str]:
    """Return a fresh database name on the session's mongod, dropped afterwards."""
    name = unique_database_name()
    yield name
    with MongoClient(mongod.uri) as client:
        client.drop_database(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    """Return an empty store collection on mongomock or on the real server."""
    if request.param == "mongomock":
        return AsyncMongoMockClient(tz_aware=True).db[COLLECTION_NAME]
    return request.getfixturevalue("mongod_collection")


@pytest.fixture
def clock() -> FakeClock:
    """Return a fake clock that starts at the real current time."""
    return FakeClock()


@pytest.fixture
def dataset_id() -> ObjectId:
    """Return the dataset context that the ``service`` fixture uses."""
    return ObjectId()


ServiceFactory = Callable[..., ExecutionStoreService]


@pytest.fixture
async def make_service(backend: Any, clock: FakeClock) -> AsyncIterator[ServiceFactory]:
    """Return a factory of services on the ``backend`` collection.

    ``make_service(dataset_id)`` builds a service for that context with the
    test's fake clock; pass ``clock=None`` for the real clock. Every service
    built is closed at the end of the test.
    """
    services: list[ExecutionStoreService] = []

    def build(
        dataset_id: ObjectId | str | None = None, *, clock: Any = clock
    ) -> ExecutionStoreService:
        repo = MongoExecutionStoreRepo(backend, dataset_id)
        service = ExecutionStoreService(repo=repo, clock=clock)
        services.append(service)
        return service

    yield build
    for service in services:
        await service.close()


@pytest.fixture
def service(
    make_service: ServiceFactory, dataset_id: ObjectId
) -> ExecutionStoreService:
    """Return a service for one dataset context."""
    return make_service(dataset_id)


@pytest.fixture
def global_service(make_service: ServiceFactory) -> ExecutionStoreService:
    """Return a service for the global context."""
    return make_service(None)


SyncServiceFactory = Callable[..., SyncExecutionStoreService]


@pytest.fixture(params=BACKENDS)
def make_sync_service(
    request: pytest.FixtureRequest,
) -> Iterator[SyncServiceFactory]:
    """Return a factory of blocking services that share one collection.

    ``make_sync_service(dataset_id, clock=None)`` builds a service for that
    context. On the real server each service builds its own client from
    settings, on an event loop of its own, as a plain script would. Every
    service built is closed at the end of the test.
    """
    services: list[SyncExecutionStoreService] = []
    database_name = unique_database_name()

    if request.param == "mongomock":
        collection = AsyncMongoMockClient(tz_aware=True).db[COLLECTION_NAME]

        def construct(dataset_id: Any, clock: Any) -> SyncExecutionStoreService:
            repo = MongoExecutionStoreRepo(collection, dataset_id)
            return SyncExecutionStoreService(repo=repo, clock=clock)

    else:
        mongod: MongodProcess = request.getfixturevalue("mongod")
        settings = Settings(database_uri=mongod.uri, database_name=database_name)

        def construct(dataset_id: Any, clock: Any) -> SyncExecutionStoreService:
            return SyncExecutionStoreService(
                dataset_id=dataset_id, settings=settings, clock=clock
            )

    def build(
        dataset_id: ObjectId | str | None = None, *, clock: Any = None
    ) -> SyncExecutionStoreService:
        service = construct(dataset_id, clock)
        services.append(service)
        return service

    yield build
    for service in services:
        service.close()
    if request.param == "mongod":
        with MongoClient(mongod.uri) as client:
            client.drop_database(database_name)


@pytest.fixture
def sync_service(
    make_sync_service: SyncServiceFactory, dataset_id: ObjectId
) -> SyncExecutionStoreService:
    """Return a blocking service for one dataset context, on the real clock."""
    return make_sync_service(dataset_id)


@pytest.fixture
def host_timezone(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Set the process timezone to UTC+05:30 for one test and restore it after."""
    zone = "Asia/Kolkata"
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    yield zone
    monkeypatch.undo()
    time.tzset()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow: the larger property-test budgets",
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Skip the tests marked slow unless ``--run-slow`` is given."""
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow; run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
