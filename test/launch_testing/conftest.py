"""Keep pytest away from the launch_testing tests here.

They need ROS 2's `launch_testing` (a sourced ROS 2 install; not installable from PyPI) and run
with `launch_test test/launch_testing/test_localize_launch.py`. CI here checks the launch files
statically (test/test_launch_files.py) and runs the same node as a process (test/test_localizer_node.py).
"""

collect_ignore_glob = ["test_*.py"]
