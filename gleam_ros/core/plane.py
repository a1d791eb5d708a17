"""Is the scene one plane? Ground-plane selection for the verifier's homography / planar pose.

The verifier fits one homography (frame -> orthophoto tile) and solves a planar pose from its inliers: it
assumes the matched points lie on the ground. With parallax (buildings, flat roofs, tree tops seen from a
UAV) that fails in a structured way: matches on a raised surface follow their *own* homography, and when
that surface holds most of the matches the first robust fit locks onto it (a roof instead of the ground:
the height comes out short by the roof height).

:func:`split_planes` looks for a second plane among the matches the first fit rejected. A second plane
counts only when it has ``min_inliers`` matches and at least ``min_share`` of the first's and is
*physically* a parallel raised plane seen by the same camera: at the frame centre its homography has the
same in-plane rotation (within ``max_rot_deg``) and a smaller ground scale (a raised surface is closer to
the camera, so one frame pixel covers fewer tile pixels; scale ratio within [``min_ratio``, 1)).
Repeated texture or wrong matches rarely pass both. The plane with the larger scale is the ground; its
inliers are the ones the pose is fitted to, and the split is reported (a note on the verification), so a
consumer knows the plane model held only for part of the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_MIN_PTS = 4


def centre_jacobian(h: np.ndarray, w: int, hgt: int) -> np.ndarray:
    """2x2 Jacobian of the projective map ``h`` (frame px -> tile px) at the frame centre."""
    c = np.array([(w - 1) / 2.0, (hgt - 1) / 2.0, 1.0])
    x = h @ c
    return (h[:2, :2] * x[2] - np.outer(x[:2], h[2, :2])) / x[2] ** 2


def _scale_rot(h: np.ndarray, w: int, hgt: int) -> tuple[float, float]:
    jac = centre_jacobian(h, w, hgt)
    det = float(np.linalg.det(jac))
    up = jac @ np.array([0.0, -1.0])  # where the frame's "up" points on the tile
    return (math.sqrt(det) if det > 0 else math.nan), math.degrees(math.atan2(up[0], -up[1]))


@dataclass
class PlaneSplit:
    """Two parallel planes among the matches: which one is the ground and how they relate.

    ``ground_h`` / ``ground_mask``: homography and inlier mask (over all matches) of the ground plane;
    ``raised_inliers``: inliers of the raised plane; ``distance_ratio``: raised / ground distance from the
    camera along any ray (the raised plane's homography is the ground's scaled by it about the nadir point,
    so 1 - ratio is its height as a share of the camera height, at any tilt); ``swapped``: the first fit had
    locked onto the raised plane; ``note``: a sentence.
    """

    ground_h: np.ndarray
    ground_mask: np.ndarray
    raised_inliers: int
    distance_ratio: float
    swapped: bool
    note: str


def split_planes(pf: np.ndarray, pt: np.ndarray, h1: np.ndarray, inl1: np.ndarray, w: int, hgt: int,
                 ransac_px: float, min_inliers: int, seed: int = 0, min_share: float = 0.25,
                 max_rot_deg: float = 5.0, min_ratio: float = 0.3) -> PlaneSplit | None:
    """Find a second, raised plane among the matches ``pf -> pt`` not explained by ``h1`` (module docstring).

    Returns None when there is none (the one-plane model holds as far as the matches tell).
    """
    inl1 = np.asarray(inl1, bool)
    k1 = int(inl1.sum())
    rest = np.flatnonzero(~inl1)
    need = max(int(min_inliers), int(math.ceil(min_share * k1)), _MIN_PTS)
    if len(rest) < need:
        return None
    cv2.setRNGSeed(int(seed) + 1)
    h2, m2 = cv2.findHomography(pf[rest], pt[rest], cv2.USAC_MAGSAC, ransac_px, maxIters=5000, confidence=0.999)
    if h2 is None or m2 is None:
        return None
    m2 = m2.ravel().astype(bool)
    k2 = int(m2.sum())
    if k2 < need:
        return None
    s1, r1 = _scale_rot(h1, w, hgt)
    s2, r2 = _scale_rot(h2, w, hgt)
    if not (math.isfinite(s1) and math.isfinite(s2)):
        return None
    drot = abs((r2 - r1 + 180.0) % 360.0 - 180.0)
    ratio = min(s1, s2) / max(s1, s2)
    if drot > max_rot_deg or not min_ratio <= ratio < 1.0:
        return None  # not a parallel plane seen by the same camera: leave those matches as outliers
    mask2 = np.zeros(len(pf), bool)
    mask2[rest[m2]] = True
    swapped = s2 > s1
    ground_h, ground_mask, kr = (h2, mask2, k1) if swapped else (h1, inl1, k2)
    kg = int(ground_mask.sum())
    note = (f"two planes: ground fitted on {kg} matches, a raised plane on {kr} "
            f"({100.0 * kr / (kg + kr):.0f} % of the plane matches) about {100.0 * (1.0 - ratio):.0f} % "
            "of the camera height above it" + ("; the first fit had taken the raised plane" if swapped else ""))
    return PlaneSplit(ground_h, ground_mask, kr, ratio, swapped, note)


__all__ = ["PlaneSplit", "centre_jacobian", "split_planes"]
