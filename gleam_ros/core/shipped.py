"""Where files shipped under the package's ``models/`` folder are found once installed.

CMake installs ``models/`` to ``<prefix>/share/gleam_ros/models``; the prefix is ``sys.prefix`` (a pip/venv
install) or an ancestor of this module (an ament install lays Python out as
``<prefix>/lib/pythonX.Y/site-packages/gleam_ros/core``). The source tree's own ``models/`` is each caller's
first choice and is not listed here.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["installed_model_paths"]


def installed_model_paths(rel: str | Path) -> list[Path]:
    """Candidate installed locations of ``models/<rel>``, most likely first."""
    share = Path("share") / "gleam_ros" / "models" / rel
    here = Path(__file__).resolve()
    return [Path(sys.prefix) / share, *[a / share for a in here.parents[2:7]]]
