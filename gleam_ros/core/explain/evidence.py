"""The evidence backend of GLEAM-X: measure first, then speak.

:class:`EvidenceExplainer` compares a query image with a satellite reference by measurements
anybody can re-check, and says nothing it did not measure:

- **embedding similarity** of the two views and its **margin** over the best tile of another place
  (from the context, or computed with a given encoder backend);
- **local-feature inliers** (SIFT + robust homography, by :class:`~gleam_ros.core.verify.Verifier`),
  their **spread** over the query image, the implied **scale** (or camera **height**, with
  intrinsics and the reference's GSD) and **rotation**, checked against altitude / heading priors;
- **edge and road orientation structure**: magnitude-weighted gradient-orientation histograms,
  compared after aligning the reference to the query with the homography (or, without a reliable
  alignment, under the best rotation);
- **land cover** (vegetation, open water, built-up surfaces from colour indices) in corresponding
  regions.

A :class:`~.calibrate.VerdictModel` (logistic regression fitted on simulated positive / hard-negative
pairs, threshold chosen for precision) turns the measurements into a verdict; an aligned geometry
that contradicts an altitude or heading prior vetoes a match. The text is one sentence per evidence
item (:mod:`.text`), ending with the verdict sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from .. import geo
from ..errors import ConfigError, InputError
from ..tiles import Tile
from ..verify import Priors, Verification, Verifier, VerifyConfig, _homography_problem
from . import text as T
from .calibrate import VerdictModel, load_verdict_model
from .schema import (
    VERDICT_MATCH,
    VERDICT_NO_MATCH,
    EvidenceItem,
    ExplainContext,
    Explanation,
    Sentence,
    check_language,
    check_rgb,
)

BACKEND_NAME = "evidence"
LAND_COVER_CLASSES = tuple(s for s, _, _ in T.LAND_COVER)
_DUMMY_CRS = "EPSG:3067"  # any projected metric CRS: the verifier needs one for its (unused) pose


@dataclass(frozen=True)
class EvidenceConfig:
    """Settings of the measurements (not of the verdict, which the :class:`VerdictModel` holds).

    ``max_side``: images are measured at most this many pixels on a side (regions and points are
    reported in the pixels of the images as given). ``features`` / ``max_features`` / ``ratio`` /
    ``ransac_px``: local-feature matching (as :class:`VerifyConfig`). A homography *aligns* the images
    when it is plausible for a near-nadir view and has at least ``min_align_inliers`` inliers with an
    rms of at most ``max_align_rms_px`` reference pixels. ``grid``: the query is cut into grid x grid
    regions for the spread; a region counts when it holds ``min_cell_inliers`` inliers.
    ``alt_tolerance`` (relative) / ``heading_tolerance_deg``: agreement with the priors.
    ``n_rotations``: yaw hypotheses when the embedding similarity is computed here.
    ``min_land_cover_pct``: land-cover classes below this share in both images are not reported.
    """

    max_side: int = 1024
    features: str = "sift"
    max_features: int = 3000
    ratio: float = 0.8
    ransac_px: float = 4.0
    min_align_inliers: int = 15
    max_align_rms_px: float = 4.0
    grid: int = 3
    min_cell_inliers: int = 2
    orient_bins: int = 36
    alt_tolerance: float = 0.3
    heading_tolerance_deg: float = 30.0
    n_rotations: int = 8
    min_land_cover_pct: float = 0.5
    draw: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 64 <= int(self.max_side) <= 8192:
            raise ConfigError(f"EvidenceConfig.max_side must be within [64, 8192], got {self.max_side}")
        for name, lo in (("min_align_inliers", 4), ("grid", 1), ("min_cell_inliers", 1), ("orient_bins", 6),
                         ("n_rotations", 1)):
            if int(getattr(self, name)) < lo:
                raise ConfigError(f"EvidenceConfig.{name} must be >= {lo}, got {getattr(self, name)}")
        for name in ("max_align_rms_px", "alt_tolerance", "heading_tolerance_deg"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"EvidenceConfig.{name} must be positive, got {getattr(self, name)}")

    def verify_config(self) -> VerifyConfig:
        """The permissive verifier configuration used to collect match statistics (no checks, no pose)."""
        return VerifyConfig(features=self.features, max_features=self.max_features, ratio=self.ratio,
                            ransac_px=self.ransac_px, min_inliers=6, min_inlier_ratio=0.0, min_spread=0.0,
                            max_rms_px=1e3, bootstrap=10, seed=self.seed)


@dataclass
class Measurements:
    """Everything measured on one pair, in pixels of the images as given (NaN / None when not measured)."""

    query_shape: tuple[int, int]
    reference_shape: tuple[int, int]
    similarity: float | None = None
    next_best_similarity: float | None = None
    matches: int = 0
    inliers: int = 0
    rms_px: float = math.nan
    spread: float = 0.0
    cells: int = 0
    total_cells: int = 9
    homography: np.ndarray | None = None
    pts_query: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    pts_reference: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    plausible: bool = False
    aligned: bool = False
    scale: float = math.nan  # reference px per query px at the query centre
    anisotropy: float = math.nan
    heading_deg: float = math.nan  # direction of the query's top, clockwise from the reference's up (north)
    height_m: float | None = None
    edge_corr: float = math.nan
    edge_dominant_query_deg: float = math.nan
    edge_dominant_reference_deg: float = math.nan
    land_cover: dict[str, tuple[float, float]] = field(default_factory=dict)  # class -> (query, reference) fraction
    overlap_query_box: list[float] | None = None
    overlap_reference_box: list[float] | None = None
    cell_boxes_query: list[list[float]] = field(default_factory=list)
    cell_boxes_reference: list[list[float]] = field(default_factory=list)
    priors: Priors | None = None

    @property
    def inlier_ratio(self) -> float:
        """Inliers / tentative matches (0 without matches)."""
        return self.inliers / self.matches if self.matches else 0.0

    @property
    def margin(self) -> float | None:
        """Similarity minus the next-best tile's similarity (None when either is unknown)."""
        if self.similarity is None or self.next_best_similarity is None:
            return None
        return self.similarity - self.next_best_similarity

    def features(self) -> dict[str, float | None]:
        """The verdict model's :data:`~.calibrate.FEATURES` (None where not measured)."""
        has_h = self.homography is not None
        f: dict[str, float | None] = {
            "similarity": self.similarity,
            "margin": self.margin,
            "log_inliers": math.log1p(self.inliers),
            "inlier_ratio": self.inlier_ratio,
            "spread": self.spread,
            "rms": min(self.rms_px, 10.0) if has_h and math.isfinite(self.rms_px) else 10.0,
            "plausible": float(self.plausible),
            "log_aniso": min(math.log(self.anisotropy), 3.0) if has_h and math.isfinite(self.anisotropy) else 3.0,
            "aligned": float(self.aligned),
            "edge_aligned": _nz(self.edge_corr) if self.aligned else 0.0,
            "edge_free": 0.0 if self.aligned else _nz(self.edge_corr),
        }
        for c in LAND_COVER_CLASSES:
            q, r = self.land_cover.get(c, (0.0, 0.0))
            f[f"lc_{c}"] = abs(q - r)
        return f

    def item_values(self) -> dict[str, float]:
        """Raw values of the items with a neutral point (keys of :data:`~.calibrate.NEUTRAL_KEYS`; NaN when absent)."""
        nan = math.nan
        d = {
            "similarity": nan if self.similarity is None else self.similarity,
            "margin": nan if self.margin is None else self.margin,
            "inliers": float(self.inliers) if self.homography is not None else nan,
            "spread_pct": 100.0 * self.spread if self.homography is not None else nan,
            "edge_aligned": self.edge_corr if self.aligned else nan,
            "edge_free": nan if self.aligned else self.edge_corr,
        }
        for c in LAND_COVER_CLASSES:
            q, r = self.land_cover.get(c, (nan, nan))
            d[f"lc_{c}_pp"] = 100.0 * abs(q - r)
        return d


def _nz(v: float) -> float:
    return float(v) if math.isfinite(v) else 0.0


# --------------------------------------------------------------------------------------------- image measures


def valid_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels that carry image content (not the pure black of off-map / no-data areas)."""
    return np.any(rgb > 0, axis=2)


def land_cover_masks(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel land-cover classes from colour indices (no near-infrared band is assumed).

    - vegetation: excess green ``(2G - R - B) / (R + G + B) > 0.05``;
    - open water: blue over red by more than 0.05, darker than 0.4 (max channel), saturated (> 0.2)
      and not strongly green;
    - built-up surfaces: grey (saturation < 0.25, mid brightness, not green) or reddish roofs.
    The classes are exclusive; everything else is unclassified. Values are on a 0..1 scale.
    """
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    exg = (2 * g - r - b) / (r + g + b + 1e-6)
    v = x.max(axis=2)
    sat = (v - x.min(axis=2)) / (v + 1e-6)
    water = ((b - r) > 0.05) & (v < 0.4) & (sat > 0.2) & (exg < 0.15)
    veg = (exg > 0.05) & ~water
    built = (((sat < 0.25) & (exg < 0.04) & (v > 0.2) & (v < 0.7)) | ((exg < -0.03) & (r > b + 0.03))) & ~water & ~veg
    return {"vegetation": veg, "water": water, "built_up": built}


def orientation_histogram(gray: np.ndarray, mask: np.ndarray, bins: int = 36) -> np.ndarray:
    """Magnitude-weighted histogram of edge directions (0..180 deg clockwise from the image's up axis).

    Only the stronger half of the gradients inside ``mask`` counts (structure, not texture noise);
    the histogram is circularly smoothed and sums to 1 (all zeros when there is no edge).
    """
    g = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.2)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    # an edge's direction clockwise from "up" equals its gradient's angle clockwise from +x, modulo 180
    ang = np.mod(np.degrees(np.arctan2(gy, gx)), 180.0)
    m = mask & (mag > 0)
    if m.sum() < 16:
        return np.zeros(bins)
    thr = np.percentile(mag[m], 50.0)
    m &= mag >= thr
    idx = np.minimum((ang[m] / 180.0 * bins).astype(np.int64), bins - 1)
    h = np.bincount(idx, weights=mag[m].astype(np.float64), minlength=bins)
    h = 0.25 * np.roll(h, 1) + 0.5 * h + 0.25 * np.roll(h, -1)
    s = h.sum()
    return h / s if s > 0 else h


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / d if d > 1e-15 else 0.0


def _dominant_deg(h: np.ndarray) -> float:
    if not h.any():
        return math.nan
    bins = len(h)
    return (float(np.argmax(h)) + 0.5) * 180.0 / bins


def _bbox(pts: np.ndarray, w: int, h: int) -> list[float] | None:
    p = np.asarray(pts, float).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) == 0:
        return None
    x0, y0 = np.clip(p.min(axis=0), 0, [w - 1, h - 1])
    x1, y1 = np.clip(p.max(axis=0), 0, [w - 1, h - 1])
    if x1 <= x0 or y1 <= y0:
        return None
    return [round(float(x0), 1), round(float(y0), 1), round(float(x1), 1), round(float(y1), 1)]


def _mask_box(mask: np.ndarray, sx: float, sy: float) -> list[float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [round(xs.min() / sx, 1), round(ys.min() / sy, 1), round((xs.max() + 1) / sx, 1), round((ys.max() + 1) / sy, 1)]


def _apply_h(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[np.asarray(pts, float).reshape(-1, 2), np.ones(len(pts))] @ h.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / p[:, 2:3]


def _jacobian(h: np.ndarray, x: float, y: float) -> np.ndarray:
    p = h @ np.array([x, y, 1.0])
    return (h[:2, :2] * p[2] - np.outer(p[:2], h[2, :2])) / p[2] ** 2


def _resize(img: np.ndarray, f: float) -> np.ndarray:
    if f >= 1.0:
        return img
    w, h = max(16, round(img.shape[1] * f)), max(16, round(img.shape[0] * f))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------------------------- the explainer


class EvidenceExplainer:
    """Measure-then-speak explainer (CPU); see the module docstring.

    Args:
        model: a :class:`VerdictModel`, a path to one, or None for the shipped model (the
            uncalibrated verifier rule when none is installed; flagged ``uncalibrated``).
        backend: optional encoder backend (:mod:`gleam_ros.core.encoder`) to compute the embedding
            similarity when the context does not give it.
        config: :class:`EvidenceConfig`.

    Not thread-safe (the verifier caches reference features); use one instance per thread.
    """

    name = BACKEND_NAME

    def __init__(self, model: VerdictModel | str | None = None, backend: Any = None,
                 config: EvidenceConfig | None = None) -> None:
        self.cfg = config or EvidenceConfig()
        if not isinstance(self.cfg, EvidenceConfig):
            raise ConfigError(f"config must be an EvidenceConfig, got {type(self.cfg).__name__}")
        self.model = model if isinstance(model, VerdictModel) else load_verdict_model(model)
        self.backend = backend
        self._verifier = Verifier(self.cfg.verify_config())

    # ------------------------------------------------------------------ measuring
    def measure(self, query_rgb: np.ndarray, reference_rgb: np.ndarray,
                context: ExplainContext | None = None) -> Measurements:
        """Measure one pair (no verdict, no text): what :meth:`explain` and the calibration use."""
        q = check_rgb(query_rgb, "query image")
        r = check_rgb(reference_rgb, "reference image")
        ctx = context or ExplainContext()
        if not isinstance(ctx, ExplainContext):
            raise InputError(f"context must be an ExplainContext or None, got {type(ctx).__name__}")
        cfg = self.cfg
        hq, wq = q.shape[:2]
        hr, wr = r.shape[:2]
        if ctx.intrinsics is not None and (ctx.intrinsics.width, ctx.intrinsics.height) != (wq, hq):
            raise InputError(f"intrinsics are for {ctx.intrinsics.width}x{ctx.intrinsics.height} px but the query "
                             f"is {wq}x{hq} px")
        m = Measurements((hq, wq), (hr, wr), total_cells=cfg.grid * cfg.grid, priors=ctx.priors)
        m.similarity, m.next_best_similarity = self._similarity(q, r, ctx), ctx.next_best_similarity
        fq = min(1.0, cfg.max_side / max(hq, wq))
        fr = min(1.0, cfg.max_side / max(hr, wr))
        qw, rw = _resize(q, fq), _resize(r, fr)
        # actual factors after rounding (work px per original px, per axis)
        sqx, sqy = qw.shape[1] / wq, qw.shape[0] / hq
        srx, sry = rw.shape[1] / wr, rw.shape[0] / hr
        dq, dr = np.diag([sqx, sqy, 1.0]), np.diag([srx, sry, 1.0])

        v = ctx.verification if ctx.verification is not None else self._verify(qw, rw, ctx)
        if ctx.verification is not None:
            pq, pr = np.asarray(v.pts_frame, float), np.asarray(v.pts_tile, float)
            h_orig = None if v.homography is None else np.asarray(v.homography, float)
            rms = float(v.rms_px)
        else:
            pq = np.asarray(v.pts_frame, float) / [sqx, sqy]
            pr = np.asarray(v.pts_tile, float) / [srx, sry]
            h_orig = None if v.homography is None else np.linalg.inv(dr) @ np.asarray(v.homography, float) @ dq
            rms = float(v.rms_px) / math.sqrt(srx * sry) if math.isfinite(v.rms_px) else math.nan
        m.matches, m.inliers = int(v.matches), int(v.inliers)
        if h_orig is not None and m.inliers >= 4 and np.all(np.isfinite(h_orig)):
            m.homography = h_orig / h_orig[2, 2] if abs(h_orig[2, 2]) > 1e-12 else h_orig
            m.pts_query, m.pts_reference = pq, pr
            m.rms_px = rms
            m.spread = float(v.spread)
            self._geometry(m, ctx, wq, hq, wr, hr)
        else:
            m.inliers = 0
        h_work = dr @ m.homography @ np.linalg.inv(dq) if m.aligned else None
        self._appearance(m, qw, rw, h_work, (sqx, sqy), (srx, sry))
        return m

    def _similarity(self, q: np.ndarray, r: np.ndarray, ctx: ExplainContext) -> float | None:
        if ctx.similarity is not None:
            return float(ctx.similarity)
        if self.backend is None:
            return None
        from ..encoder import embed_rotations

        ref = np.asarray(self.backend.embed([r], "satellite"), np.float64)[0]
        if ctx.modality == "ground":
            emb = np.asarray(self.backend.embed([q], "ground"), np.float64)
        else:
            emb = np.asarray(embed_rotations(self.backend, q, ctx.modality, n_rot=self.cfg.n_rotations), np.float64)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return float(np.max(emb @ (ref / np.linalg.norm(ref))))

    def _verify(self, qw: np.ndarray, rw: np.ndarray, ctx: ExplainContext) -> Verification:
        tid = ctx.reference_id or "reference"
        gsd = ctx.gsd_m or 1.0
        n = rw.shape[1]
        tile = Tile(tile_id=f"explain:{tid}", image=rw, crs=_DUMMY_CRS, x0=300000.0, y0=6700000.0, gsd_m=float(gsd),
                    size_m=float(gsd) * n, center_lat=60.0, center_lon=22.0)
        with np.errstate(divide="ignore", invalid="ignore"):  # degenerate homographies of non-matching pairs
            return self._verifier.verify(qw, tile)

    def _geometry(self, m: Measurements, ctx: ExplainContext, wq: int, hq: int, wr: int, hr: int) -> None:
        cfg = self.cfg
        h = m.homography
        m.plausible = not _homography_problem(h, wq, hq)
        m.aligned = bool(m.plausible and m.inliers >= cfg.min_align_inliers and m.rms_px <= cfg.max_align_rms_px)
        cx, cy = (wq - 1) / 2.0, (hq - 1) / 2.0
        jac = _jacobian(h, cx, cy)
        if np.all(np.isfinite(jac)):
            s = np.linalg.svd(jac, compute_uv=False)
            det = float(np.linalg.det(jac))
            m.scale = math.sqrt(abs(det))
            m.anisotropy = float(s[0] / s[1]) if s[1] > 1e-12 else math.inf
            d = -jac[:, 1]  # where the query's "up" (0, -1) goes in the reference
            m.heading_deg = float(np.mod(math.degrees(math.atan2(d[0], -d[1])), 360.0))
        gsd = ctx.gsd_m
        v = ctx.verification
        if v is not None and math.isfinite(getattr(v, "alt_m", math.nan)):
            m.height_m = float(v.alt_m)
        elif ctx.intrinsics is not None and gsd is not None and math.isfinite(m.scale):
            m.height_m = float(m.scale * gsd * math.sqrt(ctx.intrinsics.fx * ctx.intrinsics.fy))
        # spread over grid cells
        g = cfg.grid
        cw, ch = wq / g, hq / g
        if len(m.pts_query):
            ci = np.clip((m.pts_query[:, 0] // cw).astype(int), 0, g - 1)
            cj = np.clip((m.pts_query[:, 1] // ch).astype(int), 0, g - 1)
            counts = np.bincount(cj * g + ci, minlength=g * g)
        else:
            counts = np.zeros(g * g, int)
        for k in np.flatnonzero(counts >= cfg.min_cell_inliers):
            i, j = k % g, k // g
            qb = [round(i * cw, 1), round(j * ch, 1), round((i + 1) * cw - 1, 1), round((j + 1) * ch - 1, 1)]
            sel = (ci == i) & (cj == j)
            corners = np.array([[qb[0], qb[1]], [qb[2], qb[1]], [qb[2], qb[3]], [qb[0], qb[3]]])
            rb = _bbox(_apply_h(h, corners), wr, hr) if m.plausible else _bbox(m.pts_reference[sel], wr, hr)
            m.cell_boxes_query.append(qb)
            m.cell_boxes_reference.append(rb or _bbox(m.pts_reference[sel], wr, hr) or [0.0, 0.0, 0.0, 0.0])
        m.cells = int((counts >= cfg.min_cell_inliers).sum())

    def _appearance(self, m: Measurements, qw: np.ndarray, rw: np.ndarray, h_work: np.ndarray | None,
                    sq: tuple[float, float], sr: tuple[float, float]) -> None:
        bins = self.cfg.orient_bins
        qvalid = valid_mask(qw)
        rvalid = valid_mask(rw)
        gq = cv2.cvtColor(qw, cv2.COLOR_RGB2GRAY)
        kernel = np.ones((7, 7), np.uint8)
        if h_work is not None:
            hq, wq = qw.shape[:2]
            inv = np.linalg.inv(h_work)
            rwarp = cv2.warpPerspective(rw, inv, (wq, hq), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            inside = cv2.warpPerspective(rvalid.astype(np.uint8), inv, (wq, hq), flags=cv2.INTER_NEAREST) > 0
            common = qvalid & inside & valid_mask(rwarp)
            if common.sum() >= 0.05 * qvalid.size:
                core = cv2.erode(common.astype(np.uint8), kernel) > 0
                hq_ = orientation_histogram(gq, core, bins)
                hr_ = orientation_histogram(cv2.cvtColor(rwarp, cv2.COLOR_RGB2GRAY), core, bins)
                m.edge_corr = _corr(hq_, hr_)
                m.edge_dominant_query_deg, m.edge_dominant_reference_deg = _dominant_deg(hq_), _dominant_deg(hr_)
                lq, lr = land_cover_masks(qw), land_cover_masks(rwarp)
                n = float(common.sum())
                m.land_cover = {c: (float((lq[c] & common).sum()) / n, float((lr[c] & common).sum()) / n)
                                for c in LAND_COVER_CLASSES}
                qb = _mask_box(common, *sq)
                m.overlap_query_box = qb
                if qb is not None:
                    corners = np.array([[qb[0], qb[1]], [qb[2], qb[1]], [qb[2], qb[3]], [qb[0], qb[3]]])
                    m.overlap_reference_box = _bbox(_apply_h(m.homography, corners), *m.reference_shape[::-1])
                return
            m.aligned = False  # too little overlap to compare appearance: treat as unaligned
        core_q = cv2.erode(qvalid.astype(np.uint8), kernel) > 0
        core_r = cv2.erode(rvalid.astype(np.uint8), kernel) > 0
        hq_ = orientation_histogram(gq, core_q, bins)
        hr_ = orientation_histogram(cv2.cvtColor(rw, cv2.COLOR_RGB2GRAY), core_r, bins)
        m.edge_corr = max(_corr(hq_, np.roll(hr_, k)) for k in range(bins))  # best over all rotations
        m.edge_dominant_query_deg, m.edge_dominant_reference_deg = _dominant_deg(hq_), _dominant_deg(hr_)
        lq, lr = land_cover_masks(qw), land_cover_masks(rw)
        nq, nr = max(float(qvalid.sum()), 1.0), max(float(rvalid.sum()), 1.0)
        m.land_cover = {c: (float((lq[c] & qvalid).sum()) / nq, float((lr[c] & rvalid).sum()) / nr)
                        for c in LAND_COVER_CLASSES}
        m.overlap_query_box = _mask_box(qvalid, *sq)
        m.overlap_reference_box = _mask_box(rvalid, *sr)

    # ------------------------------------------------------------------ speaking
    def explain(self, query_rgb: np.ndarray, reference_rgb: np.ndarray, context: ExplainContext | None = None,
                language: str = "en") -> Explanation:
        """Explain whether ``query_rgb`` and ``reference_rgb`` (RGB uint8) show the same place.

        ``context`` (:class:`ExplainContext`) adds what the caller knows (verification, similarities,
        priors, intrinsics, the tile); ``language`` is "en" or "zh". Returns an :class:`Explanation`
        whose every sentence comes from one evidence item (see :mod:`.text`).
        """
        check_language(language)
        ctx = context or ExplainContext()
        m = self.measure(query_rgb, reference_rgb, ctx)
        return self.explain_measurements(m, language, ctx, query_rgb, reference_rgb)

    def explain_measurements(self, m: Measurements, language: str = "en", context: ExplainContext | None = None,
                             query_rgb: np.ndarray | None = None, reference_rgb: np.ndarray | None = None) -> Explanation:
        """Verdict, evidence items and text from measurements (images only needed for the evidence image)."""
        check_language(language)
        ctx = context or ExplainContext()
        items, veto = self._items(m)
        feats = m.features()
        p, variant = self.model.probability(feats)
        match = p >= self.model.threshold and not veto
        flags = [f"model:{variant}"]
        if self.model.rule:
            flags.append("uncalibrated")
        if veto:
            flags.append("prior_veto")
        if m.similarity is None:
            flags.append("no_similarity")
        offcal = not self.model.rule and ctx.modality not in self.model.modalities
        if offcal:
            flags.append(f"uncalibrated_modality:{ctx.modality}")
        vvariant = ("veto" if veto else ("match" if match else "nomatch")) + ("_offcal" if offcal else "")
        items.append(self._make(len(items), "match_probability", vvariant, 100.0 * p, "%",
                                {"threshold": 100.0 * self.model.threshold}, [], []))
        for it in items:
            it.description = T.render(it, language)
        sentences = [Sentence(it.description, it.id) for it in items]
        exp = Explanation(
            verdict=VERDICT_MATCH if match else VERDICT_NO_MATCH,
            # a veto means the prior or the match is wrong, and the measurements cannot say which: at most a coin flip
            confidence=float(p if match else (max(1.0 - p, 0.5) if veto else 1.0 - p)),
            language=language,
            text=T.join_sentences([s.text for s in sentences], language),
            evidence=items,
            tile_id=ctx.reference_id,
            query_stamp=ctx.query_stamp,
            backend=self.name,
            p_match=float(p),
            sentences=sentences,
            flags=flags,
            faithfulness=1.0,
        )
        if self.cfg.draw and query_rgb is not None and reference_rgb is not None:
            from .draw import draw_evidence

            exp.evidence_image = draw_evidence(check_rgb(query_rgb, "query image"),
                                               check_rgb(reference_rgb, "reference image"), exp,
                                               m.pts_query, m.pts_reference)
        return exp

    @staticmethod
    def _make(i: int, kind: str, variant: str, value: float, unit: str, details: dict[str, float],
              qreg: list, rreg: list) -> EvidenceItem:
        value = T.round_field(kind, "value", value)
        details = {k: T.round_field(kind, k, v) for k, v in details.items()}
        return EvidenceItem(id=f"E{i + 1}", kind=kind, value=value, unit=unit, supports_match=T.supports(kind, variant),
                            query_regions=[b for b in qreg if b], reference_regions=[b for b in rreg if b],
                            details=details, variant=variant)

    def _items(self, m: Measurements) -> tuple[list[EvidenceItem], bool]:
        cfg, model = self.cfg, self.model
        hq, wq = m.query_shape
        hr, wr = m.reference_shape
        whole_q, whole_r = [0.0, 0.0, float(wq - 1), float(hq - 1)], [0.0, 0.0, float(wr - 1), float(hr - 1)]
        items: list[EvidenceItem] = []
        veto = False

        def add(kind, variant, value, unit, details=None, qreg=(), rreg=()):
            items.append(self._make(len(items), kind, variant, value, unit, details or {}, list(qreg), list(rreg)))

        vals = m.item_values()
        if m.similarity is not None:
            ok = model.supports("similarity", m.similarity)
            add("embedding_similarity", "for" if ok else "against", m.similarity, "", None, [whole_q], [whole_r])
        if m.margin is not None:
            sim, nb = T.round_field("embedding_margin", "next_best", m.similarity), T.round_field(
                "embedding_margin", "next_best", m.next_best_similarity)
            margin = T.round_field("embedding_margin", "value", sim - nb)
            # speaks for a match only when this reference actually beats every other place ("beats ... by")
            ok = model.supports("margin", m.margin) and margin > 0
            add("embedding_margin", "for" if ok else "against", margin, "", {"next_best": nb}, [whole_q], [whole_r])
        if m.homography is None:
            add("feature_inliers", "none", 0.0, "", {"matches": m.matches})
        else:
            ok = model.supports("inliers", float(m.inliers))
            add("feature_inliers", "for" if ok else "against", float(m.inliers), "",
                {"matches": m.matches, "ratio": 100.0 * m.inlier_ratio, "rms": m.rms_px},
                [_bbox(m.pts_query, wq, hq)], [_bbox(m.pts_reference, wr, hr)])
            if m.inliers >= cfg.min_align_inliers:  # the spread of a handful of chance inliers says nothing
                ok = model.supports("spread_pct", vals["spread_pct"])
                add("inlier_spread", "for" if ok else "against", 100.0 * m.spread, "%",
                    {"cells": m.cells, "total": m.total_cells}, m.cell_boxes_query, m.cell_boxes_reference)
            foot = None
            if m.plausible:
                corners = np.array([[0, 0], [wq - 1, 0], [wq - 1, hq - 1], [0, hq - 1]], float)
                foot = _bbox(_apply_h(m.homography, corners), wr, hr)
            pri = m.priors
            if m.height_m is not None and math.isfinite(m.height_m):
                if pri is not None and pri.alt_m is not None:
                    ok = m.plausible and abs(m.height_m - pri.alt_m) <= cfg.alt_tolerance * pri.alt_m
                    add("altitude", "prior_for" if ok else "prior_against", m.height_m, "m", {"prior": pri.alt_m},
                        [whole_q], [foot])
                    veto |= m.aligned and not ok
                else:
                    ok = m.plausible and 1.0 <= m.height_m <= 10000.0
                    add("altitude", "noprior_for" if ok else "noprior_against", m.height_m, "m", None, [whole_q], [foot])
            elif math.isfinite(m.scale):
                add("scale", "for" if m.plausible else "against", m.scale, "",
                    {"aniso": m.anisotropy if math.isfinite(m.anisotropy) else 999.0}, [whole_q], [foot])
            if m.plausible and math.isfinite(m.heading_deg):
                if pri is not None and pri.heading_deg is not None:
                    hdg = T.round_field("rotation", "value", m.heading_deg) % 360.0
                    prior = T.round_field("rotation", "prior", float(np.mod(pri.heading_deg, 360.0))) % 360.0
                    diff = abs(float(geo.heading_diff_deg(hdg, prior)))
                    ok = diff <= cfg.heading_tolerance_deg
                    add("rotation", "prior_for" if ok else "prior_against", hdg, "deg", {"prior": prior, "diff": diff},
                        [whole_q], [foot])
                    veto |= m.aligned and not ok
                else:
                    add("rotation", "noprior_for", T.round_field("rotation", "value", m.heading_deg) % 360.0, "deg", None,
                        [whole_q], [foot])
        if math.isfinite(m.edge_corr):
            key = "edge_aligned" if m.aligned else "edge_free"
            ok = model.supports(key, m.edge_corr)
            if m.aligned:
                add("edge_orientation", "aligned_for" if ok else "aligned_against", m.edge_corr, "",
                    {"dq": _nz(m.edge_dominant_query_deg), "dr": _nz(m.edge_dominant_reference_deg)},
                    [m.overlap_query_box], [m.overlap_reference_box])
            else:
                add("edge_orientation", "free_for" if ok else "free_against", m.edge_corr, "", None,
                    [m.overlap_query_box], [m.overlap_reference_box])
        for c in LAND_COVER_CLASSES:
            if c not in m.land_cover:
                continue
            q, r = (T.round_field(f"land_cover_{c}", k, 100.0 * x) for k, x in zip("qr", m.land_cover[c]))
            if max(q, r) < cfg.min_land_cover_pct:
                continue
            ok = model.supports(f"lc_{c}_pp", abs(q - r))
            pre = "aligned" if m.aligned else "free"
            add(f"land_cover_{c}", f"{pre}_{'for' if ok else 'against'}", abs(q - r), "%", {"q": q, "r": r},
                [m.overlap_query_box], [m.overlap_reference_box])
        return items, veto

    def with_config(self, **changes: Any) -> EvidenceExplainer:
        """A new explainer with some :class:`EvidenceConfig` fields changed (same model and backend)."""
        return EvidenceExplainer(self.model, self.backend, replace(self.cfg, **changes))
