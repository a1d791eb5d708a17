"""Shared pytest setup: ROS environment from the source checkout, localhost-only discovery."""

import os

from gleam_ros import ros_env

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
ros_env.prepare()
