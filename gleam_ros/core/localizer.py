"""The localization pipeline for one camera frame: embed → search → verify → filter.

One definition of the pipeline: the ``gleam`` CLI, the evaluation, the benchmarks and the ROS
nodes all call :class:`Localizer`. A frame yields ranked :class:`Hypothesis` objects and, only
when geometry verified it and the temporal filter accepts it, a trusted fix. Without trustworthy
geometry there is no fix: the localizer says nothing rather than lie.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .camera import CameraIntrinsics, Rectifier
from .consensus import check_consensus
from .encoder import embed_rotations
from .errors import ConfigError, InputError
from .filter import FilterConfig, FilterOutput, FixFilter
from .geo import distance_m
from .index import SearchHit, TileIndex
from .jsonutil import to_jsonable
from .oblique import view_search
from .preprocess import MODALITIES, check_image
from .verify import Priors, Verification, VerifyConfig, Verifier

# Hypothesis status, as in gleam_ros/msg/GeoPoseHypothesis.
STATUS_RETRIEVED = "retrieved"  # embedding retrieval only
STATUS_REJECTED = "rejected"  # geometry tried and failed
STATUS_VERIFIED = "verified"  # geometry passed
STATUS_TRUSTED = "trusted"  # verified and accepted by the temporal filter


@dataclass(frozen=True)
class PositionPrior:
    """Search only tiles whose centre lies within ``radius_m`` of (lat, lon)."""

    lat: float
    lon: float
    radius_m: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and math.isfinite(self.lon) and -90 <= self.lat <= 90
                and -180 <= self.lon <= 180):
            raise InputError(f"position prior out of range: ({self.lat}, {self.lon})")
        if not (self.radius_m > 0):
            raise InputError(f"position prior radius must be positive, got {self.radius_m}")


@dataclass(frozen=True)
class LocalizerConfig:
    """Pipeline settings (the node's parameters and the CLI's options map onto these)."""

    modality: str = "uav"
    top_k: int = 6  # retrieval candidates verified per frame
    n_rotations: int = 8  # yaw hypotheses embedded when the heading is unknown (1 = no TTA)
    stop_inliers: int = 200  # stop verifying candidates once a verified one has this many inliers
    track_prior: bool = True  # restrict search around the filter's own track while it is trusted
    track_radius_min_m: float = 60.0  # smallest search radius around the track
    # While tracking, verify the tiles nearest the predicted position without embedding the frame
    # (retrieval adds little inside a tight prior and costs the most time on CPU). Acquisition and
    # externally given priors (e.g. GPS) always use retrieval.
    track_skip_embed: bool = True
    # Oblique views (gleam_ros.core.oblique): when the frame's Priors give height, pitch, roll and heading, the
    # tile search (tracking and a prior-restricted retrieval) is centred where the optical axis meets the ground,
    # its radius grown by that point's uncertainty from these 1-sigma attitude errors (IMU / gimbal pitch and
    # roll; magnetometer heading).
    view_search: bool = True
    attitude_std_deg: float = 1.0
    heading_std_deg: float = 5.0
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    # A multirotor turns at several m/s²: at 1 Hz frames the filter's 3 m/s² default gates real turns.
    filter: FilterConfig = field(default_factory=lambda: FilterConfig(accel_std_mps2=6.0))

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ConfigError(f"LocalizerConfig.modality must be one of {MODALITIES}, got {self.modality!r}")
        for name, lo in (("top_k", 1), ("n_rotations", 1), ("stop_inliers", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"LocalizerConfig.{name} must be an integer >= {lo}, got {v!r}")
        if not (self.track_radius_min_m > 0 and math.isfinite(self.track_radius_min_m)):
            raise ConfigError(f"LocalizerConfig.track_radius_min_m must be a positive number, got {self.track_radius_min_m!r}")
        for name, hi in (("attitude_std_deg", 30.0), ("heading_std_deg", 180.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= hi:
                raise ConfigError(f"LocalizerConfig.{name} must be a number of degrees within [0, {hi:g}], got {v!r}")


@dataclass
class Hypothesis:
    """One ranked geo-pose hypothesis for a frame (maps onto gleam_ros/msg/GeoPoseHypothesis)."""

    tile_id: str
    similarity: float
    status: str
    lat: float = math.nan
    lon: float = math.nan
    alt_m: float = math.nan  # camera height above ground
    heading_deg: float = math.nan
    heading_std_deg: float = math.nan
    cov_en: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))
    inliers: int = 0
    reason: str = ""
    method: str = ""
    prior_used: bool = False
    filtered: bool = False  # position is the temporal filter's estimate
    gated: bool = False  # rejected by the filter's innovation gate
    tile_lat: float = math.nan  # retrieved tile's centre
    tile_lon: float = math.nan

    def to_dict(self) -> dict:
        """JSON-friendly dict (NaN becomes None)."""
        return to_jsonable(asdict(self))


@dataclass
class LocalizationResult:
    """Everything the pipeline concluded about one frame."""

    t: float
    hypotheses: list[Hypothesis]
    fix: Hypothesis | None  # the trusted fix, or None
    filter: FilterOutput | None
    timings_ms: dict[str, float]
    prior: PositionPrior | None = None
    best_verification: Verification | None = None
    rectified: np.ndarray | None = None  # the pinhole view used when the frame was undistorted (match points refer to it)
    reason: str = ""  # why a frame with verified hypotheses has no fix (e.g. they disagree), else ""
    search: PositionPrior | None = None  # the region the tiles were searched in (the view centre when oblique)
    search_note: str = ""  # how that region was placed (view centre, or why not), else ""

    @property
    def has_trusted_fix(self) -> bool:
        """Whether this frame produced a fix to rely on."""
        return self.fix is not None

    def to_dict(self) -> dict:
        """JSON-friendly summary."""
        return to_jsonable({
            "t": self.t,
            "has_trusted_fix": self.has_trusted_fix,
            "fix": self.fix.to_dict() if self.fix else None,
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "filter": {"trusted": self.filter.trusted, "accepted": self.filter.accepted,
                       "reason": self.filter.reason} if self.filter else None,
            "prior": asdict(self.prior) if self.prior else None,
            "reason": self.reason,
            "search": asdict(self.search) if self.search else None,
            "search_note": self.search_note,
            "timings_ms": self.timings_ms,
        })


class Localizer:
    """Localize camera frames against a satellite tile index; keeps the temporal track.

    Args:
        backend: an encoder backend (``TorchBackend`` / ``OnnxBackend``) whose fingerprint the
            index was built with (checked by ``TileIndex.load``).
        index: the loaded tile index (with tile images for verification).
        cfg: pipeline settings.
        intrinsics: default camera intrinsics (per-frame ones passed to :meth:`localize` win).
    """

    def __init__(self, backend, index: TileIndex, cfg: LocalizerConfig | None = None,
                 intrinsics: CameraIntrinsics | None = None) -> None:
        self.backend = backend
        self.index = index
        self.cfg = cfg or LocalizerConfig()
        self.intrinsics = intrinsics
        if index.fingerprint != backend.fingerprint:
            raise ConfigError(f"index built with encoder {index.fingerprint}, backend is {backend.fingerprint}")
        if not index.has_images:
            raise ConfigError("the tile index holds no tile images: rebuild it with images to verify geometry")
        self.verifier = Verifier(self.cfg.verify)
        self.filter = FixFilter(self.cfg.filter)
        self._rectifier = Rectifier()
        self._last_t: float | None = None
        self._track_heading: float | None = None  # heading of the last trusted fix (yaw hint while tracking)

    def reset(self) -> None:
        """Forget the track (e.g. after a relocation or a long gap)."""
        self.filter.reset()
        self._last_t = None
        self._track_heading = None

    def _track_prior(self, t: float) -> PositionPrior | None:
        if not (self.cfg.track_prior and self.filter.has_trusted_fix and self._last_t is not None):
            return None
        est = self.filter.predict(t) if t >= self._last_t else None
        if est is None or not est.trusted or not math.isfinite(est.lat):
            return None
        # The predicted covariance already grows with the time since the last fix (motion bound).
        sigma = math.sqrt(max(float(np.trace(est.cov_en)), 0.0))
        radius = max(self.cfg.track_radius_min_m, 3.0 * sigma)
        return PositionPrior(est.lat, est.lon, radius)

    def localize(self, image: np.ndarray, t: float | None = None, intrinsics: CameraIntrinsics | None = None,
                 priors: Priors | None = None, position_prior: PositionPrior | None = None) -> LocalizationResult:
        """Run the whole pipeline on one RGB frame.

        Args:
            image: (H, W, 3) uint8 RGB (gray and RGBA accepted); anything else raises InputError.
            t: frame time in seconds (monotonic within a sequence); default: wall clock.
            intrinsics: camera intrinsics of this frame (enables the exact planar pose).
            priors: altitude / heading / attitude priors for verification.
            position_prior: restrict the search (e.g. from GPS before it was lost). Without one,
                the localizer uses its own trusted track as the prior.
        """
        t0 = time.perf_counter()
        rgb = check_image(image, "frame")
        t = time.time() if t is None else float(t)
        if not math.isfinite(t):
            raise InputError(f"frame time must be finite, got {t}")
        intr = intrinsics or self.intrinsics
        if intr is not None and (intr.width, intr.height) != (rgb.shape[1], rgb.shape[0]):
            raise InputError(
                f"camera intrinsics are for {intr.width}x{intr.height} images, frame is {rgb.shape[1]}x{rgb.shape[0]}")
        timings: dict[str, float] = {}
        t1 = time.perf_counter()
        rectified = None
        if intr is not None and intr.distorted:  # one pinhole view for embedding and verification
            rgb, intr = self._rectifier(rgb, intr)
            rectified = rgb
        timings["rectify"] = (time.perf_counter() - t1) * 1e3
        prior = position_prior or self._track_prior(t)
        search, search_note = self._search_region(prior, priors)

        tracking = prior is not None and position_prior is None and self.cfg.track_skip_embed
        t1 = time.perf_counter()
        if tracking:
            queries = None
        elif self.cfg.n_rotations > 1 and self.cfg.modality != "ground":
            queries = embed_rotations(self.backend, rgb, self.cfg.modality, n_rot=self.cfg.n_rotations)
        else:
            queries = self.backend.embed([rgb], self.cfg.modality)
        timings["embed"] = (time.perf_counter() - t1) * 1e3

        t1 = time.perf_counter()
        if tracking:
            hits = self._nearest_tiles(search)
        else:
            prior_tuple = (search.lat, search.lon, search.radius_m) if search else None
            hits = self.index.search_multi(queries, k=self.cfg.top_k, prior=prior_tuple)
        timings["search"] = (time.perf_counter() - t1) * 1e3

        t1 = time.perf_counter()
        tiles = [self.index.tile(h.tile_idx) for h in hits]
        verifs = self.verifier.verify_candidates(rgb, tiles, intr, priors, stop_inliers=self.cfg.stop_inliers,
                                                 yaw_hints_deg=self._yaw_hints(hits, queries))
        timings["verify"] = (time.perf_counter() - t1) * 1e3

        t1 = time.perf_counter()
        by_id = {h.tile_id: h for h in hits}
        hyps = [self._hypothesis(v, by_id[v.tile_id], prior is not None) for v in verifs]
        tried = {v.tile_id for v in verifs}
        hyps += [self._retrieved(h, prior is not None) for h in hits if h.tile_id not in tried]
        bi, why = self._consensus(verifs, hyps, t)
        best = verifs[bi] if bi is not None else None
        fix = None
        if best is not None:
            out = self.filter.update(t, best.lat, best.lon, best.cov_en)
            top = hyps[bi]
            top.gated = not out.accepted
            if out.accepted and out.trusted:
                fix = Hypothesis(
                    tile_id=top.tile_id, similarity=top.similarity, status=STATUS_TRUSTED, lat=out.lat, lon=out.lon,
                    alt_m=top.alt_m, heading_deg=top.heading_deg, heading_std_deg=top.heading_std_deg,
                    cov_en=np.asarray(out.cov_en, float), inliers=top.inliers, method=top.method,
                    prior_used=top.prior_used, filtered=True, tile_lat=top.tile_lat, tile_lon=top.tile_lon,
                    reason=top.reason,
                )
                hyps.insert(0, fix)
        else:
            out = self.filter.predict(t) if self._last_t is not None and t >= self._last_t else None
        if fix is not None and math.isfinite(fix.heading_deg):
            self._track_heading = float(fix.heading_deg)
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        add_reference_error(hyps, self.index.reference_std_m)
        timings["filter"] = (time.perf_counter() - t1) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        evidence = best if best is not None or not why else verifs[0]
        return LocalizationResult(t, hyps, fix, out, timings, prior, evidence, rectified, why, search, search_note)

    def _search_region(self, prior: PositionPrior | None, priors: Priors | None) -> tuple[PositionPrior | None, str]:
        """The region to search tiles in for a vehicle expected within ``prior``: centred on the view centre when
        ``priors`` give the attitude (:func:`gleam_ros.core.oblique.view_search`), else ``prior`` itself."""
        if prior is None or not self.cfg.view_search:
            return prior, ""
        v = view_search(prior.lat, prior.lon, prior.radius_m, priors, self.cfg.attitude_std_deg,
                        self.cfg.heading_std_deg)
        if v.shift_m == 0.0 and v.radius_m == prior.radius_m:
            return prior, v.note
        return PositionPrior(v.lat, v.lon, v.radius_m), v.note

    def _consensus(self, verifs: list[Verification], hyps: list[Hypothesis], t: float) -> tuple[int | None, str]:
        """The multi-hypothesis rule (:mod:`gleam_ros.core.consensus`): index of the verification to use as
        the fix (None: no fix) and, when the frame's verified hypotheses conflict, why. ``hyps[i]`` is the
        hypothesis of ``verifs[i]``; conflicting ones get the reason."""
        ok = [i for i, v in enumerate(verifs) if v.ok]
        if len(ok) < 2:
            return (ok[0] if ok else None), ""
        track = None
        if self.filter.has_trusted_fix:
            est = self.filter.predict(t)  # (not trusted when t went backwards)
            if est.trusted and math.isfinite(est.lat):
                track = (est.lat, est.lon, np.asarray(est.cov_en, float))
        c = check_consensus([(verifs[i].lat, verifs[i].lon, verifs[i].cov_en) for i in ok],
                            [verifs[i].tile_id for i in ok], track)
        for j, r in c.conflicts.items():
            hyps[ok[j]].reason = r
        return (ok[c.best] if c.best is not None else None), c.reason

    def _yaw_hints(self, hits: list[SearchHit], queries) -> list[float | None] | None:
        """Heading hypothesis per candidate for learned verifier features (None: the verifier's rot90 search).

        While tracking (no embedding): the heading of the last trusted fix. Otherwise the retrieval's best
        rotation: row ``k`` of :func:`embed_rotations` is the frame turned ``k * 360 / n`` deg counter-clockwise;
        the row that matched a north-up tile best says the frame's image-up points ``-k * 360 / n`` deg from north.
        """
        n = self.cfg.n_rotations
        if queries is None and self._track_heading is not None:
            return [self._track_heading] * len(hits)
        if queries is None or n <= 1 or self.cfg.modality not in ("uav", "satellite", "map") or len(queries) != n:
            return None
        return [(-h.rotation * 360.0 / n) % 360.0 if h.rotation >= 0 else None for h in hits]

    def _nearest_tiles(self, prior: PositionPrior) -> list[SearchHit]:
        """The ``top_k`` tiles nearest the search centre (tracking mode; no similarity score)."""
        idx = self.index.tiles_within(prior.lat, prior.lon, prior.radius_m)
        if len(idx) == 0:
            return []
        centers = self.index.centers_latlon[idx]
        d = distance_m(np.full(len(idx), prior.lat), np.full(len(idx), prior.lon), centers[:, 0], centers[:, 1])
        order = np.argsort(d, kind="stable")[: self.cfg.top_k]
        ids = self.index.tile_ids
        return [SearchHit(rank=r + 1, tile_idx=int(idx[i]), tile_id=ids[int(idx[i])], score=math.nan,
                          center_lat=float(centers[i, 0]), center_lon=float(centers[i, 1]), distance_m=float(d[i]))
                for r, i in enumerate(order)]

    def _retrieved(self, hit: SearchHit, prior_used: bool) -> Hypothesis:
        return Hypothesis(tile_id=hit.tile_id, similarity=float(hit.score), status=STATUS_RETRIEVED,
                          lat=hit.center_lat, lon=hit.center_lon, prior_used=prior_used,
                          reason="not verified", tile_lat=hit.center_lat, tile_lon=hit.center_lon)

    def _hypothesis(self, v: Verification, hit: SearchHit, prior_used: bool) -> Hypothesis:
        if not v.ok:
            h = self._retrieved(hit, prior_used)
            h.status, h.reason, h.inliers = STATUS_REJECTED, v.reason, v.inliers
            return h
        return Hypothesis(
            tile_id=v.tile_id, similarity=float(hit.score), status=STATUS_VERIFIED, lat=v.lat, lon=v.lon,
            alt_m=v.alt_m, heading_deg=v.heading_deg, heading_std_deg=v.heading_std_deg,
            cov_en=np.asarray(v.cov_en, float), inliers=v.inliers, method=v.method, prior_used=prior_used,
            reason=v.plane_note,  # a verified fix says when the scene was not one plane (parallax)
            tile_lat=hit.center_lat, tile_lon=hit.center_lon,
        )


def add_reference_error(hyps: list[Hypothesis], reference_std_m: float) -> None:
    """Add the reference imagery's registration variance to the position covariance of every hypothesis.

    A misregistered orthophoto moves every fix against it by the same offset: the per-frame covariance
    (bootstrap, particle spread) and the temporal filter cannot see it, and averaging frames does not shrink
    it. So it is not fed to the filter or to the multi-hypothesis rule (hypotheses of one frame share it);
    it is added, in quadrature on both axes, to what is published. ``reference_std_m`` 0 changes nothing.
    """
    if reference_std_m > 0.0:
        for h in hyps:
            h.cov_en = np.asarray(h.cov_en, float) + (reference_std_m ** 2) * np.eye(2)


def error_m(h: Hypothesis, lat: float, lon: float) -> float:
    """Horizontal error of a hypothesis against ground truth, metres."""
    return float(distance_m(h.lat, h.lon, lat, lon))
