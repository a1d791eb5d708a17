"""Simulation: a seeded procedural world (test and demo data) and a camera simulator over any GeoMap.

- :mod:`.world`: :class:`WorldConfig`, :func:`make_world`, :class:`World`, :func:`write_world`.
- :mod:`.camera_sim`: :class:`Pose`, :func:`render_view`, :class:`Photometric`, :func:`random_photometric`,
  :func:`apply_photometric`, :func:`flight_path`, :func:`lawnmower_waypoints`, :func:`random_poses`,
  :func:`simulate_flight`.
"""

from .camera_sim import (
    Photometric,
    Pose,
    SimFrame,
    apply_photometric,
    flight_path,
    footprint_latlon,
    ground_gsd_m,
    ground_points,
    lawnmower_waypoints,
    random_photometric,
    random_poses,
    render_view,
    simulate_flight,
)
from .world import CLASSES, LAYER_DOC, SEASONS, World, WorldConfig, make_world, write_world

__all__ = [
    "CLASSES", "LAYER_DOC", "SEASONS", "Photometric", "Pose", "SimFrame", "World", "WorldConfig",
    "apply_photometric", "flight_path", "footprint_latlon", "ground_gsd_m", "ground_points",
    "lawnmower_waypoints", "make_world", "random_photometric", "random_poses", "render_view",
    "simulate_flight", "write_world",
]
