"""Tile retrieval on held-out ground: the ImageNet-only encoder vs fine-tuned checkpoints, in the same run.

``python -m training.bench_recall --checkpoint runs/x/final [--map /work/shared/data/turku_satellite]
[--world-seed 4242] [--queries 100] [--out bench.json]``

Benchmark sets (generated once into ``--cache-dir`` with :mod:`training.simdata`, the whole map held out):

* ``world<seed>``: a procedural world whose seed no training config uses; UAV frames rendered over its
  other-season appearances (unknown heading, tilt, photometric change) and street-map crops, matched
  against the index tiles of its satellite render;
* ``--map`` (optional, repeatable): simulated UAV frames over a real map (evaluation only), matched against
  its index tiles.

Tiles are cut as ``gleam index build`` does (100 m, 50 % overlap, 0.25 m/px); a query's positives are the
tiles containing its ground centre. UAV queries are embedded as ``--n-rot`` yaw hypotheses (the localizer's
unknown-yaw search); R@1, R@5, R@10, R@1%, AP both ways (query -> tile and tile -> query).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gleam_ros.core.errors import GleamError

from .datasets import RetrievalSet
from .evaluate import evaluate_sets, format_table, load_model
from .simdata import SimSpec, ensure_generated, read_generated

__all__ = ["bench_sets", "compare", "main", "run_bench"]


def bench_sets(world_seeds: list[int], maps: list[str], queries: int = 100, cache_dir: str = "data/bench",
               world_size_m: float = 800.0, progress: bool = True) -> list[RetrievalSet]:
    """The benchmark's retrieval sets (generated into ``cache_dir`` on first use)."""
    common = {"cache_dir": cache_dir, "train_centres": 0, "eval_queries": int(queries), "holdout_fraction": 1.0,
              "tile_size_m": 100.0, "eval_tile_gsd_m": 0.25, "eval_overlap": 0.5, "eval_min_valid": 0.9, "store_px": 256,
              "alt_range": [100.0, 150.0], "max_tilt_deg": 10.0, "eval_photometric": 1.0, "seed": 7}
    sets: list[RetrievalSet] = []
    for s in world_seeds:
        spec = SimSpec.from_dict({**common, "maps": [{"world": {"seed": int(s), "size_m": float(world_size_m)},
                                                      "name": f"world{s}"}], "modalities": ["uav", "map"]})
        sets += read_generated("bench", ensure_generated("bench", spec, progress=progress)).eval
    for m in maps:
        spec = SimSpec.from_dict({**common, "maps": [{"path": str(Path(m).resolve()), "name": Path(m).name}],
                                  "modalities": ["uav"]})
        sets += read_generated("bench", ensure_generated("bench", spec, progress=progress)).eval
    return sets


def run_bench(checkpoints: list[str], sets: list[RetrievalSet], device: str = "cpu", n_rot: int = 8,
              batch_size: int = 32, progress: bool = True) -> dict:
    """Metrics per model (``imagenet`` first) and set/direction."""
    out: dict[str, dict] = {}
    for ck in ["imagenet", *[c for c in checkpoints if c != "imagenet"]]:
        model, card = load_model(ck)
        t0 = time.perf_counter()
        res = evaluate_sets(model, card, sets, device=device, n_rot={"uav": n_rot}, batch_size=batch_size,
                            progress=progress)
        out[ck] = {"name": card.name, "seconds": round(time.perf_counter() - t0, 1), "results": res}
        del model
    return out


def compare(results: dict, metric: str = "R@1") -> tuple[str, dict]:
    """Markdown table of ``metric`` per set/direction and model, and whether each checkpoint beats ImageNet.

    ``better_everywhere``: on every query -> satellite set both ``metric`` and AP are higher than ImageNet's
    (R@1 alone moves by a query or two on 100-query sets; AP uses every positive's rank). Returns
    ``(table, {checkpoint: {"better_everywhere", "mean_gain", "gains", "ap_gains"}})``.
    """
    models = list(results)
    keys = list(results[models[0]]["results"])
    lines = [f"| set / direction ({metric}, %) | " + " | ".join(results[m]["name"] for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{100 * results[m]['results'][k][metric]:.1f}" for m in models) + " |")
    verdict = {}
    base = results[models[0]]["results"]
    fwd = [k for k in keys if k.endswith("->satellite")]
    for m in models[1:]:
        gains = [results[m]["results"][k][metric] - base[k][metric] for k in fwd]
        ap = [results[m]["results"][k]["AP"] - base[k]["AP"] for k in fwd]
        verdict[m] = {"better_everywhere": bool(gains) and all(g > 0 for g in gains) and all(g > 0 for g in ap),
                      "mean_gain": float(sum(gains) / max(len(gains), 1)), "gains": dict(zip(fwd, gains)),
                      "ap_gains": dict(zip(fwd, ap))}
    return "\n".join(lines) + "\n", verdict


def main(argv: list[str] | None = None) -> int:
    """``python -m training.bench_recall``."""
    ap = argparse.ArgumentParser(prog="python -m training.bench_recall", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", default=[], help="fine-tuned checkpoint directory (repeatable)")
    ap.add_argument("--map", action="append", default=[], help="real map, evaluation only (repeatable)")
    ap.add_argument("--world-seed", type=int, action="append", default=None,
                    help="held-out procedural world seed (repeatable; default 4242)")
    ap.add_argument("--world-size", type=float, default=800.0, help="side of the held-out world, metres")
    ap.add_argument("--queries", type=int, default=100, help="queries per set")
    ap.add_argument("--n-rot", type=int, default=8, help="yaw hypotheses per UAV query")
    ap.add_argument("--cache-dir", default="data/bench")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write JSON results here (and a .md table next to it)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.threads:
            torch.set_num_threads(a.threads)
        sets = bench_sets(a.world_seed or [4242], a.map, a.queries, a.cache_dir, a.world_size, progress=not a.no_progress)
        results = run_bench(a.checkpoint, sets, a.device, a.n_rot, progress=not a.no_progress)
    except GleamError as exc:
        print(f"bench_recall: error: {exc}", file=sys.stderr)
        return 2
    table, verdict = compare(results)
    full = "".join(format_table(r["results"], f"{r['name']} ({m})") + "\n" for m, r in results.items())
    print(table)
    print(json.dumps(verdict, indent=2))
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"args": vars(a), "results": results, "verdict": verdict}, indent=2) + "\n")
        out.with_suffix(".md").write_text(table + "\n" + full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
