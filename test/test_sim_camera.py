"""Camera simulator: rendered geometry against the attitude conventions, flight paths, photometry."""

from __future__ import annotations

import math

import affine
import cv2
import numpy as np
import pyproj
import pytest

from gleam_ros.core import geo, maps
from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.sim.camera_sim import (
    Photometric,
    Pose,
    apply_photometric,
    flight_path,
    footprint_latlon,
    lawnmower_waypoints,
    random_photometric,
    random_poses,
    render_view,
    simulate_flight,
)

LAT0, LON0 = 60.45, 22.30
# Transverse Mercator centred on the test origin: grid north = true north there, scale 1, so map metres are
# local east/north metres (no UTM meridian convergence to account for).
LOCAL_CRS = pyproj.CRS.from_proj4(f"+proj=tmerc +lat_0={LAT0} +lon_0={LON0} +k=1 +x_0=0 +y_0=0 +ellps=WGS84")
HFOV = 60.0
INTR = CameraIntrinsics.from_fov(320, 240, HFOV)


def _grid_map(rgb: np.ndarray, res: float, name: str = "test", utm: bool = False) -> maps.GeoMap:
    """A map whose pixel grid is centred on (LAT0, LON0), in LOCAL_CRS or (``utm``) in the UTM zone there.

    (UTM for maps sampled many times: custom CRSs make every coordinate transform noticeably slower.)
    """
    h, w = rgb.shape[:2]
    crs, x0, y0 = LOCAL_CRS, 0.0, 0.0
    if utm:
        crs = geo.utm_crs_for(LAT0, LON0)
        x0, y0 = (float(v) for v in geo.transform(LON0, LAT0, geo.WGS84, crs))
    t = affine.Affine(res, 0.0, x0 - w * res / 2.0, 0.0, -res, y0 + h * res / 2.0)
    return maps.map_from_array(rgb, crs, t, name=name)


@pytest.fixture(scope="module")
def position_map():
    """256 m x 256 m at 1 m/px; R = column, G = row: the colour says where on the ground a pixel looks."""
    cols, rows = np.meshgrid(np.arange(256), np.arange(256))
    rgb = np.stack([cols, rows, np.full_like(cols, 128)], axis=-1).astype(np.uint8)
    return _grid_map(rgb, 1.0, "position")


def _decode(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local east/north metres of what the position map pixels show (bilinear => exact up to rounding)."""
    rgb = rgb.astype(float)
    return rgb[..., 0] + 0.5 - 128.0, 128.0 - (rgb[..., 1] + 0.5)


def _enu_of(lat: float, lon: float) -> tuple[float, float]:
    e, n, _ = geo.LocalFrame(LAT0, LON0).to_enu(lat, lon, 0.0)
    return float(e), float(n)


def _pose_at(e: float, n: float, alt: float, heading: float, pitch: float = 0.0, roll: float = 0.0) -> Pose:
    lat, lon, _ = geo.LocalFrame(LAT0, LON0).to_geodetic(e, n, 0.0)
    return Pose(0.0, float(lat), float(lon), alt, heading, pitch, roll)


def test_nadir_footprint_and_orientation_heading_0(position_map):
    alt = 100.0
    rgb, valid = render_view(position_map, _pose_at(0.0, 0.0, alt, 0.0), INTR)
    assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8 and valid.all()
    e, n = _decode(rgb)
    cy, cx = 119, 159
    # footprint width: pixel centres 0 and W-1 span (W-1)/W of 2*alt*tan(hfov/2)
    width = 2 * alt * math.tan(math.radians(HFOV) / 2)
    span = math.hypot(e[cy, -1] - e[cy, 0], n[cy, -1] - n[cy, 0])
    assert span == pytest.approx(width * (INTR.width - 1) / INTR.width, abs=1.0)
    # image top = north, image right = east, image centre under the camera
    assert n[0, cx] - n[-1, cx] == pytest.approx(alt * (INTR.height - 1) / INTR.fy, abs=1.0)
    assert abs(e[0, cx] - e[-1, cx]) < 1.0 and abs(n[cy, 0] - n[cy, -1]) < 1.0
    assert e[cy, -1] > e[cy, 0] + 100
    assert abs(e[cy:cy + 2, cx:cx + 2].mean()) < 0.6 and abs(n[cy:cy + 2, cx:cx + 2].mean()) < 0.6


def test_heading_90_puts_east_at_the_top(position_map):
    e0, n0 = 10.0, -20.0
    rgb, valid = render_view(position_map, _pose_at(e0, n0, 80.0, 90.0), INTR)
    assert valid.all()
    e, n = _decode(rgb)
    cy, cx = 119, 159
    assert e[0, cx] - e[-1, cx] > 50  # top of the image is east
    assert n[cy, 0] - n[cy, -1] > 70  # image right is south
    assert abs(n[0, cx] - n[-1, cx]) < 1.0
    assert e[cy:cy + 2, cx:cx + 2].mean() == pytest.approx(e0, abs=0.6)
    assert n[cy:cy + 2, cx:cx + 2].mean() == pytest.approx(n0, abs=0.6)


def test_footprint_latlon_matches_render(position_map):
    pose = _pose_at(0.0, 0.0, 100.0, 0.0)
    fp = footprint_latlon(pose, INTR)
    e_tl, n_tl = _enu_of(*fp[0])
    e_br, n_br = _enu_of(*fp[2])
    half_w = 100.0 * math.tan(math.radians(HFOV) / 2)
    assert e_tl == pytest.approx(-half_w, abs=0.05) and e_br == pytest.approx(half_w, abs=0.05)
    assert n_tl == pytest.approx(half_w * INTR.height / INTR.width, abs=0.05) and n_br == pytest.approx(-n_tl, abs=0.05)


def _project(pose: Pose, e: float, n: float) -> tuple[float, float]:
    """Pixel of ground point (e, n) of the frame centred at the pose (independent pinhole projection)."""
    r = pose.camera_rotation()
    p = r.T @ (np.array([e, n, 0.0]) - np.array([0.0, 0.0, pose.alt_m]))
    return INTR.fx * p[0] / p[2] + INTR.cx, INTR.fy * p[1] / p[2] + INTR.cy


def _marker_map(points_en: list[tuple[float, float]], res: float = 0.2, size_m: float = 240.0) -> maps.GeoMap:
    n = int(size_m / res)
    img = np.zeros((n, n, 3), np.uint8)
    for e, nn in points_en:
        # pixel centres are at integer coordinates for cv2: column i is centred on x = -size/2 + (i + 0.5) * res
        c = (int(round(((e + size_m / 2) / res - 0.5) * 16)), int(round(((size_m / 2 - nn) / res - 0.5) * 16)))
        cv2.circle(img, c, int(1.5 / res * 16), (255, 255, 255), -1, cv2.LINE_AA, 4)
    return _grid_map(img, res, "marker")


def _centroid(rgb: np.ndarray) -> tuple[float, float]:
    w = rgb[..., 0].astype(float)
    assert w.sum() > 0, "marker not visible"
    vv, uu = np.mgrid[0:rgb.shape[0], 0:rgb.shape[1]]
    return float((uu * w).sum() / w.sum()), float((vv * w).sum() / w.sum())


@pytest.mark.parametrize("heading", [0.0, 30.0, 250.0])
def test_pitch_moves_the_centre_ground_point_forward(heading):
    alt = 100.0
    fwd = alt * math.tan(math.radians(10.0))
    h = math.radians(heading)
    e, n = fwd * math.sin(h), fwd * math.cos(h)
    gmap = _marker_map([(e, n)])
    rgb, _ = render_view(gmap, _pose_at(0.0, 0.0, alt, heading, pitch=10.0), INTR)
    u, v = _centroid(rgb)
    # along-track metres per pixel at the image centre of a 10 deg tilted view
    m_per_px = alt / math.cos(math.radians(10)) ** 2 / INTR.fy
    assert math.hypot(u - INTR.cx, v - INTR.cy) * m_per_px < 0.5
    # level: the same point is straight ahead, above the image centre by fy*tan(10 deg)
    rgb0, _ = render_view(gmap, _pose_at(0.0, 0.0, alt, heading), INTR)
    u0, v0 = _centroid(rgb0)
    assert u0 == pytest.approx(INTR.cx, abs=0.5)
    assert v0 == pytest.approx(INTR.cy - INTR.fy * math.tan(math.radians(10.0)), abs=0.5)


def test_roll_and_arbitrary_attitude_match_pinhole_projection():
    pts = [(-12.0, 10.0), (10.0, -6.0), (15.0, 12.0), (-4.0, -15.0)]
    gmap = _marker_map(pts)
    # roll +8 (right wing down) looks to the left of track: a point 100*tan(8) m west appears at the centre
    west = 100.0 * math.tan(math.radians(8.0))
    gm2 = _marker_map([(-west, 0.0)])
    u, v = _centroid(render_view(gm2, _pose_at(0.0, 0.0, 100.0, 0.0, roll=8.0), INTR)[0])
    assert u == pytest.approx(INTR.cx, abs=0.6) and v == pytest.approx(INTR.cy, abs=0.6)
    pose = _pose_at(3.0, -4.0, 90.0, 123.0, pitch=6.0, roll=-4.0)
    rgb, _ = render_view(gmap, pose, INTR)
    e0, n0 = 3.0, -4.0
    for e, n in pts:
        pu, pv = _project(pose, e - e0, n - n0)
        assert 5 < pu < INTR.width - 5 and 5 < pv < INTR.height - 5
        win = np.zeros_like(rgb)
        r0, c0 = int(pv) - 12, int(pu) - 12
        win[r0:r0 + 25, c0:c0 + 25] = rgb[r0:r0 + 25, c0:c0 + 25]
        u, v = _centroid(win)
        assert (u, v) == pytest.approx((pu, pv), abs=0.15)


def test_off_map_pixels_are_invalid_and_black(position_map):
    # 40 m west of the map's east edge (x = +128 m): the right part of the frame sees nothing
    alt = 100.0
    rgb, valid = render_view(position_map, _pose_at(88.0, 0.0, alt, 0.0), INTR)
    edge_u = INTR.cx + INTR.fx * 40.0 / alt
    cols_valid = valid.all(axis=0)
    first_invalid = int(np.argmin(cols_valid))
    assert not cols_valid[-1] and cols_valid[0]
    assert first_invalid == pytest.approx(edge_u, abs=1.5)
    assert (rgb[~valid] == 0).all()
    assert 0.5 < valid.mean() < 0.95


def test_supersample_agrees_with_plain_render(position_map):
    pose = _pose_at(5.0, 5.0, 100.0, 17.0, 3.0, 2.0)
    a, va = render_view(position_map, pose, INTR)
    b, vb = render_view(position_map, pose, INTR, supersample=2)
    assert va.all() and vb.all()
    assert np.abs(a.astype(int) - b.astype(int))[..., :2].mean() < 1.0
    with pytest.raises(ConfigError):
        render_view(position_map, pose, INTR, supersample=0)


# ------------------------------------------------------------------------------------------------ flights

def _leg_waypoints() -> list[tuple[float, float]]:
    a = geo.offset_latlon(LAT0, LON0, 0.0, 0.0)
    b = geo.offset_latlon(LAT0, LON0, 0.0, 300.0)
    c = geo.offset_latlon(LAT0, LON0, 200.0, 300.0)
    return [a, b, c]


def test_flight_path_spacing_timing_and_heading():
    poses = flight_path(_leg_waypoints(), alt_m=120.0, speed_mps=12.0, fps=3.0, t0=5.0)
    step = 4.0
    total = float(geo.distance_m(*_leg_waypoints()[0], *_leg_waypoints()[1])
                  + geo.distance_m(*_leg_waypoints()[1], *_leg_waypoints()[2]))
    assert len(poses) == int(total // step) + 1
    lat = np.array([p.lat for p in poses])
    lon = np.array([p.lon for p in poses])
    d = geo.distance_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    hd = np.array([p.heading_deg for p in poses])
    az = geo.azimuth_deg(lat[:-1], lon[:-1], lat[1:], lon[1:])
    first_leg = np.arange(len(poses) - 1) < 74  # frames 0..74 are on the 300 m northbound leg
    assert np.allclose(d[first_leg], step, atol=1e-6)
    assert np.allclose(d[~first_leg][1:], step, atol=1e-6)  # (the frame pair across the corner is shorter)
    assert np.abs(geo.heading_diff_deg(hd[:-1][first_leg], 0.0)).max() < 0.01
    assert np.abs(geo.heading_diff_deg(hd[:-1][~first_leg][1:], 90.0)).max() < 0.05
    assert np.abs(geo.heading_diff_deg(hd[:-1], az))[first_leg].max() < 0.01
    assert np.allclose(np.diff([p.t for p in poses]), 1.0 / 3.0) and poses[0].t == 5.0
    assert all(p.alt_m == 120.0 and p.pitch_deg == 0.0 and p.roll_deg == 0.0 for p in poses)
    assert (poses[0].lat, poses[0].lon) == pytest.approx(_leg_waypoints()[0], abs=1e-12)


def test_flight_path_heading_modes_tilt_and_determinism():
    wps = _leg_waypoints()
    a = flight_path(wps, 100.0, 10.0, 2.0, heading="random", tilt_std_deg=5.0, max_tilt_deg=8.0, alt_jitter_m=2.0,
                    seed=3)
    b = flight_path(wps, 100.0, 10.0, 2.0, heading="random", tilt_std_deg=5.0, max_tilt_deg=8.0, alt_jitter_m=2.0,
                    seed=3)
    c = flight_path(wps, 100.0, 10.0, 2.0, heading="random", tilt_std_deg=5.0, max_tilt_deg=8.0, alt_jitter_m=2.0,
                    seed=4)
    assert a == b and a != c
    pitch = np.array([p.pitch_deg for p in a])
    roll = np.array([p.roll_deg for p in a])
    assert np.abs(pitch).max() <= 8.0 and np.abs(roll).max() <= 8.0 and 3.0 < pitch.std() < 6.0
    hd = np.array([p.heading_deg for p in a])
    assert ((hd >= 0) & (hd < 360)).all() and hd.std() > 60
    assert np.std([p.alt_m for p in a]) > 1.0
    fixed = flight_path(wps, 100.0, 10.0, 2.0, heading=45.0)
    assert all(p.heading_deg == 45.0 for p in fixed)
    walk = flight_path(wps, 100.0, 10.0, 2.0, heading="random_walk", heading_rate_dps=10.0, seed=1)
    steps = np.abs(geo.heading_diff_deg([p.heading_deg for p in walk[1:]], [p.heading_deg for p in walk[:-1]]))
    assert steps.max() < 25.0 and steps.mean() > 0.5
    with pytest.raises(ConfigError):
        flight_path(wps, 100.0, 10.0, 2.0, heading="sideways")
    with pytest.raises(ConfigError):
        flight_path(wps[:1], 100.0, 10.0, 2.0)
    with pytest.raises(ConfigError):
        flight_path(wps, 100.0, 0.0, 2.0)


@pytest.fixture(scope="module")
def textured_map():
    """A 600 m x 600 m smooth random texture at 2 m/px (bilinear-friendly, not position-encoded)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    big = cv2.resize(small, (300, 300), interpolation=cv2.INTER_CUBIC)
    return _grid_map(big, 2.0, "texture", utm=True)


def test_lawnmower_and_random_poses_stay_over_the_map(textured_map):
    wps = lawnmower_waypoints(textured_map, alt_m=100.0, margin_m=60.0, spacing_m=100.0)
    xmin, ymin, xmax, ymax = textured_map.bounds()
    lat = np.array([w[0] for w in wps])
    lon = np.array([w[1] for w in wps])
    x, y = geo.transform(lon, lat, geo.WGS84, textured_map.working_crs)
    assert len(wps) >= 10 and len(wps) % 2 == 0
    assert (x >= xmin + 60 - 1e-6).all() and (x <= xmax - 60 + 1e-6).all()
    assert (y >= ymin + 60 - 1e-6).all() and (y <= ymax - 60 + 1e-6).all()
    # passes alternate direction and are spacing_m apart
    assert np.allclose(np.abs(np.diff(y[::2])), 100.0, atol=1e-6) or np.allclose(np.abs(np.diff(x[::2])), 100.0,
                                                                               atol=1e-6)
    poses = flight_path(wps, 100.0, 20.0, 0.5)
    assert len(poses) > 20
    poses = random_poses(textured_map, 6, alt_range=(80.0, 120.0), max_tilt_deg=10.0, seed=2, intr=INTR)
    assert len(poses) == 6 and poses == random_poses(textured_map, 6, (80.0, 120.0), 10.0, seed=2, intr=INTR)
    for p in poses:
        assert 80 <= p.alt_m <= 120 and abs(p.pitch_deg) <= 10 and abs(p.roll_deg) <= 10
        _, valid = render_view(textured_map, p, INTR)
        assert valid.mean() > 0.95
    with pytest.raises(ConfigError):  # footprint larger than the map
        random_poses(textured_map, 2, alt_range=(2000.0, 3000.0), intr=INTR)
    # only an 80 m x 80 m patch of the map is valid: no 100 m frame fits, the search gives up
    rgb = np.full((300, 300, 3), 90, np.uint8)
    valid = np.zeros((300, 300), bool)
    valid[130:170, 130:170] = True
    t = textured_map.sources[0].transform
    holes = maps.map_from_array(rgb, textured_map.sources[0].crs, t, name="holes", valid=valid)
    with pytest.raises(ConfigError, match="found only 0 of 1"):
        random_poses(holes, 1, alt_range=(100.0, 110.0), intr=INTR)


# --------------------------------------------------------------------------------------------- photometry

@pytest.fixture(scope="module")
def sample_image(textured_map):
    return render_view(textured_map, _pose_at(0.0, 0.0, 100.0, 0.0), INTR)[0]


def test_photometric_identity_at_strength_zero(sample_image):
    p = random_photometric(np.random.default_rng(1), 0.0)
    assert p == Photometric() and p.is_identity
    out = apply_photometric(sample_image, p)
    assert out is not sample_image and np.array_equal(out, sample_image)


def test_random_photometric_changes_stats_and_is_deterministic(sample_image):
    diffs = []
    for s in range(6):
        p = random_photometric(np.random.default_rng(s), 1.0)
        assert not p.is_identity
        a = apply_photometric(sample_image, p, np.random.default_rng(100 + s))
        b = apply_photometric(sample_image, random_photometric(np.random.default_rng(s), 1.0),
                              np.random.default_rng(100 + s))
        assert np.array_equal(a, b)
        diffs.append(np.abs(a.astype(int) - sample_image.astype(int)).mean())
    assert min(diffs) > 1.0 and np.mean(diffs) > 4.0
    weak = [np.abs(apply_photometric(sample_image, random_photometric(np.random.default_rng(s), 0.2)).astype(int)
                   - sample_image.astype(int)).mean() for s in range(6)]
    assert np.mean(weak) < np.mean(diffs)


def test_photometric_operations(sample_image):
    grey = np.full((40, 40, 3), 100, np.uint8)
    assert apply_photometric(grey, Photometric(brightness=0.1)).mean() == pytest.approx(125.5, abs=1.0)
    img = sample_image
    lo = apply_photometric(img, Photometric(contrast=0.5)).astype(float)
    assert lo.std() == pytest.approx(img.astype(float).std() * 0.5, rel=0.05)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    green = apply_photometric(red, Photometric(hue_shift_deg=120.0))
    assert green[..., 1].min() > 190 and green[..., 0].max() < 10
    g = apply_photometric(img, Photometric(saturation=0.0)).astype(int)
    assert np.abs(g[..., 0] - g[..., 1]).max() <= 1 and np.abs(g[..., 1] - g[..., 2]).max() <= 1
    noisy = apply_photometric(grey, Photometric(noise_std=8.0), np.random.default_rng(0)).astype(float)
    assert noisy.std() == pytest.approx(8.0, rel=0.1)
    dark = apply_photometric(grey, Photometric(gamma=2.0))
    assert dark.mean() == pytest.approx(255 * (100 / 255) ** 2, abs=1.0)
    blurred = apply_photometric(img, Photometric(blur_sigma=2.0))
    assert np.abs(np.diff(blurred.astype(float), axis=1)).mean() < np.abs(np.diff(img.astype(float), axis=1)).mean()
    jpg = apply_photometric(img, Photometric(jpeg_quality=30))
    assert jpg.shape == img.shape and not np.array_equal(jpg, img)
    with pytest.raises(ConfigError):
        Photometric(contrast=0.0)
    with pytest.raises(ConfigError):
        Photometric(jpeg_quality=0)
    with pytest.raises(ConfigError):
        random_photometric(np.random.default_rng(0), -1.0)
    with pytest.raises(InputError):
        apply_photometric(np.zeros((4, 4), np.uint8), Photometric(brightness=0.1))


# ---------------------------------------------------------------------------------------------- simulate

def test_simulate_flight(textured_map):
    wps = [geo.offset_latlon(LAT0, LON0, -40.0, 0.0), geo.offset_latlon(LAT0, LON0, 40.0, 0.0)]
    poses = flight_path(wps, 100.0, 20.0, 1.0, seed=0)
    frames = list(simulate_flight(textured_map, poses, INTR, photometric_strength=1.0, seed=5))
    assert [f.pose for f in frames] == poses
    again = list(simulate_flight(textured_map, poses, INTR, photometric_strength=1.0, seed=5))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again))
    plain = list(simulate_flight(textured_map, poses, INTR, photometric_strength=0.0))
    for f, q in zip(frames, plain):
        assert f.valid_fraction == 1.0 and f.image.shape == (240, 320, 3)
        assert np.array_equal(q.image, render_view(textured_map, q.pose, INTR)[0])
        assert not np.array_equal(f.image, q.image)
    # a frame half off the map is yielded with its valid fraction (and black there) unless min_valid drops it
    off = [_pose_at(300.0, 0.0, 100.0, 0.0)]
    (pose, img, frac), = list(simulate_flight(textured_map, off, INTR, seed=1))
    assert 0.3 < frac < 0.7 and (img[:, -5:] == 0).all()
    assert list(simulate_flight(textured_map, off, INTR, min_valid=0.9)) == []


def test_pose_validation():
    with pytest.raises(ConfigError):
        Pose(0.0, 60.0, 22.0, -5.0, 0.0)
    with pytest.raises(ConfigError):
        Pose(0.0, 95.0, 22.0, 50.0, 0.0)
    with pytest.raises(ConfigError):
        Pose(0.0, 60.0, 22.0, 50.0, float("nan"))
