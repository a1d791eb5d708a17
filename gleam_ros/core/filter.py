"""Temporal gating and smoothing of verified fixes: "say nothing rather than lie".

A constant-velocity Kalman filter in a local ENU frame (geo.LocalFrame, anchored at the first fix
and moved along with the vehicle every few kilometres) with:

- initialisation only from ``init_fixes`` mutually consistent fixes (a lone fix is never trusted);
- a chi-square gate on the innovation (single outliers are rejected, the track stays trusted);
- re-initialisation after ``max_rejects`` consecutive gated-out fixes, at the new place when those
  fixes agree with each other (a kidnapped vehicle, or a track that had locked onto a wrong place);
- loss of trust when coasting longer than ``max_coast_s`` (the track is dropped) or when the
  position standard deviation exceeds ``max_std_m``.

Only outputs with ``trusted=True`` should be published as a fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2

from . import geo
from .errors import ConfigError, InputError

_REANCHOR_M = 5000.0  # move the ENU anchor when the track is this far from it (tangent-plane error)
_R_JITTER = 1e-6  # m², keeps S invertible for zero input covariance


@dataclass(frozen=True)
class FilterConfig:
    """Parameters of :class:`FixFilter`. Invalid values raise ConfigError naming the field."""

    accel_std_mps2: float = 3.0  # constant-velocity KF process noise (white acceleration std)
    gate_prob: float = 0.999  # chi-square gate (2 dof) on the innovation
    init_fixes: int = 2  # consecutive mutually consistent fixes needed before the track is trusted
    init_gate_m: float = 30.0  # consistency distance for initialisation (plus max_speed * dt)
    max_speed_mps: float = 40.0
    max_rejects: int = 5  # consecutive gated-out fixes before the track is dropped and re-initialised
    max_coast_s: float = 3.0  # without an accepted fix for this long, there is no trusted fix
    max_std_m: float = 25.0  # a track whose position std exceeds this is not trusted

    def __post_init__(self) -> None:
        for name in ("accel_std_mps2", "init_gate_m", "max_speed_mps", "max_coast_s", "max_std_m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (
                math.isfinite(v) and v > 0
            ):
                raise ConfigError(f"FilterConfig.{name} must be a positive finite number, got {v!r}")
        if not 0.0 < self.gate_prob < 1.0:
            raise ConfigError(f"FilterConfig.gate_prob must be within (0, 1), got {self.gate_prob!r}")
        for name in ("init_fixes", "max_rejects"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"FilterConfig.{name} must be an integer >= 1, got {v!r}")


def _nan_cov() -> np.ndarray:
    return np.full((2, 2), np.nan)


def _nan_vel() -> np.ndarray:
    return np.full(2, np.nan)


@dataclass
class FilterOutput:
    """State of the filter after one update/predict.

    ``accepted``: this fix was incorporated into a track. ``trusted``: the track may be published.
    lat/lon/cov_en/vel_en are NaN when there is no track (initialising, dropped). ``cov_en`` is the
    2x2 position covariance (m²) and ``vel_en`` the velocity (m/s) in local ENU at the position.
    ``nis`` is the normalised innovation squared of this fix (NaN when not gated).
    """

    t: float
    accepted: bool
    trusted: bool
    reason: str
    lat: float = math.nan
    lon: float = math.nan
    cov_en: np.ndarray = field(default_factory=_nan_cov)
    vel_en: np.ndarray = field(default_factory=_nan_vel)
    nis: float = math.nan


@dataclass
class _Fix:
    t: float
    lat: float
    lon: float
    cov: np.ndarray


class FixFilter:
    """Constant-velocity Kalman filter with gating and guarded (re-)initialisation; see module docstring."""

    def __init__(self, cfg: FilterConfig = FilterConfig()) -> None:
        if not isinstance(cfg, FilterConfig):
            raise ConfigError(f"FixFilter needs a FilterConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self._gate = float(chi2.ppf(cfg.gate_prob, 2))
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget everything; the next fix starts a new initialisation (and a new ENU anchor)."""
        self._frame: geo.LocalFrame | None = None
        self._x: np.ndarray | None = None  # [e, n, ve, vn]
        self._p: np.ndarray | None = None
        self._t_state: float | None = None  # time of _x
        self._t_fix: float | None = None  # time of the last accepted fix
        self._t_last: float | None = None  # latest time seen (update or predict)
        self._pending: list[_Fix] = []  # initialisation candidates
        self._rejects: list[_Fix] = []  # consistent tail of consecutive gated-out fixes
        self._n_rejects = 0
        self._trusted = False

    @property
    def has_trusted_fix(self) -> bool:
        """Whether the latest output was trusted."""
        return self._trusted

    @property
    def gate(self) -> float:
        """Chi-square gate threshold on the NIS."""
        return self._gate

    def update(self, t: float, lat: float, lon: float, cov_en: np.ndarray) -> FilterOutput:
        """Process one verified fix at time ``t`` (s) with its 2x2 ENU covariance (m²).

        Raises InputError for non-finite values, out-of-range coordinates or a covariance that is not a
        symmetric positive semi-definite 2x2 matrix. A fix older than the latest time seen is ignored
        (``accepted=False`` with a reason).
        """
        t, fix = self._check_fix(t, lat, lon, cov_en)
        if self._t_last is not None and t < self._t_last:
            return self._output(self._t_last, False, f"time went backwards ({t:.3f} < {self._t_last:.3f}); fix ignored")
        self._t_last = t
        prefix = ""
        if self._x is not None and t - self._t_fix > self.cfg.max_coast_s:
            prefix = f"track dropped (no accepted fix for {t - self._t_fix:.1f} s > {self.cfg.max_coast_s:g} s); "
            self._drop()
        if self._x is None:
            return self._initialise(fix, prefix)
        return self._track_update(fix)

    def predict(self, t: float) -> FilterOutput:
        """A frame without a fix at time ``t``: coast the track (or say there is none)."""
        if not (isinstance(t, (int, float, np.integer, np.floating)) and math.isfinite(t)):
            raise InputError(f"time must be a finite number, got {t!r}")
        t = float(t)
        if self._t_last is not None and t < self._t_last:
            return self._output(self._t_last, False, f"time went backwards ({t:.3f} < {self._t_last:.3f}); ignored")
        self._t_last = t
        if self._x is None:
            return self._output(t, False, "no track" + (" (initialising)" if self._pending else ""))
        coast = t - self._t_fix
        if coast > self.cfg.max_coast_s:
            self._drop()
            why = f"track dropped (no accepted fix for {coast:.1f} s > {self.cfg.max_coast_s:g} s)"
            return self._output(t, False, why)
        self._propagate(t)
        return self._output(t, False, f"coasting ({coast:.1f} s since the last accepted fix)")

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _check_fix(t, lat, lon, cov_en) -> tuple[float, _Fix]:
        for name, v in (("time", t), ("lat", lat), ("lon", lon)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise InputError(f"fix {name} must be a finite number, got {v!r}")
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise InputError(f"fix latitude/longitude out of range: ({lat}, {lon})")
        c = np.asarray(cov_en, dtype=float)
        if c.shape != (2, 2) or not np.all(np.isfinite(c)):
            raise InputError(f"fix cov_en must be a finite 2x2 matrix, got {np.array2string(c, precision=3)}")
        scale = max(1.0, float(np.abs(c).max()))
        if abs(c[0, 1] - c[1, 0]) > 1e-6 * scale:
            raise InputError(f"fix cov_en is not symmetric: {c.tolist()}")
        c = 0.5 * (c + c.T)
        if np.linalg.eigvalsh(c).min() < -1e-9 * scale:
            raise InputError(f"fix cov_en is not positive semi-definite: {c.tolist()}")
        return float(t), _Fix(float(t), float(lat), float(lon), c)

    def _enu(self, fix: _Fix) -> np.ndarray:
        e, n, _ = self._frame.to_enu(fix.lat, fix.lon)
        return np.array([float(e), float(n)])

    def _consistent(self, a: _Fix, b: _Fix) -> bool:
        dist = float(geo.distance_m(a.lat, a.lon, b.lat, b.lon))
        return dist <= self.cfg.init_gate_m + self.cfg.max_speed_mps * abs(b.t - a.t)

    def _initialise(self, fix: _Fix, prefix: str) -> FilterOutput:
        cfg = self.cfg
        pend = [f for f in self._pending if fix.t - f.t <= cfg.max_coast_s]  # stale candidates expire
        if all(self._consistent(f, fix) for f in pend):
            pend.append(fix)
        else:
            pend = [fix]
        self._pending = pend[-cfg.init_fixes :]
        if len(self._pending) < cfg.init_fixes:
            why = f"initialising ({len(self._pending)}/{cfg.init_fixes} consistent fixes)"
            return self._output(fix.t, False, prefix + why)
        self._start_track(self._pending)
        return self._output(fix.t, True, prefix + f"track initialised from {cfg.init_fixes} consistent fixes")

    def _start_track(self, fixes: list[_Fix]) -> None:
        first = fixes[0]
        self._frame = geo.LocalFrame(first.lat, first.lon)
        sv = self.cfg.max_speed_mps / 2.0
        self._x = np.array([0.0, 0.0, 0.0, 0.0])
        self._p = np.diag([first.cov[0, 0], first.cov[1, 1], sv**2, sv**2])
        self._p[0, 1] = self._p[1, 0] = first.cov[0, 1]
        self._p[:2, :2] += _R_JITTER * np.eye(2)
        self._t_state = first.t
        for f in fixes[1:]:
            self._propagate(f.t)
            self._kf_update(self._enu(f), f.cov)
        self._t_fix = fixes[-1].t
        self._pending, self._rejects, self._n_rejects = [], [], 0

    def _drop(self) -> None:
        self._x = self._p = self._t_state = self._t_fix = None
        self._pending, self._rejects, self._n_rejects = [], [], 0

    def _track_update(self, fix: _Fix) -> FilterOutput:
        cfg = self.cfg
        self._propagate(fix.t)
        z = self._enu(fix)
        r = fix.cov + _R_JITTER * np.eye(2)
        y = z - self._x[:2]
        s = self._p[:2, :2] + r
        nis = float(y @ np.linalg.solve(s, y))
        if nis <= self._gate:
            self._kf_update(z, fix.cov)
            self._t_fix = fix.t
            self._rejects, self._n_rejects = [], 0
            self._maybe_reanchor()
            return self._output(fix.t, True, "accepted", nis)
        # gated out
        self._n_rejects += 1
        if self._rejects and all(self._consistent(f, fix) for f in self._rejects):
            self._rejects.append(fix)
        else:
            self._rejects = [fix]
        if self._n_rejects < cfg.max_rejects:
            why = f"gated out (NIS {nis:.1f} > {self._gate:.1f}; {self._n_rejects}/{cfg.max_rejects} rejects)"
            return self._output(fix.t, False, why, nis)
        chain = self._rejects
        self._drop()
        if len(chain) >= cfg.init_fixes:
            self._start_track(chain)
            return self._output(
                fix.t, True, f"re-initialised at a new position after {cfg.max_rejects} consecutive rejected fixes "
                f"({len(chain)} mutually consistent)", nis,
            )
        self._pending = chain[-cfg.init_fixes :]
        return self._output(
            fix.t, False, f"track dropped after {cfg.max_rejects} consecutive rejected fixes; initialising", nis
        )

    def _propagate(self, t: float) -> None:
        dt = t - self._t_state
        if dt <= 0:
            return
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt
        q1 = self.cfg.accel_std_mps2**2 * np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]])
        q = np.zeros((4, 4))
        q[np.ix_([0, 2], [0, 2])] = q1
        q[np.ix_([1, 3], [1, 3])] = q1
        self._x = f @ self._x
        self._p = f @ self._p @ f.T + q
        self._p = 0.5 * (self._p + self._p.T)
        self._t_state = t

    def _kf_update(self, z: np.ndarray, cov: np.ndarray) -> None:
        h = np.zeros((2, 4))
        h[0, 0] = h[1, 1] = 1.0
        r = cov + _R_JITTER * np.eye(2)
        s = h @ self._p @ h.T + r
        k = np.linalg.solve(s, h @ self._p).T
        self._x = self._x + k @ (z - h @ self._x)
        ikh = np.eye(4) - k @ h
        self._p = ikh @ self._p @ ikh.T + k @ r @ k.T  # Joseph form
        self._p = 0.5 * (self._p + self._p.T)

    def _maybe_reanchor(self) -> None:
        """Move the ENU anchor to the current position when the track has travelled far from it."""
        if float(np.hypot(*self._x[:2])) < _REANCHOR_M:
            return
        old = self._frame
        pts = self._x[:2] + np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
        lat, lon, _ = old.to_geodetic(pts[:, 0], pts[:, 1], 0.0)
        new = geo.LocalFrame(float(lat[0]), float(lon[0]))
        e, n, _ = new.to_enu(lat, lon)
        jac = np.column_stack([[e[1] - e[0], n[1] - n[0]], [e[2] - e[0], n[2] - n[0]]]) / 10.0
        tr = np.zeros((4, 4))
        tr[:2, :2] = tr[2:, 2:] = jac
        self._x = np.r_[0.0, 0.0, jac @ self._x[2:]]
        self._p = tr @ self._p @ tr.T
        self._frame = new

    def _output(self, t: float, accepted: bool, reason: str, nis: float = math.nan) -> FilterOutput:
        if self._x is None:
            self._trusted = False
            return FilterOutput(t, accepted, False, reason, nis=nis)
        lat, lon, _ = self._frame.to_geodetic(self._x[0], self._x[1], 0.0)
        cov = self._p[:2, :2].copy()
        std = math.sqrt(max(float(np.linalg.eigvalsh(cov).max()), 0.0))
        trusted = t - self._t_fix <= self.cfg.max_coast_s and std <= self.cfg.max_std_m
        if not trusted and std > self.cfg.max_std_m and "std" not in reason:
            reason += f"; position std {std:.1f} m > {self.cfg.max_std_m:g} m"
        self._trusted = bool(trusted)
        return FilterOutput(t, accepted, self._trusted, reason, float(lat), float(lon), cov, self._x[2:].copy(), nis)
