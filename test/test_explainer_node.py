"""GLEAM-X over ROS: the gleam_explainer service as a real process, and the localizer asking it
asynchronously (explanations published, a slow explainer never blocking localization)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from gleam_ros.core.geo import distance_m
from gleam_ros.core.index import TileIndex
from gleam_ros.msg import Explanation, GeoPoseHypotheses, GeoPoseHypothesis
from gleam_ros.nodes import convert
from gleam_ros.srv import Explain
from node_data import INTR, build_world_index, render, truth_pose
from ros_helpers import NodeProcess, next_domain_id, python_script, spin_until

ROOT = Path(__file__).resolve().parents[1]
EXPLAINER = [sys.executable, str(ROOT / "scripts" / "explainer_node")]
LOCALIZER = [sys.executable, str(ROOT / "scripts" / "localizer_node")]
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    geomap, index_dir = build_world_index(tmp_path_factory.mktemp("gleam_explain"))
    return geomap, index_dir, TileIndex.load(index_dir)


class Client:
    """Test-side node in its own domain."""

    def __init__(self, domain: int) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("gleam_test_explain_client", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def call(self, client, req, timeout: float = 120.0):
        future = client.call_async(req)
        assert spin_until(self.executor, future.done, timeout), "no response"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _nearest_tile(index: TileIndex, lat: float, lon: float) -> str:
    c = index.centers_latlon
    d = distance_m(np.full(len(c), lat), np.full(len(c), lon), c[:, 0], c[:, 1])
    return index.tile_ids[int(np.argmin(d))], index.tile_ids[int(np.argmax(d))]


def test_explain_service_by_tile_id_and_image(world, tmp_path):
    geomap, index_dir, index = world
    pose = truth_pose(geomap, 12)
    query = convert.rgb_to_image_msg(render(geomap, pose), Header(frame_id="camera_optical"))
    query.header.stamp.sec = 42
    near, far = _nearest_tile(index, pose.lat, pose.lon)
    domain = next_domain_id()
    args = EXPLAINER + ["--ros-args", "-p", f"index_path:={index_dir}", "-p", "hfov_deg:=60.0"]
    with NodeProcess(args, domain, tmp_path / "explainer.log") as proc:
        c = Client(domain)
        try:
            cli = c.node.create_client(Explain, "/gleam_explainer/explain")
            assert spin_until(c.executor, cli.service_is_ready, 90), proc.log()
            same = c.call(cli, Explain.Request(query=query, tile_id=near, language="en"))
            assert same.success, same.message
            e = same.explanation
            assert e.verdict == Explanation.VERDICT_MATCH and e.tile_id == near
            assert e.query_stamp.sec == 42 and e.language == "en" and e.backend
            assert e.evidence and e.text and all(item.description for item in e.evidence)
            assert same.evidence_image.width > query.width and len(same.evidence_image.data) > 0

            other = c.call(cli, Explain.Request(query=query, tile_id=far, language="zh"))
            assert other.success, other.message
            assert other.explanation.verdict == Explanation.VERDICT_NO_MATCH
            assert CJK.search(other.explanation.text), other.explanation.text

            by_image = c.call(cli, Explain.Request(
                query=query, reference=convert.rgb_to_image_msg(index.tile_by_id(near).image), language="en"))
            assert by_image.success and by_image.explanation.verdict == Explanation.VERDICT_MATCH

            # a street-map query (from the hypothesis): the UAV-calibrated verdict model says it is off its ground
            as_map = c.call(cli, Explain.Request(query=query, tile_id=near, language="en", has_hypothesis=True,
                                                 hypothesis=GeoPoseHypothesis(modality=GeoPoseHypothesis.MODALITY_MAP)))
            assert as_map.success, as_map.message
            assert "not calibrated on this kind of query" in as_map.explanation.text
            assert "not calibrated" not in e.text  # the UAV request above
            bad_mod = c.call(cli, Explain.Request(query=query, tile_id=near, language="en", has_hypothesis=True,
                                                  hypothesis=GeoPoseHypothesis(modality=77)))
            assert not bad_mod.success and "hypothesis.modality 77" in bad_mod.message

            unknown = c.call(cli, Explain.Request(query=query, tile_id="r9999_c9999", language="en"))
            assert not unknown.success and "r9999_c9999" in unknown.message
            bad_lang = c.call(cli, Explain.Request(query=query, tile_id=near, language="fr"))
            assert not bad_lang.success and "language" in bad_lang.message
            assert proc.alive()
        finally:
            c.close()


def _feed(c: Client, geomap, frames: int, hyps: list, until, timeout_per_frame: float = 30.0) -> None:
    pub = c.node.create_publisher(Image, "/cam/image_raw", qos_profile_sensor_data)
    info = c.node.create_publisher(CameraInfo, "/cam/camera_info", qos_profile_sensor_data)
    for k in range(frames):
        header = Header(frame_id="camera_optical")
        header.stamp = c.node.get_clock().now().to_msg()
        cam = CameraInfo(header=header, width=INTR.width, height=INTR.height)
        cam.k = [INTR.fx, 0.0, INTR.cx, 0.0, INTR.fy, INTR.cy, 0.0, 0.0, 1.0]
        info.publish(cam)
        n = len(hyps)
        pub.publish(convert.rgb_to_image_msg(render(geomap, truth_pose(geomap, k)), header))
        spin_until(c.executor, lambda n=n: len(hyps) > n, timeout_per_frame)
        if until():
            return


def test_localizer_asks_the_explainer_asynchronously(world, tmp_path):
    geomap, index_dir, _ = world
    domain = next_domain_id()
    explainer = EXPLAINER + ["--ros-args", "-p", f"index_path:={index_dir}", "-p", "hfov_deg:=60.0"]
    localizer = LOCALIZER + ["--ros-args", "-p", f"index_path:={index_dir}", "-p", "autostart:=true",
                             "-p", "explain_every_n:=1", "-p", "explain_language:=zh",
                             "-r", "image:=/cam/image_raw", "-r", "camera_info:=/cam/camera_info"]
    with NodeProcess(explainer, domain, tmp_path / "explainer.log") as ex, \
            NodeProcess(localizer, domain, tmp_path / "localizer.log") as loc:
        c = Client(domain)
        try:
            reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
            hyps, explanations = [], []
            c.node.create_subscription(GeoPoseHypotheses, "/gleam_localizer/hypotheses", hyps.append, reliable)
            c.node.create_subscription(Explanation, "/gleam_localizer/explanation", explanations.append, reliable)
            trigger = c.node.create_client(Trigger, "/gleam_localizer/explain_last")
            ready = c.node.create_client(Explain, "/gleam_explainer/explain")
            assert spin_until(c.executor, lambda: ready.service_is_ready() and trigger.service_is_ready(), 120), \
                ex.log() + loc.log()
            _feed(c, geomap, 12, hyps, until=lambda: len(explanations) >= 2)
            assert spin_until(c.executor, lambda: len(explanations) >= 2, 60), loc.log()[-3000:]
            e = explanations[0]
            assert e.verdict == Explanation.VERDICT_MATCH and e.language == "zh" and CJK.search(e.text)
            trusted_tiles = {m.hypotheses[0].tile_id for m in hyps if m.has_trusted_fix}
            assert e.tile_id in trusted_tiles
            # on request: explain the last trusted fix
            # (refused while the last per-fix request is in flight: one request at a time)
            def requested() -> bool:
                resp = c.call(trigger, Trigger.Request(), timeout=30)
                assert resp.success or "pending" in resp.message, resp.message
                return resp.success

            n = len(explanations)
            assert spin_until(c.executor, requested, 60, step=0.5)
            assert spin_until(c.executor, lambda: len(explanations) > n, 60)
            assert loc.alive() and ex.alive()
        finally:
            c.close()


def test_slow_explainer_never_blocks_localization(world, tmp_path):
    """An explainer that takes 30 s: requests time out after 1 s, hypotheses keep coming."""
    geomap, index_dir, _ = world
    domain = next_domain_id()
    slow = python_script("explain_test_server.py", "30", "/slow/explain")
    localizer = LOCALIZER + ["--ros-args", "-p", f"index_path:={index_dir}", "-p", "autostart:=true",
                             "-p", "explain_every_n:=1", "-p", "explain_service:=/slow/explain",
                             "-p", "explain_timeout_s:=1.0",
                             "-r", "image:=/cam/image_raw", "-r", "camera_info:=/cam/camera_info"]
    with NodeProcess(slow, domain, tmp_path / "slow.log") as _srv, \
            NodeProcess(localizer, domain, tmp_path / "localizer.log") as loc:
        c = Client(domain)
        try:
            reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
            hyps, diags = [], []
            c.node.create_subscription(GeoPoseHypotheses, "/gleam_localizer/hypotheses", hyps.append, reliable)
            c.node.create_subscription(DiagnosticArray, "/diagnostics",
                                       lambda a: diags.extend(s for s in a.status if s.name.startswith("gleam_localizer")),
                                       reliable)
            ready = c.node.create_client(Explain, "/slow/explain")
            assert spin_until(c.executor, ready.service_is_ready, 60)
            assert spin_until(c.executor, lambda: c.node.count_subscribers("/cam/image_raw") > 0, 120), loc.log()
            _feed(c, geomap, 10, hyps, until=lambda: False)
            trusted = [m for m in hyps if m.has_trusted_fix]
            assert len(hyps) >= 6 and len(trusted) >= 3, loc.log()[-3000:]

            def timeouts() -> int:
                vals = [dict((kv.key, kv.value) for kv in s.values) for s in diags]
                return max((int(v.get("explain_timeouts", "0")) for v in vals), default=0)

            assert spin_until(c.executor, lambda: timeouts() >= 1, 15), "no explanation timed out"
            assert loc.alive()
        finally:
            c.close()
