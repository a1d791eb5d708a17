"""Test helper: what a camera with lens distortion records of a scene a pinhole render shows."""

from __future__ import annotations

import cv2
import numpy as np

from gleam_ros.core.camera import CameraIntrinsics


def through_lens(rgb: np.ndarray, lens: CameraIntrinsics) -> np.ndarray:
    """The raw frame a camera with ``lens``'s distortion takes of the scene the pinhole ``rgb`` shows.

    Each raw pixel samples the pinhole image where the lens model says its ray goes
    (cv2.undistortPoints, the inverse model; the pipeline's rectifier uses the forward one).
    """
    h, w = rgb.shape[:2]
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([uu.ravel(), vv.ravel()], 1).reshape(-1, 1, 2)
    und = cv2.undistortPoints(pts, lens.K, np.asarray(lens.dist), P=lens.K).reshape(h, w, 2).astype(np.float32)
    return cv2.remap(rgb, und[..., 0], und[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
