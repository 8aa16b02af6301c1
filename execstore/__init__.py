"""execstore: a persistent key-value store on MongoDB for operators and scripts.

``ExecutionStoreService`` is the asynchronous service; ``SyncExecutionStoreService``
offers the same methods as plain blocking calls.
"""

from ._config import Settings
from ._errors import (
    DatabaseError,
    DatabaseUnavailableError,
    EmbeddedServerError,
    ExecutionStoreError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidValueError,
    MongodNotFoundError,
    ServiceClosedError,
    StoreExistsError,
)
from ._models import KeyDocument, KeyPolicy, StoreDocument
from ._repository import ExecutionStoreRepo, MongoExecutionStoreRepo
from ._service import ExecutionStoreService
from ._sync import SyncExecutionStoreService

__all__ = [
    "DatabaseError",
    "DatabaseUnavailableError",
    "EmbeddedServerError",
    "ExecutionStoreError",
    "ExecutionStoreRepo",
    "ExecutionStoreService",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidValueError",
    "KeyDocument",
    "KeyPolicy",
    "MongoExecutionStoreRepo",
    "MongodNotFoundError",
    "ServiceClosedError",
    "Settings",
    "StoreDocument",
    "StoreExistsError",
    "SyncExecutionStoreService",
]
