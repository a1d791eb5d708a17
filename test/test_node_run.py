"""run_node, the one start/spin/stop path of every node process: SIGINT and SIGTERM stop it cleanly.

Seen in CI: with rclpy's own signal handlers, the signal shut the context down while the executor was
between two waits; the node died with ``RCLError: failed to initialize wait set`` and exit code 1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from ros_helpers import next_domain_id, ros_child_env

# A node with a 1 ms timer keeps the executor busy, so signals land at every phase of spin_once.
# argv: how it stops ("self:SIGTERM" = its own timer signals it on the 3rd tick; "wait" = wait for an
# external signal), and whether on_stop hangs (to check that a second signal still gets out).
_NODE = r'''
import os, signal, sys, time
import rclpy
from rclpy.node import Node
from gleam_ros.nodes._run import run_node
how, hang = sys.argv[1], sys.argv[2] == "hang"

def make():
    node = Node("run_node_probe")
    node.ticks = 0
    def tick():
        node.ticks += 1
        if node.ticks == 3:
            print("ready", flush=True)
            if how.startswith("self:"):
                os.kill(os.getpid(), getattr(signal, how[5:]))
    node.create_timer(0.001, tick)
    return node

def on_stop(node):
    print(f"on_stop context_ok={rclpy.ok()}", flush=True)
    if hang:
        time.sleep(60)

sys.exit(run_node(make, "run_node_probe", on_stop=on_stop))
'''


def _start(how: str, hang: bool = False) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _NODE, how, "hang" if hang else "no"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ros_child_env(next_domain_id()))
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_inside_a_callback_stops_cleanly_with_the_context_still_valid(sig):
    proc = _start(f"self:{sig}")
    out = proc.stdout.read() + ""
    assert proc.wait(20) == 0, out
    assert "Traceback" not in out, out
    # on_stop (joining workers, last diagnostics) runs while the context is still usable
    assert "on_stop context_ok=True" in out, out


def test_external_signals_at_any_phase_of_the_spin_loop_exit_zero():
    for i in range(8):
        proc = _start("wait")
        time.sleep(0.013 * i)
        proc.send_signal(signal.SIGTERM if i % 2 else signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, (i, out)
        assert "Traceback" not in out, (i, out)


def test_second_signal_interrupts_a_hanging_shutdown():
    proc = _start("wait", hang=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().startswith("on_stop")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode != 0  # forced: not a clean stop, but it does stop
    assert time.monotonic() - t0 < 15
