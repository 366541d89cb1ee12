"""``qx-actors logs``: the status transitions of a JSON log file, read back as a timeline."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from qx_actors.logs import STATUS_TRANSITION
from qx_actors.status import State, Trigger, is_edge


@dataclass(frozen=True)
class TimelineEntry:
    """One ``status_transition`` read back from a JSON log line."""

    timestamp: str
    run_id: str
    mode: str
    trigger: str
    src: str
    dst: str
    error: str | None
    in_graph: bool


def _edge_in_graph(trigger: str, src: str, dst: str) -> bool:
    try:
        t, s, d = Trigger(trigger), State(src), State(dst)
    except ValueError:
        return False
    return is_edge(t, s, d)


def read_timeline(lines: Iterable[str]) -> Iterator[TimelineEntry]:
    """The status transitions found in JSON log lines (other lines are skipped)."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("event") != STATUS_TRANSITION:
            continue
        trigger, src, dst = (str(record.get(k, "")) for k in ("trigger", "src", "dst"))
        yield TimelineEntry(
            timestamp=str(record.get("timestamp", "")),
            run_id=str(record.get("run_id", "")),
            mode=str(record.get("mode", "")),
            trigger=trigger,
            src=src,
            dst=dst,
            error=record.get("error"),
            in_graph=_edge_in_graph(trigger, src, dst),
        )


def format_timeline(entries: Iterable[TimelineEntry]) -> str:
    """A plain-text timeline: time, run, src -> dst, trigger, error; off-graph edges flagged."""
    out = []
    for e in entries:
        flag = "" if e.in_graph else "  !! not in the status graph"
        error = f"  error={e.error}" if e.error else ""
        out.append(f"{e.timestamp}  {e.run_id}  {e.src} -> {e.dst}  [{e.trigger}]{error}{flag}")
    return "\n".join(out)
