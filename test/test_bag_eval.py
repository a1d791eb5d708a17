"""`gleam bag eval` end to end: a simulated flight bag with a GPS dropout in the middle, replayed through
the real localizer node process over DDS; metrics, GPS-fallback behaviour, plot, recorded outputs.

Tolerances. The frames are rendered from the same procedural world the index is built from (another
season), where the ROS-free pipeline localizes to well under a metre. What this test guards is the ROS
path: remappings, stamps, replay timing, message conversion, fallback switching. The vehicle moves
10 m between frames (10 m/s at 1 fps), so a fix associated with the wrong frame, or a conversion error
(swapped axes, degrees/radians), is off by >= 10 m: the median error must stay under 3 m. The node
keeps only the newest frame and drops the others while it is busy; on a loaded 2-core machine
(load 7 measured) it processes only about a third of the frames, so only a few are required to
carry a fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gleam_ros.bag.storage import open_bag
from ros_helpers import next_domain_id, ros_child_env

GLEAM = str(Path(sys.executable).parent / "gleam")


def _run(args: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([GLEAM, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"gleam {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def flight(tmp_path_factory):
    """World, its tile index and a 20 s flight bag (20 frames at 1 fps) with the GPS lost from 6 s to 14 s."""
    d = tmp_path_factory.mktemp("bag_eval")
    _run(["world", "--seed", "3", "--size", "400", "--out", str(d / "world")], 120)
    _run(["index", "build", "--map", str(d / "world" / "satellite.tif"), "--out", str(d / "index")], 300)
    _run(["bag", "simulate", "--map", str(d / "world" / "satellite_autumn.tif"), "--out", str(d / "flight.mcap"),
          "--frames", "20", "--width", "320", "--height", "240", "--fps", "1", "--speed", "10", "--seed", "2",
          "--gps-dropout", "6,14", "--quiet"], 300)
    return d


@pytest.mark.slow
def test_bag_eval_through_the_localizer_node(flight, tmp_path):
    res = tmp_path / "results"
    env = ros_child_env(next_domain_id())
    out = _run(["bag", "eval", "--bag", str(flight / "flight.mcap"), "--index", str(flight / "index"), "--out", str(res),
                "--map", str(flight / "world" / "satellite.tif"), "--rate", "1.0",
                "--param", "max_frame_age_s:=3.0"], 420, env=env)
    # the node process was stopped (and reaped by `gleam bag eval`)
    pid = int(next(ln for ln in out.stdout.splitlines() if "localizer node pid" in ln).split()[-1])
    cmdline = Path(f"/proc/{pid}/cmdline")
    assert not cmdline.exists() or b"localizer_node" not in cmdline.read_bytes()
    assert "node stopped (exit code 0)" in out.stdout

    m = json.loads((res / "metrics.json").read_text())
    print(json.dumps({k: m[k] for k in ("frames", "trusted_fixes", "median_error_m", "false_fixes", "latency_p50_ms",
                                        "dropped_frames", "node_dropped_frames", "outputs", "gps_fallback")}, indent=1))
    assert m["frames"] == 20 and m["frames_replayed"] == 20
    assert m["outputs"].get("/gleam_localizer/hypotheses", 0) >= 5, m["outputs"]
    assert m["trusted_fixes"] >= 3, m
    assert m["median_error_m"] < 3.0, m
    assert m["false_fixes"] <= 1, m
    assert m["latency_p50_ms"] is not None and 0 < m["latency_p50_ms"] < 10_000
    assert m["node_dropped_frames"] is not None  # read from the node's /diagnostics

    fb = m["gps_fallback"]
    assert fb["window_s"] == [6.0, 14.0] and fb["frames_in_window"] == 9
    assert fb["fix_msgs_outside_window"] == 0, fb  # shadow mode while GPS is healthy
    assert fb["pose_msgs_outside_window"] == 0, fb
    assert fb["frames_in_window_with_fix"] >= 2, fb  # the fallback publishes fixes while GPS is lost
    assert fb["fallback_median_error_m"] < 3.0, fb

    png = (res / "flight.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    table = (res / "metrics.md").read_text()
    assert "GPS fallback" in table and "within 5 m" in table
    assert len((res / "frames.jsonl").read_text().splitlines()) == 20
    with open_bag(res / "outputs.mcap") as r:
        topics = {c.topic for c in r.connections}
    assert {"/gleam_localizer/hypotheses", "/gleam_localizer/fix", "/diagnostics"} <= topics
    assert "configured" in (res / "node.log").read_text()
