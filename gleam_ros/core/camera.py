"""Pinhole camera model and attitude conventions shared by the simulator and verification.

Conventions (REP-103 flavoured):
- World frame: local ENU (x east, y north, z up), metres.
- ``heading_deg``: compass heading of the vehicle's forward axis, degrees clockwise from north.
- Body frame: x forward, y left, z up. ``pitch_deg`` positive = nose up, ``roll_deg`` positive
  = right wing down (rotation about forward axis), applied as yaw -> pitch -> roll (intrinsic Z-Y-X).
- The camera is mounted looking straight down (nadir) when pitch = roll = 0, with the image's
  top edge towards the vehicle's forward direction. Camera optical frame: x right, y down,
  z along the optical axis (REP-103 ``_optical`` frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ConfigError, InputError


# Lens distortion models (names as in sensor_msgs/CameraInfo.distortion_model) and how many
# coefficients each takes, in OpenCV order: plumb_bob k1 k2 p1 p2 [k3]; rational_polynomial
# k1 k2 p1 p2 k3 k4 k5 k6; equidistant (fisheye) k1 k2 k3 k4.
DISTORTION_MODELS = {"plumb_bob": (4, 5), "rational_polynomial": (8,), "equidistant": (4,)}


@dataclass(frozen=True)
class CameraIntrinsics:
    """Camera intrinsics in pixels, with optional lens distortion.

    ``dist_model`` empty (the default) is an ideal pinhole camera; otherwise one of
    :data:`DISTORTION_MODELS` with ``dist`` its coefficients. The pipeline rectifies a distorted
    frame once on arrival (:class:`Rectifier`); everything after it sees a pinhole camera with
    the same ``fx, fy, cx, cy``.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist_model: str = ""
    dist: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"camera size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise ConfigError(f"camera focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        dist = tuple(float(c) for c in self.dist)
        object.__setattr__(self, "dist", dist)  # lists from JSON become a hashable tuple
        if not all(math.isfinite(c) for c in dist):
            raise ConfigError(f"camera distortion coefficients must be finite, got {dist}")
        if not self.dist_model:
            if any(dist):
                raise ConfigError(f"camera distortion coefficients {dist} given without a dist_model")
            object.__setattr__(self, "dist", ())
            return
        if self.dist_model not in DISTORTION_MODELS:
            raise ConfigError(f"camera dist_model {self.dist_model!r} is not supported; "
                              f"valid: {', '.join(DISTORTION_MODELS)}")
        if len(dist) not in DISTORTION_MODELS[self.dist_model]:
            want = " or ".join(str(n) for n in DISTORTION_MODELS[self.dist_model])
            raise ConfigError(f"camera dist_model {self.dist_model!r} takes {want} coefficients, got {len(dist)}")

    @property
    def distorted(self) -> bool:
        """Whether frames of this camera need rectification (a model with a non-zero coefficient)."""
        return bool(self.dist_model) and any(self.dist)

    def pinhole(self) -> "CameraIntrinsics":
        """The same camera without distortion (what a rectified frame obeys)."""
        return CameraIntrinsics(self.width, self.height, self.fx, self.fy, self.cx, self.cy)

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> "CameraIntrinsics":
        """Square-pixel camera with the principal point at the image centre."""
        if not 1.0 <= hfov_deg <= 170.0:
            raise ConfigError(f"hfov_deg must be within [1, 170], got {hfov_deg}")
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    @property
    def K(self) -> np.ndarray:
        """3x3 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, sx: float, sy: float | None = None) -> "CameraIntrinsics":
        """Intrinsics of the same camera after resizing the image by (sx, sy) (distortion unchanged)."""
        sy = sx if sy is None else sy
        return CameraIntrinsics(
            int(round(self.width * sx)), int(round(self.height * sy)),
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
            self.dist_model, self.dist,
        )


class Rectifier:
    """Undistorts frames to the pinhole camera with the same ``fx, fy, cx, cy`` (maps cached per camera).

    Pixels of the pinhole view that the lens did not see are black. Not thread-safe.
    """

    def __init__(self) -> None:
        self._maps: dict[CameraIntrinsics, tuple[np.ndarray, np.ndarray]] = {}

    def maps(self, intr: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
        """``cv2.remap`` maps taking a distorted frame of ``intr`` to its pinhole view."""
        hit = self._maps.get(intr)
        if hit is None:
            size, k, d = (intr.width, intr.height), intr.K, np.asarray(intr.dist, np.float64)
            if intr.dist_model == "equidistant":
                hit = cv2.fisheye.initUndistortRectifyMap(k, d, np.eye(3), k, size, cv2.CV_16SC2)
            else:
                hit = cv2.initUndistortRectifyMap(k, d, None, k, size, cv2.CV_16SC2)
            if len(self._maps) >= 4:  # a camera rarely changes; keep the last few
                self._maps.pop(next(iter(self._maps)))
            self._maps[intr] = hit
        return hit

    def __call__(self, rgb: np.ndarray, intr: CameraIntrinsics) -> tuple[np.ndarray, CameraIntrinsics]:
        """``(pinhole frame, pinhole intrinsics)``; a frame without distortion is returned as it is."""
        if not intr.distorted:
            return rgb, intr
        if (rgb.shape[1], rgb.shape[0]) != (intr.width, intr.height):
            raise InputError(f"camera intrinsics are for {intr.width}x{intr.height} images, "
                             f"frame is {rgb.shape[1]}x{rgb.shape[0]}")
        m1, m2 = self.maps(intr)
        return cv2.remap(rgb, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT), intr.pinhole()


def body_to_enu(heading_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix taking body-frame vectors (x fwd, y left, z up) to ENU."""
    yaw = math.radians(90.0 - heading_deg)  # ENU yaw: CCW from east
    p = math.radians(pitch_deg)
    r = math.radians(roll_deg)
    cz, sz = math.cos(yaw), math.sin(yaw)
    # Body y is left, so nose-up pitch is a negative rotation about +y; right-wing-down roll
    # is a positive rotation about +x (forward).
    cp, sp = math.cos(-p), math.sin(-p)
    cr, sr = math.cos(r), math.sin(r)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def body_quaternion(heading_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0
                    ) -> tuple[float, float, float, float]:
    """The orientation of :func:`body_to_enu` as a quaternion (x, y, z, w): a REP-103 body (x forward, y left,
    z up) in ENU, as ``nav_msgs/Odometry`` and ``sensor_msgs/Imu`` carry it."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(body_to_enu(heading_deg, pitch_deg, roll_deg)).as_quat()
    return float(x), float(y), float(z), float(w)


# Nadir camera mount: optical x (image right) = body -y (right), optical y (image down) =
# body -x (backwards, so the image top looks forward), optical z = body -z (down).
CAMERA_TO_BODY = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def camera_to_enu(heading_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation taking optical-frame vectors of the nadir camera to ENU."""
    return body_to_enu(heading_deg, pitch_deg, roll_deg) @ CAMERA_TO_BODY


# Forward (street-level) camera mount: optical x (image right) = body -y, optical y (image down) = body -z,
# optical z (the axis) = body x (forward).
FORWARD_CAMERA_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def forward_camera_to_enu(heading_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation taking optical-frame vectors of a forward-looking camera to ENU.

    The optical axis points along ``heading_deg`` (clockwise from north) and level at pitch = roll = 0;
    pitch positive looks up, roll positive turns the camera's right side down (body conventions above).
    """
    return body_to_enu(heading_deg, pitch_deg, roll_deg) @ FORWARD_CAMERA_TO_BODY


def heading_from_camera_rotation(r_cam_to_enu: np.ndarray) -> float:
    """Vehicle heading (deg, clockwise from north) from a camera-to-ENU rotation.

    Uses the image's "up" direction (optical -y = body forward) projected on the ground plane;
    valid for near-nadir cameras.
    """
    fwd = r_cam_to_enu @ np.array([0.0, -1.0, 0.0])
    return float(math.degrees(math.atan2(fwd[0], fwd[1])) % 360.0)


def ground_intersection(
    intr: CameraIntrinsics, r_cam_to_enu: np.ndarray, cam_enu: np.ndarray,
    u: np.ndarray, v: np.ndarray, ground_z: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersect pixel rays (u, v) with the plane z = ground_z.

    Returns east, north arrays and a boolean mask of rays that hit the ground in front of
    the camera.
    """
    rays_cam = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u, dtype=float)], axis=-1)
    rays = rays_cam @ r_cam_to_enu.T
    dz = rays[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (ground_z - cam_enu[2]) / dz
    ok = np.isfinite(s) & (s > 0)
    s = np.where(ok, s, 0.0)
    east = cam_enu[0] + s * rays[..., 0]
    north = cam_enu[1] + s * rays[..., 1]
    return east, north, ok
