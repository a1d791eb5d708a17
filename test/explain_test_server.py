"""Test helper process: a tiny server of the gleam_ros/srv/Explain type (not the real explainer).

It answers from the request alone, so the caller can check every field crossed the process
boundary in both directions.
"""

import sys
import time

from gleam_ros import ros_env

ros_env.prepare()

import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException  # noqa: E402

from gleam_ros.msg import EvidenceItem, Explanation  # noqa: E402
from gleam_ros.srv import Explain  # noqa: E402


DELAY_S = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0  # a slow explainer, for timeout tests
SERVICE = sys.argv[2] if len(sys.argv) > 2 else "explain"


def handle(request: Explain.Request, response: Explain.Response) -> Explain.Response:
    time.sleep(DELAY_S)
    q = request.query
    response.success = True
    response.message = f"{q.width}x{q.height} {q.encoding} lang={request.language}"
    e = Explanation()
    e.verdict = Explanation.VERDICT_MATCH if request.has_hypothesis else Explanation.VERDICT_NO_MATCH
    e.confidence = float(request.hypothesis.similarity)
    e.language = request.language
    e.text = f"tile {request.tile_id}: {request.hypothesis.inlier_count} inliers"
    e.tile_id = request.tile_id
    e.query_stamp = q.header.stamp
    e.backend = "test-server"
    e.evidence = [EvidenceItem(
        kind="query_bytes", value=float(sum(q.data)), unit="", supports_match=True,
        description="sum of query bytes", query_regions=[0.0, 0.0, float(q.width), float(q.height)])]
    response.explanation = e
    response.evidence_image = request.reference
    return response


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("gleam_test_explain_server")
    node.create_service(Explain, SERVICE, handle)
    print("server ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
