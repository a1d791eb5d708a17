"""A car driving the procedural world's roads: ground-truth poses, street-level frames and noisy odometry.

:func:`plan_drive` steers a simulated car along the drivable roads of a :class:`~.world.World` (arterials,
residential streets and farm tracks of ``World.layers["road_kind"]``; parking lots and farm yards are not
driven). The driver looks ahead along the road, keeps to the middle of the free corridor, slows down for
turns, picks a random branch at every junction (a junction is a look-ahead fan with more than one free
corridor), and turns round at dead ends and at the edge of the optional ``region``.

:func:`simulate_drive` renders the frames of such a drive (forward camera or 360° panorama, through
:mod:`.street`) in another season than an index would usually be built from, and produces wheel + gyro
odometry with a per-drive scale error, a gyro bias and white noise (:class:`OdomNoise`), as a car's CAN bus
would. ``kidnap_at_s`` teleports the car (a "kidnapped robot"): the pose jumps to a distant road while the
odometry carries on as if nothing happened.

``realism`` (:class:`DriveRealism`) makes the frames fail the way a real car's do: the body pitches and rolls
(slowly varying, plus nose-dive on braking), the camera sits at another height / pitch than the localizer is
told (a constant mis-calibration), the sensor blurs, mis-exposes, adds noise and JPEG
(:func:`.realism.random_sensor`), and other vehicles occlude the road. The frames' poses stay the true ones.

Poses are in UTM metres of ``world.crs`` (east, north), heading in degrees clockwise from north.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ConfigError
from ..geo import heading_diff_deg as heading_diff
from ..vehicle import OdometrySample, RoadLayer

__all__ = ["DriveFrame", "DriveRealism", "OdomNoise", "OdometrySample", "RoadGrid", "integrate_odometry", "odometry_from_truth",
           "plan_drive", "simulate_drive"]


@dataclass(frozen=True)
class OdomNoise:
    """Odometry error model: per-drive speed scale error and gyro bias, plus white noise per sample.

    Attitude (only in drives with a :class:`DriveRealism`, whose body pitches and rolls): the samples carry the
    body's true pitch / roll plus an IMU / AHRS error, slowly varying (Ornstein-Uhlenbeck, 1-sigma
    ``attitude_std_deg`` per axis, correlation time ``attitude_tau_s``), as a gravity-referenced attitude
    estimate fused with wheel speed is. The camera's mounting mis-calibration is not in it (the IMU cannot
    see it).
    """

    v_scale_std: float = 0.01  # 1-sigma relative wheel-speed scale error (tyre radius), drawn once per drive
    gyro_bias_std: float = 0.002  # rad/s, 1-sigma gyro bias, drawn once per drive
    v_std: float = 0.05  # m/s white noise per sample
    yaw_rate_std: float = 0.005  # rad/s white noise per sample
    attitude_std_deg: float = 0.3  # 1-sigma error of the reported body pitch and roll
    attitude_tau_s: float = 5.0  # its correlation time

    def __post_init__(self) -> None:
        for name in ("v_scale_std", "gyro_bias_std", "v_std", "yaw_rate_std", "attitude_std_deg", "attitude_tau_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"OdomNoise.{name} must be a finite number >= 0, got {v!r}")
        if self.attitude_tau_s <= 0:
            raise ConfigError(f"OdomNoise.attitude_tau_s must be > 0 seconds, got {self.attitude_tau_s!r}")


@dataclass(frozen=True)
class DriveRealism:
    """What makes a simulated drive's frames as hard as a real car's (pass to :func:`simulate_drive`).

    Body motion: pitch and roll are slowly varying (Ornstein-Uhlenbeck, std ``pitch_std_deg`` /
    ``roll_std_deg``, correlation time ``body_tau_s``) plus ``brake_pitch_deg_per_mps2`` times the car's
    acceleration (the nose dips on braking, so the camera looks down). Mis-calibration: the camera is
    ``height_offset_m`` higher and ``pitch_offset_deg`` more up-looking than the nominal 1.6 m / 0 deg a
    localizer is configured with. ``sensor``: strength of :func:`.realism.random_sensor` per frame (0 = clean).
    ``occluders``: mean number of dark boxes (other vehicles) pasted on the lower image half per frame.
    Hills: the road climbs and falls with a grade of about 1-sigma ``grade_std_deg`` (Ornstein-Uhlenbeck over the
    distance driven, correlation length ``grade_length_m``, smoothed over ``grade_smooth_m`` as vertical curves
    are) and the lane slopes ``camber_deg`` to the right (drainage). The
    camera sees the road as before (the body sits on it, and the renderer's ground is locally a plane), but an IMU
    measures the attitude against gravity: the odometry's pitch includes the grade and its roll the camber (a
    rolling road, about 3.5 % grade 1-sigma, 2 % camber, by default). :meth:`none` is a spec that changes nothing;
    the default is the hard benchmark's.
    """

    pitch_std_deg: float = 1.2
    roll_std_deg: float = 0.7
    body_tau_s: float = 1.5
    brake_pitch_deg_per_mps2: float = 0.3
    height_offset_m: float = 0.15
    pitch_offset_deg: float = -1.0
    sensor: float = 1.0
    occluders: float = 0.7
    grade_std_deg: float = 2.0
    grade_length_m: float = 150.0
    grade_smooth_m: float = 20.0
    camber_deg: float = 1.0

    def __post_init__(self) -> None:
        from .realism import _finite

        for name, lo, hi in (("pitch_std_deg", 0.0, 10.0), ("roll_std_deg", 0.0, 10.0), ("body_tau_s", 0.0, 600.0),
                             ("brake_pitch_deg_per_mps2", -3.0, 3.0), ("height_offset_m", -0.4, 1.0),
                             ("pitch_offset_deg", -10.0, 10.0), ("sensor", 0.0, 3.0), ("occluders", 0.0, 5.0),
                             ("grade_std_deg", 0.0, 10.0), ("grade_length_m", 0.0, 10000.0),
                             ("grade_smooth_m", 0.0, 500.0), ("camber_deg", -5.0, 5.0)):
            _finite(f"DriveRealism.{name}", getattr(self, name), lo, hi)
        for name, unit in (("body_tau_s", "seconds"), ("grade_length_m", "metres")):
            if getattr(self, name) <= 0:
                raise ConfigError(f"DriveRealism.{name} must be > 0 {unit}, got {getattr(self, name)}")

    @staticmethod
    def none() -> DriveRealism:
        """A spec that changes nothing (rigid, calibrated camera, clean frames, empty roads)."""
        return DriveRealism(0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 150.0, 20.0, 0.0)


def _body_attitude(t: np.ndarray, v: np.ndarray, real: DriveRealism, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """True camera (pitch, roll) in degrees at the ticks ``t`` of a drive with speeds ``v`` (see DriveRealism)."""
    from .street import MAX_TILT_DEG

    n = len(t)
    dt = float(t[1] - t[0]) if n > 1 else 1.0
    ou = _ou(rng.normal(0.0, 1.0, (2, n)), math.exp(-dt / real.body_tau_s))
    accel = np.gradient(v, dt) if n > 1 else np.zeros(n)
    pitch = real.pitch_offset_deg + real.pitch_std_deg * ou[0] + real.brake_pitch_deg_per_mps2 * accel
    roll = real.roll_std_deg * ou[1]
    return np.clip(pitch, -MAX_TILT_DEG, MAX_TILT_DEG), np.clip(roll, -MAX_TILT_DEG, MAX_TILT_DEG)


def _road_grade(t: np.ndarray, v: np.ndarray, real: DriveRealism, rng: np.random.Generator) -> np.ndarray:
    """The road's grade (degrees, positive uphill along the direction of travel) at the ticks ``t`` of a drive with
    speeds ``v``: a function of the distance driven (see DriveRealism), an Ornstein-Uhlenbeck profile on a 0.5 m
    grid smoothed by a Gaussian of ``grade_smooth_m`` (a road's grade changes along vertical curves; a raw OU
    profile would tilt by about half a degree every few metres)."""
    from scipy.ndimage import gaussian_filter1d

    dist = np.cumsum(np.abs(v) * np.diff(t, prepend=t[0]))  # metres driven up to each tick
    h = 0.5
    grid = _ou(rng.normal(0.0, 1.0, int(dist[-1] / h) + 2), math.exp(-h / real.grade_length_m))
    if real.grade_smooth_m > 0:
        grid = gaussian_filter1d(grid, real.grade_smooth_m / h, mode="nearest")
    return real.grade_std_deg * np.interp(dist, h * np.arange(len(grid)), grid)


def _ou(z: np.ndarray, a) -> np.ndarray:
    """Unit-variance Ornstein-Uhlenbeck series along the last axis of white normal draws ``z`` (step factor ``a``: one
    number, or one per step along that axis)."""
    a = np.broadcast_to(np.asarray(a, float), z.shape[-1:])
    ou = np.zeros_like(z)
    ou[..., 0] = z[..., 0]
    for i in range(1, z.shape[-1]):
        ou[..., i] = a[i] * ou[..., i - 1] + math.sqrt(1.0 - a[i] * a[i]) * z[..., i]
    return ou


def _with_attitude(odom: list[OdometrySample], pitch: np.ndarray, roll: np.ndarray, noise: OdomNoise,
                   rng: np.random.Generator) -> list[OdometrySample]:
    """The odometry samples carrying the body's attitude (pitch, roll in degrees at each sample) plus the IMU
    error of ``noise`` (see :class:`OdomNoise`)."""
    from dataclasses import replace

    n = len(odom)
    dt = float(odom[1].t - odom[0].t) if n > 1 else 1.0
    err = noise.attitude_std_deg * _ou(rng.normal(0.0, 1.0, (2, n)), math.exp(-dt / noise.attitude_tau_s))
    return [replace(o, pitch_deg=float(p + e0), roll_deg=float(r + e1))
            for o, p, r, e0, e1 in zip(odom, pitch, roll, err[0], err[1])]


def _occlude(img: np.ndarray, mean_boxes: float, rng: np.random.Generator) -> np.ndarray:
    """Paste a Poisson(``mean_boxes``) number of dark boxes (other vehicles) on the lower half of ``img``."""
    h, w = img.shape[:2]
    out = img.copy()
    for _ in range(int(rng.poisson(mean_boxes))):
        bw, bh = int(w * rng.uniform(0.08, 0.25)), int(h * rng.uniform(0.06, 0.18))
        x0 = int(rng.integers(0, max(1, w - bw)))
        y1 = int(rng.uniform(0.55, 1.0) * h)
        out[max(h // 2, y1 - bh):y1, x0:x0 + bw] = rng.integers(15, 80, 3).astype(np.uint8)
    return out


@dataclass
class DriveFrame:
    """One camera frame of a drive: the image, its true pose and WGS84 position.

    ``kidnapped`` is True on the first frame after the car was teleported (see ``kidnap_at_s``). ``pose`` is the
    camera's pose against the road (what it sees); on a hill (:class:`DriveRealism` grade / camber) the road itself
    is tilted by ``grade_deg`` (positive uphill ahead) and ``camber_deg`` (right side down) against gravity.
    """

    t: float
    image: np.ndarray
    pose: object  # street.GroundPose
    lat: float
    lon: float
    kidnapped: bool
    grade_deg: float = 0.0
    camber_deg: float = 0.0


class RoadGrid:
    """The drivable road raster of a world with helpers for the driver (metres <-> pixels, clearance).

    ``clearance`` is the distance (m) from each drivable pixel to the nearest non-drivable one (0 off road).
    ``region`` (xmin, ymin, xmax, ymax) in UTM metres keeps the car inside a box (outside counts as off road);
    default: the world inset by ``edge_margin_m`` (a camera at the world's very edge sees nothing of it).
    """

    def __init__(self, world, region: tuple[float, float, float, float] | None = None,
                 edge_margin_m: float = 25.0) -> None:
        drivable = RoadLayer.from_world(world).mask.copy()
        t = world.transform
        self.gsd = float(t.a)
        self.x0, self.y0 = float(t.c), float(t.f)
        if region is None:
            bx0, by0, bx1, by1 = world.bounds()
            m = min(float(edge_margin_m), 0.25 * (bx1 - bx0), 0.25 * (by1 - by0))
            region = (bx0 + m, by0 + m, bx1 - m, by1 - m)
        xmin, ymin, xmax, ymax = (float(v) for v in region)
        if not (xmin < xmax and ymin < ymax):
            raise ConfigError(f"region must be (xmin, ymin, xmax, ymax) with min < max, got {region}")
        rows, cols = drivable.shape
        cx = self.x0 + (np.arange(cols) + 0.5) * self.gsd
        cy = self.y0 - (np.arange(rows) + 0.5) * self.gsd
        drivable &= ((cx >= xmin) & (cx <= xmax))[None, :] & ((cy >= ymin) & (cy <= ymax))[:, None]
        self.drivable = drivable
        padded = np.pad(drivable.astype(np.uint8), 1)  # the world's edge counts as off road
        self.clearance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1] * self.gsd

    def to_px(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """UTM (x, y) to fractional (col, row), integer = pixel centre."""
        return (np.asarray(x, float) - self.x0) / self.gsd - 0.5, (self.y0 - np.asarray(y, float)) / self.gsd - 0.5

    def sample(self, x, y) -> np.ndarray:
        """Clearance (m) at UTM points (nearest pixel; 0 outside the world)."""
        c, r = self.to_px(x, y)
        ci, ri = np.rint(c).astype(int), np.rint(r).astype(int)
        h, w = self.clearance.shape
        ok = (ci >= 0) & (ci < w) & (ri >= 0) & (ri < h)
        out = np.zeros(np.shape(ci), float)
        out[ok] = self.clearance[ri[ok], ci[ok]]
        return out

    def on_road(self, x, y, tol_m: float = 0.0) -> np.ndarray:
        """Whether UTM points lie on a drivable pixel (or within ``tol_m`` of one)."""
        c, r = self.to_px(x, y)
        ci, ri = np.rint(c).astype(int), np.rint(r).astype(int)
        h, w = self.drivable.shape
        ok = (ci >= 0) & (ci < w) & (ri >= 0) & (ri < h)
        out = np.zeros(np.shape(ci), bool)
        if tol_m > 0:
            k = 2 * int(math.ceil(tol_m / self.gsd)) + 1
            mask = cv2.dilate(self.drivable.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
        else:
            mask = self.drivable
        out[ok] = mask[ri[ok], ci[ok]]
        return out

    def random_start(self, rng: np.random.Generator, min_clearance_m: float = 2.0,
                     far_from: tuple[float, float] | None = None, min_dist_m: float = 0.0) -> tuple[float, float]:
        """A random road point with at least ``min_clearance_m`` to the road edge (optionally far from a point)."""
        rows, cols = np.nonzero(self.clearance >= min_clearance_m)
        if len(rows) == 0:
            raise ConfigError("the world (or region) has no drivable road wide enough to drive on")
        x = self.x0 + (cols + 0.5) * self.gsd
        y = self.y0 - (rows + 0.5) * self.gsd
        if far_from is not None:
            keep = np.hypot(x - far_from[0], y - far_from[1]) >= min_dist_m
            if not keep.any():
                raise ConfigError(f"no drivable road {min_dist_m:.0f} m away from the car to teleport it to")
            x, y = x[keep], y[keep]
        i = int(rng.integers(len(x)))
        return float(x[i]), float(y[i])


# Look-ahead fan of the driver: candidate directions relative to the current heading, and free-ray sampling.
_FAN_DEG = np.arange(-150.0, 150.1, 5.0)
_RAY_STEP_M = 0.5
_MIN_CLEAR_M = 1.0


class _Driver:
    """Steers a car along the free corridors of a :class:`RoadGrid` (vectorised look-ahead fan)."""

    def __init__(self, grid: RoadGrid, speed_mps: float, rng: np.random.Generator, max_yaw_rate: float = 0.6,
                 accel: float = 2.0) -> None:
        self.grid = grid
        self.speed = float(speed_mps)
        self.rng = rng
        self.max_yaw_rate = max_yaw_rate
        self.accel = accel
        self.x = self.y = self.h = self.v = 0.0
        self.branch: float | None = None  # chosen relative direction while crossing a junction
        self.turning = False  # turning on the spot at a dead end

    def place(self, x: float, y: float) -> None:
        """Put the car at (x, y), heading along the longest free corridor, standing still."""
        self.x, self.y, self.v = x, y, 0.0
        ang = np.arange(0.0, 360.0, 5.0)
        free = self._free_len(np.radians(ang), 40.0)
        best = np.flatnonzero(free >= free.max() - 1e-6)
        self.h = float(ang[best[int(self.rng.integers(len(best)))]])
        self.branch = None
        self.turning = False

    def _free_len(self, hdg_rad: np.ndarray, max_len: float) -> np.ndarray:
        """Free distance (m) along each absolute compass direction before clearance drops below the minimum."""
        s = np.arange(_RAY_STEP_M, max_len + 1e-9, _RAY_STEP_M)
        xs = self.x + np.sin(hdg_rad)[:, None] * s[None, :]
        ys = self.y + np.cos(hdg_rad)[:, None] * s[None, :]
        here = float(self.grid.sample(self.x, self.y))
        blocked = self.grid.sample(xs, ys) < min(_MIN_CLEAR_M, 0.5 * here)
        first = np.where(blocked.any(axis=1), blocked.argmax(axis=1), len(s))
        return first * _RAY_STEP_M

    def step(self, dt: float) -> tuple[float, float]:
        """Advance by ``dt`` seconds; returns the true (speed m/s, yaw rate rad/s CCW) of the step."""
        look = max(6.0, 1.5 * min(self.speed, self.v + 2.0))
        rel = _FAN_DEG
        free = self._free_len(np.radians(self.h + rel), 2.5 * look)
        ok = free >= look
        target_v = self.speed
        fwd = np.abs(rel) <= 20.0
        if self.turning and ok[fwd].any():
            self.turning = False
        runs = [(a, b) for a, b in _runs(ok) if abs(rel[(a + b - 1) // 2]) <= 100.0]
        if not self.turning and self.v > 0.3 and not runs:  # blocked ahead while moving: brake straight on
            self.v = max(0.0, self.v - 2 * self.accel * dt)
            self.x += self.v * dt * math.sin(math.radians(self.h))
            self.y += self.v * dt * math.cos(math.radians(self.h))
            return self.v, 0.0
        if self.turning or not runs or (self.v < 0.3 and free[fwd].max() < 3.0):
            # dead end (or the world's edge): stop and turn on the spot until the road ahead is free again
            # (a three-point turn, compressed); the gyro sees it
            self.turning = True
            self.v = 0.0
            self.branch = None
            self.h = (self.h + math.degrees(self.max_yaw_rate * dt)) % 360.0
            return 0.0, -self.max_yaw_rate
        # corridors = runs of consecutive free directions ahead; more than one = a junction
        cands = runs
        if len(cands) > 1:
            # a junction: pick a branch once (kept as an absolute compass direction while the car turns into it)
            def off(ab):
                return min(abs(float(heading_diff(self.h + rel[i], self.branch))) for i in range(*ab))

            if self.branch is None or min(off(ab) for ab in cands) > 30.0:
                a, b = cands[int(self.rng.integers(len(cands)))]
                self.branch = (self.h + float(rel[(a + b - 1) // 2])) % 360.0
            a, b = min(cands, key=off)
        else:
            a, b = cands[0]
            self.branch = None
        seg = np.arange(a, b)
        # pure pursuit of the corridor's centre line: go out along the corridor's direction, then slide
        # sideways to the ridge of the clearance (the middle of the road) nearest that point
        wsum = free[seg] - free[seg].min() + 1e-3
        d = math.radians(self.h + float(np.sum(rel[seg] * wsum) / np.sum(wsum)))
        pursue = max(5.0, 1.2 * self.v)
        px, py = self.x + pursue * math.sin(d), self.y + pursue * math.cos(d)
        offs = np.arange(-6.0, 6.01, 0.5)
        cl = self.grid.sample(px + offs * math.cos(d), py - offs * math.sin(d))
        o = float(offs[int(np.argmax(cl - 0.02 * np.abs(offs)))])
        px, py = px + o * math.cos(d), py - o * math.sin(d)
        aim = float(heading_diff(math.degrees(math.atan2(px - self.x, py - self.y)), self.h))
        if abs(aim) > 15.0 or self.branch is not None:
            target_v = max(3.0, self.speed * 0.5)
        # brake in time for a dead end ahead (stop ~2 m before it at 2 * accel)
        ahead = float(free[np.abs(rel) <= 10.0].max())
        if ahead < 2.5 * look - 1e-6:
            target_v = min(target_v, math.sqrt(max(0.0, 4.0 * self.accel * (ahead - 2.0))))
        dv = float(np.clip(target_v - self.v, -2 * self.accel * dt, self.accel * dt))
        self.v = max(0.0, self.v + dv)
        # heading change: proportional steering towards the aim, yaw rate limited
        want = 2.0 * max(self.v, 1.0) * math.sin(math.radians(aim)) / pursue  # pure pursuit curvature * speed
        yaw_rate_cw = float(np.clip(want, -self.max_yaw_rate, self.max_yaw_rate))
        h_mid = self.h + math.degrees(yaw_rate_cw * dt / 2.0)
        self.x += self.v * dt * math.sin(math.radians(h_mid))
        self.y += self.v * dt * math.cos(math.radians(h_mid))
        self.h = (self.h + math.degrees(yaw_rate_cw * dt)) % 360.0
        return self.v, -yaw_rate_cw


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True in a 1-d bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _check_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ConfigError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")


def _drive_states(world, duration_s: float, speed_mps: float, rng: np.random.Generator, dt: float,
                  region=None, kidnap_at_s: float | None = None) -> dict[str, np.ndarray]:
    """Simulate the driver: arrays t, x, y, heading_deg, v, yaw_rate (true) and the kidnap step (-1 if none)."""
    for name, v in (("duration_s", duration_s), ("speed_mps", speed_mps), ("dt", dt)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be a positive number, got {v!r}")
    if speed_mps > 40:
        raise ConfigError(f"speed_mps must be at most 40 m/s, got {speed_mps}")
    grid = RoadGrid(world, region)
    drv = _Driver(grid, speed_mps, rng)
    drv.place(*grid.random_start(rng))
    n = int(math.floor(duration_s / dt + 1e-9)) + 1
    out = {k: np.zeros(n) for k in ("t", "x", "y", "heading_deg", "v", "yaw_rate")}
    kid = -1
    kidnap_step = None if kidnap_at_s is None else int(round(float(kidnap_at_s) / dt))
    if kidnap_step is not None and not 0 < kidnap_step < n:
        raise ConfigError(f"kidnap_at_s must lie inside the drive (0, {duration_s}), got {kidnap_at_s}")
    v = w = 0.0
    for i in range(n):
        if i == kidnap_step:
            speed, hdg = drv.v, drv.h
            drv.place(*grid.random_start(rng, far_from=(drv.x, drv.y), min_dist_m=150.0))
            drv.v = speed  # the wheels keep turning; only the place changes
            del hdg
            kid = i
        out["t"][i] = i * dt
        out["x"][i], out["y"][i], out["heading_deg"][i] = drv.x, drv.y, drv.h
        out["v"][i], out["yaw_rate"][i] = v, w
        v, w = drv.step(dt)
    # the reading at step i is the motion of step i -> i + 1 (what the car does from then on)
    out["v"] = np.append(out["v"][1:], v)
    out["yaw_rate"] = np.append(out["yaw_rate"][1:], w)
    out["kidnap_step"] = np.array(kid)
    out["grid"] = grid  # type: ignore[assignment]
    return out


def plan_drive(world, duration_s: float, speed_mps: float, rng, region=None, dt: float = 0.05,
               kidnap_at_s: float | None = None) -> list:
    """Ground-truth poses of a car driving ``world``'s roads: a list of ``(t, GroundPose)`` every ``dt`` s.

    The car starts at a random point in the middle of a drivable road (seeded by ``rng``, a numpy Generator
    or an int), accelerates to ``speed_mps`` (at most 40), slows to half speed for turns and junctions,
    takes a random branch at every junction and turns round at dead ends and at the edge of ``region``
    ((xmin, ymin, xmax, ymax) in UTM metres of ``world.crs``; default the world inset by 25 m, so that the
    camera always sees the world). With ``kidnap_at_s``
    the car is teleported at that time to a road at least 150 m away. The pose heading is the direction of
    travel; the camera height is GroundPose's default.
    """
    from .street import GroundPose

    st = _drive_states(world, duration_s, speed_mps, _check_rng(rng), dt, region, kidnap_at_s)
    return [(float(t), GroundPose(float(x), float(y), float(h)))
            for t, x, y, h in zip(st["t"], st["x"], st["y"], st["heading_deg"])]


def odometry_from_truth(t: np.ndarray, v: np.ndarray, yaw_rate: np.ndarray, noise: OdomNoise,
                        rng: np.random.Generator) -> list[OdometrySample]:
    """Noisy odometry samples from the true speed and yaw rate (CCW) at times ``t``.

    Speed gets a per-drive scale error and white noise, yaw rate a per-drive bias and white noise (see
    :class:`OdomNoise`); the samples report the white-noise stds. A reading at ``t[i]`` is the motion from
    ``t[i]`` to ``t[i + 1]``.
    """
    scale = 1.0 + rng.normal(0.0, noise.v_scale_std)
    bias = rng.normal(0.0, noise.gyro_bias_std)
    vm = v * scale + rng.normal(0.0, noise.v_std, len(t))
    wm = yaw_rate + bias + rng.normal(0.0, noise.yaw_rate_std, len(t))
    return [OdometrySample(float(ti), float(vi), float(wi), float(noise.v_std), float(noise.yaw_rate_std))
            for ti, vi, wi in zip(t, vm, wm)]


def integrate_odometry(samples: list[OdometrySample], x0: float, y0: float, heading0_deg: float
                       ) -> np.ndarray:
    """Dead reckoning: (len(samples), 3) array of (x, y, heading_deg) at each sample time from a start pose.

    Each reading holds until the next sample (midpoint heading within a step), as :func:`simulate_drive`
    produces them.
    """
    out = np.empty((len(samples), 3))
    x, y, h = float(x0), float(y0), math.radians(heading0_deg)
    for i, s in enumerate(samples):
        out[i] = (x, y, math.degrees(h) % 360.0)
        if i + 1 < len(samples):
            dt = samples[i + 1].t - s.t
            hm = h - s.yaw_rate_rps * dt / 2.0
            x += s.v_mps * dt * math.sin(hm)
            y += s.v_mps * dt * math.cos(hm)
            h -= s.yaw_rate_rps * dt
    return out


def simulate_drive(world, duration_s: float = 120.0, fps: float = 2.0, odom_hz: float = 20.0,
                   modality: str = "ground", intr=None, season: str | None = "autumn", rng=0,
                   kidnap_at_s: float | None = None, odom_noise: OdomNoise | None = None,
                   speed_mps: float = 8.0, region=None, pano_size: tuple[int, int] = (512, 256),
                   progress: bool = False, realism: DriveRealism | None = None
                   ) -> tuple[list[DriveFrame], list[OdometrySample]]:
    """Drive ``world``'s roads and record camera frames and odometry.

    Args:
        world: a :class:`~.world.World`.
        duration_s, fps, odom_hz: drive length, camera rate and odometry rate (``odom_hz`` a multiple of
            ``fps`` keeps frames on odometry ticks; frames take the nearest tick otherwise).
        modality: ``"ground"`` (pinhole forward camera with ``intr``, default 640x480 at 90° HFOV) or
            ``"panorama"`` (equirectangular, ``pano_size`` = (width, height)).
        season: the season rendered (use another one than the index's); None = the world's own.
        rng: numpy Generator or int seed for the route, the odometry noise and the appearance.
        kidnap_at_s: teleport the car at this time (see :func:`plan_drive`); the odometry does not see it.
        odom_noise: the odometry error model (default :class:`OdomNoise`).
        speed_mps, region: as in :func:`plan_drive`.
        realism: a :class:`DriveRealism` (body motion, camera mis-calibration, sensor effects, occluders);
            None = a rigid, calibrated camera and clean frames. It draws from its own random stream, so the
            route, odometry and appearance are those of the same ``rng`` without it. With it the odometry
            samples also carry the body's pitch / roll as an IMU reports them (``odom_noise`` attitude error;
            without it they carry NaN: a rigid car reports no attitude).

    Returns ``(frames, odometry)``: :class:`DriveFrame` per camera frame (true pose, lat/lon), and
    :class:`OdometrySample` per odometry tick.
    """
    from ..camera import CameraIntrinsics
    from .street import GroundPose, StreetScene, pose_latlon, render_ground, render_panorama

    if modality not in ("ground", "panorama"):
        raise ConfigError(f"modality must be 'ground' or 'panorama', got {modality!r}")
    for name, v in (("fps", fps), ("odom_hz", odom_hz)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be a positive number, got {v!r}")
    if odom_hz < fps:
        raise ConfigError(f"odom_hz ({odom_hz}) must be at least fps ({fps})")
    rng = _check_rng(rng)
    if realism is not None and not isinstance(realism, DriveRealism):
        raise ConfigError(f"realism must be a DriveRealism or None, got {type(realism).__name__}")
    noise = odom_noise or OdomNoise()
    intr = intr or CameraIntrinsics.from_fov(640, 480, 90.0)
    dt = 1.0 / float(odom_hz)
    st = _drive_states(world, duration_s, speed_mps, rng, dt, region, kidnap_at_s)
    odom = odometry_from_truth(st["t"], st["v"], st["yaw_rate"], noise, rng)
    scene = StreetScene.from_world(world, season=season, appearance_seed=int(rng.integers(1 << 31)))
    grade, camber = 0.0, 0.0  # a flat road
    if realism is not None:
        from .realism import apply_sensor, random_sensor

        rrng = np.random.default_rng(int(rng.integers(1 << 31)))  # drawn last: the drive itself is unchanged
        pitch, roll = _body_attitude(st["t"], st["v"], realism, rrng)
        height = GroundPose(0.0, 0.0, 0.0).height_m + realism.height_offset_m
        # the odometry reports the body's attitude against gravity (IMU), not the camera's mounting offset: on a hill
        # the grade and the camber add to what the body does on the road (drawn from a child stream of rrng only when
        # asked for, so a flat drive's frames and attitude are those of the same seed before hills existed)
        grade = _road_grade(st["t"], st["v"], realism, rrng.spawn(1)[0]) if realism.grade_std_deg > 0 else 0.0
        camber = float(realism.camber_deg)
        odom = _with_attitude(odom, pitch - realism.pitch_offset_deg + grade, roll + camber, noise,
                              np.random.default_rng(int(rng.integers(1 << 31))))
    n_frames = int(math.floor(float(duration_s) * fps + 1e-9)) + 1
    kid = int(st["kidnap_step"])
    frames: list[DriveFrame] = []
    seen_kidnap = False
    steps = range(n_frames)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"render {modality} drive", unit="frame")
    for k in steps:
        i = min(int(round(k / fps / dt)), len(st["t"]) - 1)
        pose = GroundPose(float(st["x"][i]), float(st["y"][i]), float(st["heading_deg"][i]))
        if realism is not None:
            pose = GroundPose(pose.x, pose.y, pose.heading_deg, height, float(pitch[i]), float(roll[i]))
        if modality == "ground":
            img = render_ground(scene, pose, intr)
        else:
            img = render_panorama(scene, pose, width=int(pano_size[0]), height=int(pano_size[1]))
        if realism is not None:
            img = _occlude(img, realism.occluders, rrng) if realism.occluders > 0 else img
            img = apply_sensor(img, random_sensor(rrng, realism.sensor), rrng)
        lat, lon = pose_latlon(world, pose)
        kidnapped = kid >= 0 and i >= kid and not seen_kidnap
        seen_kidnap |= kidnapped
        frames.append(DriveFrame(float(st["t"][i]), img, pose, float(lat), float(lon), bool(kidnapped),
                                 float(np.broadcast_to(grade, st["t"].shape)[i]), camber))
    return frames, odom
