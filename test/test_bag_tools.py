"""gleam bag simulate / replay / record: real bag files (mcap and sqlite3), real processes over DDS."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from gleam_ros.bag import BAG_EPOCH_S, FLIGHT_INFO_TOPIC
from gleam_ros.bag.simulate import GPS_LEAD_NS, SensorSpec, simulate_bag
from gleam_ros.bag.storage import deserialize, flight_info, open_bag
from ros_helpers import NodeProcess, next_domain_id, ros_child_env

ROOT = Path(__file__).resolve().parents[1]
GLEAM = str(Path(sys.executable).parent / "gleam")
NS = 1_000_000_000
T0 = int(BAG_EPOCH_S * NS)
WORLD = ["--world", "3", "--world-size", "400"]
FLIGHT = ["--frames", "12", "--width", "320", "--height", "240", "--fps", "2", "--speed", "10", "--seed", "1"]
DROPOUT = (2.0, 4.0)
PER_FRAME = ("/camera/camera_info", "/altitude", "/imu", "/ground_truth/fix", "/ground_truth/pose")


def _spec():
    from gleam_ros.core.flight import FlightSpec

    return FlightSpec(frames=12, width=320, height=240, fps=2, speed_mps=10, seed=1)


@pytest.fixture(scope="module")
def world_map():
    from gleam_ros.core.sim.world import WorldConfig, make_world

    return make_world(WorldConfig(seed=3, size_m=400)).satellite_map()


@pytest.fixture(scope="module")
def bags(tmp_path_factory, world_map):
    """Three bags of the same flight: mcap single file by the CLI (GPS NO_FIX in the dropout), a sqlite3
    rosbag2 directory (GPS silent in the dropout) and a compressed-image mcap directory, both in-process."""
    d = tmp_path_factory.mktemp("bags")
    out = subprocess.run([GLEAM, "bag", "simulate", *WORLD, "--out", str(d / "flight.mcap"), *FLIGHT,
                          "--gps-dropout", "2,4", "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bag: " in out.stdout and "/camera/image_raw" in out.stdout
    simulate_bag(world_map, _spec(), d / "silent", SensorSpec(dropout=DROPOUT, dropout_mode="silence"),
                 storage="sqlite3", progress=False)
    simulate_bag(world_map, _spec(), d / "compressed", SensorSpec(compressed=True), progress=False)
    return {"nofix": d / "flight.mcap", "silence": d / "silent", "compressed": d / "compressed"}


def _read(path) -> dict[str, list[tuple[int, str, bytes]]]:
    out: dict = {}
    with open_bag(path) as r:
        last = -1
        for conn, t, data in r.messages():
            assert t >= last, "bag messages out of time order"
            last = t
            out.setdefault(conn.topic, []).append((t, conn.msgtype, bytes(data)))
    return out


def _stamp(msg) -> int:
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec


# ------------------------------------------------------------------------------------------ simulate


@pytest.mark.parametrize("name", ["nofix", "silence"])
def test_bag_topics_types_counts_and_stamps(bags, name):
    msgs = _read(bags[name])
    types = {t: v[0][1] for t, v in msgs.items()}
    assert types == {
        "/camera/image_raw": "sensor_msgs/msg/Image", "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        "/gps/fix": "sensor_msgs/msg/NavSatFix", "/altitude": "sensor_msgs/msg/Range", "/imu": "sensor_msgs/msg/Imu",
        "/ground_truth/fix": "sensor_msgs/msg/NavSatFix", "/ground_truth/pose": "geometry_msgs/msg/PoseStamped",
        FLIGHT_INFO_TOPIC: "std_msgs/msg/String",
    }
    assert len(msgs["/camera/image_raw"]) == 12 and len(msgs[FLIGHT_INFO_TOPIC]) == 1
    for t in PER_FRAME:
        assert len(msgs[t]) == 12, t
    frame_stamps = [T0 + i * NS // 2 for i in range(12)]  # 2 fps from the bag epoch
    for topic, items in msgs.items():
        if topic == FLIGHT_INFO_TOPIC:
            continue
        stamps = [_stamp(deserialize(d, ty)) for _t, ty, d in items]
        assert all(b > a for a, b in zip(stamps, stamps[1:])), f"{topic}: header stamps not increasing"
        if topic in ("/camera/image_raw", "/camera/camera_info", "/ground_truth/fix", "/ground_truth/pose"):
            assert stamps == frame_stamps, topic
        if topic in ("/camera/image_raw", "/gps/fix", "/altitude", "/imu"):
            assert [t for t, _ty, _d in items] == stamps, f"{topic}: log time differs from header stamp"
    # within a frame the sensors come before the image: a node that sees a frame has seen its GPS
    img_t = [t for t, _ty, _d in msgs["/camera/image_raw"]]
    info_t = [t for t, _ty, _d in msgs["/camera/camera_info"]]
    assert all(a < b for a, b in zip(info_t, img_t))


@pytest.mark.parametrize("name", ["nofix", "silence"])
def test_gps_dropout_window_honoured(bags, name, world_map):
    from gleam_ros.core.flight import make_poses
    from gleam_ros.core.geo import distance_m

    poses = make_poses(world_map, _spec())
    gps = [deserialize(d, ty) for _t, ty, d in _read(bags[name])["/gps/fix"]]
    a, b = (T0 + int(v * NS) for v in DROPOUT)
    inside = [m for m in gps if a <= _stamp(m) + GPS_LEAD_NS <= b]
    outside = [m for m in gps if not a <= _stamp(m) + GPS_LEAD_NS <= b]
    assert len(outside) >= 15
    for m in outside:  # real fixes: finite, with their diagonal covariance (never without variances)
        assert m.status.status == 0 and math.isfinite(m.latitude) and math.isfinite(m.longitude)
        assert m.position_covariance_type == 2 and m.position_covariance[0] == pytest.approx(1.5 ** 2)
    if name == "nofix":
        assert len(inside) == 11  # 5 Hz over [2 s, 4 s], both ends included
        assert all(m.status.status == -1 and math.isnan(m.latitude) and m.position_covariance_type == 0 for m in inside)
    else:
        assert inside == []
    # realistic noise: ~1.5 m per axis, never wild
    t_pose = np.array([p.t for p in poses])
    errs = []
    for m in outside:
        t = (_stamp(m) + GPS_LEAD_NS - T0) / NS
        lat = np.interp(t, t_pose, [p.lat for p in poses])
        lon = np.interp(t, t_pose, [p.lon for p in poses])
        errs.append(float(distance_m(lat, lon, m.latitude, m.longitude)))
    assert 0.1 < float(np.median(errs)) < 6.0 and max(errs) < 12.0


def test_ground_truth_camera_info_image_and_flight_info(bags, world_map):
    from gleam_ros.core.flight import make_poses
    from gleam_ros.core.sim.camera_sim import simulate_flight

    spec = _spec()
    msgs = _read(bags["nofix"])
    poses = make_poses(world_map, spec)
    for (_t, ty, d), p in zip(msgs["/ground_truth/fix"], poses):
        m = deserialize(d, ty)
        assert (m.latitude, m.longitude) == pytest.approx((p.lat, p.lon), abs=1e-12)
        assert m.altitude == pytest.approx(p.alt_m)
    k = spec.intrinsics().K.ravel()
    for _t, ty, d in msgs["/camera/camera_info"]:
        m = deserialize(d, ty)
        assert (m.width, m.height) == (320, 240)
        np.testing.assert_allclose(m.k, k)
        assert m.p[0] == pytest.approx(k[0]) and m.p[2] == pytest.approx(k[2])
    first = next(simulate_flight(world_map, poses[:1], spec.intrinsics(), photometric_strength=spec.photometric,
                                 seed=spec.seed))
    img = deserialize(msgs["/camera/image_raw"][0][2], "sensor_msgs/msg/Image")
    assert (img.width, img.height, img.encoding, img.step) == (320, 240, "rgb8", 960)
    np.testing.assert_array_equal(np.asarray(img.data).reshape(240, 320, 3), first.image)
    # imu: the body attitude in ENU (heading within the simulated noise)
    from gleam_ros.bag.evaluate import _heading_from_quat

    for (_t, ty, d), p in zip(msgs["/imu"], poses):
        h = _heading_from_quat(deserialize(d, ty).orientation)
        assert abs((h - p.heading_deg + 180) % 360 - 180) < 15
    with open_bag(bags["nofix"]) as r:
        info = flight_info(r)
    assert info["spec"]["frames"] == 12 and info["gps_dropout_s"] == [2.0, 4.0]
    assert info["gps_dropout_ns"] == [T0 + 2 * NS, T0 + 4 * NS] and info["t0_ns"] == T0
    assert info["topics"]["image"] == "/camera/image_raw"
    meta = (bags["silence"] / "metadata.yaml").read_text()  # directory bags also carry it in custom_data
    assert "gleam/flight_info" in meta and (bags["silence"] / "silent.db3").is_file()


def test_compressed_images_decode_to_the_frame_size(bags):
    msgs = _read(bags["compressed"])
    assert "/camera/image_raw" not in msgs and len(msgs["/camera/image_raw/compressed"]) == 12
    _t, ty, d = msgs["/camera/image_raw/compressed"][0]
    m = deserialize(d, ty)
    assert ty == "sensor_msgs/msg/CompressedImage" and "jpeg" in m.format
    img = cv2.imdecode(np.asarray(m.data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3)
    assert (bags["compressed"] / "compressed.mcap").is_file() and (bags["compressed"] / "metadata.yaml").is_file()


# ------------------------------------------------------------------------------------------- errors


def _bad_bags(tmp: Path) -> dict[str, Path]:
    garbage = tmp / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n this is not a bag at all" * 10)
    empty = tmp / "empty.mcap"
    empty.write_bytes(b"")
    (tmp / "emptydir").mkdir()
    text = tmp / "notes.txt"
    text.write_text("hello")
    return {"garbage": garbage, "empty": empty, "emptydir": tmp / "emptydir", "missing": tmp / "nope.mcap",
            "text": text}


@pytest.mark.parametrize("command", ["replay", "eval"])
def test_unusable_bags_exit_2_naming_the_file(tmp_path, command):
    for kind, path in _bad_bags(tmp_path).items():
        args = [GLEAM, "bag", command, str(path)] if command == "replay" else \
            [GLEAM, "bag", "eval", "--bag", str(path), "--index", str(tmp_path), "--out", str(tmp_path / "res")]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (kind, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr, (kind, out.stderr)
        assert out.stderr.startswith("gleam: error:") and str(path) in out.stderr, (kind, out.stderr)


def test_eval_without_ground_truth_or_index_exit_2(tmp_path, bags):
    out = subprocess.run([GLEAM, "bag", "eval", "--bag", str(bags["nofix"]), "--index", str(tmp_path / "noindex"),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "noindex" in out.stderr and "Traceback" not in out.stderr
    # a bag recorded without ground truth (only the GPS topic) cannot be scored
    rec = tmp_path / "gps_only.mcap"
    from gleam_ros.bag.storage import BagWriter

    with open_bag(bags["nofix"]) as r, BagWriter(rec) as w:
        for conn, t, data in r.messages(connections=[c for c in r.connections if c.topic == "/gps/fix"]):
            w.write(conn.topic, conn.msgtype, t, data)
    out = subprocess.run([GLEAM, "bag", "eval", "--bag", str(rec), "--index", str(tmp_path), "--out",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and str(rec) in out.stderr and "Traceback" not in out.stderr


def test_simulate_refuses_to_overwrite(tmp_path, bags):
    out = subprocess.run([GLEAM, "bag", "simulate", "--world", "3", "--out", str(bags["nofix"]), "--frames", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "exists" in out.stderr and str(bags["nofix"]) in out.stderr


# ------------------------------------------------------------------------------- replay -> record


def test_replay_record_round_trip_between_processes(tmp_path, bags):
    """`gleam bag replay` in one process, `gleam bag record` in another: every message arrives once, in
    order, byte-identical (DDS pads the payload to 4 bytes; the padding is zeros), and /clock follows bag time."""
    domain = next_domain_id()
    sent = _read(bags["nofix"])
    topics = sorted(sent)
    out_bag = tmp_path / "recorded"  # a rosbag2 directory, sqlite3
    with NodeProcess([GLEAM, "bag", "record", "--out", str(out_bag), "--storage", "sqlite3", "--topics", *topics,
                      "/clock", "--duration", "120"], domain, tmp_path / "record.log") as rec:
        player = subprocess.run([GLEAM, "bag", "replay", str(bags["nofix"]), "--rate", "2", "--clock",
                                 "--wait-subscribers", "1", "--wait-timeout", "60"],
                                env=ros_child_env(domain), capture_output=True, text=True, timeout=120)
        assert player.returncode == 0, player.stderr[-3000:] + rec.log()
        assert "published 101 messages" in player.stdout
        code = rec.stop()  # SIGINT: the recorder closes the bag properly and exits 0
        assert code == 0, rec.log()
    got = _read(out_bag)
    for topic in topics:
        a = [d for _t, _ty, d in sent[topic]]
        b = [d for _t, _ty, d in got.get(topic, [])]
        assert len(a) == len(b), f"{topic}: sent {len(a)}, recorded {len(b)}"
        for x, y in zip(a, b):
            assert y[:len(x)] == x and set(y[len(x):]) <= {0} and len(y) - len(x) < 4, topic
        assert got[topic][0][1] == sent[topic][0][1]
    clock = [deserialize(d, ty).clock for _t, ty, d in got["/clock"]]
    ns = [c.sec * NS + c.nanosec for c in clock]
    assert len(ns) > 10 and ns == sorted(ns)
    with open_bag(bags["nofix"]) as r:
        assert r.start_time <= ns[0] and ns[-1] <= r.end_time


# ------------------------------------------------------------------------------------- launch file


def test_replay_eval_launch_file_matches_the_package():
    """The launch file (for real ROS 2 installs) names the installed executable, parameters the node
    declares, and a replay command line `gleam` accepts."""
    from gleam_ros.cli import build_parser
    from gleam_ros.nodes.localizer_node import declared_parameter_names

    root = ET.parse(ROOT / "launch" / "replay_eval.launch.xml").getroot()
    args = {a.get("name"): a.get("default") for a in root.iter("arg")}
    assert {"bag", "index", "platform"} <= set(args)
    (node,) = list(root.iter("node"))
    assert node.get("pkg") == "gleam_ros" and node.get("exec") == "localizer_node"
    assert (ROOT / "scripts" / "localizer_node").is_file()
    params = {p.get("name"): p.get("value") for p in node.iter("param") if p.get("name")}
    assert params["index_path"] == "$(var index)" and params["autostart"] == "true" and params["use_sim_time"] == "true"
    assert set(params) - {"use_sim_time"} <= set(declared_parameter_names())
    # the same parameter file as localize.launch.xml
    files = [p.get("from") for p in node.iter("param") if p.get("from")]
    localize = ET.parse(ROOT / "launch" / "localize.launch.xml").getroot()
    assert files == [p.get("from") for p in localize.iter("param") if p.get("from")]
    assert args["config"] == {a.get("name"): a.get("default") for a in localize.iter("arg")}["config"]
    remaps = {r.get("from") for r in node.iter("remap")}
    assert remaps == {"image", "camera_info", "gps/fix", "altitude", "imu", "odom"}
    (exe,) = list(root.iter("executable"))
    values = {**{k: v for k, v in args.items() if v is not None}, "bag": "flight.mcap", "index": "index"}
    cmd = shlex.split(re.sub(r"\$\(var (\w+)\)", lambda m: values[m.group(1)], exe.get("cmd")))
    assert cmd[0] == "gleam"
    a = build_parser().parse_args(cmd[1:])
    assert (a.command, a.bag_command, a.bag, a.clock, a.wait_subscribers) == ("bag", "replay", "flight.mcap", True, 1)


def test_bag_package_imports_without_rclpy():
    code = ("import sys; import gleam_ros.bag.simulate, gleam_ros.bag.storage, gleam_ros.bag.commands;"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py'))))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == []
