"""Conversions between ROS 2 messages and :mod:`gleam_ros.core` types; no matching logic.

Images: ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, mono16; any row padding, either
byte order) and ``sensor_msgs/CompressedImage`` (anything OpenCV decodes) become H x W x 3 uint8
RGB arrays; anything else raises :class:`~gleam_ros.core.errors.InputError` naming the problem,
so a node can drop the frame with a diagnostic.

Outputs follow REP-103/REP-105: covariances in local ENU (east, north, up, roll, pitch, yaw),
row-major; a component that is not measured carries :data:`UNKNOWN_VARIANCE`, never 0. A
``NavSatFix`` with ``STATUS_FIX`` always has ``COVARIANCE_TYPE_KNOWN`` and positive variances;
without a trusted fix it is ``STATUS_NO_FIX`` with NaN latitude/longitude.
"""

from __future__ import annotations

import math
from typing import Any

from gleam_ros import ros_env

ros_env.prepare()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from builtin_interfaces.msg import Duration, Time  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped, Quaternion  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix, NavSatStatus, Range  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from gleam_ros.core.camera import CameraIntrinsics  # noqa: E402
from gleam_ros.core.errors import ConfigError, InputError  # noqa: E402
from gleam_ros.core.geo import LocalFrame, yaw_quaternion  # noqa: E402
from gleam_ros.msg import GeoPoseHypotheses, GeoPoseHypothesis  # noqa: E402

UNKNOWN_VARIANCE = 1.0e6  # variance (m² or rad²) of a component that is not measured
_MIN_YAW_STD_RAD = math.radians(0.1)  # a reported heading std is never taken below this

# encoding -> (channels, dtype, OpenCV conversion to RGB or None)
IMAGE_ENCODINGS: dict[str, tuple[int, type, int | None]] = {
    "rgb8": (3, np.uint8, None),
    "bgr8": (3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": (4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "mono16": (1, np.uint16, cv2.COLOR_GRAY2RGB),
}

# core modality name -> GeoPoseHypothesis.MODALITY_*
MODALITY_CODES = {
    "uav": GeoPoseHypothesis.MODALITY_UAV,
    "ground": GeoPoseHypothesis.MODALITY_GROUND,
    "panorama": GeoPoseHypothesis.MODALITY_PANORAMA,
    "map": GeoPoseHypothesis.MODALITY_MAP,
    "satellite": GeoPoseHypothesis.MODALITY_MAP,
}
# GeoPoseHypothesis.MODALITY_* -> core query modality name
MODALITY_NAMES = {code: name for name, code in MODALITY_CODES.items() if name != "satellite"}

# core hypothesis status (gleam_ros.core.localizer.STATUS_*) -> GeoPoseHypothesis.STATUS_*
STATUS_CODES = {
    "retrieved": GeoPoseHypothesis.STATUS_RETRIEVED,
    "rejected": GeoPoseHypothesis.STATUS_REJECTED,
    "verified": GeoPoseHypothesis.STATUS_VERIFIED,
    "trusted": GeoPoseHypothesis.STATUS_TRUSTED,
}


# ----------------------------------------------------------------------------------------- time
def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time to float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float) -> Time:
    """Float seconds (>= 0) to builtin_interfaces/Time."""
    if not (math.isfinite(t) and t >= 0.0):
        raise InputError(f"stamp must be a finite time >= 0 s, got {t!r}")
    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def sec_to_duration(d: float) -> Duration:
    """Float seconds (may be negative) to builtin_interfaces/Duration (nanosec always in [0, 1e9))."""
    if not math.isfinite(d):
        raise InputError(f"duration must be finite, got {d!r}")
    ns = int(round(d * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def duration_to_sec(d: Duration) -> float:
    """builtin_interfaces/Duration to float seconds."""
    return float(d.sec) + float(d.nanosec) * 1e-9


# --------------------------------------------------------------------------------------- images
def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """A ``sensor_msgs/Image`` as an (H, W, 3) uint8 RGB array (a copy).

    Supports the encodings in :data:`IMAGE_ENCODINGS`, row padding (``step`` larger than a row)
    and either byte order of 16-bit data. mono16 is scaled by its own maximum to 8 bits. Raises
    InputError for a zero-size image, an unsupported encoding, or a ``step``/``data`` length that
    does not fit ``width``/``height``.
    """
    h, w, enc = int(msg.height), int(msg.width), str(msg.encoding)
    if h == 0 or w == 0:
        raise InputError(f"zero-size image ({w}x{h}, encoding {enc!r})")
    spec = IMAGE_ENCODINGS.get(enc)
    if spec is None:
        raise InputError(f"unsupported image encoding {enc!r}; supported: {', '.join(IMAGE_ENCODINGS)}")
    channels, dtype, code = spec
    itemsize = np.dtype(dtype).itemsize
    row = w * channels * itemsize
    step = int(msg.step)
    if step < row:
        raise InputError(f"image step {step} is smaller than a {enc} row of {w} px ({row} bytes)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * h:
        raise InputError(f"image data has {data.size} bytes, step {step} x height {h} needs {step * h}")
    rows = data.reshape(h, step)[:, :row]
    if itemsize == 1:
        img = np.ascontiguousarray(rows).reshape(h, w, channels) if channels > 1 else np.ascontiguousarray(rows)
    else:
        wide = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2").reshape(h, w)
        top = int(wide.max())
        img = np.zeros((h, w), np.uint8) if top == 0 else (wide.astype(np.float32) * (255.0 / top)).round().astype(np.uint8)
    if code is None:
        return img.copy()
    return cv2.cvtColor(img, code)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) as an (H, W, 3) uint8 RGB array.

    Raises InputError for empty or undecodable data and for compressed depth images.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise InputError(f"compressed depth images are not camera frames (format {fmt!r})")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"empty compressed image (format {fmt!r})")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise InputError(f"cannot decode compressed image ({data.size} bytes, format {fmt!r})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_image_msg(rgb: np.ndarray, header: Header | None = None) -> Image:
    """An (H, W, 3) uint8 RGB array as an rgb8 ``sensor_msgs/Image``."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(f"rgb_to_image_msg needs an (H, W, 3) uint8 array, got {a.shape} {a.dtype}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = np.ascontiguousarray(a).tobytes()
    return msg


def rgb_to_compressed_msg(rgb: np.ndarray, header: Header | None = None, fmt: str = "jpeg", quality: int = 90
                          ) -> CompressedImage:
    """An (H, W, 3) uint8 RGB array as a ``sensor_msgs/CompressedImage`` (jpeg or png)."""
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise InputError(f"unsupported compression {fmt!r}; use jpeg or png")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise InputError(f"OpenCV could not encode a {fmt} image")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = "jpeg" if ext == ".jpg" else "png"
    msg.data = buf.tobytes()
    return msg


def draw_points(rgb: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """A copy of ``rgb`` with small circles at the (N, 2) pixel positions ``pts`` (debug image)."""
    out = np.ascontiguousarray(rgb).copy()
    radius = max(2, min(out.shape[:2]) // 160)
    for x, y in np.asarray(pts, dtype=float).reshape(-1, 2):
        if math.isfinite(x) and math.isfinite(y):
            cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, 1, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------------- sensor data
def camera_info_to_intrinsics(msg: CameraInfo, rectified: bool = False) -> CameraIntrinsics | None:
    """Intrinsics of the images a ``CameraInfo`` describes, or None when uncalibrated (K all 0).

    ``rectified=False`` (images from ``image_raw``): K plus the distortion model and ``d``; the
    pipeline rectifies the frames itself. ``rectified=True`` (images from ``image_rect``): the
    projection matrix P (K when P is all 0) and no distortion, as image_proc defines it.
    Applies binning and a region of interest. Raises InputError for a size of 0, non-positive
    focal lengths, or a non-zero distortion the pipeline cannot undo (unknown model, wrong
    number of coefficients).
    """
    k = np.asarray(msg.k, dtype=float)
    if not np.any(k):
        return None
    p = np.asarray(msg.p, dtype=float)
    if rectified and np.any(p):
        fx, fy, cx, cy = float(p[0]), float(p[5]), float(p[2]), float(p[6])
    else:
        fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
    d = tuple(float(c) for c in msg.d)
    model, dist = ("", ()) if rectified or not any(d) else (str(msg.distortion_model), d)
    w, h = int(msg.width), int(msg.height)
    roi = msg.roi
    if roi.width > 0 and roi.height > 0 and (roi.width, roi.height) != (w, h):
        cx, cy, w, h = cx - roi.x_offset, cy - roi.y_offset, int(roi.width), int(roi.height)
    bx, by = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    if bx > 1 or by > 1:
        fx, fy, cx, cy = fx / bx, fy / by, (cx + 0.5) / bx - 0.5, (cy + 0.5) / by - 0.5
        w, h = w // bx, h // by
    try:
        return CameraIntrinsics(w, h, fx, fy, cx, cy, model, dist)
    except ConfigError as exc:
        hint = " (or publish rectified images and set image_rectified:=true)" if model else ""
        raise InputError(f"camera_info unusable: {exc}{hint}") from None


def gps_horizontal_std(msg: NavSatFix) -> float | None:
    """Horizontal standard deviation (m, the larger of east/north) of a GPS fix; None when not reported."""
    if msg.position_covariance_type == NavSatFix.COVARIANCE_TYPE_UNKNOWN:
        return None
    c = np.asarray(msg.position_covariance, dtype=float)
    var = max(float(c[0]), float(c[4]))
    if not math.isfinite(var) or var < 0:
        return math.inf
    return math.sqrt(var)


def range_to_alt(msg: Range) -> float | None:
    """Height above ground from a downward ``sensor_msgs/Range``; None when invalid or out of its limits."""
    r = float(msg.range)
    if not (math.isfinite(r) and r > 0):
        return None
    lo, hi = float(msg.min_range), float(msg.max_range)
    if (math.isfinite(lo) and r < lo) or (math.isfinite(hi) and hi > 0 and r > hi):
        return None
    return r


def imu_to_roll_pitch(msg: Imu) -> tuple[float, float] | None:
    """(roll_deg, pitch_deg) in :mod:`gleam_ros.core.camera` conventions from an IMU orientation.

    The orientation is REP-103 (body x forward, y left, z up, in ENU). ROS roll (about +x) is
    right-wing-down positive like the core; ROS pitch (about +y, left) is nose-down positive, the
    core's is nose-up, so the sign flips. None when the IMU reports no orientation
    (``orientation_covariance[0] == -1``) or a degenerate quaternion.
    """
    if float(msg.orientation_covariance[0]) == -1.0:
        return None
    return _roll_pitch_deg(msg.orientation)


def _unit_quaternion(o: Quaternion) -> np.ndarray | None:
    """(x, y, z, w) of an orientation quaternion normalised; None when degenerate or NaN."""
    q = np.array([o.x, o.y, o.z, o.w], dtype=float)
    n = float(np.linalg.norm(q))
    if not (math.isfinite(n) and n > 1e-6):
        return None
    return q / n


def _roll_pitch_deg(o: Quaternion) -> tuple[float, float] | None:
    """(roll_deg, pitch_deg), core conventions, of a REP-103 orientation quaternion; None when degenerate or NaN."""
    q = _unit_quaternion(o)
    if q is None:
        return None
    x, y, z, w = q
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2.0 * (w * y - z * x))))
    return math.degrees(roll), -math.degrees(pitch)


def imu_to_heading(msg: Imu) -> float | None:
    """Compass heading (deg clockwise from north) of the body x axis from an IMU orientation.

    Meaningful only when the orientation's yaw is referenced to east (REP-145: an AHRS fusing a
    magnetometer or GNSS heading, corrected to true north); the node uses it only when told so
    (``imu_heading``). None when the IMU reports no orientation or a degenerate quaternion.
    """
    q = _unit_quaternion(msg.orientation) if float(msg.orientation_covariance[0]) != -1.0 else None
    if q is None:
        return None
    x, y, z, w = q
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))  # ENU yaw, counter-clockwise from east
    return (90.0 - math.degrees(yaw)) % 360.0


def _twist_std(var: float, default: float, what: str) -> float:
    """Std from a twist covariance diagonal entry: 0 or -1 (not reported, by convention) -> ``default``."""
    if var == 0.0 or var == -1.0:
        return float(default)
    if not (math.isfinite(var) and var > 0.0):
        raise InputError(f"odometry {what} variance must be > 0 (or 0 / -1 for not reported), got {var!r}")
    return math.sqrt(var)


def odometry_to_sample(msg: Odometry, t_recv: float, default_v_std: float, default_yaw_rate_std: float) -> Any:
    """A ``nav_msgs/Odometry`` as a core :class:`~gleam_ros.core.vehicle.OdometrySample`.

    Speed is ``twist.twist.linear.x`` (REP-103 body frame: x forward), yaw rate ``twist.twist.angular.z``
    (counter-clockwise, rad/s); their stds come from ``twist.covariance`` [0] and [35], or the defaults
    when those are 0 or -1 (not reported). An unstamped message takes ``t_recv``. Values are passed
    on as they are (a NaN speed included): the localizer judges them. Raises InputError for a
    covariance that is NaN, infinite or negative.

    The body's roll / pitch (core conventions, see :func:`imu_to_roll_pitch`) come from
    ``pose.pose.orientation``; NaN when it is not reported (roll or pitch variance ``pose.covariance``
    [21] / [28] is -1, NaN, negative or at least :data:`UNKNOWN_VARIANCE`) or is degenerate / NaN: the localizer then
    projects with the configured mounting pitch and says so in its diagnostics.
    """
    from gleam_ros.core.vehicle import OdometrySample

    t = stamp_to_sec(msg.header.stamp)
    if t <= 0.0:
        t = float(t_recv)
    c = msg.twist.covariance
    v_std = _twist_std(float(c[0]), default_v_std, "speed (twist.covariance[0])")
    w_std = _twist_std(float(c[35]), default_yaw_rate_std, "yaw rate (twist.covariance[35])")
    pc = msg.pose.covariance
    att = None
    if all(0.0 <= float(pc[i]) < UNKNOWN_VARIANCE for i in (21, 28)):  # NaN, -1 or "unmeasured": not reported
        att = _roll_pitch_deg(msg.pose.pose.orientation)
    roll, pitch = att if att is not None else (math.nan, math.nan)
    return OdometrySample(t=t, v_mps=float(msg.twist.twist.linear.x), yaw_rate_rps=float(msg.twist.twist.angular.z),
                          v_std=v_std, yaw_rate_std=w_std, pitch_deg=pitch, roll_deg=roll)


# ------------------------------------------------------------------------------- hypotheses out
def valid_cov_en(cov: Any) -> bool:
    """Whether ``cov`` is a finite, symmetric, positive-definite 2x2 covariance (m²)."""
    c = np.asarray(cov, dtype=float)
    if c.shape != (2, 2) or not np.all(np.isfinite(c)):
        return False
    if abs(c[0, 1] - c[1, 0]) > 1e-6 * max(1.0, float(np.abs(c).max())):
        return False
    return bool(np.linalg.eigvalsh(0.5 * (c + c.T)).min() > 0.0)


def publishable_fix(result: Any) -> Any | None:
    """The result's trusted fix if it may be published (finite position, valid covariance), else None."""
    fix = getattr(result, "fix", None)
    if fix is None:
        return None
    if not (math.isfinite(fix.lat) and math.isfinite(fix.lon) and valid_cov_en(fix.cov_en)):
        return None
    return fix


def covariance6(h: Any) -> list[float]:
    """Row-major 6x6 covariance of (east, north, up, roll, pitch, yaw) for a core Hypothesis."""
    c = np.zeros((6, 6))
    cov = np.asarray(h.cov_en, dtype=float)
    if valid_cov_en(cov):
        c[:2, :2] = 0.5 * (cov + cov.T)
    else:
        c[0, 0] = c[1, 1] = UNKNOWN_VARIANCE
    c[2, 2] = c[3, 3] = c[4, 4] = UNKNOWN_VARIANCE
    std = float(h.heading_std_deg)
    c[5, 5] = max(math.radians(std), _MIN_YAW_STD_RAD) ** 2 if math.isfinite(h.heading_deg) and math.isfinite(std) \
        else UNKNOWN_VARIANCE
    return [float(v) for v in c.ravel()]


def _orientation(h: Any) -> Quaternion:
    if math.isfinite(h.heading_deg):
        x, y, z, w = yaw_quaternion(float(h.heading_deg))
        return Quaternion(x=x, y=y, z=z, w=w)
    return Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)


def _altitude(h: Any, ground_alt_m: float) -> float:
    return float(ground_alt_m + h.alt_m) if math.isfinite(h.alt_m) else math.nan


def hypothesis_flags(h: Any) -> int:
    """GeoPoseHypothesis flags that a core Hypothesis itself carries (prior used, filtered, gated)."""
    flags = 0
    if h.prior_used:
        flags |= GeoPoseHypothesis.FLAG_PRIOR_USED
    if h.filtered:
        flags |= GeoPoseHypothesis.FLAG_FILTERED
    if h.gated:
        flags |= GeoPoseHypothesis.FLAG_FILTER_GATED
    return flags


def hypothesis_to_msg(h: Any, modality: str, flags: int = 0, ground_alt_m: float = 0.0) -> GeoPoseHypothesis:
    """One core Hypothesis as a GeoPoseHypothesis; ``flags`` (e.g. shadow/fallback) are OR-ed in.

    ``altitude`` is ``ground_alt_m`` (ellipsoidal height of the flat map) plus the estimated camera
    height above ground, NaN when the height is unknown.
    """
    m = GeoPoseHypothesis()
    m.latitude, m.longitude = float(h.lat), float(h.lon)
    m.altitude = _altitude(h, ground_alt_m)
    m.orientation = _orientation(h)
    m.covariance = covariance6(h)
    m.similarity = float(h.similarity) if math.isfinite(h.similarity) else 0.0
    m.inlier_count = max(0, int(h.inliers))
    m.tile_id = str(h.tile_id)
    m.modality = MODALITY_CODES[modality]
    m.status = STATUS_CODES[h.status]
    m.flags = int(flags) | hypothesis_flags(h)
    return m


def hypotheses_to_msg(result: Any, header: Header, latency_s: float, modality: str, flags: int = 0,
                      ground_alt_m: float = 0.0) -> GeoPoseHypotheses:
    """A core LocalizationResult as GeoPoseHypotheses (ranked as the core ranked them).

    ``header`` is the source image's; ``flags`` are OR-ed into every hypothesis. A trusted fix whose
    covariance is not a valid one is not reported as trusted (``has_trusted_fix`` False).
    """
    msg = GeoPoseHypotheses()
    msg.header = header
    msg.latency = sec_to_duration(latency_s)
    fix = publishable_fix(result)
    msg.has_trusted_fix = fix is not None
    hyps = [h for h in result.hypotheses if h is not result.fix or fix is not None]
    msg.hypotheses = [hypothesis_to_msg(h, modality, flags, ground_alt_m) for h in hyps]
    return msg


def fix_to_navsatfix(h: Any | None, header: Header, ground_alt_m: float = 0.0) -> NavSatFix:
    """A trusted fix as NavSatFix (STATUS_FIX, COVARIANCE_TYPE_KNOWN); None gives STATUS_NO_FIX.

    ``position_covariance`` is ENU (m²): east/north from the fix, up :data:`UNKNOWN_VARIANCE` (the
    altitude is ``ground_alt_m`` plus the estimated camera height, not a measurement). A fix whose
    covariance is invalid is published as NO_FIX: a fix never goes out without variances.
    """
    msg = NavSatFix()
    msg.header = header
    msg.status.service = 0
    ok = h is not None and math.isfinite(h.lat) and math.isfinite(h.lon) and valid_cov_en(h.cov_en)
    if not ok:
        msg.status.status = NavSatStatus.STATUS_NO_FIX
        msg.latitude = msg.longitude = msg.altitude = math.nan
        msg.position_covariance = [UNKNOWN_VARIANCE, 0.0, 0.0, 0.0, UNKNOWN_VARIANCE, 0.0, 0.0, 0.0, UNKNOWN_VARIANCE]
        msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_UNKNOWN
        return msg
    c = np.asarray(h.cov_en, dtype=float)
    c = 0.5 * (c + c.T)
    msg.status.status = NavSatStatus.STATUS_FIX
    msg.latitude, msg.longitude = float(h.lat), float(h.lon)
    alt = _altitude(h, ground_alt_m)
    msg.altitude = alt if math.isfinite(alt) else float(ground_alt_m)
    msg.position_covariance = [float(c[0, 0]), float(c[0, 1]), 0.0, float(c[1, 0]), float(c[1, 1]), 0.0,
                               0.0, 0.0, UNKNOWN_VARIANCE]
    msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_KNOWN
    return msg


def fix_to_pose(h: Any, header: Header, frame: LocalFrame) -> PoseWithCovarianceStamped:
    """A trusted fix as a PoseWithCovarianceStamped in the ENU map frame anchored at ``frame``.

    x east, y north of the frame's origin; z the estimated height above the (flat) ground, 0 when
    unknown; orientation the heading as ENU yaw (roll/pitch unknown). Raises InputError for a fix
    without a finite position or a valid covariance.
    """
    if h is None or not (math.isfinite(h.lat) and math.isfinite(h.lon) and valid_cov_en(h.cov_en)):
        raise InputError("fix_to_pose needs a fix with a finite position and a valid covariance")
    e, n, _ = frame.to_enu(float(h.lat), float(h.lon), frame.h0)
    msg = PoseWithCovarianceStamped()
    msg.header = header
    msg.pose.pose.position.x = float(e)
    msg.pose.pose.position.y = float(n)
    msg.pose.pose.position.z = float(h.alt_m) if math.isfinite(h.alt_m) else 0.0
    msg.pose.pose.orientation = _orientation(h)
    msg.pose.covariance = covariance6(h)
    return msg
