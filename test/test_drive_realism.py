"""Drive realism (issue 12 follow-up): body motion, mis-calibration, sensor effects, occluders; hard bench path."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from gleam_ros.core.bench_vehicle import VehicleBenchConfig, markdown_report, run_vehicle_bench, seed_list
from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.sim.drive import DriveRealism, simulate_drive
from gleam_ros.core.sim.street import GroundPose, pose_latlon
from gleam_ros.core.sim.world import WorldConfig, make_world

INTR = CameraIntrinsics.from_fov(160, 120, 90.0)  # focal length 80 px


@pytest.fixture(scope="module")
def world():
    return make_world(WorldConfig(seed=3, size_m=400.0, gsd_m=0.5))


@pytest.fixture(scope="module")
def easy(world):
    return simulate_drive(world, duration_s=2.0, fps=1.0, intr=INTR, rng=5)


def _only(**kw) -> DriveRealism:
    return DriveRealism(**{**vars(DriveRealism.none()), **kw})


def _gray(img):
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)


def test_pitch_offset_moves_the_horizon_by_the_predicted_rows(world, easy):
    frames, odom = easy
    hard, odom_h = simulate_drive(world, duration_s=2.0, fps=1.0, intr=INTR, rng=5,
                                  realism=_only(pitch_offset_deg=3.0))
    want = INTR.fy * math.tan(math.radians(3.0))  # looking up 3 deg moves the scene 4.2 px down
    for fe, fh in zip(frames, hard):
        (dx, dy), _ = cv2.phaseCorrelate(_gray(fe.image), _gray(fh.image))
        assert abs(dy - want) < 0.6 and abs(dx) < 0.5, (dx, dy, want)
        # ground truth: the same place, heading and time; the pose records the true attitude
        assert (fh.t, fh.lat, fh.lon, fh.pose.heading_deg) == (fe.t, fe.lat, fe.lon, fe.pose.heading_deg)
        assert fh.pose.pitch_deg == pytest.approx(3.0) and fh.pose.height_m == fe.pose.height_m
    # the same wheel + gyro readings; the hard drive's odometry also reports the body's attitude (an IMU), which
    # does not see the camera's mounting offset: level body, only the IMU error (0.3 deg)
    assert [(o.t, o.v_mps, o.yaw_rate_rps) for o in odom_h] == [(o.t, o.v_mps, o.yaw_rate_rps) for o in odom]
    assert all(math.isnan(o.pitch_deg) and math.isnan(o.roll_deg) for o in odom)  # a rigid car reports none
    assert max(max(abs(o.pitch_deg), abs(o.roll_deg)) for o in odom_h) < 1.5


def test_body_motion_and_miscalibration_are_in_the_true_pose(world, easy):
    frames, _ = easy
    spec = _only(pitch_std_deg=1.2, roll_std_deg=0.7, height_offset_m=0.15, pitch_offset_deg=-1.0)
    hard, _ = simulate_drive(world, duration_s=20.0, fps=2.0, intr=INTR, rng=5, realism=spec)
    assert (hard[0].lat, hard[0].lon) == (frames[0].lat, frames[0].lon)
    pitch = np.array([f.pose.pitch_deg for f in hard])
    roll = np.array([f.pose.roll_deg for f in hard])
    assert all(f.pose.height_m == pytest.approx(GroundPose(0, 0, 0).height_m + 0.15) for f in hard)
    assert abs(pitch.mean() + 1.0) < 1.5 and 0.2 < pitch.std() < 3.0 and 0.1 < roll.std() < 2.0
    # slowly varying (1.5 s correlation time): neighbouring frames 0.5 s apart are strongly correlated
    assert np.corrcoef(roll[:-1], roll[1:])[0, 1] > 0.3
    for f in hard:  # the frame is rendered from that true pose
        assert (f.lat, f.lon) == pose_latlon(world, f.pose)


def test_odometry_reports_the_body_attitude_with_the_imu_error(world):
    """With body motion, every odometry sample carries the body's pitch / roll (the camera's minus the mounting
    offset) plus a slowly varying IMU error of the stated size (OdomNoise.attitude_std_deg)."""
    from gleam_ros.core.sim.drive import OdomNoise

    spec = _only(pitch_std_deg=1.2, roll_std_deg=0.7, pitch_offset_deg=-1.0)
    frames, odom = simulate_drive(world, duration_s=40.0, fps=1.0, intr=INTR, rng=5, realism=spec)
    by_t = {o.t: o for o in odom}
    err = np.array([(by_t[f.t].pitch_deg - (f.pose.pitch_deg + 1.0), by_t[f.t].roll_deg - f.pose.roll_deg)
                    for f in frames])
    assert 0.1 < err.std() < 0.6 and np.abs(err).max() < 5 * OdomNoise().attitude_std_deg
    exact = OdomNoise(attitude_std_deg=0.0)
    frames, odom = simulate_drive(world, duration_s=3.0, fps=1.0, intr=INTR, rng=5, realism=spec, odom_noise=exact)
    by_t = {o.t: o for o in odom}
    for f in frames:
        assert by_t[f.t].pitch_deg == pytest.approx(f.pose.pitch_deg + 1.0)
        assert by_t[f.t].roll_deg == pytest.approx(f.pose.roll_deg)
    with pytest.raises(ConfigError, match="attitude_tau_s"):
        OdomNoise(attitude_tau_s=0.0)


def test_hills_add_the_grade_and_camber_to_the_imu_attitude_not_to_the_view(world):
    """On a graded, cambered road the odometry's pitch / roll (an IMU, against gravity) is the body's on the road plus
    the grade and the camber; the frames (the camera's view of the road) and the route are those of the flat drive.
    The grade varies along the drive with about the stated size."""
    from gleam_ros.core.sim.drive import OdomNoise

    exact = OdomNoise(attitude_std_deg=0.0)
    flat_spec = _only(pitch_std_deg=1.2, roll_std_deg=0.7)
    hill_spec = _only(pitch_std_deg=1.2, roll_std_deg=0.7, grade_std_deg=3.0, grade_length_m=40.0, camber_deg=1.2)
    flat, odom_f = simulate_drive(world, duration_s=60.0, fps=0.5, intr=INTR, rng=5, realism=flat_spec, odom_noise=exact)
    hill, odom_h = simulate_drive(world, duration_s=60.0, fps=0.5, intr=INTR, rng=5, realism=hill_spec, odom_noise=exact)
    for a, b in zip(flat, hill):
        assert a.pose == b.pose and np.array_equal(a.image, b.image)
    grade = np.array([h.pitch_deg - f.pitch_deg for f, h in zip(odom_f, odom_h)])
    camber = np.array([h.roll_deg - f.roll_deg for f, h in zip(odom_f, odom_h)])
    assert np.allclose(camber, 1.2)
    by_t = {o.t: g for o, g in zip(odom_h, grade)}
    assert all(f.grade_deg == pytest.approx(by_t[f.t]) and f.camber_deg == 1.2 for f in hill)  # the frames know it
    assert all(f.grade_deg == 0.0 and f.camber_deg == 0.0 for f in flat)
    assert 1.0 < grade.std() < 6.0 and np.abs(grade).max() > 2.0, (grade.std(), np.abs(grade).max())
    # smooth, as a road's vertical curves are: between two odometry ticks (0.4 m at 8 m/s) a raw OU profile of this
    # size would change by about 0.4 deg
    assert np.abs(np.diff(grade)).max() < 0.1, np.abs(np.diff(grade)).max()
    with pytest.raises(ConfigError, match="grade_length_m"):
        DriveRealism(grade_length_m=0.0)


def test_sensor_effects_and_occluders_change_the_image(world, easy):
    frames, _ = easy
    sens, _ = simulate_drive(world, duration_s=2.0, fps=1.0, intr=INTR, rng=5, realism=_only(sensor=1.0))
    for fe, fs in zip(frames, sens):
        assert fs.image.shape == fe.image.shape
        assert np.abs(fs.image.astype(int) - fe.image.astype(int)).mean() > 1.0
    occ, _ = simulate_drive(world, duration_s=2.0, fps=1.0, intr=INTR, rng=5, realism=_only(occluders=4.0))
    diff = np.stack([np.abs(o.image.astype(int) - e.image.astype(int)).sum(-1) for o, e in zip(occ, frames)])
    assert diff[:, : INTR.height // 2].max() == 0  # only the lower half (the road) is occluded
    assert (diff[:, INTR.height // 2:] > 0).any()


@pytest.mark.parametrize("kw, match", [
    ({"pitch_std_deg": -1.0}, "DriveRealism.pitch_std_deg"),
    ({"roll_std_deg": float("nan")}, "DriveRealism.roll_std_deg"),
    ({"body_tau_s": 0.0}, "DriveRealism.body_tau_s"),
    ({"height_offset_m": 2.0}, "DriveRealism.height_offset_m"),
    ({"pitch_offset_deg": 45.0}, "DriveRealism.pitch_offset_deg"),
    ({"sensor": 5.0}, "DriveRealism.sensor"),
    ({"occluders": "many"}, "DriveRealism.occluders"),
])
def test_bad_realism_is_a_config_error_naming_the_field(kw, match):
    with pytest.raises(ConfigError, match=match):
        DriveRealism(**kw)


def test_simulate_drive_rejects_a_non_spec(world):
    with pytest.raises(ConfigError, match="realism"):
        simulate_drive(world, duration_s=1.0, fps=1.0, intr=INTR, rng=5, realism={"sensor": 1.0})


def test_bench_config_checks():
    with pytest.raises(ConfigError, match="ref_shift_e_m"):
        VehicleBenchConfig(ref_shift_e_m=float("inf"))
    with pytest.raises(ConfigError, match="realism"):
        VehicleBenchConfig(realism=0.5)
    with pytest.raises(ConfigError, match="ref_std_m"):
        VehicleBenchConfig(ref_std_m=-0.5)


def test_hard_bench_quick_path_runs_and_records_the_misregistration(tmp_path):
    cfg = VehicleBenchConfig(world_seeds=(4242,), world_size_m=200.0, world_gsd_m=0.5, gps_s=1.0, lost_s=1.0,
                             image_width=96, image_height=72, pano_width=128, pano_height=64, n_particles=100,
                             n_particles_global=200, hard=True, ref_shift_e_m=2.0, ref_shift_n_m=-1.5, ref_std_m=1.5)
    res = run_vehicle_bench(cfg, tmp_path, command="test", log=lambda *a: None)
    saved = json.loads((tmp_path / "vehicle_bench.json").read_text())
    assert saved["hard"]["ref_shift_e_m"] == 2.0 and saved["hard"]["ref_shift_n_m"] == -1.5
    assert saved["hard"]["ref_shift_m"] == pytest.approx(2.5)
    assert saved["hard"]["ref_std_m"] == 1.5
    assert saved["hard"]["realism"] == vars(DriveRealism())
    assert set(res["rows"]) == set(res["rows_hard"]) and len(res["rows_hard"]) == 16
    ran = [r for r in res["rows_hard"].values() if r["run"]]  # no --finetuned: its 8 rows say "not run"
    assert len(ran) == 8 and all(r["frames"] > 0 for r in ran)
    md = (tmp_path / "vehicle_bench.md").read_text()
    assert md == markdown_report(res) and "| hard | ground | gps_lost |" in md and "| easy |" in md
    assert "+2 m E, -1.5 m N (2.5 m)" in md
    for key, r in res["rows_hard"].items():  # every frame without a fix is counted once, by its reason
        if r["run"] and key.split("/")[2].startswith("particle_filter"):
            assert sum(r["no_fix_reasons"].values()) == r["frames"] - r["trusted_fixes"]
    assert "Why the filter rows' frames had no trusted fix" in md
    assert (tmp_path / "vehicle_ground_hard.png").exists() and (tmp_path / "vehicle_ground.png").exists()


def test_seed_list_parses_the_sweep_tools_seeds_and_names_the_option_on_bad_text():
    """tools/vehicle_seeds.py, vehicle_kidnap_seeds.py and vehicle_twins.py share one parser of --seeds."""
    assert seed_list("1-4") == [1, 2, 3, 4]
    assert seed_list("0,3,5") == [0, 3, 5]
    assert seed_list("7") == [7]
    for bad in ("a-b", "", "4-1", "1,x"):
        with pytest.raises(ConfigError, match="--seeds"):
            seed_list(bad)

