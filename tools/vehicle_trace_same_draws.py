"""tools/vehicle_trace.py with the hard drive's realism drawn alike at every frame size.

:func:`~gleam_ros.core.sim.drive.simulate_drive` draws each hard frame's sensor noise (one number per pixel) from
the same stream as the next frames' exposure, blur, JPEG quality and occluding vehicles, so a 640x480 drive sees
other sensor effects and occluders than the 320x240 drive of the same seed from its second frame on, and the two
traces differ by more than the resolution. Here each frame's noise comes from a child stream seeded by one number
of that stream, so only the pixels differ between sizes. For comparing frame sizes (the bird's-eye view's
``bev_focal_px``); the drives are otherwise those of ``vehicle_trace.py`` (not the bench's frames).

Usage (from the repository root), the arguments of tools/vehicle_trace.py:
    python tools/vehicle_trace_same_draws.py ground gps_lost 4343 --hard --width 640 [--set bev_focal_px=10000]
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gleam_ros.core.sim import realism  # noqa: E402

_apply_sensor = realism.apply_sensor


def apply_sensor_child_noise(rgb: np.ndarray, eff, rng: np.random.Generator | None = None) -> np.ndarray:
    """:func:`~gleam_ros.core.sim.realism.apply_sensor` with the noise from a child of ``rng`` (one draw)."""
    child = None if rng is None else np.random.default_rng(int(rng.integers(1 << 31)))
    return _apply_sensor(rgb, eff, child)


if __name__ == "__main__":
    realism.apply_sensor = apply_sensor_child_noise  # simulate_drive imports it at call time
    sys.argv[0] = str(ROOT / "tools" / "vehicle_trace.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
