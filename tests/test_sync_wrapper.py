"""SyncExecutionStoreService: the same contract through plain blocking calls.

A representative subset of the async tests, plus what only the wrapper has:
it works in a plain script, inside a running event loop and from several
threads at once, and it can be closed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from bson import ObjectId

from execstore import (
    InvalidArgumentError,
    KeyDocument,
    KeyPolicy,
    ServiceClosedError,
    StoreDocument,
    StoreExistsError,
    SyncExecutionStoreService,
)

THREADS = 8
KEYS_PER_THREAD = 10
THREAD_TIMEOUT_SECONDS = 60


def test_sync_set_key_returns_key_document(sync_service, dataset_id):
    written = sync_service.set_key("settings", "theme", "dark", ttl=60)

    assert isinstance(written, KeyDocument)
    assert written.dataset_id == dataset_id
    assert written.policy == KeyPolicy.EVICT
    assert sync_service.get_key("settings", "theme") == written
    assert sync_service.has_key("settings", "theme") is True


def test_sync_create_store_twice_raises(sync_service):
    created = sync_service.create_store("settings", metadata={"owner": "plugin"})

    with pytest.raises(StoreExistsError):
        sync_service.create_store("settings")
    assert isinstance(created, StoreDocument)
    assert sync_service.create_store("settings", exist_ok=True) == created


def test_sync_lists_are_sorted(sync_service):
    for name in ["charlie", "alpha", "bravo"]:
        sync_service.set_key(name, "theme", "dark")
        sync_service.set_key("settings", name, 1)

    assert sync_service.list_stores() == ["alpha", "bravo", "charlie", "settings"]
    assert sync_service.count_stores() == 4
    assert sync_service.list_keys("settings") == ["alpha", "bravo", "charlie"]
    assert sync_service.count_keys("settings") == 3


def test_sync_delete_key_and_store(sync_service):
    created = sync_service.create_store("settings")
    sync_service.set_key("settings", "theme", "dark")
    sync_service.set_key("settings", "font", "mono")

    assert sync_service.delete_key("settings", "theme") is True
    assert sync_service.delete_key("settings", "theme") is False
    assert sync_service.delete_store("settings") == created
    assert sync_service.get_key("settings", "font") is None
    assert sync_service.delete_store("settings") is None


def test_sync_update_ttl_and_clear_cache(sync_service):
    sync_service.set_key("digests", "a.txt", "0f3c")
    sync_service.set_cache_key("digests", "b.txt", "9e1d")
    sync_service.set_key("digests", "kept", "77aa")

    updated = sync_service.update_ttl("digests", "a.txt", timedelta(minutes=5))

    assert updated.policy == KeyPolicy.EVICT
    assert sync_service.update_ttl("digests", "missing", 60) is None
    assert sync_service.clear_cache("digests") == 2
    assert sync_service.list_keys("digests") == ["kept"]


def test_sync_global_methods_span_contexts(make_sync_service):
    first, second = make_sync_service(ObjectId()), make_sync_service(None)
    first.create_store("settings")
    second.set_key("settings", "theme", "dark")

    assert {s.dataset_id is None for s in first.list_stores_global()} == {True, False}
    assert first.count_stores_global() == 2
    assert second.has_store_global("settings") is True
    assert second.delete_store_global("settings") == 2
    assert first.has_store_global("settings") is False


def test_sync_cleanup_keeps_other_contexts(make_sync_service):
    first, second = make_sync_service(ObjectId()), make_sync_service(ObjectId())
    first.set_key("settings", "theme", "dark")
    second.set_key("settings", "theme", "light")

    assert first.cleanup() is None
    assert first.list_stores() == []
    assert second.list_stores() == ["settings"]


def test_sync_rejects_invalid_arguments(sync_service):
    with pytest.raises(InvalidArgumentError) as bad_name:
        sync_service.set_key("", "theme", "dark")
    with pytest.raises(InvalidArgumentError) as bad_ttl:
        sync_service.set_key("settings", "theme", "dark", ttl=0)

    assert bad_name.value.argument == "store_name"
    assert bad_ttl.value.argument == "ttl"
    assert sync_service.list_stores() == []


def test_sync_expiry_follows_injected_clock(make_sync_service, clock):
    service = make_sync_service(ObjectId(), clock=clock)
    service.set_key("settings", "theme", "dark", ttl=10)

    clock.advance(11)

    assert service.get_key("settings", "theme") is None
    assert service.list_stores() == []


async def test_sync_service_works_inside_running_loop(sync_service):
    asyncio.get_running_loop()  # raises unless this test runs inside a loop

    sync_service.set_key("settings", "theme", "dark")

    assert sync_service.get_key("settings", "theme").value == "dark"


def test_sync_service_from_eight_threads(sync_service):
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def write(thread: int) -> None:
        try:
            barrier.wait()
            for n in range(KEYS_PER_THREAD):
                sync_service.set_key("settings", f"thread-{thread}-key-{n}", n)
                sync_service.set_key("settings", "shared", thread)
        except BaseException as error:  # reported by the asserts below
            errors.append(error)

    # Daemon threads joined with a timeout, so that a deadlock fails the test
    # instead of hanging the run.
    threads = [
        threading.Thread(target=write, args=(n,), daemon=True) for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)

    assert not any(thread.is_alive() for thread in threads), "a writer deadlocked"
    assert errors == []
    assert sync_service.count_keys("settings") == THREADS * KEYS_PER_THREAD + 1
    assert sync_service.get_key("settings", "shared").value in range(THREADS)


def test_sync_close_is_idempotent(sync_service):
    sync_service.close()

    sync_service.close()

    with pytest.raises(ServiceClosedError):
        sync_service.list_stores()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda service: service.get_key("settings", "theme"), id="get_key"
        ),
        pytest.param(
            lambda service: service.set_key("settings", "theme", 1), id="set_key"
        ),
        pytest.param(
            lambda service: service.create_store("settings"), id="create_store"
        ),
        pytest.param(
            lambda service: service.list_stores_global(), id="list_stores_global"
        ),
        pytest.param(lambda service: service.cleanup(), id="cleanup"),
    ],
)
def test_sync_call_after_close_raises(sync_service, call):
    sync_service.set_key("settings", "theme", "dark")
    sync_service.close()

    with pytest.raises(ServiceClosedError):
        call(sync_service)


def test_sync_with_statement_closes_service(make_sync_service, dataset_id):
    with make_sync_service(dataset_id) as service:
        assert isinstance(service, SyncExecutionStoreService)
        service.set_key("settings", "theme", "dark")

    with pytest.raises(ServiceClosedError):
        service.get_key("settings", "theme")


@pytest.mark.mongod_only  # the script connects through settings to a real server
def test_sync_service_runs_in_plain_script(mongod, database_name, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from execstore import Settings, SyncExecutionStoreService

            settings = Settings(
                database_uri={mongod.uri!r}, database_name={database_name!r}
            )
            service = SyncExecutionStoreService(settings=settings)
            service.set_key("settings", "theme", "dark")
            print(service.get_key("settings", "theme").value)
            """
        )
    )
    # The script does not close the service: the interpreter must still exit.
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}

    finished = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "dark\n"
