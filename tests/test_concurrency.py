"""Concurrent writers: racing writes of one key or store leave one document."""

from __future__ import annotations

import asyncio

from execstore import StoreDocument, StoreExistsError

WRITERS = 50


async def test_concurrent_set_key_leaves_one_document(service, backend):
    await service.set_key("warm-up", "k", 0)

    written = await asyncio.gather(
        *(service.set_key("settings", "theme", n) for n in range(WRITERS))
    )

    assert len(written) == WRITERS
    assert await backend.count_documents({"store_name": "settings"}) == 1
    assert (await service.get_key("settings", "theme")).value in range(WRITERS)


async def test_concurrent_first_writes_leave_one_document(service, backend):
    # No earlier call, so the writes also race the service's index setup.
    await asyncio.gather(
        *(service.set_key("settings", "theme", n) for n in range(WRITERS))
    )

    assert await backend.count_documents({"store_name": "settings"}) == 1


async def test_concurrent_writes_from_two_services(make_service, dataset_id, backend):
    first, second = make_service(dataset_id), make_service(dataset_id)

    await asyncio.gather(
        *(
            service.set_key("settings", "theme", n)
            for n in range(WRITERS // 2)
            for service in (first, second)
        )
    )

    assert await backend.count_documents({"store_name": "settings"}) == 1
    assert await first.get_key("settings", "theme") == await second.get_key(
        "settings", "theme"
    )


async def test_concurrent_writes_keep_first_created_at(service, clock):
    first = await service.set_key("settings", "theme", "dark")
    clock.advance(5)

    written = await asyncio.gather(
        *(service.set_key("settings", "theme", n) for n in range(WRITERS))
    )

    assert {document.created_at for document in written} == {first.created_at}


async def test_concurrent_exist_ok_creates_one_store(service, backend):
    created = await asyncio.gather(
        *(
            service.create_store("settings", metadata={"writer": n}, exist_ok=True)
            for n in range(WRITERS)
        )
    )

    assert await backend.count_documents({"key": "__store__"}) == 1
    assert len({(c.metadata["writer"], c.created_at) for c in created}) == 1
    assert await service.get_store("settings") == created[0]


async def test_concurrent_create_store_has_one_winner(service):
    outcomes = await asyncio.gather(
        *(service.create_store("settings") for _ in range(WRITERS)),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if isinstance(o, StoreDocument)]
    losers = [o for o in outcomes if isinstance(o, StoreExistsError)]
    assert len(winners) == 1
    assert len(losers) == WRITERS - 1


async def test_concurrent_create_store_and_set_key(service, backend):
    await asyncio.gather(
        *(service.create_store("settings", exist_ok=True) for _ in range(WRITERS // 2)),
        *(service.set_key("settings", f"key-{n}", n) for n in range(WRITERS // 2)),
    )

    assert await backend.count_documents({"key": "__store__"}) == 1
    assert await service.count_keys("settings") == WRITERS // 2
