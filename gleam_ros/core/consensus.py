"""Do the verified hypotheses of one frame agree? The multi-hypothesis rule of the localizer.

Each verified hypothesis claims a position with a covariance. Two of them, a and b, are compatible when
the squared Mahalanobis distance of their difference under the sum of their covariances,
``d2 = (pa - pb)^T (Ca + Cb)^-1 (pa - pb)``, is within the chi-square bound with 2 degrees of freedom
(99 %: 9.21). When the best verified hypothesis conflicts with another one, at least one of them is a
confident false verification, and which one is not known from this frame.

The rule: **no fix from a conflicting frame**, unless a trusted track disambiguates. Why not a mixture
covariance (moment-matched over the disagreeing hypotheses)? Its mean lies between the modes, where no
evidence puts the vehicle, and consumers (robot_localization, PX4 EKF2) treat a fix as one Gaussian: a
17 m bimodal case becomes a 8.5 m-sigma fix centred on empty ground, "consistent" in NEES terms yet
wrong in the way that matters. Withholding the fix lets the temporal filter coast on its prediction,
which costs availability only on the (rare) conflicting frames. When the filter holds a trusted track, the
conflicting hypotheses are gated against its prediction (same chi-square bound, prediction covariance
added): if exactly one mutually compatible group is consistent with the track, its best member is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import ConfigError
from .geo import LocalFrame

CHI2_2DOF_99 = 9.210  # chi-square quantile, 2 degrees of freedom, 99 %


@dataclass
class Consensus:
    """Outcome of :func:`check_consensus` over the verified hypotheses of a frame.

    ``best``: index (into the given list) of the hypothesis to use as the frame's fix, or None (no fix).
    ``conflicts``: for each index that disagrees with the chosen one (or with the best, when no fix),
    the reason. ``reason``: why there is no fix ("" when there is one or nothing was verified).
    """

    best: int | None
    conflicts: dict[int, str] = field(default_factory=dict)
    reason: str = ""


def mahalanobis2(lat_a: float, lon_a: float, cov_a, lat_b: float, lon_b: float, cov_b) -> tuple[float, float]:
    """(squared Mahalanobis distance under ``cov_a + cov_b``, distance in metres) between two positions.

    Covariances are 2x2 ENU (m²); the difference is taken in the local ENU frame at ``a``.
    """
    e, n, _ = LocalFrame(lat_a, lon_a).to_enu(lat_b, lon_b)
    d = np.array([float(e), float(n)])
    s = np.asarray(cov_a, float)[:2, :2] + np.asarray(cov_b, float)[:2, :2]
    try:
        d2 = float(d @ np.linalg.solve(s, d))
    except np.linalg.LinAlgError:
        d2 = math.inf
    return (d2 if math.isfinite(d2) and d2 >= 0 else math.inf), float(np.hypot(*d))


def check_consensus(positions: Sequence[tuple[float, float, np.ndarray]], names: Sequence[str] | None = None,
                    track: tuple[float, float, np.ndarray] | None = None, gate: float = CHI2_2DOF_99) -> Consensus:
    """Apply the multi-hypothesis rule (module docstring) to verified hypotheses, best first.

    ``positions``: (lat, lon, 2x2 ENU covariance m²) of each verified hypothesis, ranked best first.
    ``names``: labels for the reasons (default "#i"). ``track``: the trusted filter prediction (lat, lon,
    covariance) at the frame time, or None.
    """
    g = float(gate)
    if not (math.isfinite(g) and g > 0):
        raise ConfigError(f"consensus gate must be a positive number, got {gate!r}")
    n = len(positions)
    names = [f"#{i}" for i in range(n)] if names is None else list(names)
    if n == 0:
        return Consensus(None)

    def d2(i: int, j: int) -> tuple[float, float]:
        a, b = positions[i], positions[j]
        return mahalanobis2(a[0], a[1], a[2], b[0], b[1], b[2])

    def disagree(ref: int) -> dict[int, str]:
        out = {}
        for j in range(n):
            if j != ref:
                m2, dist = d2(ref, j)
                if m2 > g:
                    out[j] = (f"disagrees with verified hypothesis {names[ref]} by {dist:.1f} m "
                              f"(Mahalanobis² {m2:.1f} > {g:.2f})")
        return out

    conflicts = disagree(0)
    if not conflicts:
        return Consensus(0)
    if track is not None:
        ok = [i for i in range(n) if mahalanobis2(track[0], track[1], track[2], *positions[i])[0] <= g]
        if ok and all(d2(i, j)[0] <= g for i in ok for j in ok if i < j):
            best = ok[0]
            return Consensus(best, {j: r + "; not consistent with the track" for j, r in disagree(best).items()})
    far = max(d2(0, j)[1] for j in conflicts)
    return Consensus(None, conflicts,
                     f"verified hypotheses disagree ({len(conflicts) + 1} of {n}, up to {far:.1f} m apart, beyond "
                     "their covariances): no fix from this frame")


__all__ = ["CHI2_2DOF_99", "Consensus", "check_consensus", "mahalanobis2"]
