"""Lint (ruff, including docstrings on the public API) and the ROS-free core rule."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "gleam_ros", "training", "test", "tools"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


def test_core_never_imports_ros():
    """gleam_ros/core and training must stay ROS-free (design rule: nodes are thin adapters)."""
    banned = ("rclpy", "rosidl", "sensor_msgs", "geometry_msgs", "std_msgs", "nav_msgs", "diagnostic_msgs",
              "gleam_ros.msg", "gleam_ros.srv", "gleam_ros.nodes")
    offenders = []
    for path in [*ROOT.glob("gleam_ros/core/**/*.py"), *ROOT.glob("training/**/*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module if node.level == 0 else "." * node.level + node.module]
            for n in names:
                if n.startswith(banned) or (n.startswith(".") and any(b in n for b in ("nodes", "msg", "srv"))):
                    offenders.append(f"{path.relative_to(ROOT)}: {n}")
    assert not offenders, offenders
