"""``qx-actors``: run, inspect and demonstrate the sync engine from the command line."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from qx_actors.app._database_report import print_database_status, print_plan
from qx_actors.app._service import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    SignalStop,
    listen_error_text,
    run_until_signal,
)
from qx_actors.app._service import EXIT_INTERRUPTED as _EXIT_INTERRUPTED
from qx_actors.app._service import print_error as _err
from qx_actors.app._timeline import format_timeline, read_timeline
from qx_actors.app.demo import DEMO_SIMULATOR_RATE_LIMIT, run_demo
from qx_actors.app.export import FORMATS as EXPORT_FORMATS
from qx_actors.app.export import KINDS as EXPORT_KINDS
from qx_actors.app.export import export, parse_time
from qx_actors.app.serve import RecordedServer, parse_replay_window, serve_listen
from qx_actors.config import QxConfig, build_sync_mode, dump_config, load_config, parse_instant
from qx_actors.domain.lookback import ModeKind, ReplayWindow, SyncMode
from qx_actors.errors import ConfigError, QxError
from qx_actors.logs import configure_logging
from qx_actors.redact import redact_text
from qx_actors.simulator import Simulator, SimulatorConfig
from qx_actors.status import mermaid_diagram
from qx_actors.storage import (
    AdoptRefused,
    ArrowUnavailable,
    adopt_database,
    import_pyarrow,
    limit_malloc_arenas,
    probe_database,
    rebuild_catalog,
    verify_catalog,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "TRACEBACK_ENV",
    "build_parser",
    "cmd_adopt",
    "cmd_catalog",
    "cmd_config",
    "cmd_demo",
    "cmd_export",
    "cmd_graph",
    "cmd_logs",
    "cmd_plan",
    "cmd_serve",
    "cmd_simulate",
    "cmd_status",
    "cmd_sync",
    "install_redacting_excepthooks",
    "main",
]


def _print_exception(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    _err("".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n"))


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """``sys.excepthook``: an uncaught exception's traceback, scrubbed of secrets."""
    _print_exception(exc_type, exc, tb)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: a thread's uncaught exception, scrubbed of secrets."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    _err(f"Exception in thread {name}:")
    _print_exception(args.exc_type, args.exc_value, args.exc_traceback)


def install_redacting_excepthooks() -> None:
    """Print uncaught exceptions (main and other threads) with secrets replaced by ``***``
    (hooks someone else installed, e.g. a test harness's, are left alone)."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _thread_excepthook


def _mode_from_args(config: QxConfig, args: argparse.Namespace) -> SyncMode:
    """The config's mode with ``--mode``/``--lookback`` applied (the config's lookback stays
    when the mode stays live)."""
    mode_name = args.mode or config.mode
    if mode_name == "replay" or any(v is not None for v in (args.from_, args.to, args.speed)):
        return _replay_mode(config, args, mode_name)
    if mode_name != "live" and args.lookback:
        raise ConfigError("--lookback", "only valid with --mode live")
    kept_lookback = config.lookback if mode_name == "live" else None
    try:
        return build_sync_mode(mode_name, args.lookback or kept_lookback)
    except ValueError as exc:
        raise ConfigError("--lookback", str(exc)) from None


def _replay_mode(config: QxConfig, args: argparse.Namespace, mode_name: str) -> SyncMode:
    """``--mode replay`` with ``--from``/``--to``/``--speed`` over the config's ``replay``."""
    if mode_name != "replay":
        raise ConfigError("--from", "--from, --to and --speed are only valid with --mode replay")
    if args.lookback:
        raise ConfigError("--lookback", "only valid with --mode live")
    replay = config.replay
    bounds = []
    for flag, given, configured in (
        ("--from", args.from_, replay.from_),
        ("--to", args.to, replay.to),
    ):
        text = given if given is not None else configured
        if text is None:
            raise ConfigError(flag, f"--mode replay needs {flag} (or replay.{flag[2:]})")
        try:
            bounds.append(parse_instant(text))
        except ValueError as exc:
            raise ConfigError(flag, str(exc)) from None
    try:
        speed = ReplayWindow.parse_speed(args.speed if args.speed is not None else replay.speed)
    except ValueError as exc:
        raise ConfigError("--speed", str(exc)) from None
    try:
        return SyncMode(ModeKind.REPLAY, replay_window=ReplayWindow(bounds[0], bounds[1], speed))
    except ValueError as exc:
        raise ConfigError("--to", str(exc)) from None


# --- commands -------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective, validated config with defaults (the database password as ``***``)."""
    print(dump_config(load_config(args.config), redacted=True), end="")
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    """Print the status machine as Mermaid."""
    print(mermaid_diagram(), end="")
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the status transitions found in a JSON log file as a timeline."""
    path = Path(args.file)
    try:
        # a stray binary line is skipped like any other line that is not a JSON event
        with path.open(encoding="utf-8", errors="replace") as lines:
            entries = list(read_timeline(lines))
    except OSError as exc:
        _err(f"qx-actors logs: cannot read {path}: {exc.strerror}")
        return EXIT_FAILED
    if not entries:
        _err(
            f"qx-actors logs: no status_transition events in {path} "
            "(it needs JSON lines: logging.format: json)"
        )
        return EXIT_FAILED
    if args.run:
        runs = sorted({e.run_id for e in entries})
        entries = [e for e in entries if e.run_id == args.run]
        if not entries:
            _err(f"qx-actors logs: no run {args.run!r} in {path} (runs: {', '.join(runs)})")
            return EXIT_FAILED
    # a log written before secrets were scrubbed may hold a database URL with its password
    print(redact_text(format_timeline(entries)))
    off_graph = sum(not e.in_graph for e in entries)
    if off_graph:
        _err(f"{off_graph} transition(s) not in the status graph")
        return EXIT_FAILED
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    """Run the sync until Ctrl-C."""
    config = load_config(args.config)
    mode = _mode_from_args(config, args)
    if args.tui and not sys.stdout.isatty():
        _err("qx-actors sync: --tui needs a terminal")
        return EXIT_USAGE
    configure_logging(config.logging)
    return run_until_signal(
        config,
        mode,
        progress=sys.stderr.isatty(),
        tui=args.tui,
        duration_s=args.duration,
        where="qx-actors sync",
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Print the database's price-history and funding state."""
    return print_database_status(load_config(args.config))


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the ranges a backfill would fetch, the requests and the ETA; writes nothing."""
    config = load_config(args.config)
    # read-only; no database yet plans the whole reach, one that can't be read is an error
    probe_database(config.database)
    return print_plan(config)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the local LN Markets simulator until Ctrl-C."""
    rate = None if args.rate_limit <= 0 else args.rate_limit

    def ready(simulator: Simulator) -> None:
        print(f"REST   {simulator.rest_url}\nStream {simulator.stream_url}", flush=True)

    stop = threading.Event()
    signals = SignalStop(stop, where="qx-actors simulate").install()
    config = SimulatorConfig(
        seed=args.seed,
        port=args.port,
        stream_port=args.stream_port,
        rate_limit_per_s=rate,
        tick_rate_per_s=args.tick_rate,
    )
    try:
        with Simulator(config) as simulator:
            ready(simulator)
            stop.wait()
    except OSError as exc:
        _err(
            f"qx-actors simulate: cannot listen on 127.0.0.1:{args.port} (REST) and "
            f":{args.stream_port} (stream): {listen_error_text(exc)}"
        )
        return EXIT_FAILED
    return signals.exit_code(EXIT_OK)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the database as a local LN Markets (REST v3 + Stream API) until Ctrl-C."""
    config = load_config(args.config)
    host, port = serve_listen(args.listen)
    if args.speed is not None and args.replay is None:
        raise ConfigError("--speed", "only valid with --replay")
    window = None if args.replay is None else parse_replay_window(args.replay, args.speed)
    configure_logging(config.logging)
    stop = threading.Event()
    signals = SignalStop(stop, where="qx-actors serve").install()
    server = RecordedServer(config, host=host, port=port, replay=window)
    try:
        server.start()
    except OSError as exc:
        server.stop()
        _err(f"qx-actors serve: cannot listen on {host}:{port}: {listen_error_text(exc)}")
        return EXIT_FAILED
    try:
        print(f"rest {server.rest_url}\nstream {server.stream_url}", flush=True)
        stop.wait()
    finally:
        server.stop()
    return signals.exit_code(EXIT_OK)


def cmd_export(args: argparse.Namespace) -> int:
    """Write candles, ticks or settlements of the configured database (opened read-only) as
    CSV, JSON lines or Parquet."""
    if args.resolution is not None and args.kind != "candles":
        _err(f"qx-actors export: --resolution applies to candles only, not to {args.kind}")
        return EXIT_USAGE
    args.resolution = args.resolution or "1m"
    if args.format == "parquet" and args.output in (None, "-") and sys.stdout.isatty():
        _err(
            "qx-actors export: --format parquet is binary: give --output FILE "
            "(or pipe the output), not the terminal"
        )
        return EXIT_USAGE
    config = load_config(args.config)
    if args.format == "parquet":
        try:
            import_pyarrow()
        except ArrowUnavailable as exc:
            _err(f"qx-actors export: {exc}")
            return EXIT_FAILED
    try:
        start, end = parse_time(args.start), parse_time(args.end)
    except ValueError as exc:
        _err(f"qx-actors export: {exc}")
        return EXIT_USAGE
    if end <= start:
        print("qx-actors export: --to must be after --from", file=sys.stderr)
        return EXIT_USAGE
    count = export(
        config.database,
        kind=args.kind,
        start=start,
        end=end,
        resolution=args.resolution,
        fmt=args.format,
        output=args.output,
        catalog_dir=config.catalog_dir,
    )
    print(f"qx-actors export: {count} rows", file=sys.stderr)
    return EXIT_OK


def cmd_adopt(args: argparse.Namespace) -> int:
    """Adopt an existing quantoxide database: add the qx_actors tables beside quantoxide's.

    Exit 0: adopted, or nothing to do (already a qx_actors database, or an empty one); 2: the
    database is neither (refused, nothing changed); 1: it can't be reached or written.
    """
    try:
        result = adopt_database(args.database)
    except AdoptRefused as exc:
        _err(f"qx-actors adopt: {exc}")
        return EXIT_USAGE
    print(redact_text(f"qx-actors adopt: {result.message}"))
    return EXIT_OK


def cmd_catalog(args: argparse.Namespace) -> int:
    """Rebuild or verify the catalog (the Arrow copy of closed days that ``candles_arrow`` reads).

    Exit 0: rebuilt, or verified sound; 1: verify found a problem, or the database can't be read.
    """
    where = f"qx-actors catalog {args.action}"
    if args.action == "rebuild":
        report = rebuild_catalog(args.database, catalog_dir=args.dir)
    else:
        report = verify_catalog(args.database, catalog_dir=args.dir)
    for problem in report.problems:
        _err(f"{where}: {problem}")
    print(
        f"{where}: {report.files} files, {report.candles:,} candles, "
        f"{report.size / 1e6:,.1f} MB in {report.directory} ({report.seconds:.1f} s)"
        + (f"; {report.removed} removed" if args.action == "rebuild" else "")
        + (f"; {report.stale_days} stale days" if args.action == "verify" else "")
    )
    return EXIT_FAILED if report.problems else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the simulator and sync against it into a local SQLite file."""
    return run_demo(
        config_path=args.config,
        database=args.database,
        duration_s=args.duration,
        tui=args.tui and sys.stdout.isatty(),
    )


# --- parser ---------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    """``--duration``'s type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}")
    return value


def _add_duration_argument(parser: argparse.ArgumentParser) -> None:
    """``--duration S`` (``sync``, ``demo``): a graceful shutdown after S seconds."""
    parser.add_argument(
        "--duration",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="shut down gracefully after S seconds (exit 0; default: run until Ctrl-C)",
    )


def _add_config_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    func: Callable[[argparse.Namespace], int],
) -> None:
    """A command whose one option is ``--config`` (``status``, ``plan``, ``config``)."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--config", required=True, help="YAML config file")
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    """The ``qx-actors`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="qx-actors", description="LN Markets market-data sync engine (pykka actors)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sync", help="run the sync until Ctrl-C")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument(
        "--mode", choices=["backfill", "live", "full", "replay"], help="override the mode"
    )
    p.add_argument("--lookback", help="live lookback, e.g. '20 x 5m'")
    p.add_argument(
        "--from", dest="from_", metavar="T", help="replay: first instant (ISO date/time, UTC)"
    )
    p.add_argument("--to", metavar="T", help="replay: end of the window (exclusive)")
    p.add_argument("--speed", metavar="N|max", help="replay: a factor of real time, or max")
    p.add_argument("--tui", action="store_true", help="full-screen terminal UI (needs a terminal)")
    _add_duration_argument(p)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("serve", help="serve the database as a local LN Markets (REST + Stream)")
    p.add_argument("--config", required=True, help="YAML config file (its database is served)")
    p.add_argument(
        "--listen", metavar="HOST:PORT", help="REST address (Stream: PORT+1; default: free ports)"
    )
    p.add_argument(
        "--replay", metavar="FROM..TO", help="send the recorded ticks of FROM..TO (else live)"
    )
    p.add_argument("--speed", metavar="N|max", help="with --replay: a factor of real time, or max")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("simulate", help="run the local LN Markets simulator")
    p.add_argument("--port", type=int, default=7357, help="REST port (default 7357)")
    p.add_argument("--stream-port", type=int, default=7358, help="Stream API port (default 7358)")
    p.add_argument("--seed", type=int, default=42, help="market seed (default 42)")
    p.add_argument(
        "--rate-limit",
        type=float,
        default=DEMO_SIMULATOR_RATE_LIMIT,
        help=f"requests/s, 0 = off (default {DEMO_SIMULATOR_RATE_LIMIT:g}: config/demo.yaml's "
        "20/s fits; the real exchange allows 1/s)",
    )
    p.add_argument("--tick-rate", type=float, default=5.0, help="ticks/s on the stream (default 5)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="sync against the bundled simulator into SQLite")
    p.add_argument("--config", default=None, help="base config (default: config/demo.yaml)")
    p.add_argument("--database", default=None, help="database URL (default: the config's)")
    p.add_argument(
        "--no-tui",
        dest="tui",
        action="store_false",
        help="log lines instead of the terminal UI (the default on a terminal)",
    )
    _add_duration_argument(p)
    p.set_defaults(func=cmd_demo)

    _add_config_command(sub, "status", "print the database's history state", cmd_status)

    p = sub.add_parser(
        "export", help="export candles, ticks or settlements (CSV / JSON lines / Parquet)"
    )
    p.add_argument("--config", required=True, help="YAML config file (its database is read)")
    p.add_argument("--from", dest="start", required=True, help="start (ISO, UTC), inclusive")
    p.add_argument("--to", dest="end", required=True, help="end (ISO, UTC), exclusive")
    p.add_argument("--kind", choices=EXPORT_KINDS, default="candles")
    p.add_argument(
        "--resolution",
        default=None,
        choices=["1m", "3m", "5m", "10m", "15m", "30m", "45m", "1h", "2h", "3h", "4h", "1d"],
        help="candle resolution (default 1m; candles only)",
    )
    p.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="csv",
        help="parquet needs pyarrow: pip install 'qx_actors[arrow]'",
    )
    p.add_argument("--output", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    _add_config_command(
        sub, "plan", "dry run: ranges to fetch, requests, ETA (writes nothing)", cmd_plan
    )

    p = sub.add_parser("adopt", help="adopt a quantoxide database (adds the qx_actors tables)")
    p.add_argument("--database", required=True, help="database URL (postgresql://...)")
    p.set_defaults(func=cmd_adopt)

    p = sub.add_parser("catalog", help="rebuild or verify the Arrow copy of the 1m candles")
    p.add_argument("action", choices=("rebuild", "verify"))
    p.add_argument("--database", required=True, help="database URL")
    p.add_argument("--dir", help="catalog directory (default: beside a SQLite file)")
    p.set_defaults(func=cmd_catalog)

    _add_config_command(sub, "config", "print the effective config with defaults", cmd_config)

    p = sub.add_parser("graph", help="print the status machine as Mermaid")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("logs", help="print the status transitions of a JSON log file")
    p.add_argument("file", help="JSON-lines log file")
    p.add_argument("--run", help="only this run_id")
    p.set_defaults(func=cmd_logs)
    return parser


#: Exit code of a command whose output pipe was closed (128 + SIGPIPE, as Unix tools end).
EXIT_BROKEN_PIPE = 141
#: Exit code after Ctrl-C (128 + SIGINT); SIGTERM ends a run with 143.
EXIT_INTERRUPTED = _EXIT_INTERRUPTED
#: Set (to anything) to see the traceback of an unexpected error after its one-line summary.
TRACEBACK_ENV = "QX_ACTORS_TRACEBACK"


def _os_error_text(exc: OSError) -> str:
    """``No such file or directory: '/x/y.csv'`` from an ``OSError`` (no errno noise)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        text = f"{text}: {os.fsdecode(exc.filename)!r}"
    return text


def _silence_stdout() -> None:
    """After a closed pipe: send what is left of stdout nowhere, so that Python's flush at
    exit does not complain about it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``qx-actors``: the command's exit code; every error is one line on
    stderr (a non-zero exit), never a traceback."""
    # A service runs for days: threads share malloc arenas, so a DB writer restarted after a
    # database fault reuses its predecessor's page cache in place (flat memory; glibc only).
    limit_malloc_arenas()
    args: Any = build_parser().parse_args(argv)
    install_redacting_excepthooks()
    where = f"qx-actors {args.command}"
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here at the latest
    except ConfigError as exc:
        for error in getattr(exc, "errors", None) or [exc]:
            _err(f"{where}: invalid config: {error}")
        return EXIT_USAGE
    except QxError as exc:
        _err(f"{where}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (``... | head``): stop quietly, as Unix tools do.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _err(f"{where}: interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:
        _err(f"{where}: {_os_error_text(exc)}")
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one line (the traceback on demand)
        _err(
            f"{where}: unexpected error: {type(exc).__name__}: {exc} "
            f"({TRACEBACK_ENV}=1 shows the traceback)"
        )
        if os.environ.get(TRACEBACK_ENV):
            _print_exception(type(exc), exc, exc.__traceback__)
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
