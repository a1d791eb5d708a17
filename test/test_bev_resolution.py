"""The ground camera's bird's-eye view does not depend on the frame's resolution (VehicleConfig.bev_focal_px).

The same street scene rendered at 320x240, 640x480, 1280x960 and 1280x720 (90 deg field of view) gives nearly the
same view; sensor noise does not make a larger frame's view worse than a small one's; the resampling helper
area-averages to the focal length and scales the intrinsics; the panorama and a coarser frame are untouched.
A small procedural world, no shared data.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.sim.drive import RoadGrid
from gleam_ros.core.sim.realism import SensorEffects, apply_sensor
from gleam_ros.core.sim.street import GroundPose, StreetScene, render_ground, render_panorama
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.vehicle import RoadLayer, VehicleConfig, bev_corr, birds_eye, frame_at_focal

CFG = VehicleConfig()
SIZES = ((640, 480), (1280, 960), (1280, 720))  # each compared with 320x240; the last a 16:9 frame


def _corr(a, b) -> float:
    """Correlation of two bird's-eye views over their common cells (at least 90 % of the smaller one's)."""
    c, n = bev_corr(a, b)
    assert n >= 0.9 * min(a.n, b.n), (n, a.n, b.n)
    return c


@pytest.fixture(scope="module")
def scene_poses():
    world = make_world(WorldConfig(seed=3, size_m=200.0, gsd_m=0.5, season="summer"))
    scene = StreetScene.from_world(world, season="autumn")
    grid, roads = RoadGrid(world), RoadLayer.from_world(world)
    rng = np.random.default_rng(1)
    poses = []
    for pitch, roll in ((1.0, -0.5), (-1.5, 0.8), (0.0, 0.0)):
        x, y = grid.random_start(rng)
        h = float(roads.axis_deg(x, y)) + 180.0 * int(rng.integers(2))
        poses.append(GroundPose(x, y, h, 1.6, pitch, roll))
    return scene, poses


def _view(scene, pose, w, h, noise: bool = False):
    intr = CameraIntrinsics.from_fov(w, h, 90.0)
    img = render_ground(scene, pose, intr)
    if noise:  # the hard drive's worst sensor noise and a middling JPEG, the same draw at every size
        img = apply_sensor(img, SensorEffects(noise_std=6.0, jpeg_quality=60), np.random.default_rng(0))
    return birds_eye(img, CFG, intr, pose.pitch_deg, pose.roll_deg)


def test_the_same_scene_at_higher_resolutions_gives_nearly_the_same_birds_eye_view(scene_poses):
    """Clean frames: the view of a 640x480, 1280x960 or 1280x720 frame correlates > 0.99 with the 320x240
    view of the same pose (before bev_focal_px, with a fixed 1 px blur at the frame's own resolution: 0.96-0.99)."""
    scene, poses = scene_poses
    for pose in poses:
        ref = _view(scene, pose, 320, 240)
        for w, h in SIZES:
            c = _corr(ref, _view(scene, pose, w, h))
            assert c > 0.99, (pose, (w, h), c)


def test_sensor_noise_does_not_make_a_larger_frames_view_worse(scene_poses):
    """With 6 grey levels of noise and JPEG per pixel, the view of a larger frame fits the clean 320x240 view at
    least as well as the noisy 320x240 frame's view does (each cell averages more pixels' noise; before, the noise
    per cell was that of one pixel and the larger frame's view fitted worse: 0.96-0.985 against 0.996)."""
    scene, poses = scene_poses
    for pose in poses:
        clean = _view(scene, pose, 320, 240)
        small = _corr(clean, _view(scene, pose, 320, 240, noise=True))
        for w, h in SIZES:
            big = _corr(clean, _view(scene, pose, w, h, noise=True))
            assert big >= small, (pose, (w, h), big, small)


def test_frame_at_focal_area_averages_to_the_focal_length_and_scales_the_intrinsics():
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (480, 640), dtype=np.uint8)
    intr = CameraIntrinsics.from_fov(640, 480, 90.0)  # fx = fy = 320
    small, si = frame_at_focal(big, intr, 160.0)
    assert small.shape == (240, 320)
    ref = CameraIntrinsics.from_fov(320, 240, 90.0)
    assert (si.width, si.height) == (320, 240)
    assert np.allclose((si.fx, si.fy, si.cx, si.cy), (ref.fx, ref.fy, ref.cx, ref.cy))
    block_means = big.reshape(240, 2, 320, 2).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(small - block_means).max() <= 0.5 + 1e-9  # 2x2 means, rounded to 8 bit
    # a camera whose focal length is at or below focal_px: the frame itself, untouched
    for f in (160.0, 200.0):
        same, same_intr = frame_at_focal(small, si, f)
        assert same is small and same_intr is si
    # non-square pixels: each axis to the focal length on its own
    aniso = CameraIntrinsics(640, 480, 320.0, 640.0, 319.5, 239.5)
    out, oi = frame_at_focal(big, aniso, 160.0)
    assert out.shape == (120, 320) and np.isclose(oi.fx, 160.0) and np.isclose(oi.fy, 160.0)


def test_panorama_and_coarser_frames_are_untouched(scene_poses):
    """bev_focal_px concerns only ground frames finer than it: a panorama's view and a 160x120 frame's view are
    bit for bit the same whatever its value."""
    scene, poses = scene_poses
    pose = poses[0]
    pano_cfg = VehicleConfig(modality="panorama")
    pano = render_panorama(scene, pose, 512, 256)
    a, b = (birds_eye(pano, c, None, pose.pitch_deg, pose.roll_deg)
            for c in (pano_cfg, replace(pano_cfg, bev_focal_px=20.0)))
    assert np.array_equal(a.values, b.values) and np.array_equal(a.fwd, b.fwd)
    intr = CameraIntrinsics.from_fov(160, 120, 90.0)  # fx = 80: coarser than the default 160
    img = render_ground(scene, pose, intr)
    a, b = (birds_eye(img, c, intr, pose.pitch_deg, pose.roll_deg) for c in (CFG, replace(CFG, bev_focal_px=10000.0)))
    assert np.array_equal(a.values, b.values)


@pytest.mark.parametrize("bad", [0.0, 5.0, 1e5, float("nan"), float("inf"), True, "160"])
def test_bev_focal_px_is_range_checked(bad):
    with pytest.raises(ConfigError, match="VehicleConfig.bev_focal_px"):
        VehicleConfig(bev_focal_px=bad)
