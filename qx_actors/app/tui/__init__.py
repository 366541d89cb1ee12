"""``qx-actors sync --tui``: a Textual terminal UI that runs a sync and follows it.

Entry point: :func:`run_tui` ``(engine, config, *, stop_event=None, health_url=None) -> int``
takes a ``SyncEngine`` that is not started yet, starts it under the UI and returns the exit code
(0 after ``Shutdown``, 1 if the run failed, 130 on a forced exit). :class:`SyncTui` is the app
itself (for ``App.run_test()``). Textual is imported only when this package is.
"""

from __future__ import annotations

from qx_actors.app.tui.app import EXIT_FORCED, SyncTui, run_tui

__all__ = ["EXIT_FORCED", "SyncTui", "run_tui"]
