"""Helpers for tests that talk to real node processes over DDS.

Each test gets its own ROS_DOMAIN_ID and localhost-only discovery; every process a test starts
runs in its own process group and is always killed and reaped.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

from gleam_ros import ros_env
from gleam_ros.process import ManagedProcess

TEST_DIR = Path(__file__).resolve().parent
_domains = itertools.count((os.getpid() * 7) % 150 + 1)


def next_domain_id() -> int:
    """A ROS domain id no other test of this session uses (1..200)."""
    return (next(_domains) - 1) % 200 + 1


def ros_child_env(domain_id: int, **extra: str) -> dict:
    """Environment of a node process in the given domain (localhost discovery)."""
    return ros_env.child_env(
        ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1", **extra
    )


class NodeProcess(ManagedProcess):
    """A node or tool process in the given ROS domain (localhost discovery), always reaped."""

    def __init__(self, args: list[str], domain_id: int, log_path: Path, **env: str) -> None:
        super().__init__(args, ros_child_env(domain_id, **env), log_path)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGINT, then SIGTERM, then SIGKILL the whole process group; returns the exit code."""
        return super().stop(timeout)


def python_script(name: str, *args: str) -> list[str]:
    """Command line running a helper script from test/ with this interpreter."""
    return [sys.executable, str(TEST_DIR / name), *args]


def spin_until(executor, predicate, timeout: float, step: float = 0.05) -> bool:
    """Spin ``executor`` until ``predicate()`` is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step)
    return predicate()
