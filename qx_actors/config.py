"""YAML configuration: typed, frozen, validated once at the edge.

``load_config(path)`` reads a YAML file, interpolates ``${ENV_VAR}`` (and ``${ENV_VAR:-default}``)
in string values, and decodes it into :class:`QxConfig` with msgspec. Unknown keys, wrong types,
out-of-range values and values a key's rule refuses raise :class:`~qx_actors.errors.ConfigError`
naming the key path, e.g. ``sync.rest_timeout_s: expected a number > 0, got -1`` (every problem
at once: :class:`ConfigErrors`).

The messages are ours, built from structured information only: the input is checked against
the Structs' declared fields (their types, ``Annotated`` bounds, ``Literal`` choices and unions)
and against each struct's rules (:data:`_RULES`) before msgspec decodes it; no text of msgspec's
is read. Constructors have no side effects: building a config neither registers its database
password for scrubbing (:func:`register_secrets`, done by :func:`config_from_mapping` and by
``SyncEngine``) nor reads the clock (what only the clock can tell, an absolute reach in the
future or a lookback before the reach, is :func:`check_against_clock`, a load step and a run
start step).

Every field below has a documented default; the README's config reference mirrors this module.
"""

from __future__ import annotations

import functools
import math
import operator
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
import yaml

from qx_actors.domain.lookback import Lookback, ModeKind, ReplayWindow, SyncMode
from qx_actors.domain.passes import PassWindow as PassWindow
from qx_actors.domain.passes import resolve_pass as resolve_pass
from qx_actors.domain.settlements import floor_settlement_time
from qx_actors.domain.timeutil import (
    FIRST_CANDLE_TIME,
    FIRST_SETTLEMENT_TIME,
    floor_day,
    utc_now,
)
from qx_actors.domain.values import EXCHANGE_PAGE_LIMIT
from qx_actors.errors import ConfigError
from qx_actors.redact import redact_url, register_url_secret

__all__ = [
    "WHOLE_REACH",
    "ConfigErrors",
    "ExchangeConfig",
    "FlagRangeHours",
    "LoggingConfig",
    "MetricsConfig",
    "NonNegativeSeconds",
    "PassWindow",
    "PositiveHours",
    "PositiveSeconds",
    "QxConfig",
    "Reach",
    "ReplayConfig",
    "SyncConfig",
    "build_sync_mode",
    "check_against_clock",
    "check_lookback_within_reach",
    "config_from_mapping",
    "dump_config",
    "load_config",
    "parse_instant",
    "parse_listen",
    "register_secrets",
    "resolve_pass",
]

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0)]
PositiveHours = Annotated[float, msgspec.Meta(gt=0)]
#: The value of a flag-range key that means "the whole reach".
WHOLE_REACH = "reach"
#: A flag range: recent hours (> 0), ``"reach"`` (the whole reach), or ``None`` (off, as
#: quantoxide's ``None``).
FlagRangeHours = PositiveHours | Literal["reach"] | None

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_DURATION_UNITS = {
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Reach:
    """A parsed reach: an absolute time (``at``), a span before now (``ago``), or ``max``
    (neither); :meth:`resolve` places it against a clock."""

    text: str
    at: datetime | None = None
    ago: timedelta | None = None

    @classmethod
    def parse(cls, text: str) -> Reach:
        """Parse ``90d``/``12h``/``2w``, an ISO date or datetime, or ``max``; bad input is a
        ``ValueError``."""
        stripped = text.strip()
        if stripped == "max":
            return cls(text)
        match = _DURATION_RE.match(stripped)
        if match:
            return cls(text, ago=float(match.group(1)) * _DURATION_UNITS[match.group(2)])
        try:
            parsed = datetime.fromisoformat(stripped)  # 3.11 parses a "Z" suffix
        except ValueError:
            raise ValueError(
                "expected a duration such as '90d', '12h', '2w', an ISO date or 'max', "
                f"got {stripped!r}"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return cls(text, at=parsed.astimezone(UTC))

    def resolve(self, *, now: datetime, earliest: datetime) -> datetime:
        """The reach at ``now``, never before ``earliest`` (the exchange's first data); an
        absolute reach after ``now`` is a ``ValueError``."""
        if self.ago is not None:
            return max(now - self.ago, earliest)
        if self.at is not None:
            if self.at > now:
                raise ValueError(f"reach {self.text.strip()!r} is in the future")
            return max(self.at, earliest)
        return earliest


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` → (host, port); ``ValueError`` naming what was expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected 'host:port' such as '127.0.0.1:9108', got {text!r}")
    return host, int(port)


def parse_instant(text: str) -> datetime:
    """An ISO date or date and time (``2026-01-01``, ``2026-01-01T08:00Z``; naive means UTC)
    as an aware UTC datetime; ``ValueError`` naming what was expected."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected an ISO date or date and time such as 2026-01-01T08:00Z, got {text!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ReplayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``mode: replay``: the recorded window delivered through the update stream, and how fast."""

    #: First instant replayed: an ISO date or date and time (UTC); required by ``mode: replay``.
    from_: str | None = msgspec.field(default=None, name="from")
    #: End of the window (exclusive), as ``from``; required by ``mode: replay``.
    to: str | None = None
    #: A factor of real time (``60``: an hour in a minute) or ``max`` (as fast as the
    #: receivers read; back-pressured, nothing dropped).
    speed: Annotated[float, msgspec.Meta(gt=0)] | Literal["max"] = "max"

    def __post_init__(self) -> None:
        _enforce_rules(self)

    def window(self) -> ReplayWindow:
        """The window to replay; ``ValueError`` when ``from``/``to`` are missing or wrong."""
        if self.from_ is None or self.to is None:
            raise ValueError("mode 'replay' needs replay.from and replay.to")
        speed = None if self.speed == "max" else float(self.speed)
        return ReplayWindow(parse_instant(self.from_), parse_instant(self.to), speed)


class ExchangeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the exchange is. Defaults are the real LN Markets endpoints."""

    #: REST v3 base URL.
    rest_url: str = "https://api.lnmarkets.com"
    #: Stream API (WebSocket, JSON-RPC) URL.
    stream_url: str = "wss://stream.lnmarkets.com/v1"
    #: Follow live prices over the Stream API; false = REST polling only.
    stream_enabled: bool = True
    #: Send a ping after this long without any frame.
    heartbeat_interval_s: PositiveSeconds = 30.0
    #: No answer this long after a ping: the connection is dead.
    disconnect_timeout_s: PositiveSeconds = 6.0

    def __post_init__(self) -> None:
        _enforce_rules(self)


# ``dict=True``: room for the parsed reaches (cached properties), which are not config keys.
class SyncConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    """Timing, pacing and reach of the synchronization."""

    rest_timeout_s: PositiveSeconds = 20.0
    rest_rate_limit_per_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    rest_error_cooldown_s: NonNegativeSeconds = 10.0
    rest_error_max_trials: Annotated[int, msgspec.Meta(ge=1)] = 3
    price_history_batch_size: Annotated[int, msgspec.Meta(ge=1, le=EXCHANGE_PAGE_LIMIT)] = (
        EXCHANGE_PAGE_LIMIT
    )
    #: ``90d``/``12h``/``2w`` before now, an ISO date or datetime, or ``max`` (2020-03-01).
    price_history_reach: str = "90d"
    #: ``90d``/``12h``/``2w`` before now, an ISO date or datetime, or ``max`` (2021-01-11 08:00).
    funding_settlement_reach: str = "90d"
    price_history_re_sync_interval_s: PositiveSeconds = 10.0
    price_history_re_backfill_interval_s: PositiveSeconds = 90.0
    #: The recent hours in which holes are flagged (neighbours re-fetched for revisions) and
    #: exchange-confirmed holes asked about again after a (re)start; ``reach``: the whole
    #: reach; ``null``: off, as quantoxide's ``None`` (no hole is flagged, no confirmed hole
    #: asked about again). Holes are *found* anywhere in the reach either way.
    price_history_flag_gap_range_h: FlagRangeHours = 672.0
    #: The recent hours in which settlements missing between the oldest and the newest stored
    #: one are looked for and fetched; ``reach``: the whole reach; ``null``: off, as
    #: quantoxide's ``None`` (none is looked for; newer ones and older ones down to the reach
    #: are still fetched).
    funding_settlement_flag_missing_range_h: FlagRangeHours = 672.0
    live_price_tick_max_interval_s: PositiveSeconds = 180.0
    #: ``keep`` every tick, or ``prune`` ticks covered by stable candles (quantoxide's way).
    tick_retention: Literal["keep", "prune"] = "keep"
    funding_settlement_retry_interval_s: PositiveSeconds = 60.0
    restart_interval_s: NonNegativeSeconds = 10.0
    shutdown_timeout_s: PositiveSeconds = 6.0
    #: Capacity of each update receiver; on overflow the oldest updates are dropped.
    update_queue_capacity: Annotated[int, msgspec.Meta(ge=1)] = 1000
    #: Received ticks the WS feed holds in memory while the DB writer is slow or replaced
    #: (about an hour at 50 ticks/s); without ``tick_spool``, beyond it the oldest are dropped
    #: and counted.
    tick_queue_capacity: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    #: A local file that holds the received ticks during a database outage (appended a batch
    #: at a time, at least once a second: a crash loses at most the last unwritten batch),
    #: stored from it once the database is back (and at the next start after a crash);
    #: ``null``: off.
    tick_spool: str | None = None

    def __post_init__(self) -> None:
        # The reach syntax only (no clock): one in the future is check_against_clock's.
        _enforce_rules(self)

    @functools.cached_property
    def price_history_reach_parsed(self) -> Reach:
        """``price_history_reach``, parsed once."""
        return Reach.parse(self.price_history_reach)

    @functools.cached_property
    def funding_settlement_reach_parsed(self) -> Reach:
        """``funding_settlement_reach``, parsed once."""
        return Reach.parse(self.funding_settlement_reach)

    def price_history_reach_at(self, now: datetime) -> datetime:
        """The oldest candle to keep, floored to midnight UTC."""
        reach = self.price_history_reach_parsed.resolve(now=now, earliest=FIRST_CANDLE_TIME)
        return max(floor_day(reach), FIRST_CANDLE_TIME)

    def price_history_flag_gap_from(self, now: datetime, reach: datetime) -> datetime | None:
        """Where ``price_history_flag_gap_range_h`` starts at ``now``: ``now - hours``, never
        before ``reach`` (the price-history reach at ``now``); ``reach`` for ``reach``.

        ``None`` when the key is ``null`` (off, quantoxide's ``None``): the consumer flags no
        hole and asks about no exchange-confirmed hole again (a range starting at ``None``
        holds nothing). Holes are still *found* anywhere in the reach: that is storage's.
        """
        hours = self.price_history_flag_gap_range_h
        if hours is None:
            return None
        if isinstance(hours, str):  # WHOLE_REACH
            return reach
        return max(now - timedelta(hours=hours), reach)

    def funding_settlement_reach_at(self, now: datetime) -> datetime:
        """The oldest funding settlement to keep."""
        return self.funding_settlement_reach_parsed.resolve(now=now, earliest=FIRST_SETTLEMENT_TIME)

    def funding_scan_from(self, now: datetime) -> datetime | None:
        """Where ``funding_settlement_flag_missing_range_h`` starts at ``now``: ``now - hours``
        (not clipped to the reach: as quantoxide's, a hole below it is an error, not ignored);
        for ``reach`` the funding reach floored to a settlement time (the oldest one kept).

        ``None`` when the key is ``null`` (off, quantoxide's ``None``): no settlement missing
        between the stored bounds is looked for, so none is fetched as a repair.
        """
        hours = self.funding_settlement_flag_missing_range_h
        if hours is None:
            return None
        if isinstance(hours, str):  # WHOLE_REACH
            return floor_settlement_time(self.funding_settlement_reach_at(now))
        return now - timedelta(hours=hours)


class LoggingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where and how structured logs are written."""

    #: ``json`` lines (machines) or ``console`` (humans).
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    #: Path of a JSON-lines log file; stderr when null.
    file: str | None = None


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The health probe and Prometheus endpoint."""

    #: ``host:port`` to serve ``/health`` and ``/metrics`` on (e.g. ``127.0.0.1:9108``); off when
    #: null.
    listen: str | None = None

    def __post_init__(self) -> None:
        _enforce_rules(self)


class QxConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole configuration of one sync run."""

    #: ``backfill`` | ``live`` | ``full`` | ``replay`` (the recorded ``replay`` window).
    mode: Literal["backfill", "live", "full", "replay"] = "full"
    #: Live only: recent history to make sure of first, ``N x RES`` such as ``20 x 5m``.
    lookback: str | None = None
    #: ``sqlite:///path.db`` or ``postgresql://user:pass@host:5432/db``.
    database: str = "sqlite:///data/qx.db"
    #: The directory of the catalog (the Arrow copy of the closed days of 1m candles that
    #: ``Database.candles_arrow`` reads) for the app's readers (``export``, ``status``,
    #: ``plan``); ``None``: beside a SQLite file (``qx.db-catalog/``), none for PostgreSQL.
    catalog_dir: str | None = None
    exchange: ExchangeConfig = msgspec.field(default_factory=ExchangeConfig)
    sync: SyncConfig = msgspec.field(default_factory=SyncConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    replay: ReplayConfig = msgspec.field(default_factory=ReplayConfig)

    def __post_init__(self) -> None:
        # No side effect here: registering the password is register_secrets', and the
        # lookback against the reach needs the clock (check_against_clock).
        _enforce_rules(self)

    @property
    def sync_mode(self) -> SyncMode:
        """The configured mode as a :class:`SyncMode`."""
        return build_sync_mode(self.mode, self.lookback, self.replay)

    def to_dict(self, *, redacted: bool = False) -> dict[str, Any]:
        """The effective config as plain data; ``redacted``: the database password as ``***``
        (what ``qx-actors config`` shows)."""
        result: dict[str, Any] = msgspec.to_builtins(self)
        if redacted:
            result["database"] = redact_url(self.database)
        return result

    def __repr__(self) -> str:
        """Like msgspec's, with the database password as ``***``."""
        shown = {name: getattr(self, name) for name in self.__struct_fields__}
        shown["database"] = redact_url(self.database)
        return f"QxConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def build_sync_mode(
    mode: str, lookback: str | None, replay: ReplayConfig | None = None
) -> SyncMode:
    """The :class:`SyncMode` of a mode name and a lookback text (``20 x 5m``, live only), or of
    the replay section (replay only); a ``ValueError`` says what is wrong."""
    kind = ModeKind(mode)
    if kind is ModeKind.REPLAY:
        if lookback:
            raise ValueError(f"only valid with mode 'live' (mode is {mode!r})")
        return SyncMode(kind, replay_window=(replay or ReplayConfig()).window())
    if kind is ModeKind.LIVE:
        return SyncMode.live(Lookback.parse(lookback) if lookback else None)
    if lookback:
        raise ValueError(f"only valid with mode 'live' (mode is {mode!r})")
    return SyncMode(kind)


def check_lookback_within_reach(lookback: Lookback, sync: SyncConfig, *, now: datetime) -> None:
    """A lookback that starts before the price-history reach is an error (``ValueError``)."""
    reach = sync.price_history_reach_at(now)
    if now - lookback.duration < reach:
        raise ValueError(
            f"lookback: {lookback} reaches back to {(now - lookback.duration):%Y-%m-%d %H:%M}Z, "
            f"before sync.price_history_reach ({reach:%Y-%m-%d %H:%M}Z)"
        )


# --- loading --------------------------------------------------------------------------------


def _interpolate(node: Any, path: str) -> Any:
    if isinstance(node, str):

        def _replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is not None:
                    return default
                raise ConfigError(path or "<root>", f"environment variable {name} is not set")
            return value

        return _ENV_RE.sub(_replace, node)
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            out[key] = _interpolate(value, child)
        return out
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


# --- validation: our messages, from the declared types ---------------------------------------

_TYPE_WORDS = {float: "a number", int: "a whole number", str: "a string", bool: "true or false"}
#: ``msgspec.Meta`` bound -> its sign, and whether a value keeps it.
_BOUNDS: tuple[tuple[str, str, Callable[[Any, Any], bool]], ...] = (
    ("gt", ">", operator.gt),
    ("ge", ">=", operator.ge),
    ("lt", "<", operator.lt),
    ("le", "<=", operator.le),
)


def _number_text(number: float) -> str:
    """``0`` for 0 and 0.0, ``2.5`` for 2.5."""
    return str(int(number)) if float(number).is_integer() else repr(number)


def _base_and_bounds(
    annotation: Any,
) -> tuple[Any, list[tuple[str, Any, Callable[[Any, Any], bool]]]]:
    """``Annotated[float, Meta(gt=0)]`` -> ``(float, [(">", 0, operator.gt)])``; others as
    they are, without bounds."""
    if get_origin(annotation) is not Annotated:
        return annotation, []
    base, *metas = get_args(annotation)
    bounds = [
        (sign, getattr(meta, name), keeps)
        for meta in metas
        if isinstance(meta, msgspec.Meta)
        for name, sign, keeps in _BOUNDS
        if getattr(meta, name, None) is not None
    ]
    return base, bounds


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _words(annotation: Any) -> str:
    """What a key of type ``annotation`` takes, in words (bounds included)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        words = [_words(arg) for arg in get_args(annotation)]
        return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    if origin is Literal:
        choices = get_args(annotation)
        return " | ".join(repr(c) for c in choices) if len(choices) > 1 else repr(choices[0])
    if annotation is NoneType:
        return "null"
    base, bounds = _base_and_bounds(annotation)
    if _is_struct(base):
        return "a mapping"
    return " ".join(
        [_TYPE_WORDS[base], *(f"{sign} {_number_text(limit)}" for sign, limit, _ in bounds)]
    )


def _fits_type(base: Any, value: Any) -> bool:
    """Whether msgspec takes ``value`` for a ``base`` (strictly: no bool for a number, no
    float for a whole number, an int for a float only within a float's range)."""
    if base is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if base is float:
        if isinstance(value, int):
            return abs(value) <= _FLOAT_MAX_INT
        return isinstance(value, float)
    if base is int or base is str:
        return isinstance(value, base)
    raise TypeError(f"no config check for the type {base!r}")  # a new kind of key: add it


#: The largest int msgspec takes for a float.
_FLOAT_MAX_INT = int(sys.float_info.max)


def _mismatch(annotation: Any, value: Any) -> str | None:
    """``expected ...`` when ``value`` does not fit ``annotation``; ``None`` when it does (for a
    struct: when it is a mapping, whose keys are checked on their own)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        if any(_mismatch(arg, value) is None for arg in get_args(annotation)):
            return None
        return f"expected {_words(annotation)}"
    if origin is Literal:
        choices = get_args(annotation)
        if any(type(value) is type(choice) and value == choice for choice in choices):
            return None
        return f"expected {'one of ' if len(choices) > 1 else ''}{_words(annotation)}"
    if annotation is NoneType:
        return None if value is None else "expected null"
    base, bounds = _base_and_bounds(annotation)
    if _is_struct(base):
        return None if isinstance(value, dict | base) else "expected a mapping"
    if not _fits_type(base, value):
        return f"expected {_TYPE_WORDS[base]}"
    for sign, limit, keeps in bounds:
        if not keeps(value, limit):  # NaN keeps no bound
            return f"expected {_TYPE_WORDS[base]} {sign} {_number_text(limit)}"
    return None


def _shown(value: Any) -> str:
    """A value as the user wrote it, near enough: JSON (``"abc"``, ``null``, ``true``, ``[1]``),
    YAML's ``.nan``/``.inf``, and a YAML date said to be one (an unquoted ``2025-01-02``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, date):
        return f"{value.isoformat()} (a YAML date)"
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError, OverflowError):
        return repr(value)


@dataclass(frozen=True)
class _Rule:
    """What a struct's types can't say: ``check`` gets the values of the ``reads`` keys (the
    first is the one a problem is reported on) and returns the problem, or ``None``."""

    reads: tuple[str, ...]
    check: Callable[..., str | None]

    @property
    def key(self) -> str:
        return self.reads[0]


def _url_rule(key: str, schemes: tuple[str, ...], words: str) -> _Rule:
    def check(url: str) -> str | None:
        return None if url.startswith(schemes) else f"expected {words} URL, got {url!r}"

    return _Rule((key,), check)


def _parses(parse: Callable[[str], object]) -> Callable[[str | None], str | None]:
    """A check that ``parse`` accepts the text (``None`` is fine): its ``ValueError`` is the
    problem."""

    def check(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            parse(text)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def _database_problem(url: str) -> str | None:
    if url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return None
    return (
        "expected 'sqlite:///path.db' or "
        f"'postgresql://user:pass@host:port/db', got {redact_url(url)!r}"
    )


def _spool_problem(path: str | None) -> str | None:
    if path is None:
        return None
    spool = Path(path)
    if not path.strip():
        return "expected a file path or null, got an empty string"
    if spool.is_dir():
        return f"{path!r} is a directory (expected a file path)"
    if not spool.parent.is_dir():
        return f"the directory {str(spool.parent)!r} does not exist"
    if spool.exists() and not spool.is_file():
        return f"{path!r} is not a regular file"
    return None


def _replay_problem(mode: str, replay: ReplayConfig | dict[str, Any]) -> str | None:
    if mode != "replay":
        return None
    try:
        if isinstance(replay, dict):  # while loading: the section's keys are checked already
            replay = msgspec.convert(replay, ReplayConfig, str_keys=True)
        replay.window()
    except msgspec.ValidationError:
        return None  # a key of the section is wrong: reported on that key
    except ValueError as exc:
        return str(exc)
    return None


def _lookback_problem(lookback: str | None, mode: str) -> str | None:
    if lookback is None:
        return None
    if mode != "live":
        return f"only valid with mode 'live' (mode is {mode!r})"
    return _parses(Lookback.parse)(lookback)


def _catalog_dir_problem(path: str | None) -> str | None:
    if path is None:
        return None
    if not path.strip():
        return "expected a directory path or null, got an empty string"
    if Path(path).exists() and not Path(path).is_dir():
        return f"{path!r} is not a directory"
    return None


#: Each struct's rules, in the order they are checked: pure functions of the values, run by
#: the constructor (the first problem is its ``ValueError``) and by :func:`config_from_mapping`
#: (every problem, each on its key path). The clock is not theirs: :func:`check_against_clock`.
_RULES: dict[type[msgspec.Struct], tuple[_Rule, ...]] = {
    ExchangeConfig: (
        _url_rule("rest_url", ("http://", "https://"), "an http(s)://"),
        _url_rule("stream_url", ("ws://", "wss://"), "a ws(s)://"),
    ),
    SyncConfig: (
        _Rule(("price_history_reach",), _parses(Reach.parse)),
        _Rule(("funding_settlement_reach",), _parses(Reach.parse)),
        _Rule(("tick_spool",), _spool_problem),
    ),
    MetricsConfig: (_Rule(("listen",), _parses(parse_listen)),),
    ReplayConfig: (
        _Rule(("from_",), _parses(parse_instant)),
        _Rule(("to",), _parses(parse_instant)),
    ),
    QxConfig: (
        _Rule(("database",), _database_problem),
        _Rule(("catalog_dir",), _catalog_dir_problem),
        _Rule(("lookback", "mode"), _lookback_problem),
        _Rule(("mode", "replay"), _replay_problem),
    ),
}


def _rules_of(cls: type) -> tuple[_Rule, ...]:
    return next((_RULES[c] for c in cls.__mro__ if c in _RULES), ())


def _enforce_rules(struct: msgspec.Struct) -> None:
    """The constructor's check: the first broken rule as ``ValueError("key: problem")``."""
    for rule in _rules_of(type(struct)):
        problem = rule.check(*(getattr(struct, name) for name in rule.reads))
        if problem is not None:
            raise ValueError(f"{rule.key}: {problem}")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return field.default


def _check_struct(
    cls: type[msgspec.Struct], data: dict[Any, Any], path: str, errors: list[ConfigError]
) -> dict[str, Any]:
    """Append every problem of ``data`` as a ``cls`` to ``errors`` (in the order of the input's
    keys, then the rules'); return ``data`` without the keys that have one (their defaults
    apply), which msgspec then decodes."""
    fields = {field.encode_name: field for field in msgspec.structs.fields(cls)}
    clean: dict[str, Any] = {}
    bad: set[str] = set()
    for key, value in data.items():
        where = _join(path, key)
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            known = ", ".join(fields)
            errors.append(ConfigError(where, f"unknown key (known keys here: {known})"))
            continue
        expected = _mismatch(field.type, value)
        if expected is not None:
            shown = _shown(value)
            if isinstance(value, date) and _mismatch(field.type, value.isoformat()) is None:
                shown = shown.replace("(a YAML date)", "(a YAML date: quote it)")
            errors.append(ConfigError(where, f"{expected}, got {shown}"))
            bad.add(field.name)
            continue
        if isinstance(value, dict):  # a nested struct: its own keys
            base, _ = _base_and_bounds(field.type)
            value = _check_struct(base, value, where, errors)
        clean[key] = value
    by_name = {field.name: field for field in fields.values()}
    for rule in _rules_of(cls):
        if bad.intersection(rule.reads):
            # judged on a value that is already wrong: nothing to add, and its default applies
            clean.pop(by_name[rule.key].encode_name, None)
            continue
        values = [
            clean[by_name[name].encode_name]
            if by_name[name].encode_name in clean
            else _default(by_name[name])
            for name in rule.reads
        ]
        problem = rule.check(*values)
        if problem is not None:
            errors.append(ConfigError(_join(path, by_name[rule.key].encode_name), problem))
            bad.add(rule.key)
            clean.pop(by_name[rule.key].encode_name, None)
    return clean


def _fails(errors: list[ConfigError], path: str) -> bool:
    """Whether ``path`` or a key above it has a problem in ``errors``."""
    return any(path == e.path or path.startswith(f"{e.path}.") for e in errors)


def _clock_problems(
    config: QxConfig, now: datetime, lookback: Lookback | None, known: list[ConfigError]
) -> list[ConfigError]:
    """What only the clock tells, for the keys without a problem in ``known``."""
    problems: list[ConfigError] = []
    sync = config.sync
    for key, reach, earliest in (
        ("sync.price_history_reach", sync.price_history_reach_parsed, FIRST_CANDLE_TIME),
        (
            "sync.funding_settlement_reach",
            sync.funding_settlement_reach_parsed,
            FIRST_SETTLEMENT_TIME,
        ),
    ):
        if _fails(known, key):
            continue
        try:
            reach.resolve(now=now, earliest=earliest)
        except ValueError as exc:
            problems.append(ConfigError(key, str(exc)))
    if lookback is not None and not any(
        _fails([*known, *problems], key) for key in ("mode", "lookback", "sync.price_history_reach")
    ):
        try:
            check_lookback_within_reach(lookback, sync, now=now)
        except ValueError as exc:
            problems.append(ConfigError("lookback", str(exc).removeprefix("lookback: ")))
    return problems


class ConfigErrors(ConfigError):
    """Every problem of a config at once (``errors``, in the order found); the message is
    theirs joined by ``; ``. A single problem is a plain :class:`ConfigError`."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("", "; ".join(str(error) for error in errors))


#: How many problems are reported at most (a config that is wrong everywhere).
_MAX_ERRORS = 50


def _raise_any(errors: list[ConfigError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors[:_MAX_ERRORS])


def check_against_clock(config: QxConfig, now: datetime, *, mode: SyncMode | None = None) -> None:
    """What only the clock can tell, at ``now``: an absolute reach after ``now``, or a lookback
    (``mode``'s, else the config's) that starts before the price-history reach.

    A load step (:func:`config_from_mapping`, at the wall clock) and a run start step
    (``SyncEngine``, at the run's clock), never a constructor's. Raises :class:`ConfigError`
    naming the key (:class:`ConfigErrors` for both reaches).
    """
    lookback = (mode or _configured_mode(config)).lookback
    _raise_any(_clock_problems(config, now, lookback, []))


def _configured_mode(config: QxConfig) -> SyncMode:
    """The config's mode for the clock checks (a replay's window is not theirs)."""
    if config.mode == "replay":
        return SyncMode.backfill()  # no lookback: nothing of the replay is judged by the clock
    return config.sync_mode


def register_secrets(config: QxConfig) -> None:
    """From now on scrub ``config``'s secrets (its database password, in every form) from
    every log line and message. :func:`config_from_mapping` (so :func:`load_config`) and
    ``SyncEngine`` do it; a config built in code is registered when an engine is built from
    it, or by calling this."""
    register_url_secret(config.database)


def config_from_mapping(
    data: Any, *, source: str = "<config>", now: datetime | None = None
) -> QxConfig:
    """Validate already-parsed YAML/JSON data into a :class:`QxConfig`; every problem is
    reported at once (:class:`ConfigErrors` when there are several), each naming its key path.

    Loading also registers the database password for scrubbing (as :func:`register_secrets`)
    and checks the reaches and the lookback against the clock (``now``, default the wall clock:
    as :func:`check_against_clock`).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("", f"{source}: expected a mapping at the top level, got {data!r}")
    data = _interpolate(data, "")
    database = data.get("database")
    if isinstance(database, str):
        # before any check: a refused config's URL may still be quoted somewhere
        register_url_secret(database)
    errors: list[ConfigError] = []
    clean = _check_struct(QxConfig, data, "", errors)
    try:
        config = msgspec.convert(clean, QxConfig, str_keys=True)
    except msgspec.ValidationError as exc:  # a check above missed it: a bug
        raise ConfigError("", f"{source}: {exc}") from None
    # (a key with a problem was left out above: its default is what is judged, or skipped)
    now = utc_now() if now is None else now
    errors += _clock_problems(config, now, _configured_mode(config).lookback, errors)
    _raise_any(errors)
    return config


def load_config(path: str | os.PathLike[str]) -> QxConfig:
    """Read and validate a YAML config file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            "", f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line})"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"{file}: invalid YAML{where}: {problem}") from exc
    return config_from_mapping(data, source=str(file))


def dump_config(config: QxConfig, *, redacted: bool = True) -> str:
    """The effective config as YAML; the database password as ``***`` unless not
    ``redacted``."""
    return yaml.safe_dump(config.to_dict(redacted=redacted), sort_keys=False)
