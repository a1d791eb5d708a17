"""ROS-free core of gleam_ros: maps, tiles, encoder, index, verification, filter, localizer.

Never imports rclpy or ROS messages; a non-ROS program can embed it directly.
"""
