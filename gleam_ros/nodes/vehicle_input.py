"""Vehicle odometry between the ``odom`` subscription and the localizer node's worker (no ROS types here).

The subscription callback only converts and stores (:meth:`OdometryBuffer.push`); the worker hands the
samples to :meth:`gleam_ros.core.vehicle.VehicleLocalizer.on_odometry` in arrival order, each one before
the first frame stamped at or after it (:meth:`OdometryBuffer.take_until`), so propagation never runs
ahead of the frame being localized. The localizer judges each sample (NaN, out of order, late,
implausible jump); the buffer counts what it rejected and keeps the last reason for /diagnostics.
"""

from __future__ import annotations

import collections
import math
import threading
from typing import Any


class OdometryBuffer:
    """Odometry samples waiting for the worker, with the counters /diagnostics reports (thread-safe).

    ``maxlen`` bounds the wait queue (a stalled worker never grows memory): the oldest sample is dropped
    and counted as rejected with the reason ``overflow``.
    """

    def __init__(self, maxlen: int = 4096) -> None:
        self._lock = threading.Condition()
        self._queue: collections.deque[Any] = collections.deque()
        self._maxlen = int(maxlen)
        self.received = 0
        self.rejected = 0
        self.last_reason = ""
        self.last_receive_time = math.nan  # node clock, s
        self.last_sample_t = math.nan  # stamp of the newest sample received, s

    def push(self, sample: Any, t_recv: float) -> None:
        """Store one converted sample (from the subscription callback)."""
        with self._lock:
            self.received += 1
            self.last_receive_time = t_recv
            self.last_sample_t = float(sample.t)
            self._queue.append(sample)
            if len(self._queue) > self._maxlen:
                self._queue.popleft()
                self._reject_locked(f"overflow: more than {self._maxlen} samples waiting for a frame")
            self._lock.notify_all()

    def wait_for(self, t: float, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until a sample stamped at or after ``t`` has arrived: odometry and
        camera come on separate topics, and the reading of a frame's time may arrive just after the frame."""
        with self._lock:
            return self._lock.wait_for(lambda: self.last_sample_t >= t, timeout=timeout_s)

    def reject(self, reason: str) -> None:
        """Count a sample that could not be used (conversion failed, or the localizer refused it)."""
        with self._lock:
            self._reject_locked(reason)

    def _reject_locked(self, reason: str) -> None:
        self.rejected += 1
        self.last_reason = reason

    def take_until(self, t: float) -> list[Any]:
        """Remove and return, in arrival order, every waiting sample stamped at or before ``t``."""
        with self._lock:
            out = [s for s in self._queue if not s.t > t]  # NaN stamps go out too: the localizer rejects them
            if out:
                self._queue = collections.deque(s for s in self._queue if s.t > t)
            return out

    def feed(self, localizer: Any, t: float, wait_s: float = 0.0) -> int:
        """Hand the samples up to frame time ``t`` to ``localizer.on_odometry`` (after waiting up to ``wait_s``
        for the one of time ``t``); returns how many it refused."""
        if wait_s > 0 and self.received:
            self.wait_for(t, wait_s)
        refused = 0
        for s in self.take_until(t):
            reason = localizer.on_odometry(s)
            if reason:
                refused += 1
                self.reject(str(reason))
        return refused

    def clear(self) -> None:
        """Forget the waiting samples (deactivate, track reset); the counters stay."""
        with self._lock:
            self._queue.clear()

    def age_s(self, now: float) -> float:
        """Seconds since the last sample arrived (node clock); NaN before the first."""
        with self._lock:
            return now - self.last_receive_time if math.isfinite(self.last_receive_time) else math.nan

    def diagnostics(self, now: float) -> dict[str, str]:
        """The odometry values of /diagnostics."""
        age = self.age_s(now)
        with self._lock:
            return {
                "odom_received": str(self.received),
                "odom_rejected": str(self.rejected),
                "odom_last_reject_reason": self.last_reason,
                "odom_age_s": "none received" if math.isnan(age) else f"{age:.2f}",
                "odom_waiting": str(len(self._queue)),
            }


#: Node parameters that are :class:`gleam_ros.core.vehicle.VehicleConfig` fields of the same name.
VEHICLE_CONFIG_PARAMS = ("n_particles", "n_particles_global", "camera_height_m", "camera_pitch_deg",
                         "max_body_tilt_deg", "road_pitch", "road_tilt_tau_s", "along_road_check", "static_ground_check",
                         "coast_distance_m", "sustained_evidence", "odd_frame_check", "bev_focal_px", "trust_spread_m",
                         "trust_min_frames", "max_odom_gap_s")
VEHICLE_MODALITIES = ("ground", "panorama")


def vehicle_config(modality: str, params: dict[str, Any]) -> Any:
    """The core :class:`gleam_ros.core.vehicle.VehicleConfig` of the node's :data:`VEHICLE_CONFIG_PARAMS`
    (ConfigError naming the field for values the core refuses)."""
    from gleam_ros.core.vehicle import VehicleConfig

    return VehicleConfig(modality=modality, **{k: params[k] for k in VEHICLE_CONFIG_PARAMS})


def make_vehicle_localizer(backend: Any, index: Any, modality: str, params: dict[str, Any],
                           road_layer_path: str = "") -> Any:
    """The :class:`gleam_ros.core.vehicle.VehicleLocalizer` the node's parameters describe."""
    from gleam_ros.core.vehicle import RoadLayer, VehicleLocalizer

    cfg = vehicle_config(modality, params)
    roads = RoadLayer.load(road_layer_path) if road_layer_path else None
    return VehicleLocalizer(backend, index, cfg, roads=roads)


def gps_prior(lat: float, lon: float, std_m: float | None, fallback_std_m: float) -> Any:
    """The vehicle localizer's GNSS prior: a PositionPrior of radius 2 sigma (``fallback_std_m`` when the
    receiver reports no covariance)."""
    from gleam_ros.core.localizer import PositionPrior

    sigma = std_m if std_m is not None and math.isfinite(std_m) and std_m > 0 else fallback_std_m
    return PositionPrior(lat, lon, 2.0 * sigma)


def status_values(status: dict[str, Any]) -> dict[str, str]:
    """:meth:`VehicleLocalizer.status` as /diagnostics values (floats with 2 decimals, booleans lower case).

    ``attitude`` says whether the last frame's bird's-eye view used the body attitude of the odometry
    orientation or, and why, the configured mounting pitch alone; ``attitude_fallback_frames`` counts the latter;
    ``road_pitch_deg`` is the learned correction added to mounting + body pitch (a mount error, what the road's tilt
    leaves); ``road_grade_deg`` / ``road_camber_deg`` the road's tilt taken out of the odometry's attitude;
    ``along_road_*`` what the along-road check of a place found by the map search says (``peak`` / ``alias`` /
    ``ambiguous`` / ``unknown``, the profile's best offset and the place's margin over the road either way);
    ``ground_flagged_share`` / ``ground_masked``: the share of the last frame's bird's-eye cells that did not show the
    previous frame's ground (another vehicle) and whether they were left out (the static-ground check);
    ``coasting``: the last fix was kept on odometry through a weak frame that continued the previous view;
    ``sustained_evidence``: the last frame was trusted (or not held against the track) on a run of moderately fitting
    frames, each continuing the one before; ``lookalike_plants``: look-alike places of places the map search
    confirmed that were given particles; ``odd_frames``: frames held back as odd (neither fitting the track nor
    continuing the previous view) that the next frame showed to be spoilt, not a teleport.
    """
    names = {"n_particles": "particles", "n_modes": "modes", "top_mode_weight": "top_mode_weight",
             "spread_m": "spread_m", "appearance_z": "appearance_z", "locked": "locked",
             "global_search": "global_search", "odom_age_s": "odom_lag_s", "kidnaps": "kidnaps",
             "last_reason": "vehicle_last_reason", "attitude": "attitude", "body_pitch_deg": "body_pitch_deg",
             "body_roll_deg": "body_roll_deg", "attitude_fallbacks": "attitude_fallback_frames",
             "road_pitch_deg": "road_pitch_deg", "road_grade_deg": "road_grade_deg",
             "road_camber_deg": "road_camber_deg", "along_road_state": "along_road_state",
             "along_road_best_offset_m": "along_road_best_offset_m", "along_road_margin": "along_road_margin",
             "ground_flagged_share": "ground_flagged_share", "ground_masked": "ground_masked",
             "coasting": "coasting", "sustained_evidence": "sustained_evidence",
             "lookalike_plants": "lookalike_plants", "odd_frames": "odd_frames"}
    out = {}
    for key, name in names.items():
        if key not in status:
            continue
        v = status[key]
        if isinstance(v, bool):
            out[name] = str(v).lower()
        elif isinstance(v, float):
            out[name] = f"{v:.2f}"
        else:
            out[name] = str(v)
    return out
