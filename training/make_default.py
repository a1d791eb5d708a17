"""The default GLEAM-C checkpoint: fine-tune EfficientNet-Lite0 on the project's own data, benchmark, ship if better.

``python -m training.make_default --config config/train/default_lite0.yaml --map /work/shared/data/turku_satellite
[--ship models/gleam-c-lite0-sim]``

1. trains the config (procedural worlds: simulated UAV views and street-map rasters vs satellite tiles;
   phase 1 UAV only, phase 2 UAV + street map) in this process on CPU (or resumes it; for several GPUs run
   ``torchrun ... -m training.gleam_c`` first and pass ``--skip-train``);
2. runs :mod:`training.bench_recall`: the ImageNet-only encoder vs the fine-tuned one on a held-out
   procedural world and on simulated UAV frames over ``--map`` (evaluation only), same run;
3. writes ``<out_dir>/bench.json``, ``bench.md`` and ``decision.json``; with ``--ship DIR`` copies the
   checkpoint there only when it beats ImageNet on R@1 and AP of every query -> satellite set.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import torch

from gleam_ros.core.encoder import load_checkpoint
from gleam_ros.core.errors import GleamError

from .bench_recall import bench_sets, compare, run_bench
from .config import load_config
from .evaluate import format_table
from .gleam_c import run_training

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m training.make_default``."""
    ap = argparse.ArgumentParser(prog="python -m training.make_default", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/train/default_lite0.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key.path=value")
    ap.add_argument("--out", default=None, help="override out_dir")
    ap.add_argument("--map", action="append", default=[], help="real map for the benchmark (evaluation only)")
    ap.add_argument("--world-seed", type=int, action="append", default=None, help="held-out world seed (default 4242)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--bench-cache", default="data/bench")
    ap.add_argument("--skip-train", action="store_true", help="benchmark <out_dir>/final as it is")
    ap.add_argument("--ship", default=None, help="copy the checkpoint here if it beats ImageNet (R@1 and AP) everywhere")
    ap.add_argument("--force", action="store_true", help="allow --ship to replace an existing checkpoint")
    ap.add_argument("--device", default="cpu", help="device of the benchmark")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if a.threads:
            torch.set_num_threads(a.threads)
        cfg = load_config(a.config, a.overrides + ([f"out_dir={a.out}"] if a.out else []))
        out = Path(cfg.out_dir)
        if not a.skip_train:
            res = run_training(cfg)
            if res["status"] != "done":
                print(f"make_default: training stopped early ({res}); run the same command again to resume")
                return 1
        final = out / "final"
        load_checkpoint(final)  # fails clearly if there is nothing to benchmark
        sets = bench_sets(a.world_seed or [4242], a.map, a.queries, a.bench_cache)
        results = run_bench([str(final)], sets, a.device)
    except GleamError as exc:
        print(f"make_default: error: {exc}", file=sys.stderr)
        return 2
    table, verdict = compare(results)
    v = verdict[str(final)]
    decision = {"checkpoint": str(final), "better_than_imagenet_everywhere": v["better_everywhere"],
                "mean_r1_gain": v["mean_gain"], "r1_gains": v["gains"], "ap_gains": v["ap_gains"], "shipped_to": None}
    if a.ship:
        dst = Path(a.ship)
        if not v["better_everywhere"]:
            decision["ship_refused"] = "not better than the ImageNet encoder on every benchmark set"
        elif dst.exists() and any(dst.iterdir()) and not a.force:
            decision["ship_refused"] = f"{dst} exists (use --force to replace it)"
        else:
            dst.mkdir(parents=True, exist_ok=True)
            for f in ("model.safetensors", "model.json"):
                shutil.copy2(final / f, dst / f)
            (dst / "bench.md").write_text(table, encoding="utf-8")
            load_checkpoint(dst)
            decision["shipped_to"] = str(dst)
    (out / "bench.json").write_text(json.dumps({"results": results, "verdict": verdict}, indent=2) + "\n")
    (out / "bench.md").write_text(table + "\n" + "".join(format_table(r["results"], f"{r['name']} ({m})") + "\n"
                                                        for m, r in results.items()))
    (out / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    print(table)
    print(json.dumps(decision, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
