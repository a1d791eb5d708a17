"""Reference maps: corner-CSV folders, GeoTIFFs (UTM, Web Mercator), slippy trees and sampling."""

from __future__ import annotations

import math
from pathlib import Path

import affine
import cv2
import numpy as np
import pyproj
import pytest
import rasterio

from gleam_ros.core import maps
from gleam_ros.core.errors import InputError, MapError

R_MERC = 6378137.0


def gradient_image(h: int, w: int, blue: int = 77) -> np.ndarray:
    """R = 2*col, G = 2*row (so a sampled colour tells the sub-pixel position), constant B."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, :, 0] = (2 * np.arange(w))[None, :]
    rgb[:, :, 1] = (2 * np.arange(h))[:, None]
    rgb[:, :, 2] = blue
    return rgb


def write_png(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
    bgr = rgb[:, :, ::-1]
    if alpha is not None:
        bgr = np.dstack([bgr, alpha])
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))


# ------------------------------------------------------------------------------------------- corner CSV

# A 2x2 grid of 40 x 30 px images (w x h) over a small lat/lon box, the bottom-right one absent.
LAT_TOP, LON_LEFT = 60.40, 22.46
DLAT, DLON = 0.0003, 0.0005  # per image
W_IMG, H_IMG = 40, 30


def image_corners(r: int, c: int) -> tuple[float, float, float, float]:
    return LAT_TOP - r * DLAT, LON_LEFT + c * DLON, LAT_TOP - (r + 1) * DLAT, LON_LEFT + (c + 1) * DLON


def make_corner_folder(tmp_path: Path, header: str | None = None, skip_row: bool = False) -> Path:
    d = tmp_path / "cornermap"
    d.mkdir()
    header = header or "Filename, Top_left_lat,Top_left_lon,Bottom_right_lat,Bottom_right_long"
    lines = [header]
    for r in range(2):
        for c in range(2):
            if (r, c) == (1, 1):
                continue  # hole
            name = f"sat_{r}{c}.png"
            rgb = gradient_image(H_IMG, W_IMG, blue=50 + 60 * (2 * r + c))
            alpha = np.full((H_IMG, W_IMG), 255, np.uint8)
            if (r, c) == (0, 1):
                alpha[10:20, 10:30] = 0  # an alpha hole inside an image
            write_png(d / name, rgb, alpha)
            tl_lat, tl_lon, br_lat, br_lon = image_corners(r, c)
            if not (skip_row and (r, c) == (1, 0)):
                lines.append(f'"{name}",  {tl_lat:.9f},  {tl_lon:.9f},  {br_lat:.9f},  {br_lon:.9f}')
    (d / "map.csv").write_text("\n".join(lines) + "\n")
    return d


def pixel_latlon(r: int, c: int, col: float, row: float) -> tuple[float, float]:
    """lat/lon of pixel centre (col, row) of image (r, c)."""
    tl_lat, tl_lon, br_lat, br_lon = image_corners(r, c)
    return tl_lat + (row + 0.5) * (br_lat - tl_lat) / H_IMG, tl_lon + (col + 0.5) * (br_lon - tl_lon) / W_IMG


def test_corner_csv_sampling_bounds_and_holes(tmp_path):
    d = make_corner_folder(tmp_path)
    m = maps.open_map(d)
    assert len(m.sources) == 3
    assert m.working_crs.to_epsg() == 32634  # UTM zone 34N at 22.46 E
    lon0, lat0, lon1, lat1 = m.bounds("EPSG:4326")
    assert lon0 == pytest.approx(LON_LEFT, abs=1e-9) and lon1 == pytest.approx(LON_LEFT + 2 * DLON, abs=1e-9)
    assert lat1 == pytest.approx(LAT_TOP, abs=1e-9) and lat0 == pytest.approx(LAT_TOP - 2 * DLAT, abs=1e-9)
    assert m.center_latlon() == pytest.approx((LAT_TOP - DLAT, LON_LEFT + DLON), abs=1e-9)
    # ~0.0005 deg lon at 60.4 N = 27.5 m over 40 px; 0.0003 deg lat = 33.4 m over 30 px -> ~0.7..1.1 m
    assert 0.6 < m.native_gsd_m < 1.2
    # Known pixels in each present image: colour encodes (col, row), blue the image.
    pts = [(0, 0, 5, 7), (0, 0, 39, 0), (0, 1, 3, 25), (1, 0, 20, 29), (1, 0, 0, 15)]
    lat = np.array([pixel_latlon(r, c, col, row)[0] for r, c, col, row in pts])
    lon = np.array([pixel_latlon(r, c, col, row)[1] for r, c, col, row in pts])
    rgb, valid = m.sample(lon, lat, crs="EPSG:4326")
    assert valid.all()
    for k, (r, c, col, row) in enumerate(pts):
        assert abs(int(rgb[k, 0]) - 2 * col) <= 1 and abs(int(rgb[k, 1]) - 2 * row) <= 1, (pts[k], rgb[k])
        assert rgb[k, 2] == 50 + 60 * (2 * r + c)
    # The absent image and the alpha hole are invalid; so is everything outside.
    hole = [pixel_latlon(1, 1, 20, 15), pixel_latlon(1, 1, 2, 2), pixel_latlon(0, 1, 20, 15),
            (LAT_TOP + 0.0001, LON_LEFT + 0.0001), (LAT_TOP - DLAT, LON_LEFT - 0.0001)]
    rgb, valid = m.sample(np.array([p[1] for p in hole]), np.array([p[0] for p in hole]), crs="EPSG:4326")
    assert not valid.any()
    assert (rgb == 0).all()


def test_corner_csv_sampling_in_working_crs_shape(tmp_path):
    m = maps.open_map(make_corner_folder(tmp_path))
    lat, lon = pixel_latlon(0, 0, 10, 10)
    x, y = pyproj.Transformer.from_crs("EPSG:4326", m.working_crs, always_xy=True).transform(lon, lat)
    xs = np.full((3, 4), x)
    ys = np.full((3, 4), y)
    rgb, valid = m.sample(xs, ys)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8 and valid.shape == (3, 4) and valid.dtype == bool
    assert valid.all() and abs(int(rgb[1, 2, 0]) - 20) <= 1 and abs(int(rgb[1, 2, 1]) - 20) <= 1


def test_corner_csv_first_source_wins_on_overlap(tmp_path):
    d = tmp_path / "ov"
    d.mkdir()
    write_png(d / "a.png", np.full((10, 10, 3), 10, np.uint8))
    write_png(d / "b.png", np.full((10, 10, 3), 200, np.uint8))
    (d / "map.csv").write_text(
        "filename,top_left_lat,top_left_lon,bottom_right_lat,bottom_right_lon\n"
        "a.png,60.001,22.0,60.0,22.001\n"
        "b.png,60.0015,22.0005,60.0005,22.0015\n"
    )
    m = maps.read_corner_csv(d)
    rgb, valid = m.sample(np.array([22.0007, 22.0013, 22.0002]), np.array([60.0007, 60.0013, 60.0002]), "EPSG:4326")
    assert valid.all()
    assert rgb[:, 0].tolist() == [10, 200, 10]


def test_corner_csv_column_variants(tmp_path):
    d = make_corner_folder(tmp_path, header="FILENAME,top_left_LAT,Top_Left_Longitude,bottom_right_lat,BOTTOM_RIGHT_LON")
    m = maps.read_corner_csv(d)
    assert len(m.sources) == 3


def test_corner_csv_missing_column_names_file_and_column(tmp_path):
    d = make_corner_folder(tmp_path, header="Filename,Top_left_lat,Top_left_lon,Bottom_right_lat,Bottom_right_x")
    with pytest.raises(MapError) as ei:
        maps.open_map(d)
    assert "map.csv" in str(ei.value) and "Bottom_right_lon" in str(ei.value)


def test_corner_csv_missing_image_is_named(tmp_path):
    d = make_corner_folder(tmp_path)
    (d / "sat_10.png").unlink()
    with pytest.raises(MapError, match="sat_10.png"):
        maps.open_map(d)


def test_corner_csv_unreadable_image_is_named(tmp_path):
    d = make_corner_folder(tmp_path)
    (d / "sat_00.png").write_bytes(b"not a png")
    with pytest.raises(MapError, match="sat_00.png"):
        maps.open_map(d)


def test_corner_csv_bad_number_and_inverted_corners(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    write_png(d / "a.png", np.zeros((4, 4, 3), np.uint8))
    (d / "map.csv").write_text("Filename,Top_left_lat,Top_left_lon,Bottom_right_lat,Bottom_right_long\na.png,x,1,2,3\n")
    with pytest.raises(MapError, match="line 2"):
        maps.read_corner_csv(d)
    (d / "map.csv").write_text("Filename,Top_left_lat,Top_left_lon,Bottom_right_lat,Bottom_right_long\n"
                               "a.png,60.0,22.001,60.001,22.0\n")
    with pytest.raises(MapError, match="a.png"):
        maps.read_corner_csv(d)


# ----------------------------------------------------------------------------------------------- GeoTIFF

UTM_EPSG = 32634
UTM_T = affine.Affine(2.0, 0.0, 500_000.0, 0.0, -2.0, 6_700_000.0)  # 2 m pixels, near 60.4 N, 21 E


def test_geotiff_utm_round_trip(tmp_path):
    rgb = gradient_image(60, 80)
    valid = np.ones((60, 80), bool)
    valid[40:, :20] = False
    p = maps.write_geotiff(tmp_path / "utm.tif", rgb, f"EPSG:{UTM_EPSG}", UTM_T, valid=valid)
    with rasterio.open(p) as ds:
        assert ds.count == 4 and ds.crs.to_epsg() == UTM_EPSG and ds.transform == UTM_T
        assert ds.compression is not None and ds.compression.name.lower() == "deflate"
    m = maps.open_map(p)
    assert m.working_crs.to_epsg() == UTM_EPSG
    assert m.native_gsd_m == pytest.approx(2.0, rel=0.01)  # UTM scale factor near the central meridian
    assert m.bounds() == pytest.approx((500_000.0, 6_700_000.0 - 120.0, 500_160.0, 6_700_000.0))
    src, _ = m.sources[0].load()
    assert np.array_equal(src, rgb)
    # Pixel centres -> lat/lon with pyproj directly -> sample in EPSG:4326.
    cols = np.array([3, 50, 79, 10, 60])
    rows = np.array([4, 30, 0, 50, 59])
    x, y = UTM_T @ (cols + 0.5, rows + 0.5)
    lon, lat = pyproj.Transformer.from_crs(f"EPSG:{UTM_EPSG}", "EPSG:4326", always_xy=True).transform(x, y)
    out, ok = m.sample(lon, lat, crs="EPSG:4326")
    assert ok.tolist() == [True, True, True, False, True]
    for k in np.flatnonzero(ok):
        assert abs(int(out[k, 0]) - 2 * cols[k]) <= 1 and abs(int(out[k, 1]) - 2 * rows[k]) <= 1
    # Half-way between pixel centres bilinear interpolation gives the mean.
    out, ok = m.sample(np.array([500_000.0 + 2 * 10 + 2.0]), np.array([6_700_000.0 - 2 * 5 - 1.0]))
    assert ok[0] and abs(int(out[0, 0]) - 21) <= 1 and abs(int(out[0, 1]) - 10) <= 1


def test_geotiff_web_mercator_round_trip(tmp_path):
    # 1.5 m Mercator pixels near 60.4 N (about 0.74 m on the ground).
    x0, y0 = 2_500_000.0, 8_480_000.0
    t = affine.Affine(1.5, 0.0, x0, 0.0, -1.5, y0)
    rgb = gradient_image(50, 70, blue=123)
    p = maps.write_geotiff(tmp_path / "merc.tif", rgb, "EPSG:3857", t)
    m = maps.read_geotiff(p)
    assert m.sources[0].crs.to_epsg() == 3857
    lat_c = math.degrees(2 * math.atan(math.exp((y0 - 37.5) / R_MERC)) - math.pi / 2)
    assert m.native_gsd_m == pytest.approx(1.5 * math.cos(math.radians(lat_c)), rel=0.01)
    cols = np.array([0, 35, 69, 12])
    rows = np.array([0, 25, 49, 40])
    mx, my = t @ (cols + 0.5, rows + 0.5)
    # Closed-form spherical Mercator inverse, independent of the code under test.
    lon = np.degrees(mx / R_MERC)
    lat = np.degrees(2 * np.arctan(np.exp(my / R_MERC)) - np.pi / 2)
    out, ok = m.sample(lon, lat, crs="EPSG:4326")
    assert ok.all()
    assert np.abs(out[:, 0].astype(int) - 2 * cols).max() <= 1
    assert np.abs(out[:, 1].astype(int) - 2 * rows).max() <= 1
    assert (out[:, 2] == 123).all()
    lon0, lat0, lon1, lat1 = m.bounds("EPSG:4326")
    assert lon0 == pytest.approx(np.degrees(x0 / R_MERC), abs=1e-9)
    assert lat1 == pytest.approx(np.degrees(2 * np.arctan(np.exp(y0 / R_MERC)) - np.pi / 2), abs=1e-9)
    assert lon1 == pytest.approx(np.degrees((x0 + 105.0) / R_MERC), abs=1e-9)
    assert lat0 == pytest.approx(np.degrees(2 * np.arctan(np.exp((y0 - 75.0) / R_MERC)) - np.pi / 2), abs=1e-9)


def test_geotiff_nodata_is_invalid(tmp_path):
    p = tmp_path / "nodata.tif"
    data = np.full((1, 20, 20), 100, np.uint8)
    data[0, :10, :] = 0
    with rasterio.open(p, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8",
                       crs=f"EPSG:{UTM_EPSG}", transform=UTM_T, nodata=0) as ds:
        ds.write(data)
    m = maps.read_geotiff(p)
    rgb, valid = m.sources[0].load()
    assert not valid[:10].any() and valid[11:].all()
    assert (rgb[15, 5] == 100).all()  # grey replicated to RGB
    _, ok = m.sample(np.array([500_010.0, 500_010.0]), np.array([6_700_000.0 - 5.0, 6_700_000.0 - 35.0]))
    assert ok.tolist() == [False, True]


def test_geotiff_without_georeferencing_names_file(tmp_path):
    p = tmp_path / "plain.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(
        p, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8"
    ) as ds:
        ds.write(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(MapError, match="plain.tif"):
        maps.open_map(p)
    p2 = tmp_path / "crs_only.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(
        p2, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8", crs="EPSG:32634"
    ) as ds:
        ds.write(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(MapError, match="crs_only.tif"):
        maps.read_geotiff(p2)


def test_unknown_crs_and_bad_paths(tmp_path):
    rgb = gradient_image(10, 10)
    with pytest.raises(MapError, match="EPSG:999999"):
        maps.map_from_array(rgb, "EPSG:999999", UTM_T)
    with pytest.raises(MapError, match="NOT_A_CRS"):
        maps.write_geotiff(tmp_path / "x.tif", rgb, "NOT_A_CRS", UTM_T)
    assert not (tmp_path / "x.tif").exists()
    with pytest.raises(MapError, match="missing_map"):
        maps.open_map(tmp_path / "missing_map")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MapError, match="empty"):
        maps.open_map(tmp_path / "empty")
    (tmp_path / "junk.tif").write_bytes(b"junk")
    with pytest.raises(MapError, match="junk.tif"):
        maps.open_map(tmp_path / "junk.tif")
    with pytest.raises(InputError):
        maps.map_from_array(np.zeros((5, 5, 3), np.float32), "EPSG:32634", UTM_T)


def test_map_from_array_valid_mask_and_rgba(tmp_path):
    rgb = gradient_image(20, 20)
    valid = np.ones((20, 20), bool)
    valid[5, 5] = False
    m = maps.map_from_array(rgb, f"EPSG:{UTM_EPSG}", UTM_T, valid=valid)
    cx, cy = UTM_T @ (5.5, 5.5)
    near_x, near_y = UTM_T @ (6.2, 5.5)  # bilinear neighbours include the hole pixel
    far_x, far_y = UTM_T @ (8.5, 5.5)
    _, ok = m.sample(np.array([cx, near_x, far_x]), np.array([cy, near_y, far_y]))
    assert ok.tolist() == [False, False, True]
    rgba = np.dstack([rgb, np.where(valid, 255, 0).astype(np.uint8)])
    p = maps.write_geotiff(tmp_path / "rgba.tif", rgba, f"EPSG:{UTM_EPSG}", UTM_T)
    _, v2 = maps.read_geotiff(p).sources[0].load()
    assert np.array_equal(v2, valid)


def test_anti_aliased_sampling_averages(tmp_path):
    # A 1 px checkerboard sampled at 4x the pixel size: plain bilinear aliases, gsd_m= averages to grey.
    chk = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    m = maps.map_from_array(np.dstack([chk] * 3), f"EPSG:{UTM_EPSG}", UTM_T)
    x = 500_000.0 + 8.0 + 8.0 * np.arange(10)
    y = np.full_like(x, 6_700_000.0 - 64.0)
    out, ok = m.sample(x, y, gsd_m=8.0)
    assert ok.all() and np.abs(out[:, 0].astype(int) - 128).max() <= 2


def test_folder_of_geotiffs_is_a_mosaic(tmp_path):
    d = tmp_path / "mosaic"
    d.mkdir()
    maps.write_geotiff(d / "a.tif", np.full((10, 10, 3), 30, np.uint8), f"EPSG:{UTM_EPSG}", UTM_T)
    t2 = affine.Affine(2.0, 0.0, 500_020.0, 0.0, -2.0, 6_700_000.0)
    maps.write_geotiff(d / "b.tif", np.full((10, 10, 3), 90, np.uint8), f"EPSG:{UTM_EPSG}", t2)
    m = maps.open_map(d)
    assert m.bounds() == pytest.approx((500_000.0, 6_699_980.0, 500_040.0, 6_700_000.0))
    out, ok = m.sample(np.array([500_010.0, 500_030.0, 500_020.0]), np.array([6_699_990.0] * 3))
    assert ok.all() and out[:, 0].tolist() == [30, 90, 30]  # seam point: first source wins, no gap


# ------------------------------------------------------------------------------------------------ slippy


def latlon_to_tile(lat: float, lon: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return x, y


def tile_pixel_latlon(z: int, x: int, y: int, px: float, py: float, size: int) -> tuple[float, float]:
    """lat/lon of fractional tile pixel (px, py) (pixel-corner units) via the OSM formulas."""
    n = 2**z
    lon = (x + px / size) / n * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (y + py / size) / n))))
    return lat, lon


def test_slippy_tiles_land_at_right_latlon(tmp_path):
    z, size = 17, 32
    tx, ty = latlon_to_tile(60.4, 22.46, z)
    colours = {}
    for dx in range(2):
        for dy in range(2):
            f = tmp_path / "tiles" / str(z) / str(tx + dx) / f"{ty + dy}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            rgb = gradient_image(size, size, blue=40 + 50 * (2 * dy + dx))
            colours[(dx, dy)] = rgb
            write_png(f, rgb)
    # A coarser zoom with different content must be ignored by default.
    coarse = tmp_path / "tiles" / str(z - 1) / str(tx // 2) / f"{ty // 2}.jpg"
    coarse.parent.mkdir(parents=True)
    cv2.imwrite(str(coarse), np.full((32, 32, 3), 255, np.uint8))
    m = maps.open_map(tmp_path / "tiles")
    assert len(m.sources) == 4 and m.sources[0].crs.to_epsg() == 3857
    pts = [(0, 0, 3, 4), (1, 0, 20, 31), (0, 1, 31, 0), (1, 1, 16, 16)]
    lat, lon = zip(*(tile_pixel_latlon(z, tx + dx, ty + dy, c + 0.5, r + 0.5, size) for dx, dy, c, r in pts))
    out, ok = m.sample(np.array(lon), np.array(lat), crs="EPSG:4326")
    assert ok.all()
    for k, (dx, dy, c, r) in enumerate(pts):
        assert out[k, 2] == 40 + 50 * (2 * dy + dx)
        assert abs(int(out[k, 0]) - 2 * c) <= 1 and abs(int(out[k, 1]) - 2 * r) <= 1
    lat_out, lon_out = tile_pixel_latlon(z, tx + 2, ty, 5, 5, size)
    _, ok = m.sample(np.array([lon_out]), np.array([lat_out]), crs="EPSG:4326")
    assert not ok[0]
    lon0, lat0, lon1, lat1 = m.bounds("EPSG:4326")
    assert (lat1, lon0) == pytest.approx(tile_pixel_latlon(z, tx, ty, 0, 0, size), abs=1e-9)
    assert (lat0, lon1) == pytest.approx(tile_pixel_latlon(z, tx + 2, ty + 2, 0, 0, size), abs=1e-9)
    # Explicit lower zoom, and an absent zoom is an error naming the folder.
    m16 = maps.read_slippy(tmp_path / "tiles", zoom=z - 1)
    lat_c, lon_c = tile_pixel_latlon(z - 1, tx // 2, ty // 2, 16, 16, 32)
    out, ok = m16.sample(np.array([lon_c]), np.array([lat_c]), crs="EPSG:4326")
    assert ok[0] and out[0].min() >= 250
    with pytest.raises(MapError, match="tiles"):
        maps.read_slippy(tmp_path / "tiles", zoom=12)


def test_source_cache_budget_unloads_lru(tmp_path):
    z, size = 15, 16
    for x in range(3):
        f = tmp_path / "t" / str(z) / str(100 + x) / "200.png"
        f.parent.mkdir(parents=True)
        write_png(f, np.full((size, size, 3), 10 * (x + 1), np.uint8))
    m = maps.read_slippy(tmp_path / "t")
    m.cache_bytes = 2 * size * size * 4 + 1  # about one source with its mask
    for x in range(3):
        lat, lon = tile_pixel_latlon(z, 100 + x, 200, 8, 8, size)
        out, ok = m.sample(np.array([lon]), np.array([lat]), crs="EPSG:4326")
        assert ok[0] and out[0, 0] == 10 * (x + 1)
    assert [s.loaded for s in m.sources] == [False, False, True]
