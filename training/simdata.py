"""Simulated cross-view pairs from any georeferenced map, with a held-out area for evaluation.

For every map (a procedural world from :mod:`gleam_ros.core.sim.world`, or a real map opened with
:func:`gleam_ros.core.maps.open_map`) the map's working-CRS extent is cut in two along one axis: the
``holdout_fraction`` on the ``holdout_side`` (default the east) is evaluation ground, the rest training
ground, with a ``buffer_m`` strip used by neither. Nothing rendered for training touches evaluation
ground (UAV footprints and reference crops are checked whole), so evaluation never sees training ground.

Training pairs (per map, ``train_centres`` places at least ``min_sep_m`` apart; a place is the label):

* ``uav``: a camera-simulator frame (:func:`gleam_ros.core.sim.render_view`, random altitude in
  ``alt_range``, heading, tilt up to ``max_tilt_deg``) whose centre ray hits the place, rendered over a
  query appearance of the map (procedural worlds: re-renders in other seasons / appearance seeds, so the
  query never matches the reference pixel for pixel); its heading is stored so training can align it the
  way the unknown-yaw test-time rotations would;
* ``map`` (procedural worlds): the street-map raster around the place, north up;
* ``ground`` (procedural worlds): a street-level pinhole photo (:func:`gleam_ros.core.sim.street.render_ground`)
  from a pose on a road (random K with hfov in ``ground_hfov_deg``, height in ``ground_height_m``, pitch
  and roll up to ``ground_max_tilt_deg``), rendered in a season other than the reference's where the
  world allows; its reference is the north-up satellite crop of
  :data:`gleam_ros.core.preprocess.GROUND_TILE_M` (50 m) centred on the camera (as VIGOR / CVUSA), not
  jittered. The photo keeps its own orientation (no heading alignment: a car camera's yaw relative to
  north is what the network must cope with);
* ``panorama`` (procedural worlds): a 360-degree equirectangular render from a road pose, stored
  **north-aligned**: rolled with :func:`gleam_ros.core.preprocess.panorama_north_up` so that its centre
  column looks north (as CVUSA aligns them), using the true heading plus a uniform error of up to
  ``pano_heading_noise_deg`` (a vehicle's heading estimate is not exact); same 50 m reference crop.
  At run time the vehicle localizer aligns its panoramas with the same function and its heading estimate;
* reference: the satellite crop of ``tile_size_m`` around the place shifted by up to ``ref_jitter_m``
  (an index tile is rarely centred on the query), ``store_px`` pixels square.

Evaluation (per map): the gallery is the grid of index tiles (``tile_size_m``, ``eval_overlap``,
``eval_tile_gsd_m``, exactly as ``gleam index build`` cuts them) lying wholly in the held-out strip; queries
are UAV frames (random heading, a photometric change of strength ``eval_photometric``) and street-map crops
over that strip; the positives of a query are the tiles containing its ground centre point. Ground and
panorama queries (road poses in the strip) have their own gallery: 50 m north-up crops on a
``ground_eval_stride_m`` grid wholly inside the strip (``eval/<map>/tiles50.csv``); a query's positives are
the crops whose centre lies within half a stride of the camera in both axes (1 to 4 crops).

Everything is generated once into ``<cache_dir>/<name>-<hash of the spec>/`` (images plus ``train.csv``,
``eval/<map>/tiles.csv``, ``eval/<map>/<modality>.csv`` and ``manifest.json``) and reused.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gleam_ros.core import geo
from gleam_ros.core.camera import CameraIntrinsics, ground_intersection
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.maps import GeoMap, map_from_array, open_map
from gleam_ros.core.preprocess import GROUND_TILE_M, panorama_north_up
from gleam_ros.core.sim.camera_sim import Pose, apply_photometric, footprint_latlon, random_photometric, render_view
from gleam_ros.core.sim.world import SEASONS, WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, crop_map, render_tile, tile_id_for

from .datasets import Pair, RetrievalSet, SourceData

__all__ = ["SIM_FORMAT", "SIM_MODALITIES", "STREET_MODALITIES", "SimSpec", "ensure_generated", "generate", "read_generated",
           "read_simulated_source"]

_LOG = logging.getLogger(__name__)
SIM_FORMAT = 2
_SIDES = ("east", "west", "north", "south")
SIM_MODALITIES = ("uav", "map", "ground", "panorama")
STREET_MODALITIES = ("ground", "panorama")


@dataclass
class SimSpec:
    """What to simulate (the keys of a ``type: simulated`` data set in the training config).

    ``maps``: list of ``{world: {WorldConfig keys}, query_variants: [{season, seed, sun_azimuth_deg,
    sun_elevation_deg}], name}`` or ``{path: <map>, name}``. The default query variants of a world are its
    four seasons with appearance seeds other than the reference's.
    """

    maps: list = field(default_factory=list)
    cache_dir: str = "data/sim"
    modalities: list = field(default_factory=lambda: ["uav", "map"])
    train_centres: int = 200
    eval_queries: int = 50
    holdout_fraction: float = 0.25
    holdout_side: str = "east"
    buffer_m: float = 20.0
    tile_size_m: float = 100.0
    eval_tile_gsd_m: float = 0.25
    eval_overlap: float = 0.5
    eval_min_valid: float = 0.9
    store_px: int = 256
    min_sep_m: float = 30.0
    ref_jitter_m: float = 25.0
    alt_range: list = field(default_factory=lambda: [100.0, 150.0])
    max_tilt_deg: float = 10.0
    hfov_deg: float = 60.0
    eval_photometric: float = 1.0
    ground_hfov_deg: list = field(default_factory=lambda: [60.0, 100.0])
    ground_height_m: list = field(default_factory=lambda: [1.2, 3.0])
    ground_max_tilt_deg: float = 5.0
    ground_size: list = field(default_factory=lambda: [320, 240])
    pano_size: list = field(default_factory=lambda: [512, 256])
    pano_heading_noise_deg: float = 5.0
    street_min_sep_m: float = 12.0
    ground_eval_stride_m: float = 25.0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict, where: str = "simulated") -> SimSpec:
        """Checked spec from a config mapping (:class:`ConfigError` on unknown keys or bad values)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; valid: {sorted(known)}")
        s = cls(**d)
        if not s.maps:
            raise ConfigError(f"{where}.maps: list at least one map ({{world: {{seed: 1}}}} or {{path: ...}})")
        for i, m in enumerate(s.maps):
            if not isinstance(m, dict) or (("world" in m) == ("path" in m)):
                raise ConfigError(f"{where}.maps[{i}]: give exactly one of 'world' (procedural) or 'path' (real map)")
            bad = sorted(set(m) - {"world", "path", "name", "query_variants"})
            if bad:
                raise ConfigError(f"{where}.maps[{i}]: unknown keys {bad}")
        bad = [m for m in s.modalities if m not in SIM_MODALITIES]
        if bad or not s.modalities:
            raise ConfigError(f"{where}.modalities: subset of {list(SIM_MODALITIES)}, got {s.modalities}")
        lo, hi = (float(v) for v in s.ground_hfov_deg)
        if not 20.0 <= lo <= hi < 170.0:
            raise ConfigError(f"{where}.ground_hfov_deg must be [low, high] within [20, 170), got {s.ground_hfov_deg}")
        lo, hi = (float(v) for v in s.ground_height_m)
        if not 0.3 <= lo <= hi <= 20.0:
            raise ConfigError(f"{where}.ground_height_m must be [low, high] within [0.3, 20] m, got {s.ground_height_m}")
        if not 0.0 <= float(s.ground_max_tilt_deg) <= 30.0:
            raise ConfigError(f"{where}.ground_max_tilt_deg must be within [0, 30], got {s.ground_max_tilt_deg}")
        for key in ("ground_size", "pano_size"):
            v = getattr(s, key)
            if len(v) != 2 or min(int(x) for x in v) < 32:
                raise ConfigError(f"{where}.{key} must be [width, height], both >= 32 px, got {v}")
        if not 0.0 <= float(s.pano_heading_noise_deg) <= 180.0:
            raise ConfigError(f"{where}.pano_heading_noise_deg must be within [0, 180], got {s.pano_heading_noise_deg}")
        if not float(s.ground_eval_stride_m) > 0.0:
            raise ConfigError(f"{where}.ground_eval_stride_m must be > 0, got {s.ground_eval_stride_m}")
        if not 0.0 <= float(s.holdout_fraction) <= 1.0:
            raise ConfigError(f"{where}.holdout_fraction must be within [0, 1], got {s.holdout_fraction}")
        if s.holdout_side not in _SIDES:
            raise ConfigError(f"{where}.holdout_side must be one of {_SIDES}, got {s.holdout_side!r}")
        if int(s.store_px) < 32:
            raise ConfigError(f"{where}.store_px must be >= 32, got {s.store_px}")
        lo, hi = (float(v) for v in s.alt_range)
        if not 10.0 <= lo <= hi:
            raise ConfigError(f"{where}.alt_range must be [low, high] with 10 <= low <= high, got {s.alt_range}")
        if not 0.0 <= float(s.max_tilt_deg) < 45.0:
            raise ConfigError(f"{where}.max_tilt_deg must be within [0, 45), got {s.max_tilt_deg}")
        TileSpec(size_m=s.tile_size_m, overlap=s.eval_overlap, gsd_m=s.eval_tile_gsd_m, min_valid=s.eval_min_valid)
        return s

    def key(self) -> str:
        """Hash of everything that changes the generated data (not the cache location)."""
        d = asdict(self)
        d.pop("cache_dir")
        d["format"] = SIM_FORMAT
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def intrinsics(self) -> CameraIntrinsics:
        """The simulated UAV camera: 4:3, sized so that the yaw-TTA square crop is about ``store_px``."""
        h = int(math.ceil(self.store_px * math.sqrt(2.0)))
        return CameraIntrinsics.from_fov(int(round(h * 4 / 3)), h, float(self.hfov_deg))


# ------------------------------------------------------------------------------------------- maps


@dataclass
class _SimMap:
    name: str
    ref: GeoMap
    street: GeoMap | None
    queries: list[GeoMap]
    world: Any = None  # procedural worlds only: the source of street-level scenes
    query_looks: list = field(default_factory=list)  # (season, appearance seed) of the query variants


def _load_map(i: int, m: dict) -> _SimMap:
    if "world" in m:
        w = m["world"] or {}
        if not isinstance(w, dict):
            raise ConfigError(f"maps[{i}].world must be a mapping of WorldConfig keys")
        cfg = WorldConfig(**w)
        world = make_world(cfg)
        name = str(m.get("name") or f"world{cfg.seed}")
        variants = m.get("query_variants")
        if variants is None:
            variants = [{"season": s, "seed": cfg.seed + 1000 + k} for k, s in enumerate(SEASONS)]
        qmaps = [map_from_array(world.variant(**v), world.crs, world.transform, name=f"{name}_q{k}")
                 for k, v in enumerate(variants)] or [world.satellite_map()]
        looks = [(v.get("season") or cfg.season, v.get("seed")) for v in variants]
        return _SimMap(name, world.satellite_map(), world.street_map_map(), qmaps, world, looks)
    path = Path(str(m["path"])).expanduser()
    ref = open_map(path)
    return _SimMap(str(m.get("name") or path.name), ref, None, [ref])


def _regions(bounds: tuple[float, float, float, float], frac: float, side: str, buffer_m: float
             ) -> tuple[tuple | None, tuple | None]:
    """(train, eval) boxes (xmin, ymin, xmax, ymax) in the working CRS; None when empty."""
    xmin, ymin, xmax, ymax = bounds
    if frac >= 1.0:
        return None, bounds
    if frac <= 0.0:
        return bounds, None
    half = buffer_m / 2.0
    if side in ("east", "west"):
        cut = xmax - frac * (xmax - xmin) if side == "east" else xmin + frac * (xmax - xmin)
        lo, hi = (xmin, ymin, cut - half, ymax), (cut + half, ymin, xmax, ymax)
    else:
        cut = ymax - frac * (ymax - ymin) if side == "north" else ymin + frac * (ymax - ymin)
        lo, hi = (xmin, ymin, xmax, cut - half), (xmin, cut + half, xmax, ymax)
    train, ev = (lo, hi) if side in ("east", "north") else (hi, lo)
    return train, ev


def _inside(box: tuple, xs: np.ndarray, ys: np.ndarray) -> bool:
    return bool(np.all((xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])))


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]), params):
        raise OSError(f"cannot write {path}")


class _Renderer:
    def __init__(self, sm: _SimMap, spec: SimSpec) -> None:
        self.sm = sm
        self.spec = spec
        self.intr = spec.intrinsics()
        self.crs = sm.ref.working_crs

    def latlon(self, x: float, y: float) -> tuple[float, float]:
        lon, lat = geo.transform(x, y, self.crs, geo.WGS84)
        return float(lat), float(lon)

    def uav(self, x: float, y: float, box: tuple, rng: np.random.Generator, qmap: GeoMap, tries: int = 6
            ) -> tuple[np.ndarray, Pose] | None:
        """A frame whose centre ray hits (x, y), footprint inside ``box`` and >= 98 % valid; None if none found."""
        s, intr = self.spec, self.intr
        lat, lon = self.latlon(x, y)
        for _ in range(tries):
            alt = float(rng.uniform(*s.alt_range))
            hdg = float(rng.uniform(0.0, 360.0))
            pitch, roll = (float(v) for v in rng.uniform(-s.max_tilt_deg, s.max_tilt_deg, 2))
            probe = Pose(0.0, lat, lon, alt, hdg, pitch, roll)
            e, n, ok = ground_intersection(intr, probe.camera_rotation(), np.array([0.0, 0.0, alt]),
                                           np.array([intr.cx]), np.array([intr.cy]))
            if not ok.all():
                continue
            clat, clon = geo.offset_latlon(lat, lon, -float(e[0]), -float(n[0]))
            pose = Pose(0.0, clat, clon, alt, hdg, pitch, roll)
            try:
                fp = footprint_latlon(pose, intr)
            except ConfigError:
                continue
            fx, fy = geo.transform(fp[:, 1], fp[:, 0], geo.WGS84, self.crs)
            if not _inside(box, np.asarray(fx), np.asarray(fy)):
                continue
            rgb, valid = render_view(qmap, pose, intr)
            if valid.mean() >= 0.98:
                return rgb, pose
        return None

    def crop(self, gm: GeoMap, x: float, y: float, size_m: float | None = None, min_valid: float = 0.98
             ) -> np.ndarray | None:
        """North-up crop of ``size_m`` (default ``tile_size_m``) centred on (x, y), ``store_px`` square."""
        s = self.spec
        size = float(size_m or s.tile_size_m)
        rgb, valid = crop_map(gm, x, y, size, size / s.store_px)
        return rgb if valid.mean() >= min_valid else None

    # ---- street level (procedural worlds only)

    def scene(self, rng: np.random.Generator) -> Any:
        """A street-level scene of the world in a query look, preferring seasons other than the reference's."""
        from gleam_ros.core.sim import street

        looks = self.sm.query_looks or [(None, None)]
        ref_season = self.sm.world.cfg.season
        other = [lk for lk in looks if lk[0] != ref_season] or looks
        look = other[int(rng.integers(len(other)))]
        if not hasattr(self, "_scenes"):
            self._scenes: dict = {}
        if look not in self._scenes:
            self._scenes[look] = street.StreetScene.from_world(self.sm.world, season=look[0], appearance_seed=look[1])
        return self._scenes[look]

    def street_poses(self, box: tuple, n: int, rng: np.random.Generator, margin: float) -> list:
        """Up to ``n`` road poses in ``box`` shrunk by ``margin``, ``street_min_sep_m`` apart, with random
        height, pitch and roll."""
        from gleam_ros.core.errors import GleamError
        from gleam_ros.core.sim import street

        s = self.spec
        inner = (box[0] + margin, box[1] + margin, box[2] - margin, box[3] - margin)
        if n <= 0 or inner[2] <= inner[0] or inner[3] <= inner[1]:
            return []
        try:
            cands = street.road_poses(self.sm.world, 3 * n, rng, height_m=tuple(float(v) for v in s.ground_height_m),
                                      region=inner)
        except GleamError as exc:
            _LOG.warning("map %s: no road poses in %s: %s", self.sm.name, inner, exc)
            return []
        out: list = []
        pts = np.zeros((0, 2))
        t = float(s.ground_max_tilt_deg)
        for p in cands:
            if len(out) >= n:
                break
            if pts.size and np.min(np.hypot(pts[:, 0] - p.x, pts[:, 1] - p.y)) < float(s.street_min_sep_m):
                continue
            pitch, roll = (float(v) for v in rng.uniform(-t, t, 2))
            out.append(dataclasses.replace(p, pitch_deg=pitch, roll_deg=roll))
            pts = np.vstack([pts, [p.x, p.y]])
        return out

    def street_view(self, mod: str, pose: Any, rng: np.random.Generator) -> np.ndarray:
        """A ground photo (random hfov) or a north-aligned panorama (heading error up to the noise) at ``pose``."""
        from gleam_ros.core.sim import street

        s = self.spec
        scene = self.scene(rng)
        if mod == "ground":
            hfov = float(rng.uniform(*s.ground_hfov_deg))
            intr = CameraIntrinsics.from_fov(int(s.ground_size[0]), int(s.ground_size[1]), hfov)
            return street.render_ground(scene, pose, intr)
        pano = street.render_panorama(scene, pose, width=int(s.pano_size[0]), height=int(s.pano_size[1]))
        noise = float(rng.uniform(-1.0, 1.0)) * float(s.pano_heading_noise_deg)
        return panorama_north_up(pano, pose.heading_deg + noise)


def _centres(box: tuple, n: int, margin: float, min_sep: float, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` points in ``box`` shrunk by ``margin``, pairwise at least ``min_sep`` apart (dart throwing)."""
    x0, y0, x1, y1 = box[0] + margin, box[1] + margin, box[2] - margin, box[3] - margin
    if x1 <= x0 or y1 <= y0 or n <= 0:
        return np.zeros((0, 2))
    pts: list[tuple[float, float]] = []
    arr = np.zeros((0, 2))
    for _ in range(60 * n):
        if len(pts) >= n:
            break
        p = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
        if arr.size and np.min(np.hypot(arr[:, 0] - p[0], arr[:, 1] - p[1])) < min_sep:
            continue
        pts.append(p)
        arr = np.asarray(pts)
    return arr


def _grid(box: tuple, size: float, stride: float) -> list[tuple[int, int, float, float]]:
    """Tile origins (row, col, x0, y0) wholly inside ``box`` (as ``tiles.tile_grid``: last one flush with the edge)."""
    def offs(extent: float) -> np.ndarray:
        if extent < size - 1e-9:
            return np.zeros(0)
        k = math.ceil((extent - size) / stride - 1e-9) + 1
        o = np.arange(k, dtype=float) * stride
        o[-1] = extent - size
        return o
    xmin, ymin, xmax, ymax = box
    return [(r, c, float(xmin + dx), float(ymax - dy)) for r, dy in enumerate(offs(ymax - ymin))
            for c, dx in enumerate(offs(xmax - xmin))]


# ------------------------------------------------------------------------------------------- generation


def _gen_map(sm: _SimMap, spec: SimSpec, out: Path, mi: int, train_rows: list[dict]) -> dict:
    rng = np.random.default_rng([int(spec.seed), mi, 17])
    rd = _Renderer(sm, spec)
    train_box, eval_box = _regions(sm.ref.bounds(), float(spec.holdout_fraction), spec.holdout_side, float(spec.buffer_m))
    mods = [m for m in spec.modalities if m == "uav" or (m == "map" and sm.street is not None)]
    info: dict[str, Any] = {"name": sm.name, "train_box": train_box, "eval_box": eval_box, "train": 0, "eval": {}}
    half = spec.tile_size_m / 2.0
    if train_box is not None and spec.train_centres > 0:
        pts = _centres(train_box, int(spec.train_centres), half + spec.ref_jitter_m, float(spec.min_sep_m), rng)
        if len(pts) < spec.train_centres:
            _LOG.warning("map %s: only %d of %d training places fit %.0f m apart", sm.name, len(pts),
                         spec.train_centres, spec.min_sep_m)
        for k, (x, y) in enumerate(pts):
            for mod in mods:
                if mod == "uav":
                    qmap = sm.queries[int(rng.integers(len(sm.queries)))]
                    got = rd.uav(x, y, train_box, rng, qmap)
                    if got is None:
                        continue
                    q, pose = got
                    heading = pose.heading_deg
                else:
                    q = rd.crop(sm.street, x, y)
                    heading = None
                    if q is None:
                        continue
                jx, jy = rng.uniform(-spec.ref_jitter_m, spec.ref_jitter_m, 2)
                r = rd.crop(sm.ref, x + jx, y + jy)
                if r is None:
                    continue
                qp = Path("train") / sm.name / f"{k:05d}_{mod}.{'png' if mod == 'map' else 'jpg'}"
                rp = Path("train") / sm.name / f"{k:05d}_{mod}_sat.jpg"
                _write(out / qp, q)
                _write(out / rp, r)
                train_rows.append({"query": str(qp), "satellite": str(rp), "label": f"{sm.name}:{k}", "modality": mod,
                                   "heading_deg": "" if heading is None else f"{heading:.4f}", "map": sm.name,
                                   "x": f"{x:.3f}", "y": f"{y:.3f}", "ref_x": f"{x + jx:.3f}", "ref_y": f"{y + jy:.3f}"})
                info["train"] += 1
    smods = [m for m in spec.modalities if m in STREET_MODALITIES and sm.world is not None]
    gh = GROUND_TILE_M / 2.0
    if smods and train_box is not None and spec.train_centres > 0:
        poses = rd.street_poses(train_box, int(spec.train_centres), rng, gh)
        for k, pose in enumerate(tqdm_maybe(poses, f"{sm.name} street pairs")):
            r = rd.crop(sm.ref, pose.x, pose.y, GROUND_TILE_M)
            if r is None:
                continue
            rp = Path("train") / sm.name / f"s{k:05d}_sat.jpg"
            _write(out / rp, r)
            for mod in smods:
                q = rd.street_view(mod, pose, rng)
                qp = Path("train") / sm.name / f"s{k:05d}_{mod}.jpg"
                _write(out / qp, q)
                train_rows.append({"query": str(qp), "satellite": str(rp), "label": f"{sm.name}:s{k}", "modality": mod,
                                   "heading_deg": "", "map": sm.name, "x": f"{pose.x:.3f}", "y": f"{pose.y:.3f}",
                                   "ref_x": f"{pose.x:.3f}", "ref_y": f"{pose.y:.3f}"})
                info["train"] += 1
    if eval_box is None or spec.eval_queries <= 0:
        return info
    if smods:
        info["eval"].update(_gen_street_eval(rd, sm, spec, out, mi, eval_box, smods))
    tspec = TileSpec(size_m=spec.tile_size_m, overlap=spec.eval_overlap, gsd_m=spec.eval_tile_gsd_m,
                     min_valid=spec.eval_min_valid)
    tiles = []
    edir = Path("eval") / sm.name
    for r_, c_, x0, y0 in _grid(eval_box, tspec.size_m, tspec.stride_m):
        t = render_tile(sm.ref, tspec, x0, y0, tile_id_for(r_, c_))
        if t is None:
            continue
        p = edir / "tiles" / f"{t.tile_id}.jpg"
        _write(out / p, t.image)
        tiles.append({"image": str(p), "tile_id": t.tile_id, "x0": t.x0, "y0": t.y0, "size_m": t.size_m,
                      "center_lat": t.center_lat, "center_lon": t.center_lon})
    if not tiles:
        raise ConfigError(f"map {sm.name}: no evaluation tile of {spec.tile_size_m} m fits the held-out strip "
                          f"{eval_box} (raise holdout_fraction or lower tile_size_m)")
    with (out / edir / "tiles.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(tiles[0]))
        w.writeheader()
        w.writerows(tiles)
    tx0 = np.array([t["x0"] for t in tiles])
    ty0 = np.array([t["y0"] for t in tiles])
    size = tiles[0]["size_m"]
    fp_half = 0.5 * spec.alt_range[1] * math.tan(math.radians(spec.hfov_deg / 2.0)) * 0.8
    for mod in [m for m in mods if m not in STREET_MODALITIES]:
        rows = []
        erng = np.random.default_rng([int(spec.seed), mi, 23, len(mod)])
        margin = fp_half if mod == "uav" else half
        tries = 0
        while len(rows) < spec.eval_queries and tries < 40 * spec.eval_queries:
            tries += 1
            x = float(erng.uniform(eval_box[0] + margin, eval_box[2] - margin)) if eval_box[2] - eval_box[0] > 2 * margin \
                else 0.5 * (eval_box[0] + eval_box[2])
            y = float(erng.uniform(eval_box[1] + margin, eval_box[3] - margin)) if eval_box[3] - eval_box[1] > 2 * margin \
                else 0.5 * (eval_box[1] + eval_box[3])
            pos = np.flatnonzero((tx0 <= x) & (x < tx0 + size) & (ty0 - size < y) & (y <= ty0))
            if pos.size == 0:
                continue
            heading = ""
            if mod == "uav":
                got = rd.uav(x, y, eval_box, erng, sm.queries[int(erng.integers(len(sm.queries)))])
                if got is None:
                    continue
                q, pose = got
                ph = random_photometric(erng, float(spec.eval_photometric))
                valid = q.any(axis=2)
                q = apply_photometric(q, ph, erng)
                q[~valid] = 0
                heading = f"{pose.heading_deg:.4f}"
            else:
                q = rd.crop(sm.street, x, y)
                if q is None:
                    continue
            k = len(rows)
            p = edir / mod / f"{k:05d}.{'png' if mod == 'map' else 'jpg'}"
            _write(out / p, q)
            lat, lon = rd.latlon(x, y)
            rows.append({"image": str(p), "x": f"{x:.3f}", "y": f"{y:.3f}", "lat": f"{lat:.8f}", "lon": f"{lon:.8f}",
                         "heading_deg": heading,
                         "positives": " ".join(str(int(i)) for i in pos)})
        if rows:
            with (out / edir / f"{mod}.csv").open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        info["eval"][mod] = len(rows)
    info["tiles"] = len(tiles)
    return info


def tqdm_maybe(items: list, desc: str) -> Any:
    """``items`` wrapped in a tqdm bar when there are many (street rendering takes a while)."""
    if len(items) < 20:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="pose", leave=False)


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _gen_street_eval(rd: _Renderer, sm: _SimMap, spec: SimSpec, out: Path, mi: int, eval_box: tuple,
                     smods: list[str]) -> dict[str, int]:
    """Ground / panorama evaluation of one map: a grid of 50 m crops in the held-out strip and road-pose queries."""
    edir = Path("eval") / sm.name
    stride = float(spec.ground_eval_stride_m)
    gh = GROUND_TILE_M / 2.0
    tiles = []
    for r_, c_, x0, y0 in _grid(eval_box, GROUND_TILE_M, stride):
        cx, cy = x0 + gh, y0 - gh
        img = rd.crop(sm.ref, cx, cy, GROUND_TILE_M, min_valid=float(spec.eval_min_valid))
        if img is None:
            continue
        p = edir / "tiles50" / f"r{r_:03d}_c{c_:03d}.jpg"
        _write(out / p, img)
        tiles.append({"image": str(p), "cx": f"{cx:.3f}", "cy": f"{cy:.3f}", "size_m": GROUND_TILE_M})
    if not tiles:
        raise ConfigError(f"map {sm.name}: no {GROUND_TILE_M:g} m evaluation crop fits the held-out strip {eval_box}")
    _write_csv(out / edir / "tiles50.csv", tiles)
    tcx = np.array([float(t["cx"]) for t in tiles])
    tcy = np.array([float(t["cy"]) for t in tiles])
    erng = np.random.default_rng([int(spec.seed), mi, 29])
    poses = rd.street_poses(eval_box, int(spec.eval_queries), erng, gh)
    counts = {}
    rows: dict[str, list[dict]] = {m: [] for m in smods}
    for pose in tqdm_maybe(poses, f"{sm.name} street eval"):
        pos = np.flatnonzero((np.abs(tcx - pose.x) <= stride / 2.0) & (np.abs(tcy - pose.y) <= stride / 2.0))
        if pos.size == 0:
            continue
        lat, lon = rd.latlon(pose.x, pose.y)
        for mod in smods:
            q = rd.street_view(mod, pose, erng)
            p = edir / mod / f"{len(rows[mod]):05d}.jpg"
            _write(out / p, q)
            rows[mod].append({"image": str(p), "x": f"{pose.x:.3f}", "y": f"{pose.y:.3f}", "lat": f"{lat:.8f}",
                              "lon": f"{lon:.8f}", "heading_deg": f"{pose.heading_deg:.4f}",
                              "positives": " ".join(str(int(i)) for i in pos)})
    for mod in smods:
        if rows[mod]:
            _write_csv(out / edir / f"{mod}.csv", rows[mod])
        counts[mod] = len(rows[mod])
    return counts


def _gen_map_job(spec_d: dict, out: str, mi: int) -> tuple[dict, list[dict]]:
    cv2.setNumThreads(1)
    spec = SimSpec(**spec_d)
    rows: list[dict] = []
    info = _gen_map(_load_map(mi, spec.maps[mi]), spec, Path(out), mi, rows)
    return info, rows


def generate(spec: SimSpec, out_dir: str | os.PathLike, progress: bool = False, jobs: int | None = None) -> Path:
    """Render the whole data set of ``spec`` into ``out_dir`` (replaced); returns ``out_dir``.

    ``jobs`` > 1 renders that many maps in parallel processes (default: ``$GLEAM_SIM_JOBS`` or 1); the
    result does not depend on it (every map has its own random stream).
    """
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    jobs = max(1, min(int(jobs or os.environ.get("GLEAM_SIM_JOBS", "1")), len(spec.maps)))
    spec_d = asdict(spec)
    results: list[tuple[dict, list[dict]]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(spec.maps), desc="simulating maps", unit="map")
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
            futs = [ex.submit(_gen_map_job, spec_d, str(tmp), mi) for mi in range(len(spec.maps))]
            for f in futs:
                results.append(f.result())
                if bar is not None:
                    bar.update(1)
    else:
        for mi in range(len(spec.maps)):
            results.append(_gen_map_job(spec_d, str(tmp), mi))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    rows = [r for _, rs in results for r in rs]
    infos = [i for i, _ in results]
    with (tmp / "train.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["query", "satellite", "label", "modality", "heading_deg", "map", "x", "y", "ref_x",
                                           "ref_y"])
        w.writeheader()
        w.writerows(rows)
    manifest = {"format": SIM_FORMAT, "key": spec.key(), "spec": asdict(spec), "maps": infos}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def ensure_generated(name: str, spec: SimSpec, progress: bool = False) -> Path:
    """The cache folder of ``spec`` (``<cache_dir>/<name>-<key>``), generated first when missing."""
    out = Path(spec.cache_dir).expanduser() / f"{name}-{spec.key()}"
    if not (out / "manifest.json").is_file():
        _LOG.info("generating simulated data set %s into %s", name, out)
        generate(spec, out, progress=progress)
    return out


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def read_generated(name: str, folder: str | os.PathLike, modalities: Sequence[str] | None = None) -> SourceData:
    """Training pairs and evaluation sets of a generated folder."""
    root = Path(folder)
    man = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    out = SourceData(name)
    for row in _read_csv(root / "train.csv"):
        if modalities and row["modality"] not in modalities:
            continue
        out.train.append(Pair(str(root / row["query"]), str(root / row["satellite"]), row["modality"],
                              f"{name}:{row['label']}", dataset=name,
                              heading_deg=float(row["heading_deg"]) if row["heading_deg"] else None))
    for info in man["maps"]:
        edir = root / "eval" / info["name"]
        if not (edir / "tiles.csv").is_file():
            continue
        tiles = [str(root / t["image"]) for t in _read_csv(edir / "tiles.csv")]
        tiles50 = ([str(root / t["image"]) for t in _read_csv(edir / "tiles50.csv")]
                   if (edir / "tiles50.csv").is_file() else [])
        for mod in SIM_MODALITIES:
            f = edir / f"{mod}.csv"
            if (modalities and mod not in modalities) or not f.is_file():
                continue
            rows = _read_csv(f)
            out.eval.append(RetrievalSet(
                f"{name}/{info['name']}", mod, "satellite", [str(root / r["image"]) for r in rows],
                tiles50 if mod in STREET_MODALITIES else tiles,
                [np.array([int(v) for v in r["positives"].split()], dtype=np.int64) for r in rows],
            ))
    return out


def read_simulated_source(name: str, spec: dict) -> SourceData:
    """Reader of ``type: simulated`` data sets: generate into the cache when needed, then read."""
    s = SimSpec.from_dict(dict(spec), where=f"datasets.{name}")
    folder = ensure_generated(name, s)
    return read_generated(name, folder)
