"""The camera's pitch against the road, estimated on line from the imagery, for the vehicle localizer.

The bird's-eye view of a forward camera needs the camera's pitch *against the road*: one degree moves a ground
point 16 m ahead by about 3 m. What a car knows is the pitch against gravity (an IMU / AHRS in the odometry's
orientation) plus the mounting pitch it was configured with. On a hill the road's grade is in the IMU's pitch and
not in the view; a mis-calibrated mount, or an IMU mounted a little off level, is in neither. All three change
slowly (the grade over tens of metres, the others not at all), so while its top mode is tight (a locked track,
one anchored by GPS, or a place a search converged on and is confirming) the localizer measures what is left:
it projects the frame at the current estimate and a step either side, correlates each with the satellite
imagery at the mode's best particles, and moves the estimate to the peak of the parabola through the three
scores (:class:`RoadPitch`). The body's fast pitching on its springs stays with the IMU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError


@dataclass
class RoadPitch:
    """A running estimate of the pitch offset (degrees) to add to mounting + IMU pitch to get the pitch against the
    road: a slow correction, updated from frames whose top mode is tight (see VehicleLocalizer._probe_road_pitch).

    ``step_deg``: the probes either side of the estimate; ``gain``: the weight of one frame's measurement (an
    exponential average over about 1/gain frames); ``max_abs_deg``: the estimate's bound (a larger offset is not a
    hill or a mount error, and would let a wrong track bend the view to fit itself).
    """

    step_deg: float = 0.75
    gain: float = 0.3
    max_abs_deg: float = 6.0
    offset_deg: float = 0.0
    updates: int = 0
    rejected: int = 0

    def __post_init__(self) -> None:
        for name, lo, hi in (("step_deg", 0.0, 5.0), ("gain", 0.0, 1.0), ("max_abs_deg", 0.0, 20.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo < v <= hi:
                raise ConfigError(f"RoadPitch.{name} must be a number within ({lo:g}, {hi:g}], got {v!r}")

    def probes(self) -> tuple[float, float, float]:
        """The three pitch offsets to score: the estimate and a step either side."""
        return self.offset_deg - self.step_deg, self.offset_deg, self.offset_deg + self.step_deg

    def update(self, scores: tuple[float, float, float]) -> float | None:
        """Move the estimate towards the peak of the parabola through ``scores`` (the correlations at
        :meth:`probes`); returns the measured offset, or None when the scores show no peak (not finite, flat, or
        curved the wrong way): the estimate is then unchanged."""
        lo, mid, hi = (float(v) for v in scores)
        if not all(math.isfinite(v) for v in (lo, mid, hi)):
            self.rejected += 1
            return None
        curv = lo - 2.0 * mid + hi
        if curv >= -1e-6:  # no maximum between the probes (a slope towards one side is followed by one step at most)
            if hi > mid > lo or lo > mid > hi:
                meas = self.offset_deg + (self.step_deg if hi > lo else -self.step_deg)
            else:
                self.rejected += 1
                return None
        else:
            vertex = 0.5 * (lo - hi) / curv  # in steps, 0 = the estimate
            meas = self.offset_deg + max(-1.0, min(1.0, vertex)) * self.step_deg
        self.offset_deg = max(-self.max_abs_deg, min(self.max_abs_deg,
                                                     (1.0 - self.gain) * self.offset_deg + self.gain * meas))
        self.updates += 1
        return meas
