"""The application built on the library: the ``qx-actors`` command (:mod:`.cli`), the demo, the
service runner (signals, progress lines, health server, TUI), exports and database reports.

The library (:mod:`qx_actors` and its packages) never imports from here.
"""

__all__: list[str] = []
