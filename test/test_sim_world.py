"""Procedural world: determinism, content, shadows, street-map alignment, GeoTIFF output, seasons."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import cv2
import numpy as np
import pytest

from gleam_ros.core import geo, maps
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.sim.world import (
    CLASSES,
    LAYER_DOC,
    STREET_ROAD_COLOURS,
    World,
    WorldConfig,
    make_world,
    write_world,
)

CFG = WorldConfig(seed=7, size_m=400.0, gsd_m=0.5)


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(CFG)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(float)


def test_same_seed_gives_identical_arrays(world):
    again = make_world(CFG)
    assert np.array_equal(world.satellite, again.satellite)
    assert np.array_equal(world.street_map, again.street_map)
    assert world.layers.keys() == again.layers.keys() == LAYER_DOC.keys()
    for k in world.layers:
        assert np.array_equal(world.layers[k], again.layers[k]), k
    assert np.array_equal(world.variant(), world.satellite)


def test_different_seed_gives_a_different_place(world):
    other = make_world(replace(CFG, seed=8))
    assert (other.layers["label"] != world.layers["label"]).mean() > 0.3
    assert np.abs(other.satellite.astype(int) - world.satellite.astype(int)).mean() > 10


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_class_present_with_plausible_share(seed):
    w = make_world(WorldConfig(seed=seed, size_m=300.0, gsd_m=1.0))
    fr = w.class_fractions()
    assert set(fr) == set(CLASSES)
    assert sum(fr.values()) == pytest.approx(1.0)
    for name, share in fr.items():
        lo = 0.002 if name == "building" else 0.01
        assert lo < share < 0.7, (name, share)
    assert fr["field"] + fr["forest"] + fr["grass"] > 0.5
    assert w.n_buildings >= 3


def test_georeferencing(world):
    n = int(round(CFG.size_m / CFG.gsd_m))
    assert world.satellite.shape == world.street_map.shape == (n, n, 3)
    assert world.satellite.dtype == world.street_map.dtype == np.uint8
    assert world.crs == geo.utm_crs_for(CFG.origin_lat, CFG.origin_lon)
    t = world.transform
    assert (t.a, t.b, t.d, t.e) == (CFG.gsd_m, 0.0, 0.0, -CFG.gsd_m)
    xmin, ymin, xmax, ymax = world.bounds()
    assert xmax - xmin == pytest.approx(CFG.size_m) and ymax - ymin == pytest.approx(CFG.size_m)
    # the world centre (pixel corner n/2, n/2) is the configured origin
    lat, lon = world.pixel_to_latlon(n / 2 - 0.5, n / 2 - 0.5)
    assert geo.distance_m(lat, lon, CFG.origin_lat, CFG.origin_lon) < 0.01
    col, row = world.latlon_to_pixel(lat, lon)
    assert (col, row) == pytest.approx((n / 2 - 0.5, n / 2 - 0.5), abs=1e-6)


def _side_luminance(world: World, grey: np.ndarray, towards_deg: float) -> float:
    """Mean luminance of open ground 0.5..2.5 m from buildings in compass direction ``towards_deg``."""
    b = world.layers["label"] == CLASSES["building"]
    ground = (world.layers["height"] == 0) & np.isin(world.layers["label"], [CLASSES["grass"], CLASSES["road"],
                                                                              CLASSES["field"]])
    dc, dr = math.sin(math.radians(towards_deg)), -math.cos(math.radians(towards_deg))
    side = np.zeros_like(b)
    h, w = b.shape
    for k in range(1, 6):  # 0.5 .. 2.5 m at 0.5 m/px
        dx, dy = int(round(k * dc)), int(round(k * dr))
        shifted = np.zeros_like(b)
        shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = b[max(-dy, 0):h - max(dy, 0),
                                                                            max(-dx, 0):w - max(dx, 0)]
        side |= shifted
    side &= ground & ~cv2.dilate(b.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert side.sum() > 200
    return float(grey[side].mean())


@pytest.mark.parametrize("sun_az", [135.0, 315.0, 220.0])
def test_building_shadows_fall_away_from_the_sun(world, sun_az):
    img = world.satellite if sun_az == CFG.sun_azimuth_deg else world.variant(sun_azimuth_deg=sun_az)
    g = _grey(img)
    sunward = _side_luminance(world, g, sun_az)
    shaded = _side_luminance(world, g, sun_az + 180.0)
    assert shaded < 0.7 * sunward, (sun_az, shaded, sunward)


def test_lower_sun_gives_longer_shadows(world):
    g_high = _grey(world.variant(sun_elevation_deg=70.0))
    g_low = _grey(world.variant(sun_elevation_deg=20.0))
    ground = world.layers["height"] == 0
    dark_high = (g_high[ground] < 60).mean()
    dark_low = (g_low[ground] < 60).mean()
    assert dark_low > 2 * dark_high


def test_street_map_aligns_with_layout_and_satellite(world):
    lab = world.layers["label"]
    road = lab == CLASSES["road"]
    sm = world.street_map
    road_colours = np.array(STREET_ROAD_COLOURS)
    is_road_colour = (sm[:, :, None, :] == road_colours[None, None]).all(-1).any(-1)
    assert is_road_colour[road].mean() > 0.99
    far = ~cv2.dilate(road.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert is_road_colour[far].mean() < 0.005
    water = lab == CLASSES["water"]
    assert (sm[water] == (170, 211, 223)).all(-1).mean() > 0.99
    # in the satellite render the same pixels look like what they are
    g = world.satellite.astype(float)
    chroma = g.max(-1) - g.min(-1)
    arterial = (world.layers["road_kind"] == 1) & (world.layers["tree_id"] == 0)
    veg = np.isin(lab, [CLASSES["grass"], CLASSES["field"]]) & (world.layers["height"] == 0)
    assert chroma[arterial].mean() < 0.5 * chroma[veg].mean()
    assert g[water].mean() < 0.6 * g[veg].mean()
    assert world.layers["marking"].any() and (g[world.layers["marking"]].mean() > g[arterial].mean() + 30)


def test_written_geotiffs_reopen_with_the_right_bounds(world, tmp_path):
    paths = write_world(world, tmp_path)
    assert set(paths) == {"satellite", "streetmap", "config"}
    for key, arr in (("satellite", world.satellite), ("streetmap", world.street_map)):
        assert paths[key].name == f"{key}.tif"
        m = maps.open_map(paths[key])
        assert m.bounds(world.crs) == pytest.approx(world.bounds(), abs=1e-6)
        rows = np.array([0, 17, 399, 799])
        cols = np.array([0, 511, 3, 799])
        t = world.transform
        x, y = t.a * (cols + 0.5) + t.c, t.e * (rows + 0.5) + t.f
        rgb, valid = m.sample(x, y, world.crs)
        assert valid.all() and np.array_equal(rgb, arr[rows, cols])
    meta = json.loads(paths["config"].read_text())
    assert meta["config"] == asdict(CFG) and meta["crs"] == geo.crs_key(world.crs)
    assert meta["bounds"] == pytest.approx(list(world.bounds()))
    # from a config too; the in-memory GeoMaps agree with the files
    small = WorldConfig(seed=1, size_m=120.0, gsd_m=1.0)
    p2 = write_world(small, tmp_path / "small")
    w2 = make_world(small)
    assert maps.open_map(p2["satellite"]).bounds() == pytest.approx(w2.satellite_map().bounds(), abs=1e-6)
    assert w2.street_map_map().bounds() == pytest.approx(w2.satellite_map().bounds())


def test_seasons_change_colours_not_layout(world):
    summer = world.satellite.astype(float)
    variants = {s: world.variant(season=s).astype(float) for s in ("autumn", "winter", "spring")}
    lab = world.layers["label"]
    open_land = np.isin(lab, [CLASSES["field"], CLASSES["grass"]]) & (world.layers["height"] == 0)
    # winter: snow on fields, meadows and roofs
    assert variants["winter"][open_land].mean() > summer[open_land].mean() + 60
    roofs = lab == CLASSES["building"]
    assert variants["winter"][roofs].mean() > summer[roofs].mean() + 40
    # autumn: orange/brown deciduous canopy and stubble (red over green)
    trees = world.layers["tree_id"] > 0

    def redness(img, m):
        return float((img[..., 0] - img[..., 1])[m].mean())

    assert redness(variants["autumn"], trees) > redness(summer, trees) + 10
    assert redness(variants["autumn"], open_land) > redness(summer, open_land) + 5
    for s, v in variants.items():
        assert np.abs(v - summer).mean() > 8, s
    # the appearance seed re-draws crops, never the layout
    other = world.variant(seed=123).astype(float)
    fields = lab == CLASSES["field"]
    assert np.abs(other - summer)[fields].mean() > 5
    assert np.abs(other - summer)[lab == CLASSES["road"]].mean() < 3


def test_places_are_distinctive_and_recognisable_across_appearance(world):
    """Local features match the same place in another season/appearance, not other places."""
    a = cv2.cvtColor(world.satellite, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(world.variant(season="autumn", seed=5), cv2.COLOR_RGB2GRAY)
    sift = cv2.SIFT_create()
    bf = cv2.BFMatcher()
    tiles = [(r, c) for r in (50, 300, 550) for c in (50, 300, 550)]
    fa = [sift.detectAndCompute(a[r:r + 200, c:c + 200], None) for r, c in tiles]
    fb = [sift.detectAndCompute(b[r:r + 200, c:c + 200], None) for r, c in tiles]
    assert min(len(k) for k, _ in fa) > 30  # texture everywhere (even the plainest 100 m meadow tile)
    inl = np.zeros((len(tiles), len(tiles)), int)
    for i, (ka, da) in enumerate(fa):
        for j, (kb, db) in enumerate(fb):
            good = [m for m, m2 in bf.knnMatch(da, db, k=2) if m.distance < 0.8 * m2.distance]
            if len(good) < 4:
                continue
            pa = np.float32([ka[m.queryIdx].pt for m in good])
            pb = np.float32([kb[m.trainIdx].pt for m in good])
            _, mask = cv2.findHomography(pa, pb, cv2.RANSAC, 3.0)
            inl[i, j] = 0 if mask is None else int(mask.sum())
    diag = np.diag(inl)
    off = inl - np.diag(diag)
    assert (diag > off.max(axis=1)).sum() >= 8
    assert np.median(diag) > 2 * off.max()


def test_config_validation(world):
    with pytest.raises(ConfigError):
        WorldConfig(season="monsoon")
    with pytest.raises(ConfigError):
        WorldConfig(gsd_m=0.0)
    with pytest.raises(ConfigError):
        WorldConfig(size_m=100000.0, gsd_m=0.3)
    with pytest.raises(ConfigError):
        WorldConfig(sun_elevation_deg=-5.0)
    with pytest.raises(ConfigError):
        WorldConfig(seed=-1)
    with pytest.raises(ConfigError):
        world.variant(season="monsoon")
    with pytest.raises(ConfigError):
        world.variant(sun_elevation_deg=95.0)
