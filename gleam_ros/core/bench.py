"""``gleam bench run``: localization methods side by side on simulated flights, one run, one table.

For each scene (a real map given with ``--map``, and a procedural world) the benchmark builds a tile
index with the ImageNet encoder, renders a flight and runs every method on the same frames, frame by
frame (interleaved, so all see the same machine load):

* ``local_features``: a GisNav-style baseline without embeddings. A GPS-like prior (true position plus
  Gaussian noise) selects every tile whose centre lies within ``radius_m``; all are verified (SIFT +
  homography + planar pose, the pipeline's :class:`~gleam_ros.core.verify.Verifier`) and the best
  verified one is the fix. No temporal filter.
* ``retrieval_imagenet``: ImageNet encoder retrieval only (8 yaw hypotheses, global search). Every frame
  "fixes" at the top-1 tile centre; the metrics show how wrong that is. Its covariance is the one a tile
  centre would honestly claim if the tile were right (uniform over the tile: size²/12 per axis).
* ``retrieval_finetuned``: the same with a fine-tuned checkpoint (``finetuned``); not run without one.
* ``full_pipeline``: :class:`~gleam_ros.core.localizer.Localizer` with its defaults (retrieval +
  verification + filter, tracking once trusted). It gets no position prior (GPS lost).

Retrieval recall: a retrieved tile is correct when its footprint contains the true ground position
(|dx|, |dy| <= size/2 from the tile centre, in the tile's own UTM grid). Accuracy metrics are those of
:func:`gleam_ros.core.evaluate.compute_metrics`. Latency: per-frame stage times, p50/p95; embedding with
torch and with ONNX Runtime on the same frames, alternating which goes first.

Output (``out``): ``bench.json``, ``bench.md`` (accuracy table: methods x maps; latency table),
``bench.png`` (error CDF per method and map, total latency per method), and per scene the index, the
flight folder and ``frames_<method>.jsonl``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .evaluate import FrameRecord, compute_metrics, save_records
from .geo import LocalFrame, offset_latlon, transform
from .jsonutil import to_jsonable

METHODS = ("local_features", "retrieval_imagenet", "retrieval_finetuned", "full_pipeline")
METHOD_LABELS = {
    "local_features": "local features in radius (GisNav-style, GPS prior)",
    "retrieval_imagenet": "retrieval only, ImageNet encoder (top-1 tile centre)",
    "retrieval_finetuned": "retrieval only, fine-tuned encoder (top-1 tile centre)",
    "full_pipeline": "full pipeline (retrieval + verification + filter, no prior)",
}
NOT_RUN_FINETUNED = "not run: no fine-tuned checkpoint"


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one benchmark run (``quick()`` gives the CI-class variant)."""

    map_path: str | None = None  # real map (any format `gleam index build` reads); None = procedural world only
    world: bool = True  # also benchmark a procedural world
    world_seed: int = 7
    world_size_m: float = 800.0
    world_gsd_m: float = 0.3
    world_season: str = "autumn"  # the flight's season; the index is the summer render
    frames: int = 120
    flight_seed: int = 0
    image_width: int = 640
    image_height: int = 480
    photometric: float = 1.0
    tile_size_m: float = 100.0
    overlap: float = 0.5
    tile_gsd_m: float = 0.25
    min_valid: float = 0.9  # as `gleam index build`
    radius_m: float = 150.0  # local-features baseline: search radius around the GPS-like prior
    prior_noise_m: float = 5.0  # GPS-like prior: std per axis (east, north), metres
    alt_noise_m: float = 3.0  # barometric altitude prior noise (all verifying methods get it)
    top_k_recall: int = 5
    finetuned: str | None = None  # checkpoint directory of a fine-tuned encoder
    seed: int = 0
    verify_features: str = "sift"  # VerifyConfig.features of every verifying method
    hard: bool = False  # the hard scenes instead (gleam_ros.core.bench_hard: oblique, parallax, other source)
    # hard: registration accuracy declared for the other-source reference of the real map (1-sigma per axis,
    # metres, as `gleam index build --reference-std-m`); 0 = the imagery is taken as exact
    ref_std_m: float = 0.0
    # hard: the frames come with the autopilot's attitude (IMU pitch/roll 1 deg, magnetometer heading 5 deg,
    # flight.AttitudeNoise), so the localizer can search tiles around an oblique view's centre; False: altitude only
    attitude_priors: bool = True

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ConfigError(f"bench frames must be >= 1, got {self.frames}")
        if not (self.radius_m > 0 and math.isfinite(self.radius_m)):
            raise ConfigError(f"bench radius must be a positive number of metres, got {self.radius_m}")
        if not (self.prior_noise_m >= 0 and math.isfinite(self.prior_noise_m)):
            raise ConfigError(f"bench prior noise must be >= 0 m, got {self.prior_noise_m}")
        if not self.world and not self.map_path:
            raise ConfigError("bench: nothing to run (no --map and the procedural world is off)")
        from .index import check_reference_std

        check_reference_std(self.ref_std_m, "bench: --ref-std")

    @staticmethod
    def quick(**kw) -> BenchConfig:
        """Small settings for CI-class machines: 20 frames, a 500 m procedural world."""
        return BenchConfig(**{"frames": 20, "world_size_m": 500.0, **kw})


# --------------------------------------------------------------------------------------------- helpers


def _pct(values, q: float) -> float | None:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.percentile(v, q)) if v else None


def _stats(values) -> dict:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return {"p50_ms": _pct(v, 50), "p95_ms": _pct(v, 95), "n": len(v)}


def machine_info() -> dict:
    """CPU, core count, load and library versions of this machine (for the README line)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import onnxruntime
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(), onnxruntime=onnxruntime.__version__)
    except ImportError:  # pragma: no cover - both are requirements
        pass
    return info


class _Footprints:
    """Whether a ground position lies inside a tile's footprint (tile's own UTM grid)."""

    def __init__(self, index) -> None:
        m = index.meta_arrays()
        self.crs = [str(c) for c in m["crs"]]
        self.x0 = np.asarray(m["x0"], float)
        self.y0 = np.asarray(m["y0"], float)
        self.size = np.asarray(m["size_m"], float)

    def contains(self, tile_idx: int, lat: float, lon: float) -> bool:
        """True when (lat, lon) lies within the footprint of tile ``tile_idx``."""
        x, y = transform(lon, lat, "EPSG:4326", self.crs[tile_idx])
        half = self.size[tile_idx] / 2.0
        cx, cy = self.x0[tile_idx] + half, self.y0[tile_idx] - half
        return bool(abs(float(x) - cx) <= half and abs(float(y) - cy) <= half)


def _retrieval_record(rec: FrameRecord, hits, fp: _Footprints, k: int) -> dict:
    """Fill ``rec`` as a retrieval-only fix at the top-1 tile centre; returns recall flags."""
    inside = [fp.contains(h.tile_idx, rec.gt_lat, rec.gt_lon) for h in hits[:k]]
    if hits:
        top = hits[0]
        var = fp.size[top.tile_idx] ** 2 / 12.0
        rec.trusted = True
        rec.est_lat, rec.est_lon = top.center_lat, top.center_lon
        rec.top_tile_lat, rec.top_tile_lon = top.center_lat, top.center_lon
        rec.cov_en = [[var, 0.0], [0.0, var]]
    return {"r1": bool(inside[:1] and inside[0]), "rk": bool(any(inside))}


@dataclass
class Scene:
    """One map to benchmark on: the index map and the map the flight is rendered from."""

    name: str
    index_map: object  # GeoMap the tiles are cut from
    flight_map: object  # GeoMap the camera sees
    description: str
    simulate: object = None  # flight renderer like flight.simulate_to_folder (None: that one); hard scenes
    verify: dict = field(default_factory=dict)  # VerifyConfig overrides of this scene
    hard: dict | None = None  # the HardSpec of a hard scene (reported)
    reference_std_m: float = 0.0  # the index map's declared registration accuracy (manifest map_info)
    attitude: object = None  # flight.AttitudeNoise of the frames' attitude priors (None: altitude only)


def make_scenes(cfg: BenchConfig) -> list[Scene]:
    """The real map (``cfg.map_path``) and/or the procedural world (summer index, autumn flight)."""
    from .maps import map_from_array, open_map

    if cfg.hard:
        from .bench_hard import hard_scenes

        return hard_scenes(cfg)
    scenes = []
    if cfg.map_path:
        geomap = open_map(cfg.map_path)
        scenes.append(Scene(geomap.name, geomap, geomap,
                            f"real map {geomap.name}: flight over the same map, photometric change {cfg.photometric:g}"))
    if cfg.world:
        from .sim.world import WorldConfig, make_world

        world = make_world(WorldConfig(seed=cfg.world_seed, size_m=cfg.world_size_m, gsd_m=cfg.world_gsd_m))
        variant = world.variant(season=cfg.world_season, seed=cfg.world_seed + 1000)  # as `gleam world`
        name = f"world{cfg.world_seed}_{cfg.world_size_m:g}m"
        scenes.append(Scene(name, world.satellite_map(),
                            map_from_array(variant, world.crs, world.transform, name=f"{name}_{cfg.world_season}"),
                            f"procedural world seed {cfg.world_seed}, {cfg.world_size_m:g} m: index from the summer "
                            f"render, flight over the {cfg.world_season} render, photometric change {cfg.photometric:g}"))
    return scenes


# --------------------------------------------------------------------------------------------- one scene


def run_scene(scene: Scene, cfg: BenchConfig, torch_b, onnx_b, ft_b, out: Path, log=print) -> dict:
    """Build the index, render the flight and run every method on every frame of one scene."""
    from .encoder import embed_rotations
    from .flight import FlightSpec, frame_priors, load_flight, read_image, simulate_to_folder
    from .index import TileIndex
    from .localizer import Localizer, LocalizerConfig
    from .tiles import TileSpec, iter_tiles, tile_grid
    from .verify import Verifier, VerifyConfig

    out.mkdir(parents=True, exist_ok=True)
    spec = TileSpec(size_m=cfg.tile_size_m, overlap=cfg.overlap, gsd_m=cfg.tile_gsd_m, min_valid=cfg.min_valid)
    t0 = time.perf_counter()
    index = TileIndex.build(iter_tiles(scene.index_map, spec), torch_b, total=len(tile_grid(scene.index_map, spec)),
                            progress=False,
                            map_info={"name": scene.index_map.name, "reference_std_m": scene.reference_std_m})
    build_s = time.perf_counter() - t0
    log(f"[{scene.name}] index: {index.n_tiles} tiles in {build_s:.0f} s")
    ft_index = ft_fp = None
    if ft_b is not None:
        ft_index = TileIndex.build(iter_tiles(scene.index_map, spec), ft_b, progress=False)
        ft_fp = _Footprints(ft_index)
    fspec = FlightSpec(frames=cfg.frames, width=cfg.image_width, height=cfg.image_height,
                       photometric=cfg.photometric, seed=cfg.flight_seed)
    flight = load_flight((scene.simulate or simulate_to_folder)(scene.flight_map, fspec, out / "flight", progress=False))
    log(f"[{scene.name}] flight: {len(flight)} frames rendered")

    fp = _Footprints(index)
    loc = Localizer(torch_b, index, LocalizerConfig(verify=VerifyConfig(features=cfg.verify_features, **scene.verify)))
    base_verifier = Verifier(loc.cfg.verify)
    rng_alt = np.random.default_rng(cfg.seed)
    rng_prior = np.random.default_rng(cfg.seed + 1)
    rng_att = np.random.default_rng(cfg.seed + 2)  # own stream: the altitude draws are the same without attitude
    n_rot, k = loc.cfg.n_rotations, cfg.top_k_recall
    recs = {m: [] for m in METHODS if m != "retrieval_finetuned" or ft_b is not None}
    recall = {m: [] for m in ("retrieval_imagenet", "retrieval_finetuned")}
    lat: dict[str, list[float]] = {s: [] for s in (
        "decode", "embed_torch", "embed_onnx", "search", "embed_finetuned", "local_features_verify",
        "local_features_total", "retrieval_total", "pipeline_embed", "pipeline_search", "pipeline_verify",
        "pipeline_filter", "pipeline_total")}
    n_cands, cand_max_dist, pipeline_embedded = [], [], 0
    # warm-up (first-call allocations, ORT graph init) outside the timings
    warm = read_image(flight.images[0])
    embed_rotations(torch_b, warm, "uav", n_rot=n_rot)
    embed_rotations(onnx_b, warm, "uav", n_rot=n_rot)

    for i, (pose, img) in enumerate(zip(flight.poses, flight.images)):
        def new_rec(pose=pose):
            return FrameRecord(t=pose.t, gt_lat=pose.lat, gt_lon=pose.lon, gt_heading_deg=pose.heading_deg)

        t1 = time.perf_counter()
        rgb = read_image(img)
        dec = (time.perf_counter() - t1) * 1e3
        lat["decode"].append(dec)
        priors = frame_priors(pose, cfg.alt_noise_m, rng_alt, scene.attitude, rng_att)

        # embedding: torch and ONNX Runtime on the same frame, alternating which goes first
        emb = {}
        for name, b in ((("torch", torch_b), ("onnx", onnx_b)) if i % 2 == 0 else (("onnx", onnx_b), ("torch", torch_b))):
            t1 = time.perf_counter()
            emb[name] = embed_rotations(b, rgb, "uav", n_rot=n_rot)
            lat[f"embed_{name}"].append((time.perf_counter() - t1) * 1e3)

        # (b) retrieval only, ImageNet encoder
        t1 = time.perf_counter()
        hits = index.search_multi(emb["torch"], k=k)
        lat["search"].append((time.perf_counter() - t1) * 1e3)
        rec = new_rec()
        recall["retrieval_imagenet"].append(_retrieval_record(rec, hits, fp, k))
        rec.latency_ms = dec + lat["embed_torch"][-1] + lat["search"][-1]
        rec.timings_ms = {"decode": dec, "embed": lat["embed_torch"][-1], "search": lat["search"][-1]}
        lat["retrieval_total"].append(rec.latency_ms)
        recs["retrieval_imagenet"].append(rec)

        # (c) retrieval only, fine-tuned encoder
        if ft_b is not None:
            t1 = time.perf_counter()
            q = embed_rotations(ft_b, rgb, "uav", n_rot=n_rot)
            ft_hits = ft_index.search_multi(q, k=k)
            ms = (time.perf_counter() - t1) * 1e3
            lat["embed_finetuned"].append(ms)
            rec = new_rec()
            recall["retrieval_finetuned"].append(_retrieval_record(rec, ft_hits, ft_fp, k))
            rec.latency_ms = dec + ms
            recs["retrieval_finetuned"].append(rec)

        # (a) local features against every tile within the radius of a GPS-like prior
        e, n = rng_prior.normal(0.0, cfg.prior_noise_m, 2) if cfg.prior_noise_m > 0 else (0.0, 0.0)
        plat, plon = offset_latlon(pose.lat, pose.lon, float(e), float(n))
        cand = index.tiles_within(plat, plon, cfg.radius_m)
        if len(cand):
            ce, cn, _ = LocalFrame(plat, plon).to_enu(index.centers_latlon[cand, 0], index.centers_latlon[cand, 1])
            cand_max_dist.append(float(np.max(np.hypot(ce, cn))))
        n_cands.append(int(len(cand)))
        t1 = time.perf_counter()
        verifs = base_verifier.verify_candidates(rgb, [index.tile(int(c)) for c in cand], flight.intrinsics, priors)
        vms = (time.perf_counter() - t1) * 1e3
        lat["local_features_verify"].append(vms)
        lat["local_features_total"].append(dec + vms)
        rec = new_rec()
        rec.latency_ms, rec.timings_ms = dec + vms, {"decode": dec, "verify": vms}
        if verifs and verifs[0].ok:
            v = verifs[0]
            rec.trusted, rec.est_lat, rec.est_lon = True, v.lat, v.lon
            rec.est_heading_deg, rec.cov_en = v.heading_deg, np.asarray(v.cov_en).tolist()
        else:
            rec.note = verifs[0].reason if verifs else "no tile within the radius"
        recs["local_features"].append(rec)

        # (d) the full pipeline (no position prior)
        res = loc.localize(rgb, t=pose.t, intrinsics=flight.intrinsics, priors=priors)
        rec = new_rec()
        rec.timings_ms = {"decode": dec, **res.timings_ms}
        rec.latency_ms = dec + res.timings_ms["total"]
        for s in ("search", "verify", "filter"):
            lat[f"pipeline_{s}"].append(res.timings_ms[s])
        if res.prior is None:  # no prior given: a frame with the track as prior skips the embedding
            pipeline_embedded += 1
            lat["pipeline_embed"].append(res.timings_ms["embed"])
        lat["pipeline_total"].append(rec.latency_ms)
        if res.fix is not None:
            rec.trusted, rec.est_lat, rec.est_lon = True, res.fix.lat, res.fix.lon
            rec.est_heading_deg, rec.cov_en = res.fix.heading_deg, np.asarray(res.fix.cov_en).tolist()
        elif res.filter is not None:
            rec.note = res.filter.reason
        recs["full_pipeline"].append(rec)
        if (i + 1) % 10 == 0 or i + 1 == len(flight):
            log(f"[{scene.name}] {i + 1}/{len(flight)} frames")

    methods: dict[str, dict] = {}
    for m in METHODS:
        if m not in recs:
            methods[m] = {"run": False, "note": NOT_RUN_FINETUNED}
            continue
        met = compute_metrics(recs[m])
        met["run"] = True
        if m in recall:
            met["recall_at_1"] = float(np.mean([r["r1"] for r in recall[m]]))
            met[f"recall_at_{k}"] = float(np.mean([r["rk"] for r in recall[m]]))
        methods[m] = met
        save_records(recs[m], out / f"frames_{m}.jsonl")
    methods["local_features"].update(
        candidates_mean=float(np.mean(n_cands)), candidates_max=int(np.max(n_cands)),
        candidate_max_distance_m=max(cand_max_dist) if cand_max_dist else None,
        radius_m=cfg.radius_m, prior_noise_m=cfg.prior_noise_m)
    methods["full_pipeline"]["frames_embedded"] = pipeline_embedded
    t_med, o_med = _pct(lat["embed_torch"], 50), _pct(lat["embed_onnx"], 50)
    ratio = {"ratio": o_med / t_med if t_med and o_med else None, "torch_p50_ms": t_med, "onnx_p50_ms": o_med,
             "frames": len(lat["embed_torch"]), "yaw_hypotheses": n_rot, "onnx_providers": list(onnx_b.providers)}
    errs = {m: _errors(recs[m]) for m in recs}
    return {
        "description": scene.description,
        **({"hard": scene.hard, "verify_overrides": scene.verify} if scene.hard else {}),
        **({"attitude_priors": asdict(scene.attitude)} if scene.attitude is not None else {}),
        "index": {"tiles": index.n_tiles, "build_s": build_s, "tile_size_m": cfg.tile_size_m, "overlap": cfg.overlap,
                  "gsd_m": cfg.tile_gsd_m, "min_valid": cfg.min_valid},
        "flight": {"frames": len(flight), **asdict(fspec)},
        "methods": methods,
        "latency": {s: _stats(v) for s, v in lat.items() if v},
        "embed_ratio_onnx_over_torch": ratio,
        "_errors": errs,
        "_latency_raw": {m: [r.latency_ms for r in recs[m]] for m in recs},
    }


def _errors(records: list[FrameRecord]) -> list[float]:
    """Horizontal errors (m) of the fixes of ``records`` (for the CDF plot)."""
    fixes = [r for r in records if r.trusted]
    if not fixes:
        return []
    f = LocalFrame(records[0].gt_lat, records[0].gt_lon)
    ge, gn, _ = f.to_enu([r.gt_lat for r in fixes], [r.gt_lon for r in fixes])
    ee, en, _ = f.to_enu([r.est_lat for r in fixes], [r.est_lon for r in fixes])
    return np.hypot(ee - ge, en - gn).tolist()


# --------------------------------------------------------------------------------------------- report


def markdown_report(res: dict) -> str:
    """``bench.md``: the accuracy table (rows = maps x methods) and the latency table."""

    def pct(v):
        return "—" if v is None else f"{100 * v:.1f} %"

    def num(v, fmt="{:.2f}"):
        return "—" if v is None else fmt.format(v)

    k = res["config"]["top_k_recall"]
    lines = [f"Command: `{res['command']}`  ", f"Date: {res['date']}; machine: {_machine_line(res['machine'])}", "",
             f"| map | method | R@1 | R@{k} | fixes | within 5 / 10 / 25 m | median error | false fixes (> 25 m) "
             "| NEES consistency (95 %) | latency p50 / p95 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for sname, sc in res["scenes"].items():
        for m in METHODS:
            met = sc["methods"][m]
            if not met.get("run"):
                lines.append(f"| {sname} | {METHOD_LABELS[m]} | {met['note']} |  |  |  |  |  |  |  |")
                continue
            within = " / ".join(pct(met.get(f"within_{d}m")) for d in (5, 10, 25))
            lines.append(
                f"| {sname} | {METHOD_LABELS[m]} | {pct(met.get('recall_at_1'))} | {pct(met.get(f'recall_at_{k}'))} "
                f"| {met['trusted_fixes']}/{met['frames']} | {within} | {num(met.get('median_error_m'), '{:.2f} m')} "
                f"| {met['false_fixes']} | {pct(met.get('cov_consistency_95'))} "
                f"| {num(met.get('latency_p50_ms'), '{:.0f}')} / {num(met.get('latency_p95_ms'), '{:.0f} ms')} |")
    lines += ["", "Latency per frame (ms), p50 / p95:", ""]
    names = list(res["scenes"])
    lines += ["| stage | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    rows = [("decode (JPEG)", "decode"), ("embed, torch (8 yaw hypotheses)", "embed_torch"),
            ("embed, ONNX Runtime (8 yaw hypotheses)", "embed_onnx"), ("search (global, flat)", "search"),
            ("embed + search, fine-tuned", "embed_finetuned"),
            ("local features: verify all tiles in radius", "local_features_verify"),
            ("local features: total", "local_features_total"), ("retrieval only: total", "retrieval_total"),
            ("full pipeline: embed (acquisition frames only)", "pipeline_embed"),
            ("full pipeline: search", "pipeline_search"), ("full pipeline: verify", "pipeline_verify"),
            ("full pipeline: filter", "pipeline_filter"), ("full pipeline: total", "pipeline_total")]
    for label, key in rows:
        cells = []
        for s in names:
            st = res["scenes"][s]["latency"].get(key)
            cells.append("—" if not st else f"{num(st['p50_ms'], '{:.1f}')} / {num(st['p95_ms'], '{:.1f}')}"
                         + (f" (n={st['n']})" if key == "pipeline_embed" else ""))
        if any(c != "—" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratios = []
    for s in names:
        r = res["scenes"][s]["embed_ratio_onnx_over_torch"]
        ratios.append(f"{num(r['ratio'])} ({num(r['onnx_p50_ms'], '{:.0f}')} / {num(r['torch_p50_ms'], '{:.0f}')} ms)")
    lines.append("| embed time ONNX Runtime / torch (same frames, interleaved) | " + " | ".join(ratios) + " |")
    notes = [""]
    for s in names:
        lf = res["scenes"][s]["methods"]["local_features"]
        fpm = res["scenes"][s]["methods"]["full_pipeline"]
        notes.append(f"- {s}: {res['scenes'][s]['description']}; {res['scenes'][s]['index']['tiles']} tiles; "
                     f"local features verified {lf['candidates_mean']:.1f} tiles per frame on average (max "
                     f"{lf['candidates_max']}, radius {lf['radius_m']:g} m around the true position + "
                     f"{lf['prior_noise_m']:g} m noise per axis); the full pipeline embedded "
                     f"{fpm['frames_embedded']} of {fpm['frames']} frames (the rest tracked).")
    notes.append("- Retrieval-only rows fix every frame at the top-1 tile centre; their covariance is the tile's "
                 "uniform spread (size²/12 per axis). R@k: a tile counts when its footprint contains the true position.")
    return "\n".join(lines + notes) + "\n"


def _machine_line(m: dict) -> str:
    load = m.get("loadavg_at_start")
    return (f"{m.get('cpu') or m.get('platform')}, {m.get('cpu_count')} cores"
            + (f", load {load[0]:.1f} at start" if load else "") + f", torch {m.get('torch')}, "
            f"onnxruntime {m.get('onnxruntime')}")


def plot_bench(res: dict, errors: dict, latencies: dict, path: Path) -> Path:
    """``bench.png``: error CDF per method for each map, and a box plot of total latency per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["scenes"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(6 * (len(names) + 1), 4.8))
    colors = {"local_features": "tab:orange", "retrieval_imagenet": "tab:red", "retrieval_finetuned": "tab:purple",
              "full_pipeline": "tab:green"}
    for ax, s in zip(axes, names):
        n = res["scenes"][s]["flight"]["frames"]
        for m, err in errors[s].items():
            e = np.sort(np.maximum(np.asarray(err, float), 0.01))
            y = np.arange(1, len(e) + 1) / n
            ax.step(np.concatenate([[0.01], e]), np.concatenate([[0.0], y]), where="post", color=colors[m],
                    label=METHOD_LABELS[m].split(" (")[0] if m != "full_pipeline" else "full pipeline")
        for d in (5, 25):
            ax.axvline(d, color="gray", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlim(0.01, 1000)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("horizontal error (m)")
        ax.set_ylabel("share of frames with a fix within")
        ax.set_title(f"{s}: error CDF ({n} frames)")
        ax.legend(loc="upper left", fontsize=7)
    ax = axes[-1]
    data, labels = [], []
    for s in names:
        for m, v in latencies[s].items():
            data.append([x for x in v if math.isfinite(x)] or [0.0])
            labels.append(f"{s[:12]}\n{m.replace('_', ' ')}")
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, fontsize=7, ha="right")
    ax.set_ylabel("latency per frame (ms)")
    ax.set_title("total latency per frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- entry


def run_bench(cfg: BenchConfig, out: str | Path, command: str = "", log=print) -> dict:
    """Run the benchmark; writes ``bench.json``, ``bench.md``, ``bench.png`` under ``out`` and returns the results."""
    from .encoder import OnnxBackend, TorchBackend, export_onnx, load_backend

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    machine = machine_info()
    torch_b = TorchBackend()
    onnx_b = OnnxBackend(export_onnx(torch_b.model, torch_b.card, out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    ft_b = load_backend("torch", cfg.finetuned) if cfg.finetuned else None
    res: dict = {"command": command, "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "machine": machine, "config": asdict(cfg), "methods": dict(METHOD_LABELS), "scenes": {}}
    errors, latencies = {}, {}
    for scene in make_scenes(cfg):
        sc = run_scene(scene, cfg, torch_b, onnx_b, ft_b, out / _safe(scene.name), log=log)
        errors[scene.name] = sc.pop("_errors")
        latencies[scene.name] = sc.pop("_latency_raw")
        res["scenes"][scene.name] = sc
    res["wall_s"] = time.perf_counter() - t_start
    (out / "bench.json").write_text(json.dumps(to_jsonable(res), indent=2))
    md = markdown_report(res)
    (out / "bench.md").write_text(md)
    plot_bench(res, errors, latencies, out / "bench.png")
    log(md)
    log(f"results: {out / 'bench.json'}, bench.md, bench.png ({res['wall_s']:.0f} s)")
    return res


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def config_from_args(a) -> BenchConfig:
    """A :class:`BenchConfig` from the options of ``gleam bench run``."""
    kw = {"map_path": a.map, "world": not a.no_world, "radius_m": a.radius, "prior_noise_m": a.prior_noise,
          "finetuned": a.finetuned, "world_seed": a.world_seed, "flight_seed": a.seed,
          "verify_features": getattr(a, "verify_features", "sift"), "hard": getattr(a, "hard", False)}
    if getattr(a, "ref_std", None) is not None:
        kw["ref_std_m"] = a.ref_std
    if getattr(a, "no_attitude_priors", False):
        kw["attitude_priors"] = False
    if a.frames is not None:
        kw["frames"] = a.frames
    if a.world_size is not None:
        kw["world_size_m"] = a.world_size
    return BenchConfig.quick(**kw) if a.quick else BenchConfig(**kw)


__all__ = ["BenchConfig", "METHODS", "Scene", "config_from_args", "machine_info", "make_scenes",
           "markdown_report", "plot_bench", "run_bench", "run_scene"]
