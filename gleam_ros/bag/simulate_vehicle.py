"""Render a simulated drive (a car on the procedural world's roads) into a rosbag2 (no ROS needed).

The drive comes from :func:`gleam_ros.core.sim.drive.simulate_drive` (street-level frames in a season
other than the index's, wheel/gyro odometry with its noise, optionally a kidnap: the car teleported).
Topics (stamps are drive time from :data:`gleam_ros.bag.BAG_EPOCH_S`; log time = header stamp):

==================================  ==========================  =============================================
topic                               type                        content
==================================  ==========================  =============================================
``/camera/image_raw``               sensor_msgs/Image           street-level frame (ground) or equirectangular
                                                                panorama, rgb8, at the frame stamp
``/camera/camera_info``             sensor_msgs/CameraInfo      K, P of the pinhole camera (ground only)
``/odom``                           nav_msgs/Odometry           twist.linear.x and twist.angular.z (ENU yaw
                                                                rate) with their variances, dead-reckoned pose
                                                                in ``odom``; at the odometry rate. A ``--hard``
                                                                drive's orientation also carries the body's
                                                                pitch / roll as its IMU reports them, with
                                                                their variances (otherwise level, unmeasured)
``/gps/fix``                        sensor_msgs/NavSatFix       as ``gleam bag simulate`` for flights (noise,
                                                                rate, dropout window and mode)
``/ground_truth/fix``               sensor_msgs/NavSatFix       exact camera position at the frame stamp
``/ground_truth/pose``              geometry_msgs/PoseStamped   exact camera pose in a local ENU frame (heading;
                                                                a ``--hard`` drive's true pitch / roll)
``/gleam/flight_info``              std_msgs/String             JSON: platform ``vehicle``, modality, world,
                                                                season, dropout window, kidnap time
==================================  ==========================  =============================================

An odometry sample stamped at a frame's time is written before that frame: a node that sees the
frame has seen the odometry up to it.

``realism`` (``gleam bag simulate --platform vehicle --hard``: :class:`~gleam_ros.core.sim.drive.DriveRealism`
defaults, the hard vehicle benchmark's drive) makes the frames fail the way a real car's do: the body pitches
and rolls, the camera is mis-calibrated, sensor effects and occluding vehicles. The odometry then reports the
body attitude (the localizer projects each frame with it), so a replay exercises that path of the node.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.camera import CameraIntrinsics, body_quaternion
from ..core.errors import ConfigError
from ..core.geo import LocalFrame
from . import BAG_EPOCH_S, FLIGHT_INFO_TOPIC
from .simulate import FRAME_IDS, NS, EventQueue, SensorSpec, _Msgs, gps_messages
from .storage import BagWriter, check_output, header, typestore

TOPICS = {
    "image": "/camera/image_raw",
    "camera_info": "/camera/camera_info",
    "odom": "/odom",
    "gps": "/gps/fix",
    "gt_fix": "/ground_truth/fix",
    "gt_pose": "/ground_truth/pose",
    "flight_info": FLIGHT_INFO_TOPIC,
}
VEHICLE_MODALITIES = ("ground", "panorama")
UNMEASURED_VAR = 1.0e6  # variance of an odometry component the wheel/gyro odometry does not measure


def odometry_msg(ns: int, v_mps: float, yaw_rate_enu: float, v_std: float, yaw_rate_std: float,
                 x: float, y: float, heading_deg: float, pitch_deg: float = math.nan, roll_deg: float = math.nan,
                 attitude_std_deg: float = math.nan):
    """A nav_msgs/Odometry (rosbags object): REP-103 body twist (x forward, z up; yaw rate counter-clockwise)
    with its variances, and the dead-reckoned pose in ``odom`` (x east, y north at the start; position and yaw
    unmeasured: dead reckoning drifts). With a finite ``pitch_deg`` / ``roll_deg`` (core conventions) the
    orientation carries them with the variance ``attitude_std_deg``² (pose.covariance [21], [28]), as an IMU /
    AHRS reports a gravity-referenced attitude; otherwise the body is level and its attitude unmeasured."""
    t = typestore().types
    pose_cov = np.diag([UNMEASURED_VAR] * 6)
    att = math.isfinite(pitch_deg) and math.isfinite(roll_deg)
    if att:
        if not (math.isfinite(attitude_std_deg) and attitude_std_deg > 0):
            raise ConfigError(f"odometry attitude std must be a positive number of degrees, got {attitude_std_deg!r}")
        pose_cov[3, 3] = pose_cov[4, 4] = math.radians(attitude_std_deg) ** 2
    twist_cov = np.diag([v_std ** 2, UNMEASURED_VAR, UNMEASURED_VAR, UNMEASURED_VAR, UNMEASURED_VAR,
                         yaw_rate_std ** 2]).ravel()
    v3 = t["geometry_msgs/msg/Vector3"]
    twist = t["geometry_msgs/msg/TwistWithCovariance"](
        twist=t["geometry_msgs/msg/Twist"](linear=v3(x=float(v_mps), y=0.0, z=0.0),
                                           angular=v3(x=0.0, y=0.0, z=float(yaw_rate_enu))),
        covariance=twist_cov)
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=0.0),
                                         orientation=_quaternion(heading_deg, pitch_deg if att else 0.0,
                                                                 roll_deg if att else 0.0)),
        covariance=pose_cov.ravel())
    return t["nav_msgs/msg/Odometry"](header=header(ns, "odom"), child_frame_id="base_link", pose=pose, twist=twist)


def drive_description(world, modality: str, season: str, frames, intr, sensors: SensorSpec, t0_ns: int,
                      fps: float, odom_hz: float, kidnap_at_s: float | None, seed: int) -> dict:
    """The JSON description stored in a drive bag (``/gleam/flight_info`` and custom_data)."""
    d = sensors.dropout
    kidnap_t = next((f.t for f in frames if f.kidnapped), None)
    topics = {k: v for k, v in TOPICS.items() if intr is not None or k != "camera_info"}
    return {
        "generator": f"gleam bag simulate --platform vehicle (gleam_ros {__version__})",
        "platform": "vehicle",
        "modality": modality,
        "season": season,
        "world": asdict(world.cfg),
        "seed": seed,
        "t0_ns": t0_ns,
        "frames": len(frames),
        "fps": fps,
        "odom_hz": odom_hz,
        "intrinsics": asdict(intr) if intr is not None else None,
        "sensors": {k: v for k, v in asdict(sensors).items() if k not in ("dropout",)},
        "gps_dropout_s": list(d) if d else None,
        "gps_dropout_ns": [t0_ns + int(round(d[0] * NS)), t0_ns + int(round(d[1] * NS))] if d else None,
        "gps_dropout_mode": sensors.dropout_mode if d else None,
        "kidnap_at_s": kidnap_at_s,
        "kidnap_frame_t_s": kidnap_t,
        "origin": {"lat": frames[0].lat, "lon": frames[0].lon, "alt": sensors.ground_alt_m},
        "topics": topics,
    }


def check_drive(duration_s: float, fps: float, odom_hz: float, modality: str, sensors: SensorSpec,
                kidnap_at_s: float | None) -> None:
    """ConfigError naming the option when a drive cannot be simulated as asked (before any work)."""
    if modality not in VEHICLE_MODALITIES:
        raise ConfigError(f"--modality must be one of {VEHICLE_MODALITIES} for --platform vehicle, got {modality!r}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f"drive duration must be a positive number of seconds, got {duration_s}")
    if not (math.isfinite(odom_hz) and odom_hz >= fps > 0):
        raise ConfigError(f"--odom-rate must be at least the frame rate ({fps} Hz), got {odom_hz}")
    if sensors.dropout is not None and sensors.dropout[0] >= duration_s:
        raise ConfigError(f"--gps-dropout starts at {sensors.dropout[0]} s, after the drive ends ({duration_s:.1f} s)")
    if kidnap_at_s is not None and not (0.0 < kidnap_at_s < duration_s):
        raise ConfigError(f"--kidnap-at must be within the drive (0, {duration_s:g}) s, got {kidnap_at_s}")


def simulate_vehicle_bag(world, out: str | Path, duration_s: float = 120.0, fps: float = 2.0,
                         odom_hz: float = 20.0, modality: str = "ground", intr=None, season: str = "autumn",
                         sensors: SensorSpec | None = None, kidnap_at_s: float | None = None, seed: int = 0,
                         speed_mps: float = 8.0, storage: str | None = None, overwrite: bool = False,
                         t0_s: float = BAG_EPOCH_S, progress: bool = True, realism=None) -> Path:
    """Drive ``world``'s roads and write the drive bag; returns its path (see the module docstring).

    ``intr`` (CameraIntrinsics) is the ground camera; for panoramas its width (height: half) sizes the
    equirectangular image. ``season`` the appearance
    of the frames (use another one than the index's); ``sensors`` the GPS (rate, noise, dropout);
    ``kidnap_at_s`` teleports the car once at that time; ``realism`` a
    :class:`~gleam_ros.core.sim.drive.DriveRealism` (a hard drive, see the module docstring) or None.
    """
    from ..core.sim.drive import OdomNoise, integrate_odometry, simulate_drive

    sensors = sensors or SensorSpec()
    check_drive(duration_s, fps, odom_hz, modality, sensors, kidnap_at_s)
    check_output(out, storage, overwrite)
    rng = np.random.default_rng([seed, 0x7E1])
    if intr is None:
        intr = CameraIntrinsics.from_fov(640, 480, 90.0) if modality == "ground" else None
    pano = (intr.width, intr.width // 2) if intr is not None else (512, 256)
    noise = OdomNoise()
    frames, odometry = simulate_drive(world, duration_s=duration_s, fps=fps, odom_hz=odom_hz, modality=modality,
                                      intr=intr if modality == "ground" else None, season=season, rng=rng,
                                      kidnap_at_s=kidnap_at_s, speed_mps=speed_mps, pano_size=pano,
                                      progress=progress, realism=realism, odom_noise=noise)
    att_std = noise.attitude_std_deg  # the error of the reported attitude (a --hard drive)
    frames, odometry = list(frames), list(odometry)
    if not frames:
        raise ConfigError(f"the drive of {duration_s:g} s at {fps:g} fps has no frames")
    cam_intr = intr if modality == "ground" else None
    t0_ns = int(round(t0_s * NS))
    m = _Msgs(cam_intr, sensors)
    info = drive_description(world, modality, season, frames, cam_intr, sensors, t0_ns, fps, odom_hz,
                             kidnap_at_s, seed)
    info["realism"] = asdict(realism) if realism is not None else None
    info["odom_attitude_std_deg"] = att_std if realism is not None else None
    frame = LocalFrame(frames[0].lat, frames[0].lon, sensors.ground_alt_m)
    pe, pn, _ = frame.to_enu([f.lat for f in frames], [f.lon for f in frames], sensors.ground_alt_m)
    pe, pn = np.atleast_1d(pe).astype(float), np.atleast_1d(pn).astype(float)
    pt = np.array([f.t for f in frames], float)
    pu = np.array([f.pose.height_m for f in frames], float)

    events = EventQueue(TOPICS, t0_ns, info)
    add = events.add
    # The GPS follows the car; across the teleport it jumps (no in-between positions).
    gps_t, gps_e, gps_n, gps_u = pt, pe, pn, pu
    k = next((i for i, f in enumerate(frames) if f.kidnapped), None)
    if k is not None and k > 0:
        eps = 1e-6
        gps_t = np.concatenate([pt[:k], [pt[k] - eps], pt[k:]])
        gps_e, gps_n, gps_u = (np.concatenate([a[:k], [a[k - 1]], a[k:]]) for a in (pe, pn, pu))
    for ns, msg in gps_messages(m, sensors, rng, frame, gps_t, gps_e, gps_n, gps_u, t0_ns):
        add(ns, "gps", "sensor_msgs/msg/NavSatFix", msg)
    # OdometrySample's yaw rate is REP-103 (counter-clockwise) like twist.angular.z; the odom frame's x
    # axis points east at the start (heading 90).
    for s, (x, y, hdg) in zip(odometry, integrate_odometry(odometry, 0.0, 0.0, 90.0)):
        ns = t0_ns + int(round(s.t * NS))
        add(ns, "odom", "nav_msgs/msg/Odometry",
            odometry_msg(ns, s.v_mps, s.yaw_rate_rps, s.v_std, s.yaw_rate_std, x, y, hdg, s.pitch_deg, s.roll_deg,
                         att_std))
    for i, f in enumerate(frames):
        ns = t0_ns + int(round(f.t * NS))
        add(ns - 3 * NS // 1000, "gt_fix", "sensor_msgs/msg/NavSatFix",
            m.navsat(ns, FRAME_IDS["gt_fix"], f.lat, f.lon, pu[i] + sensors.ground_alt_m, 1e-6, 1e-6))
        add(ns - 2 * NS // 1000, "gt_pose", "geometry_msgs/msg/PoseStamped", _gt_pose(ns, pe[i], pn[i], pu[i], f))
        if cam_intr is not None:
            add(ns - NS // 1000, "camera_info", "sensor_msgs/msg/CameraInfo", m.camera_info(ns))

    with BagWriter(out, storage, overwrite=overwrite) as w:
        w.custom_data["gleam/flight_info"] = json.dumps(info)
        for f in frames:
            ns = t0_ns + int(round(f.t * NS))
            events.write_before(w, ns, inclusive=True)  # odometry stamped at the frame time goes first
            w.write_msg(TOPICS["image"], "sensor_msgs/msg/Image", ns, m.image(ns, f.image))
        events.write_before(w, None)
    return w.path


def _gt_pose(ns: int, e: float, n: float, u: float, f):
    """Ground-truth PoseStamped of a drive frame: the camera's position and attitude in ENU (heading; pitch / roll
    are 0 except in a hard drive, where they are the camera's true ones against gravity: its pitch / roll on the
    road, mis-calibration included, plus the road's grade / camber; small angles, added)."""
    t = typestore().types
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=float(e), y=float(n), z=float(u)),
                                       orientation=_quaternion(f.pose.heading_deg, f.pose.pitch_deg + f.grade_deg,
                                                               f.pose.roll_deg + f.camber_deg))
    return t["geometry_msgs/msg/PoseStamped"](header=header(ns, FRAME_IDS["gt_pose"]), pose=pose)


def _quaternion(heading_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0):
    """geometry_msgs/Quaternion (rosbags object) of a body with this compass heading, pitch and roll (core
    conventions; default level)."""
    x, y, z, w = body_quaternion(heading_deg, pitch_deg, roll_deg)
    return typestore().types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)
