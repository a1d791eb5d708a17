"""Simulation: a seeded procedural world (test and demo data) and a camera simulator over any GeoMap.

- :mod:`.world`: :class:`WorldConfig`, :func:`make_world`, :class:`World`, :func:`write_world`.
- :mod:`.camera_sim`: :class:`Pose`, :func:`render_view`, :class:`Photometric`, :func:`random_photometric`,
  :func:`apply_photometric`, :func:`flight_path`, :func:`lawnmower_waypoints`, :func:`random_poses`,
  :func:`simulate_flight`.
- :mod:`.street`: street-level views of a world: :class:`GroundPose`, :class:`StreetScene`, :func:`render_ground`,
  :func:`render_panorama`, :func:`road_poses`, :func:`pose_latlon`.
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
from .street import (
    GroundPose,
    StreetLayers,
    StreetScene,
    ground_layers,
    panorama_layers,
    pose_latlon,
    render_ground,
    render_panorama,
    road_poses,
)
from .world import CLASSES, LAYER_DOC, SEASONS, World, WorldConfig, make_world, write_world

__all__ = [
    "CLASSES", "LAYER_DOC", "SEASONS", "Photometric", "Pose", "SimFrame", "World", "WorldConfig",
    "apply_photometric", "flight_path", "footprint_latlon", "ground_gsd_m", "ground_points",
    "lawnmower_waypoints", "make_world", "random_photometric", "random_poses", "render_view",
    "simulate_flight", "write_world",
    "GroundPose", "StreetLayers", "StreetScene", "ground_layers", "panorama_layers", "pose_latlon", "render_ground",
    "render_panorama", "road_poses",
]
