"""Running a gleam_ros node process: one definition of start-up, spin and clean shutdown."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

#: How often the spin loop looks at the stop flag; bounds how long SIGINT/SIGTERM takes to act.
SPIN_PERIOD_S = 0.1

_LIBC = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
        _LIBC = None


def trim_heap() -> bool:
    """Hand freed heap pages of every malloc arena back to the OS (glibc ``malloc_trim``); False if unavailable.

    A node's frames are allocated by the executor thread (the message) and freed by the worker thread
    (after processing); glibc keeps such memory in per-thread arenas, so the resident size creeps up over
    hours although nothing is live. Calling this about once a second keeps the RSS that an operator (and
    the 30 Hz soak test) sees equal to the memory actually in use.
    """
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def rss_mib() -> float:
    """Resident set size of this process in MiB (NaN where /proc is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def run_node(make_node: Callable[[], Any], name: str, on_start: Callable[[Any], None] | None = None,
             on_stop: Callable[[Any], None] | None = None, args: list[str] | None = None) -> int:
    """Init rclpy, build the node, spin until SIGINT/SIGTERM (exit 0), always shut down cleanly.

    Invalid parameter overrides given at start make ``make_node`` raise: one line on stderr naming
    the node, exit code 2, no traceback. ``on_start`` runs before spinning (e.g. autostart),
    ``on_stop`` before the node is destroyed (e.g. joining a worker thread).

    rclpy's own signal handlers are off: they shut the context down from the signal, and an executor
    between two waits then fails with ``RCLError: failed to initialize wait set`` (a traceback and exit 1
    instead of a clean stop). Here the signal only sets a flag; the spin loop sees it within
    ``SPIN_PERIOD_S`` and the context is shut down after the executor has stopped. A second signal
    while stopping raises KeyboardInterrupt, so a stuck ``on_stop`` can still be interrupted.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
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
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            if on_stop is not None:
                on_stop(node)
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
