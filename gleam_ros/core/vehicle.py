"""Sequential ground localizer for cars: a particle filter over (east, north, heading) on satellite imagery.

One street-level frame narrows the place down to little; a car moves, so :class:`VehicleLocalizer` localizes
over the drive:

* **motion**: particles are propagated by wheel + gyro odometry (:meth:`VehicleLocalizer.on_odometry`) with
  its noise, a per-particle speed-scale and gyro-bias error and a small diffusion;
* **appearance**: each frame's ground surface is projected to a bird's-eye view (BEV) with the camera height
  and tilt (a forward pinhole camera, or the lower half of an equirectangular panorama, i.e. a polar
  transform; the tilt is the configured mounting pitch plus the body pitch / roll the odometry reports at the
  frame, an IMU's attitude less the road's own tilt (its slow part: a hill's grade, a lane's camber,
  ``road_tilt_tau_s``), or the mounting pitch alone, with a diagnostic, when it reports none) and
  correlated (normalised cross-correlation, NCC, of both high-passed at 2 m) against the satellite imagery at
  every particle's pose, which pins metric position *and* heading. Optionally the frame's GLEAM-C embedding is
  compared with the embedding of the 50 m north-up satellite crop (:data:`~.preprocess.GROUND_TILE_M`)
  around each particle, cached per grid cell (``embed_weight``; off by default because the ImageNet encoder
  does not separate ground views, see docs/bench/vehicle_bench.md). A ground frame finer than ``bev_focal_px`` is
  area-averaged to it first (:func:`frame_at_focal`), so the view does not depend on the camera's resolution;
* **static ground**: each view is compared with the previous one moved by the odometry (:func:`static_ground`);
  cells that do not show the ground seen there before (another vehicle, anything standing up from the road) are
  left out of the ground camera's correlation when the rest of the two views agree (not right after a kidnap);
* **roads**: with a :class:`RoadLayer`, particles off drivable roads are down-weighted;
* **trust**: modes of the posterior are found by weighted mean shift; a fix is published only when one mode
  holds nearly all the weight, is tight, no rival mode fits the imagery about as well (rivals keep a floor of
  particles through resampling, so two identical places stay two modes), the appearance evidence is clearly
  better than at random road places (a z-score against small clouds of poses around random road points, drawn
  every frame), the odometry is healthy and the estimate lies on the map. A track started from GPS is locked
  after a few strong frames; a place found by searching the whole map only after ``relock_frames_global``
  strong frames over ``relock_distance_m`` of driving (the best of thousands of places fits a few frames by
  chance). While searching, a share of the particles is re-drawn every frame over the whole map and a smaller
  share along the road through the search's modes (``local_inject_fraction``, ``local_search_m``): on a straight
  road the bird's-eye correlation pins the position along the road weakly, and a search that settled a few metres
  along the road from the car would otherwise stay there. When the search starts confirming a place, the places
  whose imagery looks most like it (:func:`lookalike_places`: shifted, or turned around) get a share of its
  particles (``lookalikes``), so a street repeated elsewhere on the map is weighed by the frames instead of lost to
  whichever copy the random draws reached first. Modes are ranked by the weight of a place, not by their heaviest
  particle. The fix covariance is the mode's particle spread.
  While the posterior is multimodal the modes are ranked hypotheses and there is no fix;
* **kidnap**: one very poor frame makes a locked track suspect (no fix until it is confirmed again: a run of
  ``relock_frames`` strong frames, or a shorter one whose z-scores sum to as much). Weak or
  absent evidence (too little or untextured ground, a forest edge, a turn on the spot) is not evidence for being
  elsewhere: the filter coasts on odometry, its spread grows, and it withholds fixes; it keeps the fix only while
  each weak view continues the one before where the odometry puts it (``coast_distance_m``: a teleport breaks that
  continuity), or while a run of such views, taken while driving, fits moderately but steadily
  (``sustained_evidence``). A single frame that neither fits the track nor continues the previous view is held
  back without a fix until the next frame shows whether it was spoilt or the first after a teleport
  (``odd_frame_check``). The road pitch is learned on while the track is suspect. A kidnap (the car was
  teleported, or the map disagrees) is declared only on evidence against the track: frames that fit it no better
  than random places, or odometry that drives it off the roads, over ``kidnap_distance_m`` of driving with no
  strong frame between. Half the particles are then re-spread over the map; when the search converges on the
  track held before (propagated by odometry alone, within its spread) it is the same hypothesis and is trusted
  after the short confirmation, a new place only after the long one. GPS that ends before a lock makes the same
  kind of search: the cloud it anchored is the track held before. While searching, a share of the particles is
  re-drawn from that track (``shadow_inject_fraction``), so a stretch that fits it poorly does not lose it.

Satellite imagery comes from the :class:`~.index.TileIndex` the UAV localizer uses: its stored tile images
are pasted into a gray mosaic (in the tiles' CRS, at the BEV resolution) around the area of interest.
Everything is ROS-free; the vehicle node is a thin adapter.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields, replace

import cv2
import numpy as np

from . import geo
from .camera import CameraIntrinsics, body_to_enu, forward_camera_to_enu
from .errors import ConfigError, InputError
from .filter import FilterOutput
from .localizer import (STATUS_RETRIEVED, STATUS_TRUSTED, Hypothesis, LocalizationResult, PositionPrior,
                        add_reference_error)
from .preprocess import GROUND_TILE_M, check_image
from .road_pitch import RoadPitch

@dataclass(frozen=True)
class OdometrySample:
    """One odometry reading (e.g. from ``nav_msgs/Odometry`` twist or a wheel + gyro CAN message).

    ``t`` seconds; ``v_mps`` forward speed; ``yaw_rate_rps`` yaw rate, rad/s, positive counter-clockwise
    seen from above (REP-103, so a left turn is positive and the compass heading decreases);
    ``v_std`` and ``yaw_rate_std`` the 1-sigma white noise of the two readings. ``pitch_deg`` / ``roll_deg``:
    the body's attitude at ``t`` (an IMU / AHRS, e.g. the ``nav_msgs/Odometry`` orientation) in the
    :mod:`.camera` conventions (pitch positive nose-up, roll positive right side down); NaN = not reported.
    The localizer adds it, less the road's own tilt (its slow part, ``VehicleConfig.road_tilt_tau_s``), to the
    camera's mounting pitch in the bird's-eye view (:func:`birds_eye`).
    """

    t: float
    v_mps: float
    yaw_rate_rps: float
    v_std: float
    yaw_rate_std: float
    pitch_deg: float = math.nan
    roll_deg: float = math.nan


#: ``road_kind`` codes of the procedural world a car drives on: arterial, residential street, farm track.
DRIVABLE_KINDS = (1, 2, 3)

VEHICLE_MODALITIES = ("ground", "panorama")

_NULL_CLOUD = 16  # poses per null sample (see VehicleLocalizer._evidence_z)
_MOVED_M = 1.0  # driven since the previous frame for the frame to count towards "lost" or a sustained run
_CHAIN_MAX = 200  # frames of a sustained-evidence run kept
_MIN_TEXTURE = 0.5 / 255.0  # RMS of the (high-passed) BEV below half a grey level of an 8-bit image: no texture


@dataclass(frozen=True)
class VehicleConfig:
    """Settings of :class:`VehicleLocalizer` (the vehicle node's parameters map onto these).

    Distances in metres, angles in degrees, times in seconds. Invalid values raise ConfigError naming
    the field.
    """

    modality: str = "ground"
    n_particles: int = 800  # while tracking
    n_particles_global: int = 4000  # when (re)localising over the whole map
    camera_height_m: float = 1.6
    camera_pitch_deg: float = 0.0  # mounting pitch, positive = looking up (the body's pitch from odometry adds to it)
    max_body_tilt_deg: float = 15.0  # |body pitch / roll| from odometry above this: implausible, not used
    bev_res_m: float = 0.5  # BEV cell and satellite mosaic pixel size
    bev_min_m: float = 3.0  # ground distance range used (nearer: hood / car; farther: too coarse, occluded)
    bev_max_m: float = 16.0
    bev_half_width_m: float = 8.0  # lateral half width (ground camera)
    bev_highpass_m: float = 2.0  # BEV and satellite minus their local mean at this scale (0 = raw gray)
    # The angular resolution (focal length, px) a ground camera's frame is brought to before the BEV: a frame with a
    # longer focal length (a larger image of the same lens) is first area-averaged down to it (birds_eye), so the
    # BEV, and all the likelihood settings tuned on it, do not depend on the camera's pixel count. 160 px: a 320 px
    # wide frame of 90 deg field of view (the vehicle bench's camera). A coarser frame is used as it is.
    bev_focal_px: float = 160.0
    min_bev_cells: int = 60  # fewer valid BEV cells -> the frame carries no appearance evidence
    ncc_temperature: float = 0.08  # appearance likelihood exp(NCC / T)
    embed_weight: float = 0.0  # embedding likelihood exp(w * (cos - max cos)); 0 = do not embed
    embed_cell_m: float = 10.0
    road_off_weight: float = 0.05  # weight factor of a particle off drivable road (with a road layer)
    road_tolerance_m: float = 1.5
    odom_scale_std: float = 0.02  # per-particle relative speed-scale error, drawn per frame interval
    gyro_bias_std: float = 0.004  # rad/s, per-particle yaw-rate error, drawn per frame interval
    pos_diffusion_m: float = 0.3  # per frame interval
    heading_diffusion_deg: float = 0.7
    max_odom_gap_s: float = 0.5  # a reading older than this does not count as current odometry
    max_speed_mps: float = 70.0
    max_yaw_rate_rps: float = 2.5
    max_accel_mps2: float = 15.0
    mode_radius_m: float = 12.0
    max_modes: int = 5
    trust_mode_weight: float = 0.9
    trust_spread_m: float = 4.0
    trust_min_frames: int = 3
    trust_z: float = 3.5  # appearance z-score of the mode vs random road poses (EMA) needed to trust
    trust_z_frame: float = 2.5  # ... and of the frame itself
    # frames of z >= trust_z needed to clear a suspicion of a locked track (fewer, at least trust_min_frames, when
    # their z-scores sum to relock_frames * trust_z) and to confirm a track anchored by GPS or re-found
    relock_frames: int = 6
    # Locking after a search of the whole map: the best of thousands of candidate places always fits a few frames
    # well, so the evidence must hold this many frames and over this much driving (roads diverge; a wrong place
    # runs off the road or the imagery).
    relock_frames_global: int = 20
    relock_distance_m: float = 60.0
    # A locked track is given up (kidnap) only on evidence against it: kidnap_frames frames whose fit is no better
    # than at random road places (z < kidnap_z) or whose odometry drove the track off the roads, while driving, with
    # no strong frame (z >= trust_z_frame) between them, spanning at least kidnap_distance_m of driving (about two
    # disjoint views of the ground: the bird's-eye view reaches bev_max_m ahead). Frames without evidence (too
    # little or untextured ground, standing still) neither count nor clear it. A converged mode not yet locked is
    # dropped sooner: mean z (EMA) below kidnap_z for kidnap_frames frames while driving.
    kidnap_z: float = 2.0
    kidnap_frames: int = 5
    kidnap_distance_m: float = 30.0
    kidnap_z_frame: float = 1.0  # one frame this poor makes a locked track suspect (no fix until re-confirmed)
    z_ema: float = 0.3  # smoothing of the z-score (weight of the new frame)
    null_samples: int = 40  # random road poses (each with a small cloud) that the mode's fit is compared with
    global_temperature_factor: float = 2.0  # flatter appearance likelihood while searching the whole map
    inject_fraction: float = 0.1  # share of particles re-drawn at random road poses per frame while searching
    # Besides those, this share of particles is re-drawn per frame along the road through the modes of the search
    # (within local_search_m either way, both headings): on a straight road the bird's-eye correlation pins the
    # position across the road far better than along it (the road looks much the same a few metres on), so the
    # search can settle on a place a few metres along the road from the car (an along-road alias), where neither
    # the particles resampled from it nor the ones drawn over the whole map reach the car.
    local_inject_fraction: float = 0.05
    # And this share is re-drawn from the track held before the search began (the cloud the GPS anchored, when GPS
    # ended before a lock, or the track held before a declared kidnap), moved by odometry alone (the shadow, see
    # VehicleLocalizer._refound): a stretch whose imagery fits the car's place poorly (z about 1 on the hard drives)
    # would otherwise hand all the weight to the places over the map that fit a few frames by chance, and the car's
    # place would have no particles left when the view fits again.
    shadow_inject_fraction: float = 0.05
    local_search_m: float = 32.0  # about two bird's-eye views (bev_max_m) along the road either way
    max_bev_cells: int = 800  # BEV cells compared per particle while tracking (a random subset; speed)
    global_bev_cells: int = 400  # the same while searching the whole map
    ambiguity_margin: float = 0.03  # a mode whose mean running NCC is within this of the top's is a rival
    # Look-alikes: when the map search starts confirming a place, the satellite imagery around it (2 * bev_max_m
    # square) is matched over the whole mosaic, as it is and turned around (180 deg), and this many of the best
    # matching places elsewhere get the place's particles moved there (mode_floor of them each), so whether the frames
    # tell the place from the places that look most like it is decided by the frames, not by which of them the random
    # draws happened to reach first (a street repeated elsewhere on the map). 0 = off.
    lookalikes: int = 2
    mode_floor: float = 0.05  # share of particles resampling keeps on each rival mode
    mosaic_radius_m: float = 1500.0  # satellite mosaic around the area of interest
    gps_sigma_floor_m: float = 2.0
    # The camera's pitch against the road, estimated on line (core.road_pitch) whenever the top mode is tight (a
    # locked track, one anchored by GPS, or a place a search converged on): what the IMU's pitch against gravity and
    # the configured mounting pitch miss (a hill's grade, a mis-calibrated mount).
    road_pitch: bool = True
    # The road's own tilt (a hill's grade, a lane's camber) is in the IMU's pitch and roll against gravity but not in
    # the view (the car sits on the road): it is taken as the slow part of the reported attitude, an exponential
    # average over road_tilt_tau_s of the odometry's pitch and roll, and subtracted before the bird's-eye view. The
    # body's pitching and rolling on its springs decorrelates within a second or two and stays; a grade that changes
    # over tens of metres is followed within a few seconds (what is left, the lag and the mounting error, is the
    # road_pitch estimate's). Without it the view of a car starting on an 8 % hill is projected 4-5 deg off, more
    # than the road-pitch estimate's probes reach. 0 = off (the IMU's attitude as it is).
    road_tilt_tau_s: float = 4.0
    road_pitch_step_deg: float = 0.75  # probes either side of the estimate
    road_pitch_gain: float = 0.3  # weight of one frame's measurement
    road_pitch_max_deg: float = 6.0  # bound of the estimate
    road_pitch_particles: int = 64  # the track's heaviest particles the probes are scored at
    # A place found by a search of the whole map is locked only when the road a few metres either way fits worse
    # (VehicleLocalizer._check_along_road): the frames' bird's-eye views are scored at the top mode's pose shifted
    # along the road by multiples of along_road_step_m within local_search_m either way, each offset the best fit
    # over small shifts across the road (within along_road_cross_m, by the same step) and turns (within
    # along_road_heading_deg, in steps that move the view's far edge by that step), averaged over the confirmation
    # run; an offset better by ambiguity_margin moves the search there, one about as good (a flat or two-peak
    # profile) withholds the lock.
    along_road_check: bool = True
    along_road_step_m: float = 1.0  # two BEV cells: finer than the fit's peak (bev_highpass_m wide)
    along_road_cross_m: float = 1.0  # the spread across the road of the along-road draws (_along_road)
    along_road_heading_deg: float = 6.0  # 1.5 x the 4 deg heading spread of the along-road draws (3.6 deg steps)
    # Cells of a frame's bird's-eye view that do not show the static ground the previous frame showed there (another
    # vehicle, a pedestrian, a post: see static_ground) are left out of the correlation: a value more than
    # static_ground_sigma robust standard deviations outside the previous view's values around that place, when the
    # rest of the two views correlates by static_ground_agreement (the previous view shows the same ground: not
    # right after a kidnap). 0.5 is above the 99th percentile of views of unrelated places (0.48; consecutive views
    # of world 4242's hard drive: median 0.77, 10th percentile 0.54; tools/static_ground_null.py).
    # Only a locked ground-camera track is masked;
    # every view is checked (for the continuity that coasting needs). Not while searching: before the road pitch is
    # learned (a hill, a biased IMU) the two views disagree in the far cells, whose features the search needs
    # (test_road_pitch's cold start with a 2.5 deg IMU bias: 0 fixes masked, 17 unmasked; hard panorama cold starts
    # over 5 seeds: mean 27 % masked, 50 % unmasked). Not the panorama: a vehicle covers a small sector of its
    # 360 deg view, and its hard tracking did not change with the mask (world 4242: 96.0 % with, 96.7 % without).
    static_ground_check: bool = True
    static_ground_sigma: float = 3.0
    static_ground_agreement: float = 0.5
    # A weak frame (z < trust_z_frame) on a trusted locked track keeps the fix, coasting on odometry, when it shows the
    # same scene as the frame before where the odometry puts it (GroundCheck.continuity >= coast_continuity_z, and
    # the static_ground_agreement): a forest wall at a dead end, a turn on the spot, a truck filling the view. A
    # teleport between the two frames would break that continuity. At most coast_distance_m of driving since a frame
    # that fitted the imagery (z >= trust_z_frame; the default: the bird's-eye view's reach, so the car is still on
    # ground that frame saw); 0 turns coasting off. coast_continuity_z 5 is above the largest of 600 pairs of views
    # of unrelated places on world 4242's hard drive (3.9; 99th percentile 2.9; tools/static_ground_null.py).
    coast_distance_m: float = 16.0
    coast_continuity_z: float = 5.0
    # Sustained evidence: a locked track whose latest frames, each continuing the frame before (the views agree where
    # the odometry puts them, static_ground_agreement: no teleport between them), each fit at least kidnap_z_frame and
    # on average at least trust_z_frame over at least relock_frames frames and kidnap_distance_m of driving (about two
    # disjoint views of the ground, as for the evidence against a track), is trusted although its running z
    # (trust_z) sagged: a stretch whose imagery fits the car's place only moderately (z 1-4 frame after frame). Under
    # a kidnap the frames would fit like random places (z about 0: a mean >= 2.5 over two disjoint views is more
    # than 3 standard deviations out). Such frames neither make the track suspect nor count as evidence against it.
    # A view that does not continue the one before starts the run over, so the frames before a teleport never vouch
    # for the frames after it; frames while standing do not count (the same ground again). Needs static_ground_check
    # (the agreement); False: only the per-frame rule.
    sustained_evidence: bool = True
    # Odd frames: a frame on a trusted locked track that neither fits the track (z < kidnap_z_frame) nor shows the
    # ground the frame before showed where the odometry puts it (static-ground agreement < static_ground_agreement)
    # is either spoilt (glare, a truck's side filling the view, a dropped exposure) or the first after a teleport.
    # It is held back: no fix, and it does not count as evidence (the particle weights are left as they were and the
    # track is not made suspect by it). The next frame decides: when it continues the view from before the odd frame,
    # no teleport happened between them and the odd frame is dropped; when it does not, the track becomes suspect,
    # as it would have at once. One odd frame at a time; it cost a suspect track's re-confirmation run (3-6 frames)
    # before. Needs static_ground_check (the agreement); False: every frame counts.
    odd_frame_check: bool = True

    def __post_init__(self) -> None:
        if self.modality not in VEHICLE_MODALITIES:
            raise ConfigError(f"VehicleConfig.modality must be one of {VEHICLE_MODALITIES}, got {self.modality!r}")
        ints = {"n_particles": 10, "n_particles_global": 10, "min_bev_cells": 1, "max_modes": 1, "lookalikes": 0,
                "trust_min_frames": 1, "kidnap_frames": 1, "relock_frames": 1, "relock_frames_global": 1, "null_samples": 10,
                "global_bev_cells": 10, "max_bev_cells": 10, "road_pitch_particles": 1}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "modality":
                continue
            if f.name in ("road_pitch", "along_road_check", "static_ground_check", "sustained_evidence",
                          "odd_frame_check"):
                if not isinstance(v, bool):
                    raise ConfigError(f"VehicleConfig.{f.name} must be true or false, got {v!r}")
                continue
            if f.name in ints:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < ints[f.name]:
                    raise ConfigError(f"VehicleConfig.{f.name} must be an integer >= {ints[f.name]}, got {v!r}")
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ConfigError(f"VehicleConfig.{f.name} must be a finite number, got {v!r}")
            lo_zero = f.name in ("embed_weight", "road_tolerance_m", "odom_scale_std", "gyro_bias_std",
                                 "pos_diffusion_m", "heading_diffusion_deg", "camera_pitch_deg", "trust_z", "bev_highpass_m",
                                 "trust_z_frame", "kidnap_z_frame", "ambiguity_margin", "mode_floor", "relock_distance_m",
                                 "kidnap_distance_m",
                                 "kidnap_z", "road_off_weight", "inject_fraction", "local_inject_fraction",
                                 "shadow_inject_fraction", "local_search_m", "along_road_cross_m",
                                 "along_road_heading_deg", "coast_distance_m", "road_tilt_tau_s")
            if f.name == "camera_pitch_deg":
                if abs(v) >= 60:
                    raise ConfigError(f"VehicleConfig.camera_pitch_deg must be within (-60, 60), got {v!r}")
            elif (v < 0) if lo_zero else (v <= 0):
                raise ConfigError(f"VehicleConfig.{f.name} must be {'>= 0' if lo_zero else '> 0'}, got {v!r}")
        for name in ("road_off_weight", "trust_mode_weight", "z_ema", "inject_fraction", "mode_floor",
                     "local_inject_fraction", "shadow_inject_fraction", "static_ground_agreement"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"VehicleConfig.{name} must be within [0, 1], got {getattr(self, name)!r}")
        for name, hi in (("road_pitch_step_deg", 5.0), ("road_pitch_gain", 1.0), ("road_pitch_max_deg", 20.0)):
            if getattr(self, name) > hi:
                raise ConfigError(f"VehicleConfig.{name} must be within (0, {hi:g}], got {getattr(self, name)!r}")
        if self.along_road_step_m > max(self.local_search_m, self.bev_res_m):
            raise ConfigError(f"VehicleConfig.along_road_step_m must be within (0, local_search_m], got "
                              f"{self.along_road_step_m!r}")
        for name, hi in (("along_road_cross_m", 5.0), ("along_road_heading_deg", 20.0)):
            if getattr(self, name) > hi:
                raise ConfigError(f"VehicleConfig.{name} must be within [0, {hi:g}], got {getattr(self, name)!r}")
        if not 20 <= self.bev_focal_px <= 10000:
            raise ConfigError(f"VehicleConfig.bev_focal_px must be within [20, 10000] px, got {self.bev_focal_px!r}")
        if self.max_body_tilt_deg > 45:
            raise ConfigError(f"VehicleConfig.max_body_tilt_deg must be within (0, 45], got {self.max_body_tilt_deg!r}")
        if not self.bev_min_m < self.bev_max_m:
            raise ConfigError(f"VehicleConfig.bev_min_m ({self.bev_min_m}) must be < bev_max_m ({self.bev_max_m})")
        if self.kidnap_z >= self.trust_z:
            raise ConfigError(f"VehicleConfig.kidnap_z ({self.kidnap_z}) must be < trust_z ({self.trust_z})")
        if self.n_particles > self.n_particles_global:
            raise ConfigError(f"VehicleConfig.n_particles ({self.n_particles}) must be <= n_particles_global "
                              f"({self.n_particles_global})")


#: What kept a frame from a fix, by the first clause of :class:`VehicleLocalizer`'s reason: (leading words, short
#: label), for summaries over a drive (:func:`reason_kind`; the vehicle bench's "why no fix" table).
_REASON_KINDS = (
    ("evidence sagged", "re-confirming a suspect track"),
    ("odd frame", "odd frame held back"),
    ("appearance evidence", "weak evidence in this frame"),
    ("confirming the track held before", "confirming a re-found track"),
    ("confirming the place found by the map search", "confirming a map-search place"),
    ("along-road alias", "along-road alias: moving the search"),
    ("along-road ambiguity", "along-road ambiguity"),
    ("confirming the track", "confirming the track"),
    ("multimodal", "multimodal"),
    ("ambiguous", "ambiguous"),
    ("posterior spread", "posterior too wide"),
    ("converging", "converging"),
    ("estimate is off the map", "off the map"),
    ("frame shows too little ground", "too little ground in view"),
    ("frame shows no ground texture", "no ground texture"),
    ("odometry missing or late", "odometry missing or late"),
    ("no odometry", "odometry missing or late"),
    ("appearance no better than at random places", "kidnap declared"),
    ("the converged mode does not fit", "search restarted"),
)


def reason_kind(reason: str) -> str:
    """A short label for a :class:`VehicleLocalizer` reason (``LocalizationResult.filter.reason``): what kept the
    frame from a trusted fix, by its first clause (several problems are joined with "; "). A reason not known here
    keeps its first clause up to a colon."""
    first = str(reason).split("; ")[0].strip()
    for prefix, label in _REASON_KINDS:
        if first.startswith(prefix):
            return label
    return first.split(":")[0][:60] or "no reason given"


# ------------------------------------------------------------------------------------------------ rasters


class RoadLayer:
    """A georeferenced drivable-road mask (north-up): ``mask`` (H, W) bool, ``crs``, GDAL affine ``transform``."""

    def __init__(self, mask: np.ndarray, crs, transform) -> None:
        m = np.asarray(mask)
        if m.ndim != 2 or m.size == 0:
            raise InputError(f"road mask must be a non-empty 2-D array, got shape {m.shape}")
        if abs(transform.b) > 1e-12 or abs(transform.d) > 1e-12 or transform.a <= 0 or transform.e >= 0:
            raise InputError("road layer transform must be north-up (no rotation, positive x / negative y pixel size)")
        self.mask = m.astype(bool)
        self.crs = geo.parse_crs(crs, "road layer CRS")
        self.transform = transform

    @classmethod
    def load(cls, path) -> RoadLayer:
        """The drivable roads of a ``gleam world`` folder, or a single-band GeoTIFF mask (non-zero = drivable
        road) in any CRS. ConfigError names the path (missing, no CRS, unreadable)."""
        from pathlib import Path

        p = Path(path)
        if p.is_dir():
            from .sim.world import load_world

            return cls.from_world(load_world(p))
        if not p.is_file():
            raise ConfigError(f"road layer {path}: no such file or folder")
        import rasterio

        try:
            with rasterio.open(p) as ds:
                if ds.crs is None:
                    raise ConfigError(f"road layer {path}: the GeoTIFF has no CRS")
                return cls(ds.read(1) != 0, ds.crs.to_wkt(), ds.transform)
        except rasterio.errors.RasterioError as exc:
            raise ConfigError(f"road layer {path}: {exc}") from None

    @classmethod
    def from_world(cls, world, kinds=DRIVABLE_KINDS) -> RoadLayer:
        """The drivable roads (``road_kind`` in ``kinds``) of a procedural :class:`~.sim.world.World`."""
        return cls(np.isin(world.layers["road_kind"], kinds), world.crs, world.transform)

    def lookup(self, x, y, crs=None, tol_m: float = 0.0) -> np.ndarray:
        """Whether points (x, y) (in ``crs``, default the layer's) lie on road (or within ``tol_m``); off the layer: False."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        if crs is not None and geo.crs_key(crs) != geo.crs_key(self.crs):
            x, y = geo.transform(x, y, crs, self.crs)
        mask = self._dilated(tol_m)
        t = self.transform
        c = np.floor((x - t.c) / t.a).astype(np.int64)
        r = np.floor((y - t.f) / t.e).astype(np.int64)
        h, w = mask.shape
        ok = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        out = np.zeros(x.shape, bool)
        out[ok] = mask[r[ok], c[ok]]
        return out

    def axis_deg(self, x, y, crs=None) -> np.ndarray:
        """Direction along the road at points (x, y), degrees clockwise from north modulo 180 (NaN off the layer)."""
        from .sim.street import road_axes

        x, y = np.asarray(x, float), np.asarray(y, float)
        if crs is not None and geo.crs_key(crs) != geo.crs_key(self.crs):
            x, y = geo.transform(x, y, crs, self.crs)
        if "_axes" not in self.__dict__:
            self._axes = np.degrees(road_axes(self.mask, float(self.transform.a))).astype(np.float32)
        t = self.transform
        c = np.floor((x - t.c) / t.a).astype(np.int64)
        r = np.floor((y - t.f) / t.e).astype(np.int64)
        h, w = self.mask.shape
        ok = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        out = np.full(x.shape, np.nan)
        out[ok] = self._axes[r[ok], c[ok]]
        return out

    def _dilated(self, tol_m: float) -> np.ndarray:
        k = int(math.ceil(tol_m / self.transform.a))
        if k <= 0:
            return self.mask
        cache = self.__dict__.setdefault("_dil", {})
        if k not in cache:
            se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
            cache[k] = cv2.dilate(self.mask.astype(np.uint8), se) > 0
        return cache[k]


class SatelliteMosaic:
    """Gray satellite mosaic pasted from an index's stored tile images around a centre (tiles' CRS).

    ``gray`` (H, W) float32 in [0, 1] (NaN where no tile covers), pixel size ``gsd``, top-left outer corner
    (``x0``, ``y0``) in ``crs``. ``rgb`` keeps the colour mosaic for the embedding crops.
    """

    def __init__(self, index, gsd: float, centre_latlon: tuple[float, float] | None, radius_m: float,
                 highpass_m: float = 0.0) -> None:
        if not index.has_images:
            raise ConfigError("the tile index holds no tile images: rebuild it with images for the vehicle localizer")
        if centre_latlon is None:
            sel = np.arange(index.n_tiles)
        else:
            sel = index.tiles_within(centre_latlon[0], centre_latlon[1], radius_m)
        if len(sel) == 0:
            raise InputError(f"no index tile within {radius_m:.0f} m of {centre_latlon}")
        tiles = [index.tile(int(i)) for i in sel]
        crs = tiles[0].crs
        tiles = [t for t in tiles if geo.crs_key(t.crs) == geo.crs_key(crs)]
        self.crs = geo.parse_crs(crs, "tile CRS")
        self.gsd = float(gsd)
        x0 = min(t.x0 for t in tiles)
        y0 = max(t.y0 for t in tiles)
        x1 = max(t.x0 + t.size_m for t in tiles)
        y1 = min(t.y0 - t.size_m for t in tiles)
        w = int(math.ceil((x1 - x0) / gsd))
        h = int(math.ceil((y0 - y1) / gsd))
        if w * h > 60_000_000:
            raise ConfigError(f"satellite mosaic of {w}x{h} px is too large; lower mosaic_radius_m or raise bev_res_m")
        self.x0, self.y0 = float(x0), float(y0)
        rgb = np.zeros((h, w, 3), np.uint8)
        valid = np.zeros((h, w), bool)
        for t in tiles:
            side = max(1, int(round(t.size_m / gsd)))
            img = cv2.resize(np.asarray(t.image), (side, side), interpolation=cv2.INTER_AREA)
            c0 = int(round((t.x0 - x0) / gsd))
            r0 = int(round((y0 - t.y0) / gsd))
            r1, c1 = min(h, r0 + side), min(w, c0 + side)
            rgb[r0:r1, c0:c1] = img[: r1 - r0, : c1 - c0]
            valid[r0:r1, c0:c1] = True
        self.rgb = rgb
        self.valid = valid
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        if highpass_m > 0:
            g = highpass(g, valid, highpass_m / gsd)
        g[~valid] = np.nan
        self.gray = g
        cx, cy = x0 + w * gsd / 2, y0 - h * gsd / 2
        self.centre_xy = (float(cx), float(cy))

    def gray_filled(self, res_m: float) -> np.ndarray:
        """``gray`` with 0 where no tile covers, area-averaged to ``res_m`` per pixel when that is coarser than
        ``gsd`` (kept: the look-alike search asks for it once per place)."""
        cache = self.__dict__.setdefault("_filled", {})
        if res_m not in cache:
            g = np.nan_to_num(self.gray, nan=0.0)
            f = self.gsd / res_m
            if f < 1.0:
                g = cv2.resize(g, (max(1, int(round(g.shape[1] * f))), max(1, int(round(g.shape[0] * f)))),
                               interpolation=cv2.INTER_AREA)
            cache[res_m] = g
        return cache[res_m]

    def to_px(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """CRS (x, y) to fractional (col, row), integer = pixel centre."""
        return (np.asarray(x) - self.x0) / self.gsd - 0.5, (self.y0 - np.asarray(y)) / self.gsd - 0.5

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear gray values at CRS points (NaN outside the mosaic or its tiles)."""
        c, r = self.to_px(x, y)
        out = cv2.remap(self.gray, c.astype(np.float32), r.astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))
        return out

    def covers(self, x, y) -> np.ndarray:
        """Whether CRS points lie on imagery."""
        c, r = self.to_px(x, y)
        ci, ri = np.rint(c).astype(np.int64), np.rint(r).astype(np.int64)
        h, w = self.valid.shape
        ok = (ci >= 0) & (ci < w) & (ri >= 0) & (ri < h)
        out = np.zeros(np.shape(ci), bool)
        out[ok] = self.valid[ri[ok], ci[ok]]
        return out

    def crop(self, x: float, y: float, side_m: float) -> np.ndarray | None:
        """North-up RGB crop of ``side_m`` centred on (x, y), or None when it leaves the imagery."""
        c, r = self.to_px(x, y)
        half = side_m / self.gsd / 2.0
        c0, r0 = int(round(float(c) - half)), int(round(float(r) - half))
        n = int(round(2 * half))
        if c0 < 0 or r0 < 0 or c0 + n > self.rgb.shape[1] or r0 + n > self.rgb.shape[0]:
            return None
        if not self.valid[r0:r0 + n, c0:c0 + n].all():
            return None
        return self.rgb[r0:r0 + n, c0:c0 + n]


# ------------------------------------------------------------------------------------------------ BEV


@dataclass
class BirdsEye:
    """A frame's ground surface in the vehicle frame: cell offsets (forward, right) in metres and gray values."""

    fwd: np.ndarray
    right: np.ndarray
    values: np.ndarray  # zero-mean, unit-norm over the valid cells (all 0 when untextured)
    textured: bool = True  # False: the ground shows no texture (uniform colour), the frame carries no evidence
    raw: np.ndarray | None = None  # the cells' gray values before the high-pass (None: not kept)
    res_m: float = 0.0  # the cells' grid spacing, and the high-pass scale in cells (0: none), for :meth:`without`
    highpass_px: float = 0.0

    @property
    def n(self) -> int:
        """Number of valid cells."""
        return len(self.values)

    def subset(self, k: int, rng: np.random.Generator | None) -> BirdsEye:
        """At most ``k`` random cells (``rng`` None: evenly spaced ones, so views of the same ground at slightly
        different tilts keep nearly the same cells; values re-normalised); self when it has no more."""
        if self.n <= k:
            return self
        if rng is None:
            idx = np.unique(np.linspace(0, self.n - 1, k).round().astype(np.int64))
        else:
            idx = np.sort(rng.choice(self.n, k, replace=False))
        return self.take(idx)

    def take(self, idx: np.ndarray) -> BirdsEye:
        """The cells ``idx`` (indices or a boolean mask), values re-normalised (zero mean, unit norm)."""
        v = self.values[idx] - (self.values[idx].mean() if len(self.values[idx]) else 0.0)
        nrm = float(np.linalg.norm(v))
        return BirdsEye(self.fwd[idx], self.right[idx], (v / nrm if nrm > 1e-9 else v).astype(np.float32),
                        self.textured, None if self.raw is None else self.raw[idx], self.res_m, self.highpass_px)

    def without(self, drop: np.ndarray) -> BirdsEye:
        """The view without the cells ``drop`` (a boolean mask), high-passed again over the cells kept, so that what
        was dropped (a dark vehicle) does not shift the local mean of its neighbours either. Without the raw values
        (or a high-pass) the same as ``take(~drop)``."""
        keep = ~np.asarray(drop, bool)
        if self.raw is None or self.highpass_px <= 0 or self.res_m <= 0 or not keep.any():
            return self.take(keep)
        _, _, ii, jj = _cell_grid(self, self.res_m)
        grid = np.zeros((int(ii.max()) + 1, int(jj.max()) + 1), np.float32)
        valid = np.zeros(grid.shape, bool)
        grid[ii[keep], jj[keep]] = self.raw[keep]
        valid[ii[keep], jj[keep]] = True
        vals, textured = _normalised(highpass(grid, valid, self.highpass_px)[ii[keep], jj[keep]])
        return BirdsEye(self.fwd[keep], self.right[keep], vals, self.textured and textured, self.raw[keep],
                        self.res_m, self.highpass_px)


def _ground_grid(cfg: VehicleConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forward, right, in-range mask) 2-D grids of the BEV cells."""
    r = cfg.bev_res_m
    if cfg.modality == "panorama":
        ax = np.arange(-cfg.bev_max_m, cfg.bev_max_m + 1e-9, r)
        f, s = np.meshgrid(ax, ax, indexing="ij")
    else:
        f, s = np.meshgrid(np.arange(cfg.bev_min_m, cfg.bev_max_m + 1e-9, r),
                           np.arange(-cfg.bev_half_width_m, cfg.bev_half_width_m + 1e-9, r), indexing="ij")
    d = np.hypot(f, s)
    return f, s, (d >= cfg.bev_min_m) & (d <= cfg.bev_max_m)


def highpass(img: np.ndarray, valid: np.ndarray, sigma_px: float) -> np.ndarray:
    """``img`` minus its local mean (Gaussian of ``sigma_px``, normalised over ``valid`` pixels): keeps edges and
    markings, drops the slow brightness changes that seasons and light bring. Invalid pixels become 0."""
    m = valid.astype(np.float32)
    v = np.where(valid, img, 0.0).astype(np.float32)
    num = cv2.GaussianBlur(v, (0, 0), sigma_px)
    den = cv2.GaussianBlur(m, (0, 0), sigma_px)
    return np.where(valid, v - num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def frame_at_focal(gray: np.ndarray, intr: CameraIntrinsics, focal_px: float) -> tuple[np.ndarray, CameraIntrinsics]:
    """A pinhole frame brought to at most ``focal_px`` pixels per radian: ``(frame, its intrinsics)``.

    When the camera's focal length (``fx``, ``fy``; the same lens with more pixels has a longer one) exceeds
    ``focal_px``, ``gray`` is area-averaged (``cv2.INTER_AREA``, each axis on its own) to the size at which it is
    ``focal_px``, and the intrinsics are scaled with it (:meth:`~.camera.CameraIntrinsics.scaled`); a frame at or
    below it is returned as it is. The bird's-eye view samples the frame after this, so what it sees of the ground
    (the detail and the noise per cell) does not depend on the camera's pixel count, and a large frame costs
    little more than a small one.
    """
    H, W = gray.shape[:2]
    w2 = min(W, max(1, int(round(W * focal_px / intr.fx))))
    h2 = min(H, max(1, int(round(H * focal_px / intr.fy))))
    if (w2, h2) == (W, H):
        return gray, intr
    return cv2.resize(gray, (w2, h2), interpolation=cv2.INTER_AREA), intr.scaled(w2 / W, h2 / H)


def birds_eye(image: np.ndarray, cfg: VehicleConfig, intr: CameraIntrinsics | None, pitch_deg: float | None = None,
              roll_deg: float = 0.0) -> BirdsEye:
    """Project a frame's ground to the BEV cells of ``cfg`` (flat ground, camera ``camera_height_m`` up).

    The camera is tilted by ``pitch_deg`` (default ``cfg.camera_pitch_deg``, the mounting pitch; the localizer
    passes mounting + body pitch) and ``roll_deg`` in the :mod:`.camera` conventions
    (:func:`~.camera.body_to_enu`: pitch positive looks up, roll positive turns the right side down), the
    rotation the street renderer draws its frames with. Ground camera: pinhole ``intr``, optical axis along the
    car's forward axis at that tilt (:func:`~.camera.forward_camera_to_enu`). Panorama: equirectangular in the
    tilted camera's frame, the centre column looks forward, columns increase clockwise (to the right), the top
    row is the camera's zenith. Each cell takes the image's gray value (bilinear, with the image first blurred
    slightly: a panorama by ``W / 2048`` px, a ground frame by 1 px after it was brought to ``cfg.bev_focal_px``
    by :func:`frame_at_focal`, so the view is the same whatever the camera's resolution). A view whose RMS is
    below half a grey level (a uniform frame: a covered lens, a blank wall) is marked untextured: it carries no
    appearance evidence.
    """
    rgb = check_image(image, "frame")
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # 8 bit until a ground frame is area-averaged (cheaper)
    f, s, in_range = _ground_grid(cfg)
    h_cam = cfg.camera_height_m
    H, W = gray.shape
    pitch = cfg.camera_pitch_deg if pitch_deg is None else float(pitch_deg)
    # the ground cells in the level frame whose "north" is the car's forward axis: (east, north, up) = (right,
    # forward, -height)
    enu = np.stack([s, f, np.full_like(f, -h_cam)], axis=-1)
    if cfg.modality == "panorama":
        b = enu @ body_to_enu(0.0, pitch, float(roll_deg))  # tilted camera body frame (x fwd, y left, z up)
        az = np.arctan2(-b[..., 1], b[..., 0])  # clockwise from forward
        el = np.arctan2(b[..., 2], np.hypot(b[..., 0], b[..., 1]))
        u = (az / (2 * np.pi) + 0.5) * W - 0.5
        v = (0.5 - el / np.pi) * H - 0.5
        gray = cv2.GaussianBlur(gray.astype(np.float32) / 255.0, (0, 0), max(0.5, W / 2048))
    else:
        if intr is None:
            raise InputError("a ground camera frame needs camera intrinsics (CameraInfo) for the bird's-eye view")
        if (intr.width, intr.height) != (W, H):
            raise InputError(f"camera intrinsics are for {intr.width}x{intr.height} images, frame is {W}x{H}")
        gray, intr = frame_at_focal(gray, intr, cfg.bev_focal_px)
        H, W = gray.shape
        c = enu @ forward_camera_to_enu(0.0, pitch, float(roll_deg))  # optical (x right, y down, z along the axis)
        xc, yc, zc = c[..., 0], c[..., 1], c[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = intr.cx + intr.fx * xc / zc
            v = intr.cy + intr.fy * yc / zc
        u[zc <= 0.1] = -1e6
        gray = cv2.GaussianBlur(gray.astype(np.float32) / 255.0, (0, 0), 1.0)
    inside = in_range & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    grid = cv2.remap(gray, np.where(inside, u, -1).astype(np.float32), np.where(inside, v, -1).astype(np.float32),
                     cv2.INTER_LINEAR)
    raw = grid[inside]
    if cfg.bev_highpass_m > 0:
        grid = highpass(grid, inside, cfg.bev_highpass_m / cfg.bev_res_m)
    vals = grid[inside]
    f, s = f[inside], s[inside]
    vals, textured = _normalised(vals)
    return BirdsEye(f, s, vals, textured, raw.astype(np.float32), cfg.bev_res_m, cfg.bev_highpass_m / cfg.bev_res_m)


def _normalised(vals: np.ndarray) -> tuple[np.ndarray, bool]:
    """(zero-mean, unit-norm float32 values, whether they are textured): all 0 when the RMS is below
    ``_MIN_TEXTURE`` (a uniform view carries no appearance evidence)."""
    vals = vals - vals.mean() if len(vals) else vals
    norm = float(np.linalg.norm(vals))
    textured = len(vals) > 0 and norm / math.sqrt(len(vals)) >= _MIN_TEXTURE
    return (vals / norm if textured else np.zeros_like(vals)).astype(np.float32), textured


def ego_motion(segs) -> tuple[float, float, float]:
    """The car's motion through the odometry pieces ``segs`` ((dt, v, yaw_rate, ...), see
    ``VehicleLocalizer._segments``), noise-free: (forward m, right m, heading change deg, clockwise) in the car's
    frame at the start."""
    fwd = right = h = 0.0
    for dt, v, w, *_ in segs:
        hm = h - w * dt / 2.0  # CCW yaw rate lowers the compass heading
        right += v * dt * math.sin(hm)
        fwd += v * dt * math.cos(hm)
        h -= w * dt
    return fwd, right, math.degrees(h)


def _cell_grid(bev: BirdsEye, res_m: float) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(forward origin, right origin, row, column) of the BEV's cells on their regular grid of ``res_m``."""
    f0, s0 = float(bev.fwd.min()), float(bev.right.min())
    return (f0, s0, np.rint((bev.fwd - f0) / res_m).astype(np.int64),
            np.rint((bev.right - s0) / res_m).astype(np.int64))


def _robust_scale(v: np.ndarray) -> float:
    """Standard deviation estimated from the median absolute deviation (outliers barely move it)."""
    return 1.4826 * float(np.median(np.abs(v - np.median(v)))) if len(v) else 0.0


@dataclass(frozen=True)
class GroundCheck:
    """What :func:`static_ground` found: ``keep`` (the cells of the frame to correlate), ``flagged`` (share of the
    compared cells that did not match the previous view), ``agreement`` (correlation of the two views over the
    unflagged cells; NaN: not compared), ``masked`` (whether the flagged cells were left out) and ``continuity``
    (z-score of the agreement against the same correlation with the previous view displaced by 2-6 m: high when
    the two frames show the same scene where the odometry says, which a teleport between them would break)."""

    keep: np.ndarray
    flagged: float = math.nan
    agreement: float = math.nan
    masked: bool = False
    continuity: float = math.nan


# displacements (BEV cells) of the previous view for GroundCheck.continuity: 2, 4 and 6 m in 8 directions (at the
# default 0.5 m cells)
_CONTINUITY_SHIFTS = np.array([(int(round(k * math.cos(a))), int(round(k * math.sin(a))))
                               for k in (4, 8, 12) for a in np.radians(np.arange(0, 360, 45))], np.int64)


def static_ground(prev: BirdsEye, cur: BirdsEye, motion: tuple[float, float, float], res_m: float,
                  outlier_sigma: float, min_agreement: float) -> GroundCheck:
    """Which cells of ``cur`` show the static ground that ``prev`` (the frame before, the car having moved by
    ``motion`` = (forward m, right m, heading change deg) since) also showed.

    The ground stays where it is while the car moves; another vehicle, a pedestrian or anything standing up from
    the road does not project to the same ground cells from two camera positions. Both views are scaled by their
    robust spread (so a dark vehicle in one frame does not rescale the other's texture); a cell is flagged when its
    value lies more than ``outlier_sigma`` of that spread outside the range of the previous view's values within one
    cell of where the odometry puts it (a tolerance for the odometry's and the camera tilt's errors), and the flags
    grow by one cell (an occluder's rim).

    The flagged cells are left out only when the rest of the two views agree (correlation >= ``min_agreement``):
    the previous view must show the same ground for the comparison to mean anything. Right after a kidnap it shows
    other ground, and leaving out the cells that disagree with it would favour the place the car was taken from.
    Cells ``prev`` did not see are kept.
    """
    keep = np.ones(cur.n, bool)
    if prev.n == 0 or cur.n == 0 or not (prev.textured and cur.textured):
        return GroundCheck(keep)
    from scipy import ndimage

    scale_p, scale_c = _robust_scale(prev.values), _robust_scale(cur.values)
    if scale_p <= 0 or scale_c <= 0:
        return GroundCheck(keep)
    df, ds, dh = motion
    c, s = math.cos(math.radians(dh)), math.sin(math.radians(dh))
    f0, s0, ii, jj = _cell_grid(prev, res_m)
    r = np.rint((df + cur.fwd * c - cur.right * s - f0) / res_m).astype(np.int64)  # the cells in the previous view
    q = np.rint((ds + cur.fwd * s + cur.right * c - s0) / res_m).astype(np.int64)
    val = np.full((int(ii.max()) + 1, int(jj.max()) + 1), np.nan, np.float32)
    val[ii, jj] = prev.values / scale_p
    seen = (r >= 0) & (r < val.shape[0]) & (q >= 0) & (q < val.shape[1])
    seen[seen] = np.isfinite(val[r[seen], q[seen]])
    if seen.sum() < max(2, cur.n // 5):
        return GroundCheck(keep)
    lo = ndimage.minimum_filter(np.where(np.isfinite(val), val, np.inf), size=3, mode="constant", cval=np.inf)
    hi = ndimage.maximum_filter(np.where(np.isfinite(val), val, -np.inf), size=3, mode="constant", cval=-np.inf)
    a = cur.values[seen] / scale_c
    rs, qs = r[seen], q[seen]
    off = np.maximum(a - hi[rs, qs], 0.0) + np.maximum(lo[rs, qs] - a, 0.0)
    flag = np.zeros(cur.n, bool)
    flag[seen] = off > outlier_sigma
    _, _, ic, jc = _cell_grid(cur, res_m)
    g = np.zeros((int(ic.max()) + 1, int(jc.max()) + 1), bool)
    g[ic, jc] = flag
    flag = ndimage.binary_dilation(g, np.ones((3, 3), bool))[ic, jc]
    share = float(flag[seen].mean())
    both = ~flag[seen]
    agreement = _corr(a[both], val[rs[both], qs[both]]) if both.sum() >= 2 else math.nan
    # the same correlation with the previous view displaced by a few metres: is the odometry's alignment a peak?
    shifted = []
    for k in range(len(_CONTINUITY_SHIFTS)):
        rr, qq = r + _CONTINUITY_SHIFTS[k, 0], q + _CONTINUITY_SHIFTS[k, 1]
        ok = (~flag) & (rr >= 0) & (rr < val.shape[0]) & (qq >= 0) & (qq < val.shape[1])
        ok[ok] = np.isfinite(val[rr[ok], qq[ok]])
        if ok.sum() >= max(2, cur.n // 5):
            shifted.append(_corr(cur.values[ok], val[rr[ok], qq[ok]]))
    continuity = math.nan
    if len(shifted) >= 8 and math.isfinite(agreement):
        continuity = (agreement - float(np.mean(shifted))) / max(float(np.std(shifted)), 1e-3)
    if not (agreement >= min_agreement) or not flag.any():
        return GroundCheck(keep, share, agreement, False, continuity)
    return GroundCheck(~flag, share, agreement, True, continuity)


def lookalike_places(mosaic: SatelliteMosaic, x: float, y: float, side_m: float, k: int, exclude_m: float,
                     res_m: float = 1.0) -> list[tuple[float, float, bool]]:
    """The ``k`` places of the mosaic whose imagery best matches the ``side_m`` square around (``x``, ``y``), as
    it is or turned around (180 deg): (x, y, turned) of each match's centre, best first, none within ``exclude_m``
    of (x, y) or of a better match. Normalized cross-correlation of the (high-passed) gray mosaic at ``res_m`` per
    pixel. Empty when the square leaves the imagery or shows no texture."""
    res_m = max(res_m, mosaic.gsd)
    f = mosaic.gsd / res_m
    g = mosaic.gray_filled(res_m)
    side = int(round(side_m / res_m)) | 1  # odd: a centre pixel
    c, r = mosaic.to_px(x, y)
    c, r = int(round((float(c) + 0.5) * f - 0.5)), int(round((float(r) + 0.5) * f - 0.5))
    h = side // 2
    if k <= 0 or r - h < 0 or c - h < 0 or r + h >= g.shape[0] or c + h >= g.shape[1] or side >= min(g.shape):
        return []
    patch = g[r - h: r + h + 1, c - h: c + h + 1]
    if float(patch.std()) < 1e-6:
        return []
    found: list[tuple[float, int, int, bool]] = []
    for turned in (False, True):
        score = cv2.matchTemplate(g, np.ascontiguousarray(patch[::-1, ::-1] if turned else patch),
                                  cv2.TM_CCOEFF_NORMED)
        rr, cc = np.ogrid[0: score.shape[0], 0: score.shape[1]]
        score[np.hypot(rr + h - r, cc + h - c) * res_m <= exclude_m] = -np.inf  # the place itself
        for _ in range(k):
            i = int(np.argmax(score))
            pr, pc = divmod(i, score.shape[1])
            if not np.isfinite(score[pr, pc]):
                break
            found.append((float(score[pr, pc]), pr + h, pc + h, turned))
            score[np.hypot(rr - pr, cc - pc) * res_m <= exclude_m] = -np.inf
    found.sort(key=lambda m: -m[0])
    out: list[tuple[float, float, bool]] = []
    for _, pr, pc, turned in found:
        tx = mosaic.x0 + (pc + 0.5) * res_m
        ty = mosaic.y0 - (pr + 0.5) * res_m
        if all(math.hypot(tx - ox, ty - oy) > exclude_m for ox, oy, _ in out):
            out.append((tx, ty, turned))
        if len(out) == k:
            break
    return out


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equally long vectors (0 when either is constant)."""
    x = np.asarray(x, np.float64) - float(np.mean(x))
    y = np.asarray(y, np.float64) - float(np.mean(y))
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 0 else 0.0


def bev_corr(a: BirdsEye, b: BirdsEye) -> tuple[float, int]:
    """Correlation of two bird's-eye views of one cell grid (e.g. one pose seen by two cameras) over the cells both
    hold, and how many those are (cells matched by their offsets to the centimetre; NaN with fewer than 3)."""
    ka = {(round(float(f), 2), round(float(r), 2)): v for f, r, v in zip(a.fwd, a.right, a.values)}
    pairs = [(ka[k], v) for k, v in zip(((round(float(f), 2), round(float(r), 2)) for f, r in zip(b.fwd, b.right)),
                                        b.values) if k in ka]
    if len(pairs) < 3:
        return float("nan"), len(pairs)
    x = np.array(pairs, np.float64)
    return _corr(x[:, 0], x[:, 1]), len(pairs)


def bev_ncc(bev: BirdsEye, mosaic: SatelliteMosaic, x: np.ndarray, y: np.ndarray, heading_deg: np.ndarray,
            chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """NCC of the BEV against the satellite mosaic at each pose; returns (ncc, covered fraction) per pose."""
    n = len(x)
    ncc = np.zeros(n, np.float32)
    cov = np.zeros(n, np.float32)
    if bev.n == 0 or n == 0:
        return ncc, cov
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        h = np.radians(heading_deg[a:b])[:, None]
        sh, ch = np.sin(h), np.cos(h)
        # forward = (sin h, cos h), right = (cos h, -sin h) in (east, north)
        px = x[a:b, None] + bev.fwd[None] * sh + bev.right[None] * ch
        py = y[a:b, None] + bev.fwd[None] * ch - bev.right[None] * sh
        sat = mosaic.sample(px, py)
        ok = np.isfinite(sat)
        cnt = ok.sum(1)
        cov[a:b] = cnt / bev.n
        sat = np.where(ok, sat, 0.0)
        mean = sat.sum(1) / np.maximum(cnt, 1)
        sat = np.where(ok, sat - mean[:, None], 0.0)
        num = sat @ bev.values
        den = np.linalg.norm(sat, axis=1) * np.sqrt(np.sum(np.where(ok, bev.values[None] ** 2, 0.0), axis=1))
        ncc[a:b] = np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0)
    return ncc, cov


@dataclass(frozen=True)
class AlongRoadVerdict:
    """What the along-road profile of a place says (:func:`along_road_verdict`).

    ``state``: ``"peak"`` (the place fits better than the road either way: it may be locked), ``"alias"`` (the road
    ``rival_m`` metres on fits better by at least the margin: the car is there), ``"ambiguous"`` (an offset there
    fits about as well: a flat or repetitive road, no fix) or ``"unknown"`` (the place itself was not scored).
    ``margin``: the place's own peak minus the best offset outside it (NCC; negative: the rival fits better);
    ``best_m``: the offset of the profile's maximum; ``rival_m``: the best offset outside the place's own peak.
    """

    state: str
    margin: float
    best_m: float
    rival_m: float


def along_road_profile(bev: BirdsEye, mosaic: SatelliteMosaic, pose: tuple[float, float, float], axis_deg: float,
                       offsets: np.ndarray, cross_m: tuple | np.ndarray = (0.0,),
                       dheading_deg: tuple | np.ndarray = (0.0,)) -> tuple[np.ndarray, np.ndarray]:
    """The fit of ``bev`` along the road through ``pose`` (x, y, heading): for each of ``offsets`` metres along
    ``axis_deg`` (clockwise from north; positive = that way) the best NCC over the shifts ``cross_m`` across it
    (positive = to the right of the axis) and the turns ``dheading_deg``, so each offset is scored at its own best
    pose, as the filter's particles would find it (NaN where no pose is at least half on imagery); and that best
    pose per offset (M, 3: x, y, heading)."""
    o, c, dh = np.meshgrid(np.asarray(offsets, float), np.asarray(cross_m, float), np.asarray(dheading_deg, float),
                           indexing="ij")
    x, y = _on_axis(pose[0], pose[1], axis_deg, o, c)
    h = (pose[2] + dh.ravel()) % 360.0
    ncc, covf = bev_ncc(bev, mosaic, x.ravel(), y.ravel(), h)
    fit = np.where(covf >= 0.5, ncc, -np.inf).reshape(len(o), -1)
    j = np.argmax(fit, axis=1)
    best = fit[np.arange(len(o)), j]
    at = np.stack([x.reshape(len(o), -1), y.reshape(len(o), -1), h.reshape(len(o), -1)], axis=-1)[np.arange(len(o)), j]
    return np.where(np.isfinite(best), best, np.nan), at


def along_road_verdict(offsets: np.ndarray, profile: np.ndarray, tol_m: float, width_m: float,
                       margin: float) -> AlongRoadVerdict:
    """Whether a place is the peak of its along-road ``profile`` (the fit at ``offsets`` metres along the road).

    Offsets within ``tol_m`` are the place itself (its own spread and a BEV cell); the fit of a view falls off over
    ``width_m`` (the high-pass scale), so offsets within ``tol_m + width_m`` are the flanks of the same peak and
    are not compared. The place is the peak when it beats every offset beyond by ``margin``; it is an alias when
    one of them beats it by ``margin``; otherwise (a flat profile, two about equal peaks) it is ambiguous.
    """
    offsets, profile = np.asarray(offsets, float), np.asarray(profile, float)
    valid = np.isfinite(profile)
    own_sel = valid & (np.abs(offsets) <= tol_m)
    far_sel = valid & (np.abs(offsets) >= tol_m + width_m)
    best = float(offsets[np.argmax(np.where(valid, profile, -np.inf))]) if valid.any() else math.nan
    if not own_sel.any():
        return AlongRoadVerdict("unknown", math.nan, best, math.nan)
    own = float(profile[own_sel].max())
    if not far_sel.any():  # nothing along this road to mistake the place for (a short road, the map's edge)
        return AlongRoadVerdict("peak", math.inf, best, math.nan)
    i = int(np.argmax(np.where(far_sel, profile, -np.inf)))
    d = own - float(profile[i])
    state = "peak" if d >= margin else "alias" if -d >= margin else "ambiguous"
    return AlongRoadVerdict(state, d, best, float(offsets[i]))


# ------------------------------------------------------------------------------------------------ filter


@dataclass
class _Mode:
    x: float
    y: float
    weight: float
    cov: np.ndarray
    heading_deg: float
    heading_std_deg: float
    members: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))

    @property
    def spread_m(self) -> float:
        return float(math.sqrt(max(np.linalg.eigvalsh(self.cov).max(), 0.0)))


def _on_axis(cx: float, cy: float, axis_deg: float, along, across=0.0):
    """Points ``along`` metres along the axis ``axis_deg`` (clockwise from north) through (``cx``, ``cy``) and
    ``across`` metres to its right: (x, y) in the same CRS."""
    a = math.radians(axis_deg)
    sa, ca = math.sin(a), math.cos(a)
    return cx + along * sa + across * ca, cy + along * ca - across * sa


def _steps(half: float, step: float) -> np.ndarray:
    """Multiples of ``step`` within ``half`` either way (0 alone when ``half`` < ``step``)."""
    k = int(math.floor(half / step + 1e-9))
    return np.arange(-k, k + 1) * step


def _circ_mean_std(deg: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    a = np.radians(deg)
    c, s = float(np.sum(w * np.cos(a))), float(np.sum(w * np.sin(a)))
    tot = float(np.sum(w)) or 1.0
    r = min(1.0, math.hypot(c, s) / tot)
    std = math.degrees(math.sqrt(max(-2.0 * math.log(max(r, 1e-12)), 0.0)))
    return math.degrees(math.atan2(s, c)) % 360.0, std


class VehicleLocalizer:
    """Localize a car over a drive from camera frames + odometry against a satellite tile index.

    Args:
        backend: the encoder backend (torch or ONNX) the index was built with; used only when
            ``cfg.embed_weight > 0``.
        index: a :class:`~.index.TileIndex` with stored tile images.
        cfg: settings (:class:`VehicleConfig`).
        roads: optional :class:`RoadLayer` of drivable roads (particles off road are down-weighted).
        seed: random seed of the filter.
    """

    def __init__(self, backend, index, cfg: VehicleConfig | None = None, roads: RoadLayer | None = None,
                 seed: int = 0) -> None:
        self.backend = backend
        self.index = index
        self.cfg = cfg or VehicleConfig()
        if not isinstance(self.cfg, VehicleConfig):
            raise ConfigError(f"cfg must be a VehicleConfig, got {type(self.cfg).__name__}")
        if roads is not None and not isinstance(roads, RoadLayer):
            raise ConfigError(f"roads must be a RoadLayer, got {type(roads).__name__}")
        if self.cfg.embed_weight > 0 and index.fingerprint != backend.fingerprint:
            raise ConfigError(f"index built with encoder {index.fingerprint}, backend is {backend.fingerprint}")
        self.roads = roads
        self.rng = np.random.default_rng(seed)
        self._mosaic: SatelliteMosaic | None = None
        self._embed_cache: dict[tuple[int, int], np.ndarray | None] = {}
        self.kidnaps = 0
        self.refound_tracks = 0  # map searches after a kidnap that re-found the track held before it
        self.lookalike_plants = 0  # look-alike places of a place being confirmed that got particles (lookalikes)
        self.rejected_odometry = 0
        self.attitude_fallbacks = 0  # frames projected with the configured mounting pitch alone (no usable attitude)
        self.along_road_moves = 0  # map searches moved to a better place along the road (_check_along_road)
        self.odd_frames = 0  # frames held back and dropped as odd (odd_frame_check)
        self.reset()

    # ---------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget everything about the drive (particles, odometry, trust); the next frame starts over."""
        self.p: np.ndarray | None = None  # (N, 3): x, y, heading_deg in the mosaic CRS
        self.s: np.ndarray | None = None  # (N,): per-particle running NCC (EMA, inherited when resampled)
        self.w: np.ndarray | None = None
        self._t: float | None = None  # time the particles refer to
        self._odom: list[OdometrySample] = []
        self._prev_bev: BirdsEye | None = None  # the previous frame's bird's-eye view (static_ground)
        self._ego: tuple[float, float, float] | None = None  # odometry motion since then (None: not known)
        self._last_segs: list = []  # the odometry pieces of the last frame interval
        self._ground = GroundCheck(np.ones(0, bool))  # the last frame's static_ground check (masked: applied)
        self._z_now = math.nan
        self._road_share = math.nan
        self._odo_dist = 0.0  # distance driven by odometry (m)
        self._frame_dist = 0.0  # ... at the previous frame
        self._modes: list[_Mode] = []
        self._attitude: tuple[float, float, str] = (0.0, 0.0, "no frame yet")  # body pitch, roll, why not used
        self._tilt: tuple[float, float, float] | None = None  # (time, pitch, roll): the road's tilt (road_tilt_tau_s)
        self._reset_trust(global_search=False)
        self.road_pitch = RoadPitch(self.cfg.road_pitch_step_deg, self.cfg.road_pitch_gain, self.cfg.road_pitch_max_deg)
        self.last_reason = "no frame yet"

    def status(self) -> dict:
        """Diagnostics: modes, spread, odometry age, last reason, kidnap count and more."""
        top = self._modes[0] if self._modes else None
        odom_age = (self._t - self._odom[-1].t) if (self._odom and self._t is not None) else math.inf
        return {
            "n_particles": 0 if self.p is None else len(self.p),
            "n_modes": len(self._modes),
            "top_mode_weight": top.weight if top else math.nan,
            "spread_m": top.spread_m if top else math.nan,
            "appearance_z": self._z,
            "appearance_z_frame": self._z_now,
            "locked": self._locked,
            "suspect": self._suspect,
            "coasting": self._coasting,
            "sustained_evidence": self._sustained,
            "odd_frame": self._odd,  # the last frame was held back as odd (odd_frame_check)
            "odd_frames": self.odd_frames,  # ... and frames so held back and then dropped
            "global_search": self._global,
            "odom_age_s": odom_age,
            "road_share": self._road_share,
            "mode_scores": list(getattr(self, "_mode_scores", [])),
            "rejected_odometry": self.rejected_odometry,
            "last_reason": self.last_reason,
            "kidnaps": self.kidnaps,
            "refound_tracks": self.refound_tracks,
            "lookalike_plants": self.lookalike_plants,
            "kidnap_evidence_frames": self._low_z,
            # the last frame's bird's-eye view: camera pitch = mounting + body pitch against the road (the odometry's, less
            # the road's tilt)
            "body_pitch_deg": self._attitude[0],
            "body_roll_deg": self._attitude[1],
            # the road's grade and camber as tracked from the odometry's attitude (road_tilt_tau_s), taken out of it
            "road_grade_deg": self.road_tilt()[0],
            "road_camber_deg": self.road_tilt()[1],
            "attitude": "odometry" if not self._attitude[2] else f"mounting pitch only: {self._attitude[2]}",
            "attitude_fallbacks": self.attitude_fallbacks,
            # added to mounting + body pitch: the camera's pitch against the road (hills, mount error), estimated
            "road_pitch_deg": self.road_pitch.offset_deg,
            "road_pitch_updates": self.road_pitch.updates,
            # the along-road profile of the place being confirmed after a map search (_check_along_road)
            "along_road_state": self._ar_verdict.state,
            "along_road_best_offset_m": self._ar_verdict.best_m,
            "along_road_margin": self._ar_verdict.margin,
            "along_road_frames": self._ar_frames,
            "along_road_moves": self.along_road_moves,
            # the last frame's bird's-eye cells that did not show the previous frame's static ground (static_ground;
            # NaN: not compared, e.g. the first frame or odometry missing), whether they were left out, and the
            # agreement of the two views that decides it
            "ground_flagged_share": self._ground.flagged,
            "ground_masked": self._ground.masked,
            "ground_agreement": self._ground.agreement,
            # z-score of that agreement against the previous view displaced by a few metres (GroundCheck.continuity):
            # whether this view continues the one before where the odometry puts it
            "ground_continuity": self._ground.continuity,
        }

    # ---------------------------------------------------------------- odometry
    def on_odometry(self, s: OdometrySample) -> str | None:
        """Buffer one odometry sample; returns why it was rejected (None when accepted)."""
        reason = self._check_odometry(s)
        if reason is None:
            self._odom.append(s)
            self._track_tilt(s)
            if len(self._odom) > 4000:  # keep what is needed to propagate to the next frame
                del self._odom[: len(self._odom) - 2000]
        else:
            self.rejected_odometry += 1
            self.last_reason = f"odometry rejected: {reason}"
        return reason

    def _check_odometry(self, s: OdometrySample) -> str | None:
        cfg = self.cfg
        vals = (s.t, s.v_mps, s.yaw_rate_rps, s.v_std, s.yaw_rate_std)
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v) for v in vals):
            return f"non-finite value in {s}"
        if s.v_std < 0 or s.yaw_rate_std < 0:
            return f"negative noise std in {s}"
        if self._odom and s.t <= self._odom[-1].t:
            return f"out of order: t={s.t:.3f} after t={self._odom[-1].t:.3f}"
        if self._t is not None and s.t < self._t:
            return f"too late: t={s.t:.3f} is before the filter time {self._t:.3f}"
        if abs(s.v_mps) > cfg.max_speed_mps or abs(s.yaw_rate_rps) > cfg.max_yaw_rate_rps:
            return f"implausible: v={s.v_mps:.2f} m/s, yaw rate={s.yaw_rate_rps:.2f} rad/s"
        if self._odom:
            last = self._odom[-1]
            dt = s.t - last.t
            if dt <= cfg.max_odom_gap_s and abs(s.v_mps - last.v_mps) > cfg.max_accel_mps2 * dt + 3 * (s.v_std + last.v_std):
                return f"implausible jump: speed {last.v_mps:.2f} -> {s.v_mps:.2f} m/s in {dt:.3f} s"
        return None

    def _track_tilt(self, s: OdometrySample) -> None:
        """Update the road's tilt (``road_tilt_tau_s``) with an accepted sample's attitude (when it has a plausible
        one): an exponential average over time, started at the first such sample."""
        tau = self.cfg.road_tilt_tau_s
        try:
            pitch, roll = float(s.pitch_deg), float(s.roll_deg)
        except (TypeError, ValueError):
            return
        if tau <= 0 or not (math.isfinite(pitch) and math.isfinite(roll)) or max(abs(pitch), abs(roll)) > \
                self.cfg.max_body_tilt_deg:
            return
        if self._tilt is None:
            self._tilt = (s.t, pitch, roll)
            return
        t0, p0, r0 = self._tilt
        a = 1.0 - math.exp(-max(s.t - t0, 0.0) / tau)
        self._tilt = (s.t, p0 + a * (pitch - p0), r0 + a * (roll - r0))

    def road_tilt(self) -> tuple[float, float]:
        """The road's (pitch, roll) against gravity in degrees as tracked from the odometry's attitude
        (``road_tilt_tau_s``); (0, 0) when off or before any attitude."""
        return (0.0, 0.0) if self._tilt is None or self.cfg.road_tilt_tau_s <= 0 else self._tilt[1:]

    def _body_attitude(self, t: float) -> tuple[float, float, str]:
        """(body pitch, body roll) against the road in degrees for the frame at ``t`` from the newest odometry sample
        at or before it, less the road's tilt (:meth:`road_tilt`), and ``""``; or (0, 0) and why not (none, too old,
        not reported / NaN, implausible), in which case the bird's-eye view uses the configured mounting pitch
        alone."""
        cfg = self.cfg
        o = next((o for o in reversed(self._odom) if o.t <= t + 1e-6), None)
        if o is None:
            return 0.0, 0.0, "no odometry at the frame time"
        if t - o.t > cfg.max_odom_gap_s:
            return 0.0, 0.0, f"odometry attitude {t - o.t:.2f} s old"
        try:
            pitch, roll = float(o.pitch_deg), float(o.roll_deg)
        except (TypeError, ValueError):
            return 0.0, 0.0, f"odometry attitude not a number: pitch {o.pitch_deg!r}, roll {o.roll_deg!r}"
        if not (math.isfinite(pitch) and math.isfinite(roll)):
            return 0.0, 0.0, "odometry carries no attitude (orientation not reported or NaN)"
        if max(abs(pitch), abs(roll)) > cfg.max_body_tilt_deg:
            return 0.0, 0.0, (f"implausible odometry attitude: pitch {pitch:.1f}, roll {roll:.1f} deg "
                              f"(> {cfg.max_body_tilt_deg:g})")
        road_p, road_r = self.road_tilt()
        return pitch - road_p, roll - road_r, ""

    def _segments(self, t0: float, t1: float) -> tuple[list[tuple[float, float, float, float, float]], str]:
        """(dt, v, yaw_rate, v_std, w_std) pieces covering [t0, t1] and a problem ('' when odometry is fine)."""
        gap = self.cfg.max_odom_gap_s
        odom = self._odom
        if not odom:
            return [(t1 - t0, 0.0, 0.0, self.cfg.max_speed_mps / 4, 0.5)], "no odometry"
        ts = np.array([o.t for o in odom])
        problem = ""
        segs = []
        tau = t0
        k = int(np.searchsorted(ts, tau, side="right")) - 1
        while tau < t1 - 1e-9:
            nxt = float(ts[k + 1]) if k + 1 < len(ts) else math.inf
            end = min(t1, nxt)
            if k < 0 or tau - odom[k].t > gap:
                problem = "odometry missing or late"
                v = odom[max(k, 0)].v_mps
                segs.append((end - tau, v, 0.0, max(2.0, abs(v)), 0.3))  # hold the last speed, loosely
            else:
                o = odom[k]
                segs.append((end - tau, o.v_mps, o.yaw_rate_rps, o.v_std, o.yaw_rate_std))
            tau = end
            k += 1
        if odom[-1].t < t1 - gap and not problem:
            problem = "odometry missing or late"
        # drop what is no longer needed
        keep = max(0, int(np.searchsorted(ts, t1, side="right")) - 2)
        if keep > 0:
            del odom[:keep]
        return segs, problem

    def _propagate(self, t: float) -> str:
        if self._t is None or t <= self._t:
            return ""
        segs, problem = self._segments(self._t, t)
        # after a frame held back as odd, the view is compared with the one before it: the motion since then
        self._ego = None if problem else ego_motion((self._odd_segs or []) + segs)
        self._last_segs = segs
        self._odo_dist += sum(abs(v) * dt for dt, v, *_ in segs)
        self.p = self._move(self.p, segs)
        if self._shadow is not None:
            self._shadow = self._move(self._shadow, segs)
        self._t = t
        return problem

    def _move(self, p: np.ndarray, segs) -> np.ndarray:
        """Poses ``p`` (N, 3) moved through the odometry pieces ``segs`` with the motion noise (a new array)."""
        cfg = self.cfg
        n = len(p)
        scale = 1.0 + self.rng.normal(0, cfg.odom_scale_std, n)
        bias = self.rng.normal(0, cfg.gyro_bias_std, n)
        x, y, h = p[:, 0], p[:, 1], np.radians(p[:, 2])
        for dt, v, w, vs, ws in segs:
            vv = v * scale + self.rng.normal(0, vs, n) * min(1.0, math.sqrt(0.05 / max(dt, 1e-6)))
            ww = w + bias + self.rng.normal(0, ws, n) * min(1.0, math.sqrt(0.05 / max(dt, 1e-6)))
            hm = h - ww * dt / 2.0  # CCW yaw rate lowers the compass heading
            x = x + vv * dt * np.sin(hm)
            y = y + vv * dt * np.cos(hm)
            h = h - ww * dt
        x = x + self.rng.normal(0, cfg.pos_diffusion_m, n)
        y = y + self.rng.normal(0, cfg.pos_diffusion_m, n)
        hd = np.degrees(h) + self.rng.normal(0, cfg.heading_diffusion_deg, n)
        return np.stack([x, y, hd % 360.0], axis=1)

    # ---------------------------------------------------------------- initialisation
    def _ensure_mosaic(self, centre_latlon: tuple[float, float] | None) -> None:
        m = self._mosaic
        if m is not None:
            if centre_latlon is None:
                return
            x, y = geo.transform(centre_latlon[1], centre_latlon[0], geo.WGS84, m.crs)
            if math.hypot(float(x) - m.centre_xy[0], float(y) - m.centre_xy[1]) < 0.5 * self.cfg.mosaic_radius_m:
                return
            if self.index.n_tiles and len(self.index.tiles_within(centre_latlon[0], centre_latlon[1],
                                                                   self.cfg.mosaic_radius_m)) == 0:
                return
        if centre_latlon is not None and len(self.index.tiles_within(centre_latlon[0], centre_latlon[1],
                                                                      self.cfg.mosaic_radius_m)) == 0:
            centre_latlon = None
        self._mosaic = SatelliteMosaic(self.index, self.cfg.bev_res_m, centre_latlon, self.cfg.mosaic_radius_m,
                                       self.cfg.bev_highpass_m)
        self._embed_cache.clear()

    def _road_points(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which candidate points lie on imagery (and on road, with a road layer)."""
        ok = self._mosaic.covers(x, y)
        if self.roads is not None:
            ok &= self.roads.lookup(x, y, self._mosaic.crs, self.cfg.road_tolerance_m)
        return ok

    def _draw_poses(self, n: int, centre: tuple[float, float] | None = None, radius: float | None = None
                    ) -> np.ndarray:
        """``n`` random poses (x, y, heading) on the roads of the mosaic (or of a disc); headings along the road
        (either way, with a road layer) or uniform."""
        m = self._mosaic
        xs_all, ys_all = [], []
        need = n
        for _ in range(50):
            k = max(need * 4, 1000)
            if centre is None:
                h, w = m.valid.shape
                xs = m.x0 + self.rng.uniform(0, w * m.gsd, k)
                ys = m.y0 - self.rng.uniform(0, h * m.gsd, k)
            else:
                r = radius * np.sqrt(self.rng.uniform(0, 1, k))
                a = self.rng.uniform(0, 2 * np.pi, k)
                xs, ys = centre[0] + r * np.sin(a), centre[1] + r * np.cos(a)
            ok = self._road_points(xs, ys)
            xs_all.append(xs[ok])
            ys_all.append(ys[ok])
            need -= int(ok.sum())
            if need <= 0:
                break
        x = np.concatenate(xs_all)[:n]
        y = np.concatenate(ys_all)[:n]
        if len(x) < n:  # no road / imagery there: fall back to the disc
            if centre is None:
                raise InputError("the satellite mosaic holds no drivable imagery to search")
            r = radius * np.sqrt(self.rng.uniform(0, 1, n - len(x)))
            a = self.rng.uniform(0, 2 * np.pi, n - len(x))
            x = np.concatenate([x, centre[0] + r * np.sin(a)])
            y = np.concatenate([y, centre[1] + r * np.cos(a)])
        hdg = self.rng.uniform(0, 360, n)
        if self.roads is not None:
            ax = self.roads.axis_deg(x, y, m.crs)
            along = np.isfinite(ax)
            flip = self.rng.integers(0, 2, n) * 180.0
            hdg[along] = (ax[along] + flip[along] + self.rng.normal(0, 8.0, int(along.sum()))) % 360.0
        return np.stack([x, y, hdg], axis=1)

    def _inject(self) -> None:
        """While not locked, re-draw random particles: ``inject_fraction`` of them at random road poses of the whole
        map, ``local_inject_fraction`` along the road through the modes of the search holding at least a tenth of the
        weight (:meth:`_along_road`), ``shadow_inject_fraction`` from the shadow (the track held before the search,
        moved by odometry) while there is one. They start with the mean weight."""
        cfg = self.cfg
        n = len(self.p)
        self._plant_twins()
        k_shadow = int(round(cfg.shadow_inject_fraction * n)) if self._shadow_cov() is not None else 0
        if k_shadow:
            pick = self.rng.choice(len(self._shadow), k_shadow)
            self._reseed(self.rng.choice(n, k_shadow, replace=False), self._shadow[pick])
        modes = [md for md in self._modes[: cfg.max_modes]
                 if md.weight >= 0.1 and len(md.members) == n and md.members.any()]
        n_local = int(round(cfg.local_inject_fraction * n)) if modes and cfg.local_search_m > 0 else 0
        k_global = int(round(cfg.inject_fraction * n))
        if k_global:  # over the whole map
            idx = self.rng.choice(n, k_global, replace=False)
            self._reseed(idx, self._draw_poses(k_global))
        if n_local:  # along the road through each converged mode
            per_mode = np.diff(np.linspace(0, n_local, len(modes) + 1).round().astype(int))
            new = np.concatenate([self._along_road(md, int(c)) for md, c in zip(modes, per_mode)])
            if len(new):
                self._reseed(self.rng.choice(n, len(new), replace=False), new)

    def _find_lookalikes(self, top: _Mode) -> None:
        """Queue the places that look most like the top mode's surroundings (``lookalikes``) for :meth:`_plant_twins`:
        once per place (a top mode more than ``mode_radius_m`` from the last one searched, odometry aside)."""
        cfg = self.cfg
        last = self._lookalike_at
        self._lookalike_at = (top.x, top.y, self._odo_dist)
        if last is not None and math.hypot(top.x - last[0], top.y - last[1]) <= (
                cfg.mode_radius_m + self._odo_dist - last[2]):
            return
        self._twins = [(top.x, top.y, tx, ty, turned) for tx, ty, turned in
                       lookalike_places(self._mosaic, top.x, top.y, 2 * cfg.bev_max_m, cfg.lookalikes,
                                        2 * cfg.mode_radius_m)]

    def _plant_twins(self) -> None:
        """Move ``mode_floor`` of the particles to each queued look-alike: the top mode's particles carried over by
        the map transform (shifted, or turned around the place, 180 deg more heading)."""
        if not self._twins or not self._modes:
            self._twins = []
            return
        top, n = self._modes[0], len(self.p)
        members = np.flatnonzero(top.members) if len(top.members) == n else np.zeros(0, np.int64)
        k = int(round(self.cfg.mode_floor * n))
        if len(members) and k:
            for cx, cy, tx, ty, turned in self._twins:
                src = self.p[self.rng.choice(members, k)]
                sign = -1.0 if turned else 1.0
                poses = np.stack([tx + sign * (src[:, 0] - cx), ty + sign * (src[:, 1] - cy),
                                  (src[:, 2] + (180.0 if turned else 0.0)) % 360.0], axis=1)
                self._reseed(self.rng.choice(n, k, replace=False), poses)
        self.lookalike_plants += len(self._twins)
        self._twins = []

    def _reseed(self, idx: np.ndarray, poses: np.ndarray) -> None:
        """Particles ``idx`` replaced by ``poses``, with no running score and the mean weight."""
        self.p[idx] = poses
        self.s[idx] = np.nan
        self.w[idx] = 1.0 / len(self.p)
        self.w /= self.w.sum()

    def _along_road(self, md: _Mode, n: int) -> np.ndarray:
        """Up to ``n`` poses on the road through mode ``md`` (its particles as odometry moved them): offsets
        uniform within ``local_search_m`` either way along the road axis (the mode's heading without a road layer),
        1 m across it; the heading along the axis the way the mode heads, reversed for a quarter of them. Poses off
        the roads / imagery are dropped."""
        cfg = self.cfg
        if n <= 0:
            return np.zeros((0, 3))
        cx, cy, axis = self._mode_axis(md)
        m = 2 * n
        u = self.rng.uniform(-cfg.local_search_m, cfg.local_search_m, m)
        c = self.rng.normal(0.0, 1.0, m)
        x, y = _on_axis(cx, cy, axis, u, c)
        h = axis + np.where(self.rng.uniform(size=m) < 0.25, 180.0, 0.0) + self.rng.normal(0.0, 4.0, m)
        ok = self._road_points(x, y)
        return np.stack([x[ok], y[ok], h[ok] % 360.0], axis=1)[:n]

    def _mode_axis(self, md: _Mode) -> tuple[float, float, float]:
        """The weighted centre (x, y) of mode ``md``'s particles and the road axis through it, degrees clockwise
        from north, the way the mode heads (the mode's heading without a road layer or off it)."""
        mem, w = md.members, self.w[md.members]
        w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
        cx, cy = float(w @ self.p[mem, 0]), float(w @ self.p[mem, 1])
        hd, _ = _circ_mean_std(self.p[mem, 2], w)
        axis = hd
        if self.roads is not None:
            ax = float(self.roads.axis_deg(np.array([cx]), np.array([cy]), self._mosaic.crs)[0])
            if math.isfinite(ax):  # the axis (modulo 180) the way the mode heads
                axis = ax if abs((hd - ax + 180.0) % 360.0 - 180.0) <= 90.0 else ax + 180.0
        return cx, cy, axis

    def _reset_along_road(self) -> None:
        """Forget the along-road profile (a new confirmation run, a new search)."""
        self._ar_sum: np.ndarray | None = None  # per offset: sum of the frames' profiles, and how many scored it
        self._ar_cnt: np.ndarray | None = None
        self._ar_frames = 0
        self._ar_verdict = AlongRoadVerdict("unknown", math.nan, math.nan, math.nan)
        self._ar_reason = ""

    def _check_along_road(self, bev: BirdsEye | None, top: _Mode) -> None:
        """While a place found by the map search is being confirmed (a run of strong frames, not locked) and the top
        mode is tight enough to be locked (``trust_mode_weight``, ``trust_spread_m``), score the frame's bird's-eye
        view at the top mode's pose shifted along the road by multiples of ``along_road_step_m`` within
        ``local_search_m`` either way, each offset at its best pose within ``along_road_cross_m`` across and
        ``along_road_heading_deg`` of turn (:func:`along_road_profile`; offsets whose place is off the roads /
        imagery are left out), add it to the run's profile and judge the mean (:func:`along_road_verdict`; the place
        itself is the offsets within a BEV cell plus the mode's spread along the road, its fit's flanks
        ``bev_highpass_m`` beyond, the margin ``ambiguity_margin``, as between rival modes). After
        ``trust_min_frames`` such frames an offset that fits clearly better moves half of the mode's particles there
        and the confirmation starts over; one that fits about as well withholds the lock (:meth:`_along_road_clear`).
        """
        cfg = self.cfg
        self._ar_reason = ""
        if not cfg.along_road_check:
            return
        if self._good_run <= 1:  # no confirmation run, or a new one
            self._reset_along_road()
        tight = top.weight >= cfg.trust_mode_weight and top.spread_m <= cfg.trust_spread_m
        if self._good_run == 0 or bev is None or not tight:  # only a place that could be locked now is profiled
            return
        cx, cy, axis = self._mode_axis(top)
        a = math.radians(axis)
        u = np.array([math.sin(a), math.cos(a)])
        tol = cfg.bev_res_m + math.sqrt(max(float(u @ top.cov @ u), 0.0))
        offs = _steps(cfg.local_search_m, cfg.along_road_step_m)
        step = cfg.along_road_step_m  # the same grid across the road, and turns that move the view's far edge by it
        turns = _steps(cfg.along_road_heading_deg, math.degrees(step / cfg.bev_max_m))
        prof, at = along_road_profile(bev, self._mosaic, (cx, cy, top.heading_deg), axis, offs,
                                      _steps(cfg.along_road_cross_m, step), turns)
        on = self._road_points(*_on_axis(cx, cy, axis, offs)) | (np.abs(offs) <= tol)
        prof = np.where(on, prof, np.nan)
        if self._ar_sum is None:
            self._ar_sum, self._ar_cnt = np.zeros(len(offs)), np.zeros(len(offs))
        ok = np.isfinite(prof)
        self._ar_sum += np.where(ok, prof, 0.0)
        self._ar_cnt += ok
        self._ar_frames += 1
        mean = np.where(self._ar_cnt > 0, self._ar_sum / np.maximum(self._ar_cnt, 1), np.nan)
        v = along_road_verdict(offs, mean, tol, max(cfg.bev_highpass_m, cfg.bev_res_m), cfg.ambiguity_margin)
        self._ar_verdict = v
        if self._ar_frames < cfg.trust_min_frames or v.state not in ("alias", "ambiguous"):
            return
        where = f"the road {abs(v.rival_m):.0f} m {'ahead' if v.rival_m > 0 else 'behind'}"
        if v.state == "ambiguous":
            self._ar_reason = (f"along-road ambiguity: {where} fits about as well (NCC {-v.margin:+.2f} over "
                               f"{self._ar_frames} frames)")
            return
        # half of the mode (the rest stays in case the profile misled) to the rival's best pose of this frame
        move = np.flatnonzero(top.members)[::2]
        i = int(np.flatnonzero(offs == v.rival_m)[0])
        dest = at[i] if np.isfinite(prof[i]) else (*_on_axis(cx, cy, axis, v.rival_m), top.heading_deg)
        self.p[move, 0] += dest[0] - cx
        self.p[move, 1] += dest[1] - cy
        self.p[move, 2] = (self.p[move, 2] + dest[2] - top.heading_deg) % 360.0
        self.s[move] = np.nan
        self.along_road_moves += 1
        frames = self._ar_frames
        self._good_run = 0  # a different place: its confirmation starts over
        self._reset_along_road()
        self._ar_verdict = v
        self._ar_reason = (f"along-road alias: {where} fits better (NCC {-v.margin:+.2f} over {frames} frames): "
                           "moving the search there")

    def _along_road_clear(self) -> bool:
        """Whether the along-road profile lets the place being confirmed be locked: the place is its peak, judged
        over at least ``trust_min_frames`` frames (always, with ``along_road_check`` off)."""
        return not self.cfg.along_road_check or (self._ar_frames >= self.cfg.trust_min_frames
                                                 and self._ar_verdict.state == "peak")

    def _spread(self, n: int, centre: tuple[float, float] | None = None, radius: float | None = None) -> None:
        """Start over: ``n`` particles on the roads of the mosaic (or of a disc), equal weights."""
        self.p = self._draw_poses(n, centre, radius)
        self.s = np.full(n, np.nan)
        self.w = np.full(n, 1.0 / n)
        self._reset_trust(global_search=centre is None)

    def _reset_trust(self, global_search: bool) -> None:
        """Forget the evidence and lock state (a new start or a re-spread of the particles)."""
        self._z = 0.0
        self._locked = False
        self._suspect = False
        self._good_run = 0
        self._run_z = 0.0  # sum of the frames' z-scores over that run of strong frames
        self._run_start_dist = self._odo_dist
        self._prev_top: tuple[float, float, float] | None = None
        self._low_z = 0  # frames of evidence against the track (see kidnap_distance_m)
        self._against_from = self._odo_dist  # odometry distance where that run began
        self._converged = 0
        self._trusted_prev = False  # the previous frame had a trusted fix
        self._strong_dist = -math.inf  # odometry distance at the last frame that fitted the imagery strongly
        self._coasting = False  # the last frame kept its fix on odometry (see coast_distance_m)
        # (odometry distance, z) of the locked track's latest frames, each continuing the one before
        self._chain: list[tuple[float, float]] = []
        self._sustained = False  # the last frame's sustained evidence (see sustained_evidence)
        # the odometry pieces since the frame before an odd frame that was held back (odd_frame_check), None: none is
        self._odd_segs: list | None = None
        self._odd = False  # the last frame was held back as odd
        self._global = global_search
        self._shadow: np.ndarray | None = None  # the track held before a declared kidnap, moved by odometry only
        self._gps_anchor = False  # ... or the cloud GPS anchored, when GPS ended before a lock
        self._reset_along_road()
        # the place (x, y, odometry distance) the map search was last confirming; its look-alikes were searched
        self._lookalike_at: tuple[float, float, float] | None = None
        self._twins: list[tuple[float, float, float, float, bool]] = []  # to plant: (cx, cy, tx, ty, turned)

    # ---------------------------------------------------------------- main entry
    def localize(self, image: np.ndarray, t: float, intrinsics: CameraIntrinsics | None = None,
                 gps_prior: PositionPrior | None = None) -> LocalizationResult:
        """Update the filter with one frame (at time ``t``) and return the ranked modes and a trusted fix or None.

        ``gps_prior`` (a GNSS position while it is available, radius ~ 2 sigma) initialises or corrects the
        particles. Odometry up to ``t`` must have been passed to :meth:`on_odometry` first.
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        t = float(t)
        if not math.isfinite(t):
            raise InputError(f"frame time must be finite, got {t}")
        if gps_prior is not None and not isinstance(gps_prior, PositionPrior):
            raise InputError(f"gps_prior must be a PositionPrior, got {type(gps_prior).__name__}")
        if self._t is not None and t < self._t:
            return self._result(t, [], None, f"frame at t={t:.3f} is older than the filter time {self._t:.3f}",
                                timings, gps_prior, t0)
        cfg = self.cfg
        body_pitch, body_roll, why = self._body_attitude(t)
        self._attitude = (body_pitch, body_roll, why)
        self.attitude_fallbacks += int(bool(why))
        bev = birds_eye(image, cfg, intrinsics, cfg.camera_pitch_deg + body_pitch + self.road_pitch.offset_deg,
                        body_roll)
        timings["bev"] = (time.perf_counter() - t0) * 1e3
        self._ensure_mosaic((gps_prior.lat, gps_prior.lon) if gps_prior is not None else None)
        m = self._mosaic
        problems: list[str] = []
        # ---- initialise / propagate
        t1 = time.perf_counter()
        self._ego = None
        if gps_prior is not None:
            gx, gy = (float(v) for v in geo.transform(gps_prior.lon, gps_prior.lat, geo.WGS84, m.crs))
            sig = max(cfg.gps_sigma_floor_m, gps_prior.radius_m / 2.0)
        if self.p is None:
            if gps_prior is not None:
                self._spread(cfg.n_particles_global, (gx, gy), 3 * sig)
            else:
                self._spread(cfg.n_particles_global)
            self._t = t
        else:
            problem = self._propagate(t)
            if problem:
                problems.append(problem)
            if gps_prior is None and not self._locked and not self._global:
                # GPS ended before the track locked: from now on the particles drawn over the whole map make this a
                # map search, and a place it finds is confirmed as one (relock_frames_global over
                # relock_distance_m, the along-road check), unless it is where the cloud the GPS anchored went by
                # odometry (kept as the shadow, see _refound)
                self._shadow = self.p[self.rng.choice(len(self.p), cfg.n_particles, p=self.w)].copy()
                self._global = True
                self._gps_anchor = True
            if gps_prior is None and not self._locked:  # keep looking elsewhere while not locked
                self._inject()
        timings["propagate"] = (time.perf_counter() - t1) * 1e3
        self._ground = GroundCheck(np.ones(0, bool))
        if cfg.static_ground_check and self._prev_bev is not None and self._ego is not None:
            t1 = time.perf_counter()
            self._ground = static_ground(self._prev_bev, bev, self._ego, cfg.bev_res_m, cfg.static_ground_sigma,
                                         cfg.static_ground_agreement)
            if self._ground.masked and (cfg.modality != "ground" or not self._locked):  # see static_ground_check
                self._ground = replace(self._ground, keep=np.ones(bev.n, bool), masked=False)
            if self._ground.masked:
                bev = bev.without(~self._ground.keep)
            timings["static_ground"] = (time.perf_counter() - t1) * 1e3
        prev_bev = self._prev_bev
        self._prev_bev = bev
        # ---- weights
        t1 = time.perf_counter()
        w_before, s_before = self.w, self.s.copy()  # kept for an odd frame (odd_frame_check)
        logw = np.log(np.maximum(self.w, 1e-300))
        if gps_prior is not None:
            d2 = (self.p[:, 0] - gx) ** 2 + (self.p[:, 1] - gy) ** 2
            if d2.min() > (4 * sig) ** 2:  # the particles lost the car: start over around the fix
                self._spread(cfg.n_particles_global, (gx, gy), 3 * sig)
                logw = np.log(self.w)
                d2 = (self.p[:, 0] - gx) ** 2 + (self.p[:, 1] - gy) ** 2
            logw += -0.5 * d2 / sig**2
        informative = bev.n >= cfg.min_bev_cells and bev.textured
        bev = bev.subset(cfg.global_bev_cells if self._global else cfg.max_bev_cells, self.rng)
        ncc = np.zeros(len(self.p), np.float32)
        if informative:
            ncc, covfrac = bev_ncc(bev, m, self.p[:, 0], self.p[:, 1], self.p[:, 2])
            ncc = np.where(covfrac >= 0.5, ncc, 0.0)
            temp = cfg.ncc_temperature * (cfg.global_temperature_factor if self._global else 1.0)
            logw += ncc / temp
            self.s = np.where(np.isnan(self.s), ncc, (1 - cfg.z_ema) * self.s + cfg.z_ema * ncc)
        elif bev.n < cfg.min_bev_cells:
            problems.append(f"frame shows too little ground ({bev.n} BEV cells < {cfg.min_bev_cells})")
        else:
            problems.append("frame shows no ground texture (uniform: a covered lens, a blank wall): coasting on odometry")
        road_share = 1.0
        if self.roads is not None:
            on = self.roads.lookup(self.p[:, 0], self.p[:, 1], m.crs, cfg.road_tolerance_m)
            road_share = float(np.sum(self.w[on]))  # the predicted cloud's weight on road
            logw += np.where(on, 0.0, math.log(max(cfg.road_off_weight, 1e-12)))
        if cfg.embed_weight > 0:
            t2 = time.perf_counter()
            logw += self._embed_loglik(image)
            timings["embed"] = (time.perf_counter() - t2) * 1e3
        logw -= logw.max()
        w = np.exp(logw)
        self.w = w / w.sum()
        timings["weight"] = (time.perf_counter() - t1) * 1e3
        # ---- modes, evidence, lost / kidnapped
        t1 = time.perf_counter()
        self._modes = self._find_modes()
        top = self._modes[0]
        tight = top.weight >= cfg.trust_mode_weight and top.spread_m <= cfg.trust_spread_m
        z_now = self._evidence_z(bev, ncc, top, temp) if informative else math.nan
        self._z_now = z_now
        self._road_share = road_share
        off_road = road_share < 0.5  # odometry drove the track off the roads: it is not where the car is
        g = self._ground
        # ---- an odd frame held back at the frame before (odd_frame_check): this view decides
        if self._odd_segs is not None:
            self._odd_segs = None
            if g.agreement >= cfg.static_ground_agreement:
                self.odd_frames += 1  # this view continues the one before the odd frame: no teleport between them
            else:
                self._suspect = True  # as the odd frame would have made it at once
                self._good_run = 0
                self._run_z = 0.0
        odd = (cfg.odd_frame_check and informative and gps_prior is None and self._locked and not self._suspect
               and self._trusted_prev and not off_road and z_now < cfg.kidnap_z_frame
               and g.agreement < cfg.static_ground_agreement)
        self._odd = odd
        if odd:  # held back: the weights as they were, and the next view is compared with the one before this one
            self.w, self.s = w_before, s_before
            self._modes = self._find_modes()
            top = self._modes[0]
            tight = top.weight >= cfg.trust_mode_weight and top.spread_m <= cfg.trust_spread_m
            self._prev_bev = prev_bev
            self._odd_segs = self._last_segs
        evidence = informative and not odd  # the frame counts as evidence for or against the track
        if evidence and z_now >= cfg.trust_z_frame:
            self._strong_dist = self._odo_dist
        # A weak frame on a trusted track that shows the same scene as the frame before, where the odometry puts it
        # (GroundCheck.continuity; a teleport between them would break it), says nothing about where the car is
        # (a forest wall at a dead end, a view blocked by a truck): the track coasts on odometry with its fix, for
        # at most coast_distance_m of driving since a frame that fitted the imagery strongly.
        coast = (evidence and self._locked and not self._suspect and self._trusted_prev and not off_road
                 and cfg.coast_distance_m > 0 and not z_now >= cfg.trust_z_frame
                 and g.agreement >= cfg.static_ground_agreement and g.continuity >= cfg.coast_continuity_z
                 and self._odo_dist - self._strong_dist <= cfg.coast_distance_m)
        self._coasting = coast
        # Only frames after the car moved count as evidence over a run of frames or towards "lost": a car standing
        # or turning on the spot (at a dead end, facing a field) sees the same ground again, and a track that does
        # not move cannot have gone wrong meanwhile.
        prev_dist = self._frame_dist
        moved = self._odo_dist - prev_dist >= _MOVED_M
        self._frame_dist = self._odo_dist
        sustained = self._sustained = self._sustained_run(evidence and moved, z_now, g, off_road)
        if evidence and not coast:
            self._z = (1 - cfg.z_ema) * self._z + cfg.z_ema * z_now
            # the same place (the top mode moved no more than the car) fitting strongly, frame after frame
            prev = self._prev_top
            same = prev is not None and math.hypot(top.x - prev[0], top.y - prev[1]) <= (
                self._odo_dist - prev[2] + 10.0)
            strong = (self._z >= cfg.trust_z and top.weight >= 0.5 and top.spread_m <= cfg.trust_spread_m)
            if strong and (same or self._good_run == 0):
                if self._good_run == 0:
                    self._run_start_dist = self._odo_dist
                    self._run_z = 0.0
                self._good_run += 1
                self._run_z += z_now
            else:
                self._good_run = 1 if strong else 0
                self._run_z = z_now if strong else 0.0
                self._run_start_dist = self._odo_dist
            self._prev_top = (top.x, top.y, self._odo_dist)
        if self._locked and not coast and (off_road or (evidence and z_now < cfg.kidnap_z_frame)
                                           or (self._z < cfg.trust_z - 1.0 and not sustained)):
            self._suspect = True  # the evidence sagged: no fix until it has been strong again for a while
            self._good_run = 0
            self._run_z = 0.0
        if self._suspect and (sustained or self._suspicion_cleared()):
            self._suspect = False
        lost = False
        if gps_prior is not None or not (self._locked or tight):
            self._low_z = 0
        elif self._locked:
            # A locked track is given up only on evidence for being elsewhere (see kidnap_distance_m): weak or
            # absent evidence (a forest edge, an occluded frame, a turn on the spot) withholds fixes (suspect) and
            # the filter coasts on odometry, but it does not throw the track away.
            if off_road or (evidence and not coast and not sustained and z_now < cfg.kidnap_z):
                if moved:
                    if self._low_z == 0:
                        self._against_from = prev_dist
                    self._low_z += 1
            elif evidence and (z_now >= cfg.trust_z_frame or sustained):
                self._low_z = 0  # the track fits a frame (or a run of them) far better than random places do
            lost = (self._low_z >= cfg.kidnap_frames
                    and self._odo_dist - self._against_from >= cfg.kidnap_distance_m)
        elif self._z < cfg.kidnap_z or off_road:  # converged, not yet locked
            self._low_z += int(moved)
            lost = self._low_z >= cfg.kidnap_frames
        else:
            self._low_z = 0
        if lost:
            shadow = None
            if self._locked:
                self.kidnaps += 1
                problems.append(f"appearance no better than at random places (or the track off the roads) for "
                                f"{self._low_z} frames over {self._odo_dist - self._against_from:.0f} m: kidnapped, "
                                "searching the whole map")
                shadow = self.p[self.rng.choice(len(self.p), cfg.n_particles, p=self.w)].copy()
            else:
                problems.append("the converged mode does not fit the imagery: searching the whole map again")
            kept = self.rng.choice(len(self.p), cfg.n_particles_global // 2, p=self.w)
            keep, keep_s = self.p[kept], self.s[kept]
            self._spread(cfg.n_particles_global)
            self.p[: len(keep)] = keep  # half stays on the old track in case it was right after all
            self.s[: len(keep)] = keep_s
            self._shadow = shadow
            self._modes = self._find_modes()
            top = self._modes[0]
            tight = False
        if self._global and gps_prior is None and not self._locked:  # a place found by the map search
            t2 = time.perf_counter()
            self._check_along_road(bev if informative else None, top)
            timings["along_road"] = (time.perf_counter() - t2) * 1e3
        # ---- trust
        if (self._global and gps_prior is None and not self._locked and tight and self._good_run >= 1
                and cfg.lookalikes > 0):
            self._find_lookalikes(top)
        self._converged = self._converged + 1 if tight else 0
        refound = self._global and tight and self._refound(top)
        if self._global and not refound:  # found by a search of the whole map: a longer confirmation
            confirmed = (self._good_run >= cfg.relock_frames_global
                         and self._odo_dist - self._run_start_dist >= cfg.relock_distance_m)
        else:  # anchored (particles spread around a GPS fix, or the map search re-found the track held before a
            # declared kidnap): not the best of thousands of places, the short confirmation suffices
            confirmed = self._good_run >= cfg.relock_frames
        if self._global and gps_prior is None:  # and the road a few metres either way must fit worse
            confirmed = confirmed and self._along_road_clear()
        if tight and self._z >= cfg.trust_z and (gps_prior is not None or confirmed):
            self._locked = True
            if refound and not self._gps_anchor:
                self.refound_tracks += 1
            self._shadow = None
            self._twins = []  # look-alikes queued for the search are not planted on a locked track
        on_map = bool(m.covers(np.array([top.x]), np.array([top.y]))[0])
        rivals = self._rivals()
        reason = ""
        if problems:
            reason = "; ".join(problems)
        elif odd:
            reason = (f"odd frame: it neither fits the track (z={z_now:.1f}) nor continues the previous view (agreement "
                      f"{g.agreement:.2f}); held back, the next frame decides")
        elif not on_map:
            reason = "estimate is off the map"
        elif len(self._modes) > 1 and top.weight < cfg.trust_mode_weight:
            reason = f"multimodal: {len(self._modes)} modes, top holds {top.weight:.2f}"
        elif rivals:
            reason = (f"ambiguous: {len(rivals)} other mode(s) fit the imagery as well as the top one "
                      f"(e.g. {rivals[0].weight:.2f} of the weight, {self._dist_m(top, rivals[0]):.0f} m away)")
        elif top.spread_m > cfg.trust_spread_m:
            reason = f"posterior spread {top.spread_m:.1f} m > {cfg.trust_spread_m} m"
        elif not coast and not sustained and not (self._z >= cfg.trust_z and z_now >= cfg.trust_z_frame):
            reason = f"appearance evidence z={z_now:.1f} (mean {self._z:.1f}) < {cfg.trust_z}"
        elif not self._locked and self._global and gps_prior is None and self._ar_reason:
            reason = self._ar_reason
        elif not self._locked and refound:
            reason = (f"confirming the track held before {'the GPS loss' if self._gps_anchor else 'the kidnap'}, "
                      f"re-found by the map search: strong for "
                      f"{self._good_run}/{cfg.relock_frames} frames")
        elif not self._locked and self._global:
            reason = (f"confirming the place found by the map search: strong for {self._good_run}/"
                      f"{cfg.relock_frames_global} frames over {self._odo_dist - self._run_start_dist:.0f}/"
                      f"{cfg.relock_distance_m:.0f} m")
        elif not self._locked:
            reason = f"confirming the track: strong for {self._good_run}/{cfg.relock_frames} frames"
        elif self._suspect:
            reason = (f"evidence sagged below {cfg.trust_z - 1.0:.1f}: withholding fixes until strong for "
                      f"{cfg.relock_frames} frames, or for {cfg.trust_min_frames} with a summed z of "
                      f"{cfg.relock_frames * cfg.trust_z:g} ({self._good_run} so far, z {self._run_z:.1f})")
        elif self._converged < cfg.trust_min_frames:
            reason = f"converging ({self._converged}/{cfg.trust_min_frames} frames)"
        trusted = reason == ""
        if cfg.road_pitch and evidence and tight and not coast:
            t2 = time.perf_counter()
            self._probe_road_pitch(image, intrinsics, body_pitch, body_roll, top)
            timings["road_pitch"] = (time.perf_counter() - t2) * 1e3
        # ---- resample; back to the tracking size once locked
        n_target = None
        if self._locked and len(self.p) != cfg.n_particles:
            n_target = cfg.n_particles
            self._global = False
        self._resample(n_target, rivals)
        timings["modes"] = (time.perf_counter() - t1) * 1e3
        hyps = [self._hypothesis(md, reason or "not trusted") for md in self._modes]
        fix = None
        if trusted:
            fix = self._hypothesis(top, "")
            fix.status = STATUS_TRUSTED
            fix.filtered = True
            hyps.insert(0, fix)
        if not odd:  # an odd frame held back leaves the track as it was
            self._trusted_prev = trusted
        self.last_reason = reason or ("trusted, coasting on odometry: the view shows no mapped ground" if coast
                                      else "trusted")
        return self._result(t, hyps, fix, reason, timings, gps_prior, t0)

    # ---------------------------------------------------------------- pieces
    def _result(self, t, hyps, fix, reason, timings, prior, t0) -> LocalizationResult:
        add_reference_error(hyps, self.index.reference_std_m)  # fix is hyps[0] when there is one
        timings["total"] = (time.perf_counter() - t0) * 1e3
        if fix is not None:
            out = FilterOutput(t, True, True, "trusted", fix.lat, fix.lon, fix.cov_en.copy())
        else:
            out = FilterOutput(t, False, False, reason or "no fix")
            self.last_reason = reason or self.last_reason
        return LocalizationResult(t, hyps, fix, out, timings, prior)

    def _hypothesis(self, md: _Mode, reason: str) -> Hypothesis:
        lon, lat = geo.transform(md.x, md.y, self._mosaic.crs, geo.WGS84)
        floor = (self.cfg.bev_res_m / 2.0) ** 2
        return Hypothesis(
            tile_id="", similarity=float(md.weight), status=STATUS_RETRIEVED, lat=float(lat), lon=float(lon),
            alt_m=self.cfg.camera_height_m, heading_deg=md.heading_deg, heading_std_deg=md.heading_std_deg,
            cov_en=md.cov + floor * np.eye(2), reason=reason, method=f"particle-filter/{self.cfg.modality}",
            prior_used=False, tile_lat=float(lat), tile_lon=float(lon),
        )

    def _shadow_cov(self) -> np.ndarray | None:
        """The shadow's position covariance, or None without one; a shadow whose spread grew past ``mode_radius_m``
        (it no longer tells one place on a road from the next) is dropped."""
        sh = self._shadow
        if sh is None:
            return None
        d = sh[:, :2] - sh[:, :2].mean(axis=0)
        cov = d.T @ d / len(sh)
        if math.sqrt(max(float(np.linalg.eigvalsh(cov).max()), 0.0)) > self.cfg.mode_radius_m:
            self._shadow = None
            return None
        return cov

    def _refound(self, top: _Mode) -> bool:
        """Whether the map search's top mode is the track held before the declared kidnap: it lies within the
        99 % ellipse of that track propagated by odometry alone (the shadow's spread plus the mode's) and heads
        the same way (within 3 sigma). No shadow, or one grown too wide (:meth:`_shadow_cov`): False."""
        cov = self._shadow_cov()
        if cov is None:
            return False
        sh = self._shadow
        hd, hs = _circ_mean_std(sh[:, 2], np.ones(len(sh)))
        delta = np.array([top.x, top.y]) - sh[:, :2].mean(axis=0)
        m2 = float(delta @ np.linalg.solve(cov + top.cov + 1e-6 * np.eye(2), delta))
        dh = abs((top.heading_deg - hd + 180.0) % 360.0 - 180.0)
        return m2 <= 9.21 and dh <= 3.0 * math.hypot(hs, top.heading_std_deg)  # chi2(2 dof, 0.99) = 9.21

    def _sustained_run(self, counts: bool, z_now: float, g: GroundCheck, off_road: bool) -> bool:
        """Whether a locked track has sustained evidence (see ``VehicleConfig.sustained_evidence``) with this frame:
        the run of frames, each continuing the one before (``g.agreement``), ends with at least ``relock_frames``
        frames over at least ``kidnap_distance_m`` of driving that each fit with z >= ``kidnap_z_frame`` and on
        average with z >= ``trust_z_frame``. ``counts``: the frame carries evidence and the car moved since the one
        before (a frame that does not count is never sustained and does not extend the run)."""
        cfg = self.cfg
        if not (self._locked and cfg.sustained_evidence) or (counts and not g.agreement >= cfg.static_ground_agreement):
            self._chain = []  # not a locked track, or this view does not continue the one before: start over
        if not (self._locked and cfg.sustained_evidence and counts):
            return False
        self._chain = (self._chain + [(self._odo_dist, z_now)])[-_CHAIN_MAX:]
        end = self._chain[-1][0]
        k = len(self._chain) - cfg.relock_frames
        while k >= 0 and end - self._chain[k][0] < cfg.kidnap_distance_m:
            k -= 1
        if k < 0 or off_road:
            return False
        zs = [z for _, z in self._chain[k:]]
        return min(zs) >= cfg.kidnap_z_frame and float(np.mean(zs)) >= cfg.trust_z_frame

    def _suspicion_cleared(self) -> bool:
        """Whether a suspect locked track has been confirmed again: a run of strong frames at the same place, either
        ``relock_frames`` long, or at least ``trust_min_frames`` long with the evidence of ``relock_frames`` frames at
        the trust threshold (the frames' z-scores summed to ``relock_frames * trust_z``).

        The suspect track is one hypothesis (propagated by odometry, not the best of many places found by a search),
        tested against frames: under a kidnap its frames fit like random places (z about 0, see
        :meth:`_evidence_z`), so a few frames far above the threshold carry the evidence of more frames at it. A track
        that was right all along, coming out of a weak stretch (a forest edge, an occluded view), is trusted again
        that much sooner. The long confirmation after a search of the whole map keeps counting frames and metres.
        """
        cfg = self.cfg
        return self._good_run >= cfg.relock_frames or (
            self._good_run >= cfg.trust_min_frames and self._run_z >= cfg.relock_frames * cfg.trust_z)

    @staticmethod
    def _dist_m(a: _Mode, b: _Mode) -> float:
        return math.hypot(a.x - b.x, a.y - b.y)

    def _find_modes(self) -> list[_Mode]:
        """Weighted mean-shift modes of the particle cloud, heaviest first.

        Each mode's mean shift starts in the square of side ``mode_radius_m`` that holds the most weight among the
        particles not yet in a mode, not at the heaviest single particle: while the map is searched, a few hundred
        particles drawn over the whole map each carry more weight than any one of the thousands around the car
        (the weight of a place is shared among its particles), and with at most ``max_modes`` modes seeded at
        single particles the place that holds most of the weight could be left out of the list altogether.
        """
        p, w = self.p, self.w
        rad = self.cfg.mode_radius_m
        _, cell = np.unique(np.floor(p[:, :2] / rad).astype(np.int64), axis=0, return_inverse=True)
        cell = cell.reshape(-1)
        left = np.ones(len(p), bool)
        modes: list[_Mode] = []
        while left.any() and len(modes) < self.cfg.max_modes:
            mass = np.bincount(cell, weights=np.where(left, w, 0.0)) + 1e-300 * np.bincount(cell, weights=left)
            c = int(np.argmax(mass))  # (the tiny term: a square with particles left, should all their weights be 0)
            seed = left & (cell == c)
            ws = w[seed]
            if ws.sum() > 0:
                cx, cy = float(np.sum(ws * p[seed, 0]) / ws.sum()), float(np.sum(ws * p[seed, 1]) / ws.sum())
            else:
                cx, cy = float(p[seed, 0].mean()), float(p[seed, 1].mean())
            for _ in range(5):
                near = left & ((p[:, 0] - cx) ** 2 + (p[:, 1] - cy) ** 2 <= rad**2)
                ww = w[near]
                if not ww.sum() > 0:
                    break
                cx, cy = float(np.sum(ww * p[near, 0]) / ww.sum()), float(np.sum(ww * p[near, 1]) / ww.sum())
            near = left & ((p[:, 0] - cx) ** 2 + (p[:, 1] - cy) ** 2 <= (2 * rad) ** 2)
            ww = w[near]
            tot = float(ww.sum())
            d = p[near, :2] - np.array([cx, cy])
            cov = (d * (ww / max(tot, 1e-300))[:, None]).T @ d
            hd, hs = _circ_mean_std(p[near, 2], ww)
            modes.append(_Mode(cx, cy, tot, cov, hd, hs, near))
            left &= ~near
            if tot < 1e-3 and len(modes) > 1:
                modes.pop()
                break
        modes.sort(key=lambda md: -md.weight)
        return modes

    def _evidence_z(self, bev: BirdsEye, ncc: np.ndarray, top: _Mode, temp: float) -> float:
        """How much better the top mode fits the frame than clouds of poses around random road points (z-score).

        The null is selected like the filter selects: each of ``null_samples`` random road poses gets a small
        cloud of perturbed poses (about a converged mode's size) whose NCCs are averaged with the filter's
        likelihood weights, so a mode that merely found the best local fit at a wrong place scores near 0.
        """
        cfg = self.cfg
        try:
            centres = self._draw_poses(cfg.null_samples)
        except InputError:
            return 0.0
        k = _NULL_CLOUD
        poses = np.repeat(centres, k, axis=0)
        poses[:, 0] += self.rng.normal(0, 1.0, len(poses))
        poses[:, 1] += self.rng.normal(0, 1.0, len(poses))
        poses[:, 2] += self.rng.normal(0, 3.0, len(poses))
        null, covf = bev_ncc(bev, self._mosaic, poses[:, 0], poses[:, 1], poses[:, 2])
        null = null.reshape(-1, k).astype(np.float64)
        good = (covf.reshape(-1, k) >= 0.5).all(axis=1)
        null = null[good]
        if len(null) < 10:
            return 0.0
        wn = np.exp((null - null.max(axis=1, keepdims=True)) / temp)
        fits = np.sum(wn * null, axis=1) / np.sum(wn, axis=1)
        ww = self.w[top.members]
        fit = float(np.sum(ww * ncc[top.members]) / max(ww.sum(), 1e-300))
        return (fit - float(np.mean(fits))) / max(float(np.std(fits)), 1e-3)

    def _rivals(self) -> list[_Mode]:
        """Secondary modes whose particles fit the imagery about as well as the top mode's (running NCC)."""
        if len(self._modes) < 2:
            return []
        best = []
        for md in self._modes:
            sc, ww = self.s[md.members], self.w[md.members]
            ok = np.isfinite(sc)
            best.append(float(np.sum(sc[ok] * ww[ok]) / ww[ok].sum()) if ok.any() and ww[ok].sum() > 0 else -math.inf)
        self._mode_scores = best
        return [md for md, b in zip(self._modes[1:], best[1:])
                if b >= best[0] - self.cfg.ambiguity_margin and md.members.sum() >= 5]

    def _resample(self, n_target: int | None, rivals: list[_Mode]) -> None:
        """Systematic resampling (when the ESS is low or the size changes) that keeps ``mode_floor`` of the
        particles, and so of the weight, on every rival mode.

        Two places that explain the frames equally well would otherwise not keep equal weight: the mode with more
        particles samples its peak better, gains weight every frame and starves the other (sample impoverishment),
        and a wrong place could end up trusted. Rivals are judged by their particles' running NCC, not by weight.
        """
        n = len(self.p) if n_target is None else int(n_target)
        ess = 1.0 / float(np.sum(self.w**2))
        if n == len(self.p) and ess >= 0.5 * n:
            return
        q = self.w.copy()
        beta = self.cfg.mode_floor
        if rivals and beta * len(rivals) < 0.5:
            q *= 1.0 - beta * len(rivals)
            for md in rivals:
                wm = np.where(md.members, self.w, 0.0)
                q += beta * wm / max(wm.sum(), 1e-300)
        q /= q.sum()
        u = (self.rng.uniform() + np.arange(n)) / n
        idx = np.minimum(np.searchsorted(np.cumsum(q), u), len(q) - 1)
        self.p = self.p[idx].copy()
        self.s = self.s[idx].copy()
        self.w = np.full(n, 1.0 / n)
        for md in self._modes:
            md.members = md.members[idx]

    def _probe_road_pitch(self, image: np.ndarray, intrinsics: CameraIntrinsics | None, body_pitch: float,
                          body_roll: float, top: _Mode) -> None:
        """Score the frame's bird's-eye view at the road-pitch estimate and a step either side (each on at most
        ``max_bev_cells`` evenly spaced cells) against the imagery at the top mode's heaviest particles (weighted
        mean NCC) and update the estimate (:class:`RoadPitch`).

        Called whenever the top mode is tight and the frame not coasting: while tracking, also while the locked
        track is suspect, and while a search (a cold start, after a kidnap) has converged on a place it is still
        confirming. On a hill the search projects every frame at the IMU's pitch, off by the grade, and a place
        never fits strongly enough to be confirmed unless the pitch is learned there too. Likewise a locked track
        whose frames stop fitting where the grade changes becomes suspect, and a pitch frozen while it is suspect
        kept them from fitting again (world 4343's hard drive, seed 4: 15 s suspect at a stale -0.4 deg, then a
        kidnap declared on the right track; learned on, the estimate reached +3.4 deg and the track was trusted
        again within 5 s). The estimate is one number for the car, not per place: a search that converged on a
        wrong place, or a track that was kidnapped, tunes it to that place for a few frames, and the confirmation
        (``relock_frames_global`` strong frames over ``relock_distance_m`` and the along-road check for a place
        found by the map search; clearing a suspicion) still has to pass."""
        cfg = self.cfg
        idx = np.flatnonzero(top.members)
        idx = idx[np.argsort(-self.w[idx])[: cfg.road_pitch_particles]]
        ww = self.w[idx]
        scores = []
        for off in self.road_pitch.probes():
            bev = birds_eye(image, cfg, intrinsics, cfg.camera_pitch_deg + body_pitch + off, body_roll
                            ).subset(cfg.max_bev_cells, None)
            ncc, covf = bev_ncc(bev, self._mosaic, self.p[idx, 0], self.p[idx, 1], self.p[idx, 2])
            ok = covf >= 0.5
            scores.append(float(np.sum(ww[ok] * ncc[ok]) / ww[ok].sum()) if ok.any() and ww[ok].sum() > 0
                          else math.nan)
        self.road_pitch.update(tuple(scores))

    def _embed_loglik(self, image: np.ndarray) -> np.ndarray:
        """Embedding log-likelihood per particle: weight * (cos(frame, crop at the particle's cell) - max)."""
        cfg = self.cfg
        q = self.backend.embed([image], cfg.modality)[0]
        m = self._mosaic
        cell = cfg.embed_cell_m
        ci = np.floor(self.p[:, 0] / cell).astype(np.int64)
        cj = np.floor(self.p[:, 1] / cell).astype(np.int64)
        keys = set(zip(ci.tolist(), cj.tolist()))
        todo = [k for k in keys if k not in self._embed_cache]
        crops, have = [], []
        for k in todo:
            c = m.crop((k[0] + 0.5) * cell, (k[1] + 0.5) * cell, GROUND_TILE_M)
            if c is None:
                self._embed_cache[k] = None
            else:
                crops.append(c)
                have.append(k)
        if crops:
            emb = self.backend.embed(crops, "satellite", batch_size=32)
            for k, e in zip(have, emb):
                self._embed_cache[k] = e
        sims = np.array([float(self._embed_cache[k] @ q) if self._embed_cache.get(k) is not None else np.nan
                         for k in zip(ci.tolist(), cj.tolist())])
        if not np.isfinite(sims).any():
            return np.zeros(len(self.p))
        sims = np.where(np.isfinite(sims), sims, np.nanmin(sims))
        return cfg.embed_weight * (sims - sims.max())
