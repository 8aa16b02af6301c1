"""Datetimes: aware UTC at MongoDB's millisecond precision, whatever the host zone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from mongomock_motor import AsyncMongoMockClient
from motor.motor_asyncio import AsyncIOMotorClient

from execstore import ExecutionStoreService, MongoExecutionStoreRepo

KEY_TIMESTAMPS = ["created_at", "updated_at", "expires_at"]
STORE_TIMESTAMPS = ["created_at", "updated_at"]


@pytest.fixture
def sub_millisecond_clock(clock):
    """Set the fake clock to a time with microseconds that BSON cannot hold.

    The clock moves forward, never back, so that no key expires in real time.
    """
    clock.now = (clock.now + timedelta(seconds=1)).replace(microsecond=123456)
    return clock


def is_utc_millisecond(moment: datetime) -> bool:
    return moment.utcoffset() == timedelta(0) and moment.microsecond % 1000 == 0


@pytest.mark.parametrize("field", KEY_TIMESTAMPS)
async def test_key_timestamp_is_utc_milliseconds(service, sub_millisecond_clock, field):
    written = await service.set_key("settings", "theme", "dark", ttl=60)
    stored = await service.get_key("settings", "theme")

    assert is_utc_millisecond(getattr(written, field))
    assert is_utc_millisecond(getattr(stored, field))


@pytest.mark.parametrize("field", KEY_TIMESTAMPS)
async def test_key_timestamp_read_matches_write(service, sub_millisecond_clock, field):
    written = await service.set_key("settings", "theme", "dark", ttl=60)
    stored = await service.get_key("settings", "theme")

    assert getattr(stored, field) == getattr(written, field)


async def test_timestamps_match_clock_to_millisecond(service, sub_millisecond_clock):
    written = await service.set_key("settings", "theme", "dark", ttl=60)

    assert abs(written.created_at - sub_millisecond_clock.now) < timedelta(
        milliseconds=1
    )
    assert written.expires_at - written.created_at == timedelta(seconds=60)


@pytest.mark.parametrize("field", STORE_TIMESTAMPS)
async def test_store_timestamp_is_utc_milliseconds(
    service, sub_millisecond_clock, field
):
    created = await service.create_store("settings")
    stored = await service.get_store("settings")

    assert is_utc_millisecond(getattr(created, field))
    assert getattr(stored, field) == getattr(created, field)


async def test_update_ttl_result_is_utc_milliseconds(service, sub_millisecond_clock):
    await service.set_key("settings", "theme", "dark")

    updated = await service.update_ttl("settings", "theme", 90.5)

    assert is_utc_millisecond(updated.expires_at)
    assert (await service.get_key("settings", "theme")).expires_at == updated.expires_at


@pytest.mark.usefixtures("host_timezone")
async def test_host_timezone_does_not_shift_real_clock(make_service, dataset_id):
    service = make_service(dataset_id, clock=None)
    before = datetime.now(timezone.utc) - timedelta(milliseconds=1)

    written = await service.set_key("settings", "theme", "dark", ttl=60)

    after = datetime.now(timezone.utc)
    assert written.created_at.utcoffset() == timedelta(0)
    assert before <= written.created_at <= after
    assert written.expires_at - written.created_at == timedelta(seconds=60)
    assert (await service.get_key("settings", "theme")) == written


@pytest.mark.usefixtures("host_timezone")
async def test_host_timezone_does_not_shift_fake_clock(service, clock):
    written = await service.set_key("settings", "theme", "dark")
    stored = await service.get_key("settings", "theme")

    assert written.created_at == clock.now
    assert stored.created_at == clock.now
    assert stored.created_at.utcoffset() == timedelta(0)


@pytest.mark.usefixtures("host_timezone")
async def test_naive_stored_timestamps_read_as_utc(service, backend, dataset_id, clock):
    created = datetime(2024, 1, 2, 3, 4, 5, 678000)
    expires = (clock.now + timedelta(days=1)).replace(tzinfo=None)
    await backend.insert_one(
        {
            "store_name": "settings",
            "key": "theme",
            "value": "dark",
            "dataset_id": dataset_id,
            "created_at": created,
            "updated_at": created,
            "expires_at": expires,
            "policy": "evict",
        }
    )

    stored = await service.get_key("settings", "theme")

    assert stored.created_at == created.replace(tzinfo=timezone.utc)
    assert stored.created_at.utcoffset() == timedelta(0)
    assert stored.expires_at == expires.replace(tzinfo=timezone.utc)


@pytest.fixture
def naive_collection(request, backend):
    """Return the test's collection through a client without ``tz_aware``.

    Such a client decodes stored datetimes as naive UTC datetimes.
    """
    if request.node.callspec.params["backend"] == "mongomock":
        yield AsyncMongoMockClient().db[backend.name]
        return
    client = AsyncIOMotorClient(request.getfixturevalue("mongod").uri)
    yield client[backend.database.name][backend.name]
    client.close()


@pytest.mark.usefixtures("host_timezone")
async def test_naive_client_still_returns_utc(naive_collection, dataset_id, clock):
    service = ExecutionStoreService(
        repo=MongoExecutionStoreRepo(naive_collection, dataset_id), clock=clock
    )

    written = await service.set_key("settings", "theme", "dark", ttl=60)
    stored = await service.get_key("settings", "theme")

    assert written.created_at == clock.now
    assert written.created_at.utcoffset() == timedelta(0)
    assert stored.expires_at == clock.now + timedelta(seconds=60)
    assert stored.expires_at.utcoffset() == timedelta(0)
    await service.close()
