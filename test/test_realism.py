"""Harder simulation (gleam_ros.core.sim.realism): oblique geometry, parallax, misregistration, sensor effects."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gleam_ros.core import geo
from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.maps import map_from_array
from gleam_ros.core.sim.camera_sim import Photometric, Pose, render_view
from gleam_ros.core.sim.realism import (
    HardSpec,
    HeightScene,
    SensorEffects,
    apply_sensor,
    off_nadir_deg,
    oblique_poses,
    other_source_map,
    project_enu,
    render_parallax,
)

LAT0, LON0 = 60.45, 22.27
GSD = 0.25
N = 1600  # 400 m square scene


def _grid():
    """(UTM CRS, north-up affine of an N x N grid of GSD metres, its centre (lat, lon)) near (LAT0, LON0)."""
    import affine

    crs = geo.utm_crs_for(LAT0, LON0)
    x0, y0 = geo.transform(LON0, LAT0, geo.WGS84, crs)
    x0, y0 = float(np.floor(x0)), float(np.floor(y0))
    lon, lat = geo.transform(x0, y0, crs, geo.WGS84)
    return crs, affine.Affine(GSD, 0, x0 - N * GSD / 2, 0, -GSD, y0 + N * GSD / 2), (float(lat), float(lon))


def _scene(box_h: float = 20.0) -> tuple[HeightScene, tuple[float, float]]:
    """Textured flat ground with one 12 m x 12 m box of ``box_h`` metres and a pure red roof at the centre."""
    crs, t, centre = _grid()
    rng = np.random.default_rng(0)
    small = rng.integers(40, 200, (N // 8, N // 8, 3)).astype(np.uint8)
    rgb = np.repeat(np.repeat(small, 8, 0), 8, 1)
    rgb[..., 0] = np.minimum(rgb[..., 0], 150)  # no red on the ground
    h = np.zeros((N, N), np.float32)
    c, half = N // 2, int(6 / GSD)
    h[c - half:c + half, c - half:c + half] = box_h
    rgb[c - half:c + half, c - half:c + half] = (255, 0, 0)
    return HeightScene(rgb, h, crs, t), centre  # the box centre in WGS84


def _red_centroid(img: np.ndarray) -> np.ndarray:
    m = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert m.sum() > 20, "the roof is not visible"
    v, u = np.nonzero(m)
    return np.array([u.mean(), v.mean()])


INTR = CameraIntrinsics.from_fov(320, 240, 60.0)


def test_oblique_poses_respect_the_bound_and_reach_it():
    poses = [Pose(float(i), LAT0, LON0, 120.0, 10.0 * i) for i in range(200)]
    obl = oblique_poses(poses, 45.0, seed=3)
    ang = np.array([off_nadir_deg(p) for p in obl])
    assert ang.max() <= 45.0 + 1e-6
    assert ang.max() > 40.0 and np.mean(ang > 22.5) > 0.3  # really oblique, not just jitter
    assert [(p.lat, p.lon, p.heading_deg) for p in obl] == [(p.lat, p.lon, p.heading_deg) for p in poses]


def test_oblique_render_centre_sees_the_predicted_ground_point():
    """Flat scene, 40 deg pitch: the image centre shows the ground point alt * tan(40) ahead of the nadir."""
    scene, (lat, lon) = _scene(box_h=0.0)
    e_off = 100.0 * math.tan(math.radians(40.0))
    cam_lat, cam_lon = geo.offset_latlon(lat, lon, -e_off, 0.0)  # heading east: the box is ahead
    pose = Pose(0.0, cam_lat, cam_lon, 100.0, 90.0, pitch_deg=40.0)
    assert off_nadir_deg(pose) == pytest.approx(40.0)
    img, valid = render_parallax(scene, pose, INTR)
    assert valid.mean() > 0.9
    u, v = _red_centroid(img)
    assert abs(u - INTR.cx) < 1.5 and abs(v - INTR.cy) < 1.5
    # and the flat renderer (maps + camera_sim) agrees with the ray march on a flat scene
    flat, _ = render_view(scene.geomap(), pose, INTR)
    np.testing.assert_allclose(_red_centroid(flat), (u, v), atol=1.0)


@pytest.mark.parametrize("pitch", [0.0, 30.0])
def test_building_top_is_displaced_by_the_predicted_parallax(pitch):
    """The roof of a 20 m box shows where its 3-D top projects, not where its footprint does."""
    scene, (lat, lon) = _scene(box_h=20.0)
    cam_lat, cam_lon = geo.offset_latlon(lat, lon, -22.0, 8.0)
    pose = Pose(0.0, cam_lat, cam_lon, 110.0, 90.0, pitch_deg=pitch)
    f = geo.LocalFrame(cam_lat, cam_lon)
    e, n, _ = f.to_enu(lat, lon)
    top = np.array(project_enu(pose, INTR, e, n, 20.0))
    foot = np.array(project_enu(pose, INTR, e, n, 0.0))
    shift = np.linalg.norm(top - foot)
    assert shift > 8.0  # the parallax is large enough to tell apart
    img, _ = render_parallax(scene, pose, INTR)
    got = _red_centroid(img)
    assert np.linalg.norm(got - top) < 1.5, (got, top, foot)
    # facades: dark wall pixels between the roof and its footprint (seen from the side)
    assert np.linalg.norm(got - foot) > shift - 1.5


def test_heights_occlude_what_lies_behind():
    scene, (lat, lon) = _scene(box_h=40.0)
    cam_lat, cam_lon = geo.offset_latlon(lat, lon, -60.0, 0.0)
    pose = Pose(0.0, cam_lat, cam_lon, 100.0, 90.0, pitch_deg=20.0)
    flat_scene = HeightScene(scene.rgb, np.zeros_like(scene.height), scene.crs, scene.transform)
    a, _ = render_parallax(scene, pose, INTR)
    b, _ = render_parallax(flat_scene, pose, INTR)
    changed = np.any(a != b, axis=2)
    # the box hides ground behind it: many more pixels change than the roof alone covers
    roof = (a[..., 0] > 200) & (a[..., 1] < 60)
    assert changed.sum() > 1.5 * roof.sum()


def test_height_scene_rejects_bad_input():
    scene, _ = _scene(0.0)
    with pytest.raises(InputError, match="height"):
        HeightScene(scene.rgb, scene.height[:-1], scene.crs, scene.transform)
    with pytest.raises(InputError, match=">= 0"):
        HeightScene(scene.rgb, -np.ones_like(scene.height), scene.crs, scene.transform)


def test_other_source_map_is_shifted_by_the_requested_metres():
    scene, (lat, lon) = _scene(box_h=0.0)
    base = scene.geomap("base")
    other = other_source_map(base, shift_e_m=3.0, shift_n_m=-2.0, photometric=Photometric(), resample=1.0,
                             patch_amp=0.0)
    # where the red square's centre is in the other map: 3 m east, 2 m south of the truth
    f = geo.LocalFrame(lat, lon)
    e, n = np.meshgrid(np.arange(-12, 12.01, 0.1), np.arange(-12, 12.01, 0.1))
    la, lo, _ = f.to_geodetic(e, n)
    for gm, want in ((base, (0.0, 0.0)), (other, (3.0, -2.0))):
        rgb, _ = gm.sample(lo, la, crs=geo.WGS84)
        m = (rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
        assert m.sum() > 100
        np.testing.assert_allclose([e[m].mean(), n[m].mean()], want, atol=0.15)
    # the default other source also changes colours and texture
    a, _ = base.sample(lo, la, crs=geo.WGS84)
    b, _ = other_source_map(base, 0.0, 0.0, seed=1).sample(lo, la, crs=geo.WGS84)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


def _texture_img() -> np.ndarray:
    rng = np.random.default_rng(5)
    return (np.clip(rng.normal(110, 40, (120, 160, 1)), 0, 255) * np.ones((1, 1, 3))).astype(np.uint8)


def test_sensor_effects_change_the_image_as_requested():
    img = _texture_img()
    np.testing.assert_array_equal(apply_sensor(img, SensorEffects()), img)
    over = apply_sensor(img, SensorEffects(exposure_ev=2.0))
    under = apply_sensor(img, SensorEffects(exposure_ev=-2.0))
    assert over.mean() > img.mean() + 40 and (over == 255).mean() > 0.2  # highlights clip
    assert under.mean() < img.mean() - 30 and len(np.unique(under)) < len(np.unique(img)) / 1.5  # shadows crush
    # motion blur along x smooths horizontal gradients, leaves vertical ones sharper
    mb = apply_sensor(img, SensorEffects(motion_blur_px=9.0, motion_angle_deg=0.0)).astype(float)
    gx, gy = np.abs(np.diff(mb[..., 0], axis=1)).mean(), np.abs(np.diff(mb[..., 0], axis=0)).mean()
    assert gx < 0.5 * gy
    df = apply_sensor(img, SensorEffects(defocus_px=3.0)).astype(float)
    g0 = np.abs(np.diff(img[..., 0].astype(float), axis=1)).mean()
    assert np.abs(np.diff(df[..., 0], axis=1)).mean() < 0.5 * g0
    noisy = apply_sensor(img, SensorEffects(noise_std=10.0), np.random.default_rng(0))
    assert 7.0 < np.std(noisy.astype(float) - img) < 13.0
    with pytest.raises(ConfigError, match="exposure_ev"):
        SensorEffects(exposure_ev=float("nan"))
    with pytest.raises(ConfigError, match="motion_blur_px"):
        SensorEffects(motion_blur_px=-1.0)


def test_hard_flight_folder_has_ground_truth_and_records_the_shift(tmp_path):
    from gleam_ros.core.flight import FlightSpec, load_flight
    from gleam_ros.core.sim.realism import simulate_hard_to_folder

    scene, _ = _scene(box_h=15.0)
    gm = scene.geomap("hard")
    spec = FlightSpec(frames=3, alt_m=60.0, alt_jitter_m=0.0, width=160, height=120, margin_m=60.0, seed=2)
    hard = HardSpec(max_off_nadir_deg=30.0, shift_e_m=1.0, shift_n_m=2.0)
    out = simulate_hard_to_folder(gm, spec, tmp_path / "f", hard, scene=scene, progress=False)
    fl = load_flight(out)
    assert len(fl) == 3 and all(p.exists() for p in fl.images)
    assert max(off_nadir_deg(p) for p in fl.poses) <= 30.0 + 1e-6
    meta = json.loads((out / "camera.json").read_text())
    assert meta["hard"]["shift_e_m"] == 1.0 and meta["hard"]["parallax"] is True


def test_hard_spec_validates():
    with pytest.raises(ConfigError, match="max_off_nadir_deg"):
        HardSpec(max_off_nadir_deg=70.0)
    with pytest.raises(ConfigError, match="shift_e_m"):
        HardSpec(shift_e_m=float("inf"))
    m = map_from_array(np.zeros((64, 64, 3), np.uint8) + 100, geo.utm_crs_for(LAT0, LON0),
                       (1.0, 0, 500000.0, 0, -1.0, 6700000.0))
    ref = HardSpec(ref_change=0.0, shift_e_m=0.0, shift_n_m=0.0).reference_map(m)
    rgb, _ = ref.sample(*np.meshgrid(np.arange(500010.0, 500050.0), np.arange(6699950.0, 6699990.0)))
    assert np.all(rgb == 100)  # no change asked: none made


# ------------------------------------------------------------------ pose fit on the ground plane (gleam_ros.core.plane)


def _two_level_scene(roof_h: float = 25.0, roof_share: float = 0.6):
    """Textured ground and one big flat textured roof ``roof_h`` metres up over the east ``roof_share`` of the
    centre square (a true orthophoto: the roof texture sits on its footprint)."""
    crs, t, centre = _grid()
    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (N // 16, N // 16, 3)).astype(np.float32)
    b = rng.integers(0, 255, (N // 4, N // 4, 3)).astype(np.float32)
    import cv2

    rgb = 0.6 * cv2.resize(a, (N, N), interpolation=cv2.INTER_NEAREST) + 0.4 * cv2.resize(b, (N, N),
                                                                                       interpolation=cv2.INTER_NEAREST)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 0.7).astype(np.uint8)
    h = np.zeros((N, N), np.float32)
    half = int(70 / GSD)  # 140 m square around the centre
    c = N // 2
    split = c + half - int(2 * half * roof_share)
    h[c - half:c + half, split:c + half] = roof_h
    return HeightScene(rgb, h, crs, t), centre


def test_pose_is_fitted_to_the_ground_plane_when_most_matches_lie_on_a_raised_plane():
    """60 % of the view is a roof 25 m up (over 100 m altitude): the pose must come from the ground plane's
    inliers (the height is the height above the ground, the position right) and the split is reported."""
    from gleam_ros.core.tiles import TileSpec, render_tile
    from gleam_ros.core.verify import Priors, Verifier, VerifyConfig

    scene, (lat, lon) = _two_level_scene(roof_h=25.0, roof_share=0.6)
    intr = CameraIntrinsics.from_fov(480, 360, 60.0)
    pose = Pose(0.0, lat, lon, 100.0, 20.0, pitch_deg=4.0, roll_deg=-3.0)
    frame, valid = render_parallax(scene, pose, intr)
    assert valid.all()
    gm = scene.geomap("ortho")
    x, y = geo.transform(lon, lat, geo.WGS84, gm.working_crs)
    tile = render_tile(gm, TileSpec(size_m=120.0, overlap=0.5, gsd_m=0.25), float(x) - 60.0, float(y) + 60.0, "t")
    v = Verifier(VerifyConfig(max_tilt_deg=30.0)).verify(frame, tile, intr, Priors(alt_m=100.0))
    assert v.ok, v.reason
    assert "two planes" in v.plane_note and "25 %" in v.plane_note, v.plane_note
    assert abs(v.alt_m - 100.0) < 3.0, v.alt_m  # the ground, not the roof (75 m)
    assert float(geo.distance_m(v.lat, v.lon, lat, lon)) < 1.0
    # a flat scene has no second plane: no note
    flat = HeightScene(scene.rgb, np.zeros_like(scene.height), scene.crs, scene.transform)
    v0 = Verifier(VerifyConfig(max_tilt_deg=30.0)).verify(render_parallax(flat, pose, intr)[0], tile, intr,
                                                           Priors(alt_m=100.0))
    assert v0.ok and v0.plane_note == "" and abs(v0.alt_m - 100.0) < 3.0


def test_gleam_simulate_hard_writes_the_flight_and_the_other_source_reference(tmp_path):
    from gleam_ros.cli import main
    from gleam_ros.core.flight import load_flight
    from gleam_ros.core.maps import open_map, write_geotiff

    scene, (lat, lon) = _scene(box_h=0.0)
    tif = write_geotiff(tmp_path / "map.tif", scene.rgb, scene.crs, scene.transform)
    rc = main(["simulate", "--hard", "--map", str(tif), "--out", str(tmp_path / "f"), "--frames", "2",
               "--ref-shift", "3,-2", "--ref-change", "0", "--ref-out", str(tmp_path / "ref.tif"),
               "--max-off-nadir", "30"])
    assert rc == 0
    fl = load_flight(tmp_path / "f")
    assert len(fl) == 2 and max(off_nadir_deg(p) for p in fl.poses) <= 30.0 + 1e-6
    meta = json.loads((tmp_path / "f" / "camera.json").read_text())["hard"]
    assert (meta["shift_e_m"], meta["shift_n_m"], meta["max_off_nadir_deg"]) == (3.0, -2.0, 30.0)
    ref = open_map(tmp_path / "ref.tif")
    f = geo.LocalFrame(lat, lon)
    e, n = np.meshgrid(np.arange(-12, 12.01, 0.25), np.arange(-12, 12.01, 0.25))
    la, lo, _ = f.to_geodetic(e, n)
    rgb, _ = ref.sample(lo, la, crs=geo.WGS84)
    m = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)  # the red square (--ref-change 0: no recolour)
    assert m.sum() > 1000
    np.testing.assert_allclose([e[m].mean(), n[m].mean()], (3.0, -2.0), atol=0.3)


def test_bench_run_hard_builds_the_hard_scenes(tmp_path):
    from gleam_ros.cli import build_parser
    from gleam_ros.core.bench import BenchConfig, config_from_args, make_scenes
    from gleam_ros.core.maps import write_geotiff

    a = build_parser().parse_args(["bench", "run", "--hard", "--map", "m.tif", "--no-world"])
    assert config_from_args(a).hard and not config_from_args(build_parser().parse_args(["bench", "run"])).hard
    scene, (lat, lon) = _scene(box_h=0.0)
    tif = write_geotiff(tmp_path / "map.tif", scene.rgb, scene.crs, scene.transform)
    scenes = make_scenes(BenchConfig(map_path=str(tif), world_size_m=300.0, hard=True))
    assert [s.name.endswith("_hard") for s in scenes] == [True, True]
    real, world = scenes
    assert real.verify["max_tilt_deg"] >= 50.0 and real.hard["shift_e_m"] == HardSpec().shift_e_m
    assert real.simulate is not None and world.simulate is not None
    assert real.reference_std_m == 0.0  # nothing declared: the other source is taken as exact
    a2 = build_parser().parse_args(["bench", "run", "--hard", "--map", str(tif), "--world-size", "300",
                                    "--ref-std", "1.5"])
    assert [s.reference_std_m for s in make_scenes(config_from_args(a2))] == [1.5, 0.0]  # the world is registered
    with pytest.raises(ConfigError, match="ref-std"):
        BenchConfig(map_path=str(tif), hard=True, ref_std_m=-1.0)
    # the real scene's index map is the other source: the red square sits 2 m E, 1.5 m S of the truth
    f = geo.LocalFrame(lat, lon)
    e, n = np.meshgrid(np.arange(-12, 12.01, 0.25), np.arange(-12, 12.01, 0.25))
    la, lo, _ = f.to_geodetic(e, n)
    a_rgb, _ = real.flight_map.sample(lo, la, crs=geo.WGS84)
    b_rgb, _ = real.index_map.sample(lo, la, crs=geo.WGS84)
    assert np.abs(a_rgb.astype(int) - b_rgb.astype(int)).mean() > 10
    # the world's flight map is another season than its index map
    c = world.index_map.center_latlon()
    g = geo.LocalFrame(*c)
    la, lo, _ = g.to_geodetic(e * 4, n * 4)
    assert np.abs(world.index_map.sample(lo, la, crs=geo.WGS84)[0].astype(int)
                  - world.flight_map.sample(lo, la, crs=geo.WGS84)[0].astype(int)).mean() > 5
