"""Cutting a reference map into square, north-up (grid north of the working CRS) tiles.

Tiles are resampled from the map with :meth:`GeoMap.sample` (the one definition of sampling), one tile at
a time, so memory stays bounded by the map's source cache plus one tile. Each tile keeps its exact
ground footprint: working CRS, top-left outer corner (x0, y0) and pixel size.

Pixel convention (OpenCV): integer (u, v) is a pixel centre, so pixel (u, v) of a tile lies at
``x = x0 + (u + 0.5) * gsd``, ``y = y0 - (v + 0.5) * gsd`` (u right/east, v down/south).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from . import geo
from .errors import ConfigError
from .maps import GeoMap

MAX_TILE_PX = 8192


@dataclass(frozen=True)
class TileSpec:
    """How to cut tiles: ground size, overlap between neighbours, pixel size and the hole threshold.

    A tile is ``round(size_m / gsd_m)`` pixels square; its actual pixel size is ``size_m / pixels`` so that
    the footprint is exactly ``size_m``. Neighbouring tiles are ``size_m * (1 - overlap)`` apart. Tiles whose
    valid fraction is below ``min_valid`` are holes and are skipped.
    """

    size_m: float = 150.0
    overlap: float = 0.5
    gsd_m: float = 0.3
    min_valid: float = 0.98

    def __post_init__(self) -> None:
        def num(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ConfigError(f"TileSpec.{name} must be a finite number, got {v!r}")
            return float(v)

        if not num("size_m") > 0:
            raise ConfigError(f"TileSpec.size_m must be > 0 metres, got {self.size_m}")
        if not 0.0 <= num("overlap") <= 0.9:
            raise ConfigError(f"TileSpec.overlap must be within [0, 0.9], got {self.overlap}")
        if not num("gsd_m") > 0:
            raise ConfigError(f"TileSpec.gsd_m must be > 0 metres per pixel, got {self.gsd_m}")
        if not 0.0 <= num("min_valid") <= 1.0:
            raise ConfigError(f"TileSpec.min_valid must be within [0, 1], got {self.min_valid}")
        px = round(self.size_m / self.gsd_m)
        if not 8 <= px <= MAX_TILE_PX:
            raise ConfigError(
                f"TileSpec.gsd_m={self.gsd_m} with size_m={self.size_m} gives {px} px tiles; must be within "
                f"[8, {MAX_TILE_PX}]"
            )

    @property
    def pixels(self) -> int:
        """Tile side in pixels."""
        return round(self.size_m / self.gsd_m)

    @property
    def tile_gsd_m(self) -> float:
        """Actual tile pixel size, metres (``size_m / pixels``; equals ``gsd_m`` when it divides ``size_m``)."""
        return self.size_m / self.pixels

    @property
    def stride_m(self) -> float:
        """Distance between neighbouring tile origins, metres."""
        return self.size_m * (1.0 - self.overlap)


@dataclass
class Tile:
    """One map tile: RGB image plus its exact ground footprint in the working CRS."""

    tile_id: str
    image: np.ndarray
    crs: str
    x0: float
    y0: float
    gsd_m: float
    size_m: float
    center_lat: float
    center_lon: float
    sources: tuple[str, ...] = ()
    valid_fraction: float = 1.0

    def pixel_to_crs(self, u, v) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (u, v) (integer = pixel centre) to working-CRS (x, y)."""
        u = np.asarray(u, dtype=float)
        v = np.asarray(v, dtype=float)
        return self.x0 + (u + 0.5) * self.gsd_m, self.y0 - (v + 0.5) * self.gsd_m

    def crs_to_pixel(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Working-CRS (x, y) to pixel (u, v) (integer = pixel centre); inverse of :meth:`pixel_to_crs`."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        return (x - self.x0) / self.gsd_m - 0.5, (self.y0 - y) / self.gsd_m - 0.5

    def pixel_to_latlon(self, u, v) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (u, v) to WGS84 (lat, lon) degrees."""
        x, y = self.pixel_to_crs(u, v)
        lon, lat = geo.transform(x, y, self.crs, geo.WGS84)
        return lat, lon

    def latlon_to_pixel(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 (lat, lon) degrees to pixel (u, v)."""
        x, y = geo.transform(lon, lat, geo.WGS84, self.crs)
        return self.crs_to_pixel(x, y)

    def corners_latlon(self) -> np.ndarray:
        """(4, 2) [lat, lon] of the TL, TR, BR, BL outer corners."""
        n = self.image.shape[1]
        m = self.image.shape[0]
        u = np.array([-0.5, n - 0.5, n - 0.5, -0.5])
        v = np.array([-0.5, -0.5, m - 0.5, m - 0.5])
        lat, lon = self.pixel_to_latlon(u, v)
        return np.stack([lat, lon], axis=1)

    @property
    def footprint(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the tile in the working CRS."""
        return self.x0, self.y0 - self.image.shape[0] * self.gsd_m, self.x0 + self.image.shape[1] * self.gsd_m, self.y0


def _axis_offsets(extent: float, size: float, stride: float) -> np.ndarray:
    """Tile start offsets along one axis of length ``extent``.

    Regular steps of ``stride`` from 0; the last tile is pulled back to end exactly at the map edge (so the
    whole extent is covered without overhang). A map smaller than one tile gets one centred tile.
    """
    if extent <= size + 1e-9:
        return np.array([(extent - size) / 2.0])
    n = math.ceil((extent - size) / stride - 1e-9) + 1
    off = np.arange(n, dtype=float) * stride
    off[-1] = extent - size
    return off


def tile_grid(geomap: GeoMap, spec: TileSpec) -> list[tuple[int, int, float, float]]:
    """Tile origins ``(row, col, x0, y0)`` over the map's working-CRS bounds, rows from the north.

    Along each axis: ``n = ceil((extent - size_m) / stride) + 1`` tiles spaced ``stride = size_m * (1 - overlap)``,
    the last one aligned to the far edge; one centred tile when the map is smaller than a tile.
    """
    xmin, ymin, xmax, ymax = geomap.bounds()
    cols = _axis_offsets(xmax - xmin, spec.size_m, spec.stride_m)
    rows = _axis_offsets(ymax - ymin, spec.size_m, spec.stride_m)
    return [(r, c, float(xmin + dx), float(ymax - dy)) for r, dy in enumerate(rows) for c, dx in enumerate(cols)]


def tile_id_for(row: int, col: int) -> str:
    """Tile id of grid cell (row, col)."""
    return f"r{row:04d}_c{col:04d}"


def _pixel_centres(x0: float, y0: float, n: int, gsd: float) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(n, dtype=float) + 0.5) * gsd
    return np.meshgrid(x0 + c, y0 - c)


def render_tile(geomap: GeoMap, spec: TileSpec, x0: float, y0: float, tile_id: str = "") -> Tile | None:
    """Resample one tile with top-left outer corner (x0, y0) in the working CRS; None when it is a hole.

    Sampling is anti-aliased (``GeoMap.sample(..., gsd_m=tile gsd)``); invalid pixels of an accepted tile
    are black.
    """
    n, gsd = spec.pixels, spec.tile_gsd_m
    xs, ys = _pixel_centres(x0, y0, n, gsd)
    rgb, valid, idx = geomap.sample_with_sources(xs, ys, gsd_m=gsd)
    frac = float(valid.mean())
    if frac < spec.min_valid or frac == 0.0:
        return None
    key = geo.crs_key(geomap.working_crs)
    half = n * gsd / 2.0
    lon, lat = geo.transform(x0 + half, y0 - half, key, geo.WGS84)
    used = np.unique(idx[idx >= 0])
    return Tile(
        tile_id=tile_id,
        image=rgb,
        crs=key,
        x0=float(x0),
        y0=float(y0),
        gsd_m=gsd,
        size_m=n * gsd,
        center_lat=float(lat),
        center_lon=float(lon),
        sources=tuple(geomap.sources[i].name for i in used),
        valid_fraction=frac,
    )


def iter_tiles(
    geomap: GeoMap,
    spec: TileSpec,
    progress: bool = False,
    rows_cols: Iterable[tuple[int, int]] | None = None,
) -> Iterator[Tile]:
    """Stream the tiles of ``tile_grid(geomap, spec)`` in row-major order, skipping holes.

    ``rows_cols`` restricts to those (row, col) grid cells. ``progress`` shows a tqdm bar over grid cells.
    """
    grid = tile_grid(geomap, spec)
    if rows_cols is not None:
        wanted = {(int(r), int(c)) for r, c in rows_cols}
        grid = [g for g in grid if (g[0], g[1]) in wanted]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(grid), desc=f"tiles {geomap.name}", unit="tile")
    try:
        for r, c, x0, y0 in grid:
            tile = render_tile(geomap, spec, x0, y0, tile_id_for(r, c))
            if bar is not None:
                bar.update(1)
            if tile is not None:
                yield tile
    finally:
        if bar is not None:
            bar.close()


def crop_map(
    geomap: GeoMap,
    center_x: float,
    center_y: float,
    size_m: float,
    gsd_m: float,
    crs: object | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """North-up (working-CRS grid) square crop ``(rgb, valid)`` of ``round(size_m / gsd_m)`` px around a point.

    The centre is given in ``crs`` (default working CRS; ``"EPSG:4326"`` means x = lon, y = lat) and lies at
    pixel ((N-1)/2, (N-1)/2); the crop's pixel size is exactly ``gsd_m``. Sampling is anti-aliased.
    """
    if not (size_m > 0 and gsd_m > 0 and math.isfinite(size_m) and math.isfinite(gsd_m)):
        raise ConfigError(f"crop size_m and gsd_m must be positive, got size_m={size_m} gsd_m={gsd_m}")
    n = round(size_m / gsd_m)
    if not 1 <= n <= 4 * MAX_TILE_PX:
        raise ConfigError(f"crop of size_m={size_m} at gsd_m={gsd_m} gives {n} px; must be within [1, {4 * MAX_TILE_PX}]")
    if crs is None:
        cx, cy = float(center_x), float(center_y)
    else:
        tx, ty = geo.transform(center_x, center_y, crs, geomap.working_crs)
        cx, cy = float(tx), float(ty)
    half = n * gsd_m / 2.0
    xs, ys = _pixel_centres(cx - half, cy + half, n, gsd_m)
    return geomap.sample(xs, ys, gsd_m=gsd_m)
