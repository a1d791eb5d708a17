"""Camera model: intrinsics validation and lens rectification against an independent forward model."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from gleam_ros.core.camera import CameraIntrinsics, Rectifier
from gleam_ros.core.errors import ConfigError, InputError

BASE = dict(width=480, height=360, fx=300.0, fy=305.0, cx=241.0, cy=178.5)


def _distort_plumb_bob(x: np.ndarray, y: np.ndarray, d) -> tuple[np.ndarray, np.ndarray]:
    """Brown-Conrady forward model on normalised coordinates (written out, not OpenCV's)."""
    k1, k2, p1, p2, k3 = (list(d) + [0.0])[:5]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def _distort_equidistant(x: np.ndarray, y: np.ndarray, d) -> tuple[np.ndarray, np.ndarray]:
    """Kannala-Brandt (equidistant fisheye) forward model: theta_d = theta (1 + k1 theta^2 + ...)."""
    k1, k2, k3, k4 = d
    r = np.hypot(x, y)
    th = np.arctan(r)
    th_d = th * (1 + k1 * th**2 + k2 * th**4 + k3 * th**6 + k4 * th**8)
    s = np.where(r > 1e-12, th_d / np.maximum(r, 1e-12), 1.0)
    return x * s, y * s


def test_intrinsics_validation_names_the_problem():
    assert not CameraIntrinsics(**BASE).distorted
    assert not CameraIntrinsics(**BASE, dist_model="plumb_bob", dist=[0.0] * 5).distorted
    c = CameraIntrinsics(**BASE, dist_model="plumb_bob", dist=[-0.2, 0.05, 0.0, 0.0, 0.0])
    assert c.distorted and c.dist == (-0.2, 0.05, 0.0, 0.0, 0.0) and hash(c) == hash(
        CameraIntrinsics(**BASE, dist_model="plumb_bob", dist=(-0.2, 0.05, 0.0, 0.0, 0.0)))
    assert c.pinhole() == CameraIntrinsics(**BASE)
    s = c.scaled(0.5)
    assert s.dist == c.dist and s.fx == 150.0  # distortion lives in normalised coordinates
    for kw, why in ((dict(dist_model="kb8", dist=[0.1] * 4), "not supported"),
                    (dict(dist_model="equidistant", dist=[0.1] * 5), "takes 4"),
                    (dict(dist_model="rational_polynomial", dist=[0.1] * 5), "takes 8"),
                    (dict(dist_model="plumb_bob", dist=[0.1, math.inf, 0, 0, 0]), "finite"),
                    (dict(dist=[0.1, 0, 0, 0, 0]), "without a dist_model")):
        with pytest.raises(ConfigError, match=why):
            CameraIntrinsics(**BASE, **kw)


@pytest.mark.parametrize("model,dist,forward", [
    ("plumb_bob", (-0.28, 0.07, 0.0015, -0.001, 0.0), _distort_plumb_bob),
    ("equidistant", (0.05, -0.01, 0.002, -0.0005), _distort_equidistant),
])
def test_rectifier_puts_points_back_where_a_pinhole_sees_them(model, dist, forward):
    """Dots drawn where the lens model puts them end up at their pinhole positions after rectification."""
    intr = CameraIntrinsics(**BASE, dist_model=model, dist=dist)
    # pinhole positions of the dots: a grid out to the image corners, off the pixel centres
    uu, vv = np.meshgrid(np.linspace(28.3, BASE["width"] - 27.6, 9), np.linspace(27.2, BASE["height"] - 28.9, 7))
    pin = np.stack([uu.ravel(), vv.ravel()], 1)
    x, y = (pin[:, 0] - intr.cx) / intr.fx, (pin[:, 1] - intr.cy) / intr.fy
    xd, yd = forward(x, y, dist)
    raw_pts = np.stack([xd * intr.fx + intr.cx, yd * intr.fy + intr.cy], 1)
    assert np.max(np.hypot(*(raw_pts - pin).T)) > 8.0  # the lens moves the outer dots visibly
    raw = np.zeros((BASE["height"], BASE["width"], 3), np.uint8)
    for u, v in raw_pts:
        cv2.circle(raw, (int(round(u * 16)), int(round(v * 16))), 3 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    rect, pin_intr = Rectifier()(raw, intr)
    assert pin_intr == intr.pinhole() and rect.shape == raw.shape
    gray = cv2.cvtColor(rect, cv2.COLOR_RGB2GRAY).astype(np.float64)
    errs = []
    for u, v in pin:  # intensity-weighted centroid in a window around the expected pinhole position
        u0, v0 = int(round(u)), int(round(v))
        win = gray[v0 - 9 : v0 + 10, u0 - 9 : u0 + 10]
        assert win.sum() > 0, f"dot expected at ({u:.1f}, {v:.1f}) is missing"
        vv, uu = np.mgrid[v0 - 9 : v0 + 10, u0 - 9 : u0 + 10]
        errs.append(math.hypot((uu * win).sum() / win.sum() - u, (vv * win).sum() / win.sum() - v))
    # dots are ~6 px discs drawn at sub-pixel precision; bilinear resampling keeps centroids well inside 0.5 px
    assert max(errs) < 0.5, max(errs)


def test_rectifier_leaves_pinhole_frames_alone_and_checks_size():
    frame = np.full((BASE["height"], BASE["width"], 3), 7, np.uint8)
    out, intr = Rectifier()(frame, CameraIntrinsics(**BASE))
    assert out is frame and intr == CameraIntrinsics(**BASE)
    distorted = CameraIntrinsics(**BASE, dist_model="plumb_bob", dist=(-0.2, 0, 0, 0, 0))
    with pytest.raises(InputError, match="480x360"):
        Rectifier()(np.zeros((100, 100, 3), np.uint8), distorted)
