"""Running a gleam_ros node process: one definition of start-up, spin and clean shutdown."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def run_node(make_node: Callable[[], Any], name: str, on_start: Callable[[Any], None] | None = None,
             on_stop: Callable[[Any], None] | None = None, args: list[str] | None = None) -> int:
    """Init rclpy, build the node, spin until SIGINT/SIGTERM (exit 0), always shut down cleanly.

    Invalid parameter overrides given at start make ``make_node`` raise: one line on stderr naming
    the node, exit code 2, no traceback. ``on_start`` runs before spinning (e.g. autostart),
    ``on_stop`` before the node is destroyed (e.g. joining a worker thread).
    """
    rclpy.init(args=args)
    try:
        node = make_node()
    except Exception as exc:  # noqa: BLE001 - invalid parameter overrides: one line, no traceback
        print(f"[{name}] invalid parameter: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if on_start is not None:
            on_start(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if on_stop is not None:
            on_stop(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
