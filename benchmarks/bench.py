"""qx_actors benchmarks: one script that prints a table of figures and ratios.

Run from the repository root (after ``pip install -e '.[dev]'``)::

    python benchmarks/bench.py                      # everything (about 4-6 minutes on 2 cores)
    python benchmarks/bench.py --quick              # smaller sizes (about 1 minute)
    python benchmarks/bench.py --sections backfill,ticks --json figures.json

Sections (``--sections``, comma separated; default all): ``backfill``, ``ratelimit``,
``ticks``, ``shutdown``, ``postgres``, ``history``, ``read``, ``threads``, ``finality``,
``replay``, and
``soak`` only when named (``--soak-minutes``: a long full-mode run with faults); each
is a module of ``benchmarks/sections/`` with a ``run(report, opts, workdir)``, sharing
``_common.py`` (rows, configs, PostgreSQL), ``_data.py`` (synthetic candles) and
``_processes.py`` (the children).
Everything talks to 127.0.0.1 only; scratch files go to a temporary directory that is
removed at the end (``--keep`` keeps it, with the child logs).
Each figure is printed as a row ``metric | value | target | ratio | result``; ``--json FILE``
dumps every row plus the raw figures. The exit code is 0 whatever the results (this is a
measurement, not a test); a section that could not run prints ``skipped: reason``.

Processes: the LN Markets simulator always runs in a child process (this script re-executed
as ``bench.py _sim``: the same ``Simulator`` that ``qx-actors simulate`` serves, plus a
line protocol on stdin/stdout so that the parent can read its request and sent-tick
counters). The engine of section 1 and 5 runs in another child (``bench.py _backfill``) so that
its peak RSS is its own; the engines of sections 2-4 and 8 run in this process.

What each figure means: the docstring of its section module.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from _common import Report, configure_quiet_logging, log
from _processes import child_backfill, child_sim, send_line

SECTIONS = (
    "backfill", "ratelimit", "ticks", "shutdown", "postgres", "history", "read", "threads",
    "finality", "replay", "soak",
)  # fmt: skip
#: Sections run only when named (``soak`` takes ``--soak-minutes`` per backend).
OPT_IN = ("soak",)


# --- table --------------------------------------------------------------------------------


def print_table(report: Report, elapsed: float) -> None:
    """The final summary table (rich when it is there)."""
    headers = ("section", "metric", "value", "target", "ratio", "result", "note")
    lines = [
        (
            r.section,
            r.metric,
            r.value_text(),
            r.target,
            "" if r.ratio is None else f"{r.ratio:.3f}",
            r.result_text(),
            r.note,
        )
        for r in report.rows
    ]
    for section, reason in report.skipped.items():
        lines.append((section, "skipped", "-", "", "", "skip", reason))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    title = f"qx_actors benchmarks ({elapsed:.0f} s, {os.cpu_count()} CPUs, load average {load})"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for line in lines:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
        return
    table = Table(title=title, show_lines=False)
    for header in headers:
        table.add_column(header, justify="right" if header in ("value", "ratio") else "left")
    styles = {"PASS": "green", "FAIL": "bold red", "skip": "yellow"}
    for line in lines:
        style = styles.get(line[5])
        cells = [*line[:5], f"[{style}]{line[5]}[/]" if style else line[5], line[6]]
        table.add_row(*cells)
    Console(width=max(shutil.get_terminal_size((200, 40)).columns, 160)).print(table)


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line (the ``_sim`` / ``_backfill`` children are internal)."""
    parser = argparse.ArgumentParser(
        description="qx_actors benchmarks: a table of figures and ratios (see the docstring)"
    )
    sub = parser.add_subparsers(dest="child")
    p = sub.add_parser("_sim", help=argparse.SUPPRESS)
    p.add_argument("--rate-limit", type=float, default=0.0)
    p.add_argument("--tick-rate", type=float, default=0.0)
    p.add_argument("--cache-days", type=int, default=96)
    p = sub.add_parser("_backfill", help=argparse.SUPPRESS)
    p.add_argument("--database", required=True)
    p.add_argument("--rest-url", required=True)
    p.add_argument("--reach", required=True)
    p.add_argument("--rate", type=float, default=1e6)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--log-file", required=True)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (~1 minute)")
    parser.add_argument(
        "--sections",
        default=",".join(s for s in SECTIONS if s not in OPT_IN),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but "
        f"{','.join(OPT_IN)})",
    )
    parser.add_argument("--tick-rate", type=float, default=22_000, help="ticks/s offered (3)")
    # soak (see sections/soak.py); declared here: the children must not import the section
    parser.add_argument("--soak-minutes", type=float, default=10.0, help="soak: minutes each")
    parser.add_argument(
        "--soak-backends", default="sqlite,postgres", help="soak: sqlite,postgres or one"
    )
    parser.add_argument("--soak-tick-rate", type=float, default=100.0, help="soak: ticks/s")
    parser.add_argument(
        "--soak-db-fault-minutes", type=float, default=30.0, help="soak: database fault period"
    )
    parser.add_argument("--soak-sample-s", type=float, default=30.0, help="soak: sample period")
    parser.add_argument("--json", metavar="FILE", help="dump every figure to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and print the table."""
    opts = parse_args(argv)
    if opts.child == "_sim":
        return child_sim(opts)
    if opts.child == "_backfill":
        try:
            return child_backfill(opts)
        except Exception as exc:
            send_line({"error": f"{type(exc).__name__}: {exc}"})
            return 1
    chosen = [s.strip() for s in opts.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        print(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="qx-bench-"))
    configure_quiet_logging(workdir / "bench.engine.log")
    report = Report()
    started = time.perf_counter()
    log(f"scratch directory {workdir}; quick={opts.quick}")
    try:
        for name in SECTIONS:
            if name not in chosen:
                continue
            section_started = time.perf_counter()
            try:
                # Imported here, not at the top: the children (this script re-executed) must
                # not load every section, the backfill child's peak RSS is a figure.
                section = importlib.import_module(f"sections.{name}")
                section.run(report, opts, workdir)
            except Exception as exc:
                report.skip(name, f"error: {type(exc).__name__}: {exc}"[:400])
            log(f"    ({time.perf_counter() - section_started:.1f} s)")
    finally:
        elapsed = time.perf_counter() - started
        print_table(report, elapsed)
        if opts.json:
            payload = {
                "meta": {
                    "started": datetime.now(UTC).isoformat(),
                    "elapsed_s": elapsed,
                    "quick": opts.quick,
                    "sections": chosen,
                    "python": sys.version.split()[0],
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "load_average_at_end": os.getloadavg(),
                },
                "rows": [asdict(r) for r in report.rows],
                "skipped": report.skipped,
                "figures": report.figures,
            }
            Path(opts.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        if opts.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
