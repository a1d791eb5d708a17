"""Thin rclpy adapters over :mod:`gleam_ros.core`: convert messages, call the core, convert back.

No matching logic lives here. Modules in this package import rclpy and ROS messages; a process
must call :func:`gleam_ros.ros_env.prepare` before importing them (the modules do it themselves).
"""
