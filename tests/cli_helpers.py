"""Running ``qx-actors`` in the test process: ``cli.main(argv)`` with its output captured.

A subprocess per command costs an interpreter start and every import (seconds each on a
loaded machine); the command-line tests call :func:`qx_actors.app.cli.main` instead, through the
``cli`` fixture of ``tests/conftest.py`` (an :class:`InProcessCli`). Only a few tests still run
the real ``qx-actors`` process: the entry point itself, signals, a closed pipe (exit 141; the
command silences the process's fd 1 then, which a test process can't allow), a terminal.

``main`` changes process-wide state as a program may: the excepthooks, the SIGINT/SIGTERM
handlers (``sync``, ``demo``), structlog's configuration, the root logger's handler and the
log file (``configure_logging``), the secrets known to :mod:`qx_actors.redact` (a config's
database password). :func:`process_state_restored` puts all of it back after each call, so
that no in-process command leaves anything behind for the next test (actors and threads are
stopped by the ``_stop_all_actors`` fixture).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest
import structlog

from qx_actors import logs, redact
from qx_actors.app import cli

#: The signals whose handlers ``main`` may install.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class CliResult:
    """What an in-process ``qx-actors`` call did (as :class:`subprocess.CompletedProcess`)."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class ProcessState:
    """What ``cli.main`` may change process-wide (see :func:`process_state_restored`)."""

    excepthooks: tuple[Any, Any]
    signal_handlers: dict[int, Any]
    root_handlers: list[logging.Handler]
    root_level: int
    structlog_config: dict[str, Any]
    structlog_configured: bool
    log_files: list[Any]
    secrets: frozenset[str]

    @classmethod
    def now(cls) -> ProcessState:
        root = logging.getLogger()
        return cls(
            excepthooks=(sys.excepthook, threading.excepthook),
            signal_handlers={s: signal.getsignal(s) for s in SIGNALS},
            root_handlers=list(root.handlers),
            root_level=root.level,
            structlog_config=structlog.get_config(),
            structlog_configured=structlog.is_configured(),
            log_files=list(logs._open_files),
            secrets=frozenset(redact._registry._secrets),
        )

    def comparable(self) -> tuple[Any, ...]:
        """Everything but structlog's config dict (its processors are compared by identity)."""
        config = self.structlog_config
        return (
            self.excepthooks,
            self.signal_handlers,
            self.root_handlers,
            self.root_level,
            self.structlog_configured,
            self.log_files,
            self.secrets,
            tuple(map(id, config["processors"])),
            config["logger_factory"],
            config["wrapper_class"],
        )


@contextmanager
def process_state_restored() -> Iterator[ProcessState]:
    """Put back, on exit, what ``cli.main`` may change: the excepthooks, the SIGINT/SIGTERM
    handlers, structlog's configuration, the root logger's handlers and level, the registered
    secrets; a log file ``configure_logging`` opened is closed. Yields the state it
    restores."""
    saved = ProcessState.now()
    try:
        yield saved
    finally:
        sys.excepthook, threading.excepthook = saved.excepthooks
        for signum, handler in saved.signal_handlers.items():
            signal.signal(signum, handler)
        root = logging.getLogger()
        for handler in list(root.handlers):
            if handler not in saved.root_handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in saved.root_handlers:  # one the command replaced
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved.root_level)
        if saved.structlog_configured:
            structlog.configure(**saved.structlog_config)
        else:
            structlog.reset_defaults()
        for handle in logs._open_files:
            if handle not in saved.log_files:
                handle.close()
        logs._open_files[:] = saved.log_files
        if frozenset(redact._registry._secrets) != saved.secrets:
            redact._registry.clear()
            redact._registry.add(set(saved.secrets))


class _LineTee:
    """A text stream that passes every write on to ``target`` and calls ``on_line`` with each
    complete line (from whichever thread writes it)."""

    def __init__(self, target: TextIO, on_line: Callable[[str], None]) -> None:
        self._target = target
        self._on_line = on_line
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self._target.write(text)
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            self._on_line(line)
        return written

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._target.fileno()


class InProcessCli:
    """``qx-actors ARGS`` as ``cli.main(ARGS)`` in this process, its stdout and stderr read
    from pytest's capture (``capfd``: what C code writes on fd 1/2 is included)."""

    def __init__(self, capture: pytest.CaptureFixture[str]) -> None:
        self._capture = capture

    def __call__(self, *args: str, cwd: Path | None = None) -> CliResult:
        """Run ``qx-actors *args`` to completion (``cwd``: run from there)."""
        return self._run(args, cwd=cwd)

    def until(
        self, *args: str, stop_when: Callable[[str], bool], cwd: Path | None = None
    ) -> CliResult:
        """Run a command that runs until Ctrl-C (``sync``) and press Ctrl-C once a line it
        writes on stderr makes ``stop_when`` true: the process gets a real SIGINT, which the
        command's own handler turns into its graceful shutdown."""
        sent = threading.Event()

        def on_line(line: str) -> None:
            if not sent.is_set() and stop_when(line):
                sent.set()
                os.kill(os.getpid(), signal.SIGINT)

        return self._run(args, cwd=cwd, on_stderr_line=on_line)

    def _run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> CliResult:
        self._capture.readouterr()  # what the test printed before is not the command's
        before = Path.cwd()
        stderr = sys.stderr
        with process_state_restored():
            if cwd is not None:
                os.chdir(cwd)
            if on_stderr_line is not None:
                sys.stderr = _LineTee(stderr, on_stderr_line)  # type: ignore[assignment]
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # argparse: a usage error
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            finally:
                sys.stderr = stderr
                os.chdir(before)
        out, err = self._capture.readouterr()
        return CliResult(tuple(args), code, out, err)
