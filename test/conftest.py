"""Shared pytest setup: ROS environment from the source checkout, localhost-only discovery, and the
large-frame DDS transport for the test process (it publishes raw camera frames, like a bag player)."""

import os

from gleam_ros import ros_env

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
ros_env.prepare()

# Before the first participant of this process exists: frames over 512 KiB (e.g. a 480x360 32FC1
# image) otherwise go over fragmented best-effort UDP, which a loaded machine loses (seen in CI).
from gleam_ros.bag._ros import use_large_data_transport  # noqa: E402

use_large_data_transport()
