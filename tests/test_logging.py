"""Logging hygiene: no stored value and no password in logs or error messages.

Each test captures every record of the ``execstore`` and ``pymongo`` logger
trees at DEBUG while the main operations run with a recognizable value, and
while the connection URI carries a password. The checks look at each record's
formatted message, its raw arguments and any exception it carries.

execstore itself must not log a value or a password at any level. PyMongo
4.20 logs only at DEBUG in these runs. Its ``pymongo.command`` logger writes
every command and reply document at DEBUG, values included, and execstore
cannot prevent that. The tests therefore allow values in that one logger only,
and check that no PyMongo record shows the password.

A mongod started without ``--auth`` still authenticates a client whose URI
has credentials, and rejects unknown users. The server here therefore gets a
user, so that the password in the URI is sent and accepted.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymongo import MongoClient

from execstore import (
    DatabaseError,
    ExecutionStoreError,
    ExecutionStoreService,
    Settings,
)
from execstore._server import MongodProcess, find_mongod, stop_server

pytestmark = pytest.mark.mongod_only  # logs of a real server and driver

DRIVERS = ["motor", "pymongo"]
HOST = "127.0.0.1"
SECRET_VALUE = "value-4b9e1c-do-not-log"
USER = "log-user"
PASSWORD = "pw-73d2a8-do-not-log"
CAPTURED_LOGGERS = ("execstore", "pymongo")
# The one logger that shows documents, values included, at DEBUG.
DOCUMENT_LOGGER = "pymongo.command"
MONGODB_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


class RecordCapture(logging.Handler):
    """A handler that keeps every record it receives."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[list[logging.LogRecord]]:
    """Return the records of the execstore and pymongo loggers, DEBUG and up."""
    capture = RecordCapture()
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(capture)
    yield capture.records
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(capture)
        logger.setLevel(level)


def record_text(record: logging.LogRecord) -> str:
    """Return everything a handler could write for a record."""
    parts = [str(record.msg), repr(record.args), record.getMessage()]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    return "\n".join(parts)


def records_containing(
    records: list[logging.LogRecord], secret: str
) -> list[tuple[str, str]]:
    """Return (logger, level) of each record whose text contains ``secret``."""
    return [
        (record.name, record.levelname)
        for record in records
        if secret in record_text(record)
    ]


def from_tree(records: list[logging.LogRecord], root: str) -> list[logging.LogRecord]:
    return [r for r in records if r.name == root or r.name.startswith(f"{root}.")]


@dataclass(frozen=True)
class InvalidCall:
    """A call that must raise, with the secret value among its arguments."""

    method: str
    args: tuple[object, ...]


INVALID_CALLS = [
    InvalidCall("set_key", ("logs", "unencodable", {"nested": {SECRET_VALUE}})),
    InvalidCall("set_key", ("logs", "int-key", {1: SECRET_VALUE})),
    InvalidCall("set_key", ("logs", "nul-key", {f"{SECRET_VALUE}\0": 1})),
    InvalidCall("set_key", ("logs", "surrogate", f"{SECRET_VALUE}\ud800")),
    InvalidCall(
        "set_key",
        ("logs", "too-large", SECRET_VALUE * (MONGODB_MAX_DOCUMENT_BYTES // 20)),
    ),
    InvalidCall("set_key", ("logs", "bad-ttl", 1, SECRET_VALUE)),
    InvalidCall("set_key", ("logs", "bad-policy", 1, None, SECRET_VALUE)),
    InvalidCall("set_keys", ("logs", {"k": {SECRET_VALUE}})),
    InvalidCall("update_ttl", ("logs", "k", SECRET_VALUE)),
    InvalidCall("create_store", ("logs", SECRET_VALUE)),
]


async def run_operations(service: ExecutionStoreService) -> list[str]:
    """Run the main operations with SECRET_VALUE and return the error messages.

    The messages are those of INVALID_CALLS, each of which must raise.

    Raises:
        AssertionError: An invalid call did not raise an ExecutionStoreError.
    """
    value = {"secret": SECRET_VALUE, "items": [SECRET_VALUE]}
    await service.create_store("logs", metadata={"secret": SECRET_VALUE})
    await service.set_key("logs", "k", value)
    await service.set_key("logs", "expiring", value, ttl=60)
    await service.set_cache_key("logs", "cached", value)
    await service.set_keys("logs", {"a": value, "b": SECRET_VALUE})
    await service.get_key("logs", "k")
    await service.get_keys("logs", ["a", "b", "k"])
    await service.update_ttl("logs", "k", 30)
    await service.list_keys("logs")
    keys = [key async for key in service.iter_keys("logs", batch_size=2)]
    await service.count_keys("logs")
    await service.get_store("logs")
    await service.list_stores_global()
    await service.clear_cache("logs")
    await service.delete_keys("logs", keys)
    await service.delete_key("logs", "k")
    await service.delete_store("logs")

    messages = []
    for call in INVALID_CALLS:
        try:
            await getattr(service, call.method)(*call.args)
        except ExecutionStoreError as exc:
            messages.append(str(exc))
        else:
            raise AssertionError(f"{call} did not raise")
    await service.cleanup()
    return messages


@pytest.fixture(scope="module")
def mongod_binary() -> str:
    return find_mongod(Settings.from_env())


@pytest.fixture(scope="module")
def server_with_user(
    tmp_path_factory: pytest.TempPathFactory, mongod_binary: str
) -> Iterator[MongodProcess]:
    """Run a mongod without access control that has one user."""
    server = MongodProcess.start(
        mongod_binary, tmp_path_factory.mktemp("logging") / "db"
    )
    try:
        with MongoClient(server.uri) as client:
            client.admin.command("createUser", USER, pwd=PASSWORD, roles=["root"])
        yield server
    finally:
        server.stop()


def password_uri(server: MongodProcess, password: str) -> str:
    return f"mongodb://{USER}:{password}@{HOST}:{server.port}"


@pytest.mark.parametrize("driver", DRIVERS)
async def test_operations_log_no_value_or_password(server_with_user, captured, driver):
    settings = Settings(
        database_uri=password_uri(server_with_user, PASSWORD),
        database_name="logging",
        driver=driver,
    )
    service = ExecutionStoreService(settings=settings)

    messages = await run_operations(service)
    await service.close()

    execstore_records = from_tree(captured, "execstore")
    pymongo_records = from_tree(captured, "pymongo")
    pymongo_info = [r for r in pymongo_records if r.levelno >= logging.INFO]
    assert execstore_records, "execstore logged nothing at DEBUG"
    assert records_containing(execstore_records, SECRET_VALUE) == []
    assert records_containing(execstore_records, PASSWORD) == []
    assert records_containing(pymongo_info, SECRET_VALUE) == []
    assert records_containing(pymongo_records, PASSWORD) == []
    assert len(messages) == len(INVALID_CALLS)
    assert [m for m in messages if SECRET_VALUE in m] == []


@pytest.mark.parametrize("driver", DRIVERS)
async def test_only_command_debug_log_shows_values(server_with_user, captured, driver):
    settings = Settings(
        database_uri=password_uri(server_with_user, PASSWORD),
        database_name="logging",
        driver=driver,
    )
    service = ExecutionStoreService(settings=settings)

    await run_operations(service)
    await service.close()

    leaking_loggers = {name for name, _ in records_containing(captured, SECRET_VALUE)}
    assert leaking_loggers <= {DOCUMENT_LOGGER}


@pytest.mark.parametrize("driver", DRIVERS)
async def test_rejected_password_not_logged(server_with_user, captured, driver):
    wrong_password = f"wrong-{PASSWORD}"
    settings = Settings(
        database_uri=password_uri(server_with_user, wrong_password),
        database_name="logging",
        timeout_seconds=2.0,
        driver=driver,
    )
    service = ExecutionStoreService(settings=settings)

    with pytest.raises(DatabaseError) as raised:
        await service.set_key("logs", "k", SECRET_VALUE)
    await service.close()

    error_text = "".join(traceback.format_exception(raised.value))
    assert wrong_password not in error_text
    assert SECRET_VALUE not in error_text
    assert records_containing(captured, wrong_password) == []
    assert records_containing(from_tree(captured, "execstore"), SECRET_VALUE) == []


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Iterator[Settings]:
    """Return settings for an embedded server in a fresh data directory.

    The server that the service starts is stopped afterwards, also when the
    test fails.
    """
    settings = Settings(
        data_dir=tmp_path / "embedded", database_name="logging", timeout_seconds=10.0
    )
    yield settings
    stop_server(settings)


def test_embedded_server_logs_no_value(embedded_settings, captured):
    async def use_embedded_server() -> list[str]:
        service = ExecutionStoreService(settings=embedded_settings)
        messages = await run_operations(service)
        await service.close()
        return messages

    messages = asyncio.run(use_embedded_server())
    stopped = stop_server(embedded_settings)

    server_messages = [
        r.getMessage() for r in captured if r.name == "execstore._server"
    ]
    assert stopped
    assert any(m.startswith("started mongod") for m in server_messages)
    assert any(m.startswith("stopped mongod") for m in server_messages)
    assert records_containing(from_tree(captured, "execstore"), SECRET_VALUE) == []
    assert [m for m in messages if SECRET_VALUE in m] == []
