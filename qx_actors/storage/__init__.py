"""Storage: peewee models, schema/versioning, SQLite + PostgreSQL specifics, read API.

* :func:`open_storage` opens a database for the DB-writer actor (:class:`Storage`).
* :class:`Database` opens one for reading (users, CLI status), safe while an engine writes.
"""

from ._backend import (
    POSTGRES_CREATE_STAGE_SQL,
    POSTGRES_UPSERT_CANDLES_SQL,
    SQLITE_UPSERT_CANDLES_SQL,
)
from ._lock import writer_holder
from ._models import from_utc_text, to_utc_text
from ._read import RESOLUTIONS, CandleRow, Database, bucket_start
from ._schema import SCHEMA_VERSION
from ._storage import Storage, open_storage

__all__ = [
    "POSTGRES_CREATE_STAGE_SQL",
    "POSTGRES_UPSERT_CANDLES_SQL",
    "RESOLUTIONS",
    "SCHEMA_VERSION",
    "SQLITE_UPSERT_CANDLES_SQL",
    "CandleRow",
    "Database",
    "Storage",
    "bucket_start",
    "from_utc_text",
    "open_storage",
    "to_utc_text",
    "writer_holder",
]
