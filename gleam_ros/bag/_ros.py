"""rclpy plumbing shared by replay, record and eval; imported only after :func:`gleam_ros.ros_env.prepare`.

Large messages. Fast DDS (the RMW from PyPI, and ROS 2's default) sends a sample through shared memory
only when it fits the sender's segment (512 KiB by default); a raw 640x480 rgb8 frame (900 KiB) goes
over UDP in fragments instead, and to a best-effort subscriber (camera subscriptions use the
sensor-data QoS) one fragment lost under CPU load loses the frame: measured, a busy localizer node
received 4 of 30 such frames. A process that publishes a bag therefore gives its own participant a
32 MiB shared-memory segment (:func:`use_large_data_transport`), unless the user configured Fast DDS
(``FASTDDS_DEFAULT_PROFILES_FILE``) or another RMW. Only the sender needs it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .. import ros_env
from .storage import BagError

ros_env.prepare()

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402

_classes: dict[str, type] = {}
FASTDDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
_LARGE_DATA_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<!-- written by gleam_ros (gleam bag replay/eval): shared memory for samples up to the segment size -->
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>gleam_shm_large</transport_id>
      <type>SHM</type>
      <segment_size>{segment}</segment_size>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>gleam_udp</transport_id>
      <type>UDPv4</type>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="gleam_large_data" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>gleam_shm_large</transport_id>
        <transport_id>gleam_udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def use_large_data_transport(segment_bytes: int = 32 << 20) -> str | None:
    """Before rclpy.init: give this process's Fast DDS participant a large shared-memory segment (see the
    module docstring). Returns the profile path, or None when left alone (user profile, other RMW,
    no room in /dev/shm)."""
    if os.environ.get(FASTDDS_PROFILE_ENV):
        return None
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return None
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return None
    segment = min(int(segment_bytes), free // 4)
    if segment < (2 << 20):
        return None
    path = Path(tempfile.gettempdir()) / f"gleam_ros_fastdds_large_data_{os.getuid()}_{segment}.xml"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_LARGE_DATA_XML.format(segment=segment))
        os.replace(tmp, path)
    os.environ[FASTDDS_PROFILE_ENV] = str(path)
    return str(path)


def message_class(msgtype: str) -> type:
    """The compiled rclpy message class of 'pkg/msg/Name' (imports ``pkg.msg``)."""
    cls = _classes.get(msgtype)
    if cls is None:
        parts = msgtype.split("/")
        if len(parts) != 3:
            raise BagError(f"not a ROS 2 message type name: {msgtype!r}")
        try:
            cls = getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
        except (ImportError, AttributeError) as exc:
            raise BagError(f"message type {msgtype} is not available in this ROS environment ({exc})") from None
        _classes[msgtype] = cls
    return cls


def data_qos(depth: int = 100, reliable: bool = True, transient_local: bool = False) -> QoSProfile:
    """QoS of data topics (reliable, volatile, keep last ``depth`` unless asked otherwise)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


def adapted_qos(node, topic: str, depth: int = 100) -> QoSProfile:
    """A subscription QoS that matches every publisher of ``topic`` (as ``ros2 bag record`` adapts):
    reliable unless some publisher is best-effort, transient-local only when all publishers are."""
    infos = node.get_publishers_info_by_topic(topic)
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos) if infos else True
    latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return data_qos(depth, reliable=reliable, transient_local=latched)


class RosSession:
    """An rclpy context, one node and a single-threaded executor; SIGINT is left to Python
    (KeyboardInterrupt) unless the caller installs its own handlers."""

    def __init__(self, name: str, domain_id: int | None = None) -> None:
        if domain_id is None and os.environ.get("ROS_DOMAIN_ID", "").strip():
            try:
                domain_id = int(os.environ["ROS_DOMAIN_ID"])
            except ValueError:
                raise BagError(f"ROS_DOMAIN_ID must be an integer, got {os.environ['ROS_DOMAIN_ID']!r}") from None
        self.context = rclpy.Context()
        kw = {"domain_id": domain_id} if domain_id is not None else {}
        # args=[]: not sys.argv, where a `gleam bag eval --param NAME:=VALUE` would read as a remap rule
        rclpy.init(args=[], context=self.context, signal_handler_options=SignalHandlerOptions.NO, **kw)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_once(self, timeout: float) -> None:
        """Run at most one ready callback, waiting up to ``timeout`` seconds."""
        self.executor.spin_once(timeout_sec=max(0.0, timeout))

    def close(self) -> None:
        """Destroy the node and shut the context down; idempotent."""
        if self.context is None:
            return
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.context)
            self.context = None


@contextmanager
def ros_session(name: str, domain_id: int | None = None):
    """Context manager around :class:`RosSession`."""
    s = RosSession(name, domain_id)
    try:
        yield s
    finally:
        s.close()
