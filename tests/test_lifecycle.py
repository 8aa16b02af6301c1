"""The async service's client: who owns it, and which event loop it runs on."""

from __future__ import annotations

import asyncio

import pytest
from bson import ObjectId
from pymongo import MongoClient

from execstore import (
    ExecutionStoreRepo,
    ExecutionStoreService,
    MongoExecutionStoreRepo,
    Settings,
)


def test_repo_interface_is_abstract():
    assert issubclass(MongoExecutionStoreRepo, ExecutionStoreRepo)
    with pytest.raises(TypeError):
        ExecutionStoreRepo()


async def test_close_keeps_caller_client_open(backend):
    service = ExecutionStoreService(repo=MongoExecutionStoreRepo(backend))
    await service.set_key("settings", "theme", "dark")

    await service.close()

    assert await backend.count_documents({"key": "theme"}) == 1


@pytest.mark.mongod_only  # a service built from settings makes a real Motor client
def test_service_survives_two_event_loops(mongod, database_name):
    settings = Settings(database_uri=mongod.uri, database_name=database_name)
    service = ExecutionStoreService(dataset_id=ObjectId(), settings=settings)

    asyncio.run(service.set_key("settings", "theme", "dark"))
    stored = asyncio.run(service.get_key("settings", "theme"))
    asyncio.run(service.close())

    assert stored.value == "dark"


@pytest.mark.mongod_only  # a service built from settings makes a real Motor client
async def test_settings_choose_database_and_collection(mongod, database_name):
    settings = Settings(
        database_uri=mongod.uri, database_name=database_name, collection_name="stores"
    )
    service = ExecutionStoreService(settings=settings)

    await service.set_key("settings", "theme", "dark")
    await service.close()

    with MongoClient(mongod.uri) as client:
        assert client[database_name]["stores"].count_documents({"key": "theme"}) == 1


@pytest.mark.mongod_only  # a service built from settings makes a real Motor client
async def test_collection_name_argument_overrides_settings(mongod, database_name):
    settings = Settings(database_uri=mongod.uri, database_name=database_name)
    service = ExecutionStoreService(collection_name="plugin_stores", settings=settings)

    await service.set_key("settings", "theme", "dark")
    await service.close()

    with MongoClient(mongod.uri) as client:
        database = client[database_name]
        assert database["plugin_stores"].count_documents({"key": "theme"}) == 1
        assert database["execution_store"].count_documents({}) == 0
