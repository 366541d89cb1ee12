"""What a run tells its operator: the run-level health fold (:class:`RunHealth`, fed by the
actors), Prometheus metrics over it, and the HTTP server of ``/health`` and ``/metrics``."""

from ._run_health import RunHealth, RunView
from .health import HealthServer

__all__ = ["HealthServer", "RunHealth", "RunView"]
