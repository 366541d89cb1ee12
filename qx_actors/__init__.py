"""qx_actors: LN Markets market-data sync engine built as a pykka actor system.

Embed it::

    from qx_actors import SyncEngine, load_config

    engine = SyncEngine.from_config(load_config("config/default.yaml"))
    receiver = engine.update_receiver()
    controller = engine.start()
    ...
    controller.shutdown()

The settlement-schedule helpers are the four ``*_settlement_time`` functions; tests of an
embedding use :mod:`qx_actors.testing` (simulator, run probe, fast config).
"""

from qx_actors.config import QxConfig, load_config
from qx_actors.domain.funding import FundingSettlementsState
from qx_actors.domain.history import PriceHistoryState
from qx_actors.domain.lookback import Lookback, SyncMode
from qx_actors.domain.settlements import (
    ceil_settlement_time,
    floor_settlement_time,
    is_valid_settlement_time,
    next_settlement_time,
)
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import (
    ChildDied,
    ConfigError,
    DatabaseInUseError,
    DatabaseUnavailable,
    ExchangeError,
    FatalError,
    QxError,
    RecoverableError,
    StorageError,
    SyncAlreadyShutdown,
    SyncAlreadyStarted,
    SyncAlreadyTerminated,
    SyncError,
    SyncNotStarted,
    SyncShutdownFailed,
)
from qx_actors.logs import configure_logging
from qx_actors.status import State, SyncStatus
from qx_actors.storage import CandleRow, Database
from qx_actors.sync_engine import SyncController, SyncEngine, SyncReader
from qx_actors.updates import (
    AsyncUpdateReceiver,
    Lagged,
    ReceiverClosed,
    SyncUpdate,
    UpdateReceiver,
)

__all__ = [
    "AsyncUpdateReceiver",
    "Candle",
    "CandleRow",
    "ChildDied",
    "ConfigError",
    "Database",
    "DatabaseInUseError",
    "DatabaseUnavailable",
    "ExchangeError",
    "FatalError",
    "FundingSettlement",
    "FundingSettlementsState",
    "Lagged",
    "Lookback",
    "PriceHistoryState",
    "PriceTick",
    "QxConfig",
    "QxError",
    "ReceiverClosed",
    "RecoverableError",
    "State",
    "StorageError",
    "SyncAlreadyShutdown",
    "SyncAlreadyStarted",
    "SyncAlreadyTerminated",
    "SyncController",
    "SyncEngine",
    "SyncError",
    "SyncMode",
    "SyncNotStarted",
    "SyncReader",
    "SyncShutdownFailed",
    "SyncStatus",
    "SyncUpdate",
    "UpdateReceiver",
    "ceil_settlement_time",
    "configure_logging",
    "floor_settlement_time",
    "is_valid_settlement_time",
    "load_config",
    "next_settlement_time",
]
