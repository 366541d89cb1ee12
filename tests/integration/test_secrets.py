"""Secrets never leave: a real ``qx-actors sync`` against a real PostgreSQL server that refuses
its (wrong) password shows the failure everywhere and the password nowhere.

The test server trusts local connections, so the fixture below gives one throwaway role a
password and makes the server ask for it (a ``scram-sha-256`` line for that role alone, put in
front of ``pg_hba.conf`` and reloaded; removed afterwards).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import psycopg2
import pytest
import yaml

from qx_actors.redact import is_registered
from qx_actors.simulator import Simulator
from tests.cli_helpers import CliResult, InProcessCli

pytestmark = pytest.mark.postgres

CLI = [sys.executable, "-m", "qx_actors.cli"]
ROOT = Path(__file__).resolve().parents[2]

#: the wrong password the run is given: distinctive, and with characters that need encoding
WRONG_PASSWORD = "S3cr3t-pa55:w@rd"
#: every way it could be written out
LEAKS = (
    WRONG_PASSWORD,
    quote(WRONG_PASSWORD, safe=""),
    quote(WRONG_PASSWORD, safe="").lower(),
    json.dumps(WRONG_PASSWORD)[1:-1],
)
AUTH_FAILED = "password authentication failed"
#: a deadline, not a speed claim
DEADLINE_S = 60.0
POLL_S = 0.05

T = TypeVar("T")


def poll(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE_S) -> T:
    """The first non-None result of ``probe``, checked every POLL_S until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(POLL_S)


@pytest.fixture
def wrong_password_url(postgres_url: str) -> Iterator[str]:
    """A URL of the test server naming a role that has a password, with a wrong one."""
    role = f"qx_secret_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SHOW hba_file")
            (hba_file,) = cur.fetchone()
            cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (f"right-{uuid.uuid4().hex}",))
        hba = Path(hba_file)
        try:
            original = hba.read_text(encoding="utf-8")
            hba.write_text(
                f"host all {role} 127.0.0.1/32 scram-sha-256\n"
                f"host all {role} ::1/128 scram-sha-256\n" + original,
                encoding="utf-8",
            )
        except OSError as exc:  # a server of another machine or user
            with admin.cursor() as cur:
                cur.execute(f"DROP ROLE {role}")
            reason = f"cannot make the test server ask for a password ({hba_file}: {exc})"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT pg_reload_conf()")
            parts = urlsplit(postgres_url)
            url = (
                f"postgresql://{role}:{quote(WRONG_PASSWORD, safe='')}@{parts.hostname}:"
                f"{parts.port}{parts.path}"
            )

            def refused() -> str | None:  # the reload is asynchronous
                try:
                    psycopg2.connect(url).close()
                except psycopg2.OperationalError as exc:
                    if AUTH_FAILED in str(exc):
                        return str(exc)
                return None

            poll(refused, "the server asks for the role's password", timeout=15)
            yield url
        finally:
            hba.write_text(original, encoding="utf-8")
            with admin.cursor() as cur:
                cur.execute("SELECT pg_reload_conf()")
                cur.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        admin.close()


def write_config(path: Path, sim: Simulator, database: str, **top: Any) -> Path:
    data = {
        "mode": "backfill",
        "database": database,
        "exchange": {"rest_url": sim.rest_url, "stream_url": sim.stream_url},
        "sync": {
            "price_history_reach": "6h",
            "funding_settlement_reach": "2d",
            "rest_rate_limit_per_s": 500,
            "restart_interval_s": 0.3,
            "shutdown_timeout_s": 5,
        },
        "logging": {"format": "json", "level": "debug"},
        **top,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def get_health(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as answer:  # 503 while recovering: the body is the same
        return answer.code, answer.read()


def assert_no_secret(name: str, data: bytes) -> None:
    for leak in LEAKS:
        assert leak.encode() not in data, f"{name} holds the password as {leak!r}"


def test_a_failing_postgresql_run_never_shows_its_password(
    simulator: Simulator, wrong_password_url: str, tmp_path: Path
) -> None:
    """``qx-actors sync`` with a wrong PostgreSQL password keeps retrying, says why on
    /health and in its log, and no byte of stdout, stderr, the log or /health holds the
    password (as written, percent-encoded or JSON-escaped)."""
    log_file = tmp_path / "qx.jsonl"
    config = write_config(
        tmp_path / "qx.yaml", simulator, wrong_password_url,
        logging={"format": "json", "level": "debug", "file": str(log_file)},
        metrics={"listen": "127.0.0.1:0"},
    )  # fmt: skip
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    health_bodies: list[bytes] = []
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*CLI, "sync", "--config", str(config)], stdout=out, stderr=err, cwd=tmp_path
        )
    try:

        def health_url() -> str | None:
            assert process.poll() is None, stderr.read_text()
            found = re.search(r"health (http://\S+/health)", stderr.read_text())
            return found[1] if found else None

        url = poll(health_url, "the health endpoint is announced")

        def recovering_on_auth() -> dict[str, Any] | None:
            assert process.poll() is None, stderr.read_text()
            code, body = get_health(url)
            health_bodies.append(body)
            snapshot: dict[str, Any] = json.loads(body)
            assert snapshot["status"] != "Failed", snapshot
            error = snapshot["error"] or ""
            if snapshot["status"] == "Running.Recovering" and AUTH_FAILED in error:
                assert 503 == code
                return snapshot
            return None

        snapshot = poll(recovering_on_auth, "/health shows the authentication failure")
        assert snapshot["healthy"] is False

        def retried() -> list[dict[str, Any]] | None:
            assert process.poll() is None, stderr.read_text()
            events = [json.loads(line) for line in log_file.read_text().splitlines()]
            errors = [e for e in events if e["event"] == "recoverable_error"]
            return errors if len(errors) >= 3 else None

        errors = poll(retried, "three recoverable errors in the log (it keeps retrying)")
        for event in errors:
            assert event["error"].startswith("DatabaseUnavailable: "), event
        # the cause once, then each failed attempt summarised (quiet retries, issue 19)
        assert AUTH_FAILED in errors[0]["error"], errors[0]
        assert all(" again (" in e["error"] and e["repeat"] >= 2 for e in errors[1:]), errors
        health_bodies.append(get_health(url)[1])
        process.send_signal(signal.SIGINT)
        assert 130 == process.wait(timeout=DEADLINE_S)  # Ctrl-C: 130 after the shutdown
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    log = log_file.read_bytes()
    events = [json.loads(line) for line in log.splitlines()]
    transitions = [e for e in events if e["event"] == "status_transition"]
    assert "Failed" not in {e["dst"] for e in transitions}
    assert "Shutdown" == transitions[-1]["dst"]
    recovering = [e for e in transitions if e["dst"] == "Running.Recovering"]
    assert recovering and all(AUTH_FAILED in e["error"] for e in recovering)
    assert b"run ended: Shutdown" in stderr.read_bytes()
    shown = {
        "stdout": stdout.read_bytes(),
        "stderr": stderr.read_bytes(),
        "log file": log,
        **{f"/health #{i}": body for i, body in enumerate(health_bodies)},
    }
    for name, data in shown.items():
        assert_no_secret(name, data)
    assert AUTH_FAILED.encode() in log


def test_cli_commands_do_not_print_the_password(
    cli: InProcessCli, simulator: Simulator, wrong_password_url: str, tmp_path: Path
) -> None:
    """``config`` shows the URL with ``***``; ``status`` and ``plan`` on the refusing server
    say why without the password (each command run in this process, starting with no secret
    known but those of earlier tests)."""
    config = write_config(tmp_path / "qx.yaml", simulator, wrong_password_url)
    shown_url = re.sub(r":[^:@/]+@", ":***@", wrong_password_url)
    assert "***" in shown_url
    assert not is_registered(WRONG_PASSWORD)  # each command must find it out by itself

    def run(*args: str) -> CliResult:
        return cli(*args, "--config", str(config), cwd=tmp_path)

    done = run("config")
    assert 0 == done.returncode, done.stderr
    assert yaml.safe_load(done.stdout)["database"] == shown_url
    status = run("status")
    assert 1 == status.returncode
    assert AUTH_FAILED in status.stderr
    plan = run("plan")  # a database it can't open: no plan, the reason (exit 1)
    assert 1 == plan.returncode
    assert AUTH_FAILED in plan.stderr
    for command in (done, status, plan):
        assert_no_secret(f"{command.args[0]} stdout", command.stdout.encode())
        assert_no_secret(f"{command.args[0]} stderr", command.stderr.encode())
