"""YAML configuration: typed, frozen, validated once at the edge.

``load_config(path)`` reads a YAML file, interpolates ``${ENV_VAR}`` (and ``${ENV_VAR:-default}``)
in string values, and decodes it into :class:`QxConfig` with msgspec. Unknown keys, wrong types
and out-of-range values raise :class:`~qx_actors.errors.ConfigError` naming the key path, e.g.
``sync.rest_timeout_s: expected a number > 0, got "abc"``.

Every field below has a documented default; the README's config reference mirrors this module.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
import yaml

from qx_actors.domain.lookback import Lookback, ModeKind, SyncMode
from qx_actors.domain.settlements import floor_settlement_time
from qx_actors.domain.timeutil import (
    FIRST_CANDLE_TIME,
    FIRST_SETTLEMENT_TIME,
    UNSTABLE_AGE,
    floor_day,
    floor_minute,
    utc_now,
)
from qx_actors.domain.values import EXCHANGE_PAGE_LIMIT
from qx_actors.errors import ConfigError
from qx_actors.redact import redact_url, register_url_secret

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
            parsed = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
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


def parse_reach(text: str, *, now: datetime, earliest: datetime) -> datetime:
    """Resolve a reach (``90d``/``12h``/``2w`` before ``now``, an ISO date/datetime, ``max``).

    The result is never before ``earliest`` (the exchange's first data); bad input is a
    ``ValueError``.
    """
    return Reach.parse(text).resolve(now=now, earliest=earliest)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` → (host, port); ``ValueError`` naming what was expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected 'host:port' such as '127.0.0.1:9108', got {text!r}")
    return host, int(port)


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
        if not self.rest_url.startswith(("http://", "https://")):
            raise ValueError(f"rest_url: expected an http(s):// URL, got {self.rest_url!r}")
        if not self.stream_url.startswith(("ws://", "wss://")):
            raise ValueError(f"stream_url: expected a ws(s):// URL, got {self.stream_url!r}")


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

    def __post_init__(self) -> None:
        # Parsed here, once: a bad reach fails the load, and the passes reuse the parse.
        now = utc_now()
        for key, earliest in (
            ("price_history_reach", FIRST_CANDLE_TIME),
            ("funding_settlement_reach", FIRST_SETTLEMENT_TIME),
        ):
            try:
                reach: Reach = getattr(self, f"{key}_parsed")
                reach.resolve(now=now, earliest=earliest)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None

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


@dataclass(frozen=True)
class PassWindow:
    """Everything one sync pass needs from the config, resolved against the run's clock once
    (:func:`resolve_pass`)."""

    now: datetime
    #: The oldest candle to keep (``sync.price_history_reach_at(now)``).
    price_history_reach: datetime
    #: Where holes are flagged from (``sync.price_history_flag_gap_from(now, reach)``);
    #: ``None``: flagging is off (flag no hole, ask about no confirmed hole again).
    price_history_flag_gap_from: datetime | None
    #: Live only: the start of the recent candles to make sure of (the lookback, else the
    #: candles that may still change), never before the reach; ``None`` for backfill and full.
    lookback_start: datetime | None
    #: The oldest funding settlement to keep (``sync.funding_settlement_reach_at(now)``).
    funding_reach: datetime
    #: Where missing settlements are looked for (``sync.funding_scan_from(now)``); ``None``:
    #: the scan is off (no missing settlement is looked for nor fetched).
    funding_scan_from: datetime | None

    @property
    def funding_query_from(self) -> datetime:
        """Where to read the stored settlement times from (``QueryFunding``,
        ``funding_facts``): the scan start, or ``now`` when the scan is off (nothing to read)."""
        return self.now if self.funding_scan_from is None else self.funding_scan_from


def resolve_pass(sync: SyncConfig, mode: SyncMode, now: datetime) -> PassWindow:
    """The reach, lookback and scan windows of one pass at ``now``."""
    reach = sync.price_history_reach_at(now)
    lookback_start = None
    if mode.kind is ModeKind.LIVE:
        span = mode.lookback.duration if mode.lookback is not None else UNSTABLE_AGE
        lookback_start = max(floor_minute(now - span), reach)
    return PassWindow(
        now=now,
        price_history_reach=reach,
        price_history_flag_gap_from=sync.price_history_flag_gap_from(now, reach),
        lookback_start=lookback_start,
        funding_reach=sync.funding_settlement_reach_at(now),
        funding_scan_from=sync.funding_scan_from(now),
    )


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
        if self.listen is not None:
            try:
                parse_listen(self.listen)
            except ValueError as exc:
                raise ValueError(f"listen: {exc}") from None


class QxConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole configuration of one sync run."""

    #: ``backfill`` | ``live`` | ``full``.
    mode: Literal["backfill", "live", "full"] = "full"
    #: Live only: recent history to make sure of first, ``N x RES`` such as ``20 x 5m``.
    lookback: str | None = None
    #: ``sqlite:///path.db`` or ``postgresql://user:pass@host:5432/db``.
    database: str = "sqlite:///data/qx.db"
    exchange: ExchangeConfig = msgspec.field(default_factory=ExchangeConfig)
    sync: SyncConfig = msgspec.field(default_factory=SyncConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)

    def __post_init__(self) -> None:
        # From here on the database password is scrubbed from every log line and message.
        register_url_secret(self.database)
        if not self.database.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                "database: expected 'sqlite:///path.db' or "
                f"'postgresql://user:pass@host:port/db', got {redact_url(self.database)!r}"
            )
        if self.lookback is not None:
            if self.mode != "live":
                raise ValueError(f"lookback: only valid with mode 'live' (mode is {self.mode!r})")
            try:
                lookback = Lookback.parse(self.lookback)
            except ValueError as exc:
                raise ValueError(f"lookback: {exc}") from None
            check_lookback_within_reach(lookback, self.sync, now=utc_now())

    @property
    def sync_mode(self) -> SyncMode:
        """The configured mode as a :class:`SyncMode`."""
        return build_sync_mode(self.mode, self.lookback)

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


def build_sync_mode(mode: str, lookback: str | None) -> SyncMode:
    """The :class:`SyncMode` of a mode name and a lookback text (``20 x 5m``, live only); a
    ``ValueError`` says what is wrong."""
    kind = ModeKind(mode)
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


_MSGSPEC_AT = re.compile(r"^(?P<detail>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


def _lookup(data: Any, dotted: str) -> Any:
    node = data
    for part in [p for p in re.split(r"\.|\[(\d+)\]", dotted) if p]:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _struct_for(path: str) -> type[msgspec.Struct] | None:
    struct: type[msgspec.Struct] = QxConfig
    for part in [p for p in path.split(".") if p]:
        annotations = {f.name: f.type for f in msgspec.structs.fields(struct)}
        child = annotations.get(part)
        if not (isinstance(child, type) and issubclass(child, msgspec.Struct)):
            return None
        struct = child
    return struct


def _field_type(path: str) -> Any:
    """The annotation of the config key at ``path`` (``None`` if there is no such key)."""
    parent, _, field = path.rpartition(".")
    struct = _struct_for(parent)
    if struct is None:
        return None
    return {f.name: f.type for f in msgspec.structs.fields(struct)}.get(field)


def _union_words(annotation: Any) -> str | None:
    """What a union key takes, in words (``a number > 0, 'reach' or null``); ``None`` if
    ``annotation`` is not a union."""
    if get_origin(annotation) not in (Union, UnionType):
        return None
    words: list[str] = []
    for arg in get_args(annotation):
        if arg is NoneType:
            words.append("null")
        elif get_origin(arg) is Literal:
            words.extend(repr(choice) for choice in get_args(arg))
        elif get_origin(arg) is Annotated:
            base, *metas = get_args(arg)
            bounds = [
                f"{op} {getattr(meta, name):g}"
                for meta in metas
                for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
                if getattr(meta, name, None) is not None
            ]
            words.append(" ".join([_TYPE_WORDS.get(base, str(base)), *bounds]))
        else:
            words.append(_TYPE_WORDS.get(arg, str(arg)))
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]


_TYPE_WORDS = {float: "a number", int: "a whole number", str: "a string", bool: "true or false"}


def _friendly(error: msgspec.ValidationError, data: Any) -> ConfigError:
    text = str(error)
    match = _MSGSPEC_AT.match(text)
    path, detail = ("", text) if match is None else (match["path"].lstrip("."), match["detail"])
    unknown = _UNKNOWN.match(detail)
    if unknown:
        struct = _struct_for(path)
        known = ", ".join(struct.__struct_fields__) if struct else ""
        key = f"{path}.{unknown['field']}" if path else unknown["field"]
        return ConfigError(key, f"unknown key (known keys here: {known})")
    annotation = _field_type(path)
    union = _union_words(annotation)
    if union is not None and (
        detail.startswith("Invalid enum value") or detail.startswith("Expected `")
    ):
        # e.g. a flag range: "expected a number > 0, 'reach' or null, got \"whole\""
        got = msgspec.json.encode(_lookup(data, path)).decode()
        return ConfigError(path, f"expected {union}, got {got}")
    if detail.startswith("Invalid enum value"):
        choices = " | ".join(repr(c) for c in get_args(annotation))
        got = msgspec.json.encode(_lookup(data, path)).decode()
        return ConfigError(path, f"expected one of {choices}, got {got}")
    if "Expected" in detail:
        detail = detail.replace("Expected `float`", "expected a number")
        detail = detail.replace("Expected `int`", "expected a whole number")
        detail = detail.replace("Expected `str`", "expected a string")
        detail = detail.replace("Expected `bool`", "expected true or false")
        detail = detail.replace("Expected `object`", "expected a mapping")
        detail = detail.replace("Expected ", "expected ")
        value = _lookup(data, path)
        detail = re.sub(r", got `[^`]+`$", "", detail)
        detail = f"{detail}, got {msgspec.json.encode(value).decode()}"
        return ConfigError(path, detail)
    # A __post_init__ message already starts with the key name inside its struct.
    head, sep, rest = detail.partition(": ")
    if sep and re.fullmatch(r"[a-z_]+", head):
        return ConfigError(f"{path}.{head}" if path else head, rest)
    return ConfigError(path, detail)


class ConfigErrors(ConfigError):
    """Every problem of a config at once (``errors``, in the order found); the message is
    theirs joined by ``; ``. A single problem is a plain :class:`ConfigError`."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("", "; ".join(str(error) for error in errors))


#: How many problems are collected before giving up (a config that is wrong everywhere).
_MAX_ERRORS = 50


def _drop(data: Any, dotted: str) -> bool:
    """Remove the key at ``dotted`` from ``data`` (so that its default applies); whether it
    was there."""
    parts = [p for p in re.split(r"\.|\[(\d+)\]", dotted) if p]
    node = data
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    if parts and isinstance(node, dict) and parts[-1] in node:
        del node[parts[-1]]
        return True
    return False


def _copy_tree(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {key: _copy_tree(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_copy_tree(value) for value in node]
    return node


def config_from_mapping(data: Any, *, source: str = "<config>") -> QxConfig:
    """Validate already-parsed YAML/JSON data into a :class:`QxConfig`; every problem is
    reported at once (:class:`ConfigErrors` when there are several)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("", f"{source}: expected a mapping at the top level, got {data!r}")
    data = _interpolate(data, "")
    try:
        return msgspec.convert(data, QxConfig, str_keys=True)
    except msgspec.ValidationError as exc:
        first = _friendly(exc, data)
    # msgspec stops at the first problem: drop the offending key (its default applies) and
    # validate again, until the rest is valid or a problem can't be set aside.
    errors = [first]
    remaining = _copy_tree(data)
    while len(errors) < _MAX_ERRORS and _drop(remaining, errors[-1].path):
        try:
            msgspec.convert(remaining, QxConfig, str_keys=True)
            break
        except msgspec.ValidationError as exc:
            error = _friendly(exc, remaining)
            if any(str(error) == str(seen) for seen in errors):
                break
            errors.append(error)
    if len(errors) == 1:
        raise first
    raise ConfigErrors(errors)


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
