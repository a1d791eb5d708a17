"""gleam_ros: cross-view visual geo-localization (GLEAM) for ROS 2 robots.

The ROS-free core lives in :mod:`gleam_ros.core`; thin rclpy adapters in :mod:`gleam_ros.nodes`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__version__ = "0.1.0"


def _find_generated_interfaces() -> None:
    """Make ``gleam_ros.msg`` / ``gleam_ros.srv`` importable from a source checkout.

    In a colcon install the generated modules sit beside this file and nothing happens. In a
    source checkout (editable pip install, tests) they live in the colcon install tree that
    ``make setup`` builds; that tree's package folder is appended to this package's search path.
    ``GLEAM_ROS_INSTALL`` may point at another install prefix of the package.
    """
    here = Path(__file__).resolve().parent
    if (here / "msg" / "__init__.py").exists():
        return
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for prefix in (os.environ.get("GLEAM_ROS_INSTALL"), here.parent / "build" / "colcon" / "install" / "gleam_ros"):
        if not prefix:
            continue
        pkg = Path(prefix) / "lib" / pyver / "site-packages" / "gleam_ros"
        if (pkg / "msg" / "__init__.py").exists():
            if str(pkg) not in __path__:
                __path__.append(str(pkg))
            return


_find_generated_interfaces()
