"""Find this package's ROS 2 environment without anything sourced.

On a robot the package is built by colcon and the workspace's ``setup.bash`` is sourced: then
everything here is a no-op. In a source checkout with ROS 2 from PyPI wheels (this project's
development and CI environment) the interfaces live in ``build/colcon/install`` and the ROS
core in the virtual environment; :func:`prepare` makes a process ready to use both, and
:func:`child_env` gives the environment a node process needs. Imports no ROS module itself.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

PACKAGE = "gleam_ros"
# Order matters: each library needs the ones before it (see docs on the wheel environment).
_TYPESUPPORT_LIBS = (
    "rosidl_generator_c",
    "rosidl_generator_py",
    "rosidl_typesupport_c",
    "rosidl_typesupport_fastrtps_c",
    "rosidl_typesupport_introspection_c",
)
_prepared = False


def install_prefix() -> Path | None:
    """The install prefix holding this package's generated interfaces, or None."""
    import gleam_ros

    for entry in gleam_ros.__path__:
        pkg = Path(entry)
        if (pkg / "msg" / "__init__.py").exists():
            # <prefix>/lib/pythonX.Y/site-packages/gleam_ros
            return pkg.parents[3]
    return None


def _prepend(var: str, value: str, env: dict) -> None:
    parts = [p for p in env.get(var, "").split(os.pathsep) if p]
    if value not in parts:
        env[var] = os.pathsep.join([value, *parts])


def ament_prefixes() -> list[str]:
    """Prefixes to put on AMENT_PREFIX_PATH: the package's install prefix and the venv."""
    out = []
    prefix = install_prefix()
    if prefix is not None:
        out.append(str(prefix))
    if (Path(sys.prefix) / "share" / "ament_index").is_dir():
        out.append(sys.prefix)
    return out


def child_env(base: dict | None = None, **extra: str) -> dict:
    """Environment for a child process that runs a gleam_ros node or tool."""
    env = dict(os.environ if base is None else base)
    for p in reversed(ament_prefixes()):
        _prepend("AMENT_PREFIX_PATH", p, env)
    prefix = install_prefix()
    if prefix is not None:
        _prepend("LD_LIBRARY_PATH", str(prefix / "lib"), env)
        _prepend("GLEAM_ROS_INSTALL", str(prefix), env)
    env.update(extra)
    return env


def prepare() -> None:
    """Make this process ready to import rclpy and ``gleam_ros.msg``; idempotent."""
    global _prepared
    if _prepared:
        return
    for p in reversed(ament_prefixes()):
        _prepend("AMENT_PREFIX_PATH", p, os.environ)
    prefix = install_prefix()
    if prefix is not None:
        libdir = prefix / "lib"
        _prepend("LD_LIBRARY_PATH", str(libdir), os.environ)
        # The dynamic loader read LD_LIBRARY_PATH at exec: preload our typesupport libraries so
        # that the generated Python extensions find them.
        for name in _TYPESUPPORT_LIBS:
            lib = libdir / f"lib{PACKAGE}__{name}.so"
            if lib.exists():
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    _prepared = True
