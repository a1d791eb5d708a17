"""Shared test data for node tests: a tiny procedural world, its tile index, frames at known poses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.encoder import TorchBackend
from gleam_ros.core.geo import offset_latlon
from gleam_ros.core.index import TileIndex
from gleam_ros.core.sim.camera_sim import Pose, render_view
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, iter_tiles

INTR = CameraIntrinsics.from_fov(480, 360, 60.0)
ALT = 120.0


def build_world_index(out: Path):
    """(satellite GeoMap, index directory) of a 420 m procedural world, 100 m tiles at 0.25 m/px."""
    geomap = make_world(WorldConfig(seed=3, size_m=420.0, gsd_m=0.3)).satellite_map()
    index = TileIndex.build(iter_tiles(geomap, TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)),
                            TorchBackend(threads=1), progress=False)
    index.save(out / "index")
    return geomap, out / "index"


def truth_pose(geomap, k: int) -> Pose:
    """k-th pose of a northbound path over the middle of the world (heading near north)."""
    lat0, lon0 = geomap.center_latlon()
    lat, lon = offset_latlon(lat0, lon0, 20.0 * math.sin(k / 4.0), -60.0 + 5.0 * k)
    return Pose(t=float(k), lat=lat, lon=lon, alt_m=ALT, heading_deg=(8.0 * math.sin(k / 3.0)) % 360.0)


def render(geomap, pose: Pose) -> np.ndarray:
    """The nadir camera frame at ``pose`` (must be fully over the map)."""
    rgb, valid = render_view(geomap, pose, INTR)
    assert valid.mean() > 0.99
    return rgb
