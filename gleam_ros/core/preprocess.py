"""The single definition of image preprocessing for GLEAM-C.

Training, the CLI, index building and the ROS nodes all go through :func:`prepare`, so a
query is normalised exactly like the satellite tiles it is matched against.

Images are RGB (H x W x 3), gray (H x W) or RGBA (H x W x 4, alpha dropped), ``uint8`` or float in
[0, 1]. The output is a ``(3, H, W)`` float32 array, ``(x / 255 - mean) / std`` per channel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from gleam_ros.core.errors import ConfigError, InputError

__all__ = [
    "GROUND_TILE_M",
    "MIN_SIDE",
    "MODALITIES",
    "PreprocessConfig",
    "check_image",
    "panorama_north_up",
    "prepare",
    "preprocess_batch",
    "rotated_square",
]

#: Views the encoder embeds: UAV nadir frames, ground-level photos, equirectangular panoramas,
#: rendered street-map tiles and satellite tiles.
MODALITIES = ("uav", "ground", "panorama", "map", "satellite")

#: Side (metres) of the north-up satellite crop centred on the camera that a ground or panorama view is
#: matched against (training pairs, the vehicle localizer's per-position reference tiles). A 50 m crop
#: centred anywhere fits inside one 100 m index tile of 50 % overlap, so it can be cut from an index's
#: stored tile images.
GROUND_TILE_M = 50.0

#: Smallest accepted image side, in pixels.
MIN_SIDE = 16


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing parameters; part of an encoder's model card.

    Attributes:
        input_size: side S of the square network input (panoramas: height S).
        mean, std: per-channel normalisation of RGB values scaled to [0, 1].
        panorama_aspect: width / height of the panorama input (width = round(S * aspect)).
    """

    input_size: int = 224
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    panorama_aspect: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if isinstance(self.input_size, bool) or int(self.input_size) != self.input_size or self.input_size < MIN_SIDE:
            raise ConfigError(f"input_size must be an integer >= {MIN_SIDE}, got {self.input_size!r}")
        object.__setattr__(self, "input_size", int(self.input_size))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"mean and std need 3 values each, got mean={self.mean}, std={self.std}")
        if not all(math.isfinite(v) for v in self.mean):
            raise ConfigError(f"mean must be finite, got {self.mean}")
        if not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ConfigError(f"std must be finite and > 0, got {self.std}")
        aspect = float(self.panorama_aspect)
        if not math.isfinite(aspect) or not 0.25 <= aspect <= 8.0:
            raise ConfigError(f"panorama_aspect must be in [0.25, 8], got {self.panorama_aspect!r}")
        object.__setattr__(self, "panorama_aspect", aspect)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys -> :class:`ConfigError`, missing keys take defaults."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"preprocess config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown preprocess config keys {unknown}; valid: {sorted(known)}")
        try:
            return cls(**dict(d))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad preprocess config {dict(d)}: {exc}") from None

    def output_hw(self, modality: str) -> tuple[int, int]:
        """(H, W) of the network input for ``modality``."""
        _check_modality(modality)
        s = self.input_size
        if modality == "panorama":
            return s, max(1, round(s * self.panorama_aspect))
        return s, s


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}; valid: {', '.join(MODALITIES)}")


def check_image(img: Any, name: str = "image") -> np.ndarray:
    """Validate an image and return it as a contiguous H x W x 3 ``uint8`` RGB array.

    Accepts H x W (gray), H x W x 1, H x W x 3 (RGB) or H x W x 4 (RGBA, alpha dropped), of dtype
    ``uint8``, or float with every value finite and in [0, 1] (scaled by 255 and rounded). Both
    sides must be >= :data:`MIN_SIDE`. Anything else raises :class:`InputError` naming ``name`` and
    the problem.
    """
    if img is None:
        raise InputError(f"{name}: no image (got None)")
    if not isinstance(img, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.size == 0:
        raise InputError(f"{name}: empty image, shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise InputError(f"{name}: expected H x W, H x W x 3 or H x W x 4, got shape {img.shape}")
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{name}: image {w}x{h} is too small, both sides must be >= {MIN_SIDE} px")
    if img.dtype == np.uint8:
        out = img
    elif np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise InputError(f"{name}: float image contains NaN or Inf")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{name}: float image must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        out = np.rint(img.astype(np.float32) * 255.0).astype(np.uint8)
    else:
        raise InputError(f"{name}: dtype {img.dtype} not supported, expected uint8 or float in [0, 1]")
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    elif out.shape[2] == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def _centre_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return img[y0 : y0 + s, x0 : x0 + s]


def _resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def prepare(img: Any, modality: str, cfg: PreprocessConfig | None = None, name: str = "image") -> np.ndarray:
    """Turn one image into a normalised ``(3, H, W)`` float32 network input.

    * ``uav``, ``satellite``, ``map``, ``ground``: centre square crop (the largest square in the
      middle of the frame) resized to ``S x S`` with ``cv2.INTER_AREA``. Ground photos thus lose
      their left/right margins, nadir views keep their full ground footprint's inscribed square.
    * ``panorama``: the whole equirectangular image resized to ``S x round(S * panorama_aspect)``.

    ``S = cfg.input_size``. Bad images raise :class:`InputError` (see :func:`check_image`), an
    unknown modality :class:`ConfigError` listing the valid ones.
    """
    cfg = cfg or PreprocessConfig()
    _check_modality(modality)
    rgb = check_image(img, name)
    hw = cfg.output_hw(modality)
    if modality != "panorama":
        rgb = _centre_square(rgb)
    rgb = _resize(rgb, hw)
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(cfg.mean, dtype=np.float32)
    x /= np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def panorama_north_up(pano: Any, heading_deg: float, name: str = "panorama") -> np.ndarray:
    """Roll an equirectangular panorama so that its centre column looks north (CVUSA / VIGOR alignment).

    ``pano``'s centre column looks along ``heading_deg`` (clockwise from north) and its columns span 360
    degrees of azimuth left to right, so column ``c`` looks at ``heading + (c - W / 2) * 360 / W``. The
    result is ``pano`` rolled right by ``round(heading * W / 360)`` columns: its centre column looks north,
    east lies a quarter width to the right. Training pairs and the vehicle localizer both align panoramas
    with this one function before :func:`prepare`, matching them against north-up satellite crops.
    A non-finite heading raises :class:`InputError` naming ``heading_deg``; bad images name ``name``.
    """
    rgb = check_image(pano, name)
    try:
        h = float(heading_deg)
    except (TypeError, ValueError):
        raise InputError(f"heading_deg: expected a number of degrees, got {heading_deg!r}") from None
    if not math.isfinite(h):
        raise InputError(f"heading_deg: must be finite, got {heading_deg!r}")
    w = rgb.shape[1]
    return np.ascontiguousarray(np.roll(rgb, int(round((h % 360.0) * w / 360.0)) % w, axis=1))


def preprocess_batch(images: Sequence[Any], modality: str, cfg: PreprocessConfig | None = None) -> np.ndarray:
    """:func:`prepare` every image of one modality; returns ``(N, 3, H, W)`` float32.

    Errors name the offending element (``images[i]``). An empty sequence gives ``(0, 3, H, W)``.
    """
    cfg = cfg or PreprocessConfig()
    _check_modality(modality)
    if images is None or isinstance(images, (str, bytes)):
        raise InputError(f"images: expected a sequence of images, got {type(images).__name__}")
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
        raise InputError(f"images: expected a sequence of images, got a single array of shape {images.shape}")
    h, w = cfg.output_hw(modality)
    out = np.empty((len(images), 3, h, w), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = prepare(img, modality, cfg, name=f"images[{i}]")
    return out


def rotated_square(img: Any, angle_deg: float, side: int | None = None) -> np.ndarray:
    """Centred square crop of the image rotated by ``angle_deg`` (content turns counter-clockwise).

    Without ``side``, the crop is the largest centred square that lies inside the original image
    after the rotation: ``side = floor(min(h, w) / (|cos a| + |sin a|))``, i.e. ``min(h, w)`` for
    multiples of 90 degrees and ``min(h, w) / sqrt(2)`` at 45 degrees (the size that fits any
    angle). Give ``side`` (<= that worst-case size for arbitrary angles) to get the same ground
    footprint for every angle, as unknown-yaw test-time augmentation needs. Multiples of 90
    degrees are exact pixel permutations, other angles use bilinear interpolation.

    Returns an ``side x side x 3`` uint8 RGB array.
    """
    rgb = check_image(img, "image")
    angle = float(angle_deg)
    if not math.isfinite(angle):
        raise InputError(f"rotated_square: angle must be finite, got {angle_deg!r}")
    h, w = rgb.shape[:2]
    a = math.radians(angle)
    fit = min(h, w) / (abs(math.cos(a)) + abs(math.sin(a)))
    max_side = math.floor(fit + 1e-6)
    if side is None:
        side = max_side
    side = int(side)
    if not MIN_SIDE <= side <= max_side:
        raise InputError(
            f"rotated_square: side {side} must be in [{MIN_SIDE}, {max_side}] for a {w}x{h} image at {angle:g} deg"
        )
    quarter = angle / 90.0
    if abs(quarter - round(quarter)) < 1e-9:
        k = round(quarter) % 4
        rot = np.rot90(rgb, k)  # k=1: counter-clockwise as displayed
        rh, rw = rot.shape[:2]
        y0, x0 = (rh - side) // 2, (rw - side) // 2
        return np.ascontiguousarray(rot[y0 : y0 + side, x0 : x0 + side])
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)  # positive angle = counter-clockwise
    m[0, 2] += (side - 1) / 2.0 - cx
    m[1, 2] += (side - 1) / 2.0 - cy
    return cv2.warpAffine(rgb, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
