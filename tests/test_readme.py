"""The README's code cannot rot: every ``python`` block runs, as written, against a simulator.

Each block runs in its own interpreter (a real subprocess), from the repository root, the way
the README tells a user to run it with ``qx-actors simulate`` serving ``config/demo.yaml``'s
URLs. The one placeholder is the one the README defines: ``QX_CONFIG`` names the config file; the
test points it at ``config/demo.yaml`` with the URLs of a simulator it started and a database
in a temporary directory. ``bash`` blocks are not run; the two front-door commands must be there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from qx_actors.app.demo import DEMO_SIMULATOR_RATE_LIMIT
from qx_actors.config import load_config
from qx_actors.simulator import Simulator, SimulatorConfig

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def code_blocks(language: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every fenced block of ``language`` in the README, in order."""
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(2))
        for match in _FENCE.finditer(text)
        if match.group(1) == language
    ]


PYTHON_BLOCKS = code_blocks("python")


@pytest.fixture
def demo_config(tmp_path: Path) -> Iterator[Path]:
    """``config/demo.yaml`` pointed at a running simulator and a temporary database."""
    sim = Simulator(
        SimulatorConfig(rate_limit_per_s=DEMO_SIMULATOR_RATE_LIMIT, tick_rate_per_s=20)
    ).start()
    try:
        data = load_config(REPO / "config" / "demo.yaml").to_dict()
        data["exchange"]["rest_url"] = sim.rest_url
        data["exchange"]["stream_url"] = sim.stream_url
        data["database"] = f"sqlite:///{tmp_path / 'readme.db'}"
        path = tmp_path / "demo.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        yield path
    finally:
        sim.stop()


def test_the_readme_has_its_code_blocks() -> None:
    """The extraction finds the embedding blocks (a broken fence would skip them silently)."""
    codes = [code for _, code in PYTHON_BLOCKS]
    assert any("update_receiver()" in code and "controller.shutdown()" in code for code in codes)
    assert any("async for update in" in code for code in codes)
    assert len(codes) >= 3


@pytest.mark.parametrize(
    "code", [code for _, code in PYTHON_BLOCKS], ids=[f"line{n}" for n, _ in PYTHON_BLOCKS]
)
def test_python_block_runs_as_written(code: str, demo_config: Path, tmp_path: Path) -> None:
    """The block exits 0 without a traceback; a block that runs an engine ends in Shutdown."""
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "QX_CONFIG": str(demo_config)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = result.stdout + result.stderr
    assert 0 == result.returncode, output
    assert "Traceback" not in output
    if "engine.start()" in code:
        assert "Shutdown" in result.stdout.splitlines()[-1], result.stdout


#: The README's front-door commands: a venv, the demo (no dev tools), the tests.
VENV_COMMAND = "python3 -m venv .venv && . .venv/bin/activate"
DEMO_COMMAND = "pip install -e . && qx-actors demo"
TEST_COMMAND = "pip install -e '.[dev]' && python -m pytest -q"


def test_the_front_door_commands_are_in_a_bash_block() -> None:
    """The commands a new user types first: a virtual environment, the demo, the tests."""
    commands = [line.strip() for _, code in code_blocks("bash") for line in code.splitlines()]
    assert [VENV_COMMAND, DEMO_COMMAND, TEST_COMMAND] == [
        line for line in commands if line in (VENV_COMMAND, DEMO_COMMAND, TEST_COMMAND)
    ][:3]


def test_ci_runs_the_front_door_commands_as_written() -> None:
    """``.ci/run`` runs the README's commands verbatim: the demo after a venv made fresh,
    the tests' command as the suite's run."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines()]
    assert any(VENV_COMMAND in line for line in lines), "the venv step"
    assert any(DEMO_COMMAND in line for line in lines), "the demo command"
    assert TEST_COMMAND in lines, "the tests' command, alone on its line"


def test_the_demo_needs_no_dev_tools() -> None:
    """``pip install -e .`` is enough for the demo: what it imports is in the dependencies,
    and only the linters are pinned."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[<>=!~ \[]", dep)[0].lower() for dep in project["dependencies"]}
    assert {"pykka", "rich", "textual", "prometheus-client", "structlog"} <= names
    pinned = [
        dep
        for deps in (project["dependencies"], *project["optional-dependencies"].values())
        for dep in deps
        if "==" in dep
    ]
    assert {dep.split("==")[0] for dep in pinned} <= {"ruff", "mypy"}, pinned
