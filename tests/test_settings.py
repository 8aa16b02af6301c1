"""Settings reject bad fields when they are built, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from mongomock_motor import AsyncMongoMockClient

from execstore import (
    ExecutionStoreService,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MongoExecutionStoreRepo,
    Settings,
)

BAD_FIELDS = [
    pytest.param("timeout_seconds", 10**400, InvalidArgumentError, id="huge-timeout"),
    pytest.param("timeout_seconds", 1e-9, InvalidArgumentError, id="tiny-timeout"),
    pytest.param("timeout_seconds", float("nan"), InvalidArgumentError, id="nan"),
    pytest.param("data_dir", 1, InvalidArgumentTypeError, id="int-data-dir"),
    pytest.param("mongod", 1, InvalidArgumentTypeError, id="int-mongod"),
    pytest.param("driver", 1, InvalidArgumentTypeError, id="int-driver"),
    pytest.param("driver", "asyncpg", InvalidArgumentError, id="unknown-driver"),
    pytest.param(
        "database_uri", "mongodb://127.0.0.1:99999", InvalidArgumentError, id="port"
    ),
    pytest.param(
        "database_uri", "mongodb://u:pw@127.0.0.1:bad", InvalidArgumentError, id="bad"
    ),
]


@pytest.mark.parametrize(("field", "value", "error"), BAD_FIELDS)
def test_settings_rejects_bad_field(field, value, error):
    with pytest.raises(error) as raised:
        Settings(**{field: value})

    assert raised.value.argument == field
    assert "pw" not in str(raised.value)


def test_settings_accepts_str_data_dir(tmp_path):
    settings = Settings(data_dir=str(tmp_path))

    assert isinstance(settings.data_dir, Path)
    assert settings.data_dir == tmp_path


async def test_clock_returning_non_datetime_is_rejected():
    collection = AsyncMongoMockClient(tz_aware=True).db.execution_store
    service = ExecutionStoreService(MongoExecutionStoreRepo(collection), clock=str)

    with pytest.raises(InvalidArgumentTypeError) as raised:
        await service.set_key("settings", "theme", "dark")

    assert raised.value.argument == "clock"
    assert await collection.count_documents({}) == 0
