"""Model-based test: random sequences of operations against a model of the contract.

A Hypothesis state machine calls every ExecutionStoreService operation in three
contexts (two datasets and the global context) on a real mongod. Small pools
of store names and keys make operations collide often. Each rule compares the
service's return value with an in-memory reference model, and an invariant
compares, after every step, what each context shows (its stores, store
documents, keys and values) and every raw document of the collection with the
model.

The model applies the service's millisecond rule: the clock is truncated to
the millisecond, a key with a TTL expires at ``now + ttl`` rounded up to the
millisecond, and a key is live while its expiry is later than ``now``. A rule
advances the fake clock, and a key that expires must be invisible at once.

Each example gets a fresh database and an event loop of its own, because
Hypothesis drives state machines synchronously. The fake clock starts one day
ahead of the real time, so the server's TTL monitor, which runs on the real
clock, removes no document while an example runs. Expired keys therefore stay
in the collection, invisible, as they do in production between two passes of
the monitor.

The default budget runs in about a minute on two cores; ``--run-slow`` runs
a larger one.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from conftest import COLLECTION_NAME, FakeClock, unique_database_name
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from motor.motor_asyncio import AsyncIOMotorClient

from execstore import (
    ExecutionStoreService,
    KeyDocument,
    KeyPolicy,
    MongoExecutionStoreRepo,
    StoreDocument,
    StoreExistsError,
)

STORE_DOCUMENT_KEY = "__store__"
MILLISECOND = timedelta(milliseconds=1)

# Two dataset contexts and the global context. The second dataset's service is
# built from the id's hex string, the others from an ObjectId or None.
FIRST_DATASET = ObjectId()
SECOND_DATASET = ObjectId()
CONTEXTS = ("first", "second", "global")
DATASET_IDS: dict[str, ObjectId | None] = {
    "first": FIRST_DATASET,
    "second": SECOND_DATASET,
    "global": None,
}
DATASET_ARGUMENTS: dict[str, ObjectId | str | None] = {
    "first": FIRST_DATASET,
    "second": str(SECOND_DATASET),
    "global": None,
}

# "$" and "." are valid in names and must not be read as query syntax.
STORE_NAMES = ("alpha", "beta", "$gamma.δ")
KEYS = ("k1", "k2", "k.3", "$k4")


def to_millis(moment: datetime) -> datetime:
    """Truncate ``moment`` to the millisecond, as MongoDB stores dates."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def expiry_after(now: datetime, ttl: float | timedelta) -> datetime:
    """Return ``now + ttl`` rounded up to the millisecond."""
    duration = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
    exact = now + duration
    stored = to_millis(exact)
    return stored if stored == exact else stored + MILLISECOND


def stored_form(value: Any) -> Any:
    """Return ``value`` as it reads back from BSON: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [stored_form(item) for item in value]
    if isinstance(value, dict):
        return {name: stored_form(item) for name, item in value.items()}
    return value


contexts = st.sampled_from(CONTEXTS)
store_names = st.sampled_from(STORE_NAMES)
keys = st.sampled_from(KEYS)
policies = st.sampled_from(["persist", "evict"])
key_lists = st.lists(keys, max_size=6)

# TTLs in every accepted form. Several are whole multiples of the clock steps
# below, so that a key often reaches its expiry exactly.
ttls = st.sampled_from(
    [
        None,
        1,
        2,
        3,
        3600,
        0.001,
        0.0015,
        0.5,
        2.5,
        timedelta(milliseconds=1),
        timedelta(seconds=2),
        timedelta(seconds=2, microseconds=500),
    ]
)
positive_ttls = ttls.filter(lambda ttl: ttl is not None)
clock_steps = st.sampled_from([0.0004, 0.001, 0.5, 1, 2, 2.5, 3, 10])

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=6,
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    _text,
)
values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(_text, children, max_size=3),
    ),
    max_leaves=6,
)
metadatas = st.one_of(
    st.none(),
    st.dictionaries(_text, values, max_size=3),
    st.just({"$ne": None, "a.b": 1}),
)

# How often each rule ran over one test run.
RULE_CALLS: collections.Counter[str] = collections.Counter()


def counted(method: Callable[..., None]) -> Callable[..., None]:
    """Count the calls of a rule in RULE_CALLS."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        RULE_CALLS[method.__name__] += 1
        method(*args, **kwargs)

    return wrapper


@dataclass
class ModelKey:
    value: Any
    policy: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None

    def is_live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass
class ModelStoreDocument:
    metadata: dict[str, Any]
    policy: str
    created_at: datetime


@dataclass
class ModelContext:
    """One context: store documents by name, and keys by (store, key).

    ``keys`` also contains expired keys until an operation deletes their
    documents, because the collection keeps them too.
    """

    dataset_id: ObjectId | None
    documents: dict[str, ModelStoreDocument] = field(default_factory=dict)
    keys: dict[tuple[str, str], ModelKey] = field(default_factory=dict)

    def live_keys(self, store_name: str, now: datetime) -> dict[str, ModelKey]:
        return {
            key: entry
            for (store, key), entry in sorted(self.keys.items())
            if store == store_name and entry.is_live(now)
        }

    def store(self, store_name: str, now: datetime) -> StoreDocument | None:
        document = self.documents.get(store_name)
        if document is not None:
            return StoreDocument(
                store_name=store_name,
                dataset_id=self.dataset_id,
                metadata=document.metadata,
                policy=KeyPolicy(document.policy),
                created_at=document.created_at,
                updated_at=document.created_at,
            )
        live = self.live_keys(store_name, now).values()
        if not live:
            return None
        return StoreDocument(
            store_name=store_name,
            dataset_id=self.dataset_id,
            metadata={},
            created_at=min(entry.created_at for entry in live),
            updated_at=max(entry.updated_at for entry in live),
        )

    def store_names(self, now: datetime) -> list[str]:
        names = set(self.documents)
        names.update(
            store for (store, _), entry in self.keys.items() if entry.is_live(now)
        )
        return sorted(names)

    def key_document(
        self, store_name: str, key: str, now: datetime
    ) -> KeyDocument | None:
        entry = self.keys.get((store_name, key))
        if entry is None or not entry.is_live(now):
            return None
        return KeyDocument(
            store_name=store_name,
            key=key,
            value=entry.value,
            dataset_id=self.dataset_id,
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            expires_at=entry.expires_at,
            policy=KeyPolicy(entry.policy),
        )

    def write_key(
        self,
        store_name: str,
        key: str,
        value: Any,
        ttl: float | timedelta | None,
        policy: str,
        now: datetime,
    ) -> None:
        previous = self.keys.get((store_name, key))
        keeps_created_at = previous is not None and previous.is_live(now)
        self.keys[(store_name, key)] = ModelKey(
            value=stored_form(value),
            policy="evict" if ttl is not None else policy,
            created_at=previous.created_at if keeps_created_at and previous else now,
            updated_at=now,
            expires_at=None if ttl is None else expiry_after(now, ttl),
        )

    def delete_store(self, store_name: str) -> None:
        self.documents.pop(store_name, None)
        for store, key in list(self.keys):
            if store == store_name:
                del self.keys[(store, key)]

    def raw_documents(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        """Return the documents the collection must contain, by context, store, key."""
        raw = {}
        for store_name, document in self.documents.items():
            raw[(self.dataset_id, store_name, STORE_DOCUMENT_KEY)] = {
                "value": document.metadata,
                "policy": document.policy,
                "created_at": document.created_at,
                "updated_at": document.created_at,
                "expires_at": None,
            }
        for (store_name, key), entry in self.keys.items():
            raw[(self.dataset_id, store_name, key)] = {
                "value": entry.value,
                "policy": entry.policy,
                "created_at": entry.created_at,
                "updated_at": entry.updated_at,
                "expires_at": entry.expires_at,
            }
        return raw


def global_order(store: StoreDocument) -> tuple[str, str]:
    dataset = "" if store.dataset_id is None else str(store.dataset_id)
    return (store.store_name, dataset)


class ExecutionStoreMachine(RuleBasedStateMachine):
    """Three services on one collection of a real mongod, and their model.

    ``mongod_uri`` is set by the test before the machine runs.
    """

    mongod_uri: str = ""
    examples = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        start = datetime.now(timezone.utc) + timedelta(days=1)
        self.clock = FakeClock(to_millis(start))
        self.loop = asyncio.new_event_loop()
        self.database_name = unique_database_name()
        self.client = self.run(self._connect())
        self.collection = self.client[self.database_name][COLLECTION_NAME]
        self.services = {
            context: ExecutionStoreService(
                repo=MongoExecutionStoreRepo(
                    self.collection, DATASET_ARGUMENTS[context]
                ),
                clock=self.clock,
            )
            for context in CONTEXTS
        }
        self.model = {
            context: ModelContext(DATASET_IDS[context]) for context in CONTEXTS
        }

    async def _connect(self) -> AsyncIOMotorClient:
        # Created inside a coroutine so that Motor binds to this machine's loop.
        return AsyncIOMotorClient(self.mongod_uri, tz_aware=True)

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def teardown(self) -> None:
        try:
            for service in self.services.values():
                self.run(service.close())
            self.run(self.client.drop_database(self.database_name))
        finally:
            self.client.close()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def now(self) -> datetime:
        return to_millis(self.clock())

    # Time.

    @rule(seconds=clock_steps)
    @counted
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def next_expiry(self) -> datetime | None:
        now = self.now
        expiries = [
            entry.expires_at
            for model in self.model.values()
            for entry in model.keys.values()
            if entry.expires_at is not None and entry.expires_at > now
        ]
        return min(expiries, default=None)

    @precondition(lambda self: self.next_expiry() is not None)
    @rule(offset_ms=st.sampled_from([-1, 0, 1]))
    @counted
    def advance_clock_to_expiry(self, offset_ms: int) -> None:
        # Lands on the next expiry, or a millisecond either side, where an
        # off-by-one in the live test would show.
        expiry = self.next_expiry()
        assert expiry is not None
        target = max(expiry + offset_ms * MILLISECOND, self.clock())
        self.clock.advance((target - self.clock()).total_seconds())

    # Stores of one context.

    @rule(
        context=contexts,
        store_name=store_names,
        metadata=metadatas,
        policy=policies,
        exist_ok=st.booleans(),
    )
    @counted
    def create_store(
        self,
        context: str,
        store_name: str,
        metadata: dict[str, Any] | None,
        policy: str,
        exist_ok: bool,
    ) -> None:
        model = self.model[context]
        service = self.services[context]
        existing = model.documents.get(store_name)

        if existing is not None and not exist_ok:
            with pytest.raises(StoreExistsError):
                self.run(service.create_store(store_name, metadata, policy, exist_ok))
            return

        created = self.run(service.create_store(store_name, metadata, policy, exist_ok))
        if existing is None:
            model.documents[store_name] = ModelStoreDocument(
                metadata=stored_form(metadata or {}), policy=policy, created_at=self.now
            )
        assert created == model.store(store_name, self.now)

    @rule(context=contexts, store_name=store_names)
    @counted
    def get_store(self, context: str, store_name: str) -> None:
        store = self.run(self.services[context].get_store(store_name))
        assert store == self.model[context].store(store_name, self.now)

    @rule(context=contexts, store_name=store_names)
    @counted
    def has_store(self, context: str, store_name: str) -> None:
        exists = self.run(self.services[context].has_store(store_name))
        assert exists is (self.model[context].store(store_name, self.now) is not None)

    @rule(context=contexts)
    @counted
    def list_and_count_stores(self, context: str) -> None:
        service = self.services[context]
        expected = self.model[context].store_names(self.now)
        assert self.run(service.list_stores()) == expected
        assert self.run(service.count_stores()) == len(expected)

    @rule(context=contexts, store_name=store_names)
    @counted
    def delete_store(self, context: str, store_name: str) -> None:
        model = self.model[context]
        expected = model.store(store_name, self.now)

        deleted = self.run(self.services[context].delete_store(store_name))

        assert deleted == expected
        model.delete_store(store_name)

    @rule(context=contexts)
    @counted
    def cleanup(self, context: str) -> None:
        result = self.run(self.services[context].cleanup())
        assert result is None
        self.model[context] = ModelContext(DATASET_IDS[context])

    # Keys of one context.

    @rule(
        context=contexts,
        store_name=store_names,
        key=keys,
        value=values,
        ttl=ttls,
        policy=policies,
    )
    @counted
    def set_key(
        self,
        context: str,
        store_name: str,
        key: str,
        value: Any,
        ttl: float | timedelta | None,
        policy: str,
    ) -> None:
        model = self.model[context]
        written = self.run(
            self.services[context].set_key(store_name, key, value, ttl, policy)
        )
        model.write_key(store_name, key, value, ttl, policy, self.now)
        assert written == model.key_document(store_name, key, self.now)

    @rule(context=contexts, store_name=store_names, key=keys, value=values, ttl=ttls)
    @counted
    def set_cache_key(
        self,
        context: str,
        store_name: str,
        key: str,
        value: Any,
        ttl: float | timedelta | None,
    ) -> None:
        model = self.model[context]
        written = self.run(
            self.services[context].set_cache_key(store_name, key, value, ttl)
        )
        model.write_key(store_name, key, value, ttl, "evict", self.now)
        assert written == model.key_document(store_name, key, self.now)

    @rule(context=contexts, store_name=store_names, key=keys)
    @counted
    def get_and_has_key(self, context: str, store_name: str, key: str) -> None:
        service = self.services[context]
        expected = self.model[context].key_document(store_name, key, self.now)
        assert self.run(service.get_key(store_name, key)) == expected
        assert self.run(service.has_key(store_name, key)) is (expected is not None)

    @rule(context=contexts, store_name=store_names, key=keys)
    @counted
    def delete_key(self, context: str, store_name: str, key: str) -> None:
        model = self.model[context]
        was_live = model.key_document(store_name, key, self.now) is not None

        deleted = self.run(self.services[context].delete_key(store_name, key))

        assert deleted is was_live
        if was_live:
            del model.keys[(store_name, key)]

    @rule(context=contexts, store_name=store_names, key=keys, ttl=positive_ttls)
    @counted
    def update_ttl(
        self, context: str, store_name: str, key: str, ttl: float | timedelta
    ) -> None:
        model = self.model[context]
        entry = model.keys.get((store_name, key))
        updated = self.run(self.services[context].update_ttl(store_name, key, ttl))

        if entry is None or not entry.is_live(self.now):
            assert updated is None
            return
        model.keys[(store_name, key)] = replace(
            entry,
            policy="evict",
            updated_at=self.now,
            expires_at=expiry_after(self.now, ttl),
        )
        assert updated == model.key_document(store_name, key, self.now)

    @rule(context=contexts, store_name=store_names)
    @counted
    def list_and_count_keys(self, context: str, store_name: str) -> None:
        service = self.services[context]
        expected = list(self.model[context].live_keys(store_name, self.now))
        assert self.run(service.list_keys(store_name)) == expected
        assert self.run(service.count_keys(store_name)) == len(expected)

    @rule(
        context=contexts,
        store_name=store_names,
        batch_size=st.sampled_from([1, 2, 1000]),
    )
    @counted
    def iter_keys(self, context: str, store_name: str, batch_size: int) -> None:
        async def collect() -> list[str]:
            service = self.services[context]
            return [key async for key in service.iter_keys(store_name, batch_size)]

        expected = list(self.model[context].live_keys(store_name, self.now))
        assert self.run(collect()) == expected

    @rule(context=contexts, store_name=st.none() | store_names)
    @counted
    def clear_cache(self, context: str, store_name: str | None) -> None:
        model = self.model[context]
        evictable = [
            (store, key)
            for (store, key), entry in model.keys.items()
            if entry.policy == "evict" and store_name in (None, store)
        ]
        live = sum(model.keys[item].is_live(self.now) for item in evictable)

        cleared = self.run(self.services[context].clear_cache(store_name))

        assert cleared == live
        for item in evictable:
            del model.keys[item]

    # Bulk operations.

    @rule(context=contexts, store_name=store_names, requested=key_lists)
    @counted
    def get_keys(self, context: str, store_name: str, requested: list[str]) -> None:
        model = self.model[context]
        expected = {
            key: document
            for key in requested
            if (document := model.key_document(store_name, key, self.now)) is not None
        }
        assert (
            self.run(self.services[context].get_keys(store_name, requested)) == expected
        )

    @rule(
        context=contexts,
        store_name=store_names,
        written=st.dictionaries(keys, values, max_size=4),
        ttl=ttls,
        policy=policies,
    )
    @counted
    def set_keys(
        self,
        context: str,
        store_name: str,
        written: dict[str, Any],
        ttl: float | timedelta | None,
        policy: str,
    ) -> None:
        model = self.model[context]
        count = self.run(
            self.services[context].set_keys(store_name, written, ttl, policy)
        )
        assert count == len(written)
        for key, value in written.items():
            model.write_key(store_name, key, value, ttl, policy, self.now)

    @rule(context=contexts, store_name=store_names, requested=key_lists)
    @counted
    def delete_keys(self, context: str, store_name: str, requested: list[str]) -> None:
        model = self.model[context]
        live = model.live_keys(store_name, self.now)
        going = set(requested) & set(live)

        deleted = self.run(self.services[context].delete_keys(store_name, requested))

        assert deleted == len(going)
        for key in going:
            del model.keys[(store_name, key)]

    # Every context; the calling service's own context does not matter.

    def expected_stores_global(
        self, store_name: str | None = None
    ) -> list[StoreDocument]:
        stores = []
        for model in self.model.values():
            for name in model.store_names(self.now):
                if store_name in (None, name):
                    stores.append(model.store(name, self.now))
        return sorted(stores, key=global_order)

    @rule(context=contexts)
    @counted
    def list_and_count_stores_global(self, context: str) -> None:
        service = self.services[context]
        expected = self.expected_stores_global()
        assert self.run(service.list_stores_global()) == expected
        assert self.run(service.count_stores_global()) == len(expected)

    @rule(context=contexts, store_name=store_names)
    @counted
    def has_store_global(self, context: str, store_name: str) -> None:
        exists = self.run(self.services[context].has_store_global(store_name))
        assert exists is bool(self.expected_stores_global(store_name))

    @rule(context=contexts, store_name=store_names)
    @counted
    def delete_store_global(self, context: str, store_name: str) -> None:
        expected = len(self.expected_stores_global(store_name))

        deleted = self.run(self.services[context].delete_store_global(store_name))

        assert deleted == expected
        for model in self.model.values():
            model.delete_store(store_name)

    # What every context shows, and what the collection contains.

    @invariant()
    def visible_state_matches_model(self) -> None:
        # list_stores_global returns every store of every context, and get_keys
        # every live key of a store, so these calls see all that the contexts
        # show.
        now = self.now
        global_stores = self.run(self.services["global"].list_stores_global())
        assert global_stores == self.expected_stores_global()
        for context, service in self.services.items():
            model = self.model[context]
            assert self.run(service.list_stores()) == model.store_names(now), context
            for store_name in STORE_NAMES:
                found = self.run(service.get_keys(store_name, KEYS))
                assert found == {
                    key: model.key_document(store_name, key, now)
                    for key in model.live_keys(store_name, now)
                }, (context, store_name)

    @invariant()
    def collection_matches_model(self) -> None:
        async def read_all() -> list[dict[str, Any]]:
            return [document async for document in self.collection.find({})]

        stored = {}
        for document in self.run(read_all()):
            identity = (document["dataset_id"], document["store_name"], document["key"])
            assert identity not in stored, f"duplicate document {identity}"
            stored[identity] = {
                name: document.get(name)
                for name in (
                    "value",
                    "policy",
                    "created_at",
                    "updated_at",
                    "expires_at",
                )
            }
        expected = {}
        for model in self.model.values():
            expected.update(model.raw_documents())
        assert stored == expected


def run_machine(uri: str, max_examples: int, steps: int) -> None:
    """Run the state machine and check that every rule ran."""
    RULE_CALLS.clear()
    ExecutionStoreMachine.examples = 0
    ExecutionStoreMachine.mongod_uri = uri
    run_state_machine_as_test(
        ExecutionStoreMachine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

    rules = {
        name
        for name, member in vars(ExecutionStoreMachine).items()
        if hasattr(member, "hypothesis_stateful_rule")
    }
    assert set(RULE_CALLS) == rules, f"rules never run: {rules - set(RULE_CALLS)}"
    print(
        f"\nstate machine: {ExecutionStoreMachine.examples} examples, "
        f"{sum(RULE_CALLS.values())} steps; {dict(sorted(RULE_CALLS.items()))}"
    )


@pytest.mark.mongod_only
def test_service_matches_model(mongod):
    run_machine(mongod.uri, max_examples=120, steps=40)


@pytest.mark.mongod_only
@pytest.mark.slow
def test_service_matches_model_long(mongod):
    run_machine(mongod.uri, max_examples=400, steps=60)
