"""Drive simulation: the car stays on the roads, odometry integrates to the path, kidnap, frames, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.sim.drive import (
    OdomNoise,
    _drive_states,
    integrate_odometry,
    odometry_from_truth,
    plan_drive,
    simulate_drive,
)
from gleam_ros.core.sim.street import GroundPose, pose_latlon
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.vehicle import RoadLayer


@pytest.fixture(scope="module")
def world():
    return make_world(WorldConfig(seed=3, size_m=400.0, gsd_m=0.5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drive_stays_on_roads_and_moves(world, seed):
    poses = plan_drive(world, 90.0, 8.0, np.random.default_rng(seed))
    assert len(poses) == 90 * 20 + 1
    assert all(isinstance(p, GroundPose) for _, p in poses)
    x = np.array([p.x for _, p in poses])
    y = np.array([p.y for _, p in poses])
    on = RoadLayer.from_world(world).lookup(x, y, tol_m=0.5)
    assert on.all(), f"{(~on).sum()} of {len(on)} poses off the drivable roads"
    dist = float(np.hypot(np.diff(x), np.diff(y)).sum())
    assert dist > 300.0, f"the car drove only {dist:.0f} m in 90 s"
    hdg = np.array([p.heading_deg for _, p in poses])
    turned = np.abs(np.diff(np.unwrap(np.radians(hdg)))).sum()
    assert math.degrees(turned) > 90.0  # it follows curves / takes turns
    # the default region keeps the car 25 m inside the world, where the camera sees the world
    xmin, ymin, xmax, ymax = world.bounds()
    assert x.min() >= xmin + 24 and x.max() <= xmax - 24 and y.min() >= ymin + 24 and y.max() <= ymax - 24


def test_odometry_integrates_to_the_path(world):
    st = _drive_states(world, 60.0, 8.0, np.random.default_rng(4), 0.05)
    rng = np.random.default_rng(0)
    exact = odometry_from_truth(st["t"], st["v"], st["yaw_rate"], OdomNoise(0, 0, 0, 0), rng)
    track = integrate_odometry(exact, st["x"][0], st["y"][0], st["heading_deg"][0])
    err = np.hypot(track[:, 0] - st["x"], track[:, 1] - st["y"])
    assert err.max() < 0.01, f"noise-free odometry drifts {err.max():.3f} m from the true path"
    noisy = odometry_from_truth(st["t"], st["v"], st["yaw_rate"], OdomNoise(), rng)
    track = integrate_odometry(noisy, st["x"][0], st["y"][0], st["heading_deg"][0])
    dist = float(np.hypot(np.diff(st["x"]), np.diff(st["y"])).sum())
    drift = float(np.hypot(track[-1, 0] - st["x"][-1], track[-1, 1] - st["y"][-1]))
    assert 0.0 < drift < 0.05 * dist + 2.0, f"drift {drift:.1f} m over {dist:.0f} m"
    assert all(o.v_std == OdomNoise().v_std and o.yaw_rate_std == OdomNoise().yaw_rate_std for o in noisy)


def test_kidnap_teleports_but_odometry_does_not_see_it(world):
    dt = 0.05
    st = _drive_states(world, 30.0, 8.0, np.random.default_rng(5), dt, kidnap_at_s=15.0)
    k = int(st["kidnap_step"])
    assert k == 300
    step = np.hypot(np.diff(st["x"]), np.diff(st["y"]))
    assert step[k - 1] >= 150.0  # the jump
    assert np.delete(step, k - 1).max() <= 8.0 * dt + 1e-6  # everywhere else the car drives
    assert abs(st["v"][k] - st["v"][k - 1]) < 1.0  # the wheels keep turning through the teleport


def test_simulate_drive_frames_and_odometry(world):
    intr = CameraIntrinsics.from_fov(160, 120, 90.0)
    frames, odom = simulate_drive(world, duration_s=4.0, fps=1.0, odom_hz=20.0, modality="ground", intr=intr,
                                  rng=7, kidnap_at_s=2.5)
    assert len(frames) == 5 and len(odom) == 81
    ts = [o.t for o in odom]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    for f in frames:
        assert f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8
        assert f.t in ts
        lat, lon = pose_latlon(world, f.pose)
        assert (lat, lon) == (f.lat, f.lon)
    assert [f.kidnapped for f in frames] == [False, False, False, True, False]
    pano, _ = simulate_drive(world, duration_s=1.0, fps=1.0, modality="panorama", rng=7, pano_size=(256, 128))
    assert len(pano) == 2 and pano[0].image.shape == (128, 256, 3)
    # same seed, same drive
    again, odom2 = simulate_drive(world, duration_s=4.0, fps=1.0, modality="ground", intr=intr, rng=7,
                                  kidnap_at_s=2.5)
    assert np.array_equal(again[-1].image, frames[-1].image) and odom2 == odom


@pytest.mark.parametrize("kwargs, match", [
    ({"modality": "uav"}, "modality"),
    ({"fps": 0.0}, "fps"),
    ({"odom_hz": 1.0, "fps": 2.0}, "odom_hz"),
    ({"duration_s": -1.0}, "duration_s"),
    ({"kidnap_at_s": 100.0, "duration_s": 10.0}, "kidnap_at_s"),
    ({"rng": "seed"}, "rng"),
    ({"region": (0.0, 0.0, 10.0, 10.0)}, "no drivable road"),
    ({"region": (10.0, 0.0, 0.0, 10.0)}, "region"),
    ({"speed_mps": 100.0}, "speed_mps"),
])
def test_bad_input_is_a_clear_error(world, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        simulate_drive(world, **{"duration_s": 2.0, **kwargs})


def test_odom_noise_checks():
    with pytest.raises(ConfigError, match="v_std"):
        OdomNoise(v_std=-1.0)
    with pytest.raises(ConfigError, match="gyro_bias_std"):
        OdomNoise(gyro_bias_std=float("nan"))
