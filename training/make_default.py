"""The default GLEAM-C checkpoint: train, benchmark against ImageNet in one run, ship only through the gate.

``python -m training.make_default --config config/train/gleam_c4_lite0_short.yaml
--map ../shared/data/turku_satellite [--ship models/gleam-c] [--skip-train]``

1. trains the config (or resumes it; for several GPUs run ``torchrun ... -m training.gleam_c`` first and pass
   ``--skip-train``);
2. runs :mod:`training.bench_recall`: the ImageNet encoder and the trained one on the same held-out data (a
   procedural world no config trains on: UAV, ground, panorama and street-map queries; simulated UAV frames
   over the held-out area of each ``--map``);
3. the **gate** (:func:`gate`): the checkpoint passes only if its R@1 is *higher* than ImageNet's on every
   ground and every panorama set and *not lower* on every real-map UAV set (and each kind was measured);
4. writes ``<out_dir>/bench.json``, ``bench.md``, ``decision.json`` (every check with both numbers, the
   reasons) and, with ``--ship DIR`` and a passed gate, copies the checkpoint there (``model.safetensors`` +
   ``model.json`` with its fingerprint, ``card.md``, ``decision.json``, ``bench.md``). ``models/gleam-c`` is
   where :func:`gleam_ros.core.encoder.load_default` (CLI, nodes, ONNX export) looks. Nothing ships otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

from gleam_ros.core.encoder import CHECKPOINT_JSON, CHECKPOINT_WEIGHTS, fingerprint, load_checkpoint
from gleam_ros.core.errors import GleamError

from .bench_recall import bench_sets, compare, recall_table, run_bench, training_throughput
from .config import load_config
from .evaluate import format_table
from .gleam_c import run_training

__all__ = ["GATE_RULES", "gate", "main", "ship"]

#: The gate: per set kind, the rule on R@1 against ImageNet (``better``: strictly higher; ``not_worse``: >=).
GATE_RULES = {"ground": "better", "panorama": "better", "uav-real": "not_worse"}


def gate(results: dict, kinds: dict[str, str], checkpoint: str, metric: str = "R@1") -> dict:
    """Decide whether ``checkpoint`` may ship: every set of a kind in :data:`GATE_RULES` must satisfy its rule.

    ``results``: :func:`training.bench_recall.run_bench` output (``imagenet`` and ``checkpoint``); ``kinds``:
    result key -> kind. Returns ``{"passed", "checks": [{set, kind, rule, imagenet, trained, ok}], "reasons"}``;
    a kind of :data:`GATE_RULES` with no set at all fails (the gate never passes on missing evidence).
    """
    base, tr = results["imagenet"]["results"], results[checkpoint]["results"]
    checks, reasons = [], []
    for kind, rule in GATE_RULES.items():
        keys = [k for k, v in kinds.items() if v == kind and k in base and k in tr]
        if not keys:
            reasons.append(f"no {kind} set was benchmarked")
            continue
        for k in keys:
            b, t = float(base[k][metric]), float(tr[k][metric])
            ok = t > b if rule == "better" else t >= b
            checks.append({"set": k, "kind": kind, "rule": f"{metric} {'>' if rule == 'better' else '>='} ImageNet",
                           "imagenet": b, "trained": t, "ok": ok})
            if not ok:
                reasons.append(f"{k}: {metric} {100 * t:.1f} % vs ImageNet {100 * b:.1f} % "
                               f"({'must be higher' if rule == 'better' else 'must not be lower'})")
    passed = not reasons
    if passed:
        reasons.append("higher R@1 than ImageNet on every ground and panorama set, not lower on every real-map UAV set")
    return {"passed": passed, "checks": checks, "reasons": reasons}


def _card_md(card_json: dict, fp: str, table: str, decision: dict) -> str:
    tr = card_json.get("training") or {}
    return "\n".join([
        f"# {card_json.get('name')} (GLEAM-C default encoder)", "",
        f"* fingerprint: `{fp}` (architecture, preprocessing and weights; recorded in model.json, checked on load)",
        f"* backbone: `{card_json.get('backbone')}`, input {card_json.get('input_size')} px, "
        f"embedding {card_json.get('embed_dim') or 'backbone features'}",
        f"* initial weights: {card_json.get('pretrained')}",
        f"* trained on: {', '.join(tr.get('modalities') or [])} queries vs satellite; phases {tr.get('phases')}; "
        f"config {tr.get('config')}",
        f"* shipped by `python -m training.make_default` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        + "; ".join(decision["gate"]["reasons"]),
        "", "## Benchmark (same run, held-out data)", "", table,
    ]) + "\n"


def ship(final: Path, dst: Path, table: str, decision: dict, force: bool = False) -> Path:
    """Copy a gated checkpoint into ``dst`` (weights, card with fingerprint, card.md, decision.json, bench.md).

    Refuses (:class:`GleamError`) when the gate did not pass or ``dst`` holds files and ``force`` is off. The
    copy is written next to ``dst`` and renamed into place, then loaded back (fingerprint checked).
    """
    if not decision.get("gate", {}).get("passed"):
        raise GleamError(f"{final}: the gate did not pass; nothing ships")
    if dst.exists() and any(dst.iterdir()) and not force:
        raise GleamError(f"{dst} exists (use --force to replace it)")
    model, card = load_checkpoint(final)
    fp = fingerprint(model, card)
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in (CHECKPOINT_WEIGHTS, CHECKPOINT_JSON):
        shutil.copy2(final / f, tmp / f)
    card_json = json.loads((tmp / CHECKPOINT_JSON).read_text(encoding="utf-8"))
    (tmp / "card.md").write_text(_card_md(card_json, fp, table, decision), encoding="utf-8")
    (tmp / "bench.md").write_text(table, encoding="utf-8")
    (tmp / "decision.json").write_text(json.dumps({**decision, "shipped_to": str(dst)}, indent=2) + "\n",
                                       encoding="utf-8")
    load_checkpoint(tmp)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    """``python -m training.make_default``."""
    ap = argparse.ArgumentParser(prog="python -m training.make_default", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/train/gleam_c4_lite0_short.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key.path=value")
    ap.add_argument("--out", default=None, help="override out_dir")
    ap.add_argument("--map", action="append", default=[], help="real map for the benchmark (its held-out area)")
    ap.add_argument("--map-holdout", default="north:0.4", help="held-out area of the real maps: side:fraction")
    ap.add_argument("--world-seed", type=int, action="append", default=None, help="held-out world seed (default 4242)")
    ap.add_argument("--queries", type=int, default=60, help="queries per benchmark set")
    ap.add_argument("--world-size", type=float, default=600.0, help="side of the held-out benchmark world, metres")
    ap.add_argument("--bench-cache", default="data/bench")
    ap.add_argument("--skip-train", action="store_true", help="benchmark <out_dir>/final as it is")
    ap.add_argument("--ship", default=None, help="copy the checkpoint here if it passes the gate (e.g. models/gleam-c)")
    ap.add_argument("--force", action="store_true", help="allow --ship to replace an existing checkpoint")
    ap.add_argument("--device", default="cpu", help="device of the benchmark")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1, help="models the benchmark embeds at once (separate processes)")
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
        model, card = load_checkpoint(final)  # fails clearly if there is nothing to benchmark
        fp = fingerprint(model, card)
        del model
        side, _, frac = a.map_holdout.partition(":")
        sets, kinds = bench_sets(a.world_seed or [4242], a.map, a.queries, a.bench_cache, a.world_size,
                                 map_holdout=(side, float(frac or 0.4)))
        results = run_bench([str(final)], sets, a.device, jobs=a.jobs, store=str(Path(a.bench_cache) / "emb"))
    except (GleamError, ValueError) as exc:
        print(f"make_default: error: {exc}", file=sys.stderr)
        return 2
    ck = str(final)
    table, verdict = compare(results)
    rows = recall_table(results, kinds, ck)
    decision = {"checkpoint": ck, "fingerprint": fp, "gate": gate(results, kinds, ck),
                "training_pairs_per_s": training_throughput(final), "shipped_to": None}
    if a.ship:
        try:
            decision["shipped_to"] = str(ship(final, Path(a.ship), rows, decision, a.force))
        except GleamError as exc:
            decision["ship_refused"] = str(exc)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"kinds": kinds, "results": results, "verdict": verdict}, indent=2) + "\n")
    (out / "bench.md").write_text(rows + "\n" + table + "\n" + "".join(
        format_table(r["results"], f"{r['name']} ({m})") + "\n" for m, r in results.items()))
    (out / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    print(rows)
    print(json.dumps(decision, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
