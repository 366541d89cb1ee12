"""YAML config: defaults, the bundled files, interpolation, and errors that name the key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from qx_actors import SyncEngine
from qx_actors import config as config_module
from qx_actors.config import (
    ConfigErrors,
    ExchangeConfig,
    LoggingConfig,
    MetricsConfig,
    QxConfig,
    Reach,
    SyncConfig,
    check_against_clock,
    config_from_mapping,
    dump_config,
    load_config,
    register_secrets,
    resolve_pass,
)
from qx_actors.domain.lookback import Lookback, ModeKind, SyncMode
from qx_actors.errors import ConfigError
from qx_actors.redact import clear_secrets, is_registered

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def test_empty_file_gives_documented_defaults(tmp_path: Path) -> None:
    """An empty YAML file yields every documented default."""
    file = tmp_path / "empty.yaml"
    file.write_text("")
    config = load_config(file)
    assert QxConfig() == config
    assert ("full", "sqlite:///data/qx.db") == (config.mode, config.database)
    assert (20.0, 1.0, 10.0, 3) == (
        config.sync.rest_timeout_s,
        config.sync.rest_rate_limit_per_s,
        config.sync.rest_error_cooldown_s,
        config.sync.rest_error_max_trials,
    )
    assert ("keep", 6.0, 10.0) == (
        config.sync.tick_retention,
        config.sync.shutdown_timeout_s,
        config.sync.restart_interval_s,
    )
    assert ("json", "info", None) == (
        config.logging.format,
        config.logging.level,
        config.logging.file,
    )


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml"])
def test_bundled_config_files_are_valid(name: str) -> None:
    """config/default.yaml and config/demo.yaml load without error."""
    config = load_config(CONFIG_DIR / name)
    assert config.database.startswith("sqlite:///")


def test_default_file_points_at_the_real_exchange() -> None:
    """The default config names the real LN Markets endpoints."""
    config = load_config(CONFIG_DIR / "default.yaml")
    assert "https://api.lnmarkets.com" == config.exchange.rest_url
    assert "wss://stream.lnmarkets.com/v1" == config.exchange.stream_url
    assert QxConfig() == config


def test_fractional_seconds_are_accepted() -> None:
    """Every *_s key accepts fractions such as 0.2."""
    config = config_from_mapping({"sync": {"restart_interval_s": 0.2, "rest_timeout_s": 0.5}})
    assert (0.2, 0.5) == (config.sync.restart_interval_s, config.sync.rest_timeout_s)


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """${VAR} and ${VAR:-default} are replaced in string values."""
    monkeypatch.setenv("QX_TEST_PW", "s3cret")
    config = config_from_mapping(
        {
            "database": "postgresql://qx:${QX_TEST_PW}@localhost:5432/qx",
            "exchange": {"rest_url": "${QX_TEST_UNSET_URL:-http://127.0.0.1:9}"},
        }
    )
    assert "postgresql://qx:s3cret@localhost:5432/qx" == config.database
    assert "http://127.0.0.1:9" == config.exchange.rest_url


def test_mode_and_lookback() -> None:
    """mode live with a lookback becomes SyncMode.live(Lookback)."""
    config = config_from_mapping({"mode": "live", "lookback": "20 x 5m"})
    assert SyncMode(ModeKind.LIVE, Lookback(20, "5m")) == config.sync_mode
    assert timedelta(minutes=100) == Lookback.parse("20 x 5m").duration


BAD_INPUTS = [
    ({"sync": {"rest_timeout_s": "abc"}}, "sync.rest_timeout_s", 'expected a number, got "abc"'),
    ({"sync": {"rest_timeout_s": -1}}, "sync.rest_timeout_s", "expected a number > 0, got -1"),
    ({"sync": {"restart_interval_s": -0.5}}, "sync.restart_interval_s", ">= 0"),
    ({"sync": {"bogus": 1}}, "sync.bogus", "unknown key"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"exchange": {"stream_enable": True}}, "exchange.stream_enable", "unknown key"),
    ({"mode": "turbo"}, "mode", "expected one of 'backfill' | 'live' | 'full'"),
    ({"mode": "live", "lookback": "20 x 7m"}, "lookback", "unknown resolution '7m'"),
    ({"mode": "live", "lookback": "twenty"}, "lookback", "expected 'N x RES'"),
    ({"mode": "live", "lookback": "501 x 1d"}, "lookback", "longer than 500 days"),
    ({"mode": "live", "lookback": "400 x 1d"}, "lookback", "before sync.price_history_reach"),
    ({"mode": "backfill", "lookback": "20 x 5m"}, "lookback", "only valid with mode 'live'"),
    ({"sync": {"price_history_reach": "yesterday"}}, "sync.price_history_reach", "duration"),
    (
        {"sync": {"funding_settlement_reach": "2999-01-01"}},
        "sync.funding_settlement_reach",
        "future",
    ),
    ({"database": "mysql://x"}, "database", "sqlite:///path.db"),
    ({"exchange": {"rest_url": "ftp://x"}}, "exchange.rest_url", "http(s)://"),
    ({"exchange": {"stream_url": "http://x"}}, "exchange.stream_url", "ws(s)://"),
    ({"exchange": {"stream_enabled": "yes"}}, "exchange.stream_enabled", "true or false"),
    ({"logging": {"format": "xml"}}, "logging.format", "'json' | 'console'"),
    ({"logging": {"level": "loud"}}, "logging.level", "'debug'"),
    ({"sync": {"rest_error_max_trials": 0}}, "sync.rest_error_max_trials", ">= 1"),
    ({"sync": {"rest_error_max_trials": 1.5}}, "sync.rest_error_max_trials", "whole number"),
    ({"sync": {"price_history_batch_size": 5000}}, "sync.price_history_batch_size", "<= 1000"),
    ({"sync": 5}, "sync", "expected a mapping"),
    ({"sync": {"tick_retention": "drop"}}, "sync.tick_retention", "'keep' | 'prune'"),
    ({"sync": {"rest_timeout_s": True}}, "sync.rest_timeout_s", "got true"),
    ({"sync": {"shutdown_timeout_s": None}}, "sync.shutdown_timeout_s", "got null"),
    ({"database": "${QX_TEST_DEFINITELY_UNSET}"}, "database", "QX_TEST_DEFINITELY_UNSET"),
    ({"metrics": {"listen": "9108"}}, "metrics.listen", "expected 'host:port'"),
    # built from the declared types, not from msgspec's text (issue 21): a Literal key says
    # its choices whatever the wrong type, bounds read 0 not 0.0, NaN and dates as written
    (
        {"sync": {"tick_retention": 5}},
        "sync.tick_retention",
        "expected one of 'keep' | 'prune', got 5",
    ),
    ({"mode": None}, "mode", "expected one of 'backfill' | 'live' | 'full' | 'replay', got null"),
    (
        {"sync": {"restart_interval_s": -0.5}},
        "sync.restart_interval_s",
        "expected a number >= 0, got -0.5",
    ),
    (
        {"sync": {"rest_timeout_s": float("nan")}},
        "sync.rest_timeout_s",
        "expected a number > 0, got .nan",
    ),
    ({"sync": {3: 1}}, "sync.3", "unknown key (known keys here: rest_timeout_s,"),
    ({1: "x"}, "1", "unknown key (known keys here: mode, lookback, database,"),
    (
        {"sync": {"price_history_reach": date(2025, 1, 2)}},
        "sync.price_history_reach",
        "expected a string, got 2025-01-02 (a YAML date: quote it)",
    ),
    ({"lookback": 5}, "lookback", "expected a string or null, got 5"),
    ({"catalog_dir": ""}, "catalog_dir", "expected a directory path or null, got an empty string"),
    ({"catalog_dir": 3}, "catalog_dir", "expected a string or null, got 3"),
]
FLAG_RANGES = ("price_history_flag_gap_range_h", "funding_settlement_flag_missing_range_h")
#: a flag range takes hours > 0, "reach" or null, and says so
BAD_INPUTS += [
    ({"sync": {key: value}}, f"sync.{key}", f"expected a number > 0, 'reach' or null, got {got}")
    for key in FLAG_RANGES
    for value, got in (("all", '"all"'), ("Reach", '"Reach"'), (0, "0"), (-3, "-3"), (True, "true"))
]


@pytest.mark.parametrize(("data", "path", "fragment"), BAD_INPUTS, ids=[b[1] for b in BAD_INPUTS])
def test_bad_input_names_the_key_path(data: dict[str, object], path: str, fragment: str) -> None:
    """Each kind of bad input is a ConfigError whose message starts with the key path."""
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    assert path == info.value.path
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message


def test_flag_ranges_hours_reach_or_null(tmp_path: Path) -> None:
    """The two flag ranges as quantoxide's: hours (from now, the gap range never before the
    reach), or null: off (None, no range); and ``reach``: the whole reach (the funding one
    floored to a settlement time). Both written in YAML as a user would, and printed back."""
    file = tmp_path / "flags.yaml"
    file.write_text(
        "sync:\n  price_history_reach: 10d\n  funding_settlement_reach: 10d\n"
        "  price_history_flag_gap_range_h: reach\n  funding_settlement_flag_missing_range_h: null\n"
    )
    config = load_config(file)
    sync = config.sync
    assert ("reach", None) == (
        sync.price_history_flag_gap_range_h,
        sync.funding_settlement_flag_missing_range_h,
    )
    assert config == load_config(_dumped(tmp_path, config))
    now = datetime(2026, 6, 15, 13, 45, tzinfo=UTC)
    reach = sync.price_history_reach_at(now)
    assert datetime(2026, 6, 5, tzinfo=UTC) == reach
    assert reach == sync.price_history_flag_gap_from(now, reach)
    assert sync.funding_scan_from(now) is None
    window = resolve_pass(sync, SyncMode.backfill(), now)
    assert (reach, None) == (window.price_history_flag_gap_from, window.funding_scan_from)
    assert now == window.funding_query_from  # nothing to read when the scan is off

    flipped = config_from_mapping(
        {
            "sync": {
                "funding_settlement_reach": "10d",
                "price_history_flag_gap_range_h": None,
                "funding_settlement_flag_missing_range_h": "reach",
            }
        }
    ).sync
    assert flipped.price_history_flag_gap_from(now, reach) is None
    # 2026-06-05 13:45 floored to the settlement grid (00/08/16 UTC)
    assert datetime(2026, 6, 5, 8, tzinfo=UTC) == flipped.funding_scan_from(now)
    window = resolve_pass(flipped, SyncMode.backfill(), now)
    assert window.price_history_flag_gap_from is None
    assert datetime(2026, 6, 5, 8, tzinfo=UTC) == window.funding_query_from

    hours = config_from_mapping(
        {
            "sync": {
                "price_history_flag_gap_range_h": 2,
                "funding_settlement_flag_missing_range_h": 1000,
            }
        }
    ).sync
    assert now - timedelta(hours=2) == hours.price_history_flag_gap_from(now, reach)
    assert reach == hours.price_history_flag_gap_from(reach + timedelta(hours=1), reach)
    # the funding scan is not clipped to the reach (a hole below it is fatal, as quantoxide's)
    assert now - timedelta(hours=1000) == hours.funding_scan_from(now)
    # the default: 4 weeks each, as quantoxide's
    assert (672.0, 672.0) == (
        QxConfig().sync.price_history_flag_gap_range_h,
        QxConfig().sync.funding_settlement_flag_missing_range_h,
    )


def _dumped(tmp_path: Path, config: QxConfig) -> Path:
    file = tmp_path / "dumped.yaml"
    file.write_text(dump_config(config))
    return file


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error is a ConfigError with the position."""
    file = tmp_path / "broken.yaml"
    file.write_text("mode: full\nsync:\n  rest_timeout_s: [1, 2\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+, column \d+"):
        load_config(file)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    """A YAML list at the top level is refused."""
    file = tmp_path / "list.yaml"
    file.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(file)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_reach_forms() -> None:
    """Reach accepts durations, ISO dates and datetimes, and max; price reach floors to midnight."""
    now = datetime(2026, 6, 15, 13, 45, tzinfo=UTC)
    first = datetime(2020, 3, 1, tzinfo=UTC)

    def parse_reach(text: str, *, now: datetime, earliest: datetime) -> datetime:
        return Reach.parse(text).resolve(now=now, earliest=earliest)

    assert now - timedelta(days=90) == parse_reach("90d", now=now, earliest=first)
    assert now - timedelta(hours=12) == parse_reach("12h", now=now, earliest=first)
    assert now - timedelta(weeks=2) == parse_reach("2w", now=now, earliest=first)
    assert first == parse_reach("max", now=now, earliest=first)
    assert datetime(2025, 1, 2, tzinfo=UTC) == parse_reach("2025-01-02", now=now, earliest=first)
    assert datetime(2025, 1, 2, 3, 4, tzinfo=UTC) == parse_reach(
        "2025-01-02T03:04:00Z", now=now, earliest=first
    )
    assert first == parse_reach("5000d", now=now, earliest=first)
    sync = config_from_mapping({"sync": {"price_history_reach": "36h"}}).sync
    assert datetime(2026, 6, 14, tzinfo=UTC) == sync.price_history_reach_at(now)


def test_dump_config_round_trips(tmp_path: Path) -> None:
    """The effective config printed as YAML loads back to the same config."""
    config = config_from_mapping({"mode": "backfill", "sync": {"restart_interval_s": 0.5}})
    file = tmp_path / "effective.yaml"
    file.write_text(dump_config(config))
    assert config == load_config(file)


# --- issue 21: messages from structured information, constructors without side effects -------

SECRET_URL = "postgresql://qx:Sup3r-s3cret@db:5432/qx"
LATER = datetime(3000, 1, 1, tzinfo=UTC)  # no absolute reach below is in the future then


@pytest.fixture
def fresh_secrets() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


def test_every_problem_at_once_in_the_order_found() -> None:
    """Type errors in the input's order, then each struct's rules, then what the clock tells;
    a key judged on a value that is already wrong adds nothing (no lookback complaint about
    the default mode when the mode itself is wrong)."""
    data = {
        "mode": "sideways",
        "lookback": "20 x 5m",
        "sync": {"rest_timeout_s": "abc", "nope": 1, "funding_settlement_reach": "2999-01-01"},
        "logging": {"level": "loud"},
        "exchange": {"rest_url": "ftp://x", "heartbeat_interval_s": 0},
        "database": "mysql://root:hunter22@db/qx",
    }
    with pytest.raises(ConfigErrors) as info:
        config_from_mapping(data, now=datetime(2026, 6, 15, tzinfo=UTC))
    assert [
        "mode",
        "sync.rest_timeout_s",
        "sync.nope",
        "logging.level",
        "exchange.heartbeat_interval_s",
        "exchange.rest_url",
        "database",
        "sync.funding_settlement_reach",
    ] == [error.path for error in info.value.errors]
    assert [
        "mode: expected one of 'backfill' | 'live' | 'full' | 'replay', got \"sideways\"",
        'sync.rest_timeout_s: expected a number, got "abc"',
        "exchange.heartbeat_interval_s: expected a number > 0, got 0",
        "exchange.rest_url: expected an http(s):// URL, got 'ftp://x'",
        "sync.funding_settlement_reach: reach '2999-01-01' is in the future",
    ] == [
        str(error)
        for error in info.value.errors
        if error.path
        in (
            "mode",
            "sync.rest_timeout_s",
            "exchange.heartbeat_interval_s",
            "exchange.rest_url",
            "sync.funding_settlement_reach",
        )
    ]
    assert "hunter22" not in str(info.value)


def test_messages_do_not_come_from_msgspec(monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec only decodes what our checks let through: it never refuses anything, so no
    message can be built from its text (whatever a msgspec release words it as)."""
    decoded: list[Any] = []
    real_convert = msgspec.convert

    def convert(data: Any, *args: Any, **kwargs: Any) -> Any:
        decoded.append(data)
        try:
            return real_convert(data, *args, **kwargs)
        except msgspec.ValidationError as exc:  # pragma: no cover - the failure to catch
            pytest.fail(f"msgspec refused what the checks let through: {exc}")

    monkeypatch.setattr(msgspec, "convert", convert)  # the module config.py uses
    with pytest.raises(ConfigErrors) as info:
        config_from_mapping(
            {"sync": {"rest_timeout_s": -1, "bogus": 2}, "metrics": {"listen": "9108"}}
        )
    assert ["sync.rest_timeout_s", "sync.bogus", "metrics.listen"] == [
        error.path for error in info.value.errors
    ]
    # what was decoded is the input without the keys that have a problem
    assert [{"sync": {}, "metrics": {}}] == decoded


CHECKED_VALUES: list[Any] = [
    "abc", "", "reach", "keep", "json", "live", "90d", "max", "2025-01-02", "http://x",
    "ws://x", "sqlite:///x.db", "127.0.0.1:9108", -1, 0, 1, 1.5, 2.0, -0.5, 5000, 10**30,
    10**400, True, False, None, [1], {"a": 1}, float("nan"), float("inf"), date(2025, 1, 2),
]  # fmt: skip
STRUCTS: list[type[msgspec.Struct]] = [
    QxConfig, ExchangeConfig, SyncConfig, LoggingConfig, MetricsConfig
]  # fmt: skip
SECTIONS = {QxConfig: None, ExchangeConfig: "exchange", SyncConfig: "sync"}
SECTIONS |= {LoggingConfig: "logging", MetricsConfig: "metrics"}


@pytest.mark.parametrize("struct", STRUCTS, ids=lambda s: s.__name__)
def test_our_checks_take_exactly_what_msgspec_takes(struct: type[msgspec.Struct]) -> None:
    """For every key and a panel of values, our checks accept a value exactly when msgspec
    (with the struct's own rules) decodes it: a msgspec release that changes what it takes
    shows here, not as a message built from a text it no longer writes."""
    section = SECTIONS[struct]
    disagree = []
    for field in msgspec.structs.fields(struct):
        if section is None and field.name in SECTIONS.values():
            continue  # the nested structs: their own case
        for value in CHECKED_VALUES:
            try:
                msgspec.convert({field.encode_name: value}, struct, str_keys=True)
                theirs = True
            except msgspec.ValidationError:
                theirs = False
            data = {field.encode_name: value}
            try:
                config_from_mapping(data if section is None else {section: data}, now=LATER)
                ours = True
            except ConfigError:
                ours = False
            if ours != theirs:
                disagree.append((field.name, value, ours, theirs))
    assert [] == disagree


def test_constructors_neither_register_secrets_nor_read_the_clock(
    monkeypatch: pytest.MonkeyPatch, fresh_secrets: None
) -> None:
    """Building a config is pure: no password registered, no clock read (a reach in the
    future and a lookback are the clock's, at load and at run start); syntax is still checked."""

    def no_clock() -> datetime:
        raise AssertionError("a constructor read the clock")

    monkeypatch.setattr(config_module, "utc_now", no_clock)
    config = QxConfig(
        mode="live",
        lookback="400 x 1d",
        database=SECRET_URL,
        sync=SyncConfig(price_history_reach="2999-01-01"),
    )
    assert not is_registered("Sup3r-s3cret")
    assert "2999-01-01" == config.sync.price_history_reach
    with pytest.raises(ValueError, match=r"^price_history_reach: expected a duration"):
        SyncConfig(price_history_reach="yesterday")
    with pytest.raises(ValueError, match=r"^lookback: only valid with mode 'live'"):
        QxConfig(lookback="20 x 5m")
    with pytest.raises(ValueError, match=r"^stream_url: expected a ws"):
        ExchangeConfig(stream_url="http://x")


def test_loading_and_building_an_engine_register_the_password(fresh_secrets: None) -> None:
    """config_from_mapping (so load_config) registers the password; a config built in code is
    registered when an engine is built from it (or by register_secrets)."""
    config_from_mapping({"database": SECRET_URL})
    assert is_registered("Sup3r-s3cret")
    clear_secrets()
    in_code = QxConfig(database=SECRET_URL)
    assert not is_registered("Sup3r-s3cret")
    SyncEngine(in_code)
    assert is_registered("Sup3r-s3cret")
    clear_secrets()
    register_secrets(in_code)
    assert is_registered("Sup3r-s3cret")


def test_a_future_reach_is_refused_at_load_and_at_run_start() -> None:
    """An absolute reach after now: a ConfigError naming the key at load (the wall clock, or
    the ``now`` given) and when an engine is built (the run's clock)."""
    now = datetime(2026, 6, 15, tzinfo=UTC)
    data = {"sync": {"funding_settlement_reach": "2026-07-01"}}
    expected = "sync.funding_settlement_reach: reach '2026-07-01' is in the future"
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, now=now)
    assert expected == str(info.value)
    config = config_from_mapping(data, now=datetime(2026, 8, 1, tzinfo=UTC))
    with pytest.raises(ConfigError) as info:
        SyncEngine(config, clock=lambda: now)
    assert expected == str(info.value)
    with pytest.raises(ConfigErrors) as both:
        check_against_clock(
            config_from_mapping(
                {"sync": {"price_history_reach": "2026-07-01T08:00:00Z", **data["sync"]}},
                now=datetime(2026, 8, 1, tzinfo=UTC),
            ),
            now,
        )
    assert ["sync.price_history_reach", "sync.funding_settlement_reach"] == [
        error.path for error in both.value.errors
    ]
    check_against_clock(config, datetime(2026, 7, 1, tzinfo=UTC))  # from then on it is fine
