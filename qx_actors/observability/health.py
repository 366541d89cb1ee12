"""The health probe of a run over HTTP, on ``metrics.listen``:

* ``GET /health`` (and ``/health/ready``, the readiness probe by the Kubernetes convention):
  :meth:`RunHealth.snapshot` as JSON; 200 while the run does its job (``healthy``: Synced or
  Backfilled, or progress since the last error; a restart loop is 503 throughout, with
  ``unhealthy_since`` and ``last_error``), 503 otherwise;
* ``GET /health/live`` (liveness): the same JSON; 200 until the run ended (``Failed`` or
  ``Shutdown``), 503 after — a restart loop is alive, not ready;
* ``GET /metrics``: the Prometheus text format (``version=0.0.4``), the families of
  :data:`~qx_actors.observability._metrics.METRICS`.

:class:`RunHealth` (the figures) lives in :mod:`qx_actors.observability._run_health`, the
metric families in :mod:`qx_actors.observability._metrics`; both are re-exported here.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from qx_actors._loop_thread import LoopThread
from qx_actors.observability._metrics import MetricsCollector
from qx_actors.observability._run_health import RunHealth

__all__ = ["METRICS_CONTENT_TYPE", "HealthServer"]

#: What ``generate_latest`` writes: the text format 0.0.4 (prometheus_client's
#: ``CONTENT_TYPE_LATEST`` names a newer version in its recent releases).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthServer:
    """``/health`` (JSON) and ``/metrics`` (Prometheus) over HTTP for one run."""

    def __init__(self, health: RunHealth, run_id: str, host: str, port: int) -> None:
        self._health = health
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(MetricsCollector(health, run_id))
        self._host = host
        self._port = port
        self._thread = LoopThread(f"qx-health-{run_id}")
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        return f"http://{self._host}:{self.port}"

    async def _serve_health(self, request: web.Request) -> web.Response:
        snapshot = self._health.snapshot()
        return web.json_response(snapshot, status=200 if snapshot["healthy"] else 503)

    async def _serve_live(self, request: web.Request) -> web.Response:
        snapshot = self._health.snapshot()
        return web.json_response(snapshot, status=200 if snapshot["live"] else 503)

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._serve_health)
        app.router.add_get("/health/ready", self._serve_health)
        app.router.add_get("/health/live", self._serve_live)
        app.router.add_get("/metrics", self._serve_metrics)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def start(self) -> HealthServer:
        """Listen (in a background loop thread); ``OSError`` if the address can't be had."""
        self._thread.start()
        self._thread.run_or_stop(self._start(), timeout=10)
        return self

    def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._thread.is_alive:
            self._thread.run(self._stop(), timeout=5)
            self._thread.stop()
