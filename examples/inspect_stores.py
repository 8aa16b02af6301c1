"""List every execution store in every context, with each key's policy and expiry.

A blocking script on SyncExecutionStoreService. It prints one table of all
stores, then one table per store of its live keys with their policy and the
time left until each expires. With ``--clear-cache`` it then calls
``clear_cache()`` in every context that has a store, which deletes the
evictable keys and keeps persistent keys and store metadata.

    python examples/inspect_stores.py
    python examples/inspect_stores.py --clear-cache

Without ``EXECSTORE_DATABASE_URI`` it uses the embedded mongod, starting it if
needed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from bson import ObjectId

from execstore import (
    ExecutionStoreError,
    KeyDocument,
    StoreDocument,
    SyncExecutionStoreService,
)

DEFAULT_MAX_KEYS = 20
MAX_KEY_WIDTH = 60

# A store is identified by its name and its context.
StoreKey = tuple[str, ObjectId | None]


@dataclass
class StoreReport:
    """A store with its live key count and the first of its keys."""

    store: StoreDocument
    key_count: int = 0
    keys: list[KeyDocument] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clear-cache",
        action="store_true",
        help="afterwards, delete the evictable keys of every context that has a store",
    )
    parser.add_argument(
        "--max-keys",
        type=int,
        default=DEFAULT_MAX_KEYS,
        help=f"keys listed per store, 0 for none (default: {DEFAULT_MAX_KEYS})",
    )
    args = parser.parse_args(argv)
    if args.max_keys < 0:
        parser.error("--max-keys must be 0 or more")
    return args


def group_by_context(
    stores: list[StoreDocument],
) -> dict[ObjectId | None, list[StoreDocument]]:
    contexts: dict[ObjectId | None, list[StoreDocument]] = {}
    for store in stores:
        contexts.setdefault(store.dataset_id, []).append(store)
    return contexts


def read_store(
    service: SyncExecutionStoreService, store: StoreDocument, max_keys: int
) -> StoreReport:
    """Count the store's live keys and read the first ``max_keys`` of them."""
    report = StoreReport(store, service.count_keys(store.store_name))
    if max_keys == 0:
        return report

    # iter_keys streams the names, so a large store is never read whole.
    # Closing the generator early closes its cursor.
    with contextlib.closing(service.iter_keys(store.store_name, max_keys)) as names:
        first_names = list(itertools.islice(names, max_keys))

    # get_keys omits a key that expired or was deleted since iter_keys.
    keys = service.get_keys(store.store_name, first_names)
    report.keys = [keys[name] for name in first_names if name in keys]
    return report


def inspect_context(
    dataset_id: ObjectId | None,
    stores: list[StoreDocument],
    max_keys: int,
    clear_cache: bool,
) -> tuple[list[StoreReport], int | None]:
    """Read the context's stores, then clear its cache if requested.

    Returns:
        One report per store, and how many keys ``clear_cache()`` removed, or
        None when it was not called.
    """
    with SyncExecutionStoreService(dataset_id=dataset_id) as service:
        reports = [read_store(service, store, max_keys) for store in stores]
        removed = service.clear_cache() if clear_cache else None
    return reports, removed


def context_name(dataset_id: ObjectId | None) -> str:
    return "global" if dataset_id is None else f"dataset {dataset_id}"


def count_of(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def format_time(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def format_remaining(key: KeyDocument, now: datetime) -> str:
    """Return the time left until the key expires, such as ``9m 58s``."""
    if key.expires_at is None:
        return "no expiry"
    # Rounded up, so a key that is still live never shows 0s.
    seconds = max(math.ceil((key.expires_at - now).total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]

    # Show the largest nonzero unit and the one after it: "1h 0m", not "1h 5s".
    first = next((index for index, (amount, _) in enumerate(parts) if amount), 3)
    return " ".join(f"{amount}{unit}" for amount, unit in parts[first : first + 2])


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = ""
) -> None:
    """Print rows under the header, each column as wide as its widest cell."""
    lines = [header, *rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        print(indent + "  ".join(cells).rstrip())


def print_stores(reports: list[StoreReport]) -> None:
    contexts = {report.store.dataset_id for report in reports}
    print(f"{count_of(len(reports), 'store')} in {count_of(len(contexts), 'context')}")
    rows = [
        (
            report.store.store_name,
            context_name(report.store.dataset_id),
            str(report.key_count),
            format_time(report.store.created_at),
            format_time(report.store.updated_at),
            str(report.store.metadata),
        )
        for report in reports
    ]
    header = ("STORE", "CONTEXT", "KEYS", "CREATED (UTC)", "UPDATED (UTC)", "METADATA")
    print_table(header, rows)


def print_keys(report: StoreReport, now: datetime) -> None:
    store = report.store
    context = context_name(store.dataset_id)
    print(f"\n{store.store_name} in {context}: {count_of(report.key_count, 'key')}")

    rows = [
        (shorten(key.key, MAX_KEY_WIDTH), key.policy.value, format_remaining(key, now))
        for key in report.keys
    ]
    if rows:
        print_table(("KEY", "POLICY", "EXPIRES IN"), rows, indent="  ")
    if report.key_count > len(rows):
        print(f"  ... and {report.key_count - len(rows)} more")


def inspect_all(
    max_keys: int, clear_cache: bool
) -> tuple[list[StoreReport], dict[ObjectId | None, int | None]]:
    """Read every store, in ``list_stores_global`` order, context by context.

    Returns:
        The store reports, and per context the keys that ``clear_cache()``
        removed, or None when it was not called.
    """
    with SyncExecutionStoreService() as service:
        stores = service.list_stores_global()

    reports: dict[StoreKey, StoreReport] = {}
    removed: dict[ObjectId | None, int | None] = {}
    # One service per context, closed before the next, however many exist.
    for dataset_id, context_stores in group_by_context(stores).items():
        context_reports, removed[dataset_id] = inspect_context(
            dataset_id, context_stores, max_keys, clear_cache
        )
        for report in context_reports:
            reports[(report.store.store_name, dataset_id)] = report
    return [reports[(store.store_name, store.dataset_id)] for store in stores], removed


def print_cleared(removed: dict[ObjectId | None, int | None]) -> None:
    if any(count is not None for count in removed.values()):
        print()
    for dataset_id, count in removed.items():
        if count is not None:
            context = context_name(dataset_id)
            print(f"clear_cache() in {context}: removed {count_of(count, 'key')}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        reports, removed = inspect_all(args.max_keys, args.clear_cache)
    except ExecutionStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    print_stores(reports)
    now = datetime.now(timezone.utc)
    for report in reports:
        print_keys(report, now)
    print_cleared(removed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
