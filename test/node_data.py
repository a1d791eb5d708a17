"""Shared test data for node tests: a tiny procedural world, its tile index, frames at known poses."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix, NavSatStatus, Range
from std_msgs.msg import Header

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.encoder import TorchBackend
from gleam_ros.core.geo import offset_latlon
from gleam_ros.core.index import TileIndex
from gleam_ros.core.sim.camera_sim import Pose, render_view
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, iter_tiles
from gleam_ros.msg import GeoPoseHypotheses
from gleam_ros.nodes import convert
from ros_helpers import NodeProcess, spin_until

INTR = CameraIntrinsics.from_fov(480, 360, 60.0)
ALT = 120.0
ROOT = Path(__file__).resolve().parents[1]
NODE = [sys.executable, str(ROOT / "scripts" / "localizer_node")]
NODE_NAME = "gleam_localizer"


def build_world_index(out: Path):
    """(satellite GeoMap, index directory) of a 420 m procedural world, 100 m tiles at 0.25 m/px."""
    geomap = make_world(WorldConfig(seed=3, size_m=420.0, gsd_m=0.3)).satellite_map()
    index = TileIndex.build(iter_tiles(geomap, TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)),
                            TorchBackend(threads=1), progress=False)
    index.save(out / "index")
    return geomap, out / "index"


def truth_pose(geomap, k: int) -> Pose:
    """k-th pose of a northbound path over the middle of the world (heading near north)."""
    lat0, lon0 = geomap.center_latlon()
    lat, lon = offset_latlon(lat0, lon0, 20.0 * math.sin(k / 4.0), -60.0 + 5.0 * k)
    return Pose(t=float(k), lat=lat, lon=lon, alt_m=ALT, heading_deg=(8.0 * math.sin(k / 3.0)) % 360.0)


def render(geomap, pose: Pose) -> np.ndarray:
    """The nadir camera frame at ``pose`` (must be fully over the map)."""
    rgb, valid = render_view(geomap, pose, INTR)
    assert valid.mean() > 0.99
    return rgb


class Client:
    """The test side: a node in the test's domain that publishes sensors and records the outputs."""

    def __init__(self, domain: int, compressed: bool = False) -> None:
        self.dist: tuple[float, ...] = ()  # plumb_bob coefficients sent in camera_info (a real lens)
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("gleam_test_client", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        n = self.node
        self.image_pub = (n.create_publisher(CompressedImage, "/cam/image_raw/compressed", qos_profile_sensor_data)
                          if compressed else n.create_publisher(Image, "/cam/image_raw", qos_profile_sensor_data))
        self.info_pub = n.create_publisher(CameraInfo, "/cam/camera_info", qos_profile_sensor_data)
        self.gps_pub = n.create_publisher(NavSatFix, "/gps/fix", qos_profile_sensor_data)
        self.alt_pub = n.create_publisher(Range, "/altitude", qos_profile_sensor_data)
        self.imu_pub = n.create_publisher(Imu, "/imu", qos_profile_sensor_data)
        self.debug_images: list[Image] = []
        n.create_subscription(Image, f"/{NODE_NAME}/debug_image", self.debug_images.append, reliable)
        self.hyps: list[tuple[float, GeoPoseHypotheses]] = []
        self.fixes: list[NavSatFix] = []
        self.poses: list[PoseWithCovarianceStamped] = []
        self.diags: list[DiagnosticStatus] = []
        n.create_subscription(GeoPoseHypotheses, f"/{NODE_NAME}/hypotheses",
                              lambda m: self.hyps.append((self.now(), m)), reliable)
        n.create_subscription(NavSatFix, f"/{NODE_NAME}/fix", self.fixes.append, reliable)
        n.create_subscription(PoseWithCovarianceStamped, f"/{NODE_NAME}/pose", self.poses.append, reliable)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable)
        self.gps_timer = None

    def _on_diag(self, arr: DiagnosticArray) -> None:
        self.diags += [s for s in arr.status if s.name.startswith(NODE_NAME)]

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def spin(self, seconds: float) -> None:
        spin_until(self.executor, lambda: False, seconds)

    def until(self, predicate, timeout: float) -> bool:
        return spin_until(self.executor, predicate, timeout)

    def diag(self) -> dict:
        """The latest diagnostics of the node as a dict (+ level, message)."""
        if not self.diags:
            return {}
        s = self.diags[-1]
        d = {kv.key: kv.value for kv in s.values}
        d["level"], d["message"] = s.level, s.message
        return d

    def fresh_diag(self, timeout: float = 5.0) -> dict:
        n = len(self.diags)
        assert self.until(lambda: len(self.diags) > n, timeout), "no diagnostics"
        return self.diag()

    def camera_info(self, stamp, w: int = 480, h: int = 360) -> None:
        intr = INTR if (w, h) == (480, 360) else CameraIntrinsics.from_fov(w, h, 60.0)
        ci = CameraInfo(width=w, height=h, distortion_model="plumb_bob")
        ci.header.stamp, ci.header.frame_id = stamp, "camera_optical"
        ci.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
        ci.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        ci.d = list(self.dist)
        self.info_pub.publish(ci)

    def publish_frame(self, rgb: np.ndarray, with_info: bool = True, compressed: bool = False,
                      priors: bool = False, alt_m: float = ALT) -> float:
        """Publish a frame stamped now (with camera_info, optionally altitude + level IMU); returns the stamp."""
        stamp = self.node.get_clock().now().to_msg()
        if with_info:
            self.camera_info(stamp)
        if priors:
            rng = Range(range=alt_m, min_range=0.5, max_range=500.0, radiation_type=Range.INFRARED)
            rng.header.stamp, rng.header.frame_id = stamp, "rangefinder"
            self.alt_pub.publish(rng)
            imu = Imu()  # identity orientation: level, the frames are rendered with pitch = roll = 0
            imu.header.stamp, imu.header.frame_id = stamp, "imu"
            self.imu_pub.publish(imu)
        header = Header(stamp=stamp, frame_id="camera_optical")
        msg = convert.rgb_to_compressed_msg(rgb, header) if compressed else convert.rgb_to_image_msg(rgb, header)
        self.image_pub.publish(msg)
        return convert.stamp_to_sec(stamp)

    def publish_until(self, msg, counter, timeout: float = 30.0, every: float = 2.5) -> bool:
        """Publish ``msg`` (again every ``every`` s: the first sample after discovery may be lost) until
        ``counter()`` rises."""
        before = counter()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.image_pub.publish(msg)
            if self.until(lambda: counter() > before, min(every, end - time.monotonic())):
                return True
        return False

    def result_for(self, stamp: float, timeout: float = 30.0) -> GeoPoseHypotheses | None:
        def find():
            return next((m for _, m in self.hyps if abs(convert.stamp_to_sec(m.header.stamp) - stamp) < 1e-6), None)

        self.until(lambda: find() is not None, timeout)
        return find()

    def start_gps(self, pose_fn, rate_hz: float = 10.0) -> None:
        def tick():
            lat, lon = pose_fn()
            m = NavSatFix(latitude=lat, longitude=lon, altitude=ALT)
            m.header.stamp, m.header.frame_id = self.node.get_clock().now().to_msg(), "gps"
            m.status.status, m.status.service = NavSatStatus.STATUS_FIX, NavSatStatus.SERVICE_GPS
            m.position_covariance = [4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 9.0]
            m.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
            self.gps_pub.publish(m)

        self.gps_timer = self.node.create_timer(1.0 / rate_hz, tick)

    def stop_gps(self) -> None:
        self.node.destroy_timer(self.gps_timer)
        self.gps_timer = None

    def wait_active(self, proc: NodeProcess, timeout: float = 90.0) -> None:
        ok = self.until(lambda: self.image_pub.get_subscription_count() > 0 or not proc.alive(), timeout)
        assert ok and proc.alive(), f"node never subscribed:\n{proc.log()}"

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def node_args(index_dir, *extra: str, autostart: bool = True) -> list[str]:
    args = [*NODE, "--ros-args", "-p", f"index_path:={index_dir}", "-p", "num_threads:=1",
            "-r", "image:=/cam/image_raw", "-r", "camera_info:=/cam/camera_info", "-r", "gps/fix:=/gps/fix"]
    if autostart:
        args += ["-p", "autostart:=true"]
    for e in extra:
        args += ["-p", e]
    return args


# --------------------------------------------------------------------------------------- tests
