"""Reference maps: georeferenced satellite/orthophoto images and one definition of sampling them.

A :class:`GeoMap` is an ordered list of :class:`RasterSource` images (GeoTIFF files, PNG/JPG tiles with
corner coordinates, slippy-map tiles or in-memory arrays), each with its own CRS and affine transform.
Everything that needs map pixels (tiling, cropping, the flight simulator) goes through
:meth:`GeoMap.sample`, which maps arbitrary ground coordinates to bilinearly interpolated RGB plus a
validity mask (outside every image, or on a hole, is invalid).

Conventions: affine transforms are GDAL style, mapping pixel-corner coordinates (col, row) to CRS
coordinates, so the centre of pixel (i, j) is at ``transform @ (i + 0.5, j + 0.5)``. Geographic CRSs use
x = longitude, y = latitude. ``working_crs`` is the UTM zone of the map centre (metres, grid north up).
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import affine
import cv2
import numpy as np
import pyproj

from . import geo
from .errors import InputError, MapError

MEMORY_PATH = "<memory>"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
CORNER_CSV = "map.csv"
DEFAULT_CACHE_BYTES = 2 * 1024**3

_VALID_EPS = 1e-3  # interpolated validity must be >= 1 - _VALID_EPS
_REMAP_LIMIT = 30000  # cv2.remap needs src and dst sides < SHRT_MAX
_REMAP_COLS = 4096  # points are remapped as (k, _REMAP_COLS) blocks
_WEB_MERCATOR_HALF = math.pi * 6378137.0  # half the EPSG:3857 world width, metres


def _to_affine(transform: object, what: str) -> affine.Affine:
    if isinstance(transform, affine.Affine):
        t = transform
    else:
        try:
            vals = [float(v) for v in transform]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise MapError(f"{what}: transform must be an affine.Affine or 6 numbers (a, b, c, d, e, f)") from None
        if len(vals) not in (6, 9):
            raise MapError(f"{what}: transform must have 6 coefficients (a, b, c, d, e, f), got {len(vals)}")
        t = affine.Affine(*vals[:6])
    if not all(math.isfinite(v) for v in t[:6]) or abs(t.determinant) < 1e-300:
        raise MapError(f"{what}: degenerate or non-finite transform {tuple(t[:6])}")
    return t


def _to_uint8(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W, C) any dtype -> uint8; non-8-bit data is stretched between its 0.5 and 99.5 percentiles."""
    if bands.dtype == np.uint8:
        return bands
    vals = bands[valid] if valid.any() else bands.reshape(-1, bands.shape[-1])
    vals = vals[np.isfinite(vals).all(axis=-1)] if np.issubdtype(vals.dtype, np.floating) else vals
    if vals.size == 0:
        return np.zeros(bands.shape, np.uint8)
    lo, hi = np.percentile(vals, [0.5, 99.5])
    if bands.dtype.kind in "ui" and lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    scale = 255.0 / max(float(hi) - float(lo), 1e-12)
    out = np.nan_to_num((bands.astype(np.float32) - np.float32(lo)) * np.float32(scale), nan=0.0)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _read_image_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """PNG/JPG/... -> (RGB uint8, valid bool from alpha)."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MapError(f"cannot read image {path}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] in (2, 4):
        alpha = img[:, :, -1]
        valid = alpha > 0
        img = img[:, :, :-1]
    else:
        valid = np.ones(img.shape[:2], bool)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    else:
        img = img[:, :, 2::-1]  # BGR -> RGB
    return np.ascontiguousarray(_to_uint8(img, valid)), valid


def _read_raster_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Any GDAL raster -> (RGB uint8, valid bool from alpha / nodata / internal mask)."""
    import rasterio
    from rasterio.enums import ColorInterp

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                interp = list(ds.colorinterp)
                data_bands = [i + 1 for i, ci in enumerate(interp) if ci != ColorInterp.alpha]
                if not data_bands:
                    raise MapError(f"{path}: raster has only an alpha band")
                if len(data_bands) == 1 and ds.count >= 1:
                    try:
                        cmap = ds.colormap(data_bands[0])
                    except ValueError:
                        cmap = None
                    band = ds.read(data_bands[0])
                    if cmap:
                        lut = np.zeros((256, 3), np.uint8)
                        for k, v in cmap.items():
                            if 0 <= k < 256:
                                lut[k] = v[:3]
                        bands = lut[np.clip(band, 0, 255).astype(np.int64)]
                    else:
                        bands = np.repeat(band[:, :, None], 3, axis=2)
                else:
                    bands = np.moveaxis(ds.read(data_bands[:3]), 0, -1)
                    if bands.shape[2] == 2:
                        bands = np.concatenate([bands, bands[:, :, :1]], axis=2)
                valid = ds.dataset_mask() > 0
    except rasterio.errors.RasterioError as exc:
        raise MapError(f"cannot read raster {path}: {exc}") from None
    return np.ascontiguousarray(_to_uint8(bands, valid)), valid


@dataclass
class RasterSource:
    """One georeferenced image of a map: where it is (CRS + GDAL affine) and how to load its pixels.

    ``kind`` is ``"raster"`` (read with rasterio), ``"image"`` (PNG/JPG read with OpenCV) or ``"memory"``
    (pixels handed in, never unloaded). Pixels are loaded lazily by :meth:`load` and cached until
    :meth:`unload` (the owning :class:`GeoMap` unloads least-recently-used sources over its byte budget).
    """

    path: str
    crs: pyproj.CRS
    transform: affine.Affine
    width: int
    height: int
    kind: str = "raster"
    name: str = ""
    _rgb: np.ndarray | None = field(default=None, repr=False, compare=False)
    _valid: np.ndarray | None = field(default=None, repr=False, compare=False)
    _levels: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = Path(self.path).name if self.path != MEMORY_PATH else MEMORY_PATH
        self.crs = geo.parse_crs(self.crs, f"CRS of {self.path}")
        self.transform = _to_affine(self.transform, self.path)
        self._inv = ~self.transform
        if self.width <= 0 or self.height <= 0:
            raise MapError(f"{self.path}: empty image ({self.width}x{self.height})")
        self.crs_key = geo.crs_key(self.crs)
        cx, cy = self.transform @ (np.array([0, self.width, self.width, 0.0]), np.array([0, 0, self.height, self.height]))
        # Footprint bounding box in the source's own CRS.
        self.bbox = (float(np.min(cx)), float(np.min(cy)), float(np.max(cx)), float(np.max(cy)))

    @property
    def loaded(self) -> bool:
        """Whether the pixels are in memory."""
        return self._rgb is not None

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached pixels (all pyramid levels)."""
        if self._rgb is None:
            return 0
        return self._rgb.nbytes + self._valid.nbytes + sum(a.nbytes + m.nbytes for a, m in self._levels.values())

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB and (H, W) bool valid mask (alpha > 0, nodata respected); cached."""
        if self._rgb is None:
            if self.kind == "memory":
                raise MapError(f"in-memory source {self.name!r} has no pixels")
            reader = _read_image_file if self.kind == "image" else _read_raster_file
            rgb, valid = reader(self.path)
            if rgb.shape[:2] != (self.height, self.width):
                raise MapError(
                    f"{self.path}: image is {rgb.shape[1]}x{rgb.shape[0]} px, expected {self.width}x{self.height}"
                )
            self._rgb, self._valid = rgb, valid
        return self._rgb, self._valid

    def unload(self) -> None:
        """Drop cached pixels (no-op for in-memory sources)."""
        if self.kind != "memory":
            self._rgb = self._valid = None
        self._levels.clear()

    def level(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Pyramid level ``k`` (image halved ``k`` times by 2x2 box averaging) as (RGB uint8, valid float32).

        Level-k pixel-corner coordinates are level-0 corner coordinates divided by ``2**k``. A level-k
        pixel is fully valid (1.0) only when every level-0 pixel under it is valid.
        """
        if k in self._levels:
            return self._levels[k]
        if k == 0:
            rgb, valid = self.load()
            out = (rgb, valid.astype(np.float32))
        else:
            rgb, mask = self.level(k - 1)
            h, w = rgb.shape[:2]
            if h % 2 or w % 2:
                pad = ((0, h % 2), (0, w % 2))
                rgb = np.pad(rgb, pad + ((0, 0),), mode="edge")
                mask = np.pad(mask, pad, mode="edge")
            size = (max(1, rgb.shape[1] // 2), max(1, rgb.shape[0] // 2))
            out = (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
                   cv2.resize(mask, size, interpolation=cv2.INTER_AREA))
        self._levels[k] = out
        return out

    def pixel_size_m(self) -> float:
        """Approximate ground size of one pixel at the image centre, metres (geodesic)."""
        k = max(1.0, min(self.width, self.height) / 10.0)
        cols = np.array([self.width / 2.0, self.width / 2.0 + k, self.width / 2.0])
        rows = np.array([self.height / 2.0, self.height / 2.0, self.height / 2.0 + k])
        xs, ys = self.transform @ (cols, rows)
        lon, lat = geo.transform(xs, ys, self.crs, geo.WGS84)
        d = geo.distance_m(lat[[0, 0]], lon[[0, 0]], lat[1:], lon[1:]) / k
        return float(np.sqrt(d[0] * d[1]))


def _outline(src: RasterSource, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Densified footprint outline of a source in its own CRS."""
    t = np.linspace(0.0, 1.0, n + 1)
    w, h = float(src.width), float(src.height)
    cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    return src.transform @ (cols, rows)


class GeoMap:
    """A reference map: ordered georeferenced images sampled as one (first valid source wins)."""

    def __init__(
        self,
        name: str,
        sources: list[RasterSource],
        working_crs: object | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if not sources:
            raise MapError(f"map {name!r} has no images")
        self.name = name
        self.sources = list(sources)
        self.cache_bytes = int(cache_bytes)
        self._lru: OrderedDict[int, RasterSource] = OrderedDict()
        self._bounds_cache: dict[str, tuple[float, float, float, float]] = {}
        lon0, lat0, lon1, lat1 = self.bounds(geo.WGS84)
        self._center = ((lat0 + lat1) / 2.0, (lon0 + lon1) / 2.0)
        if not all(math.isfinite(v) for v in self._center):
            raise MapError(f"map {name!r}: footprint cannot be expressed in WGS84 latitude/longitude")
        self.working_crs = geo.utm_crs_for(*self._center) if working_crs is None else geo.parse_crs(working_crs)
        self._src_gsd = [s.pixel_size_m() for s in self.sources]
        self.native_gsd_m = float(np.median(self._src_gsd))

    def __repr__(self) -> str:
        return (f"GeoMap({self.name!r}, {len(self.sources)} sources, working_crs={geo.crs_key(self.working_crs)}, "
                f"native_gsd_m={self.native_gsd_m:.3f})")

    def bounds(self, crs: object | None = None) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the union of all source footprints in ``crs`` (default working CRS)."""
        dst = self.working_crs if crs is None else crs
        key = geo.crs_key(dst)
        if key not in self._bounds_cache:
            xs, ys = [], []
            for s in self.sources:
                ox, oy = _outline(s)
                tx, ty = geo.transform(ox, oy, s.crs, dst)
                ok = np.isfinite(tx) & np.isfinite(ty)
                xs.append(tx[ok])
                ys.append(ty[ok])
            x, y = np.concatenate(xs), np.concatenate(ys)
            if x.size == 0:
                raise MapError(f"map {self.name!r}: footprint cannot be expressed in {key}")
            self._bounds_cache[key] = (float(x.min()), float(y.min()), float(x.max()), float(y.max()))
        return self._bounds_cache[key]

    def center_latlon(self) -> tuple[float, float]:
        """(lat, lon) of the centre of the map's WGS84 bounding box."""
        return self._center

    def _touch(self, i: int) -> None:
        src = self.sources[i]
        self._lru[i] = src
        self._lru.move_to_end(i)
        total = sum(s.nbytes for s in self._lru.values())
        while total > self.cache_bytes and len(self._lru) > 1:
            j, old = next(iter(self._lru.items()))
            if j == i:
                break
            total -= old.nbytes
            old.unload()
            del self._lru[j]

    def sample(self, x, y, crs: object | None = None, gsd_m: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Bilinearly sample the map at ground points.

        ``x``, ``y``: same-shape (or broadcastable) coordinate arrays in ``crs`` (default working CRS;
        ``"EPSG:4326"`` means x = lon, y = lat). Returns ``rgb`` (..., 3) uint8 and ``valid`` (...) bool; a point
        is valid only inside a source footprint and on valid (non-hole) pixels (all bilinear neighbours
        valid). Where sources overlap, the first valid one wins. Invalid points are black.

        ``gsd_m`` (optional): the ground spacing of the query points in metres. When it is coarser than a
        source's pixels the source is first box-averaged by powers of two (anti-aliasing) so that its
        pixels stay at most ``gsd_m`` big; ``None`` samples the full-resolution image.
        """
        rgb, valid, _ = self.sample_with_sources(x, y, crs, gsd_m)
        return rgb, valid

    def sample_with_sources(
        self, x, y, crs: object | None = None, gsd_m: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`sample`, plus an int32 array of the index in ``sources`` each point came from (-1: invalid)."""
        xa, ya = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        shape = xa.shape
        xf, yf = xa.ravel(), ya.ravel()
        n = xf.size
        rgb = np.zeros((n, 3), np.uint8)
        valid = np.zeros(n, bool)
        index = np.full(n, -1, np.int32)
        qcrs = self.working_crs if crs is None else geo.parse_crs(crs, "query CRS")
        finite = np.isfinite(xf) & np.isfinite(yf)
        per_crs: dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float, float] | None]] = {}
        if gsd_m is not None and not (gsd_m > 0 and math.isfinite(gsd_m)):
            raise InputError(f"gsd_m must be a positive number, got {gsd_m}")
        for i, src in enumerate(self.sources):
            pending = finite & ~valid
            if n == 0 or not pending.any():
                break
            if src.crs_key not in per_crs:
                tx, ty = geo.transform(xf, yf, qcrs, src.crs)
                ok = finite & np.isfinite(tx) & np.isfinite(ty)
                bb = (float(tx[ok].min()), float(ty[ok].min()), float(tx[ok].max()), float(ty[ok].max())) \
                    if ok.any() else None
                per_crs[src.crs_key] = (tx, ty, bb)
            tx, ty, bb = per_crs[src.crs_key]
            if bb is None or bb[2] < src.bbox[0] or bb[0] > src.bbox[2] or bb[3] < src.bbox[1] or bb[1] > src.bbox[3]:
                continue
            sel = np.flatnonzero(pending)
            with np.errstate(invalid="ignore"):
                col, row = src._inv @ (tx[sel], ty[sel])
                inside = (col >= 0) & (col <= src.width) & (row >= 0) & (row <= src.height)
            if not inside.any():
                continue
            sel, col, row = sel[inside], col[inside], row[inside]
            k = 0
            if gsd_m is not None and gsd_m > self._src_gsd[i] > 0:
                k = math.floor(math.log2(gsd_m / self._src_gsd[i]) + 1e-6)
                k = max(0, min(k, int(math.log2(max(src.width, src.height)))))
            img, mask = src.level(k)
            self._touch(i)
            s = float(2**k)
            u = col / s - 0.5
            v = row / s - 0.5
            vals, ok = _remap_points(img, mask, u, v)
            good = sel[ok]
            rgb[good] = vals[ok]
            valid[good] = True
            index[good] = i
        return rgb.reshape(shape + (3,)), valid.reshape(shape), index.reshape(shape)

    def unload(self) -> None:
        """Drop all cached file pixels (in-memory sources keep theirs)."""
        for s in self.sources:
            s.unload()
        self._lru.clear()


def _remap_points(img: np.ndarray, mask: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of ``img``/``mask`` at pixel-centre coordinates (u, v) (1-D), via cv2.remap.

    Points are processed in spatial blocks so that each cropped source window and each remap stays
    below OpenCV's SHRT_MAX limits. Returns (rgb (k,3) uint8, valid (k,) bool).
    """
    h, w = img.shape[:2]
    out = np.zeros((u.size, 3), np.uint8)
    ok = np.zeros(u.size, bool)
    bu = np.floor(u / _REMAP_LIMIT).astype(np.int64)
    bv = np.floor(v / _REMAP_LIMIT).astype(np.int64)
    if bu.min() == bu.max() and bv.min() == bv.max():
        groups = [np.arange(u.size)]
    else:
        keys = bu * 1_000_003 + bv
        order = np.argsort(keys, kind="stable")
        splits = np.flatnonzero(np.diff(keys[order])) + 1
        groups = np.split(order, splits)
    for g in groups:
        ug, vg = u[g], v[g]
        c0 = max(0, math.floor(ug.min()) - 1)
        c1 = min(w, math.floor(ug.max()) + 3)
        r0 = max(0, math.floor(vg.min()) - 1)
        r1 = min(h, math.floor(vg.max()) + 3)
        sub_img = img[r0:r1, c0:c1]
        sub_mask = mask[r0:r1, c0:c1]
        m = g.size
        rows = -(-m // _REMAP_COLS)
        pad = rows * _REMAP_COLS - m
        mx = np.pad((ug - c0).astype(np.float32), (0, pad)).reshape(rows, _REMAP_COLS)
        my = np.pad((vg - r0).astype(np.float32), (0, pad)).reshape(rows, _REMAP_COLS)
        for a in range(0, rows, _REMAP_LIMIT // 2):
            b = min(rows, a + _REMAP_LIMIT // 2)
            # BORDER_REPLICATE: points in the outer half pixel of an image take the edge pixel (the
            # footprint test has already excluded everything outside the image).
            vals = cv2.remap(sub_img, mx[a:b], my[a:b], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            mv = cv2.remap(sub_mask, mx[a:b], my[a:b], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            lo, hi = a * _REMAP_COLS, min(m, b * _REMAP_COLS)
            out[g[lo:hi]] = vals.reshape(-1, 3)[: hi - lo]
            ok[g[lo:hi]] = mv.reshape(-1)[: hi - lo] >= 1.0 - _VALID_EPS
    return out, ok


# ---------------------------------------------------------------------------------------------- readers


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, UnidentifiedImageError) as exc:
        raise MapError(f"cannot read image {path}: {exc}") from None


def _require(path: object, what: str = "map") -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise MapError(f"{what} not found: {p}")
    return p


def open_map(path: object, working_crs: object | None = None) -> GeoMap:
    """Open a reference map, detecting its format.

    ``path`` may be: a GeoTIFF (or any GDAL raster) file; a folder with ``map.csv`` (corner CSV, or the
    ``map.csv`` file itself); a slippy ``z/x/y.(png|jpg)`` folder; or a folder of GeoTIFF files (a mosaic).
    Anything else raises :class:`MapError` naming the path.
    """
    p = _require(path)
    if p.is_file():
        if p.name.lower() == CORNER_CSV:
            return read_corner_csv(p.parent, working_crs=working_crs)
        return read_geotiff(p, working_crs=working_crs)
    if (p / CORNER_CSV).is_file():
        return read_corner_csv(p, working_crs=working_crs)
    if _slippy_zooms(p):
        return read_slippy(p, working_crs=working_crs)
    tifs = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in GEOTIFF_SUFFIXES)
    if tifs:
        sources = [_geotiff_source(q) for q in tifs]
        return GeoMap(p.name, sources, working_crs=working_crs)
    raise MapError(f"{p}: not a map folder (no {CORNER_CSV}, no z/x/y slippy tiles, no GeoTIFF files)")


def _geotiff_source(path: Path) -> RasterSource:
    import rasterio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
                has_gcps = bool(ds.gcps[0])
    except rasterio.errors.RasterioError as exc:
        raise MapError(f"cannot read raster {path}: {exc}") from None
    if crs is None:
        hint = " (it has only ground control points: warp it first, e.g. gdalwarp)" if has_gcps else ""
        raise MapError(f"{path}: no CRS / georeferencing{hint}")
    if transform == affine.Affine.identity():
        raise MapError(f"{path}: no geotransform (georeferencing)")
    epsg = crs.to_epsg()
    pcrs = geo.parse_crs(f"EPSG:{epsg}" if epsg else crs.to_wkt(), f"CRS of {path}")
    return RasterSource(str(path), pcrs, transform, width, height, kind="raster")


def read_geotiff(path: object, working_crs: object | None = None) -> GeoMap:
    """A map from one GeoTIFF (any GDAL raster, any CRS); no CRS or geotransform -> MapError naming the file."""
    p = _require(path, "GeoTIFF")
    if p.is_dir():
        raise MapError(f"{p}: is a folder, expected a GeoTIFF file")
    return GeoMap(p.stem, [_geotiff_source(p)], working_crs=working_crs)


def _norm_col(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.strip().strip('"').strip("'").lower())


_CSV_COLUMNS = {
    "Filename": lambda c: c in ("filename", "file", "image", "imagename", "img", "name", "path", "imagepath"),
    "Top_left_lat": lambda c: re.fullmatch(r"(topleft|tl|upperleft|ul)(lat|latitude)", c) is not None,
    "Top_left_lon": lambda c: re.fullmatch(r"(topleft|tl|upperleft|ul)(lon|long|lng|longitude)", c) is not None,
    "Bottom_right_lat": lambda c: re.fullmatch(r"(bottomright|br|lowerright|lr)(lat|latitude)", c) is not None,
    "Bottom_right_lon": lambda c: re.fullmatch(r"(bottomright|br|lowerright|lr)(lon|long|lng|longitude)", c)
    is not None,
}


def read_corner_csv(folder: object, working_crs: object | None = None) -> GeoMap:
    """A map from a folder of north-up images listed in ``map.csv`` with WGS84 corner coordinates.

    Header (case, spacing, quotes and ``_lon``/``_long`` variations tolerated):
    ``Filename,Top_left_lat,Top_left_lon,Bottom_right_lat,Bottom_right_long``. The corners are the outer
    corners of the top-left and bottom-right pixels; each image becomes an EPSG:4326 source (x = lon,
    y = lat). Missing columns, bad numbers, inverted corners and missing images raise MapError naming them.
    """
    d = _require(folder, "map folder")
    if d.is_file():
        d = d.parent
    csv_path = d / CORNER_CSV
    if not csv_path.is_file():
        raise MapError(f"{d}: no {CORNER_CSV}")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError(f"cannot read {csv_path}: {exc}") from None
    rows = [r for r in csv.reader(text.splitlines(), skipinitialspace=True) if any(c.strip() for c in r)]
    if not rows:
        raise MapError(f"{csv_path}: empty file")
    header = [_norm_col(c) for c in rows[0]]
    idx = {}
    for canon, match in _CSV_COLUMNS.items():
        hits = [j for j, c in enumerate(header) if match(c)]
        if not hits:
            raise MapError(f"{csv_path}: missing column {canon!r} (header: {', '.join(c.strip() for c in rows[0])})")
        idx[canon] = hits[0]
    if len(rows) < 2:
        raise MapError(f"{csv_path}: no image rows")
    sources = []
    for lineno, r in enumerate(rows[1:], start=2):
        if len(r) <= max(idx.values()):
            raise MapError(f"{csv_path}: line {lineno} has {len(r)} fields, expected {len(header)}")
        fname = r[idx["Filename"]].strip().strip('"').strip("'")
        try:
            tl_lat, tl_lon, br_lat, br_lon = (
                float(r[idx[k]].strip().strip('"'))
                for k in ("Top_left_lat", "Top_left_lon", "Bottom_right_lat", "Bottom_right_lon")
            )
        except ValueError:
            raise MapError(f"{csv_path}: line {lineno}: non-numeric corner coordinate in {r}") from None
        if not all(math.isfinite(v) for v in (tl_lat, tl_lon, br_lat, br_lon)):
            raise MapError(f"{csv_path}: line {lineno}: non-finite corner coordinate")
        if not (-90 <= br_lat < tl_lat <= 90 and -180 <= tl_lon < br_lon <= 180):
            raise MapError(
                f"{csv_path}: line {lineno} ({fname}): corners must have top lat > bottom lat and left lon < right "
                f"lon, got TL=({tl_lat}, {tl_lon}) BR=({br_lat}, {br_lon})"
            )
        img_path = d / fname
        if not fname or not img_path.is_file():
            raise MapError(f"{csv_path}: line {lineno}: image file not found: {img_path}")
        w, h = _image_size(img_path)
        t = affine.Affine((br_lon - tl_lon) / w, 0.0, tl_lon, 0.0, (br_lat - tl_lat) / h, tl_lat)
        sources.append(RasterSource(str(img_path), geo.WGS84, t, w, h, kind="image", name=fname))
    return GeoMap(d.name, sources, working_crs=working_crs)


def _is_int_name(p: Path) -> bool:
    return p.is_dir() and p.name.isdigit()


def _slippy_zooms(folder: Path) -> list[int]:
    zooms = []
    for zdir in folder.iterdir():
        if not _is_int_name(zdir) or int(zdir.name) > 30:
            continue
        for xdir in zdir.iterdir():
            if _is_int_name(xdir) and any(
                f.suffix.lower() in IMAGE_SUFFIXES and f.stem.isdigit() for f in xdir.iterdir()
            ):
                zooms.append(int(zdir.name))
                break
    return sorted(zooms)


def slippy_tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """EPSG:3857 (xmin, ymin, xmax, ymax) of XYZ tile (z, x, y) (y = 0 at the north edge)."""
    span = 2.0 * _WEB_MERCATOR_HALF / (2**z)
    xmin = -_WEB_MERCATOR_HALF + x * span
    ymax = _WEB_MERCATOR_HALF - y * span
    return xmin, ymax - span, xmin + span, ymax


def read_slippy(folder: object, zoom: int | None = None, working_crs: object | None = None) -> GeoMap:
    """A map from a slippy (XYZ, Google/OSM numbering) tile tree ``folder/z/x/y.(png|jpg)``.

    Each tile is an EPSG:3857 source over its Web Mercator tile bounds. ``zoom`` defaults to the highest
    zoom level present; a zoom that is absent raises MapError naming the folder.
    """
    d = _require(folder, "slippy tile folder")
    if not d.is_dir():
        raise MapError(f"{d}: expected a z/x/y tile folder")
    zooms = _slippy_zooms(d)
    if not zooms:
        raise MapError(f"{d}: no z/x/y.(png|jpg) tiles")
    z = zooms[-1] if zoom is None else int(zoom)
    if z not in zooms:
        raise MapError(f"{d}: no tiles at zoom {z} (zooms present: {zooms})")
    sources = []
    n = 2**z
    for xdir in sorted((p for p in (d / str(z)).iterdir() if _is_int_name(p)), key=lambda p: int(p.name)):
        tiles = [f for f in xdir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and f.stem.isdigit()]
        for f in sorted(tiles, key=lambda f: int(f.stem)):
            x, y = int(xdir.name), int(f.stem)
            if x >= n or y >= n:
                raise MapError(f"{f}: tile index out of range for zoom {z}")
            w, h = _image_size(f)
            xmin, ymin, xmax, ymax = slippy_tile_bounds(z, x, y)
            t = affine.Affine((xmax - xmin) / w, 0.0, xmin, 0.0, -(ymax - ymin) / h, ymax)
            sources.append(RasterSource(str(f), "EPSG:3857", t, w, h, kind="image", name=f"{z}/{x}/{f.name}"))
    return GeoMap(f"{d.name}_z{z}", sources, working_crs=working_crs)


def _check_rgb(rgb: object, valid: object | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{what}: expected an (H, W, 3) RGB or (H, W, 4) RGBA array, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise InputError(f"{what}: expected uint8 pixels, got {a.dtype}")
    m = np.ones(a.shape[:2], bool)
    if a.shape[2] == 4:
        m &= a[:, :, 3] > 0
        a = a[:, :, :3]
    if valid is not None:
        v = np.asarray(valid)
        if v.shape != a.shape[:2]:
            raise InputError(f"{what}: valid mask shape {v.shape} does not match image {a.shape[:2]}")
        m &= v.astype(bool)
    return np.ascontiguousarray(a), m


def map_from_array(
    rgb: np.ndarray,
    crs: object,
    transform: object,
    name: str = "memory",
    valid: np.ndarray | None = None,
    working_crs: object | None = None,
) -> GeoMap:
    """An in-memory map from an (H, W, 3) uint8 RGB (or RGBA) array, its CRS and GDAL affine transform.

    ``valid`` (H, W) bool marks usable pixels (default all; an alpha channel also counts). ``transform`` is an
    ``affine.Affine`` or 6 numbers (a, b, c, d, e, f) in Affine order. Unknown CRS -> MapError.
    """
    a, m = _check_rgb(rgb, valid, f"map {name!r}")
    src = RasterSource(MEMORY_PATH, geo.parse_crs(crs, f"CRS of map {name!r}"), transform, a.shape[1], a.shape[0],
                       kind="memory", name=name)
    src._rgb, src._valid = a, m
    return GeoMap(name, [src], working_crs=working_crs)


def write_geotiff(path: object, rgb: np.ndarray, crs: object, transform: object, valid: np.ndarray | None = None) -> Path:
    """Write an RGB GeoTIFF (deflate, tiled when large); with ``valid`` (or RGBA input) an alpha band marks holes."""
    import rasterio
    from rasterio.enums import ColorInterp

    p = Path(path)
    a, m = _check_rgb(rgb, valid, str(p))
    has_alpha = valid is not None or np.asarray(rgb).shape[-1] == 4
    pcrs = geo.parse_crs(crs, f"CRS for {p}")
    t = _to_affine(transform, str(p))
    epsg = pcrs.to_epsg()
    rcrs = rasterio.crs.CRS.from_epsg(epsg) if epsg else rasterio.crs.CRS.from_wkt(pcrs.to_wkt())
    h, w = a.shape[:2]
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": 4 if has_alpha else 3, "dtype": "uint8",
        "crs": rcrs, "transform": t, "compress": "deflate", "photometric": "RGB",
    }
    if w >= 512 and h >= 512:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if not p.parent.is_dir():
        raise MapError(f"cannot write {p}: folder {p.parent} does not exist")
    try:
        with rasterio.open(p, "w", **profile) as ds:
            ds.write(np.moveaxis(a, -1, 0), [1, 2, 3])
            interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            if has_alpha:
                ds.write((m * 255).astype(np.uint8), 4)
                interp.append(ColorInterp.alpha)
            ds.colorinterp = interp
    except rasterio.errors.RasterioError as exc:
        raise MapError(f"cannot write {p}: {exc}") from None
    return p
