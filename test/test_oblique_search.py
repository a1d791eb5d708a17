"""Oblique views: the tile search centred where the optical axis meets the ground (gleam_ros.core.oblique).

Geometry against the camera model's own ray casting, the search region the localizer uses with and without
attitude priors, the attitude priors a simulated UAV reports (flight.frame_priors), and one oblique frame
localized while tracking on a small procedural world.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gleam_ros.core.camera import CameraIntrinsics, camera_to_enu, ground_intersection
from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.flight import AttitudeNoise, frame_priors
from gleam_ros.core.geo import azimuth_deg, distance_m, heading_diff_deg, offset_latlon
from gleam_ros.core.localizer import LocalizerConfig
from gleam_ros.core.oblique import off_nadir_deg, view_offset_cov, view_offset_en, view_search
from gleam_ros.core.sim.camera_sim import Pose
from gleam_ros.core.verify import Priors

LAT0, LON0 = 60.45, 22.27


def test_forty_degrees_at_120_m_looking_east_centres_about_100_m_east():
    # nose-up pitch with the nadir mount looks ahead: heading east, 40 deg -> 120 * tan(40 deg) = 100.7 m east
    e, n = view_offset_en(120.0, 90.0, 40.0, 0.0)
    assert e == pytest.approx(120.0 * math.tan(math.radians(40.0)), abs=0.01) and abs(n) < 0.01
    # the same look from a north-facing vehicle rolled left wing down (belly to the right = east)
    e2, n2 = view_offset_en(120.0, 0.0, 0.0, -40.0)
    assert e2 == pytest.approx(e, abs=0.01) and abs(n2) < 0.01
    s = view_search(LAT0, LON0, 60.0, Priors(alt_m=120.0, heading_deg=90.0, pitch_deg=40.0, roll_deg=0.0))
    assert float(distance_m(LAT0, LON0, s.lat, s.lon)) == pytest.approx(100.7, abs=0.2)
    assert abs(float(heading_diff_deg(azimuth_deg(LAT0, LON0, s.lat, s.lon), 90.0))) < 0.1
    assert s.shift_m == pytest.approx(100.7, abs=0.1) and "view centre" in s.note
    assert s.radius_m > 60.0  # grown by the view centre's uncertainty


def test_view_centre_is_where_the_principal_ray_meets_the_ground():
    intr = CameraIntrinsics.from_fov(640, 480, 60.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, hdg, p, r = rng.uniform(50, 300), rng.uniform(0, 360), rng.uniform(-35, 35), rng.uniform(-35, 35)
        ge, gn, ok = ground_intersection(intr, camera_to_enu(hdg, p, r), np.array([0.0, 0.0, h]),
                                         np.array([intr.cx]), np.array([intr.cy]))
        assert ok[0]
        assert view_offset_en(h, hdg, p, r) == pytest.approx((float(ge[0]), float(gn[0])), abs=1e-6)
        assert math.hypot(*view_offset_en(h, hdg, p, r)) == pytest.approx(h * math.tan(math.radians(off_nadir_deg(p, r))),
                                                                          rel=1e-6, abs=1e-6)


def test_view_centre_uncertainty_matches_sampled_attitude_errors():
    cov = view_offset_cov(120.0, 90.0, 40.0, 0.0, attitude_std_deg=1.0, heading_std_deg=5.0)
    rng = np.random.default_rng(1)
    draws = np.array([view_offset_en(120.0, 90.0 + rng.normal(0, 5.0), 40.0 + rng.normal(0, 1.0), rng.normal(0, 1.0))
                      for _ in range(4000)])
    emp = np.cov(draws.T)
    # the linearisation holds for small angles: within 10 % of the Monte-Carlo covariance per axis
    assert np.diag(cov) == pytest.approx(np.diag(emp), rel=0.1)
    # heading error moves the point across the look direction (north here), pitch error along it (east)
    assert cov[1, 1] > 4 * cov[0, 0]
    wider = view_search(LAT0, LON0, 60.0, Priors(alt_m=120.0, heading_deg=90.0, pitch_deg=40.0, roll_deg=0.0),
                        heading_std_deg=20.0)
    base = view_search(LAT0, LON0, 60.0, Priors(alt_m=120.0, heading_deg=90.0, pitch_deg=40.0, roll_deg=0.0))
    assert wider.radius_m > base.radius_m


def test_without_full_attitude_the_search_stays_around_the_vehicle_with_a_reason():
    same = view_search(LAT0, LON0, 60.0, None)
    assert (same.lat, same.lon, same.radius_m, same.note) == (LAT0, LON0, 60.0, "")
    assert view_search(LAT0, LON0, 60.0, Priors(alt_m=120.0)).note == ""  # altitude only: today's search
    no_heading = view_search(LAT0, LON0, 60.0, Priors(alt_m=120.0, pitch_deg=30.0, roll_deg=5.0))
    assert (no_heading.lat, no_heading.lon, no_heading.radius_m) == (LAT0, LON0, 60.0)
    assert "no heading prior" in no_heading.note
    no_alt = view_search(LAT0, LON0, 60.0, Priors(heading_deg=10.0, pitch_deg=30.0, roll_deg=5.0))
    assert no_alt.shift_m == 0.0 and "altitude" in no_alt.note
    too_far = view_search(LAT0, LON0, 60.0, Priors(alt_m=120.0, heading_deg=0.0, pitch_deg=70.0, roll_deg=0.0))
    assert too_far.shift_m == 0.0 and "beyond 60 deg" in too_far.note


def test_bad_attitude_is_a_clear_error_not_a_crash():
    with pytest.raises(InputError, match="pitch_deg"):
        Priors(alt_m=120.0, pitch_deg=math.nan)
    with pytest.raises(InputError, match="heading_deg"):
        view_offset_en(120.0, math.nan, 10.0, 0.0)
    with pytest.raises(InputError, match="alt_m"):
        view_offset_en(-5.0, 0.0, 10.0, 0.0)
    with pytest.raises(InputError, match="does not look down"):
        view_offset_en(120.0, 0.0, 95.0, 0.0)
    with pytest.raises(ConfigError, match="heading_std_deg"):
        LocalizerConfig(heading_std_deg=-1.0)
    with pytest.raises(ConfigError, match="pitch_roll_std_deg"):
        AttitudeNoise(pitch_roll_std_deg=math.nan)


def test_frame_priors_report_attitude_with_the_stated_noise():
    pose = Pose(t=0.0, lat=LAT0, lon=LON0, alt_m=120.0, heading_deg=355.0, pitch_deg=30.0, roll_deg=-12.0)
    plain = frame_priors(pose, 3.0, np.random.default_rng(5))
    assert plain.pitch_deg is None and plain.roll_deg is None and plain.heading_deg is None
    rng, att_rng = np.random.default_rng(5), np.random.default_rng(6)
    draws = [frame_priors(pose, 3.0, rng, AttitudeNoise(1.0, 5.0), att_rng) for _ in range(3000)]
    assert draws[0].alt_m == plain.alt_m  # a separate generator: the altitude draws do not move
    dp = np.array([d.pitch_deg - 30.0 for d in draws])
    dr = np.array([d.roll_deg + 12.0 for d in draws])
    dh = np.array([float(heading_diff_deg(d.heading_deg, 355.0)) for d in draws])
    assert all(0.0 <= d.heading_deg < 360.0 for d in draws)
    for err, std in ((dp, 1.0), (dr, 1.0), (dh, 5.0)):
        assert abs(err.mean()) < 0.1 * std and err.std() == pytest.approx(std, rel=0.08)
    only_att = frame_priors(pose, 3.0, rng, AttitudeNoise(1.0, None), att_rng)
    assert only_att.heading_deg is None and only_att.pitch_deg is not None


# --------------------------------------------------------------------------------------- in the localizer


@pytest.fixture(scope="module")
def world_index():
    from gleam_ros.core.encoder import TorchBackend
    from gleam_ros.core.index import TileIndex
    from gleam_ros.core.maps import map_from_array
    from gleam_ros.core.sim.world import WorldConfig, make_world
    from gleam_ros.core.tiles import TileSpec, iter_tiles

    world = make_world(WorldConfig(seed=3, size_m=420.0, gsd_m=0.3))
    backend = TorchBackend(threads=2)
    index = TileIndex.build(iter_tiles(world.satellite_map(), TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)),
                            backend, progress=False)
    autumn = map_from_array(world.variant(season="autumn", seed=99), world.crs, world.transform, name="autumn")
    return world.satellite_map(), autumn, backend, index


def _tracking_localizer(backend, index, lat, lon, view: bool):
    """A localizer whose track is trusted at (lat, lon) at t = 0 (as after earlier fixes)."""
    from gleam_ros.core.filter import FilterConfig
    from gleam_ros.core.localizer import Localizer
    from gleam_ros.core.verify import VerifyConfig

    cfg = LocalizerConfig(filter=FilterConfig(init_fixes=1), verify=VerifyConfig(max_tilt_deg=50.0), view_search=view)
    loc = Localizer(backend, index, cfg)
    out = loc.filter.update(0.0, lat, lon, np.eye(2))
    assert out.trusted
    loc._last_t = 0.0
    return loc


def test_tracking_an_oblique_frame_searches_the_tiles_it_shows(world_index):
    from gleam_ros.core.sim.camera_sim import render_view

    geomap, autumn, backend, index = world_index
    lat0, lon0 = geomap.center_latlon()
    lat, lon = offset_latlon(lat0, lon0, -90.0, 0.0)  # 40 deg nose-up heading east: the view centre is 100 m east
    intr = CameraIntrinsics.from_fov(480, 360, 60.0)
    pose = Pose(t=1.0, lat=lat, lon=lon, alt_m=120.0, heading_deg=90.0, pitch_deg=40.0, roll_deg=0.0)
    rgb, valid = render_view(autumn, pose, intr)
    assert valid.mean() > 0.99
    priors = Priors(alt_m=121.0, heading_deg=93.0, pitch_deg=40.6, roll_deg=-0.5)  # noisy, as an autopilot's

    loc = _tracking_localizer(backend, index, lat, lon, view=True)
    res = loc.localize(rgb, t=1.0, intrinsics=intr, priors=priors)
    assert res.prior is not None and res.timings_ms["embed"] < 5.0  # tracking: no embedding
    assert float(distance_m(res.search.lat, res.search.lon, lat, lon)) == pytest.approx(100.0, abs=8.0)
    assert "view centre" in res.search_note
    tiles = [h for h in res.hypotheses if not h.filtered]
    assert tiles and all(distance_m(h.tile_lat, h.tile_lon, res.search.lat, res.search.lon) <= res.search.radius_m
                         for h in tiles)
    v = res.best_verification
    assert v is not None and v.ok, [h.reason for h in res.hypotheses]
    assert float(distance_m(v.lat, v.lon, lat, lon)) < 3.0

    # the same frame without the view search verifies the tiles nearest the vehicle (today's behaviour)
    plain = _tracking_localizer(backend, index, lat, lon, view=False)
    res0 = plain.localize(rgb, t=1.0, intrinsics=intr, priors=priors)
    assert (res0.search.lat, res0.search.lon) == (res0.prior.lat, res0.prior.lon) and res0.search_note == ""
    near0 = min(float(distance_m(h.tile_lat, h.tile_lon, lat, lon)) for h in res0.hypotheses if not h.filtered)
    near1 = min(float(distance_m(h.tile_lat, h.tile_lon, lat, lon)) for h in tiles)
    assert near0 < 40.0 < near1


@pytest.mark.parametrize("heading,pitch,roll", [(0, 8, 0), (123, -10, 7), (300, 4, 12), (359, 30, -20)])
def test_node_reads_the_imu_heading_in_core_conventions(heading, pitch, roll):
    """The node's /imu path (convert) gives the heading the core's body_to_enu was made with (imu_heading)."""
    from geometry_msgs.msg import Quaternion
    from scipy.spatial.transform import Rotation
    from sensor_msgs.msg import Imu

    from gleam_ros.core.camera import body_to_enu
    from gleam_ros.nodes import convert

    qx, qy, qz, qw = Rotation.from_matrix(body_to_enu(heading, pitch, roll)).as_quat()
    imu = Imu(orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
    assert abs(float(heading_diff_deg(convert.imu_to_heading(imu), heading))) < 1e-6
    imu.orientation_covariance[0] = -1.0  # "no orientation"
    assert convert.imu_to_heading(imu) is None
    assert convert.imu_to_heading(Imu(orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=0.0))) is None


# ------------------------------------------------------------------- covariance tool (tools/bench_covariance.py)


def _cov_tool():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "bench_covariance.py"
    spec = importlib.util.spec_from_file_location("bench_covariance", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _pct_inside(row: str) -> float:
    return float(row.split("|")[3].split("%")[0])


def test_declared_accuracy_rows_and_misregistration_draws():
    bc = _cov_tool()
    rng = np.random.default_rng(3)
    cov = np.diag([0.09, 0.16])  # per-frame errors drawn from their own covariance, plus the 0.5 m floor's share
    fixes = [bc.Fix(rng.multivariate_normal([0, 0], cov + 0.25 * np.eye(2)), cov, 0.1) for _ in range(60)]
    # maps misregistered as declared: about 95 % of all fixes inside the 95 % bound (2000 maps: the pooled
    # share's standard deviation is about 0.5 %, the fixes of one map move together)
    (row,) = bc.shift_draw_rows(fixes, 60, [1.5], draws=2000)
    assert 93.5 <= _pct_inside(row) <= 96.5, row
    # one map 2.5 m off: the mean NEES is what the offset and the per-frame spread give, sum over the axes of
    # (offset² + spread²) / (spread² + declared²): far over-confident without a declaration, near 2 with 1.5 m
    shifted = [bc.Fix(f.err + np.array([2.0, -1.5]), f.cov, f.g) for f in fixes]
    none, decl = bc.declared_rows(shifted, 60, [0.0, 1.5])
    spread = np.diag(cov) + 0.25
    for row, d in ((none, 0.0), (decl, 1.5)):
        want = float(np.sum((np.array([4.0, 2.25]) + spread) / (spread + d * d)))
        assert float(row.split("|")[4]) == pytest.approx(want, rel=0.15), (row, want)
    assert _pct_inside(none) < 20.0 < 90.0 < _pct_inside(decl)


def test_bench_rows_replace_the_runs_declared_accuracy(tmp_path):
    import json

    from gleam_ros.core.geo import offset_latlon as off

    bc = _cov_tool()
    (tmp_path / "scene_a").mkdir()
    (tmp_path / "bench.json").write_text(json.dumps({"config": {"ref_std_m": 1.5}, "scenes": {"scene_a": {}}}))
    lat, lon = off(LAT0, LON0, 2.0, -1.5)  # every fix 2.5 m off, published with 0.5² + 1.5² per axis
    rec = {"trusted": True, "gt_lat": LAT0, "gt_lon": LON0, "est_lat": lat, "est_lon": lon,
           "cov_en": [[0.25 + 2.25, 0.0], [0.0, 0.25 + 2.25]]}
    lines = [json.dumps(rec)] * 5 + [json.dumps({"trusted": False})]
    (tmp_path / "scene_a" / "frames_full_pipeline.jsonl").write_text("\n".join(lines) + "\n")
    rows = [r for r in bc.bench_rows(tmp_path, [0.0, 1.5]) if r.startswith("| declared")]
    assert len(rows) == 2 and "5/6" in rows[0]
    assert _pct_inside(rows[0]) == 0.0 and float(rows[0].split("|")[4]) == pytest.approx(25.0, rel=1e-3)
    assert _pct_inside(rows[1]) == 100.0 and float(rows[1].split("|")[4]) == pytest.approx(2.5, rel=1e-3)


def test_bench_hard_scenes_carry_the_attitude_priors_and_the_switch_removes_them(tmp_path):
    import affine

    from gleam_ros.cli import build_parser
    from gleam_ros.core.bench import config_from_args, make_scenes
    from gleam_ros.core.maps import write_geotiff

    rgb = np.random.default_rng(0).integers(40, 200, (400, 400, 3)).astype(np.uint8)
    tif = write_geotiff(tmp_path / "m.tif", rgb, "EPSG:32634", affine.Affine(0.5, 0.0, 240000.0, 0.0, -0.5, 6700000.0))

    def scenes(*extra):
        cfg = config_from_args(build_parser().parse_args(["bench", "run", "--map", str(tif), "--no-world", *extra]))
        return cfg, make_scenes(cfg)

    on, (s_on,) = scenes("--hard")
    off, (s_off,) = scenes("--hard", "--no-attitude-priors")
    assert on.attitude_priors and not off.attitude_priors
    assert s_on.attitude == AttitudeNoise(1.0, 5.0) and "attitude priors" in s_on.description
    assert s_off.attitude is None and "altitude prior only" in s_off.description
    _, (easy,) = scenes()  # the easy flights keep the altitude prior only
    assert easy.attitude is None
