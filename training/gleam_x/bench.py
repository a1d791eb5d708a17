"""GLEAM-X benchmark: simulated UAV pairs over a real map, positives and hard negatives, every metric.

    python -m training.gleam_x.bench --map /work/shared/data/turku_satellite --queries 120 --out /tmp/gleamx_bench

Queries are UAV frames rendered over ``--map`` at random poses (80-130 m, tilt up to 8 deg, random
yaw, photometric change); references are the map's 100 m tiles (0.25 m/px). Per query: the positive
tile and two hard negatives, the wrong tile nearest in embedding space and the wrong tile nearest on
the ground (:mod:`.pairs`). The context gives what the localizer would: embedding similarity and the
next-best similarity, a barometric altitude prior (3 m noise) and a compass heading prior (5 deg
noise), the camera intrinsics and the tile.

Reported (``metrics.json``, ``metrics.md``): verdict accuracy / precision / recall / no-match bias
overall and per pair kind, faithfulness in English and Chinese (recomputed by parsing the text back),
seconds per pair, retrieval statistics, and an English and a Chinese example with evidence images.
With ``--mllm-dir`` the MLLM backend runs on the first ``--mllm-pairs`` pairs too (Sentence-BERT
similarity to the evidence backend's text, its no-match bias, faithfulness of its sentences).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gleam_ros.core.explain.evidence import EvidenceExplainer
from gleam_ros.core.explain.text import faithfulness

from .evaluate import evaluate_explanations, verdict_metrics
from .pairs import KINDS, PairSimulator, PairSpec


def _json_safe(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def run(map_path: str, out_dir: str, n_queries: int = 120, seed: int = 0, model: str | None = None,
        languages: tuple[str, ...] = ("en", "zh"), mllm_dir: str | None = None, mllm_pairs: int = 12,
        threads: int = 1, progress: bool = True, spec: PairSpec | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the metrics (also written to ``out_dir``). ``spec`` overrides the pair
    simulation (its ``n_queries`` and ``seed`` are replaced by the arguments)."""
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    from gleam_ros.core.encoder import TorchBackend
    from gleam_ros.core.maps import open_map

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    geomap = open_map(map_path)
    backend = TorchBackend(threads=threads)
    spec = replace(spec or PairSpec(), n_queries=n_queries, seed=seed)
    sim = PairSimulator(geomap, backend, spec)
    explainer = EvidenceExplainer(model=model)
    rows: list[dict[str, Any]] = []
    exps: dict[str, list] = {lang: [] for lang in languages}
    labels: list[int] = []
    pairs_kept = []
    t_measure = []
    examples: dict[str, Any] = {}
    for i, pair in enumerate(sim.pairs()):
        t0 = time.perf_counter()
        m = explainer.measure(pair.query, pair.reference, pair.context)
        per_lang = {}
        for lang in languages:
            draw = pair.kind not in examples
            e = explainer.explain_measurements(m, lang, pair.context, pair.query if draw else None,
                                               pair.reference if draw else None)
            per_lang[lang] = e
            exps[lang].append(e)
        t_measure.append(time.perf_counter() - t0)
        e0 = per_lang[languages[0]]
        labels.append(pair.label)
        if mllm_dir and len(pairs_kept) < mllm_pairs:
            pairs_kept.append(pair)
        rows.append({"query_id": pair.query_id, "kind": pair.kind, "label": pair.label, "verdict": e0.verdict,
                     "p_match": e0.p_match, "rank": pair.rank, "tile_id": pair.tile.tile_id, "inliers": m.inliers,
                     "aligned": m.aligned, "similarity": m.similarity, "flags": e0.flags})
        if pair.kind not in examples:
            ex = {"tile_id": pair.tile.tile_id, "query_id": pair.query_id, "label": pair.label}
            for lang, e in per_lang.items():
                ex[lang] = e.text
                if e.evidence_image is not None:
                    p = out / f"evidence_{pair.kind}_{lang}.png"
                    cv2.imwrite(str(p), cv2.cvtColor(e.evidence_image, cv2.COLOR_RGB2BGR))
                    ex[f"image_{lang}"] = str(p)
            examples[pair.kind] = ex
        if progress and (i + 1) % 30 == 0:
            print(f"  {i + 1} pairs, {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)

    metrics: dict[str, Any] = {"map": str(map_path), "seed": seed, "pair_spec": asdict(spec), "pairs": summarize_rows(rows),
                               "retrieval": summarize_sim(sim, rows), "verdict_model": explainer.model.source,
                               "threshold": explainer.model.threshold}
    preds = [r["verdict"] for r in rows]
    metrics["verdict"] = verdict_metrics(preds, labels)
    metrics["by_kind"] = {k: verdict_metrics([r["verdict"] for r in rows if r["kind"] == k],
                                             [r["label"] for r in rows if r["kind"] == k])
                          for k in KINDS if any(r["kind"] == k for r in rows)}
    for lang in languages:
        ev = evaluate_explanations(exps[lang], labels)
        # recomputed independently of the explainer's own claim: parse each sentence back to an item
        recomputed = [faithfulness(e.text, e.evidence, lang) for e in exps[lang]]
        metrics[f"faithfulness_{lang}"] = {**ev["faithfulness"], "recomputed_mean": float(np.nanmean(recomputed))}
        metrics[f"confidence_{lang}"] = ev.get("confidence")
        metrics["flags"] = ev["flags"]
    p = np.array([r["p_match"] for r in rows])
    y = np.array(labels)
    metrics["threshold_sweep"] = [
        {"threshold": t, **{k: v for k, v in verdict_metrics((p >= t).astype(int), y).items()
                            if k in ("accuracy", "precision", "recall", "fp")}}
        for t in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)]
    metrics["seconds_per_pair"] = float(np.mean(t_measure)) if t_measure else math.nan
    metrics["examples"] = examples
    if mllm_dir:
        metrics["mllm"] = _mllm(mllm_dir, pairs_kept, explainer, languages[0])
    metrics["seconds_total"] = time.perf_counter() - t_start
    metrics = _json_safe(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(_json_safe(r)) + "\n")
    (out / "metrics.md").write_text(table(metrics), encoding="utf-8")
    return metrics


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pair counts per kind."""
    return {"total": len(rows), **{k: sum(r["kind"] == k for r in rows) for k in KINDS},
            "queries": len({r["query_id"] for r in rows})}


def summarize_sim(sim: PairSimulator, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Tile count and where retrieval ranked the positive tile."""
    ranks = [r["rank"] for r in rows if r["kind"] == "positive"]
    return {"tiles": len(sim.tiles), "positive_top1": float(np.mean([x == 1 for x in ranks])) if ranks else None,
            "positive_median_rank": float(np.median(ranks)) if ranks else None,
            "hard_embedding_median_rank": float(np.median([r["rank"] for r in rows if r["kind"] == "hard_embedding"]
                                                          or [math.nan]))}


def _mllm(mllm_dir: str, pairs: list, explainer: EvidenceExplainer, lang: str) -> dict[str, Any]:
    from gleam_ros.core.explain.mllm import MLLMExplainer

    mx = MLLMExplainer(mllm_dir, checker=explainer, max_new_tokens=200)
    exps, refs, labels = [], [], []
    for p in pairs:
        exps.append(mx.explain(p.query, p.reference, p.context, lang))
        refs.append(explainer.explain(p.query, p.reference, p.context, lang).text)
        labels.append(p.label)
    return evaluate_explanations(exps, labels, references=refs)


def table(m: dict[str, Any]) -> str:
    """Markdown summary of the metrics."""
    v = m["verdict"]
    lines = ["| metric | value |", "|---|---|",
             f"| pairs (positive / hard_embedding / hard_spatial) | {m['pairs']['total']} "
             f"({m['pairs']['positive']} / {m['pairs']['hard_embedding']} / {m['pairs']['hard_spatial']}) |",
             f"| verdict accuracy | {v['accuracy']:.4f} |", f"| precision | {_f(v['precision'])} |",
             f"| recall | {_f(v['recall'])} |", f"| false matches / missed matches | {v['fp']} / {v['fn']} |",
             f"| no-match bias | {v['no_match_bias']:+.4f} |"]
    for k, kv in m["by_kind"].items():
        lines.append(f"| accuracy on {k} | {kv['accuracy']:.4f} ({kv['n']}) |")
    for lang in ("en", "zh"):
        if f"faithfulness_{lang}" in m:
            lines.append(f"| faithfulness {lang} (mean / recomputed) | {_f(m[f'faithfulness_{lang}']['mean'])} / "
                         f"{_f(m[f'faithfulness_{lang}']['recomputed_mean'])} |")
    lines.append(f"| decision threshold | {m['threshold']:.3f} |")
    lines.append(f"| seconds per pair (measure + explain) | {m['seconds_per_pair']:.2f} |")
    r = m["retrieval"]
    lines.append(f"| tiles; positive at retrieval rank 1 | {r['tiles']}; {_f(r['positive_top1'])} |")
    return "\n".join(lines) + "\n"


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4f}"


def main(argv: list[str] | None = None) -> int:
    """Command line of the benchmark."""
    ap = argparse.ArgumentParser(prog="python -m training.gleam_x.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True, help="reference map (any format gleam reads)")
    ap.add_argument("--out", required=True, help="results folder")
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="verdict model JSON (default: the shipped one)")
    ap.add_argument("--languages", default="en,zh")
    ap.add_argument("--mllm-dir", default=None, help="also evaluate the MLLM backend from this local directory")
    ap.add_argument("--mllm-pairs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alt-min", type=float, default=80.0, help="lowest query altitude, m (default 80)")
    ap.add_argument("--alt-max", type=float, default=130.0, help="highest query altitude, m (default 130)")
    ap.add_argument("--max-tilt", type=float, default=8.0, help="largest pitch / roll, deg (default 8)")
    ap.add_argument("--photometric", type=float, default=1.0, help="photometric change strength (default 1)")
    ap.add_argument("--no-priors", action="store_true", help="give no altitude / heading priors")
    a = ap.parse_args(argv)
    spec = PairSpec(alt_range=(a.alt_min, a.alt_max), max_tilt_deg=a.max_tilt, photometric=a.photometric,
                    priors=not a.no_priors)
    m = run(a.map, a.out, a.queries, a.seed, a.model, tuple(a.languages.split(",")), a.mllm_dir, a.mllm_pairs, a.threads,
            spec=spec)
    print(table(m))
    print(f"results: {a.out}/metrics.json, metrics.md, pairs.jsonl, evidence_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
