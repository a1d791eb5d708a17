"""Cutting maps into tiles: grid arithmetic, footprints, holes, content and TileSpec validation."""

from __future__ import annotations

import affine
import numpy as np
import pyproj
import pytest

from gleam_ros.core import maps, tiles
from gleam_ros.core.errors import ConfigError

UTM = "EPSG:32634"
X0, Y0 = 500_000.0, 6_700_000.0  # ~60.4 N, 21 E: UTM zone 34 is the working CRS


def utm_map(width_m: int, height_m: int, valid=None, seed: int = 0) -> tuple[maps.GeoMap, np.ndarray]:
    """1 m/px random-texture map with its top-left corner at (X0, Y0)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height_m, width_m, 3), dtype=np.uint8)
    t = affine.Affine(1.0, 0.0, X0, 0.0, -1.0, Y0)
    return maps.map_from_array(rgb, UTM, t, name="utm", valid=valid), rgb


SPEC = tiles.TileSpec(size_m=150.0, overlap=0.5, gsd_m=1.0)


@pytest.mark.parametrize(
    "w,h,overlap,n_cols,n_rows",
    [(300, 450, 0.5, 3, 5), (320, 450, 0.5, 4, 5), (300, 450, 0.0, 2, 3), (450, 160, 0.8, 11, 2)],
)
def test_grid_count_matches_arithmetic(w, h, overlap, n_cols, n_rows):
    m, _ = utm_map(w, h)
    spec = tiles.TileSpec(size_m=150.0, overlap=overlap, gsd_m=1.0)
    grid = tiles.tile_grid(m, spec)
    assert len(grid) == n_cols * n_rows
    stride = 150.0 * (1 - overlap)
    cols = sorted({c for _, c, _, _ in grid})
    rows = sorted({r for r, _, _, _ in grid})
    assert cols == list(range(n_cols)) and rows == list(range(n_rows))
    for r, c, x0, y0 in grid:
        exp_x = X0 + min(c * stride, w - 150.0)  # the last column is pulled back to the map edge
        exp_y = Y0 - min(r * stride, h - 150.0)
        assert x0 == pytest.approx(exp_x, abs=1e-6) and y0 == pytest.approx(exp_y, abs=1e-6)
    # Every tile lies inside the map and the tiles cover it.
    assert min(g[2] for g in grid) == pytest.approx(X0) and max(g[2] for g in grid) + 150 == pytest.approx(X0 + w)
    assert max(g[3] for g in grid) == pytest.approx(Y0) and min(g[3] for g in grid) - 150 == pytest.approx(Y0 - h)
    got = list(tiles.iter_tiles(m, spec))
    assert len(got) == n_cols * n_rows
    assert len({t.tile_id for t in got}) == len(got)


def test_small_map_gets_one_centred_tile():
    m, _ = utm_map(100, 120)
    grid = tiles.tile_grid(m, SPEC)
    assert grid == [(0, 0, pytest.approx(X0 - 25.0), pytest.approx(Y0 + 15.0))]
    assert list(tiles.iter_tiles(m, SPEC)) == []  # mostly outside the map: a hole
    lenient = tiles.TileSpec(size_m=150.0, overlap=0.5, gsd_m=1.0, min_valid=0.5)
    (t,) = tiles.iter_tiles(m, lenient)
    assert t.valid_fraction == pytest.approx(100 * 120 / 150**2, abs=1e-9)
    assert (t.image[:15] == 0).all()  # invalid pixels are black


def test_tile_content_equals_map_pixels_and_direct_sample():
    m, rgb = utm_map(300, 450)
    by_id = {t.tile_id: t for t in tiles.iter_tiles(m, SPEC)}
    t = by_id["r0002_c0001"]
    assert t.image.shape == (150, 150, 3) and t.image.dtype == np.uint8
    assert (t.x0, t.y0, t.gsd_m, t.size_m, t.crs) == (X0 + 75.0, Y0 - 150.0, 1.0, 150.0, UTM)
    assert t.valid_fraction == 1.0 and t.sources == ("utm",)
    # The tile grid is aligned with the map's pixel grid here, so the tile is a plain crop of the map.
    assert np.array_equal(t.image, rgb[150:300, 75:225])
    # And equals a direct sample of the map at its footprint (one definition of sampling).
    u, v = np.meshgrid(np.arange(150), np.arange(150))
    x, y = t.pixel_to_crs(u, v)
    direct, valid = m.sample(x, y, gsd_m=t.gsd_m)
    assert valid.all() and np.array_equal(direct, t.image)
    # render_tile on its own gives the same tile.
    again = tiles.render_tile(m, SPEC, t.x0, t.y0, tile_id="x")
    assert again.tile_id == "x" and np.array_equal(again.image, t.image)


def test_tile_geometry_conversions():
    m, _ = utm_map(300, 450)
    spec = tiles.TileSpec(size_m=100.0, overlap=0.25, gsd_m=0.5)
    t = next(iter(tiles.iter_tiles(m, spec, rows_cols=[(1, 2)])))
    assert t.tile_id == "r0001_c0002" and t.image.shape == (200, 200, 3)
    n = t.image.shape[0]
    lat, lon = t.pixel_to_latlon((n - 1) / 2.0, (n - 1) / 2.0)
    assert float(lat) == pytest.approx(t.center_lat, abs=1e-10) and float(lon) == pytest.approx(t.center_lon, abs=1e-10)
    to_ll = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    exp_lon, exp_lat = to_ll.transform(t.x0 + 50.0, t.y0 - 50.0)
    assert (t.center_lat, t.center_lon) == pytest.approx((exp_lat, exp_lon), abs=1e-10)
    # Pixel convention: integer (u, v) is a pixel centre.
    x, y = t.pixel_to_crs(0, 0)
    assert (float(x), float(y)) == pytest.approx((t.x0 + 0.25, t.y0 - 0.25))
    rng = np.random.default_rng(1)
    u, v = rng.uniform(-10, 210, 50), rng.uniform(-10, 210, 50)
    uu, vv = t.crs_to_pixel(*t.pixel_to_crs(u, v))
    assert np.allclose(uu, u, atol=1e-9) and np.allclose(vv, v, atol=1e-9)
    uu, vv = t.latlon_to_pixel(*t.pixel_to_latlon(u, v))
    assert np.allclose(uu, u, atol=1e-6) and np.allclose(vv, v, atol=1e-6)
    corners = t.corners_latlon()
    assert corners.shape == (4, 2)
    exp = [to_ll.transform(xx, yy) for xx, yy in [(t.x0, t.y0), (t.x0 + 100, t.y0), (t.x0 + 100, t.y0 - 100),
                                                  (t.x0, t.y0 - 100)]]
    assert np.allclose(corners, [[la, lo] for lo, la in exp], atol=1e-10)


def test_tiles_with_hole_are_skipped():
    valid = np.ones((450, 300), bool)
    valid[200:225, 20:45] = False  # 25 m x 25 m hole: inside columns 0 only, rows 1, 2 (y offsets 75..300)
    m, _ = utm_map(300, 450, valid=valid)
    got = {t.tile_id for t in tiles.iter_tiles(m, SPEC)}
    holes = {"r0001_c0000", "r0002_c0000"}
    assert len(got) == 15 - 2 and not holes & got
    # With a lenient threshold the tile is kept, hole pixels black and valid_fraction reported.
    lenient = tiles.TileSpec(size_m=150.0, overlap=0.5, gsd_m=1.0, min_valid=0.9)
    (t,) = tiles.iter_tiles(m, lenient, rows_cols=[(2, 0)])
    assert t.valid_fraction < 0.98 and (t.image[50:75, 20:45] == 0).all()


def test_tiles_of_geographic_map_land_at_right_latlon():
    # EPSG:4326 map (like a corner-CSV folder): R = 2*col, G = 2*row encodes the source position.
    h, w = 120, 100
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, :, 0] = (2 * np.arange(w))[None, :]
    rgb[:, :, 1] = (2 * np.arange(h))[:, None]
    t_geo = affine.Affine(0.0004 / w, 0.0, 22.46, 0.0, -0.0004 / h, 60.40)  # ~22 m x 44 m
    m = maps.map_from_array(rgb, "EPSG:4326", t_geo)
    spec = tiles.TileSpec(size_m=15.0, overlap=0.5, gsd_m=0.25, min_valid=0.98)
    got = list(tiles.iter_tiles(m, spec, progress=True))
    assert got and all(t.crs == "EPSG:32634" for t in got)
    rng = np.random.default_rng(2)
    for t in got:
        u, v = rng.integers(2, 58, 20), rng.integers(2, 58, 20)
        lat, lon = t.pixel_to_latlon(u, v)
        col, row = (~t_geo) @ (lon, lat)
        assert np.abs(t.image[v, u, 0].astype(float) - 2 * (col - 0.5)).max() <= 1.5
        assert np.abs(t.image[v, u, 1].astype(float) - 2 * (row - 0.5)).max() <= 1.5


def test_crop_map_centre_pixel():
    m, rgb = utm_map(300, 450)
    img, valid = tiles.crop_map(m, X0 + 100.5, Y0 - 200.5, 21.0, 1.0)
    assert img.shape == (21, 21, 3) and valid.all()
    assert np.array_equal(img, rgb[190:211, 90:111])
    lon, lat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(X0 + 10.5, Y0 - 10.5)
    img, valid = tiles.crop_map(m, lon, lat, 31.0, 1.0, crs="EPSG:4326")
    assert (img[15, 15] == rgb[10, 10]).all()
    assert valid[5:, 5:].all() and not valid[:5].any() and not valid[:, :5].any()  # off the map edge


@pytest.mark.parametrize(
    "kwargs,field",
    [({"size_m": 0.0}, "size_m"), ({"size_m": float("nan")}, "size_m"), ({"overlap": 0.95}, "overlap"),
     ({"overlap": -0.1}, "overlap"), ({"gsd_m": -1.0}, "gsd_m"), ({"gsd_m": 0.001}, "gsd_m"),
     ({"min_valid": 1.5}, "min_valid"), ({"min_valid": "high"}, "min_valid")],
)
def test_tilespec_validation_names_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        tiles.TileSpec(**kwargs)


def test_tilespec_defaults_and_derived():
    s = tiles.TileSpec()
    assert (s.size_m, s.overlap, s.gsd_m, s.min_valid) == (150.0, 0.5, 0.3, 0.98)
    assert s.pixels == 500 and s.stride_m == 75.0 and s.tile_gsd_m == pytest.approx(0.3)
    odd = tiles.TileSpec(size_m=100.0, gsd_m=0.3)
    assert odd.pixels == 333 and odd.tile_gsd_m * odd.pixels == pytest.approx(100.0)
