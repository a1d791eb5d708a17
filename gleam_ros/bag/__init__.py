"""Flight bags: simulate, replay, record and evaluate rosbag2 files (sqlite3 or mcap).

- :mod:`gleam_ros.bag.storage`: read and write rosbag2 with ``rosbags`` (pure Python), the message
  type store (ROS 2 Kilted + this package's ``msg/*.msg``), clear errors for unusable bags.
- :mod:`gleam_ros.bag.simulate`: render a simulated flight into a bag with the topics a vehicle
  records (camera, camera_info, GPS with noise and an optional dropout, altimeter, IMU, ground truth).
- :mod:`gleam_ros.bag.replay` / :mod:`gleam_ros.bag.record`: publish a bag's raw CDR at recorded
  timing, and record topics raw into a bag (rclpy, imported lazily after
  :func:`gleam_ros.ros_env.prepare`).
- :mod:`gleam_ros.bag.evaluate`: run the localizer node as a process, replay a bag through it,
  record its outputs and report the metrics of ``gleam eval`` plus the GPS-fallback behaviour.

``storage`` and ``simulate`` never import rclpy: a bag can be simulated on a machine without ROS.
"""

BAG_EPOCH_S = 1_700_000_000.0
"""Bag time of the first frame of a simulated flight (seconds since the Unix epoch)."""

FLIGHT_INFO_TOPIC = "/gleam/flight_info"
"""Topic of the std_msgs/String JSON message describing how a simulated flight was made."""
