"""Mode programs as typed values: what they yield, what they get back, and a pure driver.

A program is a generator of effects (:data:`~qx_actors.actors.messages.Effect`). The Engine
resumes it with each effect's answer, typed here as ``object``: a program that uses an answer
must say what it expects, and the one way to do so is a helper that checks it::

    stored = yield from call(REST, FetchCandleRange(download, batch_size))  # CandleRangeStored
    feed = yield from sleep(10.0, until_feed_changes=True)                  # FeedState

:func:`call` returns the ``T`` of the :class:`~qx_actors.actors.messages.Request` ``[T]`` it
sends, so mypy rejects an answer used as something else, and it checks the answer at run time
too (a child that answers with the wrong type fails the run with a ``TypeError`` instead of
handing a program a value it does not expect). Effects without an answer (``Report``,
``Publish``, ``SetDegraded``, ``Tell``) are plain ``yield``\\ s; they resume with ``None``.

:class:`ProgramDriver` and :func:`run_program` step a program as the Engine does, without
actors, timers or sockets: a test answers each effect itself (fake answers, a fake clock).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar, cast, get_args, get_origin

from qx_actors.actors.messages import Call, Effect, FeedState, Request, Sleep

T = TypeVar("T")
R = TypeVar("R")

#: A (sub-)program: yields effects, is resumed with their answers, returns an ``R``
#: (``yield from`` it to run it inside another program).
Steps = Generator[Effect, object, R]

#: What a mode program is: steps that return nothing (most run until they are stopped).
Program = Steps[None]

#: The classes of every effect (what the Engine and the driver accept from a program).
EFFECT_TYPES: tuple[type, ...] = tuple(get_origin(t) or t for t in get_args(Effect))


def answer_type(request_type: type[Request[Any]]) -> type | None:
    """The class of the answer to a request of this type: the ``T`` it was declared with
    (``class FetchCandleRange(Request[CandleRangeStored])``), ``NoneType`` for
    ``Request[None]``; ``None`` if it cannot be told (not a plain class)."""
    for klass in request_type.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if get_origin(base) is Request:
                (arg,) = get_args(base)
                if arg is None:
                    return type(None)
                return arg if isinstance(arg, type) else None
    return None


def checked_answer(request: Request[T], answer: object) -> T:
    """``answer`` as the ``T`` of ``request``; ``TypeError`` if it is not one."""
    expected = answer_type(type(request))
    if expected is not None and not isinstance(answer, expected):
        raise TypeError(
            f"{type(request).__name__} was answered with a {type(answer).__name__} "
            f"({answer!r}), not a {expected.__name__}"
        )
    return cast(T, answer)


def call(target: str, request: Request[T]) -> Steps[T]:
    """Send ``request`` to the child ``target`` and return its answer (or raise its error)."""
    answer = yield Call(target, request)
    return checked_answer(request, answer)


def sleep(seconds: float, *, until_feed_changes: bool = False) -> Steps[FeedState]:
    """Wait ``seconds`` (less if ``until_feed_changes`` and the feed's state changes) and
    return the :class:`FeedState` as the Engine last heard of it."""
    feed = yield Sleep(seconds, until_feed_changes)
    if not isinstance(feed, FeedState):
        raise TypeError(f"a Sleep was answered with {feed!r}, not a FeedState")
    return feed


class ProgramDriver(Generic[R]):
    """Steps a program by hand, as the Engine does, without actors.

    ``start()`` runs it to its first effect; then ``answer(value)`` (or ``fail(error)``, as a
    child's error) resumes it to the next one. Each returns the effect the program now waits
    on, ``None`` once it has ended (its return value is then :attr:`result`). An exception the
    program raises propagates (and the program is then finished).
    """

    def __init__(self, program: Steps[R]) -> None:
        self._program = program
        #: The effect the program waits on (None: not started, or ended).
        self.effect: Effect | None = None
        self.started = False
        self.finished = False
        #: What the program returned (once :attr:`finished` without an error).
        self.result: R | None = None

    def start(self) -> Effect | None:
        """Run the program to its first effect."""
        if self.started:
            raise RuntimeError("the program was started already")
        self.started = True
        return self._resume(None, None)

    def answer(self, value: object = None) -> Effect | None:
        """Resume the program with the answer to :attr:`effect`; the next effect."""
        self._require_waiting()
        return self._resume(value, None)

    def fail(self, error: BaseException) -> Effect | None:
        """Raise ``error`` in the program where it waits (a failed request); the next effect."""
        self._require_waiting()
        return self._resume(None, error)

    def close(self) -> None:
        """Stop the program where it waits (as the Engine does on a stop or a restart)."""
        self._program.close()
        self.effect, self.finished = None, True

    def _require_waiting(self) -> None:
        if self.effect is None:
            raise RuntimeError("the program waits for nothing (not started, or ended)")

    def _resume(self, value: object, error: BaseException | None) -> Effect | None:
        try:
            if error is not None:
                effect: object = self._program.throw(error)
            else:
                effect = self._program.send(value)
        except StopIteration as stop:
            self.effect, self.finished, self.result = None, True, stop.value
            return None
        except BaseException:
            self.effect, self.finished = None, True
            raise
        if not isinstance(effect, EFFECT_TYPES):
            self.close()
            raise TypeError(f"a mode program yielded an unknown effect: {effect!r}")
        self.effect = cast(Effect, effect)
        return self.effect


def run_program(
    program: Steps[R],
    answer: Callable[[Effect], object],
    *,
    until: Callable[[Effect], bool] | None = None,
    max_effects: int = 10_000,
) -> list[Effect]:
    """Drive ``program`` with ``answer(effect)`` for every effect it yields; the effects, in order.

    It stops when the program ends, or at the first effect that ``until`` accepts (included in
    the list, not answered; the program is then closed). An exception that ``answer`` raises is
    thrown into the program where it waits, as the Engine does with a child's error.
    ``RuntimeError`` if the program is still running after ``max_effects`` effects (a live
    program never ends: give it an ``until``).
    """
    driver = ProgramDriver(program)
    effects: list[Effect] = []
    effect = driver.start()
    while effect is not None:
        effects.append(effect)
        if until is not None and until(effect):
            driver.close()
            break
        if len(effects) >= max_effects:
            driver.close()
            raise RuntimeError(f"the program still runs after {max_effects} effects")
        try:
            value = answer(effect)
        except Exception as error:
            effect = driver.fail(error)
        else:
            effect = driver.answer(value)
    return effects
