"""launch_testing: localize.launch.xml brings gleam_localizer to ACTIVE and it publishes diagnostics.

For a machine with ROS 2 installed (Humble, Jazzy, Kilted) and the package built in a sourced
workspace (`colcon build --packages-select gleam_ros && source install/setup.bash`):

    launch_test src/gleam_ros/test/launch_testing/test_localize_launch.py

It builds a tiny tile index of a procedural world first (about 10 s on a CPU; set
GLEAM_LAUNCH_TEST_INDEX=<index dir> to use an existing one). pytest does not collect this file
(see conftest.py here): `launch_testing` is not available from PyPI.
"""

from __future__ import annotations

import os
import tempfile
import time
import unittest
from pathlib import Path

import launch
import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
import rclpy
from ament_index_python.packages import get_package_share_directory
from diagnostic_msgs.msg import DiagnosticArray
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource
from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState

NODE = "gleam_localizer"
CAMERA = "/launch_test/image_raw"


def _tiny_index() -> str:
    given = os.environ.get("GLEAM_LAUNCH_TEST_INDEX")
    if given:
        return given
    from gleam_ros.core.encoder import TorchBackend
    from gleam_ros.core.index import TileIndex
    from gleam_ros.core.sim.world import WorldConfig, make_world
    from gleam_ros.core.tiles import TileSpec, iter_tiles

    geomap = make_world(WorldConfig(seed=3, size_m=420.0, gsd_m=0.3)).satellite_map()
    out = Path(tempfile.mkdtemp(prefix="gleam_launch_test_")) / "index"
    TileIndex.build(iter_tiles(geomap, TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)), TorchBackend(threads=1),
                    progress=False).save(out)
    return str(out)


@pytest.mark.launch_test
def generate_test_description():
    launch_file = os.path.join(get_package_share_directory("gleam_ros"), "launch", "localize.launch.xml")
    include = IncludeLaunchDescription(
        AnyLaunchDescriptionSource(launch_file),
        launch_arguments={"index": _tiny_index(), "platform": "uav", "camera": CAMERA}.items(),
    )
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()]), {}


class TestLocalizerComesUp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()

    @classmethod
    def tearDownClass(cls):
        rclpy.shutdown()

    def setUp(self):
        self.node = rclpy.create_node("gleam_launch_probe")

    def tearDown(self):
        self.node.destroy_node()

    def test_node_reaches_active(self, proc_output):
        client = self.node.create_client(GetState, f"/{NODE}/get_state")
        state = None
        deadline = time.monotonic() + 180.0  # configure loads the encoder and the index
        while time.monotonic() < deadline and state != State.PRIMARY_STATE_ACTIVE:
            if client.wait_for_service(timeout_sec=1.0):
                future = client.call_async(GetState.Request())
                rclpy.spin_until_future_complete(self.node, future, timeout_sec=5.0)
                if future.done() and future.result() is not None:
                    state = future.result().current_state.id
            if state != State.PRIMARY_STATE_ACTIVE:
                time.sleep(0.5)
        self.assertEqual(state, State.PRIMARY_STATE_ACTIVE)
        proc_output.assertWaitFor(f"active: subscribed to {CAMERA}", timeout=30)

    def test_publishes_diagnostics(self):
        got = []
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: got.extend(s for s in m.status if s.name.startswith(NODE)), 10)
        deadline = time.monotonic() + 180.0

        def active() -> bool:
            return bool(got) and {kv.key: kv.value for kv in got[-1].values}.get("state") == "active"

        while time.monotonic() < deadline and not active():
            rclpy.spin_once(self.node, timeout_sec=0.5)
        self.assertTrue(got, "no diagnostics from gleam_localizer")
        values = {kv.key: kv.value for kv in got[-1].values}
        self.assertEqual(values["state"], "active")
        self.assertGreater(int(values["index_tiles"]), 0)
        self.assertIn(values["mode"], ("shadow", "fallback"))


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code_is_zero(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
