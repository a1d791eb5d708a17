"""Seeded procedural world: a synthetic, georeferenced place rendered as a "satellite" image and a street map.

This is the project's own test and demo data. :func:`make_world` builds, from one :class:`WorldConfig`, a
*layout* (roads with markings, residential grid, buildings with gabled/hipped/flat roofs, fields with crop
rows and tramlines, forest stands made of individual tree crowns, a river, a lake with a shore, meadows)
and renders it:

- ``World.satellite``: an orthophoto-like RGB image with season-dependent colours, sun shading of roofs and
  crowns and cast shadows (direction from the sun azimuth, length from object height and sun elevation);
- ``World.street_map``: an OpenStreetMap-carto-like render of the same layout (same georeferencing, so roads,
  buildings and water coincide pixel for pixel with the satellite render);
- ``World.layers``: the semantic rasters the renders were made from (see :data:`LAYER_DOC`).

``World.variant`` re-renders the *same* layout in another season, sun position or appearance seed (crop
rotation and texture noise change; roads, buildings and trees stay put), which is what seasonal/lighting
robustness tests need.

Geometry is drawn in pixel coordinates of a north-up grid in the UTM zone of the world centre; the GDAL
affine ``World.transform`` maps pixel corners (col, row) to UTM metres. Everything is vectorised numpy/OpenCV
(no per-pixel Python loops); an 800 m world at 0.3 m/px (2667 px square) takes a few seconds on one core.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import affine
import cv2
import numpy as np
import pyproj

from .. import geo
from ..errors import ConfigError

SEASONS = ("summer", "autumn", "winter", "spring")

#: Semantic class ids of ``World.layers["label"]``.
CLASSES: dict[str, int] = {"road": 1, "building": 2, "field": 3, "forest": 4, "water": 5, "grass": 6}

#: What each entry of ``World.layers`` holds.
LAYER_DOC: dict[str, str] = {
    "label": "uint8 semantic class id per pixel (see CLASSES); every pixel has a class",
    "height": "float32 height of buildings / tree crowns above the (flat) ground, metres (0 = ground)",
    "road_kind": "uint8: 0 none, 1 arterial, 2 residential street, 3 farm track, 4 parking lot, 5 farm yard",
    "marking": "bool: painted road / parking markings",
    "building_id": "int32: 0 none, k = k-th building (1-based)",
    "tree_id": "int32: 0 none, k = k-th tree crown (1-based) seen from above",
    "water_kind": "uint8: 0 none, 1 river, 2 lake",
    "parcel_id": "int32: land parcel (field / meadow / forest stand / urban block) of the pixel, 0 none",
}

_MAX_SIDE_PX = 10000  # ~40 bytes/px of rasters are kept: 10000 px square is ~4 GB
_SHIFT = 4  # fixed-point bits for cv2 drawing
_ONE = 1 << _SHIFT

# Surface codes of the internal "surface" raster (what the ground is made of before canopy/roofs).
_S_MEADOW, _S_FIELD, _S_FOREST, _S_LAWN, _S_SHORE, _S_WATER = 0, 1, 2, 3, 4, 5
_S_ARTERIAL, _S_STREET, _S_TRACK, _S_PAVED, _S_YARD, _S_ROOF = 6, 7, 8, 9, 10, 11
_N_SURF = 12

# Detail codes.
_D_MARK, _D_RUT, _D_ROOFTOP, _D_PARKMARK, _D_POOL = 1, 2, 3, 4, 5

# Parcel classes.
_P_FIELD, _P_MEADOW, _P_FOREST, _P_URBAN = 0, 1, 2, 3

# Building kinds.
_B_HOUSE, _B_SHED, _B_APARTMENT, _B_COMMERCIAL, _B_BARN = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of a procedural world (all lengths in metres, angles in degrees).

    ``seed`` fixes the layout and the default appearance; ``size_m`` is the side of the square world centred
    on (``origin_lat``, ``origin_lon``); ``gsd_m`` its pixel size (at most 10000 px per side; a world keeps
    about 40 bytes per pixel of rasters). ``season`` is one of :data:`SEASONS`; the sun azimuth is clockwise
    from north, its elevation above the horizon (5..90 deg). Worlds of at least ~300 m contain every class.
    """

    seed: int = 0
    size_m: float = 800.0
    gsd_m: float = 0.3
    origin_lat: float = 60.45
    origin_lon: float = 22.30
    season: str = "summer"
    sun_azimuth_deg: float = 135.0
    sun_elevation_deg: float = 40.0

    def __post_init__(self) -> None:
        if not (isinstance(self.seed, (int, np.integer)) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise ConfigError(f"WorldConfig.seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.gsd_m) and 0.05 <= self.gsd_m <= 10.0):
            raise ConfigError(f"WorldConfig.gsd_m must be within [0.05, 10] m, got {self.gsd_m}")
        if not (math.isfinite(self.size_m) and self.size_m >= 100.0):
            raise ConfigError(f"WorldConfig.size_m must be at least 100 m, got {self.size_m}")
        n = int(round(self.size_m / self.gsd_m))
        if not 64 <= n <= _MAX_SIDE_PX:
            raise ConfigError(
                f"WorldConfig: size_m/gsd_m = {n} px per side, must be within [64, {_MAX_SIDE_PX}] "
                f"(size_m={self.size_m}, gsd_m={self.gsd_m})"
            )
        if not (-80.0 <= self.origin_lat <= 84.0 and -180.0 <= self.origin_lon <= 180.0):
            raise ConfigError(f"WorldConfig origin out of the UTM range: ({self.origin_lat}, {self.origin_lon})")
        _check_season(self.season)
        _check_sun(self.sun_azimuth_deg, self.sun_elevation_deg)


def _check_season(season: str) -> None:
    if season not in SEASONS:
        raise ConfigError(f"season must be one of {SEASONS}, got {season!r}")


def _check_sun(az: float, el: float) -> None:
    if not math.isfinite(az):
        raise ConfigError(f"sun_azimuth_deg must be finite, got {az}")
    if not (math.isfinite(el) and 5.0 <= el <= 90.0):
        raise ConfigError(f"sun_elevation_deg must be within [5, 90], got {el}")


# ----------------------------------------------------------------------------------------------- helpers


def _rng(seed: int, *tags: int) -> np.random.Generator:
    """Independent random stream per (seed, component) so that components do not perturb each other."""
    return np.random.default_rng([int(seed), *tags])


def _noise(rng: np.random.Generator, h: int, w: int, cell_px: float) -> np.ndarray:
    """Smooth value noise (bicubic-interpolated random grid), float32, about zero mean and unit std."""
    cell = max(float(cell_px), 1.0)
    gh, gw = int(math.ceil(h / cell)) + 3, int(math.ceil(w / cell)) + 3
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    if cell <= 1.0:
        return np.ascontiguousarray(g[:h, :w])
    big = cv2.resize(g, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, big.shape[0] - h)))
    ox = int(rng.integers(0, max(1, big.shape[1] - w)))
    out = big[oy:oy + h, ox:ox + w]
    sub = out[:: max(1, h // 97), :: max(1, w // 97)]
    return np.ascontiguousarray((out - np.float32(sub.mean())) / np.float32(max(float(sub.std()), 1e-3)))


def _fbm(rng: np.random.Generator, h: int, w: int, cells_px: list[float], gains: list[float]) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for c, g in zip(cells_px, gains):
        out += np.float32(g) * _noise(rng, h, w, c)
    return out / np.float32(math.sqrt(sum(g * g for g in gains)))


def _fx(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates (k, 2) -> fixed-point int32 (k, 1, 2) for cv2 drawing with ``shift``."""
    return np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _polylines(img: np.ndarray, lines: list[np.ndarray], value, thickness_px: float) -> None:
    lines = [ln for ln in lines if len(ln) >= 2]
    if lines:
        cv2.polylines(img, [_fx(ln) for ln in lines], False, value, max(1, int(round(thickness_px))),
                      cv2.LINE_8, _SHIFT)


def _fill(img: np.ndarray, poly: np.ndarray, value) -> None:
    cv2.fillPoly(img, [_fx(poly)], value, cv2.LINE_8, _SHIFT)


def _wobbly(rng: np.random.Generator, p0: np.ndarray, p1: np.ndarray, step_px: float, amp_px: float,
            waves: tuple[float, float] = (0.5, 2.5), taper: bool = False) -> np.ndarray:
    """Polyline from p0 to p1 with a smooth random lateral meander (sum of three sines)."""
    d = p1 - p0
    length = float(np.hypot(*d))
    n = max(2, int(length / max(step_px, 0.5)) + 1)
    t = np.linspace(0.0, 1.0, n)
    off = np.zeros(n)
    for k in range(3):
        f = rng.uniform(*waves) * (k + 1)
        off += amp_px * rng.uniform(0.4, 1.0) / (k + 1) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    if taper:
        off *= np.sin(np.pi * t) ** 0.5
    u = d / max(length, 1e-9)
    nrm = np.array([-u[1], u[0]])
    return p0 + t[:, None] * d + off[:, None] * nrm


def _runs(keep: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of consecutive True values."""
    k = np.concatenate([[False], keep.astype(bool), [False]])
    edges = np.flatnonzero(k[1:] != k[:-1])
    return list(zip(edges[0::2], edges[1::2]))


def _lookup(mask: np.ndarray, pts: np.ndarray, outside: bool = False) -> np.ndarray:
    """mask[y, x] at float points (nearest pixel); points off the raster give ``outside``."""
    h, w = mask.shape
    xi = np.round(pts[:, 0]).astype(np.int64)
    yi = np.round(pts[:, 1]).astype(np.int64)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    out = np.full(len(pts), outside, dtype=bool)
    out[inside] = mask[yi[inside], xi[inside]].astype(bool)
    return out


def _rect(c: np.ndarray, length: float, width: float, ang: float) -> np.ndarray:
    """Corners (4, 2) of a rectangle centred at c, long side ``length`` along angle ``ang`` (rad, pixel axes)."""
    u = np.array([math.cos(ang), math.sin(ang)])
    v = np.array([-u[1], u[0]])
    hl, hw = length / 2.0, width / 2.0
    return np.array([c + hl * u + hw * v, c - hl * u + hw * v, c - hl * u - hw * v, c + hl * u - hw * v])


def _arc_resample(pts: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample a polyline at constant arc-length ``step``; returns points and their arc lengths."""
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return pts[:1], np.zeros(1)
    q = np.arange(0.0, s[-1], step)
    return np.stack([np.interp(q, s, pts[:, 0]), np.interp(q, s, pts[:, 1])], axis=1), q


def _normals(pts: np.ndarray) -> np.ndarray:
    d = np.gradient(pts, axis=0)
    d /= np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
    return np.stack([-d[:, 1], d[:, 0]], axis=1)


def _dilate(mask: np.ndarray, r_px: float) -> np.ndarray:
    r = int(round(r_px))
    if r <= 0:
        return mask.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def _smooth_mask(mask: np.ndarray, sigma_px: float, jitter: np.ndarray | None = None, amount: float = 0.0
                 ) -> np.ndarray:
    """Blur a binary mask (at reduced resolution for speed), perturb by noise, threshold at 0.5."""
    h, w = mask.shape
    f = max(1, int(sigma_px // 4))
    small = cv2.resize(mask.astype(np.float32), (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma_px / f, 0.5))
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if jitter is not None:
        big += np.float32(amount) * jitter
    return big > 0.5


def _clip_halfplane(poly: np.ndarray, p: np.ndarray, nrm: np.ndarray) -> np.ndarray:
    """Part of a convex polygon with (x - p) . nrm >= 0 (Sutherland-Hodgman, one edge)."""
    d = (poly - p) @ nrm
    out = []
    k = len(poly)
    for i in range(k):
        j = (i + 1) % k
        if d[i] >= 0:
            out.append(poly[i])
        if (d[i] >= 0) != (d[j] >= 0):
            t = d[i] / (d[i] - d[j])
            out.append(poly[i] + t * (poly[j] - poly[i]))
    return np.array(out).reshape(-1, 2)


def _poly_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _split_parcels(rng: np.random.Generator, n: int, theta: float, target_px2: float) -> list[np.ndarray]:
    """Recursively cut the (slightly enlarged) world square into convex parcels of about ``target_px2``.

    Cuts run across the longer extent of a parcel along the dominant directions ``theta`` / ``theta + 90``
    (jittered by a few degrees), which gives the quadrilateral, field-like parcels of agricultural land.
    """
    m = 0.1 * n
    stack = [np.array([[-m, -m], [n + m, -m], [n + m, n + m], [-m, n + m]], float)]
    u = np.array([math.cos(theta), math.sin(theta)])
    v = np.array([-u[1], u[0]])
    leaves = []
    while stack:
        poly = stack.pop()
        if len(poly) < 3:
            continue
        if _poly_area(poly) < target_px2 * math.exp(rng.normal(0.0, 0.5)) or len(leaves) > 5000:
            leaves.append(poly)
            continue
        eu, ev = np.ptp(poly @ u), np.ptp(poly @ v)
        axis = u if eu > ev * rng.uniform(0.6, 1.5) else v
        j = rng.normal(0.0, math.radians(5.0))
        axis = np.array([axis[0] * math.cos(j) - axis[1] * math.sin(j), axis[0] * math.sin(j) + axis[1] * math.cos(j)])
        proj = poly @ axis
        p = axis * (proj.min() + rng.uniform(0.3, 0.7) * np.ptp(proj))
        stack.append(_clip_halfplane(poly, p, axis))
        stack.append(_clip_halfplane(poly, p, -axis))
    return leaves


# ------------------------------------------------------------------------------------------------ layout


@dataclass
class _Buildings:
    kind: list[int] = field(default_factory=list)
    colour: list[tuple[float, float, float]] = field(default_factory=list)
    polys: list[np.ndarray] = field(default_factory=list)


@dataclass
class _Layout:
    """Everything about the place that does not change with season, sun or appearance seed."""

    n: int
    gsd: float
    seed: int
    label: np.ndarray
    height: np.ndarray
    surface: np.ndarray
    detail: np.ndarray
    road_kind: np.ndarray
    building_id: np.ndarray
    tree_id: np.ndarray
    water_kind: np.ndarray
    water_depth: np.ndarray  # metres from the shore, inside water
    parcel: np.ndarray
    parcel_class: np.ndarray  # per parcel id
    parcel_theta: np.ndarray
    parcel_period: np.ndarray
    parcel_tram: np.ndarray
    building_colour: np.ndarray  # (nb + 1, 3)
    building_kind: np.ndarray
    tree_conifer: np.ndarray  # (nt + 1,) bool
    tree_jitter: np.ndarray  # (nt + 1, 3) colour jitter
    buildings: _Buildings


_ROOF_COLOURS = np.array([
    (0.55, 0.24, 0.18), (0.62, 0.30, 0.22), (0.45, 0.22, 0.17),  # red/brown tiles
    (0.30, 0.30, 0.32), (0.20, 0.20, 0.22), (0.55, 0.55, 0.56),  # dark / light grey
    (0.28, 0.40, 0.32), (0.30, 0.36, 0.46), (0.40, 0.32, 0.26),  # green / blue metal, brown
    (0.72, 0.72, 0.70), (0.60, 0.42, 0.30),                      # white membrane, terracotta
], np.float32)


def _make_layout(cfg: WorldConfig) -> _Layout:
    n = int(round(cfg.size_m / cfg.gsd_m))
    gsd = float(cfg.gsd_m)
    S = 1.0 / gsd  # pixels per metre
    seed = int(cfg.seed)
    size_m = n * gsd

    # --- zoning: an urban centre with a noisy boundary
    rz = _rng(seed, 1)
    uc = np.array([rz.uniform(0.3, 0.7) * n, rz.uniform(0.3, 0.7) * n])
    R = rz.uniform(0.17, 0.25) * size_m * S
    ax_ = np.arange(n, dtype=np.float32)
    dist_c = np.hypot(ax_[None, :] - np.float32(uc[0]), ax_[:, None] - np.float32(uc[1]))
    zn = _noise(rz, n, n, 0.5 * R)
    urban = dist_c < np.float32(R) * (1.0 + 0.22 * zn)
    del dist_c
    low = _noise(rz, n, n, 120.0 * S)  # land-use tendency (forest vs meadow)

    # --- arterial centre lines (drawn below; the lake keeps clear of them)
    rr_ = _rng(seed, 3)
    n_art = 2 + int(size_m // 350)
    base_ang = rr_.uniform(0, np.pi)
    arterials = []
    for i in range(n_art):
        a = base_ang + i * np.pi / n_art + rr_.uniform(-0.2, 0.2)
        ua = np.array([math.cos(a), math.sin(a)])
        if i < 2:
            ca = uc + rr_.normal(0, 0.15 * R, 2)
        else:
            ca = np.array([rr_.uniform(0.1, 0.9) * n, rr_.uniform(0.1, 0.9) * n])
        pts = _wobbly(rr_, ca - ua * 1.2 * n, ca + ua * 1.2 * n, 3.0 * S, rr_.uniform(8, 35) * S)
        arterials.append((pts, rr_.uniform(8.0, 12.5) * S))
    art_pts = np.concatenate([a for a, _ in arterials])

    # --- water: a meandering river of varying width and an irregular lake
    rw = _rng(seed, 2)
    water_kind = np.zeros((n, n), np.uint8)
    ang = rw.uniform(0, np.pi)
    u = np.array([math.cos(ang), math.sin(ang)])
    c = np.array([rw.uniform(0.15, 0.85) * n, rw.uniform(0.15, 0.85) * n])
    dcu = float(np.hypot(*(c - uc)))
    if dcu < R:  # keep the river off the town centre
        c = uc + ((c - uc) / dcu if dcu > 1 else np.array([1.0, 0.0])) * (R * 1.1)
    river = _wobbly(rw, c - u * 1.0 * n, c + u * 1.0 * n, 2.0 * S, rw.uniform(15, 45) * S)
    river_w0 = rw.uniform(10.0, 22.0) * S
    wvar = 1.0 + 0.35 * np.sin(np.linspace(0, rw.uniform(2, 6) * np.pi, len(river)) + rw.uniform(0, 6.3))
    for i in range(len(river) - 1):  # per-segment width (a few hundred cheap cv2 calls)
        _polylines(water_kind, [river[i:i + 2]], 1, river_w0 * wvar[i])
    base = rw.uniform(25.0, 0.07 * size_m + 30.0) * S
    th = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    rr = np.ones_like(th)
    for k in range(2, 8):
        rr += rw.uniform(0.05, 0.3) / (k - 1) ** 0.8 * np.cos(k * th + rw.uniform(0, 2 * np.pi))
    rr = np.maximum(rr, 0.35)
    aspect, rot = rw.uniform(0.55, 1.0), rw.uniform(0, np.pi)
    for _ in range(60):
        cand = np.array([rw.uniform(0.1, 0.9) * n, rw.uniform(0.1, 0.9) * n])
        if (np.hypot(*(cand - uc)) > R + base and np.hypot(*(art_pts - cand).T).min() > base * rr.max() + 12 * S
                and np.hypot(*(river - cand).T).min() > base * rr.max() + river_w0):
            lx, ly = base * rr * np.cos(th), base * rr * np.sin(th) * aspect
            poly = np.stack([cand[0] + lx * math.cos(rot) - ly * math.sin(rot),
                             cand[1] + lx * math.sin(rot) + ly * math.cos(rot)], axis=1)
            lake = np.zeros((n, n), np.uint8)
            _fill(lake, poly, 1)
            water_kind[(lake > 0) & (water_kind == 0)] = 2
            break
        base *= 0.97
    water = water_kind > 0
    water_dil = _dilate(water, 3.0 * S)

    # --- roads
    road_kind = np.zeros((n, n), np.uint8)
    detail = np.zeros((n, n), np.uint8)
    marks = np.zeros((n, n), np.uint8)

    # residential grid around the centre, aligned with the first arterial
    a0 = arterials[0][0]
    k0 = int(np.argmin(np.hypot(*(a0 - uc).T)))
    tang = a0[min(k0 + 1, len(a0) - 1)] - a0[max(k0 - 1, 0)]
    theta_g = math.atan2(tang[1], tang[0]) + rr_.uniform(-0.15, 0.15)
    gu = np.array([math.cos(theta_g), math.sin(theta_g)])
    gv = np.array([-gu[1], gu[0]])
    ext = 1.35 * R

    def _grid_positions(lo_m: float, hi_m: float) -> np.ndarray:
        pos = [rr_.uniform(-0.5, 0.5) * lo_m * S]
        while pos[-1] < ext:
            pos.append(pos[-1] + rr_.uniform(lo_m, hi_m) * S)
        p = [pos[0]]
        while p[-1] > -ext:
            p.append(p[-1] - rr_.uniform(lo_m, hi_m) * S)
        return np.array(sorted(set(pos) | set(p)))

    along_b = _grid_positions(45.0, 80.0)  # lines parallel to gu at these v-offsets
    along_a = _grid_positions(60.0, 110.0)  # lines parallel to gv at these u-offsets
    streets: list[tuple[np.ndarray, float]] = []
    street_ok = urban & ~water_dil
    for offs, cross, dirv, offv in ((along_b, along_a, gu, gv), (along_a, along_b, gv, gu)):
        for off in offs:
            p0, p1 = uc + offv * off - dirv * ext, uc + offv * off + dirv * ext
            pts = _wobbly(rr_, p0, p1, 3.0 * S, rr_.uniform(0.0, 3.0) * S)
            tpos = np.linspace(-ext, ext, len(pts))
            block = np.searchsorted(cross, tpos)
            drop = rr_.random(len(cross) + 1) < 0.14
            keep = _lookup(street_ok, pts) & ~drop[block]
            width = rr_.uniform(5.5, 8.0) * S
            for s0, s1 in _runs(keep):
                if s1 - s0 >= 4:
                    streets.append((pts[s0:s1], width))

    # farm tracks leaving the arterials outside the town
    tracks: list[tuple[np.ndarray, float]] = []
    starts: list[np.ndarray] = []
    for _ in range(2 + int(size_m // 200)):
        pts, w = arterials[int(rr_.integers(len(arterials)))]
        on_map = (pts[:, 0] >= 0) & (pts[:, 0] < n) & (pts[:, 1] >= 0) & (pts[:, 1] < n)
        cand = np.flatnonzero(~_lookup(urban, pts, outside=True) & on_map)
        if len(cand) == 0:
            continue
        i = int(cand[rr_.integers(len(cand))])
        nrm = _normals(pts)[i] * (1 if rr_.random() < 0.5 else -1)
        a = math.atan2(nrm[1], nrm[0]) + rr_.uniform(-0.3, 0.3)
        start = pts[i] + nrm * w * 0.3
        end = start + np.array([math.cos(a), math.sin(a)]) * rr_.uniform(80, 260) * S
        tp = _wobbly(rr_, start, end, 2.0 * S, rr_.uniform(2, 7) * S, waves=(0.3, 0.9), taper=True)
        if any(np.hypot(*(start - q)) < 80 * S for q in starts):
            continue
        bad = _lookup(water_dil | urban, tp, outside=True)
        bad[:3] = False
        stop = int(np.argmax(bad)) if bad.any() else len(tp)
        if stop >= 10:
            tracks.append((tp[:stop], rr_.uniform(3.0, 4.2) * S))
            starts.append(start)

    rut = np.zeros((n, n), np.uint8)
    for tp, w in tracks:
        _polylines(road_kind, [tp], 3, w)
        nr = _normals(tp)
        for sgn in (-1, 1):
            _polylines(rut, [tp + sgn * nr * 0.8 * S], 1, max(1.0, 0.45 * S))
    for sp, w in streets:
        _polylines(road_kind, [sp], 2, w)
    count = np.zeros((n, n), np.uint8)
    mark_w = max(1.0, 0.15 * S)
    for ap, w in arterials:
        one = np.zeros((n, n), np.uint8)
        _polylines(one, [ap], 1, w)
        road_kind[one > 0] = 1
        count += one
        if gsd <= 0.6:  # painted lines are sub-pixel at coarser resolutions
            ring = np.zeros((n, n), np.uint8)
            _polylines(ring, [ap], 1, w - 2 * 0.5 * S)
            _polylines(ring, [ap], 0, w - 2 * 0.5 * S - 2 * mark_w)
            marks |= ring
            rs, s = _arc_resample(ap, 0.5 * S)
            dash = (s % (9.0 * S)) < 3.0 * S
            _polylines(marks, [rs[a:b] for a, b in _runs(dash)], 1, mark_w)
    marks[count > 1] = 0  # no centre lines across junctions
    marks[(road_kind != 1)] = 0
    road = road_kind > 0

    # --- land parcels: recursive, nearly-axis-aligned splits of the world (field-like quadrilaterals)
    rp = _rng(seed, 4)
    theta_f = rp.uniform(0, np.pi)
    leaves = _split_parcels(rp, n, theta_f, rp.uniform(9000.0, 16000.0) * S * S)
    parcel = np.zeros((n, n), np.int32)
    for k, poly in enumerate(leaves):
        _fill(parcel, poly, k + 1)
    npar = len(leaves) + 1
    pcentres = np.array([pl.mean(0) for pl in leaves]).reshape(-1, 2)
    # parcel classes from the land-use tendency at the parcel centre
    ci = np.clip(np.round(pcentres).astype(int), 0, n - 1)
    tend = low[ci[:, 1], ci[:, 0]] + rp.normal(0, 0.35, len(ci))
    inside = (pcentres[:, 0] >= 0) & (pcentres[:, 0] < n) & (pcentres[:, 1] >= 0) & (pcentres[:, 1] < n)
    q_hi, q_lo = np.quantile(tend[inside], [0.72, 0.22]) if inside.sum() >= 3 else (0.5, -0.5)
    pclass = np.full(npar, _P_FIELD, np.int32)
    pclass[1:][tend >= q_hi] = _P_FOREST
    pclass[1:][tend <= q_lo] = _P_MEADOW
    pclass[1:][urban[ci[:, 1], ci[:, 0]]] = _P_URBAN
    # make sure each rural class exists (tiny worlds)
    vis = np.bincount(parcel[::4, ::4].ravel(), minlength=npar)
    vis[0] = 0
    for need in (_P_FIELD, _P_FOREST, _P_MEADOW):
        present = vis[pclass == need].sum() > 0
        if not present:
            cands = np.flatnonzero((pclass != _P_URBAN) & (vis > 0))
            cands = cands[pclass[cands] != need] if len(cands) > 3 else cands
            if len(cands):
                pclass[cands[np.argmax(vis[cands])] if need == _P_FIELD else cands[rp.integers(len(cands))]] = need
    ptheta = rp.uniform(0, np.pi, npar).astype(np.float32)
    aligned = rp.random(npar) < 0.6
    ptheta[aligned] = np.float32(theta_f + (np.pi / 2) * rp.integers(0, 2, aligned.sum()))
    pperiod = np.maximum(rp.uniform(1.3, 3.5, npar), 3.2 * gsd).astype(np.float32)
    ptram = rp.uniform(12.0, 24.0, npar).astype(np.float32)

    # --- ground surface
    pc_img = pclass[parcel]
    ground = np.full((n, n), _S_MEADOW, np.uint8)
    ground[pc_img == _P_FIELD] = _S_FIELD
    fnoise = _noise(rp, n, n, 14.0 * S)
    forest = _smooth_mask(pc_img == _P_FOREST, 5.0 * S, fnoise, 0.22)
    grove = (_noise(rp, n, n, 22.0 * S) > 1.9) & (pc_img == _P_MEADOW)
    forest |= grove
    forest &= ~urban
    ground[urban] = _S_LAWN
    park = urban & (_noise(rp, n, n, 35.0 * S) > 1.5)
    ground[forest] = _S_FOREST
    # field margins (grass strips between parcels) and verges
    edge = np.zeros((n, n), bool)
    edge[:, 1:] |= parcel[:, 1:] != parcel[:, :-1]
    edge[1:, :] |= parcel[1:, :] != parcel[:-1, :]
    margin = _dilate(edge, rp.uniform(0.8, 1.6) * S)
    ground[(ground == _S_FIELD) & (margin | _dilate(road, 2.0 * S))] = _S_MEADOW
    # shore
    wdist_out = cv2.distanceTransform((~water).astype(np.uint8), cv2.DIST_L2, 3) * np.float32(gsd)
    shore_w = 3.0 + 2.5 * (fnoise + 1.0)
    shore = (~water) & (wdist_out < shore_w)
    ground[shore] = _S_SHORE
    ground[water] = _S_WATER
    water_depth = cv2.distanceTransform(water.astype(np.uint8), cv2.DIST_L2, 3) * np.float32(gsd)

    surface = ground.copy()
    surface[road_kind == 3] = _S_TRACK
    surface[road_kind == 2] = _S_STREET
    surface[road_kind == 1] = _S_ARTERIAL
    detail[rut > 0] = _D_RUT
    detail[road_kind != 3] = 0
    detail[marks > 0] = _D_MARK

    # --- buildings
    rb = _rng(seed, 5)
    building_id = np.zeros((n, n), np.int32)
    height = np.zeros((n, n), np.float32)
    blds = _Buildings()
    forbid = (_dilate(road, 1.5 * S) | water_dil).astype(np.uint8)
    forest_u8 = forest.astype(np.uint8)

    def place(cx: np.ndarray, L: float, W: float, ang: float, kind: int, h_e: float, roof: str,
              pitch_deg: float = 30.0, buffer_m: float = 2.0, extra_forbid: np.ndarray | None = None) -> bool:
        poly = _rect(cx, L * S, W * S, ang)
        outer = _rect(cx, (L + 2 * buffer_m) * S, (W + 2 * buffer_m) * S, ang)
        x0, y0 = np.floor(outer.min(0)).astype(int) - 1
        x1, y1 = np.ceil(outer.max(0)).astype(int) + 2
        if x0 < 0 or y0 < 0 or x1 > n or y1 > n:
            return False
        m_out = np.zeros((y1 - y0, x1 - x0), np.uint8)
        _fill(m_out, outer - (x0, y0), 1)
        fz = forbid[y0:y1, x0:x1]
        if (fz & m_out).any():
            return False
        if extra_forbid is not None and (extra_forbid[y0:y1, x0:x1] & m_out).any():
            return False
        m = np.zeros_like(m_out)
        _fill(m, poly - (x0, y0), 1)
        mb = m.astype(bool)
        if not mb.any():
            return False
        bid = len(blds.kind) + 1
        ly, lx = np.nonzero(mb)
        dx, dy = lx + x0 - cx[0], ly + y0 - cx[1]
        ca, sa = math.cos(ang), math.sin(ang)
        a_m = np.abs(dx * ca + dy * sa) * gsd
        b_m = np.abs(-dx * sa + dy * ca) * gsd
        tp = math.tan(math.radians(pitch_deg))
        if roof == "gable":
            h = h_e + tp * np.maximum(W / 2 - b_m, 0)
        elif roof == "hip":
            h = h_e + tp * np.maximum(np.minimum(W / 2 - b_m, L / 2 - a_m), 0)
        else:
            h = np.full(a_m.shape, h_e) + np.where((W / 2 - b_m < 0.4) | (L / 2 - a_m < 0.4), 0.35, 0.0)
        building_id[y0:y1, x0:x1][mb] = bid
        height[y0:y1, x0:x1][mb] = h.astype(np.float32)
        fz |= m_out
        # rooftop details: chimneys on pitched roofs, HVAC units on flat roofs
        if roof == "flat" and L > 14:
            units = [(rb.uniform(-0.35, 0.35) * L, rb.uniform(-0.3, 0.3) * W, rb.uniform(1.5, 4), rb.uniform(1.5, 3))
                     for _ in range(int(rb.integers(1, 5)))]
            uh = 1.4
        elif roof != "flat" and rb.random() < 0.6 and kind == _B_HOUSE:
            units = [(rb.uniform(-0.3, 0.3) * L, rb.uniform(-0.25, 0.25) * W, 0.9, 0.9)]
            uh = 1.0
        else:
            units = []
        for ua, ub, ul, uw in units:
            ccent = cx + ua * S * np.array([ca, sa]) + ub * S * np.array([-sa, ca])
            up = _rect(ccent, ul * S, uw * S, ang)
            mu = np.zeros_like(m)
            _fill(mu, up - (x0, y0), 1)
            mu = mu.astype(bool) & mb
            if mu.any():
                hz = height[y0:y1, x0:x1]
                hz[mu] = hz[mu].max() + uh if roof != "flat" else h_e + uh
                detail[y0:y1, x0:x1][mu] = _D_ROOFTOP
        blds.kind.append(kind)
        blds.polys.append(poly)
        return True

    def roof_colour(kind: int) -> tuple[float, float, float]:
        if kind in (_B_APARTMENT, _B_COMMERCIAL):
            base = _ROOF_COLOURS[rb.choice([3, 4, 5, 9, 9, 5])]
        elif kind == _B_BARN:
            base = _ROOF_COLOURS[rb.choice([0, 4, 5, 6, 7, 8])]
        else:
            base = _ROOF_COLOURS[rb.integers(len(_ROOF_COLOURS))]
        return tuple(np.clip(base * rb.uniform(0.85, 1.15) + rb.normal(0, 0.025, 3), 0.05, 0.95).tolist())

    def add(cx, L, W, ang, kind, h_e, roof, pitch=30.0, buffer_m=2.0, extra=None) -> bool:
        ok = place(cx, L, W, ang, kind, h_e, roof, pitch, buffer_m, extra)
        if ok:
            blds.colour.append(roof_colour(kind))
        return ok

    # commercial buildings with parking lots along arterials
    for _ in range(1 + int(size_m // 300)):
        ap, w = arterials[int(rb.integers(len(arterials)))]
        i = int(rb.integers(len(ap)))
        nr = _normals(ap)[i] * (1 if rb.random() < 0.5 else -1)
        tg = np.array([nr[1], -nr[0]])
        L, W, depth = rb.uniform(35, 75), rb.uniform(22, 45), rb.uniform(16, 24)
        lot_c = ap[i] + nr * (w / 2 + (2.5 + depth / 2) * S)
        bc = ap[i] + nr * (w / 2 + (2.5 + depth + 1.0 + W / 2) * S)
        ang_b = math.atan2(tg[1], tg[0])
        lot = _rect(lot_c, L * S, depth * S, ang_b)
        lx0, ly0 = np.floor(lot.min(0)).astype(int)
        lx1, ly1 = np.ceil(lot.max(0)).astype(int)
        if lx0 < 0 or ly0 < 0 or lx1 >= n or ly1 >= n:
            continue
        lm = np.zeros((n, n), np.uint8)
        _fill(lm, _rect(lot_c, L * S, (depth - 1.0) * S, ang_b), 1)
        if (lm.astype(bool) & (water_dil | (building_id > 0))).any():
            continue
        if add(bc, L, W, ang_b, _B_COMMERCIAL, rb.uniform(6, 11), "flat", buffer_m=1.0):
            lot_m = lm.astype(bool) & ~road
            road_kind[lot_m] = 4
            surface[lot_m] = _S_PAVED
            forbid[lot_m] = 1
            pm = np.zeros((n, n), np.uint8)
            for row in (-1, 1):  # two rows of 5 m stalls, 2.6 m wide
                for s in np.arange(-L / 2 + 2, L / 2 - 2, 2.6):
                    p0 = lot_c + tg * s * S + nr * row * (depth / 2 - 5.0) * S
                    p1 = lot_c + tg * s * S + nr * row * (depth / 2 - 0.6) * S
                    _polylines(pm, [np.array([p0, p1])], 1, max(1.0, 0.12 * S))
            detail[(pm > 0) & lot_m] = _D_PARKMARK

    # apartment blocks near the centre
    for _ in range(int(6 + 40 * (R / S / 200.0) ** 2)):
        r = R * math.sqrt(rb.random()) * 0.6
        t = rb.uniform(0, 2 * np.pi)
        cx = uc + r * np.array([math.cos(t), math.sin(t)])
        ang_b = theta_g + (np.pi / 2 if rb.random() < 0.3 else 0.0) + rb.normal(0, 0.03)
        add(cx, rb.uniform(28, 60), rb.uniform(11, 15), ang_b, _B_APARTMENT, rb.uniform(9, 19), "flat",
            buffer_m=5.0, extra=(~urban).astype(np.uint8))

    # houses lining the streets (long side along the street, varied setbacks and gaps), sheds behind some
    not_urban = (~urban).astype(np.uint8)
    frontage = list(streets) + [(ap[_lookup(urban, ap)], w) for ap, w in arterials]
    for sp, w in frontage:
        if len(sp) < 3:
            continue
        rs, s_arc = _arc_resample(sp, 1.0 * S)
        if len(rs) < 3:
            continue
        nrs = _normals(rs)
        for side in (-1.0, 1.0):
            s = rb.uniform(0.0, 8.0) * S
            while s < s_arc[-1]:
                L, W = rb.uniform(9, 16), rb.uniform(7, 11)
                rot90 = rb.random() < 0.2
                along_len = (W if rot90 else L) * S
                k = min(int((s + along_len / 2) / S), len(rs) - 1)
                setback = rb.uniform(4.0, 10.0) * S
                depth = (L if rot90 else W) * S
                cx = rs[k] + side * nrs[k] * (w / 2 + setback + depth / 2)
                tg = np.array([nrs[k][1], -nrs[k][0]])
                ang_b = math.atan2(tg[1], tg[0]) + (np.pi / 2 if rot90 else 0.0) + rb.normal(0, 0.04)
                roof = str(rb.choice(["gable", "gable", "gable", "hip", "flat"]))
                if add(cx, L, W, ang_b, _B_HOUSE, rb.uniform(3.0, 6.5), roof, rb.uniform(22, 40), 2.0, not_urban):
                    s += along_len + rb.uniform(5.0, 14.0) * S
                    if rb.random() < 0.35:  # a shed in the back garden
                        back = cx + side * nrs[k] * (depth / 2 + rb.uniform(5, 9) * S)
                        add(back + tg * rb.uniform(-5, 5) * S, rb.uniform(3, 6), rb.uniform(2.5, 4), ang_b, _B_SHED,
                            rb.uniform(2.2, 3.0), "flat" if rb.random() < 0.5 else "gable", 20.0, 1.0, not_urban)
                    elif rb.random() < 0.07:  # or a pool
                        pc = cx + side * nrs[k] * (depth / 2 + 5.0 * S)
                        pool = _rect(pc, rb.uniform(6, 10) * S, rb.uniform(3, 5) * S, math.atan2(tg[1], tg[0]))
                        x0p, y0p = np.floor(pool.min(0)).astype(int) - 1
                        x1p, y1p = np.ceil(pool.max(0)).astype(int) + 2
                        if x0p >= 0 and y0p >= 0 and x1p <= n and y1p <= n:
                            pm = np.zeros((y1p - y0p, x1p - x0p), np.uint8)
                            _fill(pm, pool - (x0p, y0p), 1)
                            pmb = pm.astype(bool)
                            if not (forbid[y0p:y1p, x0p:x1p].astype(bool) & pmb).any() and \
                                    urban[y0p:y1p, x0p:x1p][pmb].all():
                                detail[y0p:y1p, x0p:x1p][pmb] = _D_POOL
                                forbid[y0p:y1p, x0p:x1p][pmb] = 1
                else:
                    s += rb.uniform(3.0, 6.0) * S

    # more houses and sheds on a jittered lattice aligned with the street grid (block interiors)
    lat_sp = rb.uniform(19.0, 24.0) * S
    lim = int(ext / lat_sp) + 1
    ij = np.stack(np.meshgrid(np.arange(-lim, lim + 1), np.arange(-lim, lim + 1)), -1).reshape(-1, 2)
    ij = ij[rb.permutation(len(ij))]
    for i, j in ij:
        cx = uc + gu * i * lat_sp + gv * j * lat_sp + rb.uniform(-0.3, 0.3, 2) * lat_sp
        if not _lookup(urban, cx[None])[0] or rb.random() < 0.3:
            continue
        ang_b = theta_g + (np.pi / 2 if rb.random() < 0.3 else 0.0) + rb.normal(0, 0.06)
        if rb.random() < 0.2:
            add(cx, rb.uniform(3, 6), rb.uniform(2.5, 4), ang_b, _B_SHED, rb.uniform(2.2, 3.0),
                "flat" if rb.random() < 0.5 else "gable", 20.0, 1.0, not_urban)
            continue
        roof = str(rb.choice(["gable", "gable", "gable", "hip", "flat"]))
        add(cx, rb.uniform(9, 17), rb.uniform(7, 11), ang_b, _B_HOUSE, rb.uniform(3.0, 6.5), roof,
            rb.uniform(22, 40), 2.5, not_urban)

    # farmsteads along arterials and tracks outside the town
    links = arterials + tracks
    for _ in range(2 + int(size_m // 180)):
        lp, w = links[int(rb.integers(len(links)))]
        i = int(rb.integers(len(lp)))
        if _lookup(urban, lp[i:i + 1], outside=True)[0]:
            continue
        nr = _normals(lp)[i] * (1 if rb.random() < 0.5 else -1)
        ang_b = math.atan2(nr[1], nr[0]) + rb.normal(0, 0.1)
        yard_c = lp[i] + nr * (w / 2 + 22.0 * S)
        yard = _rect(yard_c, rb.uniform(35, 55) * S, rb.uniform(30, 45) * S, ang_b)
        ym = np.zeros((n, n), np.uint8)
        _fill(ym, yard, 1)
        ymb = ym.astype(bool)
        if not ymb.any() or (ymb & (water_dil | (building_id > 0) | urban)).any() or ymb.sum() < 0.9 * cv2.contourArea(
                yard.astype(np.float32)):
            continue
        ymb &= ~road
        road_kind[ymb] = 5
        surface[ymb] = _S_YARD
        forest_u8[ymb] = 0
        ca, sa = math.cos(ang_b), math.sin(ang_b)
        ax, bx = np.array([ca, sa]), np.array([-sa, ca])
        add(yard_c + ax * 12 * S + bx * rb.uniform(-6, 6) * S, rb.uniform(10, 14), rb.uniform(7, 9), ang_b + np.pi / 2,
            _B_HOUSE, rb.uniform(3, 5.5), "gable", rb.uniform(25, 40), 1.0, forest_u8)
        add(yard_c - ax * 8 * S + bx * rb.uniform(-5, 5) * S, rb.uniform(22, 36), rb.uniform(11, 16), ang_b,
            _B_BARN, rb.uniform(4, 7), "gable", rb.uniform(15, 25), 1.0, forest_u8)
        add(yard_c + ax * 2 * S + bx * 14 * S, rb.uniform(6, 12), rb.uniform(5, 8), ang_b,
            _B_SHED, rb.uniform(2.5, 4), rb.choice(["flat", "gable"]), 20.0, 0.8, forest_u8)

    nb = len(blds.kind)
    surface[building_id > 0] = _S_ROOF

    # --- trees: crowns from a nearest-centre (Voronoi) assignment, domes/cones by species
    rt = _rng(seed, 6)
    occupied = (building_id > 0) | road | water | (road_kind >= 4) | (detail == _D_POOL)
    occupied_d = _dilate(occupied, 1.0 * S)
    tx, ty, trad, ttop, tcon = [], [], [], [], []

    def jgrid(sp_m: float) -> np.ndarray:
        sp = sp_m * S
        g = np.arange(sp / 2, n, sp)
        p = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        return p + rt.uniform(-0.45, 0.45, p.shape) * sp

    stand = _noise(rt, n, n, 40.0 * S)

    def add_trees(pts: np.ndarray, r_rng, h_rng, p_con) -> None:
        if len(pts) == 0:
            return
        tx.append(pts[:, 0])
        ty.append(pts[:, 1])
        con = rt.random(len(pts)) < p_con
        trad.append(np.where(con, rt.uniform(r_rng[0] * 0.75, r_rng[1] * 0.7, len(pts)),
                             rt.uniform(*r_rng, len(pts))))
        ttop.append(rt.uniform(*h_rng, len(pts)))
        tcon.append(con)

    p = jgrid(rt.uniform(3.3, 4.2))
    keep = _lookup(forest & ~occupied_d, p)
    pf = p[keep]
    pcon = np.clip(0.5 + 0.45 * _lookup_val(stand, pf), 0.05, 0.95)
    add_trees(pf, (1.6, 3.2), (12.0, 24.0), pcon)
    p = jgrid(9.0)
    keep = _lookup(urban & ~forest & ~_dilate(occupied, 2.5 * S), p) & (rt.random(len(p)) < 0.3)
    keep |= _lookup(park & ~occupied_d, p) & (rt.random(len(p)) < 0.7)
    add_trees(p[keep], (2.0, 4.0), (6.0, 14.0), 0.15)
    # hedgerows on some parcel boundaries, scattered trees in meadows, trees along shores
    hedge = rt.random(npar) < 0.3
    p = jgrid(4.5)
    keep = _lookup(margin & hedge[parcel] & ~forest & ~urban & ~occupied_d, p) & (rt.random(len(p)) < 0.8)
    add_trees(p[keep], (1.5, 2.6), (4.0, 9.0), 0.1)
    p = jgrid(14.0)
    keep = _lookup((ground == _S_MEADOW) & ~occupied_d & ~urban, p) & (rt.random(len(p)) < 0.05)
    keep |= _lookup(shore & ~occupied_d, p) & (rt.random(len(p)) < 0.35)
    add_trees(p[keep], (1.8, 3.5), (5.0, 14.0), 0.2)

    tree_id = np.zeros((n, n), np.int32)
    tree_con = np.zeros(1, bool)
    tree_jit = np.zeros((1, 3), np.float32)
    if tx:
        txa, tya = np.concatenate(tx), np.concatenate(ty)
        ra, ha, ca_ = np.concatenate(trad) * S, np.concatenate(ttop), np.concatenate(tcon)
        xi = np.clip(np.round(txa).astype(np.int64), 0, n - 1)
        yi = np.clip(np.round(tya).astype(np.int64), 0, n - 1)
        lin, first = np.unique(yi * n + xi, return_index=True)
        xi, yi, ra, ha, ca_ = xi[first], yi[first], ra[first], ha[first], ca_[first]
        nt = len(xi)
        src = np.ones((n, n), np.uint8)
        src[yi, xi] = 0
        dist, lab = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, cv2.DIST_MASK_5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        lut = np.zeros(int(lab.max()) + 1, np.int32)
        lut[lab[yi, xi]] = np.arange(1, nt + 1, dtype=np.int32)
        tid = lut[lab]
        r_pix = np.concatenate([[1.0], ra]).astype(np.float32)[tid]
        rho = dist / r_pix
        inside_c = rho < 1.0
        top = np.concatenate([[0.0], ha]).astype(np.float32)[tid]
        con_pix = np.concatenate([[False], ca_])[tid]
        rho_c = np.minimum(rho, 1.0)
        crown_h = np.where(con_pix, top * (1.0 - 0.55 * rho_c),
                           top * (0.55 + 0.45 * np.sqrt(np.maximum(1.0 - rho_c * rho_c, 0.0))))
        crown_h = np.where(inside_c, crown_h, 0.0).astype(np.float32)
        vis = inside_c & (crown_h > height)
        tree_id[vis] = tid[vis]
        np.maximum(height, crown_h, out=height)
        tree_con = np.concatenate([[False], ca_])
        tree_jit = np.concatenate([np.zeros((1, 3)), rt.normal(0, 1, (nt, 3))]).astype(np.float32)

    # --- semantic labels
    label = np.full((n, n), CLASSES["grass"], np.uint8)
    label[ground == _S_FIELD] = CLASSES["field"]
    label[ground == _S_FOREST] = CLASSES["forest"]
    label[water] = CLASSES["water"]
    label[road_kind > 0] = CLASSES["road"]
    label[building_id > 0] = CLASSES["building"]

    bcol = np.zeros((nb + 1, 3), np.float32)
    if nb:
        bcol[1:] = np.array(blds.colour, np.float32)
    return _Layout(
        n=n, gsd=gsd, seed=seed, label=label, height=height, surface=surface, detail=detail,
        road_kind=road_kind, building_id=building_id, tree_id=tree_id, water_kind=water_kind,
        water_depth=water_depth, parcel=parcel, parcel_class=pclass, parcel_theta=ptheta, parcel_period=pperiod,
        parcel_tram=ptram, building_colour=bcol, building_kind=np.array([-1] + blds.kind, np.int32),
        tree_conifer=tree_con, tree_jitter=tree_jit, buildings=blds,
    )


def _lookup_val(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h, w = img.shape
    xi = np.clip(np.round(pts[:, 0]).astype(np.int64), 0, w - 1)
    yi = np.clip(np.round(pts[:, 1]).astype(np.int64), 0, h - 1)
    return img[yi, xi]


# ----------------------------------------------------------------------------------------------- render

_SNOW = (0.86, 0.88, 0.93)

# Per season: ground albedos, crop (main colour, row/soil colour, row contrast) choices, canopy colours.
_PALETTES: dict[str, dict] = {
    "summer": dict(
        meadow=(0.40, 0.47, 0.22), lawn=(0.30, 0.45, 0.18), forest=(0.15, 0.21, 0.11), shore=(0.55, 0.50, 0.38),
        reed=(0.40, 0.45, 0.24), deep=(0.05, 0.12, 0.15), shallow=(0.15, 0.24, 0.22), lake_ice=None,
        arterial=(0.30, 0.30, 0.32), street=(0.37, 0.37, 0.38), track=(0.55, 0.50, 0.42), paved=(0.42, 0.42, 0.42),
        yard=(0.50, 0.47, 0.42), mark=(0.90, 0.90, 0.88), snow_roof=0.0, snow_road=0.0,
        crops=[((0.30, 0.48, 0.18), (0.36, 0.30, 0.22), 0.25), ((0.66, 0.60, 0.32), (0.55, 0.48, 0.30), 0.2),
               ((0.22, 0.38, 0.14), (0.42, 0.33, 0.24), 0.5), ((0.50, 0.40, 0.28), (0.38, 0.30, 0.22), 0.45),
               ((0.55, 0.56, 0.30), (0.44, 0.50, 0.24), 0.35), ((0.74, 0.70, 0.22), (0.45, 0.50, 0.20), 0.15),
               ((0.36, 0.52, 0.20), (0.30, 0.44, 0.17), 0.2)],
        decid=[(0.20, 0.36, 0.14), (0.25, 0.41, 0.16), (0.18, 0.31, 0.12), (0.28, 0.40, 0.18)],
        conifer=[(0.10, 0.20, 0.11), (0.12, 0.23, 0.12), (0.09, 0.17, 0.10)], decid_alpha=1.0, conifer_snow=0.0,
    ),
    "autumn": dict(
        meadow=(0.50, 0.46, 0.28), lawn=(0.36, 0.42, 0.20), forest=(0.30, 0.22, 0.14), shore=(0.50, 0.44, 0.34),
        reed=(0.58, 0.50, 0.30), deep=(0.06, 0.11, 0.13), shallow=(0.17, 0.22, 0.20), lake_ice=None,
        arterial=(0.28, 0.28, 0.30), street=(0.35, 0.34, 0.34), track=(0.48, 0.42, 0.34), paved=(0.40, 0.40, 0.40),
        yard=(0.46, 0.42, 0.36), mark=(0.86, 0.86, 0.84), snow_roof=0.0, snow_road=0.0,
        crops=[((0.72, 0.64, 0.42), (0.56, 0.48, 0.32), 0.25), ((0.36, 0.27, 0.20), (0.27, 0.20, 0.15), 0.45),
               ((0.36, 0.42, 0.22), (0.38, 0.30, 0.22), 0.4), ((0.52, 0.44, 0.30), (0.44, 0.36, 0.26), 0.3),
               ((0.64, 0.56, 0.36), (0.40, 0.32, 0.22), 0.35)],
        decid=[(0.72, 0.42, 0.12), (0.76, 0.62, 0.18), (0.60, 0.22, 0.10), (0.46, 0.32, 0.16), (0.30, 0.38, 0.15),
               (0.66, 0.52, 0.16)],
        conifer=[(0.10, 0.19, 0.11), (0.12, 0.21, 0.12)], decid_alpha=1.0, conifer_snow=0.0,
    ),
    "winter": dict(
        meadow=_SNOW, lawn=(0.84, 0.86, 0.90), forest=(0.78, 0.80, 0.86), shore=(0.80, 0.82, 0.86),
        reed=(0.62, 0.58, 0.48), deep=(0.07, 0.09, 0.11), shallow=(0.20, 0.23, 0.25), lake_ice=(0.80, 0.83, 0.88),
        arterial=(0.24, 0.24, 0.26), street=(0.64, 0.65, 0.67), track=(0.80, 0.81, 0.84), paved=(0.60, 0.61, 0.63),
        yard=(0.78, 0.79, 0.82), mark=(0.70, 0.70, 0.70), snow_roof=0.85, snow_road=0.6,
        crops=[(_SNOW, (0.55, 0.50, 0.42), 0.3), (_SNOW, (0.40, 0.34, 0.28), 0.45), ((0.82, 0.84, 0.88),
               (0.70, 0.72, 0.75), 0.15)],
        decid=[(0.38, 0.34, 0.30), (0.42, 0.38, 0.34), (0.34, 0.30, 0.27)],
        conifer=[(0.12, 0.20, 0.13), (0.14, 0.22, 0.15)], decid_alpha=0.45, conifer_snow=0.3,
    ),
    "spring": dict(
        meadow=(0.40, 0.52, 0.22), lawn=(0.36, 0.52, 0.20), forest=(0.24, 0.26, 0.14), shore=(0.52, 0.47, 0.36),
        reed=(0.50, 0.48, 0.32), deep=(0.07, 0.13, 0.17), shallow=(0.18, 0.25, 0.24), lake_ice=None,
        arterial=(0.31, 0.31, 0.33), street=(0.38, 0.38, 0.39), track=(0.52, 0.46, 0.38), paved=(0.43, 0.43, 0.43),
        yard=(0.50, 0.46, 0.40), mark=(0.90, 0.90, 0.88), snow_roof=0.0, snow_road=0.0,
        crops=[((0.34, 0.27, 0.20), (0.30, 0.44, 0.18), 0.4), ((0.40, 0.31, 0.22), (0.30, 0.23, 0.17), 0.45),
               ((0.88, 0.82, 0.18), (0.50, 0.56, 0.22), 0.15), ((0.35, 0.55, 0.22), (0.30, 0.46, 0.18), 0.2),
               ((0.45, 0.36, 0.26), (0.36, 0.44, 0.22), 0.35)],
        decid=[(0.40, 0.55, 0.22), (0.36, 0.50, 0.20), (0.46, 0.58, 0.26), (0.38, 0.52, 0.24), (0.34, 0.48, 0.19),
               (0.44, 0.56, 0.23), (0.85, 0.80, 0.82)],  # a few blossoming trees
        conifer=[(0.11, 0.21, 0.12), (0.13, 0.24, 0.13)], decid_alpha=0.85, conifer_snow=0.0,
    ),
}


def _cast_shadow(height: np.ndarray, az_deg: float, el_deg: float, gsd: float, max_steps: int = 40) -> np.ndarray:
    """Binary cast shadow of a height field (float32 0/1) by ray marching towards the sun."""
    h, w = height.shape
    hmax = float(height.max())
    shadow = np.zeros((h, w), np.float32)
    if hmax <= 0:
        return shadow
    tan_el = math.tan(math.radians(el_deg))
    length_px = hmax / tan_el / gsd
    steps = int(min(max_steps, max(1, math.ceil(length_px))))
    sx, sy = math.sin(math.radians(az_deg)), -math.cos(math.radians(az_deg))  # towards the sun, pixel axes
    occ = np.full((h, w), -1.0, np.float32)
    done = set()
    for i in range(1, steps + 1):
        d = i * length_px / steps
        dx, dy = int(round(d * sx)), int(round(d * sy))
        if (dx, dy) in done or (dx == 0 and dy == 0) or abs(dx) >= w or abs(dy) >= h:
            continue
        done.add((dx, dy))
        drop = np.float32(math.hypot(dx, dy) * gsd * tan_el)
        # occ[y, x] = max(occ[y, x], height[y + dy, x + dx] - drop)
        ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
        xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
        np.maximum(occ[yd, xd], height[ys, xs] - drop, out=occ[yd, xd])
    shadow[occ > height + np.float32(0.15)] = 1.0
    return shadow


def _render_satellite(lay: _Layout, season: str, sun_az: float, sun_el: float, seed: int) -> np.ndarray:
    """Orthophoto-like render of a layout (uint8 RGB)."""
    _check_season(season)
    _check_sun(sun_az, sun_el)
    pal = _PALETTES[season]
    n, gsd = lay.n, lay.gsd
    S = 1.0 / gsd
    ra = _rng(seed, 100, SEASONS.index(season))
    f32 = np.float32

    # base albedo by surface
    lut = np.zeros((_N_SURF, 3), np.float32)
    for code, key in ((_S_MEADOW, "meadow"), (_S_FIELD, "meadow"), (_S_FOREST, "forest"), (_S_LAWN, "lawn"),
                      (_S_SHORE, "shore"), (_S_WATER, "deep"), (_S_ARTERIAL, "arterial"), (_S_STREET, "street"),
                      (_S_TRACK, "track"), (_S_PAVED, "paved"), (_S_YARD, "yard"), (_S_ROOF, "paved")):
        lut[code] = pal[key]
    alb = lut[lay.surface]
    surf = lay.surface

    # large-scale and fine texture, everywhere
    rl = _rng(lay.seed, 200)  # persistent ground texture (soil, wear, bushes): part of the place
    n_mid = _noise(rl, n, n, 18.0 * S)
    n_fine = _noise(rl, n, n, max(1.0, 0.9 * S))
    tex = f32(1.0) + f32(0.07) * n_mid + f32(0.05) * n_fine
    # meadows / lawns: patchy colour (dry vs lush)
    veg = (surf == _S_MEADOW) | (surf == _S_LAWN)
    mix = np.clip(f32(0.5) + f32(0.35) * _noise(rl, n, n, 7.0 * S), 0, 1)
    dry = np.array(pal["shore"], np.float32) if season != "winter" else np.array(_SNOW, np.float32) * f32(0.95)
    tex *= np.where(veg, f32(0.75) + f32(0.25) * mix, f32(1.0))
    alb *= tex[:, :, None]
    alb += np.where(veg, f32(0.25) * (f32(1) - mix), f32(0.0))[:, :, None] * dry

    # fields: crop colour per parcel, rows along the parcel direction, tramlines, in-field variation
    fm = surf == _S_FIELD
    if fm.any():
        crops = pal["crops"]
        crop = ra.integers(0, len(crops), len(lay.parcel_class))
        c_main = np.array([crops[k][0] for k in crop], np.float32) * ra.uniform(0.9, 1.1, (len(crop), 1)).astype(f32)
        c_row = np.array([crops[k][1] for k in crop], np.float32)
        c_con = np.array([crops[k][2] for k in crop], np.float32)
        fy, fx = np.nonzero(fm)
        pid = lay.parcel[fy, fx]
        th = lay.parcel_theta[pid]
        per = lay.parcel_period[pid]
        along = (fx * np.cos(th) + fy * np.sin(th)).astype(f32) * f32(gsd)  # metres across the rows
        rows = f32(0.5) + f32(0.5) * np.cos(f32(2 * np.pi) * along / per)
        tram = np.abs(np.mod(along / lay.parcel_tram[pid], f32(1.0)) - f32(0.5)) * lay.parcel_tram[pid]
        tram = (np.abs(tram - f32(0.9)) < f32(0.3)).astype(f32)
        k = (c_con[pid] * rows)[:, None]
        col = c_main[pid] * (f32(1) - k) + c_row[pid] * k
        col = col * (f32(1) - f32(0.35) * tram[:, None]) + c_row[pid] * f32(0.35) * tram[:, None]
        var = (f32(1.0) + f32(0.10) * n_mid[fy, fx] + f32(0.04) * n_fine[fy, fx])[:, None]
        alb[fy, fx] = col * var

    # water: depth-dependent colour, ripples; frozen lakes in winter
    wm = surf == _S_WATER
    if wm.any():
        d = np.clip(lay.water_depth[wm] / 6.0, 0, 1)[:, None]
        col = np.array(pal["shallow"], np.float32) * (f32(1) - d) + np.array(pal["deep"], np.float32) * d
        col *= (f32(1) + f32(0.06) * _noise(ra, n, n, 2.5 * S)[wm])[:, None]
        if pal["lake_ice"] is not None:
            ice = (lay.water_kind[wm] == 2) | (lay.water_depth[wm] < 2.5)
            col[ice] = np.array(pal["lake_ice"], np.float32) * (f32(1) + f32(0.04) * n_mid[wm][ice])[:, None]
        alb[wm] = col
    # shore: sand / reeds
    sm = surf == _S_SHORE
    reed = np.clip(_noise(rl, n, n, 4.0 * S)[sm] * 0.8 + 0.5, 0, 1)[:, None]
    alb[sm] = alb[sm] * (f32(1) - reed) + np.array(pal["reed"], np.float32) * reed

    # roads: repairs, ruts and markings, snow along the edges in winter
    rd = (surf >= _S_ARTERIAL) & (surf <= _S_YARD)
    patches = (f32(1) + f32(0.12) * np.clip(_noise(rl, n, n, 6.0 * S), -1.5, 1.5))
    alb[rd] *= patches[rd][:, None]
    det = lay.detail
    alb[det == _D_RUT] = np.array(pal["track"], np.float32) * (0.75 if season != "winter" else 0.8)
    alb[(det == _D_MARK) | (det == _D_PARKMARK)] = pal["mark"]
    if pal["snow_road"] > 0:
        road = lay.road_kind > 0
        near_edge = road & ~cv2.erode(road.astype(np.uint8), np.ones((3, 3), np.uint8),
                                      iterations=max(1, int(0.8 * S))).astype(bool)
        alb[near_edge] = _SNOW
    alb[det == _D_POOL] = (0.25, 0.62, 0.75) if season != "winter" else (0.75, 0.8, 0.85)

    # roofs: per-building colour, texture, snow
    bm = lay.building_id > 0
    if bm.any():
        bid = lay.building_id[bm]
        col = lay.building_colour[bid] * (f32(1) + f32(0.05) * n_fine[bm])[:, None]
        col[det[bm] == _D_ROOFTOP] = (0.62, 0.62, 0.62)
        if pal["snow_roof"] > 0:
            s = np.clip(pal["snow_roof"] + 0.2 * n_mid[bm], 0, 1)[:, None]
            col = col * (f32(1) - s) + np.array(_SNOW, np.float32) * s
        alb[bm] = col

    # tree crowns: per-tree colour by species, leaf texture; bare deciduous trees let the ground through
    tm = lay.tree_id > 0
    if tm.any():
        tid = lay.tree_id[tm]
        nt = len(lay.tree_conifer)
        tr = _rng(seed, 101, SEASONS.index(season))
        dec = np.array(pal["decid"], np.float32)[tr.integers(0, len(pal["decid"]), nt)]
        con = np.array(pal["conifer"], np.float32)[tr.integers(0, len(pal["conifer"]), nt)]
        tcol = np.where(lay.tree_conifer[:, None], con, dec) * (f32(1) + f32(0.08) * lay.tree_jitter)
        leaf = (f32(1) + f32(0.16) * _noise(ra, n, n, max(1.0, 0.7 * S))[tm])[:, None]
        col = tcol[tid] * leaf
        is_con = lay.tree_conifer[tid]
        alpha = np.where(is_con, f32(1.0), f32(pal["decid_alpha"]))[:, None]
        col = col * alpha + alb[tm] * (f32(1) - alpha)
        if pal["conifer_snow"] > 0:
            sn = (np.clip(n_fine[tm] * 0.5 + 0.5, 0, 1) * pal["conifer_snow"])[:, None] * is_con[:, None]
            col = col * (f32(1) - sn) + np.array(_SNOW, np.float32) * sn
        alb[tm] = col

    # --- lighting: sun (Lambert on the height-field normals) + sky, cast shadows, ambient occlusion
    az, el = math.radians(sun_az), math.radians(sun_el)
    sun = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)], np.float32)
    H = lay.height
    gx = cv2.Sobel(H, cv2.CV_32F, 1, 0, ksize=3) * f32(1.0 / (8.0 * gsd))  # dH/d(east)
    gy = cv2.Sobel(H, cv2.CV_32F, 0, 1, ksize=3) * f32(-1.0 / (8.0 * gsd))  # dH/d(north)
    steep = gx * gx + gy * gy > f32(9.0)  # walls / crown edges: treat as flat
    gx[steep] = 0.0
    gy[steep] = 0.0
    lam = (-gx * sun[0] - gy * sun[1] + sun[2]) / np.sqrt(f32(1) + gx * gx + gy * gy)
    np.maximum(lam, f32(0.0), out=lam)
    shadow = _cast_shadow(H, sun_az, sun_el, gsd)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 0.6)
    direct = lam * (f32(1) - f32(0.92) * shadow)
    blur_h = cv2.blur(H, (max(3, int(4 * S) | 1),) * 2)
    ao = f32(1.0) - f32(0.3) * np.clip((blur_h - H) / f32(6.0), 0, 1)
    warm = max(0.0, min(1.0, (25.0 - sun_el) / 20.0))
    sun_col = np.array([1.0, 0.97 - 0.1 * warm, 0.92 - 0.22 * warm]) * 0.95
    sky_col = np.array([0.33, 0.36, 0.42])
    gain = 0.96  # haze: img = gain * albedo * light + haze
    light = cv2.merge([direct * f32(gain * sun_col[c]) + ao * f32(gain * sky_col[c]) for c in range(3)])
    np.multiply(alb, light, out=alb)
    del light
    alb += np.array([0.035, 0.04, 0.05], np.float32)
    img = cv2.GaussianBlur(alb, (0, 0), 0.5)  # optics
    noise = ra.random((n, n), dtype=np.float32)
    noise -= f32(0.5)
    noise *= f32(0.028)  # sensor noise, std ~ 2 grey levels
    img += noise[:, :, None]
    return cv2.convertScaleAbs(img, alpha=255.0)


_OSM = {
    "background": (242, 239, 233), "meadow": (205, 235, 176), "field": (238, 240, 213),
    "forest": (173, 209, 158), "urban": (224, 223, 223), "water": (170, 211, 223), "shore": (205, 235, 176),
    "building": (217, 208, 201), "building_line": (196, 182, 171), "arterial": (247, 250, 191),
    "arterial_casing": (190, 180, 120), "street": (255, 255, 255), "street_casing": (187, 187, 187),
    "track": (172, 131, 39), "paved": (238, 238, 238), "yard": (235, 219, 232), "paved_casing": (200, 200, 200),
}

#: Street-map colours that mean "road" (fills of the road kinds 1..5).
STREET_ROAD_COLOURS = tuple(_OSM[k] for k in ("arterial", "street", "track", "paved", "yard"))


def _render_street(lay: _Layout) -> np.ndarray:
    """OpenStreetMap-carto-like render of a layout (uint8 RGB), pixel-aligned with the satellite render."""
    names = list(_OSM)
    code = {k: np.uint8(i) for i, k in enumerate(names)}
    lut = np.array([_OSM[k] for k in names], np.uint8)
    surf_code = np.zeros(_N_SURF, np.uint8)
    for sc, key in ((_S_MEADOW, "meadow"), (_S_FIELD, "field"), (_S_FOREST, "forest"), (_S_LAWN, "urban"),
                    (_S_SHORE, "shore"), (_S_WATER, "water"), (_S_ROOF, "building")):
        surf_code[sc] = code[key]
    surf_code[_S_ARTERIAL:_S_YARD + 1] = code["urban"]
    img = surf_code[lay.surface]
    img[lay.label == CLASSES["forest"]] = code["forest"]
    img[lay.label == CLASSES["field"]] = code["field"]
    img[lay.label == CLASSES["water"]] = code["water"]
    k3 = np.ones((3, 3), np.uint8)
    rk = lay.road_kind
    off_road = rk == 0
    for kind, fill, casing in ((5, "yard", "paved_casing"), (4, "paved", "paved_casing"),
                               (3, "track", None), (2, "street", "street_casing"), (1, "arterial", "arterial_casing")):
        m = rk == kind
        if casing is not None:
            ring = cv2.dilate(m.view(np.uint8), k3).view(bool) & off_road
            img[ring] = code[casing]
        img[m] = code[fill]
    b = lay.building_id > 0
    img[b] = code["building"]
    line = b & ~cv2.erode(b.view(np.uint8), k3).view(bool)
    img[line] = code["building_line"]
    return lut[img]


# ------------------------------------------------------------------------------------------------ world


def _affine_apply(t: affine.Affine, x, y):
    """(x', y') = t applied to coordinates (scalars or arrays)."""
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


class World:
    """A generated world: layout rasters, a satellite render and a street-map render on one UTM grid.

    Attributes: ``cfg`` (:class:`WorldConfig`), ``crs`` (pyproj UTM CRS of the centre), ``transform``
    (GDAL affine, north-up, pixel corners -> UTM metres), ``satellite`` and ``street_map`` ((H, W, 3) uint8
    RGB), ``layers`` (dict of rasters, see :data:`LAYER_DOC`).
    """

    def __init__(self, cfg: WorldConfig, crs: pyproj.CRS, transform: affine.Affine, layout: _Layout) -> None:
        self.cfg = cfg
        self.crs = crs
        self.transform = transform
        self._layout = layout
        self.layers: dict[str, np.ndarray] = {
            "label": layout.label, "height": layout.height, "road_kind": layout.road_kind,
            "marking": (layout.detail == _D_MARK) | (layout.detail == _D_PARKMARK),
            "building_id": layout.building_id, "tree_id": layout.tree_id, "water_kind": layout.water_kind,
            "parcel_id": layout.parcel,
        }
        self.satellite = _render_satellite(layout, cfg.season, cfg.sun_azimuth_deg, cfg.sun_elevation_deg, cfg.seed)
        self.street_map = _render_street(layout)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of every raster."""
        return self.satellite.shape[:2]

    @property
    def n_buildings(self) -> int:
        """Number of buildings."""
        return len(self._layout.buildings.kind)

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the world in its UTM CRS, metres (outer pixel edges)."""
        h, w = self.shape
        x0, y0 = _affine_apply(self.transform, 0.0, 0.0)
        x1, y1 = _affine_apply(self.transform, float(w), float(h))
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def pixel_to_latlon(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 (lat, lon) of pixel centres (col, row)."""
        x, y = _affine_apply(self.transform, np.asarray(col, float) + 0.5, np.asarray(row, float) + 0.5)
        lon, lat = geo.transform(x, y, self.crs, geo.WGS84)
        return lat, lon

    def latlon_to_pixel(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (col, row) pixel coordinates (pixel centres at integers) of WGS84 points."""
        x, y = geo.transform(lon, lat, geo.WGS84, self.crs)
        col, row = _affine_apply(~self.transform, x, y)
        return np.asarray(col) - 0.5, np.asarray(row) - 0.5

    def satellite_map(self):
        """The satellite render as an in-memory :class:`gleam_ros.core.maps.GeoMap`."""
        from ..maps import map_from_array

        return map_from_array(self.satellite, self.crs, self.transform, name=f"world{self.cfg.seed}_satellite")

    def street_map_map(self):
        """The street-map render as an in-memory :class:`gleam_ros.core.maps.GeoMap`."""
        from ..maps import map_from_array

        return map_from_array(self.street_map, self.crs, self.transform, name=f"world{self.cfg.seed}_streetmap")

    def variant(self, season: str | None = None, sun_azimuth_deg: float | None = None,
                sun_elevation_deg: float | None = None, seed: int | None = None) -> np.ndarray:
        """Satellite render of the same layout with another appearance ((H, W, 3) uint8, same georeferencing).

        Unset arguments keep the world's own value. ``seed`` is the appearance seed: it re-draws crop types
        (crop rotation), tree colours and texture noise, never the layout.
        """
        return _render_satellite(
            self._layout,
            self.cfg.season if season is None else season,
            self.cfg.sun_azimuth_deg if sun_azimuth_deg is None else float(sun_azimuth_deg),
            self.cfg.sun_elevation_deg if sun_elevation_deg is None else float(sun_elevation_deg),
            self.cfg.seed if seed is None else int(seed),
        )

    def class_fractions(self) -> dict[str, float]:
        """Area share of each semantic class."""
        counts = np.bincount(self.layers["label"].ravel(), minlength=max(CLASSES.values()) + 1)
        total = float(counts.sum())
        return {k: float(counts[v]) / total for k, v in CLASSES.items()}

    def __repr__(self) -> str:
        h, w = self.shape
        return f"World(seed={self.cfg.seed}, {w}x{h} px @ {self.cfg.gsd_m} m, season={self.cfg.season!r})"


def make_world(cfg: WorldConfig | None = None) -> World:
    """Generate the world described by ``cfg`` (deterministic: same config -> identical arrays)."""
    cfg = WorldConfig() if cfg is None else cfg
    if not isinstance(cfg, WorldConfig):
        raise ConfigError(f"make_world expects a WorldConfig, got {type(cfg).__name__}")
    crs = geo.utm_crs_for(cfg.origin_lat, cfg.origin_lon)
    e, nn = geo.transform(cfg.origin_lon, cfg.origin_lat, geo.WGS84, crs)
    n = int(round(cfg.size_m / cfg.gsd_m))
    half = n * cfg.gsd_m / 2.0
    transform = affine.Affine(cfg.gsd_m, 0.0, float(e) - half, 0.0, -cfg.gsd_m, float(nn) + half)
    return World(cfg, crs, transform, _make_layout(cfg))


def write_world(cfg: WorldConfig | World, out_dir: str | Path) -> dict[str, Path]:
    """Generate (or take) a world and write ``satellite.tif``, ``streetmap.tif`` (GeoTIFF) and ``world.json``.

    ``world.json`` holds the config, the CRS, the affine transform, the raster size, the bounds and the
    class shares. Returns {"satellite": path, "streetmap": path, "config": path}.
    """
    from ..maps import write_geotiff

    world = cfg if isinstance(cfg, World) else make_world(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "satellite": write_geotiff(out / "satellite.tif", world.satellite, world.crs, world.transform),
        "streetmap": write_geotiff(out / "streetmap.tif", world.street_map, world.crs, world.transform),
    }
    h, w = world.shape
    meta = {
        "config": asdict(world.cfg),
        "crs": geo.crs_key(world.crs),
        "transform": list(world.transform)[:6],
        "width": w,
        "height": h,
        "bounds": list(world.bounds()),
        "center_latlon": [world.cfg.origin_lat, world.cfg.origin_lon],
        "classes": CLASSES,
        "class_fractions": world.class_fractions(),
    }
    cpath = out / "world.json"
    cpath.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    paths["config"] = cpath
    return paths


def load_world(folder: str | Path) -> World:
    """The World a ``gleam world`` folder was written from, regenerated from its ``world.json`` config
    (generation is deterministic). ConfigError names the folder when it holds no usable world.json."""
    meta = Path(folder) / "world.json"
    if not meta.is_file():
        raise ConfigError(f"{folder} is not a folder written by `gleam world` (no {meta})")
    try:
        cfg = WorldConfig(**json.loads(meta.read_text(encoding="utf-8"))["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{meta} holds no usable world config: {exc}") from None
    return make_world(cfg)
