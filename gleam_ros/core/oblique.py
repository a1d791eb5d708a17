"""Where an oblique UAV camera looks: the ground point of its optical axis, and the search region around it.

A nadir camera sees the ground below the vehicle; a camera tilted ``theta`` off nadir at height ``h``
looks at ground ``h * tan(theta)`` away along its look azimuth (120 m and 40 deg: ~100 m). Searching tiles
around the vehicle then misses the tile that shows the view. When the autopilot gives the attitude (IMU /
gimbal pitch and roll, magnetometer heading: :class:`gleam_ros.core.verify.Priors`) and the height, the
search is centred on the view centre instead, with a radius grown by how uncertain that point is.

Conventions are those of :mod:`gleam_ros.core.camera` (nadir mount, ``camera_to_enu``); metres are local
ENU at the vehicle, and the move to latitude / longitude goes through :func:`gleam_ros.core.geo.offset_latlon`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera import camera_to_enu
from .errors import InputError
from .geo import offset_latlon

_AXIS = np.array([0.0, 0.0, 1.0])  # optical axis in the optical frame
_WHAT = {"alt_m": "altitude", "pitch_deg": "pitch", "roll_deg": "roll", "heading_deg": "heading"}


def _finite(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
        raise InputError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def off_nadir_deg(pitch_deg: float, roll_deg: float) -> float:
    """Angle between the nadir camera's optical axis and straight down for a vehicle pitch / roll, degrees."""
    a = camera_to_enu(0.0, _finite("pitch_deg", pitch_deg), _finite("roll_deg", roll_deg)) @ _AXIS
    return float(math.degrees(math.acos(float(np.clip(-a[2], -1.0, 1.0)))))


def view_offset_en(alt_m: float, heading_deg: float, pitch_deg: float, roll_deg: float) -> tuple[float, float]:
    """(east, north) metres from the point below the camera to where its optical axis meets flat ground.

    ``alt_m`` is the height above that ground. Non-finite inputs, a non-positive height or an axis at or
    above the horizon raise :class:`InputError` naming the value.
    """
    h = _finite("alt_m", alt_m)
    if h <= 0.0:
        raise InputError(f"alt_m must be positive (height above ground), got {alt_m!r}")
    a = camera_to_enu(_finite("heading_deg", heading_deg), _finite("pitch_deg", pitch_deg),
                      _finite("roll_deg", roll_deg)) @ _AXIS
    if a[2] > -1e-6:
        raise InputError(f"the optical axis (pitch {pitch_deg:g} deg, roll {roll_deg:g} deg) does not look down: "
                         "it never meets the ground")
    s = h / -a[2]
    return float(s * a[0]), float(s * a[1])


def view_offset_cov(alt_m: float, heading_deg: float, pitch_deg: float, roll_deg: float,
                    attitude_std_deg: float, heading_std_deg: float) -> np.ndarray:
    """2x2 covariance (m², east / north) of :func:`view_offset_en` for independent 1-sigma errors of pitch and
    roll (``attitude_std_deg`` each) and heading (``heading_std_deg``); linearised by central differences."""
    x0 = np.array([heading_deg, pitch_deg, roll_deg], float)
    sig = np.array([heading_std_deg, attitude_std_deg, attitude_std_deg], float)
    jac = np.zeros((2, 3))
    for j in range(3):
        d = np.zeros(3)
        d[j] = 0.05  # deg
        hi = view_offset_en(alt_m, *(x0 + d))
        lo = view_offset_en(alt_m, *(x0 - d))
        jac[:, j] = (np.array(hi) - np.array(lo)) / (2.0 * math.radians(0.05))
    return jac @ np.diag(np.radians(sig) ** 2) @ jac.T


@dataclass(frozen=True)
class ViewSearch:
    """Where to search tiles for one frame: centre (lat, lon), radius (m), and how it was chosen.

    ``shift_m``: distance from the given centre (the vehicle) to the view centre (0 when not moved);
    ``note``: why the centre was moved or, when attitude was given but not used, why not.
    """

    lat: float
    lon: float
    radius_m: float
    shift_m: float = 0.0
    note: str = ""


def view_search(lat: float, lon: float, radius_m: float, priors, attitude_std_deg: float = 1.0,
                heading_std_deg: float = 5.0, max_off_nadir_deg: float = 60.0) -> ViewSearch:
    """The search region of a frame whose vehicle is expected within ``radius_m`` of (lat, lon).

    With ``priors`` (:class:`gleam_ros.core.verify.Priors`) holding the height, pitch, roll and heading, the
    centre moves to the view centre (:func:`view_offset_en`) and the radius grows in quadrature by three
    standard deviations of that point (:func:`view_offset_cov`), treating ``radius_m`` as a 3-sigma radius.
    Without all four (or beyond ``max_off_nadir_deg``, where a ground point far out is a poor guess) the
    region is the one given, with a note saying why.
    """
    same = ViewSearch(float(lat), float(lon), float(radius_m))
    if priors is None:
        return same
    have = {n: getattr(priors, n) for n in ("alt_m", "pitch_deg", "roll_deg", "heading_deg")}
    if all(v is None for v in have.values()) or (have["pitch_deg"] is None and have["roll_deg"] is None):
        return same  # no attitude: today's search around the vehicle
    missing = [n for n, v in have.items() if v is None]
    if missing:
        return ViewSearch(same.lat, same.lon, same.radius_m,
                          note=f"search around the vehicle: no {' / '.join(_WHAT[m] for m in missing)} prior to "
                               "place the view centre")
    tilt = off_nadir_deg(have["pitch_deg"], have["roll_deg"])
    if tilt > max_off_nadir_deg:
        return ViewSearch(same.lat, same.lon, same.radius_m,
                          note=f"search around the vehicle: attitude prior {tilt:.0f} deg off nadir is beyond "
                               f"{max_off_nadir_deg:g} deg")
    e, n = view_offset_en(have["alt_m"], have["heading_deg"], have["pitch_deg"], have["roll_deg"])
    cov = view_offset_cov(have["alt_m"], have["heading_deg"], have["pitch_deg"], have["roll_deg"],
                          attitude_std_deg, heading_std_deg)
    sigma = math.sqrt(max(float(np.trace(cov)), 0.0))
    clat, clon = offset_latlon(lat, lon, e, n)
    shift = math.hypot(e, n)
    return ViewSearch(clat, clon, math.hypot(radius_m, 3.0 * sigma), shift,
                      f"search centred on the view centre {shift:.0f} m from the vehicle ({tilt:.0f} deg off nadir, "
                      f"view-centre sigma {sigma:.1f} m)")


__all__ = ["ViewSearch", "off_nadir_deg", "view_offset_cov", "view_offset_en", "view_search"]
