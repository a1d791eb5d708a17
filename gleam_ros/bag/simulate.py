"""Render a simulated flight into a rosbag2 with the topics a vehicle records (no ROS needed).

Topics (stamps are flight time from :data:`gleam_ros.bag.BAG_EPOCH_S`; log time = header stamp):

==================================  ==========================  =============================================
topic                               type                        content
==================================  ==========================  =============================================
``/camera/image_raw``               sensor_msgs/Image           rendered frame, rgb8 (or ``.../compressed``:
                                                                CompressedImage, JPEG) at the frame stamp
``/camera/camera_info``             sensor_msgs/CameraInfo      K, P of the simulated pinhole camera, each frame
``/gps/fix``                        sensor_msgs/NavSatFix       truth + Gauss-Markov noise (``gps_noise_m`` per
                                                                axis, tau 30 s) with its diagonal covariance, at
                                                                ``gps_rate_hz``; inside the dropout window
                                                                STATUS_NO_FIX messages (mode ``nofix``) or none
                                                                (mode ``silence``)
``/altitude``                       sensor_msgs/Range           height above ground + N(0, ``alt_noise_m``)
``/imu``                            sensor_msgs/Imu             body attitude in ENU (REP-103 body: x forward,
                                                                y left, z up) with small noise; gravity
``/ground_truth/fix``               sensor_msgs/NavSatFix       exact position at the frame stamp
``/ground_truth/pose``              geometry_msgs/PoseStamped   exact pose in a local ENU frame at the first
                                                                frame (frame_id ``gleam_gt_enu``)
``/gleam/flight_info``              std_msgs/String             JSON: spec, intrinsics, dropout window, noise
==================================  ==========================  =============================================

Within one frame the sensors come first (GPS -20 ms, altimeter -15 ms, IMU -10 ms), then ground
truth, camera_info and the image at the frame stamp: a node that sees the image has seen its GPS.
The flight description is also stored in the bag's ``custom_data`` (rosbag2 metadata).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import __version__
from ..core.camera import body_to_enu
from ..core.errors import ConfigError
from ..core.geo import LocalFrame
from . import BAG_EPOCH_S, FLIGHT_INFO_TOPIC
from .storage import BagWriter, check_output, header, typestore

NS = 1_000_000_000
TOPICS = {
    "image": "/camera/image_raw",
    "image_compressed": "/camera/image_raw/compressed",
    "camera_info": "/camera/camera_info",
    "gps": "/gps/fix",
    "altitude": "/altitude",
    "imu": "/imu",
    "gt_fix": "/ground_truth/fix",
    "gt_pose": "/ground_truth/pose",
    "flight_info": FLIGHT_INFO_TOPIC,
}
FRAME_IDS = {"camera": "camera_optical", "gps": "gps", "altitude": "altimeter", "imu": "base_link",
             "gt_fix": "base_link", "gt_pose": "gleam_gt_enu"}
DROPOUT_MODES = ("nofix", "silence")
GPS_LEAD_NS = NS // 50  # a GPS sample is stamped 20 ms before the frame of the same flight time


@dataclass(frozen=True)
class SensorSpec:
    """How the simulated vehicle's sensors behave (noise in metres / degrees, rates in Hz)."""

    gps_rate_hz: float = 5.0
    gps_noise_m: float = 1.5
    gps_vertical_noise_m: float = 3.0
    gps_tau_s: float = 30.0
    alt_noise_m: float = 1.0
    imu_tilt_noise_deg: float = 0.5
    imu_yaw_noise_deg: float = 3.0
    dropout: tuple[float, float] | None = None  # GPS dropout window, seconds of flight time
    dropout_mode: str = "nofix"
    compressed: bool = False
    jpeg_quality: int = 90
    ground_alt_m: float = 0.0  # ellipsoidal height of the flat ground

    def __post_init__(self) -> None:
        if not (self.gps_rate_hz > 0 and math.isfinite(self.gps_rate_hz)):
            raise ConfigError(f"gps rate must be a positive number, got {self.gps_rate_hz}")
        if min(self.gps_noise_m, self.gps_vertical_noise_m, self.alt_noise_m, self.imu_tilt_noise_deg,
               self.imu_yaw_noise_deg) < 0 or self.gps_tau_s <= 0:
            raise ConfigError("sensor noise must be >= 0 and gps_tau_s > 0")
        if self.dropout is not None:
            a, b = self.dropout
            if not (math.isfinite(a) and math.isfinite(b) and 0 <= a < b):
                raise ConfigError(f"--gps-dropout must be START,END seconds with 0 <= START < END, got {a},{b}")
        if self.dropout_mode not in DROPOUT_MODES:
            raise ConfigError(f"--gps-dropout-mode must be one of {DROPOUT_MODES}, got {self.dropout_mode!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg quality must be within [1, 100], got {self.jpeg_quality}")


def parse_dropout(text: str | None) -> tuple[float, float] | None:
    """'START,END' (seconds of flight time) -> (start, end); None or '' -> None."""
    if not text:
        return None
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--gps-dropout must be 'START,END' in seconds, got {text!r}") from None
    return a, b


def _quat(r: np.ndarray):
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(r).as_quat()
    return typestore().types["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w))


def _gauss_markov(rng: np.random.Generator, n: int, dt: float, tau: float, sigma: float) -> np.ndarray:
    a = math.exp(-dt / tau)
    out = np.empty(n)
    x = rng.normal(0.0, sigma)
    for i in range(n):
        out[i] = x
        x = a * x + math.sqrt(1.0 - a * a) * rng.normal(0.0, sigma)
    return out


class _Msgs:
    """Builders of the rosbags message objects of one simulated flight."""

    def __init__(self, intr, sensors: SensorSpec) -> None:
        self.t = typestore().types
        self.sensors = sensors
        self.intr = intr  # CameraIntrinsics of the camera_info messages (None: no camera_info, e.g. panoramas)

    def navsat(self, ns: int, frame_id: str, lat: float, lon: float, alt: float, var_en: float, var_u: float,
               fix: bool = True):
        t = self.t
        status = t["sensor_msgs/msg/NavSatStatus"](status=0 if fix else -1, service=1)
        if fix:
            cov = np.array([var_en, 0, 0, 0, var_en, 0, 0, 0, var_u], float)
            ctype = 2  # COVARIANCE_TYPE_DIAGONAL_KNOWN
        else:
            lat = lon = alt = math.nan
            cov, ctype = np.zeros(9), 0
        return t["sensor_msgs/msg/NavSatFix"](header=header(ns, frame_id), status=status, latitude=float(lat),
                                              longitude=float(lon), altitude=float(alt), position_covariance=cov,
                                              position_covariance_type=ctype)

    def camera_info(self, ns: int):
        i = self.intr
        k = np.array([i.fx, 0, i.cx, 0, i.fy, i.cy, 0, 0, 1], float)
        p = np.array([i.fx, 0, i.cx, 0, 0, i.fy, i.cy, 0, 0, 0, 1, 0], float)
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=header(ns, FRAME_IDS["camera"]), height=i.height, width=i.width, distortion_model="plumb_bob",
            d=np.zeros(5), k=k, r=np.eye(3).ravel(), p=p, binning_x=0, binning_y=0, roi=roi)

    def image(self, ns: int, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        if self.sensors.compressed:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.sensors.jpeg_quality])
            if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
                raise ConfigError("JPEG encoding failed")
            return self.t["sensor_msgs/msg/CompressedImage"](
                header=header(ns, FRAME_IDS["camera"]), format="rgb8; jpeg compressed bgr8",
                data=np.frombuffer(buf.tobytes(), np.uint8))
        return self.t["sensor_msgs/msg/Image"](
            header=header(ns, FRAME_IDS["camera"]), height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
            data=np.ascontiguousarray(rgb).reshape(-1))

    def range(self, ns: int, value: float):
        s = self.sensors
        return self.t["sensor_msgs/msg/Range"](
            header=header(ns, FRAME_IDS["altitude"]), radiation_type=1, field_of_view=0.05, min_range=0.5,
            max_range=5000.0, range=float(value), variance=float(s.alt_noise_m ** 2))

    def imu(self, ns: int, heading: float, pitch: float, roll: float):
        s = self.sensors
        r = body_to_enu(heading, pitch, roll)
        g = r.T @ np.array([0.0, 0.0, 9.80665])
        v3 = self.t["geometry_msgs/msg/Vector3"]
        tilt, yaw = math.radians(s.imu_tilt_noise_deg) ** 2, math.radians(s.imu_yaw_noise_deg) ** 2
        no_rate = np.zeros(9)
        no_rate[0] = -1.0  # angular velocity not provided
        return self.t["sensor_msgs/msg/Imu"](
            header=header(ns, FRAME_IDS["imu"]), orientation=_quat(r),
            orientation_covariance=np.diag([max(tilt, 1e-8), max(tilt, 1e-8), max(yaw, 1e-8)]).ravel(),
            angular_velocity=v3(x=0.0, y=0.0, z=0.0), angular_velocity_covariance=no_rate,
            linear_acceleration=v3(x=float(g[0]), y=float(g[1]), z=float(g[2])),
            linear_acceleration_covariance=np.diag([0.05 ** 2] * 3).ravel())

    def gt_pose(self, ns: int, e: float, n: float, u: float, heading: float, pitch: float, roll: float):
        t = self.t
        pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=float(e), y=float(n), z=float(u)),
                                           orientation=_quat(body_to_enu(heading, pitch, roll)))
        return t["geometry_msgs/msg/PoseStamped"](header=header(ns, FRAME_IDS["gt_pose"]), pose=pose)


def gps_messages(m: _Msgs, sensors: SensorSpec, rng: np.random.Generator, frame: LocalFrame, pt: np.ndarray,
                 pe: np.ndarray, pn: np.ndarray, pu: np.ndarray, t0_ns: int) -> list[tuple[int, object]]:
    """(log ns, NavSatFix) of the simulated GPS: truth interpolated at ``gps_rate_hz`` from the track
    (``pt`` s of flight time; ``pe``/``pn``/``pu`` m ENU in ``frame``) plus Gauss-Markov noise, with the
    dropout window of ``sensors`` (NO_FIX samples or none). Each sample leads its flight time by
    :data:`GPS_LEAD_NS`."""
    dt = 1.0 / sensors.gps_rate_hz
    tg_ns = np.arange(int(math.floor(pt[-1] * sensors.gps_rate_hz + 1e-6)) + 1, dtype=np.int64) * NS
    tg_ns = np.round(tg_ns / sensors.gps_rate_hz).astype(np.int64)  # GPS sample times, ns of flight time
    tg = tg_ns / NS
    ge, gn, gu = np.interp(tg, pt, pe), np.interp(tg, pt, pn), np.interp(tg, pt, pu)
    ne = _gauss_markov(rng, len(tg), dt, sensors.gps_tau_s, sensors.gps_noise_m)
    nn = _gauss_markov(rng, len(tg), dt, sensors.gps_tau_s, sensors.gps_noise_m)
    nu = _gauss_markov(rng, len(tg), dt, sensors.gps_tau_s, sensors.gps_vertical_noise_m)
    glat, glon, galt = frame.to_geodetic(ge + ne, gn + nn, gu + nu + sensors.ground_alt_m)
    glat, glon, galt = np.atleast_1d(glat), np.atleast_1d(glon), np.atleast_1d(galt)
    var_en, var_u = max(sensors.gps_noise_m, 0.1) ** 2, max(sensors.gps_vertical_noise_m, 0.1) ** 2
    win = None if sensors.dropout is None else (int(round(sensors.dropout[0] * NS)), int(round(sensors.dropout[1] * NS)))
    out = []
    for k, tk_ns in enumerate(tg_ns):
        ns = t0_ns + int(tk_ns) - GPS_LEAD_NS
        inside = win is not None and win[0] <= tk_ns <= win[1]
        if inside and sensors.dropout_mode == "silence":
            continue
        out.append((ns, m.navsat(ns, FRAME_IDS["gps"], glat[k], glon[k], galt[k], var_en, var_u, fix=not inside)))
    return out


class EventQueue:
    """The small messages of a simulated bag, made before the frames and merged with them in time order.

    Starts with the JSON description on :data:`FLIGHT_INFO_TOPIC` 100 ms before ``t0_ns``; ``topics`` maps
    the keys given to :meth:`add` to topic names.
    """

    def __init__(self, topics: dict[str, str], t0_ns: int, info: dict) -> None:
        self.topics = topics
        self._heap: list[tuple[int, int, str, str, object]] = []  # (log ns, seq, topic, type, msg)
        self._seq = itertools.count()
        self.add(t0_ns - NS // 10, "flight_info", "std_msgs/msg/String",
                 typestore().types["std_msgs/msg/String"](data=json.dumps(info)))

    def add(self, ns: int, key: str, msgtype: str, msg) -> None:
        """Queue ``msg`` on the topic of ``key`` at log time ``ns``."""
        heapq.heappush(self._heap, (ns, next(self._seq), self.topics[key], msgtype, msg))

    def write_before(self, w: BagWriter, ns: int | None, inclusive: bool = False) -> None:
        """Write the queued messages logged before ``ns`` (also at ``ns`` with ``inclusive``; None: all)."""
        while self._heap and (ns is None or self._heap[0][0] < ns or (inclusive and self._heap[0][0] == ns)):
            e_ns, _s, topic, msgtype, msg = heapq.heappop(self._heap)
            w.write_msg(topic, msgtype, e_ns, msg)


def flight_description(geomap, spec, sensors: SensorSpec, poses, t0_ns: int) -> dict:
    """The JSON description stored in the bag (``/gleam/flight_info`` and custom_data)."""
    d = sensors.dropout
    return {
        "generator": f"gleam bag simulate (gleam_ros {__version__})",
        "map": getattr(geomap, "name", ""),
        "t0_ns": t0_ns,
        "frames": len(poses),
        "spec": asdict(spec),
        "intrinsics": asdict(spec.intrinsics()),
        "sensors": {k: v for k, v in asdict(sensors).items() if k not in ("dropout",)},
        "gps_dropout_s": list(d) if d else None,
        "gps_dropout_ns": [t0_ns + int(round(d[0] * NS)), t0_ns + int(round(d[1] * NS))] if d else None,
        "gps_dropout_mode": sensors.dropout_mode if d else None,
        "origin": {"lat": poses[0].lat, "lon": poses[0].lon, "alt": sensors.ground_alt_m},
        "topics": {k: v for k, v in TOPICS.items()
                   if k != ("image" if sensors.compressed else "image_compressed")},
    }


def simulate_bag(geomap, spec, out: str | Path, sensors: SensorSpec | None = None, storage: str | None = None,
                 overwrite: bool = False, progress: bool = True, t0_s: float = BAG_EPOCH_S) -> Path:
    """Render a flight over ``geomap`` (a :class:`gleam_ros.core.flight.FlightSpec`) into a bag; returns its path.

    ``out`` ending in ``.mcap`` / ``.db3`` writes one storage file, anything else a rosbag2 directory
    (``storage`` mcap or sqlite3).
    """
    from ..core.flight import make_poses
    from ..core.sim.camera_sim import simulate_flight

    sensors = sensors or SensorSpec()
    check_output(out, storage, overwrite)
    poses = make_poses(geomap, spec)
    if sensors.dropout is not None and sensors.dropout[0] > poses[-1].t:
        raise ConfigError(f"--gps-dropout starts at {sensors.dropout[0]} s, after the flight's last frame "
                          f"({poses[-1].t:.1f} s)")
    t0_ns = int(round(t0_s * NS))
    rng = np.random.default_rng([spec.seed, 0x6A5])
    m = _Msgs(spec.intrinsics(), sensors)
    info = flight_description(geomap, spec, sensors, poses, t0_ns)
    frame = LocalFrame(poses[0].lat, poses[0].lon, sensors.ground_alt_m)
    pe, pn, _ = frame.to_enu([p.lat for p in poses], [p.lon for p in poses], sensors.ground_alt_m)
    pe, pn = np.atleast_1d(pe), np.atleast_1d(pn)
    pt = np.array([p.t for p in poses])
    pu = np.array([p.alt_m for p in poses])

    # Small messages (GPS at its own rate, per-frame sensors and ground truth) are made first and merged
    # in time order with the frames, which are rendered one by one.
    events = EventQueue(TOPICS, t0_ns, info)
    add = events.add
    for ns, msg in gps_messages(m, sensors, rng, frame, pt, pe, pn, pu, t0_ns):
        add(ns, "gps", "sensor_msgs/msg/NavSatFix", msg)
    for i, p in enumerate(poses):
        ns = t0_ns + int(round(p.t * NS))
        a_ns, i_ns = ns - 15 * NS // 1000, ns - 10 * NS // 1000
        add(a_ns, "altitude", "sensor_msgs/msg/Range", m.range(a_ns, max(0.5, p.alt_m + rng.normal(0, sensors.alt_noise_m))))
        add(i_ns, "imu", "sensor_msgs/msg/Imu", m.imu(
            i_ns, p.heading_deg + rng.normal(0, sensors.imu_yaw_noise_deg),
            p.pitch_deg + rng.normal(0, sensors.imu_tilt_noise_deg), p.roll_deg + rng.normal(0, sensors.imu_tilt_noise_deg)))
        add(ns - 3 * NS // 1000, "gt_fix", "sensor_msgs/msg/NavSatFix",
            m.navsat(ns, FRAME_IDS["gt_fix"], p.lat, p.lon, p.alt_m + sensors.ground_alt_m, 1e-6, 1e-6))
        add(ns - 2 * NS // 1000, "gt_pose", "geometry_msgs/msg/PoseStamped",
            m.gt_pose(ns, pe[i], pn[i], p.alt_m, p.heading_deg, p.pitch_deg, p.roll_deg))
        add(ns - NS // 1000, "camera_info", "sensor_msgs/msg/CameraInfo", m.camera_info(ns))

    image_key = "image_compressed" if sensors.compressed else "image"
    image_type = "sensor_msgs/msg/CompressedImage" if sensors.compressed else "sensor_msgs/msg/Image"
    frames = simulate_flight(geomap, poses, m.intr, photometric_strength=spec.photometric, seed=spec.seed)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(poses), desc="bag", unit="frame", disable=None)
    with BagWriter(out, storage, overwrite=overwrite) as w:
        w.custom_data["gleam/flight_info"] = json.dumps(info)
        for item in frames:
            ns = t0_ns + int(round(item.pose.t * NS))
            events.write_before(w, ns)
            w.write_msg(TOPICS[image_key], image_type, ns, m.image(ns, item.image))
        events.write_before(w, None)
    return w.path
