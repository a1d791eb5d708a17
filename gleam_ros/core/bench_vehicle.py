"""``gleam bench run --vehicle``: the car rows, ground and panorama cameras, particle filter vs retrieval only.

For each held-out procedural world (seeds no training config uses) the benchmark builds a tile index of the
summer satellite render with the ImageNet encoder and drives the world's roads in autumn
(:func:`~gleam_ros.core.sim.drive.simulate_drive`, wheel + gyro odometry with scale error, bias and noise).
Every drive is run by two methods on the same frames:

* ``particle_filter``: :class:`~gleam_ros.core.vehicle.VehicleLocalizer` with the world's road layer;
* ``retrieval_imagenet``: the ImageNet embedding of the frame searched over the whole index; every frame
  "fixes" at the top-1 tile centre (what retrieval alone gives, no filter).

With a fine-tuned GLEAM-C checkpoint (``finetuned``, ``gleam bench run --vehicle --finetuned DIR``) the same
frames also run (otherwise these rows say ``not run: no fine-tuned checkpoint``):

* ``particle_filter_finetuned``: the same filter (same seed, odometry, roads) with its embedding term on,
  against an index of the same imagery built with the fine-tuned encoder: ``embed_weight`` = the checkpoint's
  own InfoNCE logit scale (:func:`finetuned_embed_weight`);
* ``retrieval_finetuned``: as ``retrieval_imagenet`` with the fine-tuned encoder and its index.

Scenarios per world and modality: ``gps_lost`` (GPS for the first ``gps_s`` seconds, then lost for
``lost_s``; the metrics count only the frames without GPS) and ``cold_start`` (no GPS at all; the filter
searches the whole map). Metrics are :func:`~gleam_ros.core.evaluate.compute_metrics` plus the time to the
first trusted fix. Output: ``vehicle_bench.json``, ``vehicle_bench.md`` and a trajectory plot per
modality under ``out``.

``hard`` (``gleam bench run --vehicle --hard``) adds, in the same run, the same drives made as hard as a real
car's: frames with body pitch/roll (which the odometry reports as an IMU does and the filter's bird's-eye view
uses), a camera height/pitch mis-calibration, sensor effects and occluding vehicles
(:class:`~gleam_ros.core.sim.drive.DriveRealism`), localized against an index built from an
"other source" reference (:func:`~gleam_ros.core.sim.realism.other_source_map`: the summer render shifted by
a known misregistration, re-coloured and re-textured). Errors are measured against the true position, so
the misregistration shows up as error, as it would in reality; the shift applied is recorded in the output.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .evaluate import FrameRecord, compute_metrics, plot_flight
from .jsonutil import to_jsonable
from .sim.drive import DriveRealism

MODALITIES = ("ground", "panorama")
SCENARIOS = ("gps_lost", "cold_start")
#: Row methods, in table order (the ``*_finetuned`` ones need ``VehicleBenchConfig.finetuned``).
METHODS = ("particle_filter", "particle_filter_finetuned", "retrieval_imagenet", "retrieval_finetuned")
FINETUNED_METHODS = ("particle_filter_finetuned", "retrieval_finetuned")
#: Inverse InfoNCE temperature used when a checkpoint's card records no learned one (the trainer's initial
#: temperature 0.07, as CLIP / Sample4Geo: ``training.config`` ``loss.init_temperature``).
DEFAULT_LOGIT_SCALE = 1.0 / 0.07


@dataclass(frozen=True)
class VehicleBenchConfig:
    """Settings of the vehicle benchmark (``quick()``: one world, shorter drives)."""

    world_seeds: tuple[int, ...] = (4242, 4343)  # held out: no training config uses them
    world_size_m: float = 500.0
    world_gsd_m: float = 0.3
    drive_season: str = "autumn"  # the index is the summer render
    gps_s: float = 10.0
    lost_s: float = 60.0
    fps: float = 2.0
    speed_mps: float = 8.0
    image_width: int = 320
    image_height: int = 240
    hfov_deg: float = 90.0
    pano_width: int = 512
    pano_height: int = 256
    tile_size_m: float = 100.0
    tile_gsd_m: float = 0.5
    n_particles: int = 800
    n_particles_global: int = 4000
    seed: int = 0
    hard: bool = False  # also run the hard rows (DriveRealism + misregistered other-source index)
    ref_shift_e_m: float = 2.0  # hard: misregistration of the other-source index, metres east
    ref_shift_n_m: float = -1.5  # ... and north (2.5 m in all)
    # hard: the registration accuracy declared for the other-source index (1-sigma per axis, metres; what
    # `gleam index build --reference-std-m` stores); 0 = the imagery is taken as exact
    ref_std_m: float = 0.0
    realism: DriveRealism = field(default_factory=DriveRealism)  # hard: what the drives do
    finetuned: str | None = None  # checkpoint dir of a fine-tuned encoder: adds the *_finetuned rows
    # embed_weight of particle_filter_finetuned; None = the checkpoint's own logit scale (finetuned_embed_weight)
    finetuned_embed_weight: float | None = None

    def __post_init__(self) -> None:
        if self.finetuned is not None and not (isinstance(self.finetuned, (str, Path)) and str(self.finetuned)):
            raise ConfigError(f"vehicle bench: --finetuned must be a checkpoint directory, got {self.finetuned!r}")
        w = self.finetuned_embed_weight
        if w is not None and not (isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w) and w > 0):
            raise ConfigError(f"vehicle bench: finetuned_embed_weight must be a finite number > 0 or None, got {w!r}")
        if not isinstance(self.realism, DriveRealism):
            raise ConfigError(f"vehicle bench: realism must be a DriveRealism, got {type(self.realism).__name__}")
        for name in ("ref_shift_e_m", "ref_shift_n_m"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and abs(v) <= 100.0):
                raise ConfigError(f"vehicle bench: {name} must be a finite number of metres within +-100, got {v!r}")
        if not (isinstance(self.ref_std_m, (int, float)) and np.isfinite(self.ref_std_m) and self.ref_std_m >= 0):
            raise ConfigError(f"vehicle bench: ref_std_m must be a finite number of metres >= 0, got {self.ref_std_m!r}")
        if not self.world_seeds:
            raise ConfigError("vehicle bench: no world seeds")
        if not (self.lost_s > 0 and self.gps_s >= 0 and self.fps > 0):
            raise ConfigError(f"vehicle bench: need lost_s > 0, gps_s >= 0, fps > 0; got {self.lost_s}, "
                              f"{self.gps_s}, {self.fps}")

    @staticmethod
    def quick(**kw) -> VehicleBenchConfig:
        """One world, 30 s without GPS (CI-class machines)."""
        return VehicleBenchConfig(**{"world_seeds": (4242,), "lost_s": 30.0, **kw})


@dataclass(frozen=True)
class Finetuned:
    """The fine-tuned encoder of one run: its backend, the particle filter's ``embed_weight`` and why."""

    backend: object
    checkpoint: str
    embed_weight: float
    embed_weight_source: str


def finetuned_embed_weight(card) -> tuple[float, str]:
    """The particle filter's ``embed_weight`` for a checkpoint, and where it comes from.

    The filter weighs a particle by ``exp(w * cos(frame, satellite crop at the particle))``. A GLEAM-C encoder
    was trained with InfoNCE, a softmax over ``logit_scale * cos`` of one query against candidate tiles: its own
    calibrated likelihood of "this tile is the place". So ``w`` is the logit scale the training learned and
    recorded on the card (``card.training["logit_scale"]``), the embedding's counterpart of the bird's-eye
    correlation's ``exp(NCC / ncc_temperature)``; a card without one gets the trainer's initial
    ``1 / 0.07`` (:data:`DEFAULT_LOGIT_SCALE`). Nothing here is tuned on the benchmark.
    """
    scale = (card.training or {}).get("logit_scale") if isinstance(card.training, dict) else None
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and np.isfinite(scale) and scale > 0:
        return float(scale), "the checkpoint's learned InfoNCE logit scale (model.json training.logit_scale)"
    return DEFAULT_LOGIT_SCALE, "no logit scale on the card: the trainer's initial 1/0.07"


def load_finetuned(cfg: VehicleBenchConfig) -> Finetuned | None:
    """Open ``cfg.finetuned`` (None without one). A missing or unreadable checkpoint raises :class:`ConfigError`
    naming ``--finetuned`` and the path."""
    from .encoder import load_backend
    from .errors import ModelError

    if cfg.finetuned is None:
        return None
    path = Path(cfg.finetuned)
    if not path.exists():
        raise ConfigError(f"vehicle bench: --finetuned {path}: no such checkpoint directory")
    try:
        backend = load_backend("torch", path)
    except ModelError as exc:
        raise ConfigError(f"vehicle bench: --finetuned {path}: not a usable checkpoint: {exc}") from None
    w, why = finetuned_embed_weight(backend.card)
    if cfg.finetuned_embed_weight is not None:
        w, why = float(cfg.finetuned_embed_weight), "set in the bench config (finetuned_embed_weight)"
    return Finetuned(backend, str(path), w, why)


def _record(f, res, t_ms: float) -> FrameRecord:
    fix = res.fix
    rec = FrameRecord(t=f.t, gt_lat=f.lat, gt_lon=f.lon, gt_heading_deg=f.pose.heading_deg, latency_ms=t_ms,
                      timings_ms=dict(res.timings_ms), note=res.filter.reason if res.filter else "")
    if fix is not None:
        rec.trusted = True
        rec.est_lat, rec.est_lon, rec.est_heading_deg = fix.lat, fix.lon, fix.heading_deg
        rec.cov_en = np.asarray(fix.cov_en, float).tolist()
    return rec


def _retrieval_record(f, backend, index, modality: str, probe: EmbedProbe | None = None
                      ) -> tuple[FrameRecord, dict | None]:
    """The retrieval-only record of frame ``f`` (top-1 tile centre) and, with ``probe``, its evidence
    (:meth:`EmbedProbe.frame`, outside the timed embed + search)."""
    from .preprocess import GROUND_TILE_M

    t0 = time.perf_counter()
    q = backend.embed([f.image], modality)
    hits = index.search(q, k=EmbedProbe.K)[0]
    t_ms = (time.perf_counter() - t0) * 1e3
    hit = hits[0]
    # a tile centre claims the tile: uniform over a tile the size of the camera-centred crop
    var = GROUND_TILE_M**2 / 12.0
    rec = FrameRecord(t=f.t, gt_lat=f.lat, gt_lon=f.lon, gt_heading_deg=f.pose.heading_deg, trusted=True,
                      est_lat=hit.center_lat, est_lon=hit.center_lon, cov_en=[[var, 0.0], [0.0, var]],
                      latency_ms=t_ms, top_tile_lat=hit.center_lat, top_tile_lon=hit.center_lon)
    if probe is None:
        return rec, None
    ev = probe.frame(f, q[0], hits)
    if modality == "panorama":
        ev.update({f"{k}_north": v for k, v in probe.north_aligned(f).items() if k != "t"})
    return rec, ev


class EmbedProbe:
    """What one encoder's embedding tells about a car's place, measured on the bench's frames (a diagnostic of
    the retrieval rows, not a method).

    * ``r1`` / ``r5``: the top-1 / any of the top-5 tiles of the index contains the true position (tile
      footprint, as the UAV bench's recall);
    * ``percentile`` / ``margin``: the evidence the particle filter's embedding term gets. The cosine between
      the frame and the 50 m north-up crop at the true position (:data:`~.preprocess.GROUND_TILE_M`, the crop
      ``VehicleLocalizer`` embeds per particle cell) against crops at ``n_null`` random road points of the same
      imagery: the share of random crops the true one beats (0.5 = chance, 1 = best) and its cosine margin over
      the median random crop (times ``embed_weight``: the log-likelihood advantage of the true place, nats).

    Panoramas are embedded as the car sees them (centre column = the car's heading), as the retrieval rows and
    ``VehicleLocalizer`` embed them; GLEAM-C was trained on north-aligned panoramas
    (:func:`~.preprocess.panorama_north_up`), so :meth:`north_aligned` measures the same evidence for the
    panorama rolled north with the true heading (what a filter that knows its heading to a degree would embed).
    """

    K = 5

    def __init__(self, backend, index, roads, seed: int, n_null: int = 64) -> None:
        from .bench import _Footprints
        from .preprocess import GROUND_TILE_M
        from .vehicle import SatelliteMosaic, VehicleConfig

        self.backend, self.index, self.side_m = backend, index, GROUND_TILE_M
        self.fp = _Footprints(index)
        self.mosaic = m = SatelliteMosaic(index, VehicleConfig().bev_res_m, None, 0.0)  # all tiles, the filter's res
        rng = np.random.default_rng(seed)
        h, w = m.valid.shape
        crops: list[np.ndarray] = []
        for _ in range(100):
            x = m.x0 + rng.uniform(0, w * m.gsd, 256)
            y = m.y0 - rng.uniform(0, h * m.gsd, 256)
            on = roads.lookup(x, y, m.crs)
            crops += [c for c in (m.crop(a, b, self.side_m) for a, b in zip(x[on], y[on])) if c is not None]
            if len(crops) >= n_null:
                break
        self.null = backend.embed(crops[:n_null], "satellite", batch_size=32) if len(crops) >= 10 else None

    def frame(self, f, q: np.ndarray, hits) -> dict:
        """The evidence of frame ``f`` (query embedding ``q``, its retrieval ``hits``)."""
        from . import geo

        inside = [self.fp.contains(h.tile_idx, f.lat, f.lon) for h in hits[: self.K]]
        out = {"t": f.t, "r1": bool(inside[:1] and inside[0]), "r5": bool(any(inside)),
               "percentile": float("nan"), "margin": float("nan")}
        x, y = geo.transform(f.lon, f.lat, geo.WGS84, self.mosaic.crs)
        crop = self.mosaic.crop(float(x), float(y), self.side_m)
        if crop is not None and self.null is not None:
            cos_t = float(self.backend.embed([crop], "satellite")[0] @ q)
            cos_n = self.null @ q
            out.update(percentile=float(np.mean(cos_n < cos_t)), margin=cos_t - float(np.median(cos_n)))
        return out

    def north_aligned(self, f) -> dict:
        """:meth:`frame` for panorama frame ``f`` rolled north with its true heading, searched over the index."""
        from .preprocess import panorama_north_up

        q = self.backend.embed([panorama_north_up(f.image, f.pose.heading_deg)], "panorama")[0]
        return self.frame(f, q, self.index.search(q, k=self.K)[0])


def _probe_summary(per_frame: list[dict]) -> dict:
    """Row keys of the :class:`EmbedProbe` evidence over frames (medians of the crop evidence); the panorama's
    north-aligned variant under the same keys with ``_north``."""
    out: dict = {}
    for sfx in ("", "_north"):
        ps = [p for p in per_frame if f"r1{sfx}" in p]
        if not ps:
            continue
        pct = [p[f"percentile{sfx}"] for p in ps if np.isfinite(p[f"percentile{sfx}"])]
        mar = [p[f"margin{sfx}"] for p in ps if np.isfinite(p[f"margin{sfx}"])]
        out.update({f"recall_at_1{sfx}": float(np.mean([p[f"r1{sfx}"] for p in ps])),
                    f"recall_at_5{sfx}": float(np.mean([p[f"r5{sfx}"] for p in ps])),
                    f"true_crop_percentile_median{sfx}": float(np.median(pct)) if pct else None,
                    f"true_crop_cos_margin_median{sfx}": float(np.median(mar)) if mar else None,
                    f"true_crop_frames{sfx}": len(pct)})
    return out


def run_drive(world, index, backend, cfg: VehicleBenchConfig, modality: str, scenario: str, seed: int,
              log=print, realism: DriveRealism | None = None, attitude: bool = True,
              ft: Finetuned | None = None, ft_index=None, probes: dict | None = None,
              vehicle: dict | None = None, on_frame=None) -> dict:
    """Render one drive (with ``realism`` when given) and run the particle filter and retrieval on it;
    returns records and metrics. ``attitude=False`` strips the body attitude from the odometry (the filter then
    projects every frame with the configured mounting pitch, as before the odometry carried it). With ``ft``
    (and ``ft_index``, the same imagery indexed with ``ft.backend``) the same frames also run the fine-tuned
    rows (``particle_filter_finetuned`` with the embedding term, ``retrieval_finetuned``), frame by frame
    interleaved with the others. ``probes`` (retrieval method -> :class:`EmbedProbe` of its encoder and index)
    adds each retrieval row's embedding evidence. ``vehicle``: :class:`VehicleConfig` fields to set for every
    filter of the drive (an ablation, e.g. ``{"road_pitch": False}``). ``on_frame(method, localizer, record)`` is
    called after each filter frame (a per-frame trace: ``tools/vehicle_trace.py``)."""
    from .camera import CameraIntrinsics
    from .localizer import PositionPrior
    from .sim.drive import simulate_drive
    from .vehicle import RoadLayer, VehicleConfig, VehicleLocalizer

    intr = CameraIntrinsics.from_fov(cfg.image_width, cfg.image_height, cfg.hfov_deg)
    gps_s = cfg.gps_s if scenario == "gps_lost" else 0.0
    duration = gps_s + cfg.lost_s
    frames, odom = simulate_drive(world, duration_s=duration, fps=cfg.fps, modality=modality, intr=intr,
                                  season=cfg.drive_season, rng=seed, speed_mps=cfg.speed_mps,
                                  pano_size=(cfg.pano_width, cfg.pano_height), progress=True, realism=realism)
    if not attitude:
        odom = [replace(o, pitch_deg=float("nan"), roll_deg=float("nan")) for o in odom]
    if (ft is None) != (ft_index is None):
        raise ConfigError("run_drive: ft and ft_index go together (the fine-tuned encoder and its index)")
    roads = RoadLayer.from_world(world)
    vcfg = VehicleConfig(modality=modality, n_particles=cfg.n_particles, n_particles_global=cfg.n_particles_global,
                         **(vehicle or {}))
    filters = {"particle_filter": VehicleLocalizer(backend, index, vcfg, roads=roads, seed=seed)}
    if ft is not None:  # the same filter and seed, plus the embedding term of the fine-tuned encoder
        filters["particle_filter_finetuned"] = VehicleLocalizer(
            ft.backend, ft_index, replace(vcfg, embed_weight=ft.embed_weight), roads=roads, seed=seed)
    retrievals = {"retrieval_imagenet": (backend, index)}
    if ft is not None:
        retrievals["retrieval_finetuned"] = (ft.backend, ft_index)
    recs: dict[str, list[FrameRecord]] = {m: [] for m in (*filters, *retrievals)}
    probes = probes or {}
    evidence: dict[str, list[dict]] = {m: [] for m in retrievals if m in probes}
    k = 0
    for f in frames:
        while k < len(odom) and odom[k].t <= f.t:
            for loc in filters.values():
                loc.on_odometry(odom[k])
            k += 1
        prior = PositionPrior(f.lat, f.lon, 10.0) if f.t < gps_s else None
        for name, loc in filters.items():
            t0 = time.perf_counter()
            res = loc.localize(f.image, f.t, intrinsics=intr if modality == "ground" else None, gps_prior=prior)
            recs[name].append(_record(f, res, (time.perf_counter() - t0) * 1e3))
            if on_frame is not None:
                on_frame(name, loc, recs[name][-1])
        for name, (b, ix) in retrievals.items():
            rec, ev = _retrieval_record(f, b, ix, modality, probes.get(name))
            recs[name].append(rec)
            if ev is not None:
                evidence[name].append(ev)
    metrics = {}
    for name, rs in recs.items():
        lost = [r for r in rs if r.t >= gps_s]
        m = compute_metrics(lost)
        if name in filters:
            first = next((r.t for r in lost if r.trusted), None)
            m["time_to_first_fix_s"] = None if first is None else first - gps_s
            m["n_particles"] = cfg.n_particles
            m["n_particles_global"] = cfg.n_particles_global
            m["kidnaps_declared"] = filters[name].kidnaps
            m["embed_weight"] = filters[name].cfg.embed_weight
        m.update(_probe_summary([e for e in evidence.get(name, []) if e["t"] >= gps_s]))
        metrics[name] = m
    summary = "; ".join(f"{name} within 10 m {m['within_10m']:.2f}" + (
        f", false {m['false_fix_rate']:.3f}, median {m['median_error_m']}" if name in filters else "")
        for name, m in metrics.items())
    log(f"  {'hard ' if realism else ''}{modality:9s} {scenario:10s} seed {seed}: {summary}")
    return {"records": recs, "pf": recs["particle_filter"], "retrieval": recs["retrieval_imagenet"],
            "evidence": evidence, "metrics": metrics, "gps_s": gps_s}


def _pooled(runs: list[dict], method: str, gps_key: str = "gps_s") -> dict:
    pooled = [r for run in runs for r in run["records"][method] if r.t >= run[gps_key]]
    m = compute_metrics(pooled)
    ttf = [run["metrics"][method].get("time_to_first_fix_s") for run in runs]
    m["time_to_first_fix_s"] = [None if v is None else round(v, 2) for v in ttf]
    m["drives"] = len(runs)
    if "embed_weight" in runs[0]["metrics"][method]:
        m["embed_weight"] = runs[0]["metrics"][method]["embed_weight"]
    m.update(_probe_summary([e for run in runs for e in run["evidence"].get(method, []) if e["t"] >= run[gps_key]]))
    if method.startswith("particle_filter"):
        m["no_fix_reasons"] = no_fix_reasons(pooled)
    m["run"] = True
    return m


def seed_list(text: str) -> list[int]:
    """Seeds given as 'a-b' (inclusive) or 'a,b,c' (the seed-sweep tools' ``--seeds``); ConfigError otherwise."""
    try:
        lo, sep, hi = text.partition("-")
        seeds = list(range(int(lo), int(hi) + 1)) if sep else [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds: expected 'a-b' or 'a,b,c' (integers, a <= b), got {text!r}")
    return seeds


def no_fix_reasons(records: list[FrameRecord]) -> dict[str, int]:
    """Frames without a trusted fix, counted by what kept each from one (:func:`~.vehicle.reason_kind` of the
    filter's reason in ``FrameRecord.note``), most frequent first."""
    from collections import Counter

    from .vehicle import reason_kind

    return dict(Counter(reason_kind(r.note) for r in records if not r.trusted).most_common())


def run_vehicle_bench(cfg: VehicleBenchConfig, out: str | Path, command: str = "", log=print) -> dict:
    """Run the vehicle benchmark; writes ``vehicle_bench.json``, ``vehicle_bench.md`` and plots under ``out``."""
    from .bench import NOT_RUN_FINETUNED, machine_info
    from .encoder import TorchBackend
    from .index import TileIndex
    from .sim.world import WorldConfig, make_world
    from .tiles import TileSpec, iter_tiles
    from .vehicle import RoadLayer

    ft = load_finetuned(cfg)  # first: a bad --finetuned fails before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    # one torch thread: on a shared 2-core machine more threads oversubscribe the cores (50x slower under load)
    backend = TorchBackend(threads=1)
    res: dict = {"command": command, "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "machine": machine_info(), "config": asdict(cfg), "encoder": backend.describe(), "rows": {}}
    res["finetuned"] = ({"run": False, "note": NOT_RUN_FINETUNED} if ft is None else
                        {"run": True, "checkpoint": ft.checkpoint, "encoder": ft.backend.describe(),
                         "fingerprint": ft.backend.fingerprint, "embed_weight": ft.embed_weight,
                         "embed_weight_source": ft.embed_weight_source})
    settings = [("easy", None)] + ([("hard", cfg.realism)] if cfg.hard else [])
    if cfg.hard:
        res["hard"] = {"ref_shift_e_m": cfg.ref_shift_e_m, "ref_shift_n_m": cfg.ref_shift_n_m,
                       "ref_shift_m": float(np.hypot(cfg.ref_shift_e_m, cfg.ref_shift_n_m)),
                       "ref_std_m": cfg.ref_std_m,
                       "realism": asdict(cfg.realism)}
        res["rows_hard"] = {}
    runs: dict[tuple[str, str, str], list[dict]] = {}
    plots = {}
    spec = TileSpec(size_m=cfg.tile_size_m, overlap=0.5, gsd_m=cfg.tile_gsd_m)
    for ws in cfg.world_seeds:
        world = make_world(WorldConfig(seed=int(ws), size_m=cfg.world_size_m, gsd_m=cfg.world_gsd_m, season="summer"))
        for setting, realism in settings:
            ref = world.satellite_map() if realism is None else hard_reference(world, cfg, seed=int(ws))
            map_info = {"reference_std_m": 0.0 if realism is None else cfg.ref_std_m}
            index = TileIndex.build(iter_tiles(ref, spec), backend, progress=True, map_info=map_info)
            ft_index = None if ft is None else TileIndex.build(iter_tiles(ref, spec), ft.backend, progress=True,
                                                                map_info=map_info)
            log(f"world {ws} ({setting}): {len(index)} tiles")
            roads = RoadLayer.from_world(world)
            probes = {"retrieval_imagenet": EmbedProbe(backend, index, roads, seed=int(ws))}
            if ft is not None:  # the same random road crops for both encoders
                probes["retrieval_finetuned"] = EmbedProbe(ft.backend, ft_index, roads, seed=int(ws))
            for modality in MODALITIES:
                for scenario in SCENARIOS:
                    run = run_drive(world, index, backend, cfg, modality, scenario, seed=int(ws) + cfg.seed, log=log,
                                    realism=realism, ft=ft, ft_index=ft_index, probes=probes)
                    runs.setdefault((setting, modality, scenario), []).append(run)
                    if ws == cfg.world_seeds[0] and scenario == "gps_lost":
                        sfx = "" if realism is None else "_hard"
                        what = "" if realism is None else (
                            f"HARD (index off by {np.hypot(cfg.ref_shift_e_m, cfg.ref_shift_n_m):.1f} m): ")
                        for method, name, how in (
                                ("particle_filter", "", "particle filter"),
                                ("particle_filter_finetuned", "_finetuned",
                                 f"particle filter + fine-tuned embedding, w {ft.embed_weight:.1f}" if ft else "")):
                            if method not in run["records"]:
                                continue
                            p = out / f"vehicle_{modality}{sfx}{name}.png"
                            plot_flight(run["records"][method], p, geomap=world.satellite_map(),
                                        title=f"{what}{modality} camera, world {ws}, GPS lost after {cfg.gps_s:.0f} s "
                                              f"({how})",
                                        spans=[(cfg.gps_s, cfg.gps_s + cfg.lost_s, "GPS lost")])
                            plots[modality + sfx + name] = p.name
    for (setting, modality, scenario), rs in runs.items():
        rows = res["rows"] if setting == "easy" else res["rows_hard"]
        for method in METHODS:
            if method in rs[0]["records"]:
                rows[f"{modality}/{scenario}/{method}"] = _pooled(rs, method)
            else:
                rows[f"{modality}/{scenario}/{method}"] = {"run": False, "note": NOT_RUN_FINETUNED}
    if ft is not None:
        plots["finetuned"] = plot_finetuned(res, out / "vehicle_finetuned.png").name
    res["plots"] = plots
    res["wall_s"] = time.perf_counter() - t_start
    (out / "vehicle_bench.json").write_text(json.dumps(to_jsonable(res), indent=2))
    md = markdown_report(res)
    (out / "vehicle_bench.md").write_text(md)
    log(md)
    return res


def plot_finetuned(res: dict, path: str | Path) -> Path:
    """``vehicle_finetuned.png`` of a run with ``--finetuned`` (``res`` as returned or saved in
    ``vehicle_bench.json``): per setting / camera / scenario, the particle filter's share of frames with a
    trusted fix within 10 m without and with the fine-tuned embedding term (left), and retrieval R@1 / R@5 of
    the ImageNet and the fine-tuned encoder (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {**{f"easy/{k}": v for k, v in res["rows"].items()},
            **{f"hard/{k}": v for k, v in res.get("rows_hard", {}).items()}}
    cases = sorted({k.rsplit("/", 1)[0] for k in rows}, key=lambda c: list(rows).index(f"{c}/particle_filter"))
    y = np.arange(len(cases))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 0.45 * len(cases) + 1.8), sharey=True)
    bars = [(a1, "particle_filter", "within_10m", -0.2, "filter (BEV correlation)", "tab:blue"),
            (a1, "particle_filter_finetuned", "within_10m", 0.2, "filter + fine-tuned embedding", "tab:purple"),
            (a2, "retrieval_imagenet", "recall_at_5", -0.2, "ImageNet R@5", "tab:red"),
            (a2, "retrieval_finetuned", "recall_at_5", 0.2, "fine-tuned R@5", "tab:purple")]
    for ax, method, key, dy, label, colour in bars:
        v = [100 * (rows.get(f"{c}/{method}", {}).get(key) or 0.0) for c in cases]
        ax.barh(y + dy, v, 0.4, color=colour, label=label)
    for method, dy in (("retrieval_imagenet", -0.2), ("retrieval_finetuned", 0.2)):
        v = [100 * (rows.get(f"{c}/{method}", {}).get("recall_at_1") or 0.0) for c in cases]
        a2.plot(v, y + dy, "k|", ms=9, label="R@1" if method == "retrieval_imagenet" else None)
    a1.set_yticks(y, [c.replace("/", " / ") for c in cases])
    a1.invert_yaxis()
    a1.set_xlabel("frames with a trusted fix within 10 m after the GPS loss (%)")
    a2.set_xlabel("retrieval: true tile in the top 5 (bars) / top 1 (ticks) (%)")
    for ax in (a1, a2):
        ax.set_xlim(0, 100)
        ax.legend(loc="lower right", fontsize=8)
    ft = res.get("finetuned") or {}
    fig.suptitle(f"ImageNet vs fine-tuned encoder ({ft.get('encoder', '')}, embed_weight "
                 f"{ft.get('embed_weight', float('nan')):.2f}), same drives", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def hard_reference(world, cfg: VehicleBenchConfig, seed: int = 0):
    """The hard rows' index imagery: ``world``'s summer render from "another source", shifted by
    (``cfg.ref_shift_e_m``, ``cfg.ref_shift_n_m``) metres, re-coloured and re-textured
    (:func:`~gleam_ros.core.sim.realism.other_source_map` defaults)."""
    from .sim.realism import other_source_map

    return other_source_map(world.satellite_map(), cfg.ref_shift_e_m, cfg.ref_shift_n_m, seed=seed)


def markdown_report(res: dict) -> str:
    """The vehicle tables (rows: modality x scenario x method): easy, then hard when the run had it."""
    cfg = res["config"]
    m = res["machine"]
    lines = [
        f"Command: `{res['command']}` ({res['date']}; {m.get('cpu', '')}, {m.get('cpu_count')} cores, "
        f"torch {m.get('torch', '')} with {m.get('torch_threads')} threads; {res['wall_s']:.0f} s). "
        f"Worlds {', '.join(str(s) for s in cfg['world_seeds'])} ({cfg['world_size_m']:.0f} m, held out), index: "
        f"summer render, {cfg['tile_size_m']:.0f} m tiles; drives in {cfg['drive_season']} at "
        f"{cfg['speed_mps']:.0f} m/s, {cfg['fps']:g} fps, ground {cfg['image_width']}x{cfg['image_height']} "
        f"({cfg['hfov_deg']:.0f} deg HFOV), panorama {cfg['pano_width']}x{cfg['pano_height']}. "
        f"Encoder: {res['encoder']} (retrieval rows; the filter uses BEV correlation, embed_weight 0).",
        "",
        _finetuned_line(res.get("finetuned")),
        "",
        f"`gps_lost`: GPS for {cfg['gps_s']:.0f} s, then {cfg['lost_s']:.0f} s without; only the GPS-less frames "
        "count. `cold_start`: no GPS at all. Particle counts: "
        f"{cfg['n_particles']} tracking / {cfg['n_particles_global']} searching.",
        "",
    ]
    if "hard" in res:
        h, r = res["hard"], res["hard"]["realism"]
        lines += [
            f"**Hard rows**: the same drives with body pitch/roll (OU std {r['pitch_std_deg']:g} / "
            f"{r['roll_std_deg']:g} deg, {r['body_tau_s']:g} s, {r['brake_pitch_deg_per_mps2']:g} deg per m/s^2 of "
            f"braking; the odometry reports the body attitude with an IMU error, the filter's bird's-eye view uses it), "
            f"the camera {r['height_offset_m']:+g} m / {r['pitch_offset_deg']:+g} deg off the configured "
            f"height / pitch, sensor effects (strength {r['sensor']:g}), {r['occluders']:g} occluding vehicles per "
            f"frame on average, "
            + (f"hills (grade {r['grade_std_deg']:g} deg 1-sigma over {r['grade_length_m']:g} m, camber "
               f"{r['camber_deg']:g} deg: in the IMU's pitch / roll, not in the view), " if r.get("grade_std_deg") else "")
            + f"against an other-source index shifted {h['ref_shift_e_m']:+g} m E, "
            f"{h['ref_shift_n_m']:+g} m N ({h['ref_shift_m']:.1f} m) and re-textured, its declared registration "
            f"accuracy {h.get('ref_std_m', 0.0):g} m (1-sigma per axis, added to the published covariance); errors "
            "against the true position.", ""]
    tables = [("easy", res["rows"])] + ([("hard", res["rows_hard"])] if "rows_hard" in res else [])
    for setting, rows in tables:
        lines += _table(rows, setting if len(tables) > 1 else None)
    lines += _no_fix_table(tables)
    lines += _evidence_table(tables, (res.get("finetuned") or {}).get("embed_weight"))
    return "\n".join(lines) + "\n"


def _no_fix_table(tables: list[tuple[str, dict]]) -> list[str]:
    """Markdown lines: why the particle-filter rows' frames had no trusted fix (:func:`no_fix_reasons`), each
    reason as a share of all the row's frames."""
    out = []
    for setting, rows in tables:
        for key, r in rows.items():
            reasons = r.get("no_fix_reasons")
            if reasons is None or not r.get("frames"):
                continue
            modality, scenario, method = key.split("/")
            n = r["frames"]
            why = ", ".join(f"{k} {100 * v / n:.1f} %" for k, v in reasons.items()) or "-"
            out.append(f"| {setting} | {modality} | {scenario} | {method} | {100 * sum(reasons.values()) / n:.1f} % "
                       f"| {why} |")
    if not out:
        return []
    return ["Why the filter rows' frames had no trusted fix (the filter's reason for each frame without one, as a share "
            "of the row's frames):", "",
            "| setting | camera | scenario | method | no fix | reasons |", "|---|---|---|---|---|---|", *out, ""]


def _evidence_table(tables: list[tuple[str, dict]], embed_weight: float | None) -> list[str]:
    """Markdown lines of the retrieval rows' embedding evidence (:class:`EmbedProbe`), when the run has it."""
    out = []
    for setting, rows in tables:
        for key, r in rows.items():
            modality, scenario, method = key.split("/")
            for sfx, how in (("", ""), ("_north", ", north-aligned (true heading)")):
                if f"recall_at_1{sfx}" not in r:
                    continue
                pct, mar = r.get(f"true_crop_percentile_median{sfx}"), r.get(f"true_crop_cos_margin_median{sfx}")
                nats = ("-" if mar is None or method != "retrieval_finetuned" or not embed_weight
                        else f"{embed_weight * mar:+.2f}")
                out.append(f"| {setting} | {modality} | {scenario} | {method.replace('retrieval_', '')}{how} | "
                           f"{100 * r[f'recall_at_1{sfx}']:.1f} % | {100 * r[f'recall_at_5{sfx}']:.1f} % | "
                           f"{'-' if pct is None else f'{pct:.2f}'} | {'-' if mar is None else f'{mar:+.3f}'} | {nats} |")
    if not out:
        return []
    return ["Embedding evidence on the same GPS-less frames (`EmbedProbe`): R@k = the top-k tiles of the index contain "
            "the true position; then the cosine of the frame to the 50 m north-up crop at the true position against "
            "crops at 64 random road points of the same imagery (the crops the filter's embedding term compares): the "
            "share of random crops it beats (median over frames; 0.5 = chance) and its margin over the median random "
            "crop, and that margin times the filter's embed_weight (log-likelihood advantage of the true place, nats). "
            "Panoramas are embedded as the car sees them (as the retrieval rows and the filter do) and, on the "
            "north-aligned lines, rolled north with the true heading (how GLEAM-C was trained).",
            "", "| setting | camera | scenario | encoder | R@1 | R@5 | true crop beats (share) | cos margin | x embed_weight |",
            "|---|---|---|---|---|---|---|---|---|", *out, ""]


def _finetuned_line(ft: dict | None) -> str:
    """The report's sentence on the fine-tuned rows: the encoder, its embed_weight and why, or why not run."""
    if not ft or not ft.get("run"):
        return (f"Fine-tuned rows (`particle_filter_finetuned`, `retrieval_finetuned`): "
                f"{(ft or {}).get('note', 'not run')} (`--finetuned CHECKPOINT_DIR`).")
    return (f"Fine-tuned encoder: {ft['encoder']} (`{ft['checkpoint']}`, fingerprint {ft['fingerprint']}), with its "
            f"own index of the same imagery. `particle_filter_finetuned`: the same filter, seed and frames with the "
            f"embedding term on, embed_weight {ft['embed_weight']:.2f} ({ft['embed_weight_source']}); "
            "`retrieval_finetuned`: its top-1 tile centre.")


def _table(rows: dict, setting: str | None) -> list[str]:
    """Markdown table lines of one setting's rows (a leading ``setting`` column when given)."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    def num(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    lead, sep = ("| setting ", "|---") if setting else ("", "")
    lines = [
        lead + "| camera | scenario | method | frames | fix within 10 m | median error | heading error | false fixes "
        "(>25 m) | cov. inside 95 % | time to first fix (s, per drive) | latency p50 |",
        sep + "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        modality, scenario, method = key.split("/")
        if r.get("run") is False:
            lines.append((f"| {setting} " if setting else "") + f"| {modality} | {scenario} | {method} | "
                         f"{r['note']} |" + "  |" * 7)
            continue
        lines.append(
            (f"| {setting} " if setting else "") + f"| {modality} | {scenario} | {method} | {r['frames']} | "
            f"{pct(r.get('within_10m'))} | "
            f"{num(r.get('median_error_m'), '{:.2f} m')} | {num(r.get('median_heading_error_deg'), '{:.1f} deg')} | "
            f"{pct(r.get('false_fix_rate'))} | {pct(r.get('cov_consistency_95'))} | "
            f"{', '.join('-' if v is None else f'{v:g}' for v in r.get('time_to_first_fix_s', []))} | "
            f"{num(r.get('latency_p50_ms'), '{:.0f} ms')} |")
    return lines + [""]


def config_from_args(a) -> VehicleBenchConfig:
    """A :class:`VehicleBenchConfig` from the options of ``gleam bench run --vehicle``."""
    cfg = VehicleBenchConfig.quick() if getattr(a, "quick", False) else VehicleBenchConfig()
    if getattr(a, "seed", None):
        cfg = replace(cfg, seed=int(a.seed))
    if getattr(a, "world_size", None):
        cfg = replace(cfg, world_size_m=float(a.world_size))
    if getattr(a, "hard", False):
        cfg = replace(cfg, hard=True)
    if getattr(a, "ref_std", None) is not None:
        cfg = replace(cfg, ref_std_m=float(a.ref_std))
    if getattr(a, "finetuned", None):
        cfg = replace(cfg, finetuned=str(a.finetuned))
    return cfg
