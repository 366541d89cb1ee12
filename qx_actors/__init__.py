"""qx_actors: LN Markets market-data sync engine built as a pykka actor system.

Embed it::

    from qx_actors import SyncEngine, load_config

    engine = SyncEngine.from_config(load_config("config/default.yaml"))
    receiver = engine.update_receiver()
    controller = engine.start()
    ...
    controller.shutdown()
"""

from qx_actors.config import QxConfig, load_config
from qx_actors.domain.lookback import Lookback, SyncMode
from qx_actors.domain.values import Candle, FundingSettlement, PriceTick
from qx_actors.errors import (
    ConfigError,
    DatabaseInUseError,
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
from qx_actors.sync_engine import SyncController, SyncEngine, SyncReader
from qx_actors.updates import Lagged, ReceiverClosed, SyncUpdate, UpdateReceiver

__all__ = [
    "Candle",
    "ConfigError",
    "DatabaseInUseError",
    "ExchangeError",
    "FatalError",
    "FundingSettlement",
    "Lagged",
    "Lookback",
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
    "configure_logging",
    "load_config",
]
