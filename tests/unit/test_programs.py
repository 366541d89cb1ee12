"""Mode programs driven as programs: no actors, no sockets, fake answers on a fake clock.

A :class:`World` answers every effect a program yields (the database's facts, the exchange's
pages, a ``Sleep`` by moving the clock on) and records when each came; the tests read the
decisions off that trace: which passes run when, what is reported, what the feed is told.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qx_actors.actors import WS
from qx_actors.actors._engine import Program, RunContext
from qx_actors.actors._program import ProgramDriver, call, run_program, sleep
from qx_actors.actors.messages import (
    Call,
    CandleRangeStored,
    Effect,
    FeedState,
    FetchCandleRange,
    FetchSettlementRange,
    FlagHoles,
    PruneTicks,
    Publish,
    QueryFunding,
    QueryPriceHistory,
    RecordVerifiedEmpty,
    Report,
    Request,
    SettlementRangeStored,
    Sleep,
    StartStream,
    Tell,
)
from qx_actors.config import config_from_mapping
from qx_actors.domain.funding import FundingSettlementsFacts
from qx_actors.domain.history import (
    DownloadKind,
    DownloadRange,
    PriceHistoryFacts,
    last_stable_minute,
)
from qx_actors.domain.lookback import SyncMode
from qx_actors.domain.settlements import (
    ceil_settlement_time,
    floor_settlement_time,
    previous_settlement_time,
    settlement_times,
)
from qx_actors.domain.timeutil import MINUTE, floor_minute
from qx_actors.modes import _backfill, _live
from qx_actors.modes._backfill import backfill_program
from qx_actors.modes._live import live_program
from qx_actors.modes._schedule import Schedule
from qx_actors.status import Trigger

START = datetime(2026, 6, 15, 13, 45, 30, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


# --- the fake world ---------------------------------------------------------------------------


@dataclass
class World:
    """The database, the exchange and the clock a program talks to, as plain answers.

    Stored candles cover the reach up to the current minute (the last hour unstable), but for
    ``holes``: a fetch that covers one stores it, unless it is exchange downtime (also in
    ``verified_empty``: answered as missing); settlements are stored up to the newest one
    (``funding_behind``: but the newest).
    A ``Sleep`` moves the clock on, or, when it may be cut short, to the next feed change in
    ``feed_changes`` (monotonic offset from the start, new :class:`FeedState`).
    """

    holes: tuple[tuple[datetime, datetime], ...] = ()
    verified_empty: tuple[tuple[datetime, datetime], ...] = ()
    funding_behind: bool = False
    #: how long each candle fetch takes (the clock moves on while it runs)
    fetch_s: float = 0.0
    feed_changes: list[tuple[float, FeedState]] = field(default_factory=list)
    wall: datetime = START
    mono: float = 0.0
    feed: FeedState = field(default_factory=FeedState)
    #: (monotonic offset, effect) of every effect answered or stopped at
    trace: list[tuple[float, Effect]] = field(default_factory=list)

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def context(self, mode: SyncMode, **sync: Any) -> RunContext:
        stream = sync.pop("stream_enabled", True)
        config = config_from_mapping(
            {"exchange": {"stream_enabled": stream}, "sync": sync}, now=self.wall
        )
        return RunContext(
            run_id="test", mode=mode, config=config, clock=self.now, monotonic=self.monotonic
        )

    def run(
        self, program: Program, until: Callable[[Effect], bool], max_effects: int = 5000
    ) -> list[tuple[float, Effect]]:
        """Drive ``program`` until an effect ``until`` accepts; the trace."""

        def answer(effect: Effect) -> object:
            self.trace.append((self.mono, effect))
            return self.answer(effect)

        last = run_program(program, answer, until=until, max_effects=max_effects)[-1]
        self.trace.append((self.mono, last))
        return self.trace

    def answer(self, effect: Effect) -> object:
        match effect:
            case Sleep(seconds=seconds, until_feed_changes=interruptible):
                return self._sleep(seconds, interruptible)
            case Call(payload=QueryPriceHistory()):
                return self._history()
            case Call(payload=FetchCandleRange(download=download)):
                self.advance(self.fetch_s)
                return self._fetch(download)
            case Call(payload=FlagHoles() | RecordVerifiedEmpty()):
                return None
            case Call(payload=PruneTicks()):
                return 0
            case Call(payload=QueryFunding(scan_from=scan_from)):
                return self._funding(scan_from)
            case Call(payload=FetchSettlementRange()):
                return SettlementRangeStored(0)
            case Call():
                raise AssertionError(f"unexpected request {effect}")
        return None

    def _sleep(self, seconds: float, interruptible: bool) -> FeedState:
        wake = self.mono + seconds
        while self.feed_changes and self.feed_changes[0][0] <= wake:
            at, feed = self.feed_changes.pop(0)
            changed, self.feed = feed != self.feed, feed
            if interruptible and changed:
                wake = max(at, self.mono)
                break
        self.advance(wake - self.mono)
        return self.feed

    def _fetch(self, download: DownloadRange) -> CandleRangeStored:
        """The exchange has every candle of ``download`` but the verified-empty ones: the
        holes it covers are stored (gone), the downtime stays and is answered as missing."""
        inside = [(s, e) for s, e in self.holes if download.start <= s and e <= download.end]
        self.holes = tuple(h for h in self.holes if h not in inside or h in self.verified_empty)
        missing = sorted((h for h in inside if h in self.verified_empty), reverse=True)
        return CandleRangeStored(download, download.minutes, download.start, tuple(missing))

    def _history(self) -> PriceHistoryFacts:
        head = floor_minute(self.wall)
        return PriceHistoryFacts(
            earliest=floor_minute(START - timedelta(days=100)),  # older than any reach here
            latest=head,
            holes=self.holes,
            verified_empty=self.verified_empty,
            earliest_unstable=None,
            unstable=((last_stable_minute(self.wall) + MINUTE, head),),
        )

    def _funding(self, scan_from: datetime) -> FundingSettlementsFacts:
        latest = floor_settlement_time(self.wall)
        if self.funding_behind:
            latest = previous_settlement_time(latest)
        earliest = ceil_settlement_time(START - timedelta(days=100))
        stored = tuple(settlement_times(max(ceil_settlement_time(scan_from), earliest), latest))
        return FundingSettlementsFacts(earliest, latest, stored)


# --- reading a trace ----------------------------------------------------------------------------


def name(effect: Effect) -> str:
    """A short name: ``query_history``, ``fetch:gap``, ``report:synced``, ``sleep``, ..."""
    match effect:
        case Call(payload=FetchCandleRange(download=download)):
            return f"fetch:{download.kind.value}"
        case Call(payload=payload):
            return {
                QueryPriceHistory: "query_history",
                FlagHoles: "flag_holes",
                RecordVerifiedEmpty: "record_verified_empty",
                PruneTicks: "prune",
                QueryFunding: "query_funding",
                FetchSettlementRange: "fetch_settlements",
            }[type(payload)]
        case Report(trigger=trigger):
            return f"report:{trigger.value}"
        case Tell(target=target, message=StartStream()):
            return f"start_stream:{target}"
        case Sleep():
            return "sleep"
        case Publish():
            return "publish"
    return type(effect).__name__


def names(trace: Iterable[tuple[float, Effect]]) -> list[str]:
    """The names of a trace, publishes left out."""
    return [name(e) for _, e in trace if not isinstance(e, Publish)]


#: A candle pass as a program started it: (monotonic offset, newest_gap_first,
#: recheck_verified_empty).
Pass = tuple[float, bool, bool]


def spy_passes(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Pass]:
    """Record every candle pass ``module``'s program starts (the pass itself runs as is)."""
    seen: list[Pass] = []
    real = module.sync_price_history

    def recorded(ctx: RunContext, *, newest_gap_first: bool, recheck_verified_empty: bool) -> Any:
        seen.append((ctx.monotonic(), newest_gap_first, recheck_verified_empty))
        return real(
            ctx, newest_gap_first=newest_gap_first, recheck_verified_empty=recheck_verified_empty
        )

    monkeypatch.setattr(module, "sync_price_history", recorded)
    return seen


def starts(passes: list[Pass]) -> list[float]:
    return [at for at, _, _ in passes]


def times_of(trace: list[tuple[float, Effect]], wanted: str) -> list[float]:
    """When each effect named ``wanted`` came."""
    return [at for at, effect in trace if name(effect) == wanted]


def sleeps(trace: list[tuple[float, Effect]]) -> list[Sleep]:
    return [effect for _, effect in trace if isinstance(effect, Sleep)]


def nth(kind: type, count: int) -> Callable[[Effect], bool]:
    """Stop at the ``count``-th effect of ``kind``."""
    seen = [0]

    def stop(effect: Effect) -> bool:
        seen[0] += isinstance(effect, kind)
        return seen[0] >= count

    return stop


def calls_of(request: type, count: int) -> Callable[[Effect], bool]:
    """Stop at the ``count``-th call with a ``request``."""
    seen = [0]

    def stop(effect: Effect) -> bool:
        seen[0] += isinstance(effect, Call) and isinstance(effect.payload, request)
        return seen[0] >= count

    return stop


# --- the typed effects and the driver -------------------------------------------------------------


def test_call_returns_the_checked_answer_of_its_request() -> None:
    """``yield from call(...)`` returns the answer; an answer of another type is a TypeError
    raised where the program waits."""

    def program() -> Any:
        facts = yield from call("db", QueryPriceHistory())
        feed = yield from sleep(1.0, until_feed_changes=True)
        return facts, feed

    facts = World()._history()
    driver = ProgramDriver(program())
    assert Call("db", QueryPriceHistory()) == driver.start()
    assert Sleep(1.0, True) == driver.answer(facts)
    assert driver.answer(FeedState(quiet=True)) is None
    assert driver.finished and (facts, FeedState(quiet=True)) == driver.result

    driver = ProgramDriver(program())
    driver.start()
    with pytest.raises(TypeError, match="QueryPriceHistory was answered with a CandleRangeStored"):
        driver.answer(CandleRangeStored(None, 0, None, ()))  # type: ignore[arg-type]
    assert driver.finished
    with pytest.raises(TypeError, match="Sleep was answered with None"):
        run_program(program(), lambda effect: facts if isinstance(effect, Call) else None)


def test_a_request_of_ones_own_is_a_frozen_dataclass_declared_as_before() -> None:
    """``@dataclass(frozen=True) class MyRequest(Request[int])``, as the library's requests
    were once declared: the decorator works on a ``Request`` subclass, the request compares by
    its fields, is frozen, and ``call`` checks its answer against its ``T``."""

    @dataclass(frozen=True)
    class CountRows(Request[int]):
        table: str

    request = CountRows("ohlc_candles")
    assert request == CountRows("ohlc_candles") and hash(request) == hash(CountRows("ohlc_candles"))
    with pytest.raises(FrozenInstanceError):
        request.table = "price_ticks"  # type: ignore[misc]

    def program() -> Any:
        rows = yield from call("db", request)
        return rows

    driver = ProgramDriver(program())
    assert Call("db", request) == driver.start()
    assert driver.answer(3) is None
    assert driver.finished and 3 == driver.result
    with pytest.raises(TypeError, match="CountRows was answered with a str"):
        run_program(program(), lambda effect: "3")


def test_run_program_throws_an_answer_error_into_the_program() -> None:
    """A failed answer is raised where the program waits, as the Engine does with a child's
    error; a program that yields something that is no effect fails."""

    def program() -> Any:
        try:
            yield from call("db", PruneTicks(START))
        except ConnectionError:
            yield Report(Trigger.PROGRESS)

    def fail(effect: Effect) -> object:
        raise ConnectionError("db gone")

    effects = run_program(program(), fail, until=lambda e: isinstance(e, Report))
    assert [Call("db", PruneTicks(START)), Report(Trigger.PROGRESS)] == effects

    def odd() -> Any:
        yield "not an effect"

    with pytest.raises(TypeError, match="unknown effect"):
        ProgramDriver(odd()).start()


def test_mypy_rejects_an_answer_used_as_another_type(tmp_path: Path) -> None:
    """The answer of a FetchCandleRange is a CandleRangeStored: mypy (the project's strict
    config) refuses it as PriceHistoryFacts, and a bare ``yield Call(...)`` answers ``object``."""
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "misuse.py"
    snippet.write_text(
        "from qx_actors.actors._program import Steps, call\n"
        "from qx_actors.actors.messages import Call, FetchCandleRange, QueryPriceHistory\n"
        "from qx_actors.domain.history import PriceHistoryFacts\n"
        "\n"
        "\n"
        "def misuse(request: FetchCandleRange) -> Steps[None]:\n"
        "    right = yield from call('db', QueryPriceHistory())\n"
        "    wrong: PriceHistoryFacts = yield from call('rest', request)\n"
        "    bare: PriceHistoryFacts = yield Call('db', QueryPriceHistory())\n"
        "    print(right.earliest, wrong, bare)\n"
    )
    out, err, _ = api.run(
        [
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--cache-dir",
            str(REPO / ".mypy_cache"),
            "--no-error-summary",
            str(snippet),
        ]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert 2 == len(errors), out + err
    assert (
        'misuse.py:8: error: Incompatible types in assignment (expression has type "Candle'
        in (errors[0])
    )
    assert '"PriceHistoryFacts"' in errors[0]
    assert (
        'misuse.py:9: error: Incompatible types in assignment (expression has type "object"'
        in (errors[1])
    )


def test_schedule_runs_what_is_due_and_sleeps_until_the_next() -> None:
    schedule = Schedule()
    with pytest.raises(ValueError, match="no timer"):
        schedule.next_wake(0.0)
    schedule.set("a", 10.0)
    schedule.set("b", 25.0)
    assert 10.0 == schedule.next_wake(0.0)
    assert frozenset() == schedule.due(9.9)
    assert frozenset({"a"}) == schedule.due(10.0)
    assert 0.0 == schedule.next_wake(12.0)  # overdue: at once
    schedule.set("a", 30.0)
    assert 13.0 == schedule.next_wake(12.0)
    assert frozenset({"a", "b"}) == schedule.due(30.0)
    assert 30.0 == schedule.at("a")


# --- backfill -------------------------------------------------------------------------------------


def test_backfill_passes_report_backfilled_and_sleep_the_re_backfill_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each pass: progress, candles (oldest gap first), funding, Backfilled, then a sleep of the
    re-backfill interval. Exchange-confirmed holes are asked about again on the first pass
    only."""
    three_days_ago = floor_minute(START - timedelta(days=3))
    downtime = (three_days_ago, three_days_ago + 9 * MINUTE)
    world = World(holes=(downtime,), verified_empty=(downtime,))  # exchange downtime
    ctx = world.context(SyncMode.backfill(), price_history_re_backfill_interval_s=90)
    candle_passes = spy_passes(monkeypatch, _backfill)
    trace = world.run(backfill_program(ctx), until=nth(Sleep, 3))
    assert [(0.0, False, True), (90.0, False, False), (180.0, False, False)] == candle_passes

    first_pass = [
        "report:progress",
        *("query_history", "flag_holes"),  # the downtime is a gap again: neighbours flagged
        *("query_history", "fetch:upper_bound"),
        *("query_history", "fetch:gap", "record_verified_empty"),  # asked again: confirmed
        "query_history",
        *("query_funding", "report:backfilled", "sleep"),
    ]
    one_pass = [
        "report:progress",
        *("query_history", "fetch:upper_bound", "query_history"),
        *("query_funding", "report:backfilled", "sleep"),
    ]
    assert first_pass + one_pass + one_pass == names(trace)
    # after a pass that asked again, the state is published once more, downtime not a gap
    with_publishes = [name(e) for _, e in trace]
    first, second = [k for k, n in enumerate(with_publishes) if n == "query_funding"][:2]
    assert ["query_history", "publish", "publish"] == with_publishes[first - 3 : first]
    assert ["query_history", "publish"] == with_publishes[second - 2 : second]
    assert "publish" != with_publishes[second - 3]
    assert [Sleep(90.0)] * 3 == sleeps(trace)
    assert [0.0, 90.0, 180.0] == times_of(trace, "report:progress")
    gap = next(
        e.payload.download
        for _, e in trace
        if isinstance(e, Call) and isinstance(e.payload, FetchCandleRange)
        if e.payload.download.kind is DownloadKind.GAP
    )
    assert gap.start <= downtime[0] and downtime[1] <= gap.end


def test_backfill_repairs_the_oldest_gap_first() -> None:
    world = World(holes=_two_holes())
    ctx = world.context(SyncMode.backfill())
    trace = world.run(backfill_program(ctx), until=nth(Sleep, 1))
    assert _gap_fetch_starts(trace) == sorted(_gap_fetch_starts(trace))
    assert 2 == len(_gap_fetch_starts(trace))
    assert ["flag_holes"] == [n for n in names(trace) if n == "flag_holes"]


# --- live: catch-up, then the stream or REST ------------------------------------------------------


def _two_holes() -> tuple[tuple[datetime, datetime], ...]:
    older = floor_minute(START - timedelta(hours=10))
    newer = floor_minute(START - timedelta(hours=5))
    return ((older, older + 2 * MINUTE), (newer, newer + 2 * MINUTE))


def _gap_fetch_starts(trace: list[tuple[float, Effect]]) -> list[datetime]:
    return [
        e.payload.download.start
        for _, e in trace
        if isinstance(e, Call) and isinstance(e.payload, FetchCandleRange)
        if e.payload.download.kind is DownloadKind.GAP
    ]


def test_live_catch_up_takes_the_lookback_newest_gap_first_then_starts_the_stream() -> None:
    """Live catch-up: the lookback only, its newest gap first; then the WS feed is told to
    start, and Synced is left to the first committed tick (the Engine's)."""
    world = World(holes=_two_holes())
    ctx = world.context(SyncMode.live("20 x 1h"))
    trace = world.run(live_program(ctx), until=nth(Sleep, 1))
    gap_starts = _gap_fetch_starts(trace)
    assert 2 == len(gap_starts) and gap_starts == sorted(gap_starts, reverse=True)
    assert ["report:progress", "query_history", "flag_holes", "query_history"] == names(trace)[:4]
    assert [f"start_stream:{WS}", "sleep"] == names(trace)[-2:]
    assert "report:synced" not in names(trace)
    assert [Sleep(10.0, until_feed_changes=True)] == sleeps(trace)


def test_live_catch_up_ignores_gaps_below_the_lookback() -> None:
    world = World(holes=_two_holes())
    ctx = world.context(SyncMode.live("3 x 1h"))
    trace = world.run(live_program(ctx), until=nth(Sleep, 1))
    assert [] == _gap_fetch_starts(trace)
    assert "flag_holes" not in names(trace)


def test_live_without_the_stream_reports_synced_right_after_the_catch_up() -> None:
    """REST is the live feed: Synced at once after the catch-up, then re-sync passes every
    interval on sleeps that nothing cuts short."""
    world = World()
    ctx = world.context(SyncMode.live(), stream_enabled=False)
    trace = world.run(live_program(ctx), until=nth(Sleep, 3))
    catch_up = ["report:progress", "query_history", "fetch:upper_bound", "query_history"]
    resync = ["query_history", "fetch:upper_bound", "query_history", "sleep"]
    assert catch_up + ["report:synced", "sleep"] + resync * 2 == names(trace)
    assert [Sleep(10.0, until_feed_changes=False)] * 3 == sleeps(trace)


# --- live: the re-sync schedule and the feed ------------------------------------------------------


def test_re_sync_every_interval_counted_from_the_end_of_the_last_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A re-sync pass every ``price_history_re_sync_interval_s``, the next one due an interval
    after the pass ended (here each fetch takes 2 s); no Synced report while the feed is up."""
    world = World(fetch_s=2.0)
    ctx = world.context(SyncMode.live())
    candle_passes = spy_passes(monkeypatch, _live)
    trace = world.run(live_program(ctx), until=nth(Sleep, 4))
    assert [(0.0, True, False), (12.0, True, False), (24.0, True, False), (36.0, True, False)] == (
        candle_passes
    )
    assert [Sleep(10.0, True)] * 4 == sleeps(trace)
    assert "report:synced" not in names(trace)


def test_a_quiet_feed_gets_a_re_sync_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The feed turns quiet 4 s into a sleep: the sleep ends, a re-sync runs at once, the next
    one an interval later; still quiet is no reason for another; ticks flowing again cut the
    sleep short but run nothing before the re-sync is due."""
    world = World(
        feed_changes=[(4.0, FeedState(quiet=True)), (21.0, FeedState(quiet=False))],
    )
    ctx = world.context(SyncMode.live())
    candle_passes = spy_passes(monkeypatch, _live)
    trace = world.run(live_program(ctx), until=nth(Sleep, 5))
    assert [0.0, 4.0, 14.0, 24.0] == starts(candle_passes)
    assert [10.0, 10.0, 10.0, 3.0, 10.0] == [s.seconds for s in sleeps(trace)]
    assert "report:synced" not in names(trace)


def test_a_down_feed_is_synced_over_rest_after_the_next_re_sync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream goes down 4 s into a sleep: the program wakes (the feed changed) but the
    re-sync comes when due; right after it, Synced (degraded: REST has the head)."""
    world = World(feed_changes=[(4.0, FeedState(down=True))])
    ctx = world.context(SyncMode.live())
    candle_passes = spy_passes(monkeypatch, _live)
    trace = world.run(live_program(ctx), until=nth(Sleep, 4))
    assert [0.0, 10.0, 20.0] == starts(candle_passes)
    assert [10.0, 6.0, 10.0, 10.0] == [s.seconds for s in sleeps(trace)]
    synced = names(trace).index("report:synced")
    resync = ["query_history", "fetch:upper_bound", "query_history"]
    assert ["sleep", *resync, "report:synced", "sleep"] == names(trace)[synced - 4 : synced + 2]
    assert [10.0, 20.0] == times_of(trace, "report:synced")


# --- full mode ------------------------------------------------------------------------------------


def test_full_mode_catches_up_everything_then_schedules_three_timers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Full: the whole history (oldest gap first, verified-empty holes asked about again) and
    the settlements; then re-syncs every 600 s, a whole-history pass (pruning ticks) every
    1800 s after the re-sync due then, and funding at the next settlement time + 1 s."""
    world = World(holes=_two_holes())
    ctx = world.context(
        SyncMode.full(),
        price_history_re_sync_interval_s=600,
        price_history_re_backfill_interval_s=1800,
        tick_retention="prune",
    )
    candle_passes = spy_passes(monkeypatch, _live)
    trace = world.run(live_program(ctx), until=calls_of(QueryFunding, 2))
    catch_up = trace[: [name(e) for _, e in trace].index("sleep")]
    gap_starts = _gap_fetch_starts(catch_up)
    assert 2 == len(gap_starts) and gap_starts == sorted(gap_starts)  # oldest first
    assert ["prune", "query_funding", f"start_stream:{WS}"] == names(catch_up)[-3:]

    settlement = (ceil_settlement_time(START) - START).total_seconds() + 1  # 16:00:01
    assert 8071.0 == settlement
    expected: list[Pass] = [(0.0, False, True)]  # the catch-up: the whole history
    for wake in range(600, 8071, 600):
        expected.append((float(wake), True, False))  # the re-sync first ...
        if wake % 1800 == 0:
            expected.append((float(wake), False, False))  # ... then the whole-history pass
    assert expected == candle_passes
    assert [0.0, 1800.0, 3600.0, 5400.0, 7200.0] == times_of(trace, "prune")
    assert [0.0, settlement] == times_of(trace, "query_funding")
    # at 1800 s the re-sync and the whole-history pass are both due: re-sync first
    at_1800 = [name(e) for at, e in trace if at == 1800.0 and not isinstance(e, Publish)]
    assert ["query_history", "fetch:upper_bound", "query_history"] * 2 + ["prune", "sleep"] == (
        at_1800
    )


def test_full_mode_retries_funding_while_not_caught_up() -> None:
    """Settlements still missing the newest one: the next funding pass comes after
    ``funding_settlement_retry_interval_s``, not at the settlement time."""
    world = World(funding_behind=True)
    ctx = world.context(
        SyncMode.full(),
        price_history_re_sync_interval_s=600,
        funding_settlement_retry_interval_s=60,
    )
    trace = world.run(live_program(ctx), until=calls_of(QueryFunding, 7))
    funding_passes = times_of(trace, "query_funding")[::2]  # each asks before and after
    assert [0.0, 60.0, 120.0, 180.0] == funding_passes
    assert "fetch_settlements" in names(trace)
