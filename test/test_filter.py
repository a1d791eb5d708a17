"""Temporal filter: smoothing, gating, guarded initialisation, coasting, kidnapping, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gleam_ros.core import geo
from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.filter import FilterConfig, FilterOutput, FixFilter

LAT0, LON0 = 47.0, 18.3
FRAME = geo.LocalFrame(LAT0, LON0)


def latlon(e: float, n: float) -> tuple[float, float]:
    lat, lon, _ = FRAME.to_geodetic(e, n, 0.0)
    return float(lat), float(lon)


def enu(out: FilterOutput) -> np.ndarray:
    e, n, _ = FRAME.to_enu(out.lat, out.lon)
    return np.array([float(e), float(n)])


def cov(std: float) -> np.ndarray:
    return std**2 * np.eye(2)


def straight_track(n: int, dt: float, vel=(9.0, 12.0), start=(0.0, 0.0)):
    """(t, true ENU position) of a constant-velocity track."""
    for k in range(n):
        t = 100.0 + k * dt
        yield t, np.array(start) + np.array(vel) * (k * dt)


def test_constant_velocity_track_is_smoothed():
    rng = np.random.default_rng(1)
    f = FixFilter()
    raw_err, filt_err = [], []
    for k, (t, p) in enumerate(straight_track(60, 1.0)):
        z = p + rng.normal(0, 3.0, 2)
        out = f.update(t, *latlon(*z), cov(3.0))
        assert out.accepted == (k >= 1)  # the first fix only starts the initialisation
        if k < 10:  # let the velocity converge
            continue
        assert out.trusted, out.reason
        raw_err.append(np.linalg.norm(z - p))
        filt_err.append(np.linalg.norm(enu(out) - p))
    raw_rms, filt_rms = np.sqrt(np.mean(np.square(raw_err))), np.sqrt(np.mean(np.square(filt_err)))
    assert filt_rms < 0.8 * raw_rms, (filt_rms, raw_rms)
    np.testing.assert_allclose(out.vel_en, [9.0, 12.0], atol=1.5)
    # the reported covariance is consistent with the actual error (not just small)
    assert np.trace(out.cov_en) < np.trace(cov(3.0))
    d = enu(out) - p
    assert float(d @ np.linalg.solve(out.cov_en, d)) < 13.8


def test_single_outlier_is_gated_out_and_track_stays_trusted():
    rng = np.random.default_rng(2)
    f = FixFilter()
    for k, (t, p) in enumerate(straight_track(30, 1.0)):
        z = p + rng.normal(0, 2.0, 2)
        if k == 20:
            z = z + np.array([200.0, 0.0])
        out = f.update(t, *latlon(*z), cov(2.0))
        if k == 20:
            assert not out.accepted and out.trusted
            assert "gated out" in out.reason and out.nis > f.gate
            assert np.linalg.norm(enu(out) - p) < 10.0  # the estimate did not follow the outlier
        elif k >= 1:
            assert out.accepted and out.trusted, out.reason
            assert k == 1 or out.nis <= f.gate
    assert f.has_trusted_fix


@pytest.mark.parametrize("init_fixes", [2, 3])
def test_lone_fix_is_not_trusted_until_consistent_fixes(init_fixes):
    f = FixFilter(FilterConfig(init_fixes=init_fixes))
    out = f.update(10.0, *latlon(0.0, 0.0), cov(2.0))
    assert not out.trusted and not out.accepted and math.isnan(out.lat) and "initialising" in out.reason
    assert not f.has_trusted_fix
    # an inconsistent second fix (1 km away in 1 s) restarts the initialisation instead of completing it
    out = f.update(11.0, *latlon(1000.0, 0.0), cov(2.0))
    assert not out.trusted and math.isnan(out.lat)
    assert not f.predict(11.5).trusted
    for k in range(1, init_fixes):
        out = f.update(11.0 + k, *latlon(1000.0 + 5.0 * k, 0.0), cov(2.0))
        assert out.trusted == (k == init_fixes - 1), out.reason
    assert out.accepted and f.has_trusted_fix
    assert np.linalg.norm(enu(out) - [1000.0 + 5.0 * (init_fixes - 1), 0.0]) < 5.0


def test_stale_candidate_does_not_complete_initialisation():
    f = FixFilter()
    f.update(0.0, *latlon(0.0, 0.0), cov(2.0))
    out = f.update(10.0, *latlon(1.0, 1.0), cov(2.0))  # consistent place, but 10 s later (> max_coast_s)
    assert not out.trusted


def test_coasting_beyond_max_coast_drops_trust():
    f = FixFilter()
    for t, p in straight_track(10, 0.5):
        out = f.update(t, *latlon(*p), cov(1.0))
    assert out.trusted
    t_fix = t
    out = f.predict(t_fix + 1.0)
    assert out.trusted and not out.accepted and "coasting" in out.reason
    np.testing.assert_allclose(enu(out), p + np.array([9.0, 12.0]), atol=2.0)  # extrapolated with the velocity
    out = f.predict(t_fix + 2.9)
    assert out.trusted
    out = f.predict(t_fix + 3.5)
    assert not out.trusted and not f.has_trusted_fix and math.isnan(out.lat)
    # after the loss a single fix is not enough again
    out = f.update(t_fix + 4.0, *latlon(*(p + np.array([9.0, 12.0]) * 4.0)), cov(1.0))
    assert not out.trusted


def test_large_position_std_is_not_trusted():
    f = FixFilter()
    out = f.update(0.0, *latlon(0.0, 0.0), cov(60.0))
    out = f.update(1.0, *latlon(3.0, 0.0), cov(60.0))
    assert out.accepted and not out.trusted and "std" in out.reason


def test_kidnapped_vehicle_reinitialises_after_max_rejects():
    rng = np.random.default_rng(3)
    cfg = FilterConfig()
    f = FixFilter(cfg)
    track = list(straight_track(40, 0.5))
    jump = np.array([-400.0, 300.0])
    for k, (t, p) in enumerate(track):
        teleported = k >= 20
        truth = p + (jump if teleported else 0.0)
        out = f.update(t, *latlon(*(truth + rng.normal(0, 2.0, 2))), cov(2.0))
        if 20 <= k < 20 + cfg.max_rejects - 1:
            assert not out.accepted and out.trusted  # still trusting the old track while it coasts
            assert np.linalg.norm(enu(out) - p) < 10.0
        elif k == 20 + cfg.max_rejects - 1:
            assert out.accepted and out.trusted and "re-initialised" in out.reason
            assert np.linalg.norm(enu(out) - truth) < 10.0
        elif k > 20 + cfg.max_rejects - 1:
            assert out.accepted and out.trusted, out.reason
    assert np.linalg.norm(enu(out) - truth) < 5.0
    np.testing.assert_allclose(out.vel_en, [9.0, 12.0], atol=2.0)


def test_inconsistent_rejects_drop_the_track_without_a_new_fix():
    rng = np.random.default_rng(4)
    f = FixFilter()
    for t, p in straight_track(10, 0.5):
        out = f.update(t, *latlon(*p), cov(1.0))
    for _ in range(5):  # wild, mutually inconsistent fixes (e.g. repeated texture)
        t += 0.5
        out = f.update(t, *latlon(*rng.uniform(-5000, 5000, 2)), cov(1.0))
    assert not out.trusted and not out.accepted and "dropped" in out.reason and math.isnan(out.lat)


def test_backwards_time_is_ignored_not_fatal():
    f = FixFilter()
    for t, p in straight_track(5, 1.0):
        out = f.update(t, *latlon(*p), cov(1.0))
    before = enu(out)
    out = f.update(t - 2.0, *latlon(500.0, 500.0), cov(1.0))
    assert not out.accepted and "backwards" in out.reason
    np.testing.assert_allclose(enu(out), before, atol=1e-6)
    assert "backwards" in f.predict(t - 1.0).reason
    out = f.update(t + 1.0, *latlon(*(p + np.array([9.0, 12.0]))), cov(1.0))
    assert out.accepted and out.trusted


@pytest.mark.parametrize("args", [
    (1.0, float("nan"), LON0, cov(1.0)),
    (float("inf"), LAT0, LON0, cov(1.0)),
    (1.0, 95.0, LON0, cov(1.0)),
    (1.0, LAT0, LON0, np.array([[1.0, 0.0], [0.0, -1.0]])),  # not PSD
    (1.0, LAT0, LON0, np.array([[1.0, 0.5], [-0.5, 1.0]])),  # not symmetric
    (1.0, LAT0, LON0, np.eye(3)),
    (1.0, LAT0, LON0, np.array([[np.nan, 0.0], [0.0, 1.0]])),
])
def test_bad_input_raises(args):
    with pytest.raises(InputError):
        FixFilter().update(*args)


def test_zero_covariance_fix_does_not_break_the_filter():
    f = FixFilter()
    for t, p in straight_track(5, 1.0):
        out = f.update(t, *latlon(*p), np.zeros((2, 2)))
    assert out.trusted and np.all(np.isfinite(out.cov_en))


@pytest.mark.parametrize("kw,field", [
    ({"gate_prob": 1.0}, "gate_prob"), ({"init_fixes": 0}, "init_fixes"), ({"max_std_m": -1.0}, "max_std_m"),
    ({"accel_std_mps2": float("nan")}, "accel_std_mps2"), ({"max_rejects": 1.5}, "max_rejects"),
])
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        FilterConfig(**kw)


def test_long_track_across_anchor_moves_and_reset():
    """8 km at 35 m/s: the ENU anchor moves along, the estimate stays on the truth."""
    rng = np.random.default_rng(5)
    f = FixFilter()
    vels = []
    for t, p in straight_track(230, 1.0, vel=(35.0, 0.0)):
        out = f.update(t, *latlon(*(p + rng.normal(0, 2.0, 2))), cov(2.0))
        assert t < 102 or out.trusted, out.reason
        assert t < 110 or float(geo.distance_m(out.lat, out.lon, *latlon(*p))) < 8.0
        vels.append(out.vel_en)
    assert float(geo.distance_m(out.lat, out.lon, *latlon(*p))) < 4.0
    # velocity is expressed in ENU at the current position; averaged over the last 100 s it is the truth
    np.testing.assert_allclose(np.mean(vels[-100:], axis=0), [35.0, 0.0], atol=0.5)
    f.reset()
    assert not f.has_trusted_fix
    out = f.update(1000.0, LAT0 + 1.0, LON0 + 1.0, cov(1.0))
    assert not out.trusted and math.isnan(out.lat)
