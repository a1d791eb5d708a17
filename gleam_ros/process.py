"""Child processes that are always reaped: node executables and tools started by the CLI and tests.

Each child runs in its own process group (so its own children go with it), gets SIGTERM if the
process that started it dies (Linux), and :meth:`ManagedProcess.stop` escalates SIGINT → SIGTERM →
SIGKILL and waits, so no run leaves a node behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this child when the process that started it dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ManagedProcess:
    """A child process in its own process group; :meth:`stop` always reaps it,
    and on Linux the child also gets SIGTERM if this process dies without stopping it."""

    def __init__(self, args: list[str], env: dict, log_path: Path) -> None:
        self.args, self.log_path = args, log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> "ManagedProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def tail(self, n: int = 15) -> str:
        """The last ``n`` lines the node printed."""
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (waiting ``timeout`` s), then SIGTERM, then SIGKILL to the process group; returns the exit code."""
        if self._log.closed:
            return self.proc.returncode
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        try:  # leftovers of the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ------------------------------------------------------------------------------------- outputs
