"""Geometric verification: pose recovery, rejection of wrong/empty frames, honest covariance.

Test frames are rendered here with OpenCV (no simulator dependency): a seeded synthetic texture is
the ground at 0.25 m/px; tiles are 0.5 m/px (INTER_AREA) cuts of it, frames are perspective views of
it from a camera pose via the exact ground-plane -> image homography K R^T [e1 e2 -C].
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np
import pyproj
import pytest

from gleam_ros.core import geo
from gleam_ros.core.camera import CameraIntrinsics, camera_to_enu
from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.tiles import Tile
from gleam_ros.core.verify import Priors, Verification, Verifier, VerifyConfig

cv2.setNumThreads(1)

CRS = "EPSG:32634"  # UTM 34N, central meridian 21 E
LAT0, LON0 = 47.0, 18.3  # 2.7 deg west of the central meridian: convergence about -2 deg
WORLD_GSD = 0.25
WORLD_PX = 2000  # 500 m of ground
TILE_PX, TILE_GSD = 500, 0.5  # 250 m tiles
INTR = CameraIntrinsics.from_fov(640, 480, 60.0)  # ~0.22 m/px on the ground at 120 m


def texture(n: int, seed: int) -> np.ndarray:
    """Seeded RGB texture: multi-scale smooth noise plus random discs, rectangles and lines."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((n, n, 3), np.float32)
    for cell, amp in ((96, 40.0), (24, 25.0), (6, 12.0)):
        m = n // cell + 2
        small = rng.normal(0, 1, (m, m, 3)).astype(np.float32)
        acc += amp * cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC)[:n, :n]
    img = np.clip(acc + rng.integers(90, 160, 3), 0, 255).astype(np.uint8)
    for _ in range(n * n // 2500):
        c = tuple(int(x) for x in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        x, y = (int(v) for v in rng.integers(0, n, 2))
        if kind == 0:
            cv2.circle(img, (x, y), int(rng.integers(4, 40)), c, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(4, 60)), y + int(rng.integers(4, 60))), c, -1)
        else:
            end = (x + int(rng.integers(-80, 80)), y + int(rng.integers(-80, 80)))
            cv2.line(img, (x, y), end, c, int(rng.integers(1, 6)), cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), 0.8)


@dataclass
class World:
    """A textured ground plane georeferenced in a UTM grid, centred on (lat, lon)."""

    image: np.ndarray
    crs: str
    cx: float  # grid coordinates of the centre
    cy: float

    @classmethod
    def at(cls, image: np.ndarray, lat: float, lon: float, crs: str = CRS) -> "World":
        x, y = geo.transform(lon, lat, geo.WGS84, crs)
        return cls(image, crs, float(x), float(y))

    @property
    def x0(self) -> float:
        return self.cx - self.image.shape[1] * WORLD_GSD / 2

    @property
    def y0(self) -> float:
        return self.cy + self.image.shape[0] * WORLD_GSD / 2

    def tile(self, tile_id: str = "true") -> Tile:
        """A 250 m, 0.5 m/px tile centred on the world centre (downsampled cut of the texture)."""
        f = int(round(TILE_GSD / WORLD_GSD))
        u0 = v0 = (self.image.shape[0] - TILE_PX * f) // 2
        crop = self.image[v0 : v0 + TILE_PX * f, u0 : u0 + TILE_PX * f]
        img = cv2.resize(crop, (TILE_PX, TILE_PX), interpolation=cv2.INTER_AREA)
        x0, y0 = self.x0 + u0 * WORLD_GSD, self.y0 - v0 * WORLD_GSD
        lon, lat = geo.transform(x0 + TILE_PX * TILE_GSD / 2, y0 - TILE_PX * TILE_GSD / 2, self.crs, geo.WGS84)
        return Tile(tile_id, img, self.crs, x0, y0, TILE_GSD, TILE_PX * TILE_GSD, float(lat), float(lon))

    def render(self, e: float, n: float, h: float, grid_heading: float, pitch: float, roll: float,
               intr: CameraIntrinsics = INTR) -> np.ndarray:
        """View from a camera at grid (e, n, h) with the given attitude (camera.py conventions, grid axes)."""
        rot = camera_to_enu(grid_heading, pitch, roll)  # camera -> world
        a = np.array([[WORLD_GSD, 0, self.x0 + 0.5 * WORLD_GSD], [0, -WORLD_GSD, self.y0 - 0.5 * WORLD_GSD], [0, 0, 1]])
        m = np.array([[1.0, 0, -e], [0, 1.0, -n], [0, 0, -h]])
        hmat = intr.K @ rot.T @ m @ a  # world pixel -> frame pixel
        return cv2.warpPerspective(self.image, hmat, (intr.width, intr.height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)

    def latlon(self, e: float, n: float) -> tuple[float, float]:
        lon, lat = geo.transform(e, n, self.crs, geo.WGS84)
        return float(lat), float(lon)

    def convergence(self, e: float, n: float) -> float:
        """True azimuth of grid north (deg), from pyproj's projection factors (independent of verify.py)."""
        lat, lon = self.latlon(e, n)
        return float(pyproj.Proj(self.crs).get_factors(lon, lat).meridian_convergence)


@pytest.fixture(scope="module")
def world() -> World:
    return World.at(texture(WORLD_PX, 1), LAT0, LON0)


@pytest.fixture(scope="module")
def tile(world) -> Tile:
    return world.tile()


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier(VerifyConfig())


def err_m(res: Verification, lat: float, lon: float) -> float:
    return float(geo.distance_m(lat, lon, res.lat, res.lon))


def en_error(res: Verification, lat: float, lon: float) -> np.ndarray:
    """Truth minus estimate in local ENU metres at the estimate."""
    e, n, _ = geo.LocalFrame(res.lat, res.lon).to_enu(lat, lon)
    return np.array([float(e), float(n)])


def render_true(world: World, de: float, dn: float, h: float, true_heading: float, pitch: float, roll: float):
    """Render with a TRUE-north heading (converted to the grid heading the renderer uses)."""
    e, n = world.cx + de, world.cy + dn
    grid_heading = true_heading - world.convergence(e, n)
    return world.render(e, n, h, grid_heading, pitch, roll), world.latlon(e, n)


def assert_fails(res: Verification) -> None:
    assert res.ok is False
    assert res.reason
    assert math.isnan(res.lat) and math.isnan(res.lon) and math.isnan(res.heading_deg)
    assert np.all(np.isnan(res.cov_en))


# ----------------------------------------------------------------------------------------- pose recovery
def test_recovers_known_pose_sift(world, tile, verifier):
    frame, (lat, lon) = render_true(world, 7.0, -5.0, 120.0, 37.0, 8.0, -5.0)
    res = verifier.verify(frame, tile, INTR)
    assert res.ok, res.reason
    assert res.reason == "" and res.method == "pnp" and res.tile_id == "true"
    assert res.inliers >= 100 and res.pts_frame.shape == res.pts_tile.shape == (res.inliers, 2)
    # Position within 1.0 m: the tile is 0.5 m/px and SIFT localises a match to ~0.3 tile px (0.15 m);
    # hundreds of inliers average the random part away, what remains is resampling bias between the
    # 0.25 m ground, 0.5 m tile and ~0.22 m frame (measured 0.1-0.3 m). 1.0 m = 2 tile pixels of margin.
    assert err_m(res, lat, lon) < 1.0
    assert abs(res.alt_m - 120.0) < 0.03 * 120.0
    assert abs(float(geo.heading_diff_deg(res.heading_deg, 37.0))) < 1.0
    assert abs(res.pitch_deg - 8.0) < 1.0 and abs(res.roll_deg + 5.0) < 1.0
    cam_tilt = math.degrees(math.acos(math.cos(math.radians(8.0)) * math.cos(math.radians(5.0))))
    assert abs(res.tilt_deg - cam_tilt) < 1.0
    assert res.cov_en.shape == (2, 2) and np.all(np.linalg.eigvalsh(res.cov_en) >= 0.5**2 - 1e-9)
    assert 0 < res.heading_std_deg < 2.0
    assert res.homography is not None and res.homography.shape == (3, 3)


@pytest.mark.parametrize("features,pos_m,alt_frac,hdg_deg", [("orb", 3.0, 0.05, 2.0)])
def test_recovers_known_pose_binary_features(world, tile, features, pos_m, alt_frac, hdg_deg):
    frame, (lat, lon) = render_true(world, -4.0, 6.0, 110.0, 200.0, -6.0, 7.0)
    res = Verifier(VerifyConfig(features=features)).verify(frame, tile, INTR)
    assert res.ok, res.reason
    assert err_m(res, lat, lon) < pos_m
    assert abs(res.alt_m - 110.0) < alt_frac * 110.0
    assert abs(float(geo.heading_diff_deg(res.heading_deg, 200.0))) < hdg_deg


def test_akaze_works_or_fails_clearly(world, tile):
    if hasattr(cv2, "AKAZE_create"):
        frame, (lat, lon) = render_true(world, 3.0, 2.0, 120.0, 300.0, 5.0, 5.0)
        res = Verifier(VerifyConfig(features="akaze")).verify(frame, tile, INTR)
        assert res.ok, res.reason
        assert err_m(res, lat, lon) < 3.0
        assert abs(float(geo.heading_diff_deg(res.heading_deg, 300.0))) < 2.0
    else:  # OpenCV 5 moved AKAZE to contrib: a clear configuration error, not an AttributeError
        with pytest.raises(ConfigError, match="akaze"):
            Verifier(VerifyConfig(features="akaze"))


@pytest.mark.parametrize("lon", [18.3, 23.7])  # west / east of the 21 E central meridian: convergence -2 / +2 deg
def test_heading_is_true_north_not_grid_north(lon):
    w = World.at(texture(1200, 3), 47.0, lon)
    t = w.tile(f"conv{lon}")
    e, n = w.cx + 5.0, w.cy + 5.0
    conv = w.convergence(e, n)
    assert abs(conv) > 1.5  # the test is meaningful: grid north is > 1.5 deg off true north here
    grid_heading = 80.0
    res = Verifier().verify(w.render(e, n, 120.0, grid_heading, 3.0, -2.0), t, INTR)
    assert res.ok, res.reason
    true_heading = grid_heading + conv  # conformal projection: true azimuth = grid azimuth + convergence
    assert abs(float(geo.heading_diff_deg(res.heading_deg, true_heading))) < 0.3
    assert abs(float(geo.heading_diff_deg(res.heading_deg, grid_heading))) > 1.2
    lat, lon_ = w.latlon(e, n)
    assert err_m(res, lat, lon_) < 1.0


def test_center_method_without_intrinsics(world, tile, verifier):
    # nadir view: the image centre is the nadir, so the centre method is accurate here ...
    frame, (lat, lon) = render_true(world, 10.0, 4.0, 120.0, 37.0, 0.0, 0.0)
    res = verifier.verify(frame, tile)
    assert res.ok, res.reason
    assert res.method == "center" and math.isnan(res.alt_m) and math.isnan(res.tilt_deg)
    assert err_m(res, lat, lon) < 1.0
    assert abs(float(geo.heading_diff_deg(res.heading_deg, 37.0))) < 1.0
    assert np.sqrt(np.linalg.eigvalsh(res.cov_en)).min() >= 30.0  # unknown tilt, no altitude prior
    # ... but with tilt it is off by h*tan(tilt), which its covariance must cover
    frame, (lat, lon) = render_true(world, 7.0, -5.0, 120.0, 37.0, 8.0, -5.0)
    pnp = verifier.verify(frame, tile, INTR)
    res = verifier.verify(frame, tile, priors=Priors(alt_m=120.0))
    assert res.ok and pnp.ok
    d = en_error(res, lat, lon)
    assert np.linalg.norm(d) > 10.0  # the 9.4 deg tilt really displaces the image centre (~20 m)
    assert float(d @ np.linalg.solve(res.cov_en, d)) < 5.991  # inside the 95 % ellipse
    expected_std = 120.0 * math.tan(math.radians(25.0))
    assert np.sqrt(np.linalg.eigvalsh(res.cov_en)).min() >= expected_std
    assert np.linalg.eigvalsh(res.cov_en).min() > 1000 * np.linalg.eigvalsh(pnp.cov_en).max()


# ----------------------------------------------------------------------------------------- rejections
def test_different_texture_is_rejected(tile, verifier):
    other = World.at(texture(1200, 2), LAT0, LON0)
    res = verifier.verify(other.render(other.cx, other.cy, 120.0, 37.0, 5.0, 0.0), tile, INTR)
    assert_fails(res)
    res = verifier.verify(other.render(other.cx, other.cy, 120.0, 37.0, 5.0, 0.0), tile)
    assert_fails(res)


def test_blank_and_noise_frames_are_rejected(tile, verifier):
    assert_fails(verifier.verify(np.full((480, 640, 3), 127, np.uint8), tile, INTR))
    assert_fails(verifier.verify(np.zeros((480, 640, 3), np.uint8), tile))
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3)).astype(np.uint8)
    assert_fails(verifier.verify(noise, tile, INTR))


def test_bad_inputs_raise(tile, verifier):
    with pytest.raises(InputError):
        verifier.verify(np.zeros((480, 640, 3), np.float32), tile)
    with pytest.raises(InputError):
        verifier.verify(np.zeros((480, 640, 5), np.uint8), tile)
    with pytest.raises(InputError, match="intrinsics"):
        verifier.verify(np.zeros((240, 320, 3), np.uint8), tile, INTR)
    with pytest.raises(InputError, match="alt_m"):
        Priors(alt_m=-5.0)


@pytest.mark.parametrize("kw,field", [
    ({"features": "surf"}, "features"), ({"ratio": 1.2}, "ratio"), ({"min_inliers": 2}, "min_inliers"),
    ({"ransac_px": 0.0}, "ransac_px"), ({"max_tilt_deg": 95.0}, "max_tilt_deg"), ({"bootstrap": 3}, "bootstrap"),
    ({"cov_floor_m": float("nan")}, "cov_floor_m"), ({"min_spread": 1.5}, "min_spread"),
])
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        VerifyConfig(**kw)


def test_priors_that_disagree_reject(world, tile, verifier):
    frame, _ = render_true(world, 7.0, -5.0, 120.0, 37.0, 8.0, -5.0)
    assert verifier.verify(frame, tile, INTR, Priors(alt_m=126.0, heading_deg=40.0, pitch_deg=7.0)).ok
    res = verifier.verify(frame, tile, INTR, Priors(alt_m=60.0))
    assert_fails(res)
    assert "altitude prior" in res.reason
    res = verifier.verify(frame, tile, INTR, Priors(heading_deg=37.0 + 90.0))
    assert_fails(res)
    assert "heading" in res.reason
    res = verifier.verify(frame, tile, None, Priors(heading_deg=37.0 - 120.0))
    assert_fails(res)
    res = verifier.verify(frame, tile, INTR, Priors(roll_deg=15.0))
    assert_fails(res)
    assert "roll" in res.reason


def test_excessive_tilt_rejected(world, tile):
    # nose up 20 deg against a 15 deg limit: the camera looks 44 m behind the vehicle
    v = Verifier(VerifyConfig(max_tilt_deg=15.0))
    e, n = world.cx, world.cy + 120.0 * math.tan(math.radians(20.0))
    res = v.verify(world.render(e, n, 120.0, 0.0, 20.0, 0.0), tile, INTR)
    assert_fails(res)
    assert "tilt" in res.reason
    assert res.inliers >= 30  # it matched fine; the pose is what is rejected
    assert Verifier().verify(world.render(e, n, 120.0, 0.0, 20.0, 0.0), tile, INTR).ok  # within the default 25


def test_deterministic(world, tile):
    frame, _ = render_true(world, 1.0, 2.0, 115.0, 123.0, 4.0, 4.0)
    a = Verifier().verify(frame, tile, INTR)
    b = Verifier().verify(frame, tile, INTR)
    assert a.ok and b.ok
    assert (a.lat, a.lon, a.heading_deg, a.inliers) == (b.lat, b.lon, b.heading_deg, b.inliers)
    np.testing.assert_array_equal(a.cov_en, b.cov_en)


# ----------------------------------------------------------------------------------------- covariance
def test_covariance_is_honest_over_noisy_renders(world, tile):
    """NEES of the position error w.r.t. cov_en over 30 noisy, blurred renders at random poses.

    Synthetic renders have no orthophoto misregistration, relief or lens error, i.e. none of the model
    error that ``cov_floor_m`` stands for; with the floor off, the bootstrap term alone must be honest
    (2-dof NEES mean ~2). With the default floor the covariance may only get more conservative.
    """
    rng = np.random.default_rng(5)
    floor = VerifyConfig().cov_floor_m
    bare = Verifier(VerifyConfig(cov_floor_m=0.0))
    nees_bare, nees_default = [], []
    for _ in range(30):
        e, n = world.cx + rng.uniform(-20, 20), world.cy + rng.uniform(-20, 20)
        frame = world.render(e, n, rng.uniform(100, 140), rng.uniform(0, 360), rng.uniform(-10, 10),
                             rng.uniform(-10, 10)).astype(np.float32)
        frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.5, 1.5))
        frame = frame * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20) + rng.normal(0, rng.uniform(3, 10), frame.shape)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        res = bare.verify(frame, tile, INTR)
        assert res.ok, res.reason
        d = en_error(res, *world.latlon(e, n))
        nees_bare.append(float(d @ np.linalg.solve(res.cov_en, d)))
        # the default config adds floor**2 to the same (seeded) bootstrap covariance
        nees_default.append(float(d @ np.linalg.solve(res.cov_en + floor**2 * np.eye(2), d)))
    nees_bare, nees_default = np.array(nees_bare), np.array(nees_default)
    chi2_95 = 5.991
    assert 0.5 <= nees_bare.mean() <= 4.0, nees_bare
    assert np.mean(nees_bare < chi2_95) >= 0.9, nees_bare
    assert np.mean(nees_default < chi2_95) >= 0.9, nees_default


def test_floor_is_added_to_the_bootstrap_covariance(world, tile):
    frame, _ = render_true(world, 2.0, -3.0, 118.0, 64.0, 3.0, 6.0)
    bare = Verifier(VerifyConfig(cov_floor_m=0.0)).verify(frame, tile, INTR)
    floored = Verifier(VerifyConfig(cov_floor_m=0.7)).verify(frame, tile, INTR)
    assert bare.ok and floored.ok
    np.testing.assert_allclose(floored.cov_en, bare.cov_en + 0.49 * np.eye(2), atol=1e-9)
    assert 0 < np.linalg.eigvalsh(bare.cov_en).min() and np.sqrt(np.trace(bare.cov_en)) < 0.5


# ----------------------------------------------------------------------------------------- candidates
def test_verify_candidates_ranks_true_tile_first(world, tile, verifier):
    decoys = []
    for i, seed in enumerate((11, 12)):
        img = cv2.resize(texture(1000, seed), (TILE_PX, TILE_PX), interpolation=cv2.INTER_AREA)
        decoys.append(Tile(f"decoy{i}", img, CRS, tile.x0, tile.y0, TILE_GSD, tile.size_m, tile.center_lat,
                           tile.center_lon))
    frame, (lat, lon) = render_true(world, -8.0, 3.0, 125.0, 271.0, -4.0, 6.0)
    out = verifier.verify_candidates(frame, [decoys[0], tile, decoys[1]], INTR)
    assert [r.tile_id for r in out][0] == "true" and len(out) == 3
    assert out[0].ok and err_m(out[0], lat, lon) < 1.0
    assert not out[1].ok and not out[2].ok
    assert out[1].inliers >= out[2].inliers
    # early stop: a confident true tile first means the decoys are never tried
    out = verifier.verify_candidates(frame, [tile, decoys[0], decoys[1]], INTR, stop_inliers=50)
    assert len(out) == 1 and out[0].ok


def test_tile_feature_cache_is_bounded(world, tile):
    v = Verifier(VerifyConfig(cache_tiles=1))
    frame, _ = render_true(world, 0.0, 0.0, 120.0, 10.0, 0.0, 0.0)
    other = Tile("other", tile.image[::-1].copy(), CRS, tile.x0, tile.y0, TILE_GSD, tile.size_m, tile.center_lat,
                 tile.center_lon)
    assert v.verify(frame, tile, INTR).ok
    assert not v.verify(frame, other, INTR).ok
    assert v.verify(frame, tile, INTR).ok  # evicted and recomputed, same answer
    assert len(v._cache) == 1


# ----------------------------------------------------------------------------------------- matching


def _bf_matches(verifier: Verifier, fd: np.ndarray, td: np.ndarray, ratio: float) -> dict[int, tuple[float, int]]:
    """Oracle: OpenCV's brute-force 2-NN, Lowe ratio, then the closest frame point per tile point."""
    best: dict[int, tuple[float, int]] = {}
    for m in cv2.BFMatcher(cv2.NORM_L2).knnMatch(fd, td, k=2):
        if len(m) == 2 and m[0].distance < ratio * m[1].distance:
            prev = best.get(m[0].trainIdx)
            if prev is None or m[0].distance < prev[0]:
                best[m[0].trainIdx] = (m[0].distance, m[0].queryIdx)
    return best


def test_sift_matching_equals_opencv_brute_force(world, tile, verifier):
    """The BLAS nearest-neighbour search gives OpenCV's brute-force neighbours and distances."""
    from gleam_ros.core.verify import _knn2_l2

    frame, _ = render_true(world, 20.0, -15.0, 120.0, 30.0, 3.0, -2.0)
    ff = verifier._features(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    tf = verifier._features(cv2.cvtColor(tile.image, cv2.COLOR_RGB2GRAY))
    assert len(ff.pts) > 500 and len(tf.pts) > 500
    d, idx = _knn2_l2(ff.desc, tf.desc)
    d_blk, idx_blk = _knn2_l2(ff.desc, tf.desc, block_elems=7 * len(tf.desc))  # row blocks of 7, ragged end
    np.testing.assert_array_equal(idx_blk, idx)
    np.testing.assert_allclose(d_blk, d, rtol=0, atol=1e-3)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(ff.desc, tf.desc, k=2)
    bd = np.array([[m[0].distance, m[1].distance] for m in knn])
    bi = np.array([[m[0].trainIdx, m[1].trainIdx] for m in knn])
    np.testing.assert_allclose(d, bd, rtol=0, atol=1e-2)
    assert np.all(d[:, 0] <= d[:, 1])
    differ = bi != idx  # allowed only where two tile points are equally near (float rounding)
    assert np.all(np.abs(bd[differ] - d[differ]) < 1e-2) and differ.mean() < 0.01

    pf, pt = verifier._match(ff, tf)
    oracle = _bf_matches(verifier, ff.desc, tf.desc, verifier.cfg.ratio)
    assert len(pf) > verifier.cfg.min_inliers
    expect = sorted((q, t) for t, (_, q) in oracle.items())
    # compare coordinates as multisets (SIFT repeats a keypoint position for each of its orientations)
    want = Counter((*ff.pts[q], *tf.pts[t]) for q, t in expect)
    got = Counter(tuple(x) for x in np.hstack([pf, pt]).astype(np.float32))
    # identical up to near-ties that float rounding may order differently
    assert sum((got & want).values()) >= 0.99 * len(expect)
    assert abs(len(pf) - len(expect)) <= max(2, len(expect) // 100)


def test_matching_keeps_one_frame_point_per_tile_point(verifier):
    """Several frame points whose nearest tile point is the same: only the closest survives the match."""
    from gleam_ros.core.verify import _Features

    rng = np.random.default_rng(3)
    td = rng.uniform(0, 200, (6, 128)).astype(np.float32)
    fd = np.stack([td[0] + 1.0, td[0] + 0.5, td[0] + 2.0, td[4] + 0.25, rng.uniform(0, 200, 128)]).astype(np.float32)
    fpts = np.arange(10, dtype=np.float32).reshape(5, 2)
    tpts = (100 + np.arange(12, dtype=np.float32)).reshape(6, 2)
    pf, pt = verifier._match(_Features(fpts, fd), _Features(tpts, td))
    np.testing.assert_array_equal(pf, fpts[[1, 3]])  # td[0]'s closest frame point is row 1; row 3 -> td[4]
    np.testing.assert_array_equal(pt, tpts[[0, 4]])
