"""Exceptions raised by execstore.

Every exception that execstore raises on purpose derives from one root, so
``except ExecutionStoreError`` catches them all::

    ExecutionStoreError
    ├── InvalidArgumentError (also ValueError)      an argument has a bad value
    │   └── InvalidValueError                      a value cannot be stored
    ├── InvalidArgumentTypeError (also TypeError)   an argument has a bad type
    ├── StoreExistsError                            create_store on an existing store
    ├── ServiceClosedError                          a call after close()
    ├── DatabaseError                               MongoDB failed an operation
    │   └── DatabaseUnavailableError                MongoDB cannot be reached
    └── EmbeddedServerError                         the local mongod failed
        └── MongodNotFoundError                     no mongod binary was found

Argument errors carry the argument's name in ``argument``. Their messages name
the argument and the value's type, never the value itself, because values may
be secrets.
"""

from __future__ import annotations


class ExecutionStoreError(Exception):
    """Root of every exception that execstore raises on purpose."""


class InvalidArgumentError(ExecutionStoreError, ValueError):
    """An argument has a value that the operation does not accept."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"invalid {argument}: {message}")
        self.argument = argument


class InvalidValueError(InvalidArgumentError):
    """A value cannot be stored: BSON cannot encode it or it is too large."""


class InvalidArgumentTypeError(ExecutionStoreError, TypeError):
    """An argument has a type that the operation does not accept."""

    def __init__(self, argument: str, expected: str, value: object) -> None:
        super().__init__(
            f"invalid {argument}: expected {expected}, got {type(value).__name__}"
        )
        self.argument = argument


class StoreExistsError(ExecutionStoreError):
    """``create_store`` found the store already existing in its context."""

    def __init__(self, store_name: str) -> None:
        super().__init__(
            f"store {store_name!r} already exists in this context; "
            "pass exist_ok=True to get the existing store"
        )
        self.store_name = store_name


class ServiceClosedError(ExecutionStoreError):
    """The service was closed and cannot run operations any more."""


class DatabaseError(ExecutionStoreError):
    """MongoDB or its driver failed an operation."""


class DatabaseUnavailableError(DatabaseError):
    """MongoDB could not be reached within the configured timeout."""


class EmbeddedServerError(ExecutionStoreError):
    """The embedded mongod could not be started, found or stopped."""


class MongodNotFoundError(EmbeddedServerError):
    """No mongod binary was found to run the embedded server."""
