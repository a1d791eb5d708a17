"""The static-ground check of the vehicle localizer: cells of a bird's-eye view that do not show the ground the
previous frame showed there (another vehicle, anything standing up from the road) are left out of the correlation,
except right after a kidnap (the previous view shows other ground).

Synthetic views: a smooth random ground texture sampled at the BEV cells of a car pose, high-passed as
``birds_eye`` does; an occluder is a dark patch pasted into the raw view before the high-pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from gleam_ros.core.errors import ConfigError
from gleam_ros.core.vehicle import (BirdsEye, VehicleConfig, _ground_grid, bev_corr, ego_motion, highpass,
                                     static_ground)

CFG = VehicleConfig()
RES = CFG.bev_res_m
HP = CFG.bev_highpass_m / RES


@pytest.fixture(scope="module")
def texture():
    """A 200 m x 200 m ground (0.25 m px): asphalt-like smooth blobs (grey 0.4, std 0.04) and a bright line."""
    rng = np.random.default_rng(0)
    t = ndimage.gaussian_filter(rng.normal(0, 1, (800, 800)), 3.0)
    t = 0.4 + 0.04 * t / t.std()
    t[:, 390:394] += 0.1  # a long bright line along "north" (a road edge)
    return t.astype(np.float32)


def _view(texture, x, y, heading_deg, occluder=None, rng=None) -> BirdsEye:
    """The ground camera's BEV of ``texture`` at pose (x, y metres from the texture's corner, heading clockwise from
    "north" = up the rows), optionally with a dark box over the cells of ``occluder`` = (f0, f1, s0, s1) metres."""
    f, s, inside = _ground_grid(CFG)
    h = math.radians(heading_deg)
    px = x + f * math.sin(h) + s * math.cos(h)
    py = y + f * math.cos(h) - s * math.sin(h)
    grid = ndimage.map_coordinates(texture, [py / 0.25, px / 0.25], order=1).astype(np.float32)
    if rng is not None:
        grid += rng.normal(0, 0.005, grid.shape).astype(np.float32)  # sensor noise
    if occluder is not None:
        f0, f1, s0, s1 = occluder
        grid[(f >= f0) & (f <= f1) & (s >= s0) & (s <= s1)] = 0.08
    raw = grid[inside]
    vals = highpass(grid, inside, HP)[inside]
    vals = vals - vals.mean()
    return BirdsEye(f[inside], s[inside], (vals / np.linalg.norm(vals)).astype(np.float32), True,
                    raw.astype(np.float32), RES, HP)


def test_ego_motion_integrates_odometry_in_the_car_frame():
    assert ego_motion([(1.0, 2.0, 0.0)]) == pytest.approx((2.0, 0.0, 0.0))
    # a quarter circle to the left (CCW yaw rate): ends 1 radius ahead and 1 to the left, turned 90 deg left
    r, v = 10.0, 5.0
    segs = [(0.01, v, v / r)] * int(round(math.pi / 2 * r / v / 0.01))
    f, s, dh = ego_motion(segs)
    assert f == pytest.approx(r, abs=0.05) and s == pytest.approx(-r, abs=0.05) and dh == pytest.approx(-90, abs=0.5)


def test_a_clean_pair_of_consecutive_views_is_left_whole(texture):
    rng = np.random.default_rng(1)
    prev = _view(texture, 100.0, 60.0, 10.0, rng=rng)
    cur = _view(texture, 100.0 + 4 * math.sin(math.radians(12)), 60.0 + 4 * math.cos(math.radians(12)), 14.0,
                rng=rng)
    motion = ego_motion([(1.0, 4.0, -math.radians(4.0))])  # 4 m ahead while turning 4 deg right
    chk = static_ground(prev, cur, motion, RES, CFG.static_ground_sigma, CFG.static_ground_agreement)
    assert chk.agreement > 0.8
    assert chk.flagged < 0.03, f"{chk.flagged:.1%} of a clean view flagged"
    # the odometry's alignment is a clear peak against the previous view displaced by 2-6 m: the views continue
    assert chk.continuity >= CFG.coast_continuity_z


def test_an_occluder_is_flagged_and_left_out_which_restores_the_fit(texture):
    rng = np.random.default_rng(2)
    box = (6.0, 11.0, -3.0, -0.5)
    prev = _view(texture, 100.0, 60.0, 0.0, rng=rng)
    cur = _view(texture, 100.0, 64.0, 0.0, occluder=box, rng=rng)
    clean = _view(texture, 100.0, 64.0, 0.0)  # what the camera would see without the vehicle
    chk = static_ground(prev, cur, (4.0, 0.0, 0.0), RES, CFG.static_ground_sigma, CFG.static_ground_agreement)
    in_box = (cur.fwd >= box[0]) & (cur.fwd <= box[1]) & (cur.right >= box[2]) & (cur.right <= box[3])
    assert chk.masked
    assert (~chk.keep[in_box]).mean() > 0.9, "the vehicle's cells were not flagged"
    assert (~chk.keep[~in_box]).mean() < 0.15, "too much of the clean ground flagged"
    masked = cur.without(~chk.keep)
    assert masked.n == int(chk.keep.sum()) and abs(float(np.linalg.norm(masked.values)) - 1) < 1e-4
    # the kept cells, high-passed again without the vehicle, match the true ground better than the whole frame
    # does, and better than the kept cells alone (the vehicle also shifted the local mean of its neighbours)
    # correlations with the true ground's view of the pose, over each view's own cells
    whole, kept, rehp = (bev_corr(v, clean)[0] for v in (cur, cur.take(chk.keep), masked))
    assert rehp > whole + 0.1 and rehp > kept, (whole, kept, rehp)


def test_after_a_kidnap_the_previous_view_does_not_decide_what_is_kept(texture):
    """The previous view shows other ground (the car was taken elsewhere): the views do not agree, nothing is left
    out, so the cells that disagree with the old place do not vanish in its favour."""
    rng = np.random.default_rng(3)
    prev = _view(texture, 40.0, 40.0, 90.0, rng=rng)
    cur = _view(texture, 150.0, 150.0, 200.0, occluder=(6.0, 11.0, -3.0, -0.5), rng=rng)
    chk = static_ground(prev, cur, (4.0, 0.0, 0.0), RES, CFG.static_ground_sigma, CFG.static_ground_agreement)
    assert chk.agreement < CFG.static_ground_agreement
    assert not chk.masked and chk.keep.all()
    assert chk.continuity < CFG.coast_continuity_z  # no continuity: a weak frame here cannot coast on the old fix


def test_views_without_texture_or_overlap_are_not_compared(texture):
    prev = _view(texture, 100.0, 60.0, 0.0)
    cur = _view(texture, 100.0, 64.0, 0.0)
    far = static_ground(prev, cur, (60.0, 0.0, 0.0), RES, 3.0, 0.5)  # drove beyond the previous view
    assert far.keep.all() and not far.masked and math.isnan(far.agreement)
    blank = BirdsEye(cur.fwd, cur.right, np.zeros_like(cur.values), False)
    chk = static_ground(prev, blank, (4.0, 0.0, 0.0), RES, 3.0, 0.5)
    assert chk.keep.all() and not chk.masked


def test_static_ground_settings_are_range_checked():
    for name, bad in (("static_ground_agreement", 1.5), ("static_ground_sigma", 0.0), ("static_ground_check", 1)):
        with pytest.raises(ConfigError, match=name):
            VehicleConfig(**{name: bad})


def test_views_of_unrelated_places_do_not_continue_each_other(texture):
    """The null of the coasting rule: 40 pairs of views of unrelated places (a teleport between two frames) never
    pass both the agreement and the continuity threshold."""
    rng = np.random.default_rng(4)
    passed, cont = 0, []
    for _ in range(40):
        a, b = rng.uniform(30, 170, 2), rng.uniform(30, 170, 2)
        prev = _view(texture, *a, rng.uniform(0, 360), rng=rng)
        cur = _view(texture, *b, rng.uniform(0, 360), rng=rng)
        chk = static_ground(prev, cur, (4.0, 0.0, 0.0), RES, CFG.static_ground_sigma, CFG.static_ground_agreement)
        cont.append(chk.continuity)
        passed += chk.agreement >= CFG.static_ground_agreement and chk.continuity >= CFG.coast_continuity_z
    assert passed == 0 and np.nanmax(cont) < CFG.coast_continuity_z, np.nanmax(cont)
