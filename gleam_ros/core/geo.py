"""Coordinate transforms (all through pyproj): WGS84, UTM working frames and local ENU.

One definition of every geodetic conversion in the project; nothing else hand-rolls them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pyproj

from .errors import ConfigError, MapError

WGS84 = "EPSG:4326"
_GEOD = pyproj.Geod(ellps="WGS84")


def parse_crs(crs: object, what: str = "CRS") -> pyproj.CRS:
    """Parse anything pyproj understands (EPSG code, WKT, PROJ string, CRS) or raise MapError."""
    if isinstance(crs, pyproj.CRS):
        return crs
    try:
        return pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as exc:
        raise MapError(f"unknown {what} {crs!r}: {exc}") from None


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS.from_user_input(src), pyproj.CRS.from_user_input(dst), always_xy=True)


def crs_key(crs: object) -> str:
    """A hashable string that identifies a CRS (EPSG code when it has one, else WKT); cached."""
    if isinstance(crs, pyproj.CRS):
        return _crs_key_cached(crs.srs)
    if isinstance(crs, str):
        return _crs_key_cached(crs)
    return _crs_key_uncached(crs)


@lru_cache(maxsize=256)
def _crs_key_cached(text: str) -> str:
    return _crs_key_uncached(text)


def _crs_key_uncached(crs: object) -> str:
    c = parse_crs(crs)
    epsg = c.to_epsg()  # ~20 ms for a CRS without an EPSG code: hence the cache above
    return f"EPSG:{epsg}" if epsg else c.to_wkt()


def get_transformer(src: object, dst: object) -> pyproj.Transformer:
    """Cached pyproj transformer with x=lon/easting, y=lat/northing axis order."""
    return _transformer(crs_key(src), crs_key(dst))


def transform(xs, ys, src: object, dst: object) -> tuple[np.ndarray, np.ndarray]:
    """Transform coordinate arrays from ``src`` to ``dst`` (x/lon first)."""
    if crs_key(src) == crs_key(dst):
        return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    x, y = get_transformer(src, dst).transform(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
    return np.asarray(x), np.asarray(y)


def utm_crs_for(lat: float, lon: float) -> pyproj.CRS:
    """The WGS84 UTM zone CRS containing (lat, lon)."""
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ConfigError(f"latitude/longitude out of range: ({lat}, {lon})")
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return pyproj.CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


class LocalFrame:
    """Local east-north-up tangent plane at (lat0, lon0, h0), metres (REP-103 ENU)."""

    def __init__(self, lat0: float, lon0: float, h0: float = 0.0) -> None:
        if not (math.isfinite(lat0) and math.isfinite(lon0) and -90 <= lat0 <= 90 and -180 <= lon0 <= 180):
            raise ConfigError(f"ENU origin out of range: ({lat0}, {lon0})")
        self.lat0, self.lon0, self.h0 = float(lat0), float(lon0), float(h0)
        pipeline = (
            "+proj=pipeline +step +proj=axisswap +order=2,1 +step +proj=unitconvert +xy_in=deg +xy_out=rad "
            "+step +proj=cart +ellps=WGS84 "
            f"+step +proj=topocentric +ellps=WGS84 +lat_0={self.lat0!r} +lon_0={self.lon0!r} +h_0={self.h0!r}"
        )
        self._fwd = pyproj.Transformer.from_pipeline(pipeline)

    def to_enu(self, lat, lon, h=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """WGS84 (deg, deg, ellipsoidal m) to local ENU metres."""
        lat, lon, h = np.broadcast_arrays(np.asarray(lat, float), np.asarray(lon, float), np.asarray(h, float))
        e, n, u = self._fwd.transform(lat, lon, h)
        return np.asarray(e), np.asarray(n), np.asarray(u)

    def to_geodetic(self, e, n, u=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local ENU metres to WGS84 (lat deg, lon deg, ellipsoidal h m)."""
        e, n, u = np.broadcast_arrays(np.asarray(e, float), np.asarray(n, float), np.asarray(u, float))
        lat, lon, h = self._fwd.transform(e, n, u, direction=pyproj.enums.TransformDirection.INVERSE)
        return np.asarray(lat), np.asarray(lon), np.asarray(h)

    def __repr__(self) -> str:
        return f"LocalFrame(lat0={self.lat0:.7f}, lon0={self.lon0:.7f}, h0={self.h0:.2f})"


def _lonlat_pairs(lat1, lon1, lat2, lon2) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(v, float) for v in (lon1, lat1, lon2, lat2))


def distance_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Geodesic distance on WGS84, metres."""
    _, _, d = _GEOD.inv(*_lonlat_pairs(lat1, lon1, lat2, lon2))
    return np.asarray(d)


def azimuth_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Forward geodesic azimuth from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    az, _, _ = _GEOD.inv(*_lonlat_pairs(lat1, lon1, lat2, lon2))
    return np.mod(np.asarray(az), 360.0)


def offset_latlon(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """Point at (east_m, north_m) from (lat, lon) in the local ENU plane there."""
    la, lo, _ = LocalFrame(lat, lon).to_geodetic(east_m, north_m, 0.0)
    return float(la), float(lo)


def heading_diff_deg(a, b) -> np.ndarray:
    """Signed smallest difference a - b of two headings, degrees in [-180, 180)."""
    return (np.asarray(a, float) - np.asarray(b, float) + 180.0) % 360.0 - 180.0


def heading_to_enu_yaw(heading_deg: float) -> float:
    """Compass heading (deg clockwise from north) to ENU yaw (rad, counter-clockwise from east)."""
    return math.radians((90.0 - heading_deg + 180.0) % 360.0 - 180.0)


def yaw_quaternion(heading_deg: float) -> tuple[float, float, float, float]:
    """ENU orientation quaternion (x, y, z, w) of a level body with the given compass heading."""
    yaw = heading_to_enu_yaw(heading_deg)
    return (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))
