"""Street-level rendering of a procedural world: a forward pinhole camera and a 360° equirectangular panorama.

A :class:`StreetScene` is what the renderer draws: on the world's north-up UTM grid, the height of every
pixel above the flat ground (buildings with their roofs, tree crowns), its surface colour seen from above in
one season (``World.variant``: roads with markings, fields, grass, water, roofs, crowns), building ids with a
facade colour each and tree ids. The ground of a procedural world is flat (it has no DEM), so the renderer's
ground is the plane z = 0; nothing here changes the orthophoto's geometry.

How (no new dependency, vectorised numpy + OpenCV): an equirectangular panorama is rendered by **column
marching**. Each image column is one azimuth, so vertical edges are exact. Every column marches outward over
the height map at once (steps of half a pixel near the camera, 1 % of the distance farther out) and keeps a
y-buffer (the highest elevation angle drawn so far). Each step contributes two segments: the vertical face
that the ray enters when the height rises (its distance refined by bisection to a few millimetres), and the
top surface up to the next step when it lies below the camera. A pixel row takes the first segment whose
cumulative elevation reaches it; then each pixel is shaded exactly: ground and roof pixels by intersecting
the pixel's own ray with the segment's height plane (so textures are sampled per pixel, not per step),
facades by the wall distance and the pixel's height on the wall (storeys with windows, plinth, sun-side
shading), crowns with leaf texture above a trunk. Forest trees keep a dark undergrowth band below their
crowns; under a free-standing tree's rounded crown a second pass without trees (only over the columns that
need it) shows what lies behind. Ground colours come from the orthophoto's pyramid level that matches each
pixel's footprint. Beyond its edges the world continues as its mirror image (so that no view looks into a
void; those pixels are marked :data:`KIND_FAR`); rays end 1.2 km out, where flat ground meets a distant tree
line; above it a season's sky gradient with clouds; everything is blended into the haze with distance (aerial
perspective). A pinhole frame (any ``K``, pitch, roll) is resampled from a panorama rendered only over the
azimuth/elevation range the frame needs, at up to 1.25x the frame's angular resolution, so its geometry is
exact up to bilinear resampling.

Conventions: poses are in the world's UTM CRS (x east, y north, metres); ``heading_deg`` is the optical
axis azimuth clockwise from north; ``pitch_deg`` positive looks up; ``roll_deg`` positive turns the camera's
right side down (the image rotates clockwise, so a level horizon rises towards the image's right edge) -
the body conventions of :mod:`gleam_ros.core.camera` (:func:`~gleam_ros.core.camera.forward_camera_to_enu`).
Panorama column ``u`` looks at azimuth ``heading + 360 (u + 0.5) / width - 180`` (the centre column looks
along the heading), row ``v`` at elevation ``90 - 180 (v + 0.5) / height``.

``python tools/bench_street.py`` times both renderers against the UAV frame renderer, side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import affine
import cv2
import numpy as np

from .. import geo
from ..camera import CameraIntrinsics, forward_camera_to_enu
from ..errors import ConfigError, InputError
from .world import CLASSES, SEASONS

#: Camera heights above the ground a street-level pose may have, metres.
HEIGHT_RANGE_M = (1.2, 3.0)
#: Largest |pitch| and |roll| of a street-level pose, degrees.
MAX_TILT_DEG = 30.0

# Pixel kinds of :class:`StreetLayers.kind`.
KIND_SKY, KIND_FAR, KIND_GROUND, KIND_WALL, KIND_ROOF, KIND_CROWN, KIND_OTHER = 0, 1, 2, 3, 4, 5, 6
#: Names of the values of :attr:`StreetLayers.kind`.
KIND_NAMES = {
    KIND_SKY: "sky", KIND_FAR: "beyond the world's edge (its mirror image, or past 1.2 km)",
    KIND_GROUND: "ground (road, grass, water, ...)", KIND_WALL: "building facade", KIND_ROOF: "roof",
    KIND_CROWN: "tree (crown, trunk)", KIND_OTHER: "other raised object",
}

# Building kinds of the world's layout (see world._B_*): sheds and barns get no windows.
_NO_WINDOW_KINDS = (1, 4)

# Season looks: sky (horizon, zenith), haze visibility (m), cloud cover 0..1.
_SKY = {
    "summer": ((0.80, 0.86, 0.92), (0.28, 0.50, 0.84), 3000.0, 0.35),
    "autumn": ((0.78, 0.80, 0.82), (0.45, 0.54, 0.66), 1800.0, 0.65),
    "winter": ((0.86, 0.87, 0.89), (0.58, 0.63, 0.70), 1500.0, 0.75),
    "spring": ((0.82, 0.87, 0.92), (0.34, 0.55, 0.86), 2500.0, 0.45),
}
# Facade colours (linear-ish RGB 0..1) by building kind: house, shed, apartment, commercial, barn.
_FACADES = {
    0: [(0.55, 0.16, 0.12), (0.80, 0.72, 0.45), (0.85, 0.84, 0.80), (0.62, 0.72, 0.78), (0.78, 0.70, 0.58),
        (0.45, 0.50, 0.42)],
    1: [(0.50, 0.15, 0.11), (0.45, 0.40, 0.34), (0.60, 0.58, 0.52)],
    2: [(0.80, 0.78, 0.72), (0.62, 0.60, 0.56), (0.60, 0.34, 0.26), (0.84, 0.76, 0.56)],
    3: [(0.70, 0.71, 0.72), (0.50, 0.54, 0.58), (0.82, 0.82, 0.80)],
    4: [(0.50, 0.15, 0.11), (0.42, 0.36, 0.30), (0.62, 0.60, 0.55)],
}
# Largest angular oversampling of the panorama a pinhole frame is resampled from (its finest pixel pitch,
# in the corners, is cos^2 of the corner angle times the centre's): 1.25 keeps 640x480 at 70 deg sharp
# nearly to the corners at about a third of the cost of full corner density.
_OVERSAMPLE = 1.25
# How far rays march (m): beyond the world's edges its mirror image stands in; past this, a distant tree line.
_REACH_M = 1200.0
_WINDOW = np.array((0.12, 0.15, 0.19), np.float32)
_TRUNK = np.array((0.16, 0.12, 0.09), np.float32)
_STOREY_M = 3.0
_WINDOW_PERIOD_M = 2.8
_WINDOW_W_M = 1.2


@dataclass(frozen=True)
class GroundPose:
    """Pose of a street-level camera.

    ``x``/``y``: easting/northing in the world's UTM CRS (``world.crs``), metres; ``heading_deg``: optical axis
    azimuth clockwise from north (0 looks north, 90 east); ``height_m``: camera height above the ground
    (:data:`HEIGHT_RANGE_M`); ``pitch_deg`` positive looks up, ``roll_deg`` positive turns the image clockwise
    (right side down); both within ±:data:`MAX_TILT_DEG`.
    """

    x: float
    y: float
    heading_deg: float
    height_m: float = 1.6
    pitch_deg: float = 0.0
    roll_deg: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                    and math.isfinite(float(v))):
                raise ConfigError(f"GroundPose.{f.name} must be a finite number, got {v!r}")
        lo, hi = HEIGHT_RANGE_M
        if not lo <= self.height_m <= hi:
            raise ConfigError(f"GroundPose.height_m must be within [{lo}, {hi}] m above the ground, got {self.height_m}")
        for name in ("pitch_deg", "roll_deg"):
            if abs(getattr(self, name)) > MAX_TILT_DEG:
                raise ConfigError(f"GroundPose.{name} must be within ±{MAX_TILT_DEG}, got {getattr(self, name)}")

    def rotation(self) -> np.ndarray:
        """Rotation taking forward-camera optical-frame vectors (x right, y down, z along the axis) to ENU."""
        return forward_camera_to_enu(self.heading_deg, self.pitch_deg, self.roll_deg)


@dataclass
class StreetLayers:
    """A rendered street-level view with per-pixel ground truth.

    ``rgb`` (H, W, 3) uint8; ``depth_m`` (H, W) float32 distance along the ground from the camera to what the
    pixel shows (``inf`` for sky); ``kind`` (H, W) uint8 (see :data:`KIND_NAMES`).
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    kind: np.ndarray


def _as_raster(name: str, a, shape: tuple[int, int] | None, dtype) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ConfigError(f"StreetScene: {name} must be a non-empty 2-D raster, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ConfigError(f"StreetScene: {name} has shape {arr.shape}, the height layer {shape}")
    return np.ascontiguousarray(arr.astype(dtype, copy=False))


class StreetScene:
    """What the renderer draws: heights, surface classes and colours on the world grid, in one season.

    Build it from a world with :meth:`from_world`, or from rasters (tests: one building of known size):

    - ``height``: (H, W) metres above the flat ground (0 = ground), finite, not all zero;
    - ``label``: (H, W) class ids of :data:`gleam_ros.core.sim.world.CLASSES` (road, building, ...);
    - ``top_rgb``: (H, W, 3) uint8 colour of every pixel seen from above (the season's orthophoto);
    - ``transform``: GDAL affine of the grid (north up: no rotation terms), ``crs``: its (UTM) CRS;
    - ``building_id`` / ``tree_id``: (H, W) int ids (0 none); default: connected building pixels / none;
    - ``building_kind``: per building id (index 0 unused) the world's building kind (sheds and barns get no
      windows); ``tree_conifer``: per tree id, conifer (branches down low) or not;
    - ``road_kind``: (H, W) uint8 as in the world (used by :func:`road_poses`);
    - ``season`` (sky and haze), ``sun_azimuth_deg`` (facade shading), ``appearance_seed`` (facade colours,
      clouds, distant tree line).
    """

    def __init__(self, height, label, top_rgb, transform: affine.Affine, crs, *, building_id=None, tree_id=None,
                 building_kind=None, tree_conifer=None, road_kind=None, season: str = "summer",
                 sun_azimuth_deg: float = 135.0, appearance_seed: int = 0) -> None:
        self.height = _as_raster("height", height, None, np.float32)
        shape = self.height.shape
        if not np.isfinite(self.height).all() or float(self.height.min()) < 0.0:
            raise ConfigError("StreetScene: the height layer must be finite and >= 0 (metres above the ground)")
        if not float(self.height.max()) > 0.0:
            raise ConfigError("StreetScene: the height layer is all zero (a world without heights): nothing to "
                              "render standing up; give building / tree heights")
        self.label = _as_raster("label", label, shape, np.uint8)
        rgb = np.asarray(top_rgb)
        if rgb.shape != (*shape, 3) or rgb.dtype != np.uint8:
            raise ConfigError(f"StreetScene: top_rgb must be uint8 of shape {(*shape, 3)}, got {rgb.dtype} {rgb.shape}")
        self.top_rgb = np.ascontiguousarray(rgb)
        if not isinstance(transform, affine.Affine):
            raise ConfigError(f"StreetScene: transform must be an affine.Affine, got {type(transform).__name__}")
        if transform.b != 0 or transform.d != 0 or not (transform.a > 0 and transform.e < 0):
            raise ConfigError(f"StreetScene: transform must be north-up (no rotation, a > 0, e < 0), got {transform}")
        if abs(transform.a + transform.e) > 1e-9 * abs(transform.a):
            raise ConfigError(f"StreetScene: transform must have square pixels, got {transform.a} x {-transform.e}")
        self.transform = transform
        self.crs = geo.parse_crs(crs, "StreetScene crs")
        if season not in SEASONS:
            raise ConfigError(f"StreetScene: season must be one of {SEASONS}, got {season!r}")
        self.season = season
        if not math.isfinite(sun_azimuth_deg):
            raise ConfigError(f"StreetScene: sun_azimuth_deg must be finite, got {sun_azimuth_deg}")
        self.sun_azimuth_deg = float(sun_azimuth_deg)
        self.appearance_seed = int(appearance_seed)
        if building_id is None:
            n, cc = cv2.connectedComponents((self.label == CLASSES["building"]).astype(np.uint8), connectivity=4)
            building_id = cc
        self.building_id = _as_raster("building_id", building_id, shape, np.int32)
        self.tree_id = (np.zeros(shape, np.int32) if tree_id is None else _as_raster("tree_id", tree_id, shape, np.int32))
        self.road_kind = None if road_kind is None else _as_raster("road_kind", road_kind, shape, np.uint8)
        nb = int(self.building_id.max())
        if building_kind is None:
            building_kind = np.zeros(nb + 1, np.int32)
        self.building_kind = np.asarray(building_kind, np.int32)
        if self.building_kind.shape != (nb + 1,):
            raise ConfigError(f"StreetScene: building_kind needs {nb + 1} entries (index 0 unused), "
                              f"got {self.building_kind.shape}")
        self._frames = _building_frames(self.building_id, nb, transform)
        self._facade = _facade_colours(self.building_kind, self.appearance_seed)
        self._sky_noise = _tileable_noise(np.random.default_rng([self.appearance_seed, 901]), 256, (64, 32, 12))
        self._treeline = _tileable_noise(np.random.default_rng([self.appearance_seed, 902]), 720, (90, 24, 6), 1)
        self._grain = _tileable_noise(np.random.default_rng([self.appearance_seed, 904]), 256, (128, 32, 4, 1))
        self._tree_xy = _centres(self.tree_id, transform)
        self._tree_rgb = _mean_colours(self.tree_id, self.top_rgb)
        nt = int(self.tree_id.max())
        tm = self.tree_id > 0
        in_forest = np.bincount(self.tree_id[tm], self.label[tm] == CLASSES["forest"], nt + 1)
        self._tree_top = np.zeros(nt + 1, np.float32)
        np.maximum.at(self._tree_top, self.tree_id[tm], self.height[tm])
        self._tree_r = np.sqrt(np.maximum(np.bincount(self.tree_id[tm], minlength=nt + 1), 1) / np.pi) * self.gsd
        self._tree_conifer = np.zeros(nt + 1, bool) if tree_conifer is None else np.asarray(tree_conifer, bool)
        if self._tree_conifer.shape != (nt + 1,):
            raise ConfigError(f"StreetScene: tree_conifer needs {nt + 1} entries (index 0 unused), "
                              f"got {self._tree_conifer.shape}")
        self._tree_open = in_forest < 0.5 * np.maximum(np.bincount(self.tree_id[tm], minlength=nt + 1), 1)
        self._pyramid = [self.top_rgb]
        while len(self._pyramid) < 6 and min(self._pyramid[-1].shape[:2]) >= 32:
            self._pyramid.append(cv2.pyrDown(self._pyramid[-1]))

    def _bare(self) -> "StreetScene":
        """This scene without its tree crowns (cached): what a ray passing under a crown sees."""
        bare = self.__dict__.get("_bare_scene")
        if bare is None:
            import copy

            bare = copy.copy(self)
            bare.height = np.where((self.tree_id > 0) & (self.building_id == 0), np.float32(0), self.height)
            bare.tree_id = np.zeros_like(self.tree_id)
            self.__dict__["_bare_scene"] = bare
        return bare

    @classmethod
    def from_world(cls, world, season: str | None = None, appearance_seed: int | None = None) -> "StreetScene":
        """The scene of a :class:`~gleam_ros.core.sim.world.World` in ``season`` (default: the world's own).

        Ground, roof and crown colours are the world's satellite render of that season and appearance seed
        (``World.variant``); geometry (heights, ids) is the same in every season.
        """
        from .world import World

        if not isinstance(world, World):
            raise ConfigError(f"StreetScene.from_world expects a World, got {type(world).__name__}")
        season = world.cfg.season if season is None else season
        if season not in SEASONS:
            raise ConfigError(f"season must be one of {SEASONS}, got {season!r}")
        seed = world.cfg.seed if appearance_seed is None else int(appearance_seed)
        if season == world.cfg.season and seed == world.cfg.seed:
            top = world.satellite
        else:
            top = world.variant(season=season, seed=seed)
        lay = world.layers
        if not float(lay["height"].max()) > 0.0:
            raise ConfigError(f"world seed {world.cfg.seed}: its height layer is all zero (a world without "
                              "heights): nothing to render standing up")
        return cls(lay["height"], lay["label"], top, world.transform, world.crs, building_id=lay["building_id"],
                   tree_id=lay["tree_id"], building_kind=np.maximum(world._layout.building_kind, 0),
                   tree_conifer=world._layout.tree_conifer,
                   road_kind=lay["road_kind"], season=season, sun_azimuth_deg=world.cfg.sun_azimuth_deg,
                   appearance_seed=seed)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the rasters."""
        return self.height.shape

    @property
    def gsd(self) -> float:
        """Pixel size, metres."""
        return float(self.transform.a)

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the scene in its CRS, metres (outer pixel edges)."""
        h, w = self.shape
        t = self.transform
        return (t.c, t.f + h * t.e, t.c + w * t.a, t.f)

    def to_pixel(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (col, row) of UTM points (pixel corners at integers, pixel (i, j) spans [j, j+1) x [i, i+1))."""
        t = self.transform
        return (np.asarray(x, np.float64) - t.c) / t.a, (np.asarray(y, np.float64) - t.f) / t.e

    def check_pose(self, pose: GroundPose, what: str = "pose") -> None:
        """Raise InputError unless ``pose`` stands on open ground inside the scene."""
        if not isinstance(pose, GroundPose):
            raise ConfigError(f"{what} must be a GroundPose, got {type(pose).__name__}")
        xmin, ymin, xmax, ymax = self.bounds()
        if not (xmin <= pose.x < xmax and ymin <= pose.y < ymax):
            raise InputError(f"{what} ({pose.x:.1f}, {pose.y:.1f}) is outside the world "
                             f"[{xmin:.1f}, {xmax:.1f}] x [{ymin:.1f}, {ymax:.1f}] (UTM metres)")
        col, row = self.to_pixel(pose.x, pose.y)
        i, j = int(row), int(col)
        h = float(self.height[i, j])
        if h > 0.0:
            bid, tid = int(self.building_id[i, j]), int(self.tree_id[i, j])
            what_in = f"building {bid}" if bid else (f"tree {tid} (crown and trunk)" if tid else "a raised object")
            raise InputError(f"{what} ({pose.x:.1f}, {pose.y:.1f}) is inside {what_in}: the scene is {h:.1f} m high "
                             f"there; a street-level camera must stand on open ground")


def _tileable_noise(rng: np.random.Generator, n: int, cells: tuple[int, ...], dims: int = 2) -> np.ndarray:
    """Smooth periodic noise in [0, 1] (sum of octaves of bicubic-upsampled random grids with wrap-around)."""
    out = np.zeros((n, n) if dims == 2 else (1, n), np.float32)
    for k, c in enumerate(cells):
        m = max(2, n // c)
        g = rng.standard_normal((m, m) if dims == 2 else (1, m)).astype(np.float32)
        g = np.tile(g, (3, 3) if dims == 2 else (1, 3))
        shape = (3 * n, 3 * n) if dims == 2 else (3 * n, 1)
        big = cv2.resize(g, shape, interpolation=cv2.INTER_CUBIC)
        big = big[n:2 * n, n:2 * n] if dims == 2 else big[:, n:2 * n]
        out += big / (k + 1)
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _centres(ids: np.ndarray, t: affine.Affine) -> np.ndarray:
    """(max id + 1, 2) UTM centre (x, y) of the pixels of every id (row 0: id 0, unused)."""
    n = int(ids.max())
    ys, xs = np.nonzero(ids)
    k = ids[ys, xs]
    cnt = np.maximum(np.bincount(k, minlength=n + 1), 1)
    out = np.zeros((n + 1, 2))
    out[:, 0] = t.c + (np.bincount(k, xs + 0.5, n + 1) / cnt) * t.a
    out[:, 1] = t.f + (np.bincount(k, ys + 0.5, n + 1) / cnt) * t.e
    return out


def _mean_colours(ids: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(max id + 1, 3) mean colour (0..1) of the pixels of every id."""
    n = int(ids.max())
    m = ids > 0
    k = ids[m]
    cnt = np.maximum(np.bincount(k, minlength=n + 1), 1)
    px = rgb[m].astype(np.float64) / 255.0
    return np.stack([np.bincount(k, px[:, i], n + 1) / cnt for i in range(3)], -1).astype(np.float32)


def _building_frames(building_id: np.ndarray, nb: int, t: affine.Affine) -> np.ndarray:
    """Per building id: (centre x, centre y, axis angle (rad, from east, CCW), half length, half width), metres.

    From the second moments of the building's pixels (exact for the world's rectangular footprints).
    """
    out = np.zeros((nb + 1, 5), np.float64)
    if nb == 0:
        return out
    ys, xs = np.nonzero(building_id)
    ids = building_id[ys, xs]
    x = t.c + (xs + 0.5) * t.a
    y = t.f + (ys + 0.5) * t.e
    cnt = np.maximum(np.bincount(ids, minlength=nb + 1), 1)
    mx = np.bincount(ids, x, nb + 1) / cnt
    my = np.bincount(ids, y, nb + 1) / cnt
    dx, dy = x - mx[ids], y - my[ids]
    sxx = np.bincount(ids, dx * dx, nb + 1) / cnt
    syy = np.bincount(ids, dy * dy, nb + 1) / cnt
    sxy = np.bincount(ids, dx * dy, nb + 1) / cnt
    ang = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    tr, det = sxx + syy, sxx * syy - sxy * sxy
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 0)
    cell = t.a * t.a / 12.0  # a pixel's own variance
    out[:, 0], out[:, 1], out[:, 2] = mx, my, ang
    out[:, 3] = np.sqrt(12 * np.maximum(l1 - cell, 0)) / 2  # uniform rectangle: var = L^2 / 12
    out[:, 4] = np.sqrt(12 * np.maximum(l2 - cell, 0)) / 2
    return out


def _facade_colours(kinds: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 903])
    out = np.zeros((len(kinds), 3), np.float32)
    for k, pal in _FACADES.items():
        idx = np.flatnonzero(kinds == k)
        if len(idx):
            base = np.array(pal, np.float32)[rng.integers(0, len(pal), len(idx))]
            out[idx] = np.clip(base * rng.uniform(0.88, 1.1, (len(idx), 1)) + rng.normal(0, 0.02, (len(idx), 3)), 0, 1)
    other = ~np.isin(kinds, list(_FACADES))
    out[other] = (0.7, 0.68, 0.64)
    return out


def _march_distances(gsd: float, d_max: float, rel: float = 0.01) -> np.ndarray:
    """Step distances from the camera: half a pixel near it, ``rel`` of the distance beyond ``gsd / 2 / rel``."""
    s0 = 0.5 * gsd
    d1 = s0 / rel
    lin = np.arange(0.05, min(d1, d_max) + s0, s0)
    if d_max <= d1:
        return lin
    n = int(math.ceil(math.log(d_max / lin[-1]) / math.log1p(rel))) + 1
    return np.concatenate([lin, lin[-1] * (1 + rel) ** np.arange(1, n + 1)])


def _render_grid(scene: StreetScene, pose: GroundPose, az_deg: np.ndarray, el_deg: np.ndarray,
                 see_through: bool = True) -> StreetLayers:
    """Render the level (gravity-aligned) view: columns at absolute azimuths ``az_deg`` (W,), rows at elevations
    ``el_deg`` (R,), strictly decreasing. The core of both public renderers.

    The height map makes every object solid down to the ground. Below the crowns of free-standing trees
    (not in a forest) the pixels beside the trunk are then drawn again from a second pass without trees,
    over the columns that need it (``see_through``): what lies behind the tree shows under its crown.
    """
    under = None
    scene.check_pose(pose)
    c = float(pose.height_m)
    x0, y0 = float(pose.x), float(pose.y)
    xmin, ymin, xmax, ymax = scene.bounds()
    # beyond its edges the world continues mirrored (so that no view looks into a void); rays end at _REACH_M
    d_max = max(math.hypot(max(x0 - xmin, xmax - x0), max(y0 - ymin, ymax - y0)) + scene.gsd, _REACH_M)
    d = _march_distances(scene.gsd, d_max)  # (S,)
    az = np.radians(np.asarray(az_deg, np.float64))
    pix_rad = float(abs(az[1] - az[0])) if len(az) > 1 else 1e-3  # angular pixel pitch
    sa, ca = np.sin(az), np.cos(az)
    el = np.asarray(el_deg, np.float64)
    R, W, S = len(el), len(az), len(d)
    Hs, Ws = scene.shape
    t = scene.transform

    D = np.broadcast_to(d[:, None], (S, W))
    ci, cj = _cell(y0 + D * ca, x0 + D * sa, t, Hs, Ws)
    h = scene.height[ci, cj].astype(np.float64)
    h_prev = np.vstack([np.zeros((1, W)), h[:-1]])
    rise = h > h_prev + 1e-3
    # refine the wall distance of every rise by bisection between the previous and this step
    d_wall = D.copy()
    h_wall = h.copy()
    ks, us = np.nonzero(rise)
    if len(ks):
        lo = np.where(ks > 0, d[np.maximum(ks - 1, 0)], 0.0)
        hi = d[ks]
        hp = h_prev[ks, us]
        sa_k, ca_k = sa[us], ca[us]
        for _ in range(8):
            mid = 0.5 * (lo + hi)
            mi, mj = _cell(y0 + mid * ca_k, x0 + mid * sa_k, t, Hs, Ws)
            up = scene.height[mi, mj] > hp + 1e-3
            hi = np.where(up, mid, hi)
            lo = np.where(up, lo, mid)
        d_wall[ks, us] = hi
        mi, mj = _cell(y0 + hi * ca_k, x0 + hi * sa_k, t, Hs, Ws)
        h_wall[ks, us] = np.maximum(scene.height[mi, mj], hp + 1e-3)
    neg_inf = -np.inf
    e_wall = np.where(rise, np.degrees(np.arctan2(h_wall - c, d_wall)), neg_inf)
    d_next = np.append(d[1:], d[-1] * 1.01)[:, None]
    top_ok = h < c
    e_top = np.where(top_ok, np.degrees(np.arctan2(h - c, d_next)), neg_inf)
    # beyond the reach: flat ground and a distant tree line, then the sky
    tl_u = ((az / (2 * np.pi)) % 1.0) * scene._treeline.shape[1]
    tree_el = 0.15 + 1.1 * scene._treeline[0, np.clip(tl_u.astype(np.int64), 0, scene._treeline.shape[1] - 1)]
    E = np.empty((2 * S + 2, W))
    E[0:2 * S:2] = e_wall
    E[1:2 * S:2] = e_top
    E[2 * S] = tree_el
    E[2 * S + 1] = 90.0
    np.maximum.accumulate(E, axis=0, out=E)
    # first row reached by each segment: rows with el <= E; a segment owns rows it reaches first
    r = np.searchsorted(-el, -E.ravel(), side="left").reshape(E.shape)
    prev = np.vstack([np.full((1, W), R), r[:-1]])
    new = r < prev
    M = np.full((R + 1, W), 2 * S + 1, np.int32)
    jj, uu = np.nonzero(new)
    M[r[jj, uu], uu] = jj
    seg = np.minimum.accumulate(M[:R], axis=0).ravel()  # segment of every pixel (row-major)
    tan_row = np.tan(np.radians(el))
    horizon_c, zenith_c, vis, cover = _SKY[scene.season]
    rgb = np.zeros((R * W, 3), np.float32)
    depth = np.full(R * W, np.inf, np.float32)
    kind = np.full(R * W, KIND_SKY, np.uint8)

    # ground and roof tops: the pixel's own ray meets the plane z = h of its segment
    idx = np.flatnonzero((seg < 2 * S) & (seg % 2 == 1))
    if len(idx):
        k, u, te = seg[idx] // 2, idx % W, tan_row[idx // W]
        hh = h[k, u]
        dist = np.clip((c - hh) / np.maximum(-te, 1e-9), d[k], d_next[k, 0])
        px, py = x0 + dist * sa[u], y0 + dist * ca[u]
        # texels per image pixel (geometric mean of the footprint across and along the ray): pick the
        # orthophoto's pyramid level that matches, so far fields and markings do not alias
        foot = dist * pix_rad / scene.gsd / np.sqrt(np.maximum(-te / np.sqrt(1 + te * te), 0.02))
        gx, gy = (px - t.c) / t.a, (py - t.f) / t.e
        col = _sample_mip(scene._pyramid, _fold(gx, Ws), _fold(gy, Hs), foot)
        # fine grain (asphalt, grass blades) where the orthophoto's pixels are larger than the image's
        near = np.flatnonzero(dist < 25.0)
        if len(near):
            g = scene._grain
            n = g.shape[0]
            grain = _sample(g, (px[near] / 0.04) % n, (py[near] / 0.04) % n, cv2.BORDER_WRAP) - np.float32(0.5)
            amp = np.float32(0.22) * (np.float32(1) - dist[near].astype(np.float32) / np.float32(25.0))
            col[near] *= (np.float32(1) + amp * grain)[:, None]
        rgb[idx] = _haze(col, dist, horizon_c, vis)
        depth[idx] = dist
        ti, tj = _cell(py, px, t, Hs, Ws)
        kt = np.full(len(k), KIND_GROUND, np.uint8)
        raised = hh > 0
        kt[raised] = KIND_OTHER
        kt[raised & (scene.building_id[ti, tj] > 0)] = KIND_ROOF
        kt[raised & (scene.tree_id[ti, tj] > 0)] = KIND_CROWN
        kt[(gx < 0) | (gx >= Ws) | (gy < 0) | (gy >= Hs)] = KIND_FAR
        kind[idx] = kt
    # raised sides: facades, roof slopes seen from below, crowns, anything else
    idx = np.flatnonzero((seg < 2 * S) & (seg % 2 == 0))
    if len(idx):
        k, u = seg[idx] // 2, idx % W
        col, depth[idx], kind[idx], und = _shade_sides(
            scene, x0, y0, c, d_wall[k, u], tan_row[idx // W], sa[u], ca[u], h_wall[k, u], h_prev[k, u])
        rgb[idx] = _haze(col, depth[idx], horizon_c, vis)
        under = idx[und] if see_through else None
    # beyond the world: flat ground to the horizon, then the distant tree line
    idx = np.flatnonzero(seg == 2 * S)
    if len(idx):
        te = tan_row[idx // W]
        below = te < 0
        forest = np.array((0.12, 0.17, 0.11), np.float32) if scene.season != "winter" else np.array(
            (0.30, 0.32, 0.34), np.float32)
        depth[idx] = np.where(below, c / np.maximum(-te, 1e-9), 4000.0)
        col = np.broadcast_to(forest, (len(idx), 3)).copy()
        b = np.flatnonzero(below)
        if len(b):
            # beyond the reach: the world's ground, mirrored, under the haze
            dist = np.minimum(depth[idx][b], 8000.0)
            u = idx[b] % W
            fx_b = _fold((x0 + dist * sa[u] - t.c) / t.a, Ws)
            fy_b = _fold((y0 + dist * ca[u] - t.f) / t.e, Hs)
            foot = dist * pix_rad / scene.gsd / np.sqrt(np.maximum(-te[b] / np.sqrt(1 + te[b] ** 2), 0.02))
            col[b] = _sample_mip(scene._pyramid, fx_b, fy_b, foot)
        rgb[idx] = _haze(col, depth[idx], horizon_c, vis)
        kind[idx] = KIND_FAR
    sky = np.flatnonzero(kind == KIND_SKY)
    if len(sky):
        rgb[sky] = _sky(scene, az[sky % W], el[sky // W], horizon_c, zenith_c, cover)
    out = cv2.convertScaleAbs(rgb.reshape(R, W, 3), alpha=255.0)
    depth, kind = depth.reshape(R, W), kind.reshape(R, W)
    if under is not None and len(under):
        ucols = np.unique(under % W)
        r0, r1 = int(under.min() // W), int(under.max() // W) + 1
        bare = _render_grid(scene._bare(), pose, np.asarray(az_deg)[ucols], np.asarray(el_deg)[r0:r1],
                            see_through=False)
        pos = np.searchsorted(ucols, under % W)
        rows = under // W - r0
        out.reshape(-1, 3)[under] = bare.rgb[rows, pos]
        depth.reshape(-1)[under] = bare.depth_m[rows, pos]
        kind.reshape(-1)[under] = bare.kind[rows, pos]
    return StreetLayers(out, depth, kind)


def _fold(v: np.ndarray, n: int) -> np.ndarray:
    """Continuous grid coordinates mirrored back into [0, n] (reflection at both edges, repeated)."""
    v = np.asarray(v, np.float64)
    if v.size == 0 or (float(v.min()) >= 0.0 and float(v.max()) <= n):
        return v
    r = np.mod(v, 2.0 * n)
    return np.where(r > n, 2.0 * n - r, r)


def _sample_mip(pyramid: list[np.ndarray], x: np.ndarray, y: np.ndarray, foot: np.ndarray) -> np.ndarray:
    """Colours (N, 3) at level-0 continuous pixel coordinates (x, y) (corners at integers), each from the
    pyramid level whose texel matches its footprint ``foot`` (level-0 texels per image pixel)."""
    level = np.clip(np.floor(np.log2(np.maximum(foot, 1.0))), 0, len(pyramid) - 1).astype(np.int64)
    out = np.empty((len(x), 3), np.float32)
    for lv in np.unique(level):
        m = np.flatnonzero(level == lv)
        k = float(2 ** int(lv))
        out[m] = _sample(pyramid[int(lv)], x[m] / k - 0.5, y[m] / k - 0.5, cv2.BORDER_REFLECT)
    return out


def _haze(col: np.ndarray, dist: np.ndarray, horizon, vis: float) -> np.ndarray:
    """Aerial perspective: blend colours (N, 3) towards the horizon colour with distance (visibility ``vis`` m)."""
    tau = np.exp(-np.minimum(np.asarray(dist, np.float32), np.float32(1e5)) / np.float32(vis))[:, None]
    return col * tau + np.asarray(horizon, np.float32) * (np.float32(1) - tau)


def _cell(y: np.ndarray, x: np.ndarray, t: affine.Affine, Hs: int, Ws: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) indices of the grid cells holding UTM points; outside the grid, of the mirrored world."""
    return _fold_cells(np.floor((y - t.f) / t.e).astype(np.int64), Hs), \
        _fold_cells(np.floor((x - t.c) / t.a).astype(np.int64), Ws)


def _fold_cells(i: np.ndarray, n: int) -> np.ndarray:
    """Cell indices mirrored into [0, n) (cell -1 mirrors to 0, n to n - 1, and so on)."""
    if i.size and (int(i.min()) < 0 or int(i.max()) >= n):
        i = np.mod(i, 2 * n)
        np.subtract(2 * n - 1, i, out=i, where=i >= n)
    return i


def _fold_xy(t: affine.Affine, Hs: int, Ws: int, x: np.ndarray, y: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """UTM points mirrored into the world: (x, y) there, the mirror sign (+1 / -1) of each axis, and whether
    the point lies outside the world."""
    gx, gy = (x - t.c) / t.a, (y - t.f) / t.e
    out = (gx < 0) | (gx >= Ws) | (gy < 0) | (gy >= Hs)
    if not out.any():
        one = np.ones(len(gx))
        return x, y, one, one, out
    sx = 1.0 - 2.0 * np.mod(np.floor(gx / Ws), 2)
    sy = 1.0 - 2.0 * np.mod(np.floor(gy / Hs), 2)
    return t.c + _fold(gx, Ws) * t.a, t.f + _fold(gy, Hs) * t.e, sx, sy, out


def _shade_sides(scene: StreetScene, x0: float, y0: float, c: float, dw: np.ndarray, tan_el: np.ndarray,
                 sa: np.ndarray, ca: np.ndarray, htop: np.ndarray, hprev: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Colour, depth, kind and "see through" of pixels on the rising side of a raised object (one entry each).

    ``dw`` is the distance where the pixel's ray meets the side, ``htop`` the object's height there and
    ``hprev`` the height just before it (0 for a wall standing on the ground, > 0 for a roof slope or a
    crown's upper part seen from below).
    """
    t = scene.transform
    Hs, Ws = scene.shape
    z = c + dw * tan_el
    inner = dw + 1e-3  # just inside the object: the bisection leaves dw on its inner side
    wi, wj = _cell(y0 + inner * ca, x0 + inner * sa, t, Hs, Ws)
    # the hit point in the world (mirrored back when the ray met the mirror image beyond the edge)
    hx, hy, mx, my, beyond = _fold_xy(t, Hs, Ws, x0 + inner * sa, y0 + inner * ca)
    bid, tid = scene.building_id[wi, wj], scene.tree_id[wi, wj]
    col = np.zeros((len(dw), 3), np.float32)
    kind = np.full(len(dw), KIND_OTHER, np.uint8)
    under = np.zeros(len(dw), bool)
    wall = (bid > 0) & (hprev <= 0)
    top = np.zeros((len(dw), 3), np.float32)  # the colour seen from above, where it is used (not on facades)
    nw = np.flatnonzero(~wall)
    top[nw] = _sample(scene.top_rgb, (hx[nw] - t.c) / t.a - 0.5, (hy[nw] - t.f) / t.e - 0.5)
    if wall.any():
        col[wall] = facade_colour(scene, bid[wall], hx[wall], hy[wall], z[wall], htop[wall])
        kind[wall] = KIND_WALL
    roof = (bid > 0) & (hprev > 0)
    col[roof] = top[roof] * np.float32(0.8)
    kind[roof] = KIND_ROOF
    tree = (bid == 0) & (tid > 0)
    if tree.any():
        zt, ht, ti = z[tree], htop[tree], tid[tree]
        # texture coordinate around the trunk: arc length on the crown's side (world-fixed, smooth)
        rx, ry = hx[tree] - scene._tree_xy[ti, 0], hy[tree] - scene._tree_xy[ti, 1]
        lateral = np.arctan2(rx, ry) * np.hypot(rx, ry) + 7.3 * ti
        g = scene._grain
        n = g.shape[0]
        leaf = _sample(g, (lateral / 0.08) % n, (zt / 0.08) % n, cv2.BORDER_WRAP)
        zr = np.clip(zt / np.maximum(ht, 1e-3), 0, 1).astype(np.float32)
        base = np.float32(0.5) * (top[tree] + scene._tree_rgb[ti])
        ct = base * ((np.float32(0.55) + np.float32(0.35) * zr) * (np.float32(0.6) + np.float32(0.8) * leaf))[:, None]
        # below the crown: the trunk where the ray passes the tree's centre; around it a forest's dark
        # undergrowth, or what lies behind a free-standing tree (``under``: filled in by the caller)
        is_open = scene._tree_open[ti]
        top_t = scene._tree_top[ti]
        # the trunk's offset from the ray, with the tree where the ray met it (its mirror image, maybe)
        tx = x0 + inner[tree] * sa[tree] - mx[tree] * rx
        ty = y0 + inner[tree] * ca[tree] - my[tree] * ry
        off = np.abs((tx - x0) * ca[tree] - (ty - y0) * sa[tree])
        rel = np.clip(off / scene._tree_r[ti], 0, 1)
        low = np.where(scene._tree_conifer[ti], 0.08, 0.3)  # conifers keep branches low
        base = np.where(is_open, low * (1 + rel * rel), 0.18) * top_t  # a rounded underside on free trees
        band = zt < base
        if band.any():
            trunk = off[band] < 0.1 + 0.01 * top_t[band]
            ct[band] = np.where(trunk[:, None], _TRUNK * np.float32(1.8), ct[band] * np.float32(0.45))
            bi = np.flatnonzero(tree)[np.flatnonzero(band)]
            under[bi[~trunk & is_open[band]]] = True
        col[tree] = ct
        kind[tree] = KIND_CROWN
    rest = (bid == 0) & (tid == 0)
    if rest.any():
        zr = np.clip(z[rest] / np.maximum(htop[rest], 1e-3), 0, 1)[:, None].astype(np.float32)
        col[rest] = top[rest] * (np.float32(0.55) + np.float32(0.35) * zr)
    kind[beyond] = KIND_FAR
    return col, dw.astype(np.float32), kind, under


def _sample(img: np.ndarray, col, row, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Bilinear samples of ``img`` at pixel-centre coordinates (col, row): (N, 3) float32 0..1 for a uint8 RGB
    image, (N,) float32 for a single-channel float image."""
    mx = np.asarray(col, np.float32).reshape(1, -1)
    my = np.asarray(row, np.float32).reshape(1, -1)
    n = mx.shape[1]
    rgb = img.ndim == 3
    out = np.empty((n, 3) if rgb else n, np.float32)
    step = 30000  # cv2.remap maps are limited to SHRT_MAX columns
    for s in range(0, n, step):
        seg = cv2.remap(img, mx[:, s:s + step], my[:, s:s + step], cv2.INTER_LINEAR, borderMode=border)
        out[s:s + step] = seg.reshape(-1, 3) if rgb else seg.reshape(-1)
    if rgb:
        out *= np.float32(1.0 / 255.0)
    return out


def facade_colour(scene: StreetScene, bid: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                  htop: np.ndarray) -> np.ndarray:
    """Facade colour at wall points (x, y, z) of buildings ``bid``: storeys with windows, plinth, sun shading."""
    fr = scene._frames[bid]
    rx, ry = x - fr[:, 0], y - fr[:, 1]
    ux, uy = np.cos(fr[:, 2]), np.sin(fr[:, 2])
    a = rx * ux + ry * uy
    b = -rx * uy + ry * ux
    end = (np.abs(a) - fr[:, 3]) > (np.abs(b) - fr[:, 4])  # on an end wall (normal along the axis)
    along = np.where(end, b + fr[:, 4], a + fr[:, 3])
    length = np.where(end, 2 * fr[:, 4], 2 * fr[:, 3])
    nx = np.where(end, np.sign(a) * ux, -np.sign(b) * uy)
    ny = np.where(end, np.sign(a) * uy, np.sign(b) * ux)
    sun = math.radians(scene.sun_azimuth_deg)
    lam = np.maximum(nx * math.sin(sun) + ny * math.cos(sun), 0.0)
    shade = (0.62 + 0.38 * lam).astype(np.float32)[:, None]
    col = scene._facade[bid].copy()
    nwin = np.floor(length / _WINDOW_PERIOD_M)
    off = (length - nwin * _WINDOW_PERIOD_M) / 2
    tpos = along - off
    tw = np.mod(tpos, _WINDOW_PERIOD_M)
    zz = np.mod(z, _STOREY_M)
    win = ((np.abs(tw - _WINDOW_PERIOD_M / 2) < _WINDOW_W_M / 2) & (tpos > 0) & (tpos < nwin * _WINDOW_PERIOD_M)
           & (zz > 0.9) & (zz < 2.3) & (z < htop - 0.6) & ~np.isin(scene.building_kind[bid], _NO_WINDOW_KINDS))
    col[win] = _WINDOW + np.float32(0.15) * np.clip(z[win] / 20.0, 0, 1)[:, None].astype(np.float32)
    band = (zz < 0.12) & (z > 1.0)
    col[band & ~win] *= np.float32(0.85)
    col[z < 0.45] *= np.float32(0.6)  # plinth
    return col * shade


def _sky(scene: StreetScene, az: np.ndarray, el: np.ndarray, horizon, zenith, cover: float) -> np.ndarray:
    """Sky colour: horizon-to-zenith gradient and clouds projected from a layer 1.5 km up."""
    t = np.clip(el / 60.0, 0, 1).astype(np.float32)[:, None] ** np.float32(0.6)
    col = np.array(horizon, np.float32) * (1 - t) + np.array(zenith, np.float32) * t
    e = np.radians(np.maximum(el, 1.0))
    r = 1500.0 / np.tan(e)  # metres to the cloud point
    n = scene._sky_noise.shape[0]
    cu = (r * np.sin(az) / 3000.0 * n) % n
    cv_ = (r * np.cos(az) / 3000.0 * n) % n
    noise = _sample(scene._sky_noise, cu, cv_, cv2.BORDER_WRAP)
    noise = noise.reshape(-1)
    cloud = np.clip((noise - (1 - cover)) / 0.25, 0, 1).astype(np.float32)[:, None]
    cloud *= np.clip(el / 4.0, 0, 1).astype(np.float32)[:, None]
    white = np.array((0.93, 0.93, 0.94), np.float32) * (np.float32(0.8) + np.float32(0.2) * t)
    return col * (1 - cloud * 0.85) + white * cloud * 0.85


def _check_scene(scene) -> StreetScene:
    if not isinstance(scene, StreetScene):
        raise ConfigError(f"scene must be a StreetScene (StreetScene.from_world(world)), got {type(scene).__name__}")
    return scene


def _check_size(name: str, v) -> int:
    if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 8 <= int(v) <= 16384):
        raise ConfigError(f"{name} must be an integer within [8, 16384], got {v!r}")
    return int(v)


def panorama_layers(scene: StreetScene, pose: GroundPose, width: int = 1024, height: int = 512) -> StreetLayers:
    """Equirectangular 360° panorama with per-pixel depth and kind (see :func:`render_panorama`)."""
    _check_scene(scene)
    width, height = _check_size("width", width), _check_size("height", height)
    scene.check_pose(pose)
    u = (np.arange(width) + 0.5) / width
    v = (np.arange(height) + 0.5) / height
    el = 90.0 - 180.0 * v
    if pose.pitch_deg == 0 and pose.roll_deg == 0:
        return _render_grid(scene, pose, pose.heading_deg + 360.0 * u - 180.0, el)
    # a tilted panorama camera: render level, then resample along the rotated rays
    level = _render_grid(scene, pose, pose.heading_deg + 360.0 * u - 180.0, el)
    az_c = np.radians(360.0 * u - 180.0)[None, :]
    el_c = np.radians(el)[:, None]
    body = np.stack([np.cos(el_c) * np.cos(az_c), -np.cos(el_c) * np.sin(az_c), np.sin(el_c) + 0 * az_c], -1)
    from ..camera import body_to_enu

    rot = body_to_enu(0.0, pose.pitch_deg, pose.roll_deg)  # ENU with north = the heading
    e = body @ rot.T
    az_w = np.degrees(np.arctan2(e[..., 0], e[..., 1]))
    el_w = np.degrees(np.arcsin(np.clip(e[..., 2], -1, 1)))
    mu = ((az_w + 180.0) / 360.0 * width - 0.5).astype(np.float32)
    mv = ((90.0 - el_w) / 180.0 * height - 0.5).astype(np.float32)
    return _resample(level, mu, mv, cv2.BORDER_WRAP)


def _resample(src: StreetLayers, mu: np.ndarray, mv: np.ndarray, border: int) -> StreetLayers:
    rgb = cv2.remap(src.rgb, mu, mv, cv2.INTER_LINEAR, borderMode=border)
    depth = cv2.remap(src.depth_m, mu, mv, cv2.INTER_NEAREST, borderMode=border)
    kind = cv2.remap(src.kind, mu, mv, cv2.INTER_NEAREST, borderMode=border)
    return StreetLayers(rgb, depth, kind)


def render_panorama(scene: StreetScene, pose: GroundPose, width: int = 1024, height: int = 512) -> np.ndarray:
    """360° equirectangular panorama (height, width, 3) uint8 RGB from ``pose``.

    Column ``u`` looks at azimuth ``heading + 360 (u + 0.5) / width - 180`` (the centre column along the
    heading), row ``v`` at elevation ``90 - 180 (v + 0.5) / height``; with a non-zero pitch / roll these are
    angles in the tilted camera's frame.
    """
    return panorama_layers(scene, pose, width, height).rgb


def _check_intrinsics(intr) -> CameraIntrinsics:
    if not isinstance(intr, CameraIntrinsics):
        raise ConfigError(f"intr must be a CameraIntrinsics, got {type(intr).__name__}")
    if intr.distorted:
        raise ConfigError(f"intr: the street renderer draws ideal pinhole frames; got distortion model "
                          f"{intr.dist_model!r} {intr.dist} (use intr.pinhole())")
    if intr.width * intr.height > 4096 * 4096:
        raise ConfigError(f"intr: {intr.width}x{intr.height} is too large a frame to render (at most 4096x4096 px)")
    return intr


def ground_layers(scene: StreetScene, pose: GroundPose, intr: CameraIntrinsics) -> StreetLayers:
    """Forward pinhole frame with per-pixel depth and kind (see :func:`render_ground`)."""
    _check_scene(scene)
    intr = _check_intrinsics(intr)
    scene.check_pose(pose)
    W, H = intr.width, intr.height
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)
    e = rays @ pose.rotation().T
    e /= np.linalg.norm(e, axis=-1, keepdims=True)
    az = np.degrees(np.arctan2(e[..., 0], e[..., 1]))
    el = np.degrees(np.arcsin(np.clip(e[..., 2], -1, 1)))
    rel = (az - pose.heading_deg + 180.0) % 360.0 - 180.0
    # angular pixel pitch: finest where the rays are most oblique to the optical axis
    cos_max = 1.0 / math.sqrt(1.0 + float((rays[..., 0] ** 2 + rays[..., 1] ** 2).max()))
    density = max(intr.fx, intr.fy) * min(1.0 / cos_max ** 2, _OVERSAMPLE)  # px per radian
    pad = 2.0 / density * 180 / math.pi
    a0, a1 = float(rel.min()) - pad, float(rel.max()) + pad
    if a1 - a0 > 300.0:  # the frame holds a pole: every azimuth
        a0, a1 = -180.0, 180.0
    e0, e1 = max(float(el.min()) - pad, -89.9), min(float(el.max()) + pad, 89.9)
    nw = max(2, int(math.ceil(math.radians(a1 - a0) * density)))
    nh = max(2, int(math.ceil(math.radians(e1 - e0) * density)))
    az_g = np.linspace(a0, a1, nw)
    el_g = np.linspace(e1, e0, nh)
    level = _render_grid(scene, pose, pose.heading_deg + az_g, el_g)
    mu = ((rel - a0) / (a1 - a0) * (nw - 1)).astype(np.float32)
    mv = ((e1 - el) / (e1 - e0) * (nh - 1)).astype(np.float32)
    return _resample(level, mu, mv, cv2.BORDER_REPLICATE)


def render_ground(scene: StreetScene, pose: GroundPose, intr: CameraIntrinsics) -> np.ndarray:
    """Forward pinhole frame (intr.height, intr.width, 3) uint8 RGB from ``pose`` (ideal pinhole ``intr``)."""
    return ground_layers(scene, pose, intr).rgb


def _layers_of(world_or_scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, affine.Affine, str]:
    """(road_kind, height, label, transform, name) of a World or a StreetScene."""
    if isinstance(world_or_scene, StreetScene):
        s = world_or_scene
        if s.road_kind is None:
            raise ConfigError("road_poses: this StreetScene has no road_kind layer (build it with road_kind=...)")
        return s.road_kind, s.height, s.label, s.transform, "scene"
    lay = getattr(world_or_scene, "layers", None)
    if not isinstance(lay, dict) or "road_kind" not in lay:
        raise ConfigError(f"road_poses expects a World or a StreetScene, got {type(world_or_scene).__name__}")
    return lay["road_kind"], lay["height"], lay["label"], world_or_scene.transform, f"world seed {world_or_scene.cfg.seed}"


def road_axes(road: np.ndarray, gsd: float, sigma_m: float = 4.0) -> np.ndarray:
    """Per pixel, the direction along the road (radians, clockwise from north, modulo pi) of a road mask.

    From the structure tensor of the smoothed mask: the dominant gradient runs across the road.
    """
    f = road.astype(np.float32)
    f = cv2.GaussianBlur(f, (0, 0), max(1.0 / gsd, 0.5))
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    s = max(sigma_m / gsd, 1.0)
    jxx = cv2.GaussianBlur(gx * gx, (0, 0), s)
    jyy = cv2.GaussianBlur(gy * gy, (0, 0), s)
    jxy = cv2.GaussianBlur(gx * gy, (0, 0), s)
    across = 0.5 * np.arctan2(2 * jxy, jxx - jyy)  # pixel axes: x east, y south
    # along = across + 90 deg; as an azimuth (clockwise from north): east = sin, north = -y
    ax, ay = -np.sin(across), np.cos(across)  # along direction in pixel axes
    return np.mod(np.arctan2(ax, -ay), np.pi)


def road_poses(world, n: int, rng: np.random.Generator, height_m=HEIGHT_RANGE_M, region=None,
               include_tracks: bool = False, clearance_m: float = 1.5, heading_jitter_deg: float = 5.0,
               pitch_std_deg: float = 0.0, roll_std_deg: float = 0.0) -> list[GroundPose]:
    """``n`` random street-level poses on the drivable roads of a World (or a StreetScene with ``road_kind``).

    Positions are on arterials and residential streets (``road_kind`` 1..2, farm tracks 3 too with
    ``include_tracks``), at least ``clearance_m`` from the road edge, buildings and trees; headings run along
    the road (either direction, normal jitter of ``heading_jitter_deg`` std); heights uniform in ``height_m``
    (a (lo, hi) range or one value); pitch / roll normal with the given std (clipped to ±:data:`MAX_TILT_DEG`).
    ``region`` (xmin, ymin, xmax, ymax) in UTM metres restricts the positions (to keep training and
    evaluation ground apart).
    """
    road_kind, height, label, t, name = _layers_of(world)
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ConfigError(f"road_poses: n must be a positive integer, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"road_poses: rng must be a numpy Generator, got {type(rng).__name__}")
    hr = (float(height_m), float(height_m)) if np.isscalar(height_m) else tuple(float(v) for v in height_m)
    if len(hr) != 2 or not (HEIGHT_RANGE_M[0] <= hr[0] <= hr[1] <= HEIGHT_RANGE_M[1]):
        raise ConfigError(f"road_poses: height_m must be within {HEIGHT_RANGE_M} m, got {height_m!r}")
    gsd = float(t.a)
    kinds = (1, 2, 3) if include_tracks else (1, 2)
    road = np.isin(road_kind, kinds)
    free = (road & (height <= 0)).astype(np.uint8)
    dist = cv2.distanceTransform(free, cv2.DIST_L2, 5) * gsd  # to the nearest non-road or raised pixel
    ok = dist >= clearance_m
    Hs, Ws = road.shape
    if region is not None:
        try:
            xa, ya, xb, yb = (float(v) for v in region)
        except (TypeError, ValueError):
            raise ConfigError(f"road_poses: region must be (xmin, ymin, xmax, ymax), got {region!r}") from None
        if not (xa < xb and ya < yb):
            raise ConfigError(f"road_poses: region must be (xmin, ymin, xmax, ymax) with min < max, got {region!r}")
        c0, c1 = int(max(0, math.ceil((xa - t.c) / t.a))), int(min(Ws, math.floor((xb - t.c) / t.a)))
        r0, r1 = int(max(0, math.ceil((yb - t.f) / t.e))), int(min(Hs, math.floor((ya - t.f) / t.e)))
        m = np.zeros_like(ok)
        if c1 > c0 and r1 > r0:
            m[r0:r1, c0:c1] = True
        ok &= m
    ii, jj = np.nonzero(ok)
    if len(ii) == 0:
        raise ConfigError(f"road_poses: {name} has no drivable road (kinds {kinds}) with {clearance_m} m clearance"
                          + (f" inside region {tuple(region)}" if region is not None else ""))
    pick = rng.integers(0, len(ii), int(n))
    ii, jj = ii[pick], jj[pick]
    # road direction at the picks: structure tensor over a window around each (no full-raster blur)
    poses = []
    axes = _axes_at(road, ii, jj, gsd)
    flip = rng.random(int(n)) < 0.5
    jit = rng.normal(0.0, 1.0, int(n)) * float(heading_jitter_deg)
    hs = rng.uniform(hr[0], hr[1], int(n))
    pit = np.clip(rng.normal(0.0, 1.0, int(n)) * pitch_std_deg, -MAX_TILT_DEG, MAX_TILT_DEG) + 0.0  # no -0.0
    rol = np.clip(rng.normal(0.0, 1.0, int(n)) * roll_std_deg, -MAX_TILT_DEG, MAX_TILT_DEG) + 0.0
    sub = rng.uniform(0.25, 0.75, (int(n), 2))
    for k in range(int(n)):
        x = t.c + (jj[k] + sub[k, 0]) * t.a
        y = t.f + (ii[k] + sub[k, 1]) * t.e
        hd = (math.degrees(axes[k]) + (180.0 if flip[k] else 0.0) + jit[k]) % 360.0
        poses.append(GroundPose(float(x), float(y), float(hd), float(hs[k]), float(pit[k]), float(rol[k])))
    return poses


def _axes_at(road: np.ndarray, ii: np.ndarray, jj: np.ndarray, gsd: float, half_m: float = 12.0) -> np.ndarray:
    """Road direction (radians clockwise from north, modulo pi) at pixels (ii, jj), from a local window each."""
    r = max(4, int(round(half_m / gsd)))
    Hs, Ws = road.shape
    out = np.zeros(len(ii))
    for k, (i, j) in enumerate(zip(ii, jj)):
        i0, i1, j0, j1 = max(0, i - r), min(Hs, i + r + 1), max(0, j - r), min(Ws, j + r + 1)
        win = road[i0:i1, j0:j1]
        out[k] = road_axes(win, gsd)[i - i0, j - j0]
    return out


def pose_latlon(world_or_scene, pose: GroundPose) -> tuple[float, float]:
    """WGS84 (lat, lon) of the camera of ``pose`` (a pose in the world's / scene's UTM CRS)."""
    crs = getattr(world_or_scene, "crs", None)
    if crs is None:
        raise ConfigError(f"pose_latlon expects a World or a StreetScene, got {type(world_or_scene).__name__}")
    if not isinstance(pose, GroundPose):
        raise ConfigError(f"pose must be a GroundPose, got {type(pose).__name__}")
    lon, lat = geo.transform(pose.x, pose.y, crs, geo.WGS84)
    return float(lat), float(lon)
