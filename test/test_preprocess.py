"""Tests of gleam_ros.core.preprocess: the one preprocessing definition."""

from __future__ import annotations

import numpy as np
import pytest

from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.preprocess import (
    MODALITIES,
    PreprocessConfig,
    check_image,
    prepare,
    preprocess_batch,
    rotated_square,
)


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


CFG = PreprocessConfig(input_size=64)


@pytest.mark.parametrize("modality", MODALITIES)
def test_prepare_shapes(modality):
    out = prepare(_img(80, 120), modality, CFG)
    expected = (3, 64, 128) if modality == "panorama" else (3, 64, 64)
    assert out.shape == expected
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]


def test_panorama_aspect_rounding():
    cfg = PreprocessConfig(input_size=50, panorama_aspect=1.5)
    assert prepare(_img(40, 100), "panorama", cfg).shape == (3, 50, 75)
    assert cfg.output_hw("panorama") == (50, 75)
    assert cfg.output_hw("uav") == (50, 50)


def test_normalisation_values():
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 0
    img[..., 1] = 255
    img[..., 2] = 51
    out = prepare(img, "uav", PreprocessConfig(input_size=32))
    np.testing.assert_allclose(out[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[2], (0.2 - 0.5) / 0.5, atol=1e-6)
    cfg = PreprocessConfig(input_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    out = prepare(img, "satellite", cfg)
    np.testing.assert_allclose(out[1], (1.0 - 0.456) / 0.224, rtol=1e-5)


def test_centre_square_crop_keeps_the_middle():
    # left third red, middle third green, right third blue: the centre square crop is all green.
    img = np.zeros((60, 180, 3), np.uint8)
    img[:, :60, 0] = 255
    img[:, 60:120, 1] = 255
    img[:, 120:, 2] = 255
    for modality in ("uav", "ground", "map", "satellite"):
        out = prepare(img, modality, PreprocessConfig(input_size=30))
        np.testing.assert_allclose(out[1], 1.0, atol=1e-6)
        np.testing.assert_allclose(out[0], -1.0, atol=1e-6)
        np.testing.assert_allclose(out[2], -1.0, atol=1e-6)
    pano = prepare(img, "panorama", PreprocessConfig(input_size=30))  # whole image kept
    assert pano[0, :, 0].mean() > 0.9 and pano[2, :, -1].mean() > 0.9


def test_gray_rgba_and_float_inputs():
    gray = np.full((20, 24), 200, np.uint8)
    rgb = check_image(gray, "g")
    assert rgb.shape == (20, 24, 3) and rgb.dtype == np.uint8 and (rgb == 200).all()
    rgba = np.dstack([_img(20, 20), np.zeros((20, 20), np.uint8)])
    assert check_image(rgba).shape == (20, 20, 3)
    np.testing.assert_array_equal(check_image(rgba), rgba[..., :3])
    f = np.full((20, 20, 3), 0.5, np.float32)
    assert (check_image(f) == 128).all()
    assert check_image(np.ones((20, 20, 1), np.float64)).shape == (20, 20, 3)
    assert check_image(_img(20, 20)[:, ::-1]).flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (None, "None"),
        ([[1, 2], [3, 4]], "numpy array"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros(100, np.uint8), "shape"),
        (np.zeros((20, 20, 2), np.uint8), "shape"),
        (np.zeros((20, 20, 3, 1), np.uint8), "shape"),
        (np.zeros((10, 40, 3), np.uint8), "too small"),
        (np.full((20, 20, 3), np.nan, np.float32), "NaN"),
        (np.full((20, 20, 3), np.inf, np.float64), "NaN or Inf"),
        (np.full((20, 20, 3), 2.0, np.float32), "[0, 1]"),
        (np.zeros((20, 20, 3), np.uint16), "dtype"),
        (np.zeros((20, 20, 3), bool), "dtype"),
    ],
)
def test_bad_inputs_raise_input_error_naming_the_input(bad, fragment):
    with pytest.raises(InputError) as exc:
        check_image(bad, "front_camera")
    assert "front_camera" in str(exc.value)
    assert fragment in str(exc.value)
    with pytest.raises(InputError, match="query"):
        prepare(bad, "uav", CFG, name="query")


def test_unknown_modality_lists_valid_ones():
    with pytest.raises(ConfigError) as exc:
        prepare(_img(32, 32), "thermal", CFG)
    for m in MODALITIES:
        assert m in str(exc.value)
    with pytest.raises(ConfigError):
        preprocess_batch([_img(32, 32)], "thermal", CFG)


def test_preprocess_batch():
    imgs = [_img(40, 50, 1), _img(70, 30, 2), np.full((64, 64), 9, np.uint8)]
    out = preprocess_batch(imgs, "uav", CFG)
    assert out.shape == (3, 3, 64, 64) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], prepare(imgs[1], "uav", CFG))
    assert preprocess_batch([], "panorama", CFG).shape == (0, 3, 64, 128)
    with pytest.raises(InputError, match=r"images\[1\]"):
        preprocess_batch([_img(40, 40), np.zeros((8, 8, 3), np.uint8)], "uav", CFG)
    with pytest.raises(InputError):
        preprocess_batch(_img(40, 40), "uav", CFG)  # one image, not a list


def test_config_round_trip_and_validation():
    cfg = PreprocessConfig(input_size=96, mean=[0.4, 0.5, 0.6], std=(0.2, 0.3, 0.4), panorama_aspect=3)
    d = cfg.to_dict()
    assert d["mean"] == [0.4, 0.5, 0.6]
    assert PreprocessConfig.from_dict(d) == cfg
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()
    with pytest.raises(ConfigError, match="unknown"):
        PreprocessConfig.from_dict({"input_sz": 3})
    for bad in ({"input_size": 8}, {"std": (0.5, 0.0, 0.5)}, {"mean": (0.5, 0.5)}, {"panorama_aspect": float("nan")}):
        with pytest.raises(ConfigError):
            PreprocessConfig.from_dict(bad)


def _marker_image(n: int = 41) -> np.ndarray:
    """Black square image with a white blob straight right of the centre (an asymmetric pattern)."""
    img = np.zeros((n, n, 3), np.uint8)
    c = n // 2
    img[c - 1 : c + 2, c + 8 : c + 12] = 255
    return img


def _blob_angle(img: np.ndarray) -> float:
    """Angle of the bright blob around the image centre, degrees counter-clockwise as displayed."""
    ys, xs = np.nonzero(img[..., 0] > 100)
    c = (img.shape[0] - 1) / 2.0
    return float(np.degrees(np.arctan2(-(ys.mean() - c), xs.mean() - c)))


def test_rotated_square_direction_is_counter_clockwise():
    img = _marker_image()
    assert abs(_blob_angle(rotated_square(img, 0))) < 1.0
    assert abs(_blob_angle(rotated_square(img, 90)) - 90.0) < 1.0  # right -> up
    assert abs(_blob_angle(rotated_square(img, 30)) - 30.0) < 3.0
    assert abs(_blob_angle(rotated_square(img, -60)) + 60.0) < 3.0
    assert abs(abs(_blob_angle(rotated_square(img, 180))) - 180.0) < 1.0
    # a top-left marker rotated by +90 (counter-clockwise) ends up bottom-left
    tl = np.zeros((40, 40, 3), np.uint8)
    tl[2:10, 2:10] = 255
    r = rotated_square(tl, 90)
    ys, xs = np.nonzero(r[..., 0])
    assert ys.mean() > 30 and xs.mean() < 10
    np.testing.assert_array_equal(rotated_square(tl, 90), np.rot90(tl))
    np.testing.assert_array_equal(rotated_square(tl, 450), np.rot90(tl))


def test_rotated_square_size():
    img = _img(60, 100)
    assert rotated_square(img, 0).shape == (60, 60, 3)
    assert rotated_square(img, 90).shape == (60, 60, 3)
    assert rotated_square(img, 45).shape == (42, 42, 3)  # floor(60 / sqrt(2))
    assert rotated_square(img, 45, side=30).shape == (30, 30, 3)
    with pytest.raises(InputError):
        rotated_square(img, 45, side=50)  # would leave the image
    with pytest.raises(InputError):
        rotated_square(img, float("nan"))
    with pytest.raises(InputError, match="image"):
        rotated_square(None, 10)


def test_rotated_square_stays_inside_the_image():
    # an all-white image: the crop must hold no black fill from outside the image, even in its corners
    img = np.full((50, 80, 3), 255, np.uint8)
    for angle in (10, 33, 45, 77, 135, 200, -17):
        crop = rotated_square(img, angle)
        assert crop.min() > 200, angle
        assert crop.shape[0] >= 35  # and it is not needlessly small: >= floor(50 / sqrt(2))
