"""How consistent is the verifier's covariance, with and without its model-error floor?

Every frame of a simulated flight is verified (no retrieval, no filter: the tiles nearest the
true position, as in tracking) once, with no floor (``cov_floor_m=0``: the bootstrap covariance
alone); each floor f is then added analytically (``C + f² I``, exactly what the verifier adds). For
each verified fix the 2-D NEES (error^T C^-1 error, ENU metres) is compared with the 95 % bound
of a chi-square with 2 degrees of freedom (5.991). A consistent covariance puts about 95 % of
fixes inside and has a mean NEES near 2; far above 95 % (mean << 2) is over-conservative, far
below is over-confident.

Two modes:

* ``--index/--flight``: an existing index and flight (e.g. from ``make bench``).
* ``--hard-map MAP`` and/or ``--hard-world SEED``: the harder simulated set
  (:mod:`gleam_ros.core.sim.realism`): for each of two flight seeds (``--seeds FIT,EVAL``) a hard flight
  is rendered (oblique up to 45 deg, sensor effects; on the real map against an other-source
  reference shifted by a known few metres, on the world with parallax against another season), and
  the reference tiles are cut from the reference map directly (no embeddings needed). Besides the
  floors, a **measured error model** ``sigma² = s0² + (k·g)²`` per axis is fitted by maximum
  likelihood on the FIT seed (``g``: ground metres per pixel at the view centre, from the estimated
  height and tilt) and reported on the EVAL seed, which the fit never saw.

  On the real map the reference's registration accuracy can also be **declared**
  (``--declared 1.5,1.77``: the 1-sigma per axis that ``gleam index build --reference-std-m`` stores and the
  localizer adds to every published covariance, on top of the verifier's default 0.5 m floor). The flight's
  misregistration is one fixed offset, so on one map every fix has about the same NEES and the share inside
  is all or nothing. ``--shift-draws N`` therefore also verifies the EVAL flight against the same other-source
  reference *without* the shift and adds N misregistrations drawn from the declared accuracy (N(0, sigma²) per
  axis; a fix against a rigidly moved map moves by the same offset): the share inside over many maps whose
  error is as the declaration says. The offset-invariance is checked against the shifted flight.

A third mode, ``--bench RESULTS``, reads a ``gleam bench run`` result (``bench.json`` and the full pipeline's
``frames_full_pipeline.jsonl`` per scene) and reports the published fixes' NEES with each ``--declared``
accuracy in place of the one the run declared (``--ref-std``; the localizer adds its square to the published
covariance and to nothing else, so the same fixes serve every value).

Usage (from the repository root):
    python tools/bench_covariance.py --index results/bench/index --flight results/bench/flight \\
        [--floors 0.5,0.25,0] [--out docs/bench/covariance_floor.md]
    python tools/bench_covariance.py --hard-map ../shared/data/turku_satellite --hard-world 7 \\
        --seeds 1,2 --frames 60 [--features sift] [--declared 1.5,1.77 --shift-draws 200] \\
        [--out docs/bench/hard_covariance.md]
    python tools/bench_covariance.py --bench results/bench_hard --declared 0,1.5,1.77
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core.evaluate import CHI2_2DOF_95  # noqa: E402
from gleam_ros.core.flight import frame_priors, load_flight, read_image  # noqa: E402
from gleam_ros.core.geo import LocalFrame  # noqa: E402
from gleam_ros.core.verify import Verifier, VerifyConfig  # noqa: E402



@dataclass
class Fix:
    """One verified frame: error (ENU m, fix minus truth), bootstrap covariance, and what the model sees."""

    err: np.ndarray
    cov: np.ndarray
    g: float  # ground metres per pixel at the view centre (estimated height and tilt)


def _nees(fixes: list[Fix], extra_var) -> np.ndarray:
    out = []
    for f, v in zip(fixes, np.broadcast_to(np.asarray(extra_var, float), (len(fixes),))):
        c = f.cov + v * np.eye(2)
        out.append(float(f.err @ np.linalg.solve(c, f.err)))
    return np.array(out)


def model_var(fixes: list[Fix], s0: float, k: float) -> np.ndarray:
    """Per-fix added variance of the error model ``s0² + (k g)²``."""
    return np.array([s0**2 + (k * f.g) ** 2 for f in fixes])


def fit_model(fixes: list[Fix]) -> tuple[float, float]:
    """Maximum-likelihood (s0, k) of ``C_i + (s0² + (k g_i)²) I`` for the 2-D errors."""
    from scipy.optimize import minimize

    def nll(p):
        s0, k = np.exp(p)
        tot = 0.0
        for f in fixes:
            c = f.cov + (s0**2 + (k * f.g) ** 2) * np.eye(2)
            tot += math.log(np.linalg.det(c)) + float(f.err @ np.linalg.solve(c, f.err))
        return tot

    best = min((minimize(nll, np.log([a, b]), method="Nelder-Mead") for a in (0.3, 1.5) for b in (0.5, 3.0)),
               key=lambda r: r.fun)
    s0, k = np.exp(best.x)
    return float(s0), float(k)


def _row(label: str, fixes: list[Fix], total: int, var) -> str:
    if not fixes:
        return f"| {label} | 0/{total} | — | — | — | — |"
    nees = _nees(fixes, var)
    errs = np.array([float(np.hypot(*f.err)) for f in fixes])
    return (f"| {label} | {len(fixes)}/{total} | {100 * np.mean(nees <= CHI2_2DOF_95):.1f} % | {np.mean(nees):.2f} "
            f"| {np.median(errs):.2f} m | {100 * np.mean(errs <= 5.0):.1f} % |")


def verify_flight(flight, tiles_near, cfg: VerifyConfig, candidates: int, desc: str) -> list[Fix]:
    """Verify every frame against the ``candidates`` tiles ``tiles_near(lat, lon, n)`` returns; verified fixes."""
    ver = Verifier(cfg)
    rng = np.random.default_rng(0)
    out = []
    for pose, path in tqdm(list(zip(flight.poses, flight.images)), desc=desc):
        priors = frame_priors(pose, 3.0, rng)
        res = ver.verify_candidates(read_image(path), tiles_near(pose.lat, pose.lon, candidates), flight.intrinsics,
                                    priors, stop_inliers=200)
        if not res or not res[0].ok:
            continue
        r = res[0]
        de, dn, _ = LocalFrame(pose.lat, pose.lon).to_enu(r.lat, r.lon)
        c = math.cos(math.radians(r.tilt_deg)) if math.isfinite(r.tilt_deg) else 1.0
        g = r.alt_m / math.sqrt(flight.intrinsics.fx * flight.intrinsics.fy) / max(c, 0.2) ** 2
        out.append(Fix(np.array([float(de), float(dn)]), np.asarray(r.cov_en, float)[:2, :2], float(g)))
    return out


def _index_tiles(index):
    def near(lat, lon, n):
        idx = index.tiles_within(lat, lon, 100.0)
        e, nn, _ = LocalFrame(lat, lon).to_enu(index.centers_latlon[idx, 0], index.centers_latlon[idx, 1])
        order = np.argsort(np.hypot(e, nn), kind="stable")[:n]
        return [index.tile(int(idx[i])) for i in order]
    return near


def _map_tiles(ref_map, size_m: float = 100.0, overlap: float = 0.5, gsd_m: float = 0.25):
    """Tiles of ``ref_map`` on the bench's grid, cut on demand (no embeddings), nearest-first."""
    from gleam_ros.core import geo
    from gleam_ros.core.tiles import TileSpec, render_tile, tile_grid, tile_id_for

    spec = TileSpec(size_m=size_m, overlap=overlap, gsd_m=gsd_m, min_valid=0.9)
    grid = tile_grid(ref_map, spec)
    cx = np.array([g[2] + size_m / 2 for g in grid])
    cy = np.array([g[3] - size_m / 2 for g in grid])
    cache: dict[int, object] = {}

    def near(lat, lon, n):
        x, y = geo.transform(lon, lat, geo.WGS84, ref_map.working_crs)
        out = []
        for i in np.argsort(np.hypot(cx - float(x), cy - float(y)), kind="stable"):
            if i not in cache:
                r, c, x0, y0 = grid[i]
                cache[i] = render_tile(ref_map, spec, x0, y0, tile_id_for(r, c))
            if cache[i] is not None:
                out.append(cache[i])
            if len(out) == n:
                break
        return out
    return near


def declared_rows(ev: list[Fix], total: int, declared: list[float], floor: float = 0.5) -> list[str]:
    """Rows of the EVAL fixes with each declared registration accuracy added to the verifier's floor."""
    return [_row(f"floor {floor:g} m + declared {d:g} m", ev, total, floor**2 + d**2) for d in declared]


def shift_draw_rows(ev0: list[Fix], total: int, declared: list[float], draws: int, floor: float = 0.5,
                    seed: int = 0) -> list[str]:
    """NEES over ``draws`` maps misregistered by N(0, d²) per axis, for each declared accuracy ``d``.

    ``ev0``: fixes against the reference without a shift. Each draw moves every fix of the flight by the same
    offset (one map, one misregistration); its covariance is the bootstrap + ``floor² + d²``.
    """
    rows = []
    if not ev0:
        return rows
    errs = np.array([f.err for f in ev0])
    for d in declared:
        rng = np.random.default_rng([seed, int(round(d * 1000))])
        shifts = rng.normal(0.0, d, (draws, 2))
        per_map, all_nees = [], []
        for s in shifts:
            moved = [Fix(f.err + s, f.cov, f.g) for f in ev0]
            nees = _nees(moved, floor**2 + d**2)
            per_map.append(float(np.mean(nees <= CHI2_2DOF_95)))
            all_nees.append(nees)
        nees = np.concatenate(all_nees)
        radial = np.hypot(errs[None, :, 0] + shifts[:, None, 0], errs[None, :, 1] + shifts[:, None, 1])
        band = np.mean([(0.9 <= p <= 0.98) for p in per_map])
        rows.append(f"| {draws} maps misregistered by N(0, {d:g}²) per axis, declared {d:g} m (+ floor {floor:g} m) "
                    f"| {len(ev0)}/{total} per map | {100 * np.mean(nees <= CHI2_2DOF_95):.1f} % (per map: "
                    f"{100 * np.percentile(per_map, 5):.0f}-{100 * np.percentile(per_map, 95):.0f} %, 90-98 % on "
                    f"{100 * band:.0f} % of maps) | {np.mean(nees):.2f} | {np.median(radial):.2f} m "
                    f"| {100 * np.mean(radial <= 5.0):.1f} % |")
    return rows


def offset_check(ev: list[Fix], ev0: list[Fix], shift_en: tuple[float, float]) -> str:
    """How well "fix against the shifted map = fix against the unshifted map + shift" holds on these frames."""
    if not ev or not ev0:
        return ""
    a = np.median([f.err for f in ev], axis=0)
    b = np.median([f.err for f in ev0], axis=0) + np.asarray(shift_en, float)
    return (f"Offset check: median fix error against the shifted reference ({a[0]:+.2f}, {a[1]:+.2f}) m E/N; "
            f"against the unshifted one plus the shift ({b[0]:+.2f}, {b[1]:+.2f}) m.")


def bench_rows(results: Path, declared: list[float]) -> list[str]:
    """Rows per scene of a ``gleam bench run`` result: the full pipeline's published fixes, NEES with each
    declared registration accuracy instead of the run's ``ref_std_m`` (all frames of the run)."""
    res = json.loads((results / "bench.json").read_text())
    ran = float(res["config"].get("ref_std_m", 0.0))
    lines = []
    for name in res["scenes"]:
        path = next(results.glob(f"{name}*/frames_full_pipeline.jsonl"), None)
        if path is None:
            continue
        recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        fixes = []
        for r in recs:
            if not r.get("trusted"):
                continue
            de, dn, _ = LocalFrame(r["gt_lat"], r["gt_lon"]).to_enu(r["est_lat"], r["est_lon"])
            cov = np.asarray(r["cov_en"], float) - ran**2 * np.eye(2)  # what the run published, less its declaration
            fixes.append(Fix(np.array([float(de), float(dn)]), cov, math.nan))
        lines += [f"### {name}: full pipeline, {len(fixes)} fixes of {len(recs)} frames (the run declared "
                  f"{ran:g} m)", "", "| published covariance | fixes | inside the 95 % bound (goal 90-98 %) "
                  "| mean NEES (consistent: 2) | median error | within 5 m |", "|---|---|---|---|---|---|"]
        lines += [_row(f"declared {d:g} m", fixes, len(recs), d * d) for d in declared]
        lines.append("")
    return lines


def _hard_sets(a) -> list[tuple[str, object, object, dict]]:
    """(name, flight map, reference map, simulate kwargs) of the requested hard scenes."""
    from gleam_ros.core.maps import open_map
    from gleam_ros.core.sim.realism import HardSpec, HeightScene

    hard = HardSpec()
    sets = []
    if a.hard_map:
        m = open_map(a.hard_map)
        # the same other-source change without the misregistration (for --shift-draws), built on demand
        def unshifted(m=m):
            return HardSpec(shift_e_m=0.0, shift_n_m=0.0).reference_map(m, seed=0)

        sets.append((f"{m.name}_hard", m, hard.reference_map(m, seed=0),
                     {"unshifted": unshifted, "shift": (hard.shift_e_m, hard.shift_n_m)}))
    if a.hard_world is not None:
        from gleam_ros.core.sim.world import WorldConfig, make_world

        w = make_world(WorldConfig(seed=int(a.hard_world), size_m=a.world_size, gsd_m=0.3))
        scene = HeightScene.from_world(w, season="autumn", seed=int(a.hard_world) + 1000)
        sets.append((f"world{a.hard_world}_{a.world_size:g}m_hard", scene.geomap("world_autumn"), w.satellite_map(),
                     {"sim": {"scene": scene}}))
    return sets


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print (and optionally write) a markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", help="tile index directory (gleam index build)")
    ap.add_argument("--flight", help="simulated flight folder (gleam simulate)")
    ap.add_argument("--hard-map", help="real map for the hard set (other-source reference, oblique, sensor effects)")
    ap.add_argument("--hard-world", type=int, default=None, help="procedural world seed for the hard set (parallax)")
    ap.add_argument("--world-size", type=float, default=500.0, help="procedural world side, m (default 500)")
    ap.add_argument("--seeds", default="1,2", help="hard set: FIT,EVAL flight seeds (the model is fitted on FIT)")
    ap.add_argument("--frames", type=int, default=60, help="hard set: frames per flight")
    ap.add_argument("--work", default="results/bench_covariance", help="hard set: where the flights are rendered")
    ap.add_argument("--bench", help="a `gleam bench run` results folder: NEES of its full-pipeline fixes per --declared")
    ap.add_argument("--floors", default="0.5,0.25,0", help="comma-separated VerifyConfig.cov_floor_m values")
    ap.add_argument("--features", default="sift", help="VerifyConfig.features")
    ap.add_argument("--max-tilt", type=float, default=None,
                    help="VerifyConfig.max_tilt_deg (default: the verifier's; the hard set: 50)")
    ap.add_argument("--candidates", type=int, default=3, help="tiles nearest the true position verified per frame")
    ap.add_argument("--declared", default="",
                    help="real map: comma-separated registration accuracies (1-sigma per axis, m) declared for the "
                         "other-source reference, added to the verifier's 0.5 m floor as the localizer does")
    ap.add_argument("--shift-draws", type=int, default=0,
                    help="real map, with --declared: also this many maps misregistered by N(0, declared²) per axis")
    ap.add_argument("--out", help="also write the report to this markdown file")
    a = ap.parse_args(argv)
    try:
        floors = [float(x) for x in a.floors.split(",")]
        seeds = [int(x) for x in a.seeds.split(",")]
        declared = [float(x) for x in a.declared.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--floors / --seeds / --declared must be comma-separated numbers, got {a.floors!r} / {a.seeds!r} "
                 f"/ {a.declared!r}")
    if any(not (math.isfinite(d) and d >= 0) for d in declared) or a.shift_draws < 0:
        ap.error("--declared accuracies must be finite and >= 0, --shift-draws >= 0")
    hard = bool(a.hard_map or a.hard_world is not None)
    if a.bench:
        if not declared:
            ap.error("--bench needs --declared (e.g. 0,1.5)")
        report = "\n".join([f"Command: `python tools/bench_covariance.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
                            ""] + bench_rows(Path(a.bench), declared)) + "\n"
        print(report)
        if a.out:
            Path(a.out).write_text(report)
        return 0
    if not hard and not (a.index and a.flight):
        ap.error("give --index and --flight, or --hard-map / --hard-world, or --bench")
    if hard and len(seeds) != 2:
        ap.error("--seeds must be FIT,EVAL")
    tilt = a.max_tilt if a.max_tilt is not None else (50.0 if hard else VerifyConfig().max_tilt_deg)
    cfg = VerifyConfig(features=a.features, cov_floor_m=0.0, max_tilt_deg=tilt)
    cmd = "python tools/bench_covariance.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"Command: `{cmd}`  ",
             f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; per-frame verified fixes (no filter), "
             f"the {a.candidates} tiles nearest the truth per frame; features {a.features}, max tilt {tilt:g} deg", ""]
    head = ("| covariance | verified fixes | inside the 95 % bound (goal 90-98 %) | mean NEES (consistent: 2) "
            "| median error | within 5 m |\n|---|---|---|---|---|---|")
    if not hard:
        from gleam_ros.core.index import TileIndex

        flight = load_flight(a.flight)
        fixes = verify_flight(flight, _index_tiles(TileIndex.load(a.index)), cfg, a.candidates, "verify")
        lines += [head] + [_row(f"floor {f:g} m", fixes, len(flight), f * f) for f in floors]
    else:
        from gleam_ros.core.flight import FlightSpec
        from gleam_ros.core.sim.realism import simulate_hard_to_folder

        summary = {}
        for name, fmap, ref, kw in _hard_sets(a):
            sets = {}
            for seed in seeds:
                folder = Path(a.work) / f"{name}_seed{seed}"
                if not (folder / "camera.json").is_file():
                    spec = FlightSpec(frames=a.frames, seed=seed)
                    simulate_hard_to_folder(fmap, spec, folder, progress=True, **kw.get("sim", {}))
                flight = load_flight(folder)
                sets[seed] = (flight, verify_flight(flight, _map_tiles(ref), cfg, a.candidates, f"{name} seed {seed}"))
            (ff, fit), (ef, ev) = sets[seeds[0]], sets[seeds[1]]
            s0, k = fit_model(fit) if len(fit) >= 5 else (math.nan, math.nan)
            hard_meta = json.loads((ef.folder / "camera.json").read_text()).get("hard", {})
            lines += [f"### {name} (flight seed {seeds[1]}; model fitted on seed {seeds[0]})", "",
                      f"Hard settings: `{json.dumps(hard_meta)}`", "", head]
            lines += [_row(f"floor {f:g} m", ev, len(ef), f * f) for f in floors]
            if math.isfinite(s0):
                lines.append(_row(f"model s0={s0:.2f} m, k={k:.2f} (fit seed {seeds[0]}, in-sample)", fit, len(ff),
                                  model_var(fit, s0, k)))
                lines.append(_row(f"model s0={s0:.2f} m, k={k:.2f} (seed {seeds[1]}, out-of-sample)", ev, len(ef),
                                  model_var(ev, s0, k)))
            if declared and "unshifted" in kw:
                lines += declared_rows(ev, len(ef), declared)
                if a.shift_draws:
                    ev0 = verify_flight(ef, _map_tiles(kw["unshifted"]()), cfg, a.candidates,
                                        f"{name} seed {seeds[1]}, unshifted reference")
                    lines += shift_draw_rows(ev0, len(ef), declared, a.shift_draws)
                    lines += ["", offset_check(ev, ev0, kw["shift"])]
            lines.append("")
            summary[name] = {"s0": s0, "k": k}
        lines.append(f"Fitted error models: `{json.dumps(summary)}`")
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        Path(a.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
