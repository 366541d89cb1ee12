"""Storage: peewee models, schema/versioning, SQLite + PostgreSQL specifics, read API.

* :func:`open_storage` opens a database for the DB-writer actor (:class:`Storage`).
* :class:`Database` opens one read-only (users, CLI status/export/plan), safe while an engine
  writes: 1m candles from ``ohlc_candles``, 3m ... 1d from the rollups the writer keeps,
  :meth:`Database.candles_arrow` as a ``pyarrow.Table`` (the ``arrow`` extra), at 1m from the
  catalog (Arrow files of the closed days, memory-mapped) where it is current;
  :func:`rebuild_catalog` / :func:`verify_catalog` rebuild and check it.
* :func:`replay_events` reads ticks, candle closes and settlements in the order they
  happened (what a replay delivers).
"""

from ._adopt import AdoptOutcome, AdoptRefused, AdoptResult, adopt_database
from ._catalog import CATALOG_SUFFIX, default_catalog_dir
from ._catalog_tools import CatalogReport, rebuild_catalog, verify_catalog
from ._lock import writer_holder
from ._models import ROLLUP_LEVELS, from_utc_text, rollup_table, to_utc_text
from ._postgres import POSTGRES_CREATE_STAGE_SQL, POSTGRES_UPSERT_CANDLES_SQL
from ._read import (
    ARROW_INSTALL,
    BUCKET_SECONDS,
    ArrowUnavailable,
    CandleRow,
    Database,
    bucket_start,
    candle_schema,
    import_pyarrow,
    probe_database,
)
from ._replay import ReplayEvent, replay_events, stable_minutes
from ._schema import (
    SCHEMA_VERSION,
    DatabaseKind,
    NoDatabaseError,
    QuantoxideDatabaseError,
    classify_database,
    create_schema,
)
from ._sqlite import SQLITE_UPSERT_CANDLES_SQL, limit_malloc_arenas
from ._storage import Storage, open_storage

__all__ = [
    "ARROW_INSTALL",
    "BUCKET_SECONDS",
    "CATALOG_SUFFIX",
    "POSTGRES_CREATE_STAGE_SQL",
    "POSTGRES_UPSERT_CANDLES_SQL",
    "ROLLUP_LEVELS",
    "SCHEMA_VERSION",
    "SQLITE_UPSERT_CANDLES_SQL",
    "AdoptOutcome",
    "AdoptRefused",
    "AdoptResult",
    "ArrowUnavailable",
    "CandleRow",
    "CatalogReport",
    "Database",
    "DatabaseKind",
    "NoDatabaseError",
    "QuantoxideDatabaseError",
    "ReplayEvent",
    "Storage",
    "adopt_database",
    "bucket_start",
    "candle_schema",
    "classify_database",
    "create_schema",
    "default_catalog_dir",
    "from_utc_text",
    "import_pyarrow",
    "limit_malloc_arenas",
    "open_storage",
    "probe_database",
    "rebuild_catalog",
    "replay_events",
    "rollup_table",
    "stable_minutes",
    "to_utc_text",
    "verify_catalog",
    "writer_holder",
]
