"""`gleam bag simulate --platform vehicle`: a drive on a procedural world's roads as a rosbag2.

Checks what a vehicle node relies on: topics and stamps (odometry before the frame of the same time),
odometry that integrates to the true path (units and the REP-103 sign of the yaw rate), the GPS dropout,
the kidnap (ground truth jumps, odometry does not), panoramas without camera_info, clear errors, and that
`gleam bag eval` would start the node with the vehicle parameter file and the odometry remapped.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gleam_ros.bag import BAG_EPOCH_S, FLIGHT_INFO_TOPIC
from gleam_ros.bag.evaluate import EvalConfig, _heading_from_quat, node_command, plan_bag
from gleam_ros.bag.simulate import GPS_LEAD_NS
from gleam_ros.bag.storage import deserialize, flight_info, open_bag
from gleam_ros.core.geo import LocalFrame

ROOT = Path(__file__).resolve().parents[1]
GLEAM = str(Path(sys.executable).parent / "gleam")
NS = 1_000_000_000
T0 = int(BAG_EPOCH_S * NS)
FRAMES, FPS, ODOM_HZ = 9, 1.0, 20.0  # 8 s of driving
DROPOUT = (2.0, 5.0)
KIDNAP_S = 6.0


def _gleam(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([GLEAM, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    """A `gleam world` folder and two drive bags on it: ground camera (GPS dropout, kidnap) and panorama."""
    d = tmp_path_factory.mktemp("drives")
    _gleam("world", "--seed", "3", "--size", "300", "--out", str(d / "world"), "--variant-season", "")
    common = ["bag", "simulate", "--platform", "vehicle", "--world", str(d / "world"), "--frames", str(FRAMES),
              "--fps", str(FPS), "--odom-rate", str(ODOM_HZ), "--seed", "4", "--quiet"]
    out = _gleam(*common, "--out", str(d / "ground.mcap"), "--width", "160", "--height", "120",
                 "--gps-dropout", f"{DROPOUT[0]},{DROPOUT[1]}", "--kidnap-at", str(KIDNAP_S))
    assert "/odom" in out.stdout and "nav_msgs/msg/Odometry" in out.stdout
    _gleam(*common, "--out", str(d / "pano.mcap"), "--modality", "panorama", "--width", "256")
    return d


def _read(path) -> dict[str, list]:
    """topic -> [(log time, message, type)] in bag order (which must be time order)."""
    from test_bag_tools import _read as read_raw

    return {topic: [(t, deserialize(d, ty), ty) for t, ty, d in items] for topic, items in read_raw(path).items()}


def _stamp(msg) -> int:
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec


def test_drive_bag_topics_stamps_and_order(drives):
    msgs = _read(drives / "ground.mcap")
    types = {t: v[0][2] for t, v in msgs.items()}
    assert types == {
        "/camera/image_raw": "sensor_msgs/msg/Image", "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/odom": "nav_msgs/msg/Odometry", "/gps/fix": "sensor_msgs/msg/NavSatFix",
        "/ground_truth/fix": "sensor_msgs/msg/NavSatFix", "/ground_truth/pose": "geometry_msgs/msg/PoseStamped",
        FLIGHT_INFO_TOPIC: "std_msgs/msg/String",
    }
    frame_stamps = [T0 + int(i * NS / FPS) for i in range(FRAMES)]
    for topic in ("/camera/image_raw", "/camera/camera_info", "/ground_truth/fix", "/ground_truth/pose"):
        assert [_stamp(m) for _t, m, _ in msgs[topic]] == frame_stamps, topic
    odom = msgs["/odom"]
    assert len(odom) == int((FRAMES - 1) / FPS * ODOM_HZ) + 1
    o_stamps = [_stamp(m) for _t, m, _ in odom]
    assert o_stamps == [t for t, _m, _ in odom], "odometry log time differs from its stamp"
    assert all(b - a == NS // int(ODOM_HZ) for a, b in zip(o_stamps, o_stamps[1:]))
    # the odometry sample of a frame's time is in the bag before that frame
    order = [(t, topic) for topic in ("/odom", "/camera/image_raw") for t, _m, _ in msgs[topic]]
    with open_bag(drives / "ground.mcap") as r:
        seq = [(t, c.topic) for c, t, _d in r.messages() if c.topic in ("/odom", "/camera/image_raw")]
    assert sorted(order) == sorted(seq)
    for ns in frame_stamps:
        assert seq.index((ns, "/odom")) < seq.index((ns, "/camera/image_raw"))
    img = msgs["/camera/image_raw"][0][1]
    assert (img.width, img.height, img.encoding) == (160, 120, "rgb8")
    info = msgs["/camera/camera_info"][0][1]
    assert (info.width, info.height) == (160, 120) and info.k[0] > 0
    m = odom[0][1]
    assert m.header.frame_id == "odom" and m.child_frame_id == "base_link"
    assert m.twist.covariance[0] > 0 and m.twist.covariance[35] > 0  # the variances are reported


def test_odometry_integrates_to_the_true_path_until_the_kidnap(drives):
    """Twist in REP-103 units and sign: dead reckoning from the true start pose follows the true path,
    and the kidnap is a jump in the ground truth the odometry does not show."""
    msgs = _read(drives / "ground.mcap")
    gt = [m for _t, m, _ in msgs["/ground_truth/fix"]]
    hd = [_heading_from_quat(m.pose.orientation) for _t, m, _ in msgs["/ground_truth/pose"]]
    frame = LocalFrame(gt[0].latitude, gt[0].longitude)
    e, n, _ = frame.to_enu([m.latitude for m in gt], [m.longitude for m in gt])
    x, y, h = 0.0, 0.0, math.radians(hd[0])
    odom = [m for _t, m, _ in msgs["/odom"]]
    track = {}
    for a, b in zip(odom, odom[1:] + [None]):
        track[_stamp(a)] = (x, y)
        if b is None:
            break
        dt = (_stamp(b) - _stamp(a)) / NS
        w = a.twist.twist.angular.z  # counter-clockwise: the compass heading decreases
        hm = h - w * dt / 2.0
        x += a.twist.twist.linear.x * dt * math.sin(hm)
        y += a.twist.twist.linear.x * dt * math.cos(hm)
        h -= w * dt
    k = int(KIDNAP_S * FPS)
    stamps = [_stamp(m) for m in gt]
    travelled = math.hypot(e[k - 1] - e[0], n[k - 1] - n[0])
    assert travelled > 5.0, "the car must move for this test to mean anything"
    for i in range(1, k):
        px, py = track[stamps[i]]
        assert math.hypot(px - e[i], py - n[i]) < 0.1 * travelled + 1.0, (i, (px, py), (e[i], n[i]))
    jump = math.hypot(e[k] - e[k - 1], n[k] - n[k - 1])
    dr = math.dist(track[stamps[k]], track[stamps[k - 1]])
    assert jump > 100.0 and dr < 20.0, (jump, dr)


def test_hard_drive_odometry_reports_the_body_attitude(drives, tmp_path):
    """`--hard`: /odom's orientation carries the body's pitch / roll as an IMU reports them (read back by the node's
    converter, with the stated variance): the camera's true attitude against gravity (ground truth, hills included)
    minus the mounting mis-calibration, within the IMU error; the easy drive's odometry reports no attitude (NaN,
    so the node uses the mounting pitch)."""
    import numpy as np

    from gleam_ros.core.sim.drive import DriveRealism, OdomNoise
    from gleam_ros.nodes import convert

    def samples(path):
        return [convert.odometry_to_sample(m, 0.0, 0.05, 0.005) for _t, m, _ in _read(path)["/odom"]]

    assert all(math.isnan(s.pitch_deg) and math.isnan(s.roll_deg) for s in samples(drives / "ground.mcap"))
    bag = tmp_path / "hard.mcap"
    _gleam("bag", "simulate", "--platform", "vehicle", "--world", str(drives / "world"), "--frames", "21", "--fps",
           "2", "--odom-rate", "20", "--seed", "4", "--quiet", "--width", "160", "--height", "120", "--hard",
           "--out", str(bag))
    msgs = _read(bag)
    with open_bag(bag) as r:
        info = flight_info(r)
    real, std = DriveRealism(), OdomNoise().attitude_std_deg
    assert info["realism"]["pitch_offset_deg"] == real.pitch_offset_deg and info["odom_attitude_std_deg"] == std
    odo = {int(round(s.t * 1e3)): s for s in samples(bag)}
    assert all(math.isfinite(s.pitch_deg) and math.isfinite(s.roll_deg) for s in odo.values())
    m0 = msgs["/odom"][0][1]
    assert m0.pose.covariance[21] == pytest.approx(math.radians(std) ** 2)
    assert m0.pose.covariance[28] == pytest.approx(math.radians(std) ** 2)
    truth, reported = [], []
    for _t, m, _ in msgs["/ground_truth/pose"]:
        ref = type("Imu", (), {"orientation": m.pose.orientation, "orientation_covariance": [0.0] * 9})
        roll, pitch = convert.imu_to_roll_pitch(ref)
        s = odo[int(round(_stamp(m) / NS * 1e3))]
        truth.append((pitch - real.pitch_offset_deg, roll))  # the IMU sees the body, not the camera's mount
        reported.append((s.pitch_deg, s.roll_deg))
    truth, reported = np.array(truth), np.array(reported)
    assert len(truth) == 21
    assert truth[:, 0].std() > 0.3 and truth[:, 1].std() > 0.2, "the body must pitch and roll in a hard drive"
    assert np.abs(reported - truth).max() < 5 * std, np.abs(reported - truth).max()
    assert np.corrcoef(truth[:, 0], reported[:, 0])[0, 1] > 0.8


def test_gps_dropout_and_flight_info(drives):
    msgs = _read(drives / "ground.mcap")
    a, b = (T0 + int(v * NS) for v in DROPOUT)
    gps = [m for _t, m, _ in msgs["/gps/fix"]]
    inside = [m for m in gps if a <= _stamp(m) + GPS_LEAD_NS <= b]
    outside = [m for m in gps if not a <= _stamp(m) + GPS_LEAD_NS <= b]
    assert inside and outside
    assert all(m.status.status == -1 and math.isnan(m.latitude) for m in inside)
    assert all(m.status.status == 0 and m.position_covariance[0] > 0 for m in outside)
    with open_bag(drives / "ground.mcap") as r:
        info = flight_info(r)
    assert info["platform"] == "vehicle" and info["modality"] == "ground" and info["season"] == "autumn"
    assert info["gps_dropout_s"] == list(DROPOUT) and info["kidnap_at_s"] == KIDNAP_S
    assert info["kidnap_frame_t_s"] == pytest.approx(KIDNAP_S)
    assert info["world"]["seed"] == 3 and info["world"]["size_m"] == 300.0
    assert info["topics"]["odom"] == "/odom"


def test_panorama_drive_has_no_camera_info(drives):
    msgs = _read(drives / "pano.mcap")
    assert "/camera/camera_info" not in msgs
    img = msgs["/camera/image_raw"][0][1]
    assert (img.width, img.height) == (256, 128)
    with open_bag(drives / "pano.mcap") as r:
        info = flight_info(r)
    assert info["modality"] == "panorama" and info["intrinsics"] is None and info["kidnap_at_s"] is None


def test_bag_eval_starts_the_vehicle_node_with_odometry(drives, tmp_path):
    plan = plan_bag(drives / "ground.mcap")
    assert plan.topics["odom"] == "/odom" and plan.window_ns == (T0 + 2 * NS, T0 + 5 * NS)
    cmd = node_command(EvalConfig(bag=str(drives / "ground.mcap"), index=str(tmp_path), out=str(tmp_path),
                                  params={"n_particles": "300"}), plan)
    params_file = Path(cmd[cmd.index("--params-file") + 1])
    assert params_file == ROOT / "config" / "vehicle.yaml"
    assert yaml.safe_load(params_file.read_text())["gleam_localizer"]["ros__parameters"]["modality"] == "ground"
    assert "modality:=ground" in cmd and "odom:=/odom" in cmd and "n_particles:=300" in cmd
    # a parameter given with --param wins over the bag's modality
    cmd = node_command(EvalConfig(bag="x", index=str(tmp_path), out=str(tmp_path), params={"modality": "panorama"}),
                       plan)
    assert [a for a in cmd if a.startswith("modality:=")] == ["modality:=panorama"]
    # a flight bag (no platform) starts the node as before: no vehicle file, no odometry remap
    plan.info = {**plan.info, "platform": None}
    cmd = node_command(EvalConfig(bag="x", index=str(tmp_path), out=str(tmp_path)), plan)
    assert "--params-file" not in cmd and not any(a.startswith("modality:=") for a in cmd)


@pytest.mark.parametrize("args, message", [
    (["--map", "nope.tif"], "--platform vehicle drives a procedural world's roads"),
    (["--world", "/no/such/world"], "neither a seed nor a folder written by `gleam world`"),
    (["--world", "3", "--world-size", "300", "--kidnap-at", "50"], "--kidnap-at must be within the drive"),
    (["--world", "3", "--world-size", "300", "--gps-dropout", "30,40"], "after the drive ends"),
    (["--world", "3", "--world-size", "300", "--odom-rate", "0.5"], "--odom-rate must be at least the frame rate"),
])
def test_bad_vehicle_arguments_fail_with_a_clear_line(tmp_path, args, message):
    out = _gleam("bag", "simulate", "--platform", "vehicle", *args, "--out", str(tmp_path / "d.mcap"),
                 "--frames", "5", "--fps", "1", "--quiet", ok=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "d.mcap").exists()


def test_drive_positions_stay_on_the_world(drives):
    """Ground truth of the drive lies inside the world (the drive follows its roads)."""
    msgs = _read(drives / "pano.mcap")
    meta = yaml.safe_load((drives / "world" / "world.json").read_text())
    lat0, lon0 = meta["center_latlon"]
    frame = LocalFrame(lat0, lon0)
    for _t, m, _ in msgs["/ground_truth/fix"]:
        e, n, _ = frame.to_enu(m.latitude, m.longitude)
        assert abs(float(e)) < 150.0 and abs(float(n)) < 150.0


def test_kidnap_metrics_count_wrong_fixes_after_the_teleport_and_the_recovery(drives):
    from gleam_ros.bag.evaluate import kidnap_metrics
    from gleam_ros.core.evaluate import FrameRecord
    from gleam_ros.core.geo import offset_latlon

    plan = plan_bag(drives / "ground.mcap")
    msgs = _read(drives / "ground.mcap")
    gt = [(_stamp(m) / NS, m.latitude, m.longitude) for _t, m, _ in msgs["/ground_truth/fix"]]
    off_m = {5: 1.0, 6: 200.0, 7: None, 8: 4.0}  # frame -> error of its trusted fix (None: no fix)
    records = []
    for k, (t, lat, lon) in enumerate(gt):
        r = FrameRecord(t=t, gt_lat=lat, gt_lon=lon)
        if off_m.get(k) is not None:
            r.trusted = True
            r.est_lat, r.est_lon = offset_latlon(lat, lon, off_m[k], 0.0)
        records.append(r)
    m = kidnap_metrics(plan, records)
    assert m == {"kidnap_s": KIDNAP_S, "trusted_fixes_after": 2, "false_fixes_after": 1,
                 "recovered_after_s": pytest.approx(2.0)}
    plan.info = {**plan.info, "kidnap_frame_t_s": None}
    assert kidnap_metrics(plan, records) is None
