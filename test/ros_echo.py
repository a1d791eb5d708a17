"""Test helper process: subscribe to a topic of any type and publish every message back."""

import sys

from gleam_ros import ros_env

ros_env.prepare()

import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from msg_fill import message_class  # noqa: E402


def main() -> None:
    type_name, in_topic, out_topic = sys.argv[1:4]
    cls = message_class(type_name)
    rclpy.init()
    node = rclpy.create_node("gleam_test_echo")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(cls, out_topic, qos)
    node.create_subscription(cls, in_topic, pub.publish, qos)
    print("echo ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
