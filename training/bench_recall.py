"""Retrieval per modality on held-out ground: the ImageNet encoder vs trained checkpoints, in the same run.

``python -m training.bench_recall --checkpoint runs/x/final [--map ../shared/data/turku_satellite]
[--world-seed 4242] [--queries 60] [--out docs/bench/gleam_c_recall.json] [--plot docs/bench/gleam_c_recall.png]``

Benchmark sets (generated once into ``--cache-dir`` with :mod:`training.simdata`; no training config uses them):

* ``world<seed>`` (default 4242, a seed no training config uses, the whole world held out): UAV frames over its
  other-season appearances (unknown heading, tilt, photometric change) and street-map crops, matched against
  its 100 m index tiles; ground photos and north-aligned panoramas from road poses (other seasons), matched
  against 50 m north-up crops on a 25 m grid;
* ``--map`` (optional, repeatable): simulated UAV frames over the held-out area of a real map (the
  ``--map-holdout`` side and fraction, by default the north 40 % that the training configs hold out of the
  same map), matched against its index tiles.

Rows (one per query modality and set): R@1, R@5, R@1 % and AP, ImageNet and every checkpoint side by side.
UAV queries are embedded as ``--n-rot`` yaw hypotheses (the localizer's unknown-yaw search). Training
throughput (pairs/s, median of the run's ``log.csv`` per phase) is read from the checkpoint's run folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from gleam_ros.core.errors import GleamError

from .datasets import RetrievalSet
from .evaluate import evaluate_sets, load_model
from .simdata import SIM_MODALITIES, SimSpec, ensure_generated, read_generated

__all__ = ["bench_sets", "compare", "main", "plot_bench", "recall_table", "run_bench", "training_throughput"]

#: Row kinds: what the ship gate looks at (``uav-real``: a real map's held-out area).
KINDS = ("uav-world", "uav-real", "ground", "panorama", "map")


def bench_sets(world_seeds: list[int], maps: list[str], queries: int = 60, cache_dir: str = "data/bench",
               world_size_m: float = 600.0, progress: bool = True, map_holdout: tuple[str, float] = ("north", 0.4),
               modalities: tuple[str, ...] = SIM_MODALITIES) -> tuple[list[RetrievalSet], dict[str, str]]:
    """The benchmark's retrieval sets (generated into ``cache_dir`` on first use) and the kind of each
    query -> satellite result key (``"<set>/<modality>->satellite"`` -> one of :data:`KINDS`)."""
    common = {"cache_dir": cache_dir, "train_centres": 0, "eval_queries": int(queries), "tile_size_m": 100.0,
              "eval_tile_gsd_m": 0.25, "eval_overlap": 0.5, "eval_min_valid": 0.9, "store_px": 256,
              "alt_range": [100.0, 150.0], "max_tilt_deg": 10.0, "eval_photometric": 1.0, "seed": 7}
    sets: list[RetrievalSet] = []
    kinds: dict[str, str] = {}
    for s in world_seeds:
        spec = SimSpec.from_dict({**common, "holdout_fraction": 1.0, "modalities": list(modalities),
                                  "maps": [{"world": {"seed": int(s), "size_m": float(world_size_m)}, "name": f"world{s}"}]})
        got = read_generated("bench", ensure_generated("bench", spec, progress=progress)).eval
        sets += got
        kinds.update({f"{g.name}/{g.query_modality}->satellite": "uav-world" if g.query_modality == "uav"
                      else g.query_modality for g in got})
    side, frac = map_holdout
    for m in maps:
        spec = SimSpec.from_dict({**common, "holdout_side": side, "holdout_fraction": float(frac), "modalities": ["uav"],
                                  "maps": [{"path": str(Path(m).resolve()), "name": Path(m).name}]})
        got = read_generated("bench", ensure_generated("bench", spec, progress=progress)).eval
        sets += got
        kinds.update({f"{g.name}/{g.query_modality}->satellite": "uav-real" for g in got})
    return sets, kinds


def _bench_one(ck: str, sets: list[RetrievalSet], device: str, n_rot: int, batch_size: int, progress: bool,
               store: str | None = None) -> dict:
    model, card = load_model(ck)
    t0 = time.perf_counter()
    res = evaluate_sets(model, card, sets, device=device, n_rot={"uav": n_rot}, batch_size=batch_size,
                        progress=progress, store=store)
    return {"name": card.name, "seconds": round(time.perf_counter() - t0, 1), "results": res}


def run_bench(checkpoints: list[str], sets: list[RetrievalSet], device: str = "cpu", n_rot: int = 8,
              batch_size: int = 32, progress: bool = True, jobs: int = 1, store: str | None = None) -> dict:
    """Metrics per model (``imagenet`` first) and set/direction, on the same sets in this one call.

    ``jobs`` > 1 embeds that many models at once in separate processes (same numbers; faster on a shared CPU).
    ``store``: embedding cache folder, per model fingerprint (an unchanged model's images are embedded once).
    """
    cks = ["imagenet", *[c for c in checkpoints if c != "imagenet"]]
    if jobs <= 1 or len(cks) == 1:
        return {ck: _bench_one(ck, sets, device, n_rot, batch_size, progress, store) for ck in cks}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(cks)), mp_context=mp.get_context("spawn")) as ex:
        futs = {ck: ex.submit(_bench_one, ck, sets, device, n_rot, batch_size, False, store) for ck in cks}
        return {ck: f.result() for ck, f in futs.items()}


def compare(results: dict, metric: str = "R@1") -> tuple[str, dict]:
    """Markdown table of ``metric`` per set/direction and model, and whether each checkpoint beats ImageNet.

    ``better_everywhere``: on every query -> satellite set both ``metric`` and AP are higher than ImageNet's.
    Returns ``(table, {checkpoint: {"better_everywhere", "mean_gain", "gains", "ap_gains"}})``.
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


_KIND_LABEL = {"uav-world": "UAV, held-out world", "uav-real": "UAV, real map (held-out area)", "ground": "ground",
               "panorama": "panorama", "map": "street map"}


def recall_table(results: dict, kinds: dict[str, str], checkpoint: str) -> str:
    """Markdown: one row per query -> satellite set, ImageNet / trained for R@1, R@5, R@1 % and AP (percent)."""
    base, tr = results["imagenet"]["results"], results[checkpoint]["results"]
    lines = ["| query set (kind) | queries / gallery | R@1 ImageNet | R@1 trained | ΔR@1 | R@5 I / T | R@1% I / T | "
             "AP I / T |", "|---|---|---|---|---|---|---|---|"]
    for key, kind in kinds.items():
        if key not in base or key not in tr:
            continue
        b, t = base[key], tr[key]

        def pair(metric: str, b: dict = b, t: dict = t) -> str:
            return f"{100 * b[metric]:.1f} / {100 * t[metric]:.1f}"

        lines.append(f"| {key} ({_KIND_LABEL.get(kind, kind)}) | {b['queries']} / {b['gallery']} | "
                     f"{100 * b['R@1']:.1f} | {100 * t['R@1']:.1f} | {100 * (t['R@1'] - b['R@1']):+.1f} | "
                     f"{pair('R@5')} | {pair('R@1%')} | {pair('AP')} |")
    return "\n".join(lines) + "\n"


def training_throughput(checkpoint: str | Path) -> dict[str, float]:
    """Median training pairs/s per phase from the ``log.csv`` of the run a checkpoint belongs to ({} if none)."""
    ck = Path(checkpoint)
    for d in (ck, *ck.parents[:2]):
        log = d / "log.csv"
        if log.is_file():
            per: dict[str, list[float]] = {}
            with log.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    per.setdefault(row["phase"], []).append(float(row["samples_per_s"]))
            return {p: round(statistics.median(v), 2) for p, v in per.items() if v}
    return {}


def plot_bench(results: dict, kinds: dict[str, str], checkpoint: str, path: str | Path, title: str = "") -> Path:
    """Bar plot of R@1 per query set, ImageNet vs the checkpoint (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in kinds if k in results["imagenet"]["results"] and k in results[checkpoint]["results"]]
    labels = [_KIND_LABEL.get(kinds[k], kinds[k]) for k in keys]
    b = [100 * results["imagenet"]["results"][k]["R@1"] for k in keys]
    t = [100 * results[checkpoint]["results"][k]["R@1"] for k in keys]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2, 4))
    ax.bar(x - 0.2, b, 0.4, label=results["imagenet"]["name"])
    ax.bar(x + 0.2, t, 0.4, label=results[checkpoint]["name"])
    for xi, (vb, vt) in enumerate(zip(b, t)):
        ax.text(xi - 0.2, vb + 1, f"{vb:.0f}", ha="center", fontsize=8)
        ax.text(xi + 0.2, vt + 1, f"{vt:.0f}", ha="center", fontsize=8)
    ax.set_xticks(x, labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("R@1 (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title or "query -> satellite R@1, held-out ground")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m training.bench_recall``."""
    ap = argparse.ArgumentParser(prog="python -m training.bench_recall", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", default=[], help="fine-tuned checkpoint directory (repeatable)")
    ap.add_argument("--map", action="append", default=[], help="real map, evaluation only (repeatable)")
    ap.add_argument("--map-holdout", default="north:0.4", help="held-out area of the real maps: side:fraction")
    ap.add_argument("--world-seed", type=int, action="append", default=None,
                    help="held-out procedural world seed (repeatable; default 4242)")
    ap.add_argument("--world-size", type=float, default=600.0, help="side of the held-out world, metres")
    ap.add_argument("--queries", type=int, default=60, help="queries per set")
    ap.add_argument("--n-rot", type=int, default=8, help="yaw hypotheses per UAV query")
    ap.add_argument("--cache-dir", default="data/bench")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1, help="models embedded at once (separate processes)")
    ap.add_argument("--emb-cache", default=None, help="embedding cache folder (default <cache-dir>/emb; 'none': off)")
    ap.add_argument("--out", default=None, help="write JSON results here (and a .md table next to it)")
    ap.add_argument("--plot", default=None, help="write the R@1 bar plot (PNG) here")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.threads:
            torch.set_num_threads(a.threads)
        side, _, frac = a.map_holdout.partition(":")
        sets, kinds = bench_sets(a.world_seed or [4242], a.map, a.queries, a.cache_dir, a.world_size,
                                 progress=not a.no_progress, map_holdout=(side, float(frac or 0.4)))
        store = None if a.emb_cache == "none" else (a.emb_cache or str(Path(a.cache_dir) / "emb"))
        results = run_bench(a.checkpoint, sets, a.device, a.n_rot, progress=not a.no_progress, jobs=a.jobs, store=store)
    except (GleamError, ValueError) as exc:
        print(f"bench_recall: error: {exc}", file=sys.stderr)
        return 2
    table, verdict = compare(results)
    rows = "".join(recall_table(results, kinds, c) for c in a.checkpoint if c != "imagenet")
    tput = {c: training_throughput(c) for c in a.checkpoint}
    print(rows or table)
    print(json.dumps({"training_pairs_per_s": tput}, indent=2))
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"args": vars(a), "kinds": kinds, "results": results, "verdict": verdict,
                                   "training_pairs_per_s": tput}, indent=2) + "\n")
        out.with_suffix(".md").write_text((rows or table) + "\n" + table)
    if a.plot and a.checkpoint:
        plot_bench(results, kinds, a.checkpoint[0], a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
