"""Harder simulated UAV flights: frames that fail the way real ones do.

The plain simulator (:mod:`.camera_sim`) re-projects the reference map's own pixels onto a flat ground from
near-nadir poses. Real frames differ from the reference in four ways, each modelled here with exact ground
truth:

- **Oblique views** (:func:`oblique_poses`): off-nadir angles up to ``max_off_nadir_deg`` (45 deg by default)
  in a random direction per frame.
- **Parallax** (:class:`HeightScene`, :func:`render_parallax`): on a procedural world the camera sees the
  world's height layer: each pixel ray is marched through the band [0, max height] of the height field, so
  roofs and tree crowns stand up (displaced away from the nadir point by ``h * tan(off-nadir)``), facades
  become visible and hide what lies behind them.
- **A reference from another source** (:func:`other_source_map`): the map the index is built from is shifted
  by a known misregistration (metres east / north) and has another colour, contrast and texture (coarser
  resampling, low-frequency brightness patches). On a procedural world the reference is another season
  (``World.variant``).
- **Sensor effects** (:class:`SensorEffects`, :func:`apply_sensor`): linear motion blur, defocus (disk),
  over/under exposure in linear light (highlights clip, shadows crush), noise and JPEG (the last two through
  :func:`.camera_sim.apply_photometric`).

:class:`HardSpec` bundles them; :func:`simulate_hard_to_folder` writes a flight folder (as ``gleam simulate``
does, with the hard settings and the reference shift recorded in ``camera.json``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import affine
import cv2
import numpy as np

from .. import geo
from ..camera import CameraIntrinsics
from ..errors import ConfigError, InputError
from ..maps import _remap_points
from .camera_sim import Photometric, Pose, SimFrame, _check_intr, _check_rgb, apply_photometric, render_view

_MAX_RANGE_FACTOR = 20.0  # as camera_sim: rays landing farther than this many altitudes away are invalid
_FACADE_SHADE = 0.55  # sides without facade colours (tree crowns): the column's top-down colour, darkened


def _finite(name: str, v: object, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    v = float(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{name} must be within [{lo}, {hi}], got {v}")
    return v


# ------------------------------------------------------------------------------------------ oblique views


def off_nadir_deg(pose: Pose) -> float:
    """Angle between the camera's optical axis and straight down, degrees (:func:`gleam_ros.core.oblique.off_nadir_deg`)."""
    from ..oblique import off_nadir_deg as tilt

    return tilt(pose.pitch_deg, pose.roll_deg)


def oblique_poses(poses: list[Pose], max_off_nadir_deg: float = 45.0, seed: int = 0,
                  min_off_nadir_deg: float = 0.0) -> list[Pose]:
    """The same poses with oblique attitudes: off-nadir angle uniform in [min, max], direction uniform.

    Pitch and roll are ``theta * cos(phi)`` and ``theta * sin(phi)``, scaled down where needed so that the
    optical axis is never more than ``max_off_nadir_deg`` from straight down (:func:`off_nadir_deg`).
    """
    hi = _finite("max_off_nadir_deg", max_off_nadir_deg, 0.0, 60.0)
    lo = _finite("min_off_nadir_deg", min_off_nadir_deg, 0.0, hi)
    rng = np.random.default_rng(seed)
    theta = rng.uniform(lo, hi, len(poses))
    phi = rng.uniform(0.0, 2.0 * math.pi, len(poses))
    out = []
    for p, th, ph in zip(poses, theta, phi):
        q = replace(p, pitch_deg=float(th * math.cos(ph)), roll_deg=float(th * math.sin(ph)))
        k = off_nadir_deg(q)
        if k > hi > 0:
            s = hi / k
            q = replace(q, pitch_deg=q.pitch_deg * s, roll_deg=q.roll_deg * s)
        out.append(q)
    return out


# ---------------------------------------------------------------------------------------------- parallax


@dataclass(frozen=True)
class HeightScene:
    """A top-down colour image with a height field on one north-up grid (a true orthophoto + nDSM).

    ``rgb`` (H, W, 3) uint8; ``height`` (H, W) metres above the flat ground (0 = ground); ``crs`` a projected
    metric CRS and ``transform`` the GDAL affine of pixel corners (as :class:`.world.World`). ``street``
    (optional): the :class:`.street.StreetScene` of the same grid, whose facade colours (storeys, windows,
    sun shading) building walls take; without it, and for tree crowns, a side shows its column's top-down
    colour in shade.
    """

    rgb: np.ndarray
    height: np.ndarray
    crs: object
    transform: affine.Affine
    street: object | None = None

    def __post_init__(self) -> None:
        rgb = _check_rgb(self.rgb)
        h = np.asarray(self.height)
        if h.shape != rgb.shape[:2]:
            raise InputError(f"HeightScene height is {h.shape}, rgb is {rgb.shape[:2]}: they must share one grid")
        if not np.isfinite(h).all() or (h < 0).any():
            raise InputError("HeightScene height must be finite and >= 0 (metres above the ground)")
        t = self.transform if isinstance(self.transform, affine.Affine) else affine.Affine(*self.transform)
        if abs(t.b) > 1e-12 or abs(t.d) > 1e-12 or t.a <= 0 or t.e >= 0:
            raise ConfigError(f"HeightScene transform must be north-up (no rotation), got {t}")
        object.__setattr__(self, "transform", t)
        object.__setattr__(self, "crs", geo.parse_crs(self.crs, "HeightScene CRS"))
        object.__setattr__(self, "height", h.astype(np.float32, copy=False))
        if self.street is not None and np.shape(self.street.building_id) != h.shape:
            raise InputError(f"HeightScene street scene grid is {np.shape(self.street.building_id)}, height is {h.shape}")

    @classmethod
    def from_world(cls, world, season: str | None = None, seed: int | None = None) -> HeightScene:
        """The world in ``season`` / appearance ``seed`` (default: its own): the street renderer's scene
        (:meth:`.street.StreetScene.from_world`: the season's top-down colours, heights, facade colours)."""
        from .street import StreetScene

        st = StreetScene.from_world(world, season=season, appearance_seed=seed)
        return cls(st.top_rgb, st.height, st.crs, st.transform, st)

    @property
    def gsd_m(self) -> float:
        """Grid pixel size, metres."""
        return float(math.sqrt(self.transform.a * -self.transform.e))

    def geomap(self, name: str = "height_scene"):
        """The colour image as a flat :class:`gleam_ros.core.maps.GeoMap` (what a flat renderer would see)."""
        from ..maps import map_from_array

        return map_from_array(self.rgb, self.crs, self.transform, name=name)


def _enu_to_grid(scene: HeightScene, lat: float, lon: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera position in the scene grid (metres) and the 2x2 Jacobian ENU metres -> grid metres there."""
    frame = geo.LocalFrame(lat, lon, 0.0)
    la, lo, _ = frame.to_geodetic(np.array([0.0, 10.0, 0.0]), np.array([0.0, 0.0, 10.0]), 0.0)
    x, y = geo.transform(lo, la, geo.WGS84, scene.crs)
    jac = np.array([[x[1] - x[0], x[2] - x[0]], [y[1] - y[0], y[2] - y[0]]]) / 10.0
    return np.array([x[0], y[0]]), jac


def render_parallax(scene: HeightScene, pose: Pose, intr: CameraIntrinsics, step_px: float = 0.5,
                    vertical_step_m: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Render what the camera at ``pose`` sees of a scene with heights (ray march through the height field).

    Each pixel ray (camera conventions of :mod:`gleam_ros.core.camera`) is marched from where it crosses the
    scene's maximum height down to the ground, in steps of at most ``step_px`` grid pixels horizontally and
    ``vertical_step_m`` vertically; the first sample at or below the surface is the hit. A hit entered
    through the side of a column (the height jumps by more than the vertical step) is a facade: the column's
    top-down colour darkened, with darker window bands every storey. Everything else takes the top-down
    colour at the hit point (roofs at their true footprint, like a true orthophoto). Returns ``rgb`` and
    ``valid`` like :func:`.camera_sim.render_view` (invalid: above the horizon, beyond 20 altitudes, off the
    scene grid).
    """
    intr = _check_intr(intr)
    if not isinstance(scene, HeightScene):
        raise ConfigError(f"render_parallax needs a HeightScene, got {type(scene).__name__}")
    step_px = _finite("step_px", step_px, 0.05, 4.0)
    vstep = _finite("vertical_step_m", vertical_step_m, 0.01, 5.0)
    gsd = scene.gsd_m
    hmap = scene.height
    hmax = float(hmap.max()) + 1e-3
    ny, nx = hmap.shape
    inv = ~scene.transform
    cam_xy, jac = _enu_to_grid(scene, pose.lat, pose.lon)
    alt = float(pose.alt_m)

    u, v = np.meshgrid(np.arange(intr.width, dtype=np.float64), np.arange(intr.height, dtype=np.float64))
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1) @ pose.camera_rotation().T
    rays = rays.reshape(-1, 3)
    dz = rays[:, 2]
    ok = dz < -1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        s_bot = np.where(ok, alt / -dz, 0.0)
    hd = np.hypot(rays[:, 0], rays[:, 1])
    ok &= s_bot * hd < _MAX_RANGE_FACTOR * alt
    # ray direction in grid metres per unit s, and as grid pixels
    gxy = rays[:, :2] @ jac.T
    col0 = inv.a * cam_xy[0] + inv.b * cam_xy[1] + inv.c
    row0 = inv.d * cam_xy[0] + inv.e * cam_xy[1] + inv.f
    dcol, drow = gxy[:, 0] * inv.a, gxy[:, 1] * inv.e  # grid pixels per unit s (north-up grid)
    s_top = np.where(ok, np.maximum(alt - hmax, 0.0) / np.maximum(-dz, 1e-12), 0.0)
    ds = np.minimum(step_px * gsd / np.maximum(hd, 1e-12), vstep / np.maximum(-dz, 1e-12))
    nsteps = np.where(ok, np.ceil((s_bot - s_top) / ds).astype(np.int64) + 1, 0)
    ds = np.where(nsteps > 1, (s_bot - s_top) / np.maximum(nsteps - 1, 1), 0.0)

    n = len(dz)
    hit_s = np.full(n, np.nan)
    facade = np.zeros(n, bool)
    active = np.flatnonzero(ok)
    prev_h = np.zeros(n, np.float32)
    prev_d = np.full(n, np.inf)  # z - h at the previous sample
    k = 0
    while active.size:
        s = s_top[active] + ds[active] * k
        z = alt + s * dz[active]
        c = np.clip((col0 + s * dcol[active]).astype(np.int64), 0, nx - 1)
        r = np.clip((row0 + s * drow[active]).astype(np.int64), 0, ny - 1)
        h = hmap[r, c]
        d = z - h
        hit = (d <= 0.0) | (k >= nsteps[active] - 1)
        if hit.any():
            a = active[hit]
            dp, dh = prev_d[a], d[hit]
            # fractional position of the surface crossing between the previous and this sample
            frac = np.where(np.isfinite(dp) & (dp > dh), dp / np.maximum(dp - dh, 1e-9), 1.0)
            is_wall = (h[hit] - prev_h[a]) > np.maximum(vstep, 0.5)
            frac = np.where(is_wall, 1.0, np.clip(frac, 0.0, 1.0))
            hit_s[a] = s[hit] - ds[a] * (1.0 - frac) * (k > 0)
            facade[a] = is_wall & (k > 0)
        prev_h[active] = h
        prev_d[active] = d
        active = active[~hit]
        k += 1

    good = ok & np.isfinite(hit_s)
    s = np.where(good, hit_s, 0.0)
    cols = col0 + s * dcol - 0.5
    rows = row0 + s * drow - 0.5
    zhit = alt + s * dz
    good &= (cols >= -0.5) & (cols <= nx - 0.5) & (rows >= -0.5) & (rows <= ny - 0.5)
    # anti-aliasing: pick a pyramid level no finer than the pixel's ground footprint
    rng_m = s * np.linalg.norm(rays, axis=1)
    foot = rng_m / math.sqrt(intr.fx * intr.fy) / np.maximum(-dz / np.maximum(np.linalg.norm(rays, axis=1), 1e-12), 0.2)
    level = np.clip(np.floor(np.log2(np.maximum(foot / gsd, 1.0))), 0, 3).astype(np.int64)
    out = np.zeros((n, 3), np.float32)
    img = scene.rgb
    for lv in range(4):
        sel = good & (level == lv)
        if not sel.any():
            if lv > 0:
                img = cv2.pyrDown(img)
            continue
        f = 2.0 ** lv
        vals, _ = _remap_points(img, np.ones(img.shape[:2], np.float32), (cols[sel] + 0.5) / f - 0.5,
                                (rows[sel] + 0.5) / f - 0.5)
        out[sel] = vals
        img = cv2.pyrDown(img)
    out[facade] *= _FACADE_SHADE
    if scene.street is not None and facade.any():
        from .street import facade_colour  # one definition of facade colours: the street-level renderer's

        fi = np.flatnonzero(facade)
        ci = np.clip(np.floor(cols[fi] + 0.5).astype(np.int64), 0, nx - 1)
        ri = np.clip(np.floor(rows[fi] + 0.5).astype(np.int64), 0, ny - 1)
        bid = np.asarray(scene.street.building_id)[ri, ci]
        wall = bid > 0
        if wall.any():
            t = scene.transform
            x = t.c + (cols[fi][wall] + 0.5) * t.a
            y = t.f + (rows[fi][wall] + 0.5) * t.e
            col = facade_colour(scene.street, bid[wall], x, y, zhit[fi][wall], hmap[ri[wall], ci[wall]].astype(np.float64))
            out[fi[wall]] = np.asarray(col, np.float32) * np.float32(255.0)
    out[~good] = 0.0
    rgb = np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(intr.height, intr.width, 3)
    return rgb, good.reshape(intr.height, intr.width)


def project_enu(pose: Pose, intr: CameraIntrinsics, east, north, up) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (u, v) of points given in the local ENU frame under the camera (ground at up = 0)."""
    p = np.stack([np.asarray(east, float), np.asarray(north, float), np.asarray(up, float) - pose.alt_m], -1)
    c = p @ pose.camera_rotation()  # ENU -> optical frame (rotation transpose)
    return intr.fx * c[..., 0] / c[..., 2] + intr.cx, intr.fy * c[..., 1] / c[..., 2] + intr.cy


# ------------------------------------------------------------------------------------ reference from elsewhere


def _shifted_transform(src, lat: float, lon: float, shift_e_m: float, shift_n_m: float) -> affine.Affine:
    la2, lo2 = geo.offset_latlon(lat, lon, shift_e_m, shift_n_m)
    x, y = geo.transform(np.array([lon, lo2]), np.array([lat, la2]), geo.WGS84, src.crs)
    return affine.Affine.translation(float(x[1] - x[0]), float(y[1] - y[0])) @ src.transform


def change_texture(rgb: np.ndarray, resample: float = 2.0, patch_amp: float = 0.12, patch_px: float = 200.0,
                   seed: int = 0) -> np.ndarray:
    """Another source's texture: resampled through a ``resample`` times coarser grid (lost fine detail) and
    multiplied by smooth brightness patches of relative amplitude ``patch_amp`` and ``patch_px`` size."""
    a = _check_rgb(rgb)
    resample = _finite("resample", resample, 1.0, 8.0)
    patch_amp = _finite("patch_amp", patch_amp, 0.0, 0.9)
    patch_px = _finite("patch_px", patch_px, 4.0, 1e6)
    h, w = a.shape[:2]
    out = a.astype(np.float32)
    if resample > 1.0:
        small = cv2.resize(out, (max(1, round(w / resample)), max(1, round(h / resample))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    if patch_amp > 0:
        rng = np.random.default_rng(seed)
        g = rng.uniform(-1.0, 1.0, (max(2, math.ceil(h / patch_px) + 1), max(2, math.ceil(w / patch_px) + 1)))
        field = cv2.resize(g.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        out *= (1.0 + patch_amp * field)[:, :, None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def other_source_map(geomap, shift_e_m: float = 2.0, shift_n_m: float = -1.5,
                     photometric: Photometric | None = None, resample: float = 2.0, patch_amp: float = 0.12,
                     seed: int = 0, name: str | None = None):
    """The same place as ``geomap`` as if from another imagery source: misregistered and re-coloured.

    Every source image is moved by (``shift_e_m``, ``shift_n_m``) metres (so the map's content appears that
    far east / north of where it really is: a fix made against it is off by that shift), re-coloured with
    ``photometric`` (default: a moderate colour, contrast and gamma change) and re-textured with
    :func:`change_texture`. Holes stay holes. Returns an in-memory :class:`gleam_ros.core.maps.GeoMap`.
    """
    from ..maps import MEMORY_PATH, GeoMap, RasterSource

    se = _finite("shift_e_m", shift_e_m, -100.0, 100.0)
    sn = _finite("shift_n_m", shift_n_m, -100.0, 100.0)
    p = Photometric(brightness=0.04, contrast=0.85, hue_shift_deg=6.0, saturation=0.8, gamma=1.15) \
        if photometric is None else photometric
    lat, lon = geomap.center_latlon()
    srcs = []
    for i, s in enumerate(geomap.sources):
        rgb, valid = s.load()
        new = change_texture(apply_photometric(rgb, p), resample, patch_amp, seed=seed + i)
        new[~valid] = 0
        ns = RasterSource(MEMORY_PATH, s.crs, _shifted_transform(s, lat, lon, se, sn), s.width, s.height,
                          kind="memory", name=f"{s.name}_other")
        ns._rgb, ns._valid = new, valid.copy()
        srcs.append(ns)
    return GeoMap(name or f"{geomap.name}_other_source", srcs, working_crs=geomap.working_crs)


# ------------------------------------------------------------------------------------------ sensor effects


@dataclass(frozen=True)
class SensorEffects:
    """What the camera does to a frame, applied in this order by :func:`apply_sensor`:

    ``exposure_ev`` (gain of 2**ev on linear light, sRGB-like gamma 2.2; over-exposure clips highlights,
    under-exposure crushes shadows), ``motion_blur_px`` (length of a linear blur along ``motion_angle_deg``,
    image x axis = 0, clockwise), ``defocus_px`` (radius of a disk blur), then ``noise_std`` (grey levels)
    and ``jpeg_quality`` through :func:`.camera_sim.apply_photometric`. The default is the identity.
    """

    exposure_ev: float = 0.0
    motion_blur_px: float = 0.0
    motion_angle_deg: float = 0.0
    defocus_px: float = 0.0
    noise_std: float = 0.0
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "jpeg_quality":
                continue
            _finite(f"SensorEffects.{f.name}", getattr(self, f.name))
        _finite("SensorEffects.exposure_ev", self.exposure_ev, -4.0, 4.0)
        _finite("SensorEffects.motion_blur_px", self.motion_blur_px, 0.0, 100.0)
        _finite("SensorEffects.defocus_px", self.defocus_px, 0.0, 50.0)
        _finite("SensorEffects.noise_std", self.noise_std, 0.0, 100.0)
        if self.jpeg_quality is not None:
            Photometric(jpeg_quality=self.jpeg_quality)  # same validation


def random_sensor(rng: np.random.Generator, strength: float = 1.0) -> SensorEffects:
    """A random :class:`SensorEffects`; ``strength`` 1: exposure +-1 EV, motion blur up to 6 px, defocus up
    to 2 px (a third of the frames each), noise up to 6 grey levels, JPEG quality 40..90. Always draws the
    same number of random numbers."""
    s = _finite("sensor strength", strength, 0.0, 3.0)
    d = rng.uniform(0.0, 1.0, 8)
    if s == 0.0:
        return SensorEffects()
    return SensorEffects(
        exposure_ev=float((2.0 * d[0] - 1.0) * s),
        motion_blur_px=float(6.0 * s * d[1]) if d[2] < 1 / 3 else 0.0,
        motion_angle_deg=float(360.0 * d[3]),
        defocus_px=float(2.0 * s * d[4]) if d[5] < 1 / 3 else 0.0,
        noise_std=float(6.0 * s * d[6]),
        jpeg_quality=int(np.clip(round(90 - 50 * d[7] * min(s, 1.5)), 10, 95)),
    )


def _motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    n = int(math.ceil(length)) | 1
    k = np.zeros((n, n), np.float32)
    c = (n - 1) / 2.0
    a = math.radians(angle_deg)
    for t in np.linspace(-length / 2.0, length / 2.0, max(2, 4 * n)):
        x, y = c + t * math.cos(a), c + t * math.sin(a)
        k[int(round(y)), int(round(x))] += 1.0
    return k / k.sum()


def _disk_kernel(radius: float) -> np.ndarray:
    r = int(math.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    k = (np.hypot(xx, yy) <= radius + 0.5).astype(np.float32)
    return k / k.sum()


def apply_sensor(rgb: np.ndarray, eff: SensorEffects, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply ``eff`` to an (H, W, 3) uint8 RGB frame; returns a new image (the identity returns a copy)."""
    a = _check_rgb(rgb)
    if not isinstance(eff, SensorEffects):
        raise ConfigError(f"expected SensorEffects, got {type(eff).__name__}")
    x = a.astype(np.float32) / np.float32(255.0)
    if eff.exposure_ev != 0.0:
        lin = np.power(x, np.float32(2.2)) * np.float32(2.0 ** eff.exposure_ev)
        x = np.power(np.clip(lin, 0.0, 1.0), np.float32(1.0 / 2.2))
        x = np.round(x * 255.0) / 255.0  # quantise: crushed shadows lose their texture for good
    if eff.motion_blur_px >= 1.0:
        x = cv2.filter2D(x, -1, _motion_kernel(eff.motion_blur_px, eff.motion_angle_deg), borderType=cv2.BORDER_REFLECT)
    if eff.defocus_px >= 0.5:
        x = cv2.filter2D(x, -1, _disk_kernel(eff.defocus_px), borderType=cv2.BORDER_REFLECT)
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    tail = Photometric(noise_std=eff.noise_std, jpeg_quality=eff.jpeg_quality)
    return apply_photometric(out, tail, rng)


# ------------------------------------------------------------------------------------------- hard flights


@dataclass(frozen=True)
class HardSpec:
    """What makes a simulated flight hard (see the module docstring).

    ``max_off_nadir_deg``: oblique views, off-nadir angle uniform in [0, max]. ``sensor``: strength of
    :func:`random_sensor` (0 = none). ``shift_e_m`` / ``shift_n_m``: misregistration of the reference built
    by :func:`other_source_map` for real maps (metres; the known offset of every fix against that
    reference). ``ref_change``: 0 keeps the reference's colours and texture, 1 the default other-source
    change. ``parallax``: on a procedural world, render with heights (:func:`render_parallax`).
    ``ref_season``: the season of the procedural world's reference (the flight keeps the bench's season).
    """

    max_off_nadir_deg: float = 45.0
    sensor: float = 1.0
    shift_e_m: float = 2.0
    shift_n_m: float = -1.5
    ref_change: float = 1.0
    parallax: bool = True
    ref_season: str = "summer"

    def __post_init__(self) -> None:
        _finite("HardSpec.max_off_nadir_deg", self.max_off_nadir_deg, 0.0, 60.0)
        _finite("HardSpec.sensor", self.sensor, 0.0, 3.0)
        _finite("HardSpec.shift_e_m", self.shift_e_m, -100.0, 100.0)
        _finite("HardSpec.shift_n_m", self.shift_n_m, -100.0, 100.0)
        _finite("HardSpec.ref_change", self.ref_change, 0.0, 3.0)

    def reference_map(self, geomap, seed: int = 0):
        """The other-source reference of a real map (shifted, re-coloured, re-textured)."""
        s = self.ref_change
        p = Photometric(brightness=0.04 * s, contrast=0.85 ** s, hue_shift_deg=6.0 * s, saturation=0.8 ** s,
                        gamma=1.15 ** s)
        return other_source_map(geomap, self.shift_e_m, self.shift_n_m, p, resample=1.0 + s, patch_amp=0.12 * s,
                                seed=seed)


def hard_frames(geomap, poses: list[Pose], intr: CameraIntrinsics, hard: HardSpec, photometric: float = 1.0,
                seed: int = 0, scene: HeightScene | None = None):
    """Render hard frames: oblique ``poses`` (already drawn), over ``scene`` with parallax when given and
    ``hard.parallax``, else flat over ``geomap``; then photometric change and sensor effects, seeded per
    frame by (``seed``, index). Yields :class:`.camera_sim.SimFrame`."""
    from .camera_sim import random_photometric

    for i, pose in enumerate(poses):
        if scene is not None and hard.parallax:
            rgb, valid = render_parallax(scene, pose, intr)
        else:
            rgb, valid = render_view(geomap, pose, intr)
        rng = np.random.default_rng([int(seed), i, 13])
        img = apply_photometric(rgb, random_photometric(rng, photometric), rng)
        img[~valid] = 0
        img = apply_sensor(img, random_sensor(rng, hard.sensor), rng)
        yield SimFrame(pose, img, float(valid.mean()))


def simulate_hard_to_folder(geomap, spec, out_dir: str | Path, hard: HardSpec | None = None,
                            scene: HeightScene | None = None, progress: bool = True) -> Path:
    """Render a hard flight (:class:`HardSpec`) over ``geomap`` into a flight folder (as ``gleam simulate``).

    ``spec`` is a :class:`gleam_ros.core.flight.FlightSpec` (path, altitude, camera, photometric change, seed);
    its tilt settings are replaced by :func:`oblique_poses`. With ``scene`` (a procedural world's heights and
    colours on the flight map's grid) frames show parallax. ``camera.json`` records the hard settings
    (``hard``), including the reference shift the index map was built with.
    """
    from ..flight import make_poses, simulate_to_folder

    hard = HardSpec() if hard is None else hard
    poses = oblique_poses(make_poses(geomap, spec), hard.max_off_nadir_deg, seed=spec.seed + 101)
    frames = hard_frames(geomap, poses, spec.intrinsics(), hard, spec.photometric, spec.seed, scene)
    return simulate_to_folder(geomap, spec, out_dir, progress=progress, frames=frames, poses=poses,
                              extra_meta={"hard": {**asdict(hard), "parallax": bool(hard.parallax and scene is not None)}})


__all__ = ["HardSpec", "HeightScene", "SensorEffects", "apply_sensor", "change_texture", "hard_frames",
           "oblique_poses", "off_nadir_deg", "other_source_map", "project_enu", "random_sensor", "render_parallax",
           "simulate_hard_to_folder"]
