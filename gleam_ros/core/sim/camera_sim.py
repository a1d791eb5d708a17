"""Camera simulator over any :class:`gleam_ros.core.maps.GeoMap`: ground-truth poses, rendered frames, photometry.

A frame is what the nadir camera of :mod:`gleam_ros.core.camera` sees from a :class:`Pose` over a flat ground:
every pixel's ray is intersected with the ground plane of a local ENU frame centred under the camera
(:func:`gleam_ros.core.camera.ground_intersection`), converted to WGS84 with
:meth:`gleam_ros.core.geo.LocalFrame.to_geodetic` and looked up in the map with ``crs="EPSG:4326"``. Pixels
whose ray misses the ground (above the horizon) or lands off the map / on a map hole are *invalid* (black).

Conventions are those of :mod:`gleam_ros.core.camera`: heading in degrees clockwise from north (image top
points along the heading), pitch positive nose-up (the view moves forward), roll positive right-wing-down.

Also here: flight paths with exact per-frame ground truth (:func:`flight_path`, :func:`lawnmower_waypoints`,
:func:`random_poses`), a photometric change model for seasonal / lighting / sensor differences
(:class:`Photometric`, :func:`random_photometric`, :func:`apply_photometric`) and :func:`simulate_flight`,
which strings them together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import cv2
import numpy as np
import pyproj

from .. import geo
from ..camera import CameraIntrinsics, camera_to_enu, ground_intersection
from ..errors import ConfigError, InputError

_GEOD = pyproj.Geod(ellps="WGS84")
_MAX_RANGE_FACTOR = 20.0  # rays landing farther than this many altitudes away count as "horizon" (invalid)


# --------------------------------------------------------------------------------------------------- pose


@dataclass(frozen=True)
class Pose:
    """Ground truth of one frame.

    ``t`` seconds; ``lat``/``lon`` WGS84 degrees of the camera; ``alt_m`` its height above the flat ground;
    ``heading_deg`` clockwise from north; ``pitch_deg`` positive nose-up; ``roll_deg`` positive right-wing-down.
    """

    t: float
    lat: float
    lon: float
    alt_m: float
    heading_deg: float
    pitch_deg: float = 0.0
    roll_deg: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))):
                raise ConfigError(f"Pose.{f.name} must be a finite number, got {v!r}")
        if not (-90.0 <= self.lat <= 90.0 and -180.0 <= self.lon <= 180.0):
            raise ConfigError(f"Pose latitude/longitude out of range: ({self.lat}, {self.lon})")
        if self.alt_m <= 0.0:
            raise ConfigError(f"Pose.alt_m must be positive (height above ground), got {self.alt_m}")
        if abs(self.pitch_deg) >= 80.0 or abs(self.roll_deg) >= 80.0:
            raise ConfigError(f"Pose tilt too large for a nadir camera: pitch={self.pitch_deg}, roll={self.roll_deg}")

    def camera_rotation(self) -> np.ndarray:
        """Rotation taking camera optical-frame vectors to the local ENU frame under the camera."""
        return camera_to_enu(self.heading_deg, self.pitch_deg, self.roll_deg)


def _check_intr(intr: object) -> CameraIntrinsics:
    if not isinstance(intr, CameraIntrinsics):
        raise ConfigError(f"expected CameraIntrinsics, got {type(intr).__name__}")
    return intr


def ground_points(pose: Pose, intr: CameraIntrinsics, u, v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WGS84 (lat, lon) where pixel rays (u, v) hit the flat ground, and a bool mask of rays that do.

    Rays above the horizon, or landing farther than 20 altitudes away, are marked False (their lat/lon are
    those of the point under the camera).
    """
    intr = _check_intr(intr)
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    frame = geo.LocalFrame(pose.lat, pose.lon, 0.0)
    e, n, ok = ground_intersection(intr, pose.camera_rotation(), np.array([0.0, 0.0, float(pose.alt_m)]), u, v)
    ok &= np.hypot(e, n) < _MAX_RANGE_FACTOR * pose.alt_m
    e = np.where(ok, e, 0.0)
    n = np.where(ok, n, 0.0)
    lat, lon, _ = frame.to_geodetic(e, n, 0.0)
    return lat, lon, ok


def footprint_latlon(pose: Pose, intr: CameraIntrinsics) -> np.ndarray:
    """(4, 2) WGS84 [lat, lon] of the ground points of the image corners (top-left, top-right, bottom-right,
    bottom-left pixel corners). Raises ConfigError if a corner ray misses the ground."""
    intr = _check_intr(intr)
    u = np.array([-0.5, intr.width - 0.5, intr.width - 0.5, -0.5])
    v = np.array([-0.5, -0.5, intr.height - 0.5, intr.height - 0.5])
    lat, lon, ok = ground_points(pose, intr, u, v)
    if not ok.all():
        raise ConfigError(f"image corners of pose {pose} do not all see the ground")
    return np.stack([lat, lon], axis=1)


def ground_gsd_m(pose: Pose, intr: CameraIntrinsics) -> float:
    """Ground size of one pixel at the image centre, metres (geometric mean of both image axes)."""
    intr = _check_intr(intr)
    r = pose.camera_rotation()
    ray = r @ np.array([0.0, 0.0, 1.0])
    if ray[2] >= -1e-6:
        raise ConfigError(f"the optical axis of pose {pose} does not hit the ground")
    rng_m = pose.alt_m / -ray[2]
    cos_inc = -ray[2]
    return float(rng_m / math.sqrt(intr.fx * intr.fy) / math.sqrt(cos_inc))


# ------------------------------------------------------------------------------------------------- render


def render_view(geomap, pose: Pose, intr: CameraIntrinsics, supersample: int = 1, antialias: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
    """Render what the nadir camera at ``pose`` sees of ``geomap``.

    Returns ``rgb`` (h, w, 3) uint8 and ``valid`` (h, w) bool; invalid pixels (off the map, map holes,
    above the horizon) are black. ``supersample`` > 1 renders at that many times the resolution and
    box-averages down (a pixel is then valid only if all its sub-samples are). ``antialias`` asks the map
    for a pyramid level no finer than the frame's ground pixel size (avoids aliasing when the camera
    sees the map coarser than its native resolution).
    """
    intr = _check_intr(intr)
    s = int(supersample)
    if s < 1 or s > 8:
        raise ConfigError(f"supersample must be within [1, 8], got {supersample}")
    ri = intr.scaled(s) if s > 1 else intr
    uu = np.arange(ri.width, dtype=float)
    vv = np.arange(ri.height, dtype=float)
    u, v = np.meshgrid(uu, vv)
    lat, lon, ok = ground_points(pose, ri, u, v)
    gsd = None
    if antialias:
        try:
            gsd = ground_gsd_m(pose, ri)
        except ConfigError:
            gsd = None
    rgb, valid = geomap.sample(lon, lat, crs=geo.WGS84, gsd_m=gsd)
    valid = valid & ok
    rgb = np.where(valid[:, :, None], rgb, np.uint8(0)).astype(np.uint8)
    if s > 1:
        rgb = cv2.resize(rgb, (intr.width, intr.height), interpolation=cv2.INTER_AREA)
        vf = cv2.resize(valid.astype(np.float32), (intr.width, intr.height), interpolation=cv2.INTER_AREA)
        valid = vf >= 1.0 - 1e-4
        rgb[~valid] = 0
    return rgb, valid


# --------------------------------------------------------------------------------------------- photometry


@dataclass(frozen=True)
class Photometric:
    """A photometric change of a frame, applied in this order by :func:`apply_photometric`:

    ``gamma`` (x ** gamma on 0..1 values), ``hue_shift_deg`` and ``saturation`` (HSV), ``contrast`` (about
    the mean grey level), ``brightness`` (additive, in units of 255), ``blur_sigma`` (Gaussian, pixels),
    ``noise_std`` (Gaussian sensor noise, 0..255 units), ``jpeg_quality`` (JPEG round trip; None = none).
    The default instance is the identity.
    """

    brightness: float = 0.0
    contrast: float = 1.0
    hue_shift_deg: float = 0.0
    saturation: float = 1.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    jpeg_quality: int | None = None
    gamma: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "jpeg_quality" and v is None:
                continue
            if not (isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))):
                raise ConfigError(f"Photometric.{f.name} must be a finite number, got {v!r}")
        if not -1.0 <= self.brightness <= 1.0:
            raise ConfigError(f"Photometric.brightness must be within [-1, 1], got {self.brightness}")
        if self.contrast <= 0 or self.saturation < 0 or self.gamma <= 0:
            raise ConfigError(
                f"Photometric contrast and gamma must be > 0 and saturation >= 0, got contrast={self.contrast}, "
                f"gamma={self.gamma}, saturation={self.saturation}"
            )
        if self.blur_sigma < 0 or self.noise_std < 0:
            raise ConfigError(f"Photometric blur_sigma and noise_std must be >= 0, got {self.blur_sigma}, "
                              f"{self.noise_std}")
        if self.jpeg_quality is not None and not 1 <= int(self.jpeg_quality) <= 100:
            raise ConfigError(f"Photometric.jpeg_quality must be within [1, 100] or None, got {self.jpeg_quality}")

    @property
    def is_identity(self) -> bool:
        """True when applying it leaves every pixel unchanged."""
        return self == Photometric()


def random_photometric(rng: np.random.Generator, strength: float = 1.0) -> Photometric:
    """A random :class:`Photometric`; ``strength`` 0 is the identity, 1 a moderate seasonal/lighting change
    (brightness +-0.12, contrast x0.78..1.28, hue +-8 deg, saturation x0.7..1.28, gamma x0.78..1.28, blur up to
    1.2 px half of the time, noise up to 5 grey levels, JPEG quality 50..90 half of the time).
    Always consumes the same number of random draws, so streams stay aligned across strengths."""
    s = float(strength)
    if not (math.isfinite(s) and 0.0 <= s <= 3.0):
        raise ConfigError(f"photometric strength must be within [0, 3], got {strength}")
    d = rng.uniform(-1.0, 1.0, 5)
    use_blur, use_jpeg = rng.random(2) < 0.5
    blur, noise, jq = rng.uniform(0.0, 1.0, 3)
    if s == 0.0:
        return Photometric()
    return Photometric(
        brightness=float(np.clip(0.12 * s * d[0], -1.0, 1.0)),
        contrast=float(math.exp(0.25 * s * d[1])),
        hue_shift_deg=float(8.0 * s * d[2]),
        saturation=float(math.exp((0.3 * d[3] - 0.05) * s)),
        gamma=float(math.exp(0.25 * s * d[4])),
        blur_sigma=float(1.2 * s * blur) if use_blur else 0.0,
        noise_std=float(5.0 * s * noise),
        jpeg_quality=int(np.clip(round(100 - (10 + 40 * jq) * min(s, 1.5)), 20, 98)) if use_jpeg else None,
    )


def _check_rgb(rgb: object) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0 or a.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got shape {a.shape} dtype {a.dtype}")
    return a


def apply_photometric(rgb: np.ndarray, p: Photometric, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply ``p`` to an (H, W, 3) uint8 RGB image; returns a new uint8 image (the identity returns a copy).

    ``rng`` drives the sensor noise; None uses a fixed seed (0), so the result is always deterministic.
    """
    a = _check_rgb(rgb)
    if not isinstance(p, Photometric):
        raise ConfigError(f"expected Photometric, got {type(p).__name__}")
    if p.is_identity:
        return a.copy()
    x = a.astype(np.float32) * np.float32(1.0 / 255.0)
    if p.gamma != 1.0:
        np.power(x, np.float32(p.gamma), out=x)
    if p.hue_shift_deg != 0.0 or p.saturation != 1.0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float32: H in [0, 360), S and V in [0, 1]
        hsv[:, :, 0] = np.mod(hsv[:, :, 0] + np.float32(p.hue_shift_deg), np.float32(360.0))
        hsv[:, :, 1] = np.clip(hsv[:, :, 1] * np.float32(p.saturation), 0.0, 1.0)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if p.contrast != 1.0:
        m = np.float32(x.mean())
        x = (x - m) * np.float32(p.contrast) + m
    if p.brightness != 0.0:
        x += np.float32(p.brightness)
    if p.blur_sigma > 0.0:
        x = cv2.GaussianBlur(x, (0, 0), float(p.blur_sigma))
    if p.noise_std > 0.0:
        g = np.random.default_rng(0) if rng is None else rng
        x += g.standard_normal(x.shape, dtype=np.float32) * np.float32(p.noise_std / 255.0)
    out = np.clip(x * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    if p.jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(p.jpeg_quality)])
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
            raise InputError("JPEG encoding failed")
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
    return out


# ------------------------------------------------------------------------------------------------ flights


def _check_positive(name: str, v: float) -> float:
    v = float(v)
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a positive number, got {v}")
    return v


def _draw_tilts(rng: np.random.Generator, k: int, std: float, lim: float) -> tuple[np.ndarray, np.ndarray]:
    p, r = rng.standard_normal(k), rng.standard_normal(k)
    return np.clip(p * std, -lim, lim), np.clip(r * std, -lim, lim)


def flight_path(
    waypoints: Sequence[tuple[float, float]],
    alt_m: float,
    speed_mps: float,
    fps: float,
    *,
    heading: str | float = "along",
    tilt_std_deg: float = 0.0,
    max_tilt_deg: float = 15.0,
    alt_jitter_m: float = 0.0,
    heading_rate_dps: float = 20.0,
    seed: int = 0,
    t0: float = 0.0,
) -> list[Pose]:
    """Poses of a constant-speed flight along the polyline of WGS84 ``(lat, lon)`` waypoints.

    Frames are ``speed_mps / fps`` metres apart along the geodesic legs (the first at the first waypoint,
    the last at or before the final one) and ``1 / fps`` seconds apart from ``t0``. ``heading``:
    ``"along"`` = direction of travel (the geodesic azimuth at the frame), ``"random"`` = independent
    uniform heading per frame (unknown yaw), ``"random_walk"`` = smooth random drift (std
    ``heading_rate_dps`` deg/s) from a random start, or a fixed number of degrees. Pitch and roll are
    i.i.d. N(0, ``tilt_std_deg``) clipped to +-``max_tilt_deg``; altitude is ``alt_m`` + N(0, ``alt_jitter_m``)
    (at least 1 m). Every random draw comes from ``seed``; the poses are exact ground truth.
    """
    wp = np.asarray(waypoints, dtype=float)
    if wp.ndim != 2 or wp.shape[1] != 2 or len(wp) < 2 or not np.isfinite(wp).all():
        raise ConfigError(f"waypoints must be at least two finite (lat, lon) pairs, got shape {wp.shape}")
    if (np.abs(wp[:, 0]) > 90).any() or (np.abs(wp[:, 1]) > 180).any():
        raise ConfigError("waypoint latitude/longitude out of range")
    alt_m = _check_positive("alt_m", alt_m)
    step = _check_positive("speed_mps", speed_mps) / _check_positive("fps", fps)
    if tilt_std_deg < 0 or alt_jitter_m < 0 or not 0 <= max_tilt_deg < 80:
        raise ConfigError(f"tilt_std_deg and alt_jitter_m must be >= 0 and max_tilt_deg within [0, 80), got "
                          f"{tilt_std_deg}, {alt_jitter_m}, {max_tilt_deg}")
    lat1, lon1, lat2, lon2 = wp[:-1, 0], wp[:-1, 1], wp[1:, 0], wp[1:, 1]
    az12, _, dist = _GEOD.inv(lon1, lat1, lon2, lat2)
    cum = np.concatenate([[0.0], np.cumsum(dist)])
    total = float(cum[-1])
    if total <= 0:
        raise ConfigError("waypoints span zero distance")
    count = int(math.floor(total / step + 1e-9)) + 1
    s = np.arange(count) * step
    seg = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(dist) - 1)
    while True:  # never start a frame on a zero-length leg
        zero = dist[seg] <= 0
        if not zero.any():
            break
        seg[zero] = np.minimum(seg[zero] + 1, len(dist) - 1)
        if (dist[seg] <= 0).all():
            break
    rem = s - cum[seg]
    lon, lat, back_az = _GEOD.fwd(lon1[seg], lat1[seg], az12[seg], rem)
    along = np.mod(np.asarray(back_az) + 180.0, 360.0)

    rng = np.random.default_rng(seed)
    hdraw = rng.uniform(0.0, 360.0, count)
    hwalk = rng.standard_normal(count)
    pitch, roll = _draw_tilts(rng, count, float(tilt_std_deg), float(max_tilt_deg))
    dalt = rng.standard_normal(count) * float(alt_jitter_m)
    if isinstance(heading, str):
        if heading == "along":
            hdg = along
        elif heading == "random":
            hdg = hdraw
        elif heading == "random_walk":
            hdg = np.mod(hdraw[0] + np.cumsum(np.concatenate([[0.0], hwalk[1:]])) * heading_rate_dps / fps, 360.0)
        else:
            raise ConfigError(f"heading must be 'along', 'random', 'random_walk' or degrees, got {heading!r}")
    else:
        h = float(heading)
        if not math.isfinite(h):
            raise ConfigError(f"heading must be finite, got {heading}")
        hdg = np.full(count, h % 360.0)
    alts = np.maximum(alt_m + dalt, 1.0)
    return [
        Pose(float(t0 + i / fps), float(lat[i]), float(lon[i]), float(alts[i]), float(hdg[i]),
             float(pitch[i]), float(roll[i]))
        for i in range(count)
    ]


def lawnmower_waypoints(geomap, alt_m: float, margin_m: float | None = None, spacing_m: float | None = None
                        ) -> list[tuple[float, float]]:
    """A survey ("lawnmower") pattern of WGS84 ``(lat, lon)`` waypoints inside the map's bounds.

    Passes run along the longer side of the map's working-CRS bounding box, ``spacing_m`` apart (default
    ``alt_m``: about the footprint width of a 60 deg camera), alternating direction, ``margin_m`` inside
    the bounds (default ``0.6 * alt_m``: about half a footprint, so frames stay over the map).
    """
    alt_m = _check_positive("alt_m", alt_m)
    margin = 0.6 * alt_m if margin_m is None else float(margin_m)
    spacing = alt_m if spacing_m is None else _check_positive("spacing_m", spacing_m)
    if margin < 0:
        raise ConfigError(f"margin_m must be >= 0, got {margin}")
    xmin, ymin, xmax, ymax = geomap.bounds()
    x0, x1, y0, y1 = xmin + margin, xmax - margin, ymin + margin, ymax - margin
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"map {getattr(geomap, 'name', '')!r} is too small for a {margin} m margin")
    xs, ys = [], []
    if x1 - x0 >= y1 - y0:
        lines = np.arange(y1, y0 - 1e-9, -spacing)
        for j, y in enumerate(lines):
            a, b = (x0, x1) if j % 2 == 0 else (x1, x0)
            xs += [a, b]
            ys += [y, y]
    else:
        lines = np.arange(x0, x1 + 1e-9, spacing)
        for j, x in enumerate(lines):
            a, b = (y1, y0) if j % 2 == 0 else (y0, y1)
            xs += [x, x]
            ys += [a, b]
    lon, lat = geo.transform(np.array(xs), np.array(ys), geomap.working_crs, geo.WGS84)
    return [(float(a), float(b)) for a, b in zip(lat, lon)]


def _valid_fraction(geomap, pose: Pose, intr: CameraIntrinsics, grid: tuple[int, int] = (16, 12)) -> float:
    u = np.linspace(0.0, intr.width - 1.0, grid[0])
    v = np.linspace(0.0, intr.height - 1.0, grid[1])
    uu, vv = np.meshgrid(u, v)
    lat, lon, ok = ground_points(pose, intr, uu, vv)
    _, valid = geomap.sample(lon, lat, crs=geo.WGS84)
    return float((valid & ok).mean())


def random_poses(
    geomap,
    n: int,
    alt_range: tuple[float, float] = (100.0, 150.0),
    max_tilt_deg: float = 15.0,
    seed: int = 0,
    margin_m: float = 0.0,
    require_valid: float = 0.98,
    intr: CameraIntrinsics | None = None,
) -> list[Pose]:
    """``n`` random frames over the map: position uniform in the working-CRS bounds shrunk by ``margin_m``,
    altitude uniform in ``alt_range``, heading uniform, pitch/roll uniform in +-``max_tilt_deg``.

    A candidate is kept when at least ``require_valid`` of a 16x12 grid of its pixels (camera ``intr``,
    default 640x480 with a 60 deg horizontal field of view) sees valid map. ``t`` is the frame index.
    Raises ConfigError when the map is too small to find ``n`` such frames in ``200 * n`` tries.
    """
    n = int(n)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    lo, hi = (float(a) for a in alt_range)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ConfigError(f"alt_range must be 0 < low <= high, got {alt_range}")
    if not 0 <= max_tilt_deg < 80 or not 0 <= require_valid <= 1 or margin_m < 0:
        raise ConfigError(f"bad random_poses arguments: max_tilt_deg={max_tilt_deg}, require_valid={require_valid}, "
                          f"margin_m={margin_m}")
    intr = CameraIntrinsics.from_fov(640, 480, 60.0) if intr is None else _check_intr(intr)
    xmin, ymin, xmax, ymax = geomap.bounds()
    x0, x1, y0, y1 = xmin + margin_m, xmax - margin_m, ymin + margin_m, ymax - margin_m
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"map {getattr(geomap, 'name', '')!r} is too small for a {margin_m} m margin")
    # necessary condition: the smallest (nadir, lowest) footprint must fit into the map's bounding box
    fp = (lo * intr.width / intr.fx) * (lo * intr.height / intr.fy)
    if require_valid > 0 and fp * require_valid > (x1 - x0 + 2 * margin_m) * (y1 - y0 + 2 * margin_m):
        raise ConfigError(f"random_poses: a {fp:.0f} m^2 footprint at {lo} m altitude cannot be "
                          f"{require_valid:.0%} inside map {getattr(geomap, 'name', '')!r}")
    rng = np.random.default_rng(seed)
    out: list[Pose] = []
    tries = 0
    while len(out) < n:
        if tries >= 200 * max(n, 1):
            raise ConfigError(
                f"random_poses: found only {len(out)} of {n} frames with >= {require_valid:.0%} valid map in "
                f"{tries} tries (map too small for altitudes {alt_range}?)"
            )
        tries += 1
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        alt = rng.uniform(lo, hi)
        hdg = rng.uniform(0.0, 360.0)
        pitch, roll = rng.uniform(-max_tilt_deg, max_tilt_deg, 2)
        lon, lat = geo.transform(x, y, geomap.working_crs, geo.WGS84)
        pose = Pose(float(len(out)), float(lat), float(lon), float(alt), float(hdg), float(pitch), float(roll))
        if require_valid <= 0 or _valid_fraction(geomap, pose, intr) >= require_valid:
            out.append(pose)
    return out


class SimFrame(NamedTuple):
    """One simulated frame: ground-truth pose, rendered RGB (uint8, invalid pixels black) and the fraction of
    its pixels that saw valid map."""

    pose: Pose
    image: np.ndarray
    valid_fraction: float


def simulate_flight(
    geomap,
    poses: Iterable[Pose],
    intr: CameraIntrinsics,
    photometric_strength: float = 1.0,
    seed: int = 0,
    min_valid: float = 0.0,
    supersample: int = 1,
) -> Iterator[SimFrame]:
    """Render each pose and apply a random photometric change (seeded per frame by (``seed``, index)).

    Yields :class:`SimFrame` ``(pose, image, valid_fraction)`` lazily. Frames partly off the map are yielded
    with their invalid pixels black and their ``valid_fraction`` attached; only frames with
    ``valid_fraction < min_valid`` are skipped (default 0: every frame is yielded).
    """
    intr = _check_intr(intr)
    if not 0.0 <= float(min_valid) <= 1.0:
        raise ConfigError(f"min_valid must be within [0, 1], got {min_valid}")
    for i, pose in enumerate(poses):
        rgb, valid = render_view(geomap, pose, intr, supersample=supersample)
        frac = float(valid.mean())
        if frac < min_valid:
            continue
        rng = np.random.default_rng([int(seed), i])
        p = random_photometric(rng, photometric_strength)
        img = apply_photometric(rgb, p, rng)
        img[~valid] = 0
        yield SimFrame(pose, img, frac)
