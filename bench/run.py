"""Measure execstore against the driver calls it makes, side by side in one run.

Usage::

    python -m bench.run [--quick] [--scale] [--json PATH] [--uri URI] [sizes]

The benchmark starts its own mongod on a free loopback port in a temporary
directory, unless ``--uri`` names a server. It measures each pair of sides in
interleaved rounds and prints a table of median microseconds per operation
with the ratio A/B. It writes every sample as JSON and stops the server.
``--help`` lists the size options and their defaults. See docs/performance.md
for what each pair compares and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from pymongo import MongoClient

from execstore import Settings
from execstore._server import MongodProcess, find_mongod

from .measure import PairResult
from .pairs import Config, run_async_pairs, run_sync_pairs
from .scale import ScaleConfig, run_scale

QUICK = Config(ops=2, ops_per_task=1, rounds=1, bulk_keys=20, bulk_rounds=1)
DEFAULT = Config(ops=50, ops_per_task=5, rounds=30, bulk_keys=1000, bulk_rounds=5)
SCALE_KEYS = 1_000_000
SCALE_BIG_STORE = 200_000

# (option, help) of every size option. Each default comes from DEFAULT or from
# the SCALE_* constants.
_SIZE_OPTIONS = [
    ("ops", "operations per round at concurrency 1"),
    ("ops-per-task", "operations per round of each task at concurrency 64"),
    ("rounds", "measured rounds per side"),
    ("bulk-keys", "keys per bulk write in the set_keys comparison"),
    ("bulk-rounds", "measured rounds per side of the set_keys comparison"),
    ("scale-keys", "keys in the large collection of --scale"),
    ("scale-big-store", "keys of the one large store that --scale iterates"),
]


def _size_default(option: str) -> int:
    attribute = option.replace("-", "_")
    if hasattr(DEFAULT, attribute):
        return int(getattr(DEFAULT, attribute))
    return SCALE_KEYS if option == "scale-keys" else SCALE_BIG_STORE


def _positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(
            f"expected an integer of 1 or more, got {text}"
        )
    return number


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    for option, text in _SIZE_OPTIONS:
        default = _size_default(option)
        parser.add_argument(
            f"--{option}",
            type=_positive_int,
            default=default,
            help=f"{text} ({default})",
        )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny run that checks that everything works. It sets the sizes above "
        "but --scale-keys and --scale-big-store to "
        + ", ".join(f"{name}={value}" for name, value in vars(QUICK).items()),
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also run the scale comparison on a large collection (minutes)",
    )
    parser.add_argument(
        "--skip-pairs",
        action="store_true",
        help="run only --scale, without the side-by-side pairs",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        help="file to write the results to (bench-results.json)",
    )
    parser.add_argument(
        "--uri",
        help="use the MongoDB server at this URI instead of starting a mongod. "
        "The benchmark works in databases of its own and drops them",
    )
    return parser.parse_args(argv)


def config_of(args: argparse.Namespace) -> Config:
    """Return the amount of work the arguments ask for."""
    if args.quick:
        return QUICK
    return Config(
        ops=args.ops,
        ops_per_task=args.ops_per_task,
        rounds=args.rounds,
        bulk_keys=args.bulk_keys,
        bulk_rounds=args.bulk_rounds,
    )


@contextlib.contextmanager
def mongodb_uri(uri: str | None) -> Iterator[str]:
    """Yield ``uri``, or start a mongod in a temporary directory and yield its URI."""
    if uri is not None:
        yield uri
        return
    binary = find_mongod(Settings.from_env())
    with tempfile.TemporaryDirectory(prefix="execstore-bench-") as data_dir:
        server = MongodProcess.start(binary, Path(data_dir, "db"))
        try:
            yield server.uri
        finally:
            server.stop()


def machine_info(uri: str) -> dict[str, Any]:
    """Describe the machine, Python, drivers and server of this run."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        server_version = client.server_info()["version"]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "motor": importlib.metadata.version("motor"),
        "pymongo": importlib.metadata.version("pymongo"),
        "mongod": server_version,
    }


def format_table(results: list[PairResult]) -> str:
    """Return the results as a plain-text table, one row per pair."""
    header = (
        f"{'operation':<36} {'side A':<34} {'side B':<44} "
        f"{'A µs':>9} {'B µs':>9} {'A/B':>6} {'paired':>6}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        lines.append(
            f"{result.name:<36} {result.side_a:<34} {result.side_b:<44} "
            f"{result.a_median:>9.1f} {result.b_median:>9.1f} {result.ratio:>6.2f} "
            f"{result.paired_ratio:>6.2f}"
        )
    for result in results:
        if result.group == "bulk":
            lines.append(
                f"{result.name}: set_keys is {1 / result.ratio:.1f}x faster than "
                "one set_key per key"
            )
    return "\n".join(lines)


def measure(uri: str, database: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the pairs and, with ``--scale``, the scale mode, and return the figures."""
    config = config_of(args)
    figures: dict[str, Any] = {"config": vars(config) | {"concurrencies": [1, 64]}}
    if not args.skip_pairs:
        pairs = asyncio.run(run_async_pairs(uri, database, config))
        pairs += run_sync_pairs(uri, database, config)
        figures["pairs"] = [pair.to_json() for pair in pairs]
        print(format_table(pairs))
    if args.scale:
        scale_config = ScaleConfig(args.scale_keys, args.scale_big_store, config)
        figures["scale"] = run_scale(uri, database, scale_config)
    return figures


def drop_databases(uri: str, database: str) -> None:
    """Drop every database that a run with this database name may have made."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        for name in (database, f"{database}_scale", f"{database}_empty"):
            client.drop_database(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and return the process exit code."""
    args = parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    now = datetime.datetime.now(datetime.timezone.utc)
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench.run", *arguments]),
        "date": now.isoformat(timespec="seconds"),
    }
    database = f"execstore_bench_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()

    with mongodb_uri(args.uri) as uri:
        report["machine"] = machine_info(uri)
        try:
            report |= measure(uri, database, args)
        finally:
            drop_databases(uri, database)

    report["seconds"] = round(time.monotonic() - started, 1)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json} after {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
