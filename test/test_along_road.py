"""The along-road profile that a place found by the vehicle localizer's map search must peak on before it is locked.

Synthetic imagery (no procedural world, no files): a 200 m square whose texture either varies along an east-west
road (the place is found), is constant along it (stripes: a flat profile) or repeats every 12 m (two equal peaks).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from gleam_ros.core.encoder import TorchBackend
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.index import TileIndex
from gleam_ros.core.maps import map_from_array
from gleam_ros.core.tiles import TileSpec, iter_tiles
from gleam_ros.core.vehicle import (BirdsEye, SatelliteMosaic, VehicleConfig, along_road_profile,
                                    along_road_verdict)

GSD = 0.5
SIDE = 400  # px: 200 m
X0, Y0 = 500000.0, 6700000.0  # UTM 34N, top-left corner
CAR = (X0 + 100.0, Y0 - 100.0, 90.0)  # the middle, heading east along the road
CFG = VehicleConfig()
OFFSETS = np.arange(-32, 33) * 1.0
PERIOD_M = 12.0


@pytest.fixture(scope="module")
def backend():
    return TorchBackend(threads=1)


def _mosaic(backend, kind: str) -> SatelliteMosaic:
    rng = np.random.default_rng(7)
    if kind == "textured":
        g = cv2.GaussianBlur(rng.uniform(0, 1, (SIDE, SIDE)).astype(np.float32), (0, 0), 1.5)
    elif kind == "stripes":  # constant along the (east-west) road
        g = np.repeat(cv2.GaussianBlur(rng.uniform(0, 1, (SIDE, 1)).astype(np.float32), (0, 0), 1.5), SIDE, axis=1)
    else:  # the same 12 m of road again and again
        p = int(PERIOD_M / GSD)
        block = rng.uniform(0, 1, (SIDE, p)).astype(np.float32)
        g = cv2.GaussianBlur(np.tile(block, (1, SIDE // p + 1))[:, :SIDE], (0, 0), 1.5)
    g = (g - g.min()) / (g.max() - g.min())
    rgb = np.dstack([(g * 255).astype(np.uint8)] * 3)
    gmap = map_from_array(rgb, "EPSG:32634", (GSD, 0.0, X0, 0.0, -GSD, Y0), name=kind)
    index = TileIndex.build(iter_tiles(gmap, TileSpec(size_m=100.0, overlap=0.5, gsd_m=GSD)), backend, progress=False)
    return SatelliteMosaic(index, CFG.bev_res_m, None, 1e4, CFG.bev_highpass_m)


def _view(mosaic: SatelliteMosaic, pose) -> BirdsEye:
    """What a perfect forward camera at ``pose`` would see: the mosaic itself at the bird's-eye cells."""
    f, r = np.meshgrid(np.arange(CFG.bev_min_m, CFG.bev_max_m, CFG.bev_res_m),
                       np.arange(-CFG.bev_half_width_m, CFG.bev_half_width_m, CFG.bev_res_m), indexing="ij")
    f, r = f.ravel(), r.ravel()
    h = math.radians(pose[2])
    v = mosaic.sample((pose[0] + f * math.sin(h) + r * math.cos(h))[None],
                      (pose[1] + f * math.cos(h) - r * math.sin(h))[None])[0]
    v = v.astype(np.float64) - v.mean()
    return BirdsEye(f, r, (v / np.linalg.norm(v)).astype(np.float32))


CROSS = np.arange(-1, 2) * CFG.along_road_step_m  # as the localizer searches: 1 m across, 1 m steps
TURNS = np.arange(-1, 2) * math.degrees(CFG.along_road_step_m / CFG.bev_max_m)  # 3.6 deg: 1 m at the far edge


def _judge(prof: np.ndarray):
    return along_road_verdict(OFFSETS, prof, tol_m=1.0, width_m=CFG.bev_highpass_m, margin=CFG.ambiguity_margin)


def test_the_profile_peaks_at_the_car_and_an_alias_8_m_on_is_told_to_move_there(backend):
    mosaic = _mosaic(backend, "textured")
    view = _view(mosaic, CAR)
    prof, at = along_road_profile(view, mosaic, CAR, 90.0, OFFSETS, CROSS, TURNS)
    assert np.isfinite(prof).all() and prof[OFFSETS == 0][0] > 0.99
    assert np.allclose(at[OFFSETS == 0][0], CAR)
    v = _judge(prof)
    assert v.state == "peak" and v.best_m == 0.0 and v.margin >= CFG.ambiguity_margin, v
    # the mode settled 8 m ahead of the car (east), 1 m off its lane and turned 3.6 deg: without the search across and
    # in heading the car's own place would fit poorly from there; with it, the road 8 m behind fits better and the
    # best pose there is the car's
    ahead = (CAR[0] + 8.0, CAR[1] - 1.0, CAR[2] + float(TURNS[-1]))
    prof, at = along_road_profile(view, mosaic, ahead, 90.0, OFFSETS, CROSS, TURNS)
    v = _judge(prof)
    assert v.state == "alias" and v.rival_m == -8.0 and v.best_m == -8.0 and v.margin <= -CFG.ambiguity_margin, v
    assert np.allclose(at[OFFSETS == -8.0][0], CAR, atol=1e-6), at[OFFSETS == -8.0]
    plain, _ = along_road_profile(view, mosaic, ahead, 90.0, OFFSETS)
    assert plain[OFFSETS == -8.0][0] < prof[OFFSETS == -8.0][0] - 0.3
    # the axis the other way round: the same place is 8 m "ahead"
    v = _judge(along_road_profile(view, mosaic, ahead, 270.0, OFFSETS, CROSS, TURNS)[0])
    assert v.state == "alias" and v.rival_m == 8.0, v


@pytest.mark.parametrize("kind", ["stripes", "periodic"])
def test_a_flat_or_repeating_road_refuses(backend, kind):
    """Texture constant along the road (every offset fits alike) or repeating every 12 m (equal peaks 12 m apart):
    the place is not the profile's peak by the margin, so it must not be locked (ambiguous), nor moved (no alias)."""
    mosaic = _mosaic(backend, kind)
    view = _view(mosaic, CAR)
    prof, _ = along_road_profile(view, mosaic, CAR, 90.0, OFFSETS, CROSS, TURNS)
    v = _judge(prof)
    assert v.state == "ambiguous", (kind, v, prof.round(2))
    if kind == "periodic":
        assert abs(abs(v.rival_m) - PERIOD_M) <= 1.0 or abs(abs(v.rival_m) - 2 * PERIOD_M) <= 1.0, v


def test_the_verdict_on_hand_made_profiles():
    def bump(c, h=1.0, s=1.0):
        return h * np.exp(-0.5 * ((OFFSETS - c) / s) ** 2)

    base = 0.2
    # the place's own peak, its flanks within tol + width not compared
    assert _judge(base + bump(0.0, 0.5, 1.5)).state == "peak"
    assert _judge(base + bump(0.0, 0.5) + bump(10.0, 0.5)).state == "ambiguous"  # two equal peaks
    assert _judge(np.full(len(OFFSETS), 0.4)).state == "ambiguous"  # flat
    v = _judge(base + bump(0.0, 0.3) + bump(-9.0, 0.5))
    assert v.state == "alias" and v.rival_m == -9.0 and v.margin == pytest.approx(-0.2, abs=1e-6)
    assert _judge(base + bump(0.0, 0.3) + bump(-9.0, 0.3 + CFG.ambiguity_margin / 2)).state == "ambiguous"
    # offsets not scored (off the road / imagery): NaN
    only_own = np.where(np.abs(OFFSETS) <= 2, 0.5, np.nan)
    assert _judge(only_own).state == "peak"  # nothing along this road to mistake it for
    assert _judge(np.where(np.abs(OFFSETS) > 1, 0.5, np.nan)).state == "unknown"  # the place itself not scored


@pytest.mark.parametrize("kw", [{"along_road_step_m": 0.0}, {"along_road_step_m": 40.0},
                                {"along_road_check": "yes"}, {"along_road_cross_m": -1.0},
                                {"along_road_heading_deg": 30.0},
                                {"along_road_step_m": math.nan}])
def test_bad_settings_are_a_config_error_naming_the_field(kw):
    with pytest.raises(ConfigError, match=f"VehicleConfig.{next(iter(kw))}"):
        VehicleConfig(**kw)
