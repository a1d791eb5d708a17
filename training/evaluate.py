"""Retrieval evaluation of an encoder: R@1, R@5, R@10, R@1%, AP per data set, modality and direction.

``python -m training.evaluate --config <yaml> --checkpoint <dir | imagenet> [--datasets a b] [--out m.json]``

Embeddings go through :class:`gleam_ros.core.encoder.TorchBackend` (the deployment path and the one
preprocessing). A modality with ``n_rot > 1`` (``eval.n_rot`` in the config, default 8 for ``uav``) is
embedded as ``n_rot`` yaw hypotheses with :func:`gleam_ros.core.encoder.embed_rotations`, and the
similarity of two images is the best over their hypotheses, as the localizer's unknown-yaw search
does. Each set is evaluated query -> gallery and, unless it has explicit sets for both directions
(University-1652), gallery -> query on the same embeddings. Metrics: :mod:`training.metrics`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gleam_ros.core.encoder import GleamEncoder, ModelCard, TorchBackend, build_encoder, embed_rotations, load_checkpoint
from gleam_ros.core.errors import GleamError

from .config import load_config
from .datasets import RetrievalSet, build_source, read_rgb
from .metrics import retrieval_metrics

__all__ = ["EmbeddingCache", "evaluate_sets", "format_table", "load_model", "main", "set_similarity"]

_LOG = logging.getLogger(__name__)


class EmbeddingCache:
    """Embeddings of image files per (path, modality), ``(R, D)`` with R yaw hypotheses, for one backend."""

    def __init__(self, backend: TorchBackend, n_rot: dict[str, int] | None = None, batch_size: int = 32,
                 progress: bool = False, store: str | Path | None = None) -> None:
        self.backend = backend
        self.n_rot = dict(n_rot or {})
        self.batch_size = int(batch_size)
        self.progress = progress
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self.store = Path(store) / backend.fingerprint if store else None
        if self.store is not None:
            for f in sorted(self.store.glob("*.npz")):
                with np.load(f, allow_pickle=False) as z:
                    if int(z["n_rot"]) != self.rotations(str(z["modality"])):
                        continue
                    for p, e in zip(z["paths"].tolist(), z["emb"]):
                        self._cache[(p, str(z["modality"]))] = e

    def save(self) -> None:
        """Write the embeddings to ``<store>/<fingerprint>/<modality>.npz`` (read back by a later cache on the same
        store and model fingerprint; a file's embeddings depend only on the weights, the image and ``n_rot``)."""
        if self.store is None:
            return
        self.store.mkdir(parents=True, exist_ok=True)
        for mod in sorted({m for _, m in self._cache}):
            keys = [k for k in self._cache if k[1] == mod]
            tmp = self.store / f".{mod}.tmp.npz"
            np.savez(tmp, paths=np.array([k[0] for k in keys]), emb=np.stack([self._cache[k] for k in keys]),
                     modality=np.array(mod), n_rot=np.array(self.rotations(mod)))
            tmp.replace(self.store / f"{mod}.npz")

    def rotations(self, modality: str) -> int:
        """Yaw hypotheses used for ``modality`` (ground photos always 1)."""
        return 1 if modality == "ground" else int(self.n_rot.get(modality, 1))

    def get(self, paths: Sequence[str], modality: str, desc: str = "") -> np.ndarray:
        """``(N, R, D)`` float32 embeddings of ``paths`` (cached)."""
        todo = [p for p in dict.fromkeys(paths) if (p, modality) not in self._cache]
        nr = self.rotations(modality)
        bar = None
        if self.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"embed {desc or modality}", unit="img", leave=False)
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            imgs = [read_rgb(p) for p in chunk]
            if nr == 1:
                emb = self.backend.embed(imgs, modality, batch_size=self.batch_size)[:, None, :]
            else:
                emb = np.stack([embed_rotations(self.backend, im, modality, n_rot=nr) for im in imgs])
            for p, e in zip(chunk, emb):
                self._cache[(p, modality)] = e
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        if not paths:
            return np.zeros((0, nr, self.backend.dim), np.float32)
        return np.stack([self._cache[(p, modality)] for p in paths])


def set_similarity(qe: np.ndarray, ge: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``(Q, G)`` similarity: the best dot product over the yaw hypotheses of both sides."""
    q, rq, d = qe.shape
    g, rg, _ = ge.shape
    gm = ge.reshape(g * rg, d).T
    out = np.empty((q, g), np.float32)
    for s in range(0, q, chunk):
        blk = qe[s:s + chunk].reshape(-1, d) @ gm  # (c*rq, g*rg)
        out[s:s + chunk] = blk.reshape(-1, rq, g, rg).max(axis=(1, 3))
    return out


def _direction_metrics(cache: EmbeddingCache, s: RetrievalSet) -> dict:
    qe = cache.get(s.queries, s.query_modality, f"{s.name} queries")
    ge = cache.get(s.gallery, s.gallery_modality, f"{s.name} gallery")
    sim = set_similarity(qe, ge)
    m = retrieval_metrics(sim, s.positives, junk=s.junk, semi=s.semi)
    m["n_rot"] = [cache.rotations(s.query_modality), cache.rotations(s.gallery_modality)]
    return m


def evaluate_sets(model: GleamEncoder, card: ModelCard, sets: Sequence[RetrievalSet], device: str = "cpu",
                  n_rot: dict[str, int] | None = None, batch_size: int = 32, max_queries: int | None = None,
                  progress: bool = False, seed: int = 0, store: str | Path | None = None) -> dict[str, dict]:
    """Metrics of every set and direction, keyed ``"<set name>/<query modality>-><gallery modality>"``.

    The model is used in place through a :class:`TorchBackend` (left in eval mode). ``max_queries`` caps
    the queries of each direction (seeded subset). ``store``: a folder where embeddings are kept per model
    fingerprint and reused (see :class:`EmbeddingCache`).
    """
    backend = TorchBackend(model, card, device=device)
    cache = EmbeddingCache(backend, n_rot, batch_size, progress, store)
    out: dict[str, dict] = {}
    for s in sets:
        dirs = [s, s.reversed()] if s.reverse else [s]
        for d in dirs:
            d = d.subset(max_queries, seed)
            if not d.queries:
                continue
            key = f"{d.name}/{d.query_modality}->{d.gallery_modality}"
            t0 = time.perf_counter()
            with torch.inference_mode():
                out[key] = _direction_metrics(cache, d)
            out[key]["seconds"] = round(time.perf_counter() - t0, 2)
        cache.save()
    return out


def format_table(results: dict[str, dict], title: str = "") -> str:
    """Markdown table of :func:`evaluate_sets` results (percentages)."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| set / direction | R@1 | R@5 | R@10 | R@1% | AP | queries | gallery |", "|---|---|---|---|---|---|---|---|"]
    for k, m in results.items():
        lines.append(f"| {k} | {100 * m['R@1']:.1f} | {100 * m['R@5']:.1f} | {100 * m['R@10']:.1f} | "
                     f"{100 * m['R@1%']:.1f} | {100 * m['AP']:.1f} | {m['queries']} | {m['gallery']} |")
    return "\n".join(lines) + "\n"


def load_model(checkpoint: str) -> tuple[GleamEncoder, ModelCard]:
    """A checkpoint directory, or ``imagenet`` for the default ImageNet EfficientNet-Lite0 encoder."""
    if checkpoint == "imagenet":
        model = build_encoder(pretrained=True)
        return model, model.card
    return load_checkpoint(checkpoint)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.evaluate``."""
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="training config whose datasets define the test sets")
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory, or 'imagenet'")
    ap.add_argument("--datasets", nargs="*", default=None, help="dataset names (default: eval.datasets or all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key.path=value")
    ap.add_argument("--out", default=None, help="write metrics JSON here")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if a.threads:
            torch.set_num_threads(a.threads)
        cfg = load_config(a.config, a.overrides)
        names = a.datasets or cfg.eval.datasets or list(cfg.datasets)
        sets = []
        for n in names:
            if n not in cfg.datasets:
                raise GleamError(f"--datasets: {n!r} not in the config (defined: {sorted(cfg.datasets)})")
            sets += build_source(n, cfg.datasets[n]).eval
        if not sets:
            raise GleamError(f"datasets {names} define no evaluation sets")
        model, card = load_model(a.checkpoint)
        res = evaluate_sets(model, card, sets, device=a.device, n_rot=cfg.eval.n_rot, batch_size=cfg.eval.batch_size,
                            max_queries=a.max_queries or cfg.eval.max_queries, progress=not a.no_progress)
    except GleamError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(res, title=f"{card.name} ({a.checkpoint})"))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"checkpoint": a.checkpoint, "card": card.to_dict(), "results": res},
                                          indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
