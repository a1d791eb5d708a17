"""Simulated query/reference pairs over any GeoMap: positives and hard negatives with ground truth.

A query is a UAV frame rendered with :func:`~gleam_ros.core.sim.camera_sim.render_view` at a random
pose (plus a random photometric change). The reference candidates are the map's tiles
(:func:`~gleam_ros.core.tiles.iter_tiles`), embedded into a :class:`~gleam_ros.core.index.TileIndex`.

- **positive**: the tile the query's ground footprint covers most (at least ``min_pos_overlap`` of
  the tile's area);
- **wrong tiles**: tiles the footprint does not touch at all *and* whose centre is at least one tile
  size from the footprint's centre; partly overlapping tiles are neither (ambiguous, left out);
- **hard negatives**: the wrong tile the embedding finds most similar (``hard_embedding``: the
  nearest wrong tile in embedding space, what retrieval confuses) and the wrong tile nearest on the
  ground (``hard_spatial``).

Each pair carries an :class:`~gleam_ros.core.explain.ExplainContext` as the pipeline would give it:
the tile, the camera intrinsics, altitude / heading priors (with noise), the pair's embedding
similarity (max over yaw hypotheses, as :meth:`TileIndex.search_multi` scores) and the similarity of
the best tile of another place (centre at least one tile size from the explained tile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
from matplotlib.path import Path as MplPath

from gleam_ros.core import geo
from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.encoder import embed_rotations
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.explain.schema import ExplainContext
from gleam_ros.core.index import TileIndex
from gleam_ros.core.sim.camera_sim import (
    Pose,
    apply_photometric,
    footprint_latlon,
    ground_points,
    random_photometric,
    random_poses,
    render_view,
)
from gleam_ros.core.tiles import Tile, TileSpec, iter_tiles
from gleam_ros.core.verify import Priors

KINDS = ("positive", "hard_embedding", "hard_spatial")


@dataclass(frozen=True)
class PairSpec:
    """How to simulate pairs (lengths in metres, angles in degrees)."""

    n_queries: int = 40
    tile_size_m: float = 100.0
    tile_overlap: float = 0.5
    tile_gsd_m: float = 0.25
    tile_min_valid: float = 0.9
    width: int = 480
    height: int = 360
    hfov_deg: float = 60.0
    alt_range: tuple[float, float] = (80.0, 130.0)
    max_tilt_deg: float = 8.0
    photometric: float = 1.0
    min_pos_overlap: float = 0.5
    negatives: tuple[str, ...] = ("hard_embedding", "hard_spatial")
    n_rotations: int = 8
    alt_prior_noise_m: float = 3.0
    heading_prior_noise_deg: float = 5.0
    priors: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [k for k in self.negatives if k not in KINDS[1:]]
        if bad:
            raise ConfigError(f"PairSpec.negatives: unknown kinds {bad}; valid: {KINDS[1:]}")
        if self.n_queries < 1:
            raise ConfigError(f"PairSpec.n_queries must be >= 1, got {self.n_queries}")

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """The query camera."""
        return CameraIntrinsics.from_fov(self.width, self.height, self.hfov_deg)

    def tile_spec(self) -> TileSpec:
        """The reference tiling."""
        return TileSpec(size_m=self.tile_size_m, overlap=self.tile_overlap, gsd_m=self.tile_gsd_m,
                        min_valid=self.tile_min_valid)


@dataclass
class Pair:
    """One query/reference pair with its ground truth (``label`` 1 = same place)."""

    query_id: str
    kind: str
    label: int
    query: np.ndarray
    tile: Tile
    context: ExplainContext
    pose: Pose
    overlap: float  # share of the tile's area the query footprint covers
    distance_m: float  # tile centre to the footprint centre
    rank: int  # retrieval rank of the tile for this query (1 = best)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> np.ndarray:
        """The reference image (the tile's)."""
        return self.tile.image


class PairSimulator:
    """Tiles + index of a reference map, and pairs of frames rendered from a query map (same georeferencing).

    ``query_map`` defaults to ``ref_map``; pass another render of the same place (another season) to
    make appearance change part of the task. ``backend`` is an encoder backend.
    """

    def __init__(self, ref_map, backend, spec: PairSpec | None = None, query_map=None) -> None:
        self.spec = spec or PairSpec()
        self.ref_map = ref_map
        self.query_map = query_map if query_map is not None else ref_map
        self.backend = backend
        self.tiles = list(iter_tiles(ref_map, self.spec.tile_spec()))
        if len(self.tiles) < 4:
            raise ConfigError(f"map {getattr(ref_map, 'name', '')!r} gives only {len(self.tiles)} tiles; need >= 4")
        self.index = TileIndex.build(self.tiles, backend, progress=False)
        crs = ref_map.working_crs
        self._crs = crs
        cx, cy = geo.transform(np.array([t.center_lon for t in self.tiles]), np.array([t.center_lat for t in self.tiles]),
                               geo.WGS84, crs)
        self._centres = np.stack([cx, cy], axis=1)
        # tile sample points (12 x 12 per tile) in the working CRS, for footprint overlaps
        g = (np.arange(12) + 0.5) / 12.0
        uu, vv = np.meshgrid(g, g)
        self._samples = []
        for t in self.tiles:
            n = t.image.shape[0]
            x, y = t.pixel_to_crs(uu.ravel() * n - 0.5, vv.ravel() * n - 0.5)
            if str(t.crs) != str(geo.crs_key(crs)):
                x, y = geo.transform(x, y, t.crs, crs)
            self._samples.append(np.stack([np.asarray(x), np.asarray(y)], axis=1))

    def _footprint(self, pose: Pose) -> tuple[MplPath, np.ndarray]:
        intr = self.spec.intrinsics
        fp = footprint_latlon(pose, intr)
        x, y = geo.transform(fp[:, 1], fp[:, 0], geo.WGS84, self._crs)
        lat, lon, _ = ground_points(pose, intr, np.array([(intr.width - 1) / 2]), np.array([(intr.height - 1) / 2]))
        cx, cy = geo.transform(lon, lat, geo.WGS84, self._crs)
        return MplPath(np.stack([x, y], axis=1)), np.array([float(np.ravel(cx)[0]), float(np.ravel(cy)[0])])

    def pairs(self, query_map=None, n_queries: int | None = None, seed: int | None = None) -> Iterator[Pair]:
        """Yield the pairs of ``n_queries`` queries (default ``spec.n_queries``) rendered from ``query_map``
        (default the simulator's), positive first, then the hard negatives of each query."""
        spec = self.spec if seed is None else replace(self.spec, seed=int(seed))
        qmap = self.query_map if query_map is None else query_map
        n = spec.n_queries if n_queries is None else int(n_queries)
        intr = spec.intrinsics
        poses = random_poses(qmap, n, alt_range=spec.alt_range, max_tilt_deg=spec.max_tilt_deg,
                             seed=spec.seed, require_valid=0.98, intr=intr)
        n_tiles = len(self.tiles)
        size = spec.tile_size_m
        for qi, pose in enumerate(poses):
            rng = np.random.default_rng([spec.seed, qi, 7])
            rgb, valid = render_view(qmap, pose, intr)
            img = apply_photometric(rgb, random_photometric(rng, spec.photometric), rng)
            img[~valid] = 0
            emb = embed_rotations(self.backend, img, "uav", n_rot=spec.n_rotations)
            sims = np.full(n_tiles, -1.0)
            for h in self.index.search_multi(emb, k=n_tiles):
                sims[h.tile_idx] = h.score
            rank = np.empty(n_tiles, int)
            rank[np.argsort(-sims, kind="stable")] = np.arange(1, n_tiles + 1)
            path, centre = self._footprint(pose)
            overlap = np.array([path.contains_points(s).mean() for s in self._samples])
            dist = np.hypot(*(self._centres - centre).T)
            pos = int(np.argmax(overlap))
            if overlap[pos] < spec.min_pos_overlap:
                continue
            wrong = np.flatnonzero((overlap == 0) & (dist >= size))
            chosen: list[tuple[str, int]] = [("positive", pos)]
            if len(wrong):
                emb_neg = int(wrong[np.argmax(sims[wrong])])
                if "hard_embedding" in spec.negatives:
                    chosen.append(("hard_embedding", emb_neg))
                if "hard_spatial" in spec.negatives:
                    order = wrong[np.argsort(dist[wrong], kind="stable")]
                    sp = next((int(i) for i in order if int(i) != emb_neg or "hard_embedding" not in spec.negatives), None)
                    if sp is not None:
                        chosen.append(("hard_spatial", sp))
            priors = None
            if spec.priors:
                priors = Priors(alt_m=max(1.0, pose.alt_m + float(rng.normal(0, spec.alt_prior_noise_m))),
                                heading_deg=float(np.mod(pose.heading_deg + rng.normal(0, spec.heading_prior_noise_deg),
                                                         360.0)))
            for kind, ti in chosen:
                far = np.hypot(*(self._centres - self._centres[ti]).T) >= size
                far[ti] = False
                nb = float(sims[far].max()) if far.any() else None
                tile = self.tiles[ti]
                ctx = ExplainContext(similarity=float(sims[ti]), next_best_similarity=nb, priors=priors, intrinsics=intr,
                                     tile=tile, modality="uav", query_stamp=float(pose.t))
                yield Pair(query_id=f"q{spec.seed}_{qi:04d}", kind=kind, label=int(kind == "positive"), query=img,
                           tile=tile, context=ctx, pose=pose, overlap=float(overlap[ti]), distance_m=float(dist[ti]),
                           rank=int(rank[ti]), meta={"valid_fraction": float(valid.mean())})


def simulate_pairs(ref_map, backend, spec: PairSpec | None = None, query_map=None) -> list[Pair]:
    """All pairs of a :class:`PairSimulator` as a list."""
    return list(PairSimulator(ref_map, backend, spec, query_map).pairs())


def summarize(pairs: list[Pair]) -> dict[str, Any]:
    """Counts of pairs per kind and the retrieval rank statistics of the positives."""
    kinds = {k: sum(p.kind == k for p in pairs) for k in KINDS}
    ranks = [p.rank for p in pairs if p.kind == "positive"]
    return {"pairs": len(pairs), "queries": len({p.query_id for p in pairs}), **kinds,
            "positive_top1": float(np.mean([r == 1 for r in ranks])) if ranks else math.nan,
            "positive_median_rank": float(np.median(ranks)) if ranks else math.nan}
