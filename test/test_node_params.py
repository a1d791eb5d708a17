"""The localizer node's parameters reach the core configs they name (one definition: the node maps, the core
validates), and the node's defaults are the core's."""

from __future__ import annotations

import dataclasses

import pytest

from gleam_ros.core.errors import ConfigError
from gleam_ros.core.localizer import LocalizerConfig
from gleam_ros.core.vehicle import OdometrySample, VehicleConfig, VehicleLocalizer
from gleam_ros.nodes import localizer_node, vehicle_input

DEFAULTS = {p.name: p.default for p in localizer_node.PARAMETERS}


def _get(**over):
    values = {**DEFAULTS, **over}
    return values.__getitem__


def test_uav_parameters_reach_the_localizer_config():
    base = LocalizerConfig()
    cfg = localizer_node.localizer_config(_get())
    for name in ("view_search", "attitude_std_deg", "heading_std_deg", "top_k", "n_rotations", "modality"):
        assert getattr(cfg, name) == getattr(base, name), name  # the node's defaults are the core's
    cfg = localizer_node.localizer_config(_get(view_search=False, attitude_std_deg=2.5, heading_std_deg=12.0,
                                               top_k=3, verify_features="orb", min_inliers=40))
    assert (cfg.view_search, cfg.attitude_std_deg, cfg.heading_std_deg, cfg.top_k) == (False, 2.5, 12.0, 3)
    assert (cfg.verify.features, cfg.verify.min_inliers) == ("orb", 40)
    assert set(localizer_node.LOCALIZER_CONFIG_PARAMS) <= set(DEFAULTS)
    with pytest.raises(ConfigError, match="attitude_std_deg"):
        localizer_node.localizer_config(_get(attitude_std_deg=45.0))


def test_vehicle_parameters_reach_the_vehicle_config():
    params = {k: DEFAULTS[k] for k in vehicle_input.VEHICLE_CONFIG_PARAMS}
    cfg = vehicle_input.vehicle_config("ground", params)
    base = VehicleConfig()
    for name in vehicle_input.VEHICLE_CONFIG_PARAMS:
        assert getattr(cfg, name) == getattr(base, name), name
    cfg = vehicle_input.vehicle_config("panorama", {**params, "max_body_tilt_deg": 8.0, "camera_height_m": 2.1,
                                                    "along_road_check": False, "static_ground_check": False,
                                                    "coast_distance_m": 0.0, "bev_focal_px": 320.0,
                                                    "sustained_evidence": False})
    assert (cfg.modality, cfg.max_body_tilt_deg, cfg.camera_height_m) == ("panorama", 8.0, 2.1)
    assert cfg.along_road_check is False and cfg.static_ground_check is False and cfg.coast_distance_m == 0.0
    assert cfg.bev_focal_px == 320.0 and cfg.sustained_evidence is False
    with pytest.raises(ConfigError, match="max_body_tilt_deg"):
        vehicle_input.vehicle_config("ground", {**params, "max_body_tilt_deg": 60.0})


@pytest.mark.parametrize("limit,used", [(15.0, True), (8.0, False)])
def test_max_body_tilt_decides_whether_the_odometry_attitude_is_used(limit, used):
    """A 10 deg body pitch from the odometry is projected with under the default limit, and refused (mounting pitch
    alone, with the reason) under max_body_tilt_deg 8."""
    cfg = dataclasses.replace(VehicleConfig(), max_body_tilt_deg=limit, road_tilt_tau_s=0.0)  # the attitude as is
    loc = VehicleLocalizer(None, None, cfg)  # no embedding: neither backend nor index is touched here
    for k in range(5):
        assert loc.on_odometry(OdometrySample(0.1 * k, 5.0, 0.0, 0.05, 0.005, pitch_deg=10.0, roll_deg=1.0)) is None
    pitch, roll, why = loc._body_attitude(0.4)
    if used:
        assert (pitch, roll, why) == (10.0, 1.0, "")
    else:
        assert (pitch, roll) == (0.0, 0.0) and "8" in why, why
