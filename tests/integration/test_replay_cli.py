"""Replay from the YAML file and from the command line: keys, flags and their errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from qx_actors.config import ReplayConfig, config_from_mapping
from qx_actors.domain.lookback import ModeKind, ReplayWindow, SyncMode
from qx_actors.domain.values import PriceTick
from qx_actors.errors import ConfigError
from qx_actors.storage import open_storage
from tests.cli_helpers import InProcessCli

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_replay_keys_build_the_replay_mode() -> None:
    """``mode: replay`` with ``replay.from/to/speed`` is ``SyncMode.replay(from, to, speed)``."""
    config = config_from_mapping(
        {"mode": "replay", "replay": {"from": "2026-01-01", "to": "2026-01-01T06:00Z", "speed": 60}}
    )
    assert SyncMode.replay(T0, T0 + timedelta(hours=6), 60) == config.sync_mode
    assert "max" == ReplayConfig().speed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mode": "replay"}, "mode: mode 'replay' needs replay.from and replay.to"),
        (
            {"mode": "replay", "replay": {"from": "soon", "to": "2026-01-02"}},
            "replay.from: expected an ISO date",
        ),
        ({"replay": {"speed": 0}}, "replay.speed: expected a number > 0 or 'max'"),
        (
            {"mode": "replay", "replay": {"from": "2026-01-02", "to": "2026-01-01"}},
            "mode: replay end 2026-01-01T00:00:00Z is not after its start",
        ),
        ({"replay": {"form": "2026-01-01"}}, "replay.form: unknown key"),
    ],
)
def test_replay_key_errors_name_the_key(data: dict[str, object], message: str) -> None:
    """A wrong replay section is a ConfigError naming the key."""
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("speed", "expected"), [("max", None), ("60", 60.0), ("2.5x", 2.5), (None, None)]
)
def test_replay_speed_forms(speed: str | None, expected: float | None) -> None:
    """``N``, ``Nx`` or ``max``."""
    assert expected == ReplayWindow.parse_speed(speed)


def _config(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'qx.db'}"
    storage = open_storage(url)
    storage.insert_new_ticks([PriceTick(T0 + timedelta(seconds=i), 100.0 + i) for i in range(50)])
    storage.close()
    path = tmp_path / "qx.yaml"
    path.write_text(yaml.safe_dump({"database": url, "logging": {"level": "warning"}}))
    return path


def test_sync_mode_replay_runs_to_the_end_and_exits_0(tmp_path: Path, cli: InProcessCli) -> None:
    """``qx-actors sync --mode replay --from T --to T --speed max`` ends by itself: exit 0."""
    config = _config(tmp_path)
    result = cli(
        "sync", "--config", str(config), "--mode", "replay",
        "--from", "2026-01-01", "--to", "2026-01-01T00:10", "--speed", "max",
    )  # fmt: skip
    assert 0 == result.returncode, result.stderr
    assert "run ended: Shutdown" in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mode", "replay", "--from", "2026-01-01"], "--to: --mode replay needs --to"),
        (["--from", "2026-01-01"], "only valid with --mode replay"),
        (["--mode", "replay", "--from", "x", "--to", "2026-01-02"], "--from: expected an ISO"),
        (["--mode", "replay", "--from", "2026-01-01", "--to", "2026-01-02", "--speed", "-1"],
         "--speed: expected a speed factor > 0 or 'max'"),
    ],
)  # fmt: skip
def test_sync_replay_flag_errors(
    tmp_path: Path, cli: InProcessCli, flags: list[str], message: str
) -> None:
    """A wrong replay flag is one line naming it, exit 2."""
    result = cli("sync", "--config", str(_config(tmp_path)), *flags)
    assert 2 == result.returncode
    assert message in result.stderr
    assert ModeKind.REPLAY == "replay"
