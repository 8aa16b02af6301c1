"""Digest every file in a folder and cache each result in an execution store.

An async operator: each file gets its SHA-256 and line count and, for a Python
source file, the number of lines that start a ``def``, ``async def`` or
``class``. The digest runs in a worker thread, several files at a time. Each
result is cached for ``--ttl`` seconds under a key made of the file's relative
path, modification time and size, so the next run reads unchanged files from
the cache (HIT) and digests new or edited ones again (MISS).

The store lives in the context of a dataset derived from the folder, so each
folder gets its own keys. The store also keeps one persistent key,
``last-run``, with the summary of the latest run, which ``clear_cache()``
leaves in place.

Run it twice to see the cache work::

    python examples/cache_file_digests.py            # the execstore package
    python examples/cache_file_digests.py ~/src/app --ttl 60

Without ``EXECSTORE_DATABASE_URI`` it uses the embedded mongod, starting it if
needed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import ObjectId

from execstore import ExecutionStoreError, ExecutionStoreService

STORE_NAME = "file-digests"
LAST_RUN_KEY = "last-run"
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "execstore"
DEFAULT_TTL_SECONDS = 600.0
DEFAULT_CONCURRENCY = 8
CHUNK_BYTES = 1 << 20
DEFINITION_LINE = re.compile(rb"^[ \t]*(?:async[ \t]+def|def|class)[ \t]", re.MULTILINE)


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file: HIT, MISS or ERROR, with its digest or error."""

    path: str
    status: str
    digest: dict[str, Any] | None = None
    error: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folder",
        nargs="?",
        type=Path,
        default=DEFAULT_FOLDER,
        help="folder to digest recursively, skipping directories named __pycache__ "
        "or starting with '.' (default: the execstore package sources)",
    )
    parser.add_argument(
        "--ttl",
        type=positive_seconds,
        default=DEFAULT_TTL_SECONDS,
        help=f"seconds each cached digest lives (default: {DEFAULT_TTL_SECONDS:g})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"files digested at once (default: {DEFAULT_CONCURRENCY})",
    )
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"folder not found: {args.folder}")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def positive_seconds(text: str) -> float:
    seconds = float(text)
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError("expected a positive number of seconds")
    return seconds


def dataset_id_for(folder: Path) -> ObjectId:
    """Return a stable ObjectId for the folder's context.

    An ObjectId is 12 bytes, so the first 12 bytes of the SHA-256 of the
    absolute path name the same context on every run and on every machine
    that has the folder at the same path.
    """
    path_hash = hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogateescape"))
    return ObjectId(path_hash.digest()[:12])


def list_files(folder: Path) -> list[Path]:
    """Return the files under the folder, sorted, without following symlinks."""
    files = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = [
            name
            for name in subdirectories
            if name != "__pycache__" and not name.startswith(".")
        ]
        files += [Path(directory, name) for name in names]
    return sorted(files)


def relative_name(folder: Path, path: Path) -> str:
    """Return the path relative to the folder, with ``/`` between parts.

    Bytes of a file name that are not UTF-8 are written as backslash escapes,
    because store keys must be valid Unicode.
    """
    name = path.relative_to(folder).as_posix()
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def digest_file(path: Path) -> dict[str, Any]:
    """Return the file's SHA-256, its line count and, for ``.py``, its definitions."""
    sha256, lines = hash_and_count_lines(path)
    digest: dict[str, Any] = {"sha256": sha256, "lines": lines}
    if path.suffix == ".py":
        digest["definitions"] = len(DEFINITION_LINE.findall(path.read_bytes()))
    return digest


def hash_and_count_lines(path: Path) -> tuple[str, int]:
    """Return the file's SHA-256 and line count, reading it in chunks.

    A last line without a newline counts as a line.
    """
    sha256 = hashlib.sha256()
    lines = 0
    last_byte = b""
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            sha256.update(chunk)
            lines += chunk.count(b"\n")
            last_byte = chunk[-1:]
    if last_byte not in (b"", b"\n"):
        lines += 1
    return sha256.hexdigest(), lines


def cache_key(name: str, path: Path) -> str:
    """Return ``name|mtime_ns|size``, so an edited file gets a new key."""
    stat = path.stat()
    return f"{name}|{stat.st_mtime_ns}|{stat.st_size}"


async def process_file(
    service: ExecutionStoreService,
    folder: Path,
    path: Path,
    ttl: float,
    limit: asyncio.Semaphore,
) -> FileResult:
    name = relative_name(folder, path)
    async with limit:
        try:
            key = await asyncio.to_thread(cache_key, name, path)
            cached = await service.get_key(STORE_NAME, key)
            if cached is not None:
                return FileResult(name, "HIT", cached.value)

            digest = await asyncio.to_thread(digest_file, path)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return FileResult(name, "ERROR", error=f"cannot read: {reason}")
        await service.set_cache_key(STORE_NAME, key, digest, ttl=ttl)
        return FileResult(name, "MISS", digest)


async def digest_folder(
    args: argparse.Namespace,
) -> tuple[list[FileResult], dict[str, Any]]:
    """Digest the folder's files concurrently and return the results and a summary.

    The summary is also stored as the persistent key ``last-run``.
    """
    folder = args.folder.resolve()
    started = time.perf_counter()
    service = ExecutionStoreService(dataset_id=dataset_id_for(folder))
    try:
        await service.create_store(STORE_NAME, {"folder": str(folder)}, exist_ok=True)
        limit = asyncio.Semaphore(args.concurrency)
        tasks = [
            process_file(service, folder, path, args.ttl, limit)
            for path in list_files(folder)
        ]
        results = await asyncio.gather(*tasks)

        summary = summarize(results, time.perf_counter() - started)
        await service.set_key(STORE_NAME, LAST_RUN_KEY, summary)
        return results, summary
    finally:
        await service.close()


def summarize(results: list[FileResult], elapsed_seconds: float) -> dict[str, Any]:
    statuses = Counter(result.status for result in results)
    return {
        "files": len(results),
        "hits": statuses["HIT"],
        "misses": statuses["MISS"],
        "errors": statuses["ERROR"],
        "elapsed_seconds": round(elapsed_seconds, 3),
    }


def count_of(number: int, singular: str, plural: str = "") -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def format_row(status: str, path: str, path_width: int, details: str) -> str:
    return f"{status:<6}  {path:<{path_width}}  {details}".rstrip()


def format_details(result: FileResult) -> str:
    digest = result.digest
    if digest is None:
        return result.error
    definitions = digest.get("definitions", "")
    return f"{digest['sha256'][:16]}  {digest['lines']:>6}  {definitions:>9}"


def print_report(results: list[FileResult], summary: dict[str, Any]) -> None:
    path_width = max([len("FILE"), *(len(result.path) for result in results)])
    header = f"{'SHA-256':<16}  {'LINES':>6}  {'DEF/CLASS':>9}"
    print(format_row("STATUS", "FILE", path_width, header))
    for result in results:
        details = format_details(result)
        print(format_row(result.status, result.path, path_width, details))

    counts = [
        count_of(summary["hits"], "hit"),
        count_of(summary["misses"], "miss", "misses"),
        count_of(summary["errors"], "error"),
    ]
    files = count_of(summary["files"], "file")
    print(f"{files}: {', '.join(counts)} in {summary['elapsed_seconds']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results, summary = asyncio.run(digest_folder(args))
    except ExecutionStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    print_report(results, summary)
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
