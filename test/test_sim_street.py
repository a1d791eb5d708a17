"""Street-level renderer (gleam_ros.core.sim.street): geometry against closed-form predictions, seasons,
road poses, bad input, and the CLI views."""

import csv
import json
import math

import affine
import cv2
import numpy as np
import pytest

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.sim.street import (
    KIND_CROWN,
    KIND_FAR,
    KIND_GROUND,
    KIND_ROOF,
    KIND_SKY,
    KIND_WALL,
    GroundPose,
    StreetScene,
    ground_layers,
    panorama_layers,
    pose_latlon,
    render_ground,
    render_panorama,
    road_poses,
)
from gleam_ros.core.sim.world import CLASSES, WorldConfig, make_world

GSD = 0.25
SIDE = 800  # pixels: a 200 m square scene
E0, N0 = 500000.0, 6700000.0  # UTM 34N corner (west, north)
CAM = (E0 + 100.0, N0 - 100.0)  # the scene centre
CRS = "EPSG:32634"


def _scene(boxes, road=None, season="summer"):
    """A flat grass scene with axis-aligned boxes (x0, y0, x1, y1 UTM metres, height m), pixel-edge aligned."""
    height = np.zeros((SIDE, SIDE), np.float32)
    label = np.full((SIDE, SIDE), CLASSES["grass"], np.uint8)
    rgb = np.full((SIDE, SIDE, 3), (90, 120, 60), np.uint8)
    bid = np.zeros((SIDE, SIDE), np.int32)
    for k, (x0, y0, x1, y1, h) in enumerate(boxes, 1):
        c0, c1 = round((x0 - E0) / GSD), round((x1 - E0) / GSD)
        r0, r1 = round((N0 - y1) / GSD), round((N0 - y0) / GSD)
        height[r0:r1, c0:c1] = h
        label[r0:r1, c0:c1] = CLASSES["building"]
        rgb[r0:r1, c0:c1] = (150, 60, 50)
        bid[r0:r1, c0:c1] = k
    t = affine.Affine(GSD, 0, E0, 0, -GSD, N0)
    return StreetScene(height, label, rgb, t, CRS, building_id=bid, road_kind=road, season=season)


def _box_north(dist, half_w, h, depth=10.0, dx=0.0):
    x, y = CAM
    return (x + dx - half_w, y + dist, x + dx + half_w, y + dist + depth, h)


INTR = CameraIntrinsics(640, 480, 500.0, 500.0, 319.5, 239.5)


def _first_row(mask_col):
    rows = np.flatnonzero(mask_col)
    return int(rows[0]) if len(rows) else None


def test_building_lands_on_predicted_rows_and_columns():
    D, H, hw, c = 20.0, 10.0, 5.0, 1.6
    scene = _scene([_box_north(D, hw, H)])
    lay = ground_layers(scene, GroundPose(*CAM, heading_deg=0.0, height_m=c), INTR)
    wall = lay.kind == KIND_WALL
    # the front face is a plane facing the camera: its top edge is one row, its bottom edge another
    v_top = INTR.cy - INTR.fy * (H - c) / D  # 29.5: rows from 30 down are wall
    v_bot = INTR.cy + INTR.fy * c / D  # 279.5
    for u in (220, 320, 420):
        rows = np.flatnonzero(wall[:, u])
        assert abs(rows[0] - (v_top + 0.5)) <= 1.0, (u, rows[0], v_top)
        assert abs(rows[-1] - (v_bot - 0.5)) <= 1.0, (u, rows[-1], v_bot)
    # left / right edges: u = cx -+ fx * hw / D
    cols = np.flatnonzero(wall[150])
    assert abs(cols[0] - (INTR.cx - INTR.fx * hw / D + 0.5)) <= 1.0, cols[0]
    assert abs(cols[-1] - (INTR.cx + INTR.fx * hw / D - 0.5)) <= 1.0, cols[-1]
    # the facade distance is the truth, the image shows it: sky above, a facade colour below the top edge
    # depth is the distance along the ground: D / cos(azimuth off the axis)
    for u in (200, 320, 440):
        expect = D / math.cos(math.atan((u - INTR.cx) / INTR.fx))
        assert np.allclose(lay.depth_m[wall[:, u], u], expect, atol=0.03), u
    assert (lay.kind[:25, 320] == KIND_SKY).all()
    assert np.abs(lay.rgb[40, 320].astype(int) - lay.rgb[20, 320].astype(int)).sum() > 60


def test_heading_zero_looks_north_ninety_east():
    c = 1.6
    north = _box_north(40.0, 3.0, 20.0)
    x, y = CAM
    east = (x + 40.0, y - 3.0, x + 50.0, y + 3.0, 12.0)
    scene = _scene([north, east])
    tops = {}
    for hd in (0.0, 90.0, 180.0, 270.0):
        lay = ground_layers(scene, GroundPose(x, y, heading_deg=hd, height_m=c), INTR)
        tops[hd] = _first_row(lay.kind[:, 320] == KIND_WALL)
    assert tops[0] == pytest.approx(INTR.cy - INTR.fy * (20.0 - c) / 40.0 + 0.5, abs=1.0)
    assert tops[90] == pytest.approx(INTR.cy - INTR.fy * (12.0 - c) / 40.0 + 0.5, abs=1.0)
    assert tops[180] is None and tops[270] is None  # behind the camera / nothing west


def _ray_box(az_deg, box):
    """Distance along the ground from CAM to an axis-aligned box along azimuth az (slab method), or None."""
    x0, y0, x1, y1, _ = box
    dx, dy = math.sin(math.radians(az_deg)), math.cos(math.radians(az_deg))
    lo, hi = 0.0, 1e9
    for o, d, a, b in ((CAM[0], dx, x0, x1), (CAM[1], dy, y0, y1)):
        if abs(d) < 1e-12:
            if not a <= o <= b:
                return None
            continue
        t0, t1 = sorted(((a - o) / d, (b - o) / d))
        lo, hi = max(lo, t0), min(hi, t1)
    return lo if lo <= hi else None


def test_panorama_column_maps_to_azimuth():
    x, y = CAM
    az_c, r = 60.0, 40.0
    cx, cy = x + r * math.sin(math.radians(az_c)), y + r * math.cos(math.radians(az_c))
    box = (cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5, 20.0)
    scene = _scene([box])
    W, Hh, hd, c = 1024, 512, 10.0, 1.6
    lay = panorama_layers(scene, GroundPose(x, y, heading_deg=hd, height_m=c), W, Hh)
    wall_cols = np.flatnonzero((lay.kind == KIND_WALL).any(axis=0))
    corners = [(box[0], box[1]), (box[0], box[3]), (box[2], box[1]), (box[2], box[3])]
    azs = [math.degrees(math.atan2(px - x, py - y)) for px, py in corners]
    to_col = lambda a: (a - hd + 180.0) / 360.0 * W - 0.5  # noqa: E731
    assert wall_cols[0] == pytest.approx(to_col(min(azs)) + 0.5, abs=1.0)
    assert wall_cols[-1] == pytest.approx(to_col(max(azs)) - 0.5, abs=1.0)
    # the centre column of the box: its top edge row from the near face's distance
    u = int(round(to_col(az_c)))
    az_u = hd + 360.0 * (u + 0.5) / W - 180.0
    t = _ray_box(az_u, box)
    el = math.degrees(math.atan2(20.0 - c, t))
    v_top = (90.0 - el) / 180.0 * Hh - 0.5
    assert _first_row(lay.kind[:, u] == KIND_WALL) == pytest.approx(v_top + 0.5, abs=1.0)
    # the same box straight ahead in a panorama looking at it: centre column
    lay2 = panorama_layers(scene, GroundPose(x, y, heading_deg=az_c, height_m=c), W, Hh)
    cols2 = np.flatnonzero((lay2.kind == KIND_WALL).any(axis=0))
    assert (cols2[0] + cols2[-1]) / 2 == pytest.approx(W / 2 - 0.5, abs=1.0)
    assert render_panorama(scene, GroundPose(x, y, heading_deg=hd, height_m=c), W, Hh).shape == (Hh, W, 3)
    # a panorama camera pitched up by p sees the box's top edge p degrees lower, in its own frame
    u0 = W // 2
    t0 = _ray_box(az_c + 360.0 * (u0 + 0.5) / W - 180.0, box)
    el0 = math.degrees(math.atan2(20.0 - c, t0))
    for pitch in (0.0, 10.0):
        lay3 = panorama_layers(scene, GroundPose(x, y, heading_deg=az_c, height_m=c, pitch_deg=pitch), W, Hh)
        v = (90.0 - (el0 - pitch)) / 180.0 * Hh - 0.5
        assert _first_row(lay3.kind[:, u0] == KIND_WALL) == pytest.approx(v + 0.5, abs=1.0), pitch


def test_beyond_the_edge_the_world_continues_mirrored():
    edge = E0 + SIDE * GSD  # the east edge
    y = CAM[1]
    box = (edge - 35.0, y - 5.0, edge - 25.0, y + 5.0, 10.0)
    scene = _scene([box])
    c = 1.6
    lay = ground_layers(scene, GroundPose(edge - 10.0, y, heading_deg=90.0, height_m=c), INTR)
    col = lay.kind[:, 320]
    # the box's mirror image: its near face 25 m beyond the edge, 35 m from the camera, marked as such
    first = _first_row(col != KIND_SKY)
    assert first == pytest.approx(INTR.cy - INTR.fy * (10.0 - c) / 35.0 + 0.5, abs=1.0)
    assert (col[first:first + 20] == KIND_FAR).all()
    assert lay.depth_m[first + 5, 320] == pytest.approx(35.0, abs=0.05)
    assert not (lay.kind == KIND_WALL).any()  # the real box is behind the camera
    # the ground beyond the edge is the world's ground (grass), not a void
    below = slice(262, 300)  # 30..40 m away, beyond the edge, left of the mirrored box
    assert (lay.kind[below, 100] == KIND_FAR).all()
    g = lay.rgb[below, 100].astype(int)
    assert (g[:, 1] > g[:, 0] + 10).all() and (g[:, 1] > g[:, 2] + 10).all()  # green: grass


def _row_where_depth_passes(depth_col, dist):
    """Fractional row (from the bottom up) where the ground depth first exceeds ``dist``."""
    rows = np.flatnonzero(depth_col > dist)
    return int(rows[-1]) + 0.5  # the boundary just below the last row beyond dist


def test_pitch_and_roll_move_the_horizon_as_predicted():
    scene = _scene([(CAM[0] - 60, CAM[1] - 60, CAM[0] - 58, CAM[1] - 58, 5.0)])  # one post behind, far aside
    c, dist = 1.6, 20.0
    el = -math.atan2(c, dist)  # rays that meet the ground 20 m away
    x, y = CAM
    for pitch in (-8.0, 0.0, 12.0):
        lay = ground_layers(scene, GroundPose(x, y, 0.0, c, pitch_deg=pitch), INTR)
        v = INTR.cy - INTR.fy * math.tan(el - math.radians(pitch))
        assert _row_where_depth_passes(lay.depth_m[:, 320], dist) == pytest.approx(v, abs=1.0), pitch
    # roll: the line of 20 m ground distance (parallel to the horizon) tilts; right side down = rises to the right
    roll = 10.0
    lay = ground_layers(scene, GroundPose(x, y, 0.0, c, roll_deg=roll), INTR)
    r = math.radians(roll)
    for u in (120, 520):
        xn = (u - INTR.cx) / INTR.fx
        # ray (xn, yn, 1): up component = -(xn sin r + yn cos r); elevation el <=> up / |ray| = sin(el)
        # solve -(xn sin r + yn cos r) = tan(el) * sqrt(1 + xn^2 + yn^2 - up^2) numerically
        yn = np.linspace(-1, 1, 200001)
        up = -(xn * math.sin(r) + yn * math.cos(r))
        horiz = np.sqrt(np.maximum(1 + xn * xn + yn * yn - up * up, 1e-12))
        yv = yn[np.argmin(np.abs(np.arctan2(up, horiz) - el))]
        v = INTR.cy + INTR.fy * yv
        assert _row_where_depth_passes(lay.depth_m[:, u], dist) == pytest.approx(v, abs=1.0), u
    left = _row_where_depth_passes(lay.depth_m[:, 120], dist)
    right = _row_where_depth_passes(lay.depth_m[:, 520], dist)
    assert right < left - 50  # the horizon rises towards the right edge


@pytest.fixture(scope="module")
def world():
    return make_world(WorldConfig(seed=5, size_m=240.0, gsd_m=0.4))


def test_free_standing_tree_shows_what_is_behind_under_its_crown():
    x, y = CAM
    scene = _scene([_box_north(30.0, 8.0, 8.0)])  # a building 30 m north
    rr, cc = np.mgrid[0:SIDE, 0:SIDE]
    px, py = E0 + (cc + 0.5) * GSD, N0 - (rr + 0.5) * GSD
    crown = np.hypot(px - x, py - (y + 15.0)) < 3.0  # a tree 15 m north, crown radius 3 m, 10 m high
    tree_id = np.where(crown, 1, 0).astype(np.int32)
    height = np.where(crown, np.float32(10.0), scene.height)
    lay = {}
    for ground in ("grass", "forest"):
        label = scene.label.copy()
        label[crown] = CLASSES[ground]
        sc = StreetScene(height, label, scene.top_rgb, scene.transform, CRS, building_id=scene.building_id,
                         tree_id=tree_id)
        lay[ground] = ground_layers(sc, GroundPose(x, y, 0.0, 1.6), INTR)
    u = int(round(INTR.cx + INTR.fx * 1.5 / 15.0))  # 1.5 m beside the trunk
    free, forest = lay["grass"].kind[:, u], lay["forest"].kind[:, u]
    assert (free == KIND_CROWN).any() and (forest == KIND_CROWN).any()
    # the free-standing tree: the building shows under the crown, at its own distance
    below = np.flatnonzero(free == KIND_WALL)
    assert len(below) > 10 and below.min() > np.flatnonzero(free == KIND_CROWN).min()
    assert lay["grass"].depth_m[below, u].min() > 29.0
    # the trunk stays in front (centre column), and a forest tree keeps its undergrowth: no building behind it
    assert (lay["grass"].kind[:, 320] == KIND_CROWN).sum() > (free == KIND_CROWN).sum()
    assert not (forest == KIND_WALL).any()


def test_seasons_differ_in_colour_not_geometry(world):
    rng = np.random.default_rng(1)
    pose = road_poses(world, 1, rng)[0]
    summer = StreetScene.from_world(world, season="summer")
    winter = StreetScene.from_world(world, season="winter")
    a = panorama_layers(summer, pose, 512, 256)
    b = panorama_layers(winter, pose, 512, 256)
    assert np.array_equal(a.kind, b.kind)
    assert np.array_equal(a.depth_m, b.depth_m)
    ground = a.kind == KIND_GROUND
    diff = np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean(axis=2)
    assert diff[ground].mean() > 25  # snow vs grass and asphalt
    # the world has things standing up, and the panorama shows them
    assert np.isin(a.kind, (KIND_WALL, KIND_ROOF, KIND_CROWN)).mean() > 0.005


def test_road_poses_on_roads_along_the_road(world):
    rng = np.random.default_rng(2)
    poses = road_poses(world, 40, rng)
    scene = StreetScene.from_world(world)
    rk, hgt = world.layers["road_kind"], world.layers["height"]
    along_ok = 0
    for p in poses:
        col, row = scene.to_pixel(p.x, p.y)
        i, j = int(row), int(col)
        assert rk[i, j] in (1, 2) and hgt[i, j] == 0
        r = int(math.ceil(1.5 / world.cfg.gsd_m))
        assert (hgt[i - r:i + r + 1, j - r:j + r + 1] == 0).all()
        assert 1.2 <= p.height_m <= 3.0
        # 4 m ahead and behind along the heading is still road
        hx, hy = math.sin(math.radians(p.heading_deg)), math.cos(math.radians(p.heading_deg))
        pts = [scene.to_pixel(p.x + s * hx, p.y + s * hy) for s in (-4.0, 4.0)]
        along_ok += all(0 <= int(rr) < rk.shape[0] and 0 <= int(cc) < rk.shape[1] and rk[int(rr), int(cc)] > 0
                        for cc, rr in pts)
        scene.check_pose(p)  # on open ground: renders
    assert along_ok >= 0.9 * len(poses)
    # region keeps poses inside it
    xmin, ymin, xmax, ymax = world.bounds()
    region = (xmin, ymin, (xmin + xmax) / 2, ymax)
    for p in road_poses(world, 20, rng, region=region):
        assert xmin <= p.x <= region[2]
    lat, lon = pose_latlon(world, poses[0])
    assert abs(lat - world.cfg.origin_lat) < 0.01 and abs(lon - world.cfg.origin_lon) < 0.01


def test_road_poses_heading_on_a_straight_road():
    # a straight 8 m road at azimuth 30 degrees through the centre
    rr, cc = np.mgrid[0:SIDE, 0:SIDE]
    x = (cc + 0.5) * GSD - 100.0
    y = 100.0 - (rr + 0.5) * GSD
    a = math.radians(30.0)
    across = np.abs(x * math.cos(a) - y * math.sin(a))
    road = np.where(across < 4.0, 2, 0).astype(np.uint8)
    scene = _scene([(CAM[0] + 60, CAM[1] - 90, CAM[0] + 70, CAM[1] - 80, 6.0)], road=road)
    poses = road_poses(scene, 30, np.random.default_rng(3), heading_jitter_deg=0.0, height_m=1.6)
    for p in poses:
        d = (p.heading_deg - 30.0) % 180.0
        assert min(d, 180.0 - d) < 2.0, p.heading_deg
        assert p.height_m == 1.6


def test_bad_input_names_the_argument():
    scene = _scene([_box_north(20.0, 5.0, 10.0)])
    x, y = CAM
    with pytest.raises(InputError, match="outside the world"):
        render_ground(scene, GroundPose(x + 500.0, y, 0.0), INTR)
    with pytest.raises(ConfigError, match="height_m"):
        GroundPose(x, y, 0.0, height_m=0.5)
    with pytest.raises(ConfigError, match="height_m"):
        GroundPose(x, y, 0.0, height_m=-1.0)  # below ground
    with pytest.raises(ConfigError, match="height_m"):
        GroundPose(x, y, 0.0, height_m=3.5)
    with pytest.raises(ConfigError, match="pitch_deg"):
        GroundPose(x, y, 0.0, pitch_deg=40.0)
    with pytest.raises(ConfigError, match="heading_deg"):
        GroundPose(x, y, float("nan"))
    with pytest.raises(InputError, match="inside building 1"):
        render_panorama(scene, GroundPose(x, y + 25.0, 0.0), 256, 128)
    dist = CameraIntrinsics(640, 480, 500.0, 500.0, 319.5, 239.5, "plumb_bob", (0.1, 0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="intr"):
        render_ground(scene, GroundPose(x, y, 0.0), dist)
    with pytest.raises(ConfigError, match="intr"):
        render_ground(scene, GroundPose(x, y, 0.0), (640, 480, 500.0))
    with pytest.raises(ConfigError, match="width"):
        render_panorama(scene, GroundPose(x, y, 0.0), 0, 128)
    flat = np.zeros((64, 64), np.float32)
    with pytest.raises(ConfigError, match="height layer is all zero"):
        StreetScene(flat, np.full((64, 64), 6, np.uint8), np.zeros((64, 64, 3), np.uint8),
                    affine.Affine(GSD, 0, E0, 0, -GSD, N0), CRS)
    with pytest.raises(ConfigError, match="label"):
        StreetScene(scene.height, np.zeros((3, 3), np.uint8), scene.top_rgb, scene.transform, CRS)
    with pytest.raises(ConfigError, match="road_kind"):
        road_poses(scene, 3, np.random.default_rng(0))


def test_inside_a_tree_is_refused(world):
    scene = StreetScene.from_world(world)
    ii, jj = np.nonzero(world.layers["tree_id"] > 0)
    t = world.transform
    x, y = t.c + (jj[0] + 0.5) * t.a, t.f + (ii[0] + 0.5) * t.e
    with pytest.raises(InputError, match="inside tree"):
        render_ground(scene, GroundPose(x, y, 0.0), INTR)


def test_world_without_heights_is_refused(world):
    import copy

    flat = copy.copy(world)
    flat.layers = dict(world.layers, height=np.zeros_like(world.layers["height"]))
    with pytest.raises(ConfigError, match="height layer is all zero"):
        StreetScene.from_world(flat)


def test_cli_world_views_and_street_simulate(tmp_path, capsys):
    from gleam_ros.cli import main
    from gleam_ros.core.flight import load_flight

    wd = tmp_path / "world"
    assert main(["world", "--out", str(wd), "--seed", "4", "--size", "200", "--variant-season", "", "--views", "2"]) == 0
    rows = list(csv.DictReader((wd / "views.csv").open()))
    assert [r["modality"] for r in rows] == ["ground", "ground", "panorama", "panorama"]
    for r in rows:
        img = cv2.imread(str(wd / r["image"]))
        assert img.shape == ((480, 640, 3) if r["modality"] == "ground" else (512, 1024, 3))
        assert 1.2 <= float(r["height_m"]) <= 3.0 and abs(float(r["lat"]) - 60.45) < 0.01
    assert float(rows[0]["fx"]) == pytest.approx(320.0 / math.tan(math.radians(35.0)))
    # street-level frames of that world, regenerated from world.json, with the pose of every frame
    out = tmp_path / "pano"
    assert main(["simulate", "--world", str(wd), "--modality", "panorama", "--frames", "2", "--season", "winter",
                 "--width", "256", "--out", str(out)]) == 0
    flight = load_flight(out)  # the UAV flight-folder reader takes it
    assert len(flight) == 2 and flight.intrinsics.width == 256 and flight.intrinsics.height == 128
    cam = json.loads((out / "camera.json").read_text())
    assert cam["projection"] == "equirectangular" and cam["season"] == "winter"
    gt = list(csv.DictReader((out / "ground_truth.csv").open()))
    world = make_world(WorldConfig(seed=4, size_m=200.0))
    scene = StreetScene.from_world(world)
    for r in gt:  # the recorded pose is on a road of the regenerated world, and matches lat/lon
        p = GroundPose(float(r["x"]), float(r["y"]), float(r["heading_deg"]), float(r["alt_m"]))
        col, row = scene.to_pixel(p.x, p.y)
        assert world.layers["road_kind"][int(row), int(col)] in (1, 2)
        assert pose_latlon(world, p) == pytest.approx((float(r["lat"]), float(r["lon"])), abs=1e-7)
    # bad input: a folder that is not a world, ground frames without a world
    assert main(["simulate", "--world", str(tmp_path), "--modality", "ground", "--out", str(tmp_path / "x")]) == 2
    assert "world.json" in capsys.readouterr().err
    assert main(["simulate", "--map", str(wd / "satellite.tif"), "--modality", "ground",
                 "--out", str(tmp_path / "y")]) == 2
    assert "--world" in capsys.readouterr().err
