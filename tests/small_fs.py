"""A small real filesystem for disk-full tests: a tmpfs mounted by root.

Where mounting is not permitted the test is skipped with the reason, except under CI (env
``CI``), where `.ci/run` runs as root and a skip would hide a missing fault test: a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from qx_actors.testing.pytest_plugin import skip_unless_ci


def mount_small_fs(where: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` (e.g. ``"2m"``, bytes as text) on the existing ``where``."""
    if os.geteuid() != 0:
        skip_unless_ci("a small filesystem needs root to mount a tmpfs (mount -t tmpfs)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        skip_unless_ci(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")


def unmount_small_fs(where: Path) -> None:
    """Unmount ``where``; if something still holds a file open there, detach it."""
    if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
