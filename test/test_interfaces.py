"""Every custom message crosses a process boundary field by field; the Explain service answers."""

from __future__ import annotations

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from msg_fill import diff, fill, message_class
from ros_helpers import NodeProcess, next_domain_id, python_script, spin_until

MESSAGES = [
    "gleam_ros/msg/GeoPoseHypothesis",
    "gleam_ros/msg/GeoPoseHypotheses",
    "gleam_ros/msg/EvidenceItem",
    "gleam_ros/msg/Explanation",
]


@pytest.fixture
def ros_context():
    """A fresh rclpy context in a domain of its own; yields (domain_id, context, node, executor)."""
    domain = next_domain_id()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("gleam_test_client", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    yield domain, ctx, node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def test_fill_sets_every_field_to_a_non_default():
    """The filler itself must produce messages that differ from defaults, or the round trip proves little."""
    for type_name in MESSAGES:
        cls = message_class(type_name)
        filled = fill(cls(), seed=3)
        assert diff(cls(), filled), type_name
        # every top-level field differs from its default
        for name in cls.get_fields_and_field_types():
            assert diff(getattr(cls(), name), getattr(filled, name)), f"{type_name}.{name} left at default"


@pytest.mark.parametrize("type_name", MESSAGES)
def test_message_round_trip_between_processes(type_name, ros_context, tmp_path):
    domain, _ctx, node, executor = ros_context
    cls = message_class(type_name)
    sent = fill(cls(), seed=7)
    received = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(cls, "roundtrip_in", qos)
    node.create_subscription(cls, "roundtrip_out", received.append, qos)
    with NodeProcess(python_script("ros_echo.py", type_name, "roundtrip_in", "roundtrip_out"), domain,
                     tmp_path / "echo.log") as echo:
        matched = spin_until(executor, lambda: pub.get_subscription_count() > 0
                             and node.count_publishers("roundtrip_out") > 0, timeout=30)
        assert matched, f"echo process never matched:\n{echo.log()}"

        def got_one() -> bool:
            if not received:
                pub.publish(sent)
            return bool(received)

        assert spin_until(executor, got_one, timeout=20, step=0.2), f"no echo received:\n{echo.log()}"
        assert echo.alive()
    assert diff(sent, received[0]) == []


def test_explain_service_between_processes(ros_context, tmp_path):
    from gleam_ros.msg import Explanation
    from gleam_ros.srv import Explain

    domain, _ctx, node, executor = ros_context
    client = node.create_client(Explain, "explain")
    req = Explain.Request()
    req.query.header.stamp.sec, req.query.header.stamp.nanosec = 1234, 5678
    req.query.width, req.query.height, req.query.encoding, req.query.step = 4, 2, "mono8", 4
    req.query.data = bytes(range(8))
    req.tile_id = "r0003_c0004"
    req.reference = fill(req.reference, seed=5)
    req.language = "zh"
    req.has_hypothesis = True
    req.hypothesis.similarity = 0.75
    req.hypothesis.inlier_count = 42
    with NodeProcess(python_script("explain_test_server.py"), domain, tmp_path / "server.log") as server:
        assert spin_until(executor, client.service_is_ready, timeout=30), f"service never came up:\n{server.log()}"
        future = client.call_async(req)
        assert spin_until(executor, future.done, timeout=20), f"no response:\n{server.log()}"
    resp = future.result()
    assert resp.success
    assert resp.message == "4x2 mono8 lang=zh"
    e = resp.explanation
    assert e.verdict == Explanation.VERDICT_MATCH
    assert e.confidence == pytest.approx(0.75)
    assert (e.language, e.tile_id, e.backend) == ("zh", "r0003_c0004", "test-server")
    assert e.text == "tile r0003_c0004: 42 inliers"
    assert (e.query_stamp.sec, e.query_stamp.nanosec) == (1234, 5678)
    assert len(e.evidence) == 1 and e.evidence[0].value == float(sum(range(8)))
    assert list(e.evidence[0].query_regions) == [0.0, 0.0, 4.0, 2.0]
    assert diff(req.reference, resp.evidence_image) == []
