"""Fit the evidence backend's verdict model on simulated pairs over procedural worlds.

Never on the benchmark map: the model is fitted on :mod:`gleam_ros.core.sim.world` worlds (several
seeds; queries rendered from the same season with a photometric change and from another season)
with hard negatives (:mod:`.pairs`), and evaluated elsewhere (``python -m training.gleam_x.bench``).

    python -m training.gleam_x.calibration --worlds 21,22,23,24,25 --size 600 --queries 60 \\
        --out models/explainer/verdict.json --rows /tmp/gleamx_calibration_rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from typing import Any, Iterable

import numpy as np

from gleam_ros.core.explain.calibrate import VerdictModel, fit_verdict_model
from gleam_ros.core.explain.evidence import EvidenceExplainer

from .pairs import Pair, PairSimulator, PairSpec, summarize

LOG = logging.getLogger(__name__)


def measure_pairs(pairs: Iterable[Pair], explainer: EvidenceExplainer, progress: bool = False) -> list[dict[str, Any]]:
    """Measure every pair: one row per pair with ``features``, ``items`` (raw item values), ``label``, ``kind``."""
    rows = []
    t0 = time.perf_counter()
    for i, p in enumerate(pairs):
        m = explainer.measure(p.query, p.reference, p.context)
        rows.append({"features": m.features(), "items": m.item_values(), "label": p.label, "kind": p.kind,
                     "modality": p.context.modality,
                     "query_id": p.query_id, "tile_id": p.tile.tile_id, "rank": p.rank, "inliers": m.inliers,
                     "aligned": m.aligned})
        if progress and (i + 1) % 20 == 0:
            print(f"  measured {i + 1} pairs ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return rows


def world_rows(seed: int, size_m: float, spec: PairSpec, backend, explainer: EvidenceExplainer,
               progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of one procedural world: half the queries from the same season, half from another season."""
    from gleam_ros.core.maps import map_from_array
    from gleam_ros.core.sim.world import WorldConfig, make_world

    world = make_world(WorldConfig(seed=seed, size_m=size_m, gsd_m=0.3))
    ref = world.satellite_map()
    sim = PairSimulator(ref, backend, spec)
    season = ("autumn", "spring", "winter", "summer")[seed % 4]
    other = map_from_array(world.variant(season=season, seed=seed + 1000), world.crs, world.transform,
                           name=f"world{seed}_{season}")
    n1 = spec.n_queries // 2
    pairs = list(sim.pairs(n_queries=n1, seed=seed * 10 + 1))
    pairs += list(sim.pairs(query_map=other, n_queries=spec.n_queries - n1, seed=seed * 10 + 2))
    info = {"seed": seed, "size_m": size_m, "tiles": len(sim.tiles), "season_variant": season, **summarize(pairs)}
    return measure_pairs(pairs, explainer, progress), info


def fit_rows(rows: list[dict[str, Any]], cost_false_match: float = 9.0, min_precision: float = 0.995,
             meta: dict[str, Any] | None = None) -> VerdictModel:
    """Fit a :class:`VerdictModel` on measured rows."""
    return fit_verdict_model([r["features"] for r in rows], [r["label"] for r in rows], [r["items"] for r in rows],
                             cost_false_match=cost_false_match, min_precision=min_precision, meta=meta,
                             modalities=sorted({r.get("modality", "uav") for r in rows}))


def main(argv: list[str] | None = None) -> int:
    """Command line: simulate, measure, fit, save."""
    ap = argparse.ArgumentParser(prog="python -m training.gleam_x.calibration", description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="21,22,23,24,25", help="comma-separated procedural world seeds")
    ap.add_argument("--size", type=float, default=600.0, help="world side, metres")
    ap.add_argument("--queries", type=int, default=60, help="queries per world")
    ap.add_argument("--alt-min", type=float, default=70.0, help="lowest query altitude, m")
    ap.add_argument("--alt-max", type=float, default=150.0, help="highest query altitude, m")
    ap.add_argument("--max-tilt", type=float, default=12.0, help="largest query pitch / roll, deg")
    ap.add_argument("--photometric", type=float, default=1.3, help="strength of the photometric change")
    ap.add_argument("--cost", type=float, default=9.0, help="cost of a false match relative to a missed match")
    ap.add_argument("--min-precision", type=float, default=0.995, help="held-out precision the threshold must reach")
    ap.add_argument("--out", default="models/explainer/verdict.json")
    ap.add_argument("--rows", default=None, help="also write the measured rows (JSONL)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import cv2
    import torch

    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    from gleam_ros.core.encoder import TorchBackend

    backend = TorchBackend(threads=a.threads)
    explainer = EvidenceExplainer(model=None, backend=None)
    spec = PairSpec(n_queries=a.queries, alt_range=(a.alt_min, a.alt_max), max_tilt_deg=a.max_tilt,
                    photometric=a.photometric)
    rows, worlds = [], []
    t0 = time.perf_counter()
    for seed in (int(s) for s in a.worlds.split(",") if s.strip()):
        r, info = world_rows(seed, a.size, spec, backend, explainer, progress=True)
        rows += r
        worlds.append(info)
        print(f"world {seed}: {info} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    meta = {"worlds": worlds, "pair_spec": {k: (list(v) if isinstance(v, tuple) else v)
                                            for k, v in spec.__dict__.items()},
            "encoder": f"{backend.card.name} ({backend.fingerprint})", "command": " ".join(sys.argv)}
    model = fit_rows(rows, a.cost, a.min_precision, meta)
    path = model.save(a.out)
    if a.rows:
        with open(a.rows, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, default=lambda o: None if isinstance(o, float) and math.isnan(o) else o) + "\n")
    print(json.dumps({"model": str(path), "threshold": model.threshold, "neutral": model.neutral,
                      "heldout": model.meta.get("heldout_scores")}, indent=1))
    print(f"labels: {int(np.sum([r['label'] for r in rows]))} positives of {len(rows)} pairs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
