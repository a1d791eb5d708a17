"""Tiny synthetic cross-view data for tests, smoke runs and the throughput benchmark.

:func:`write_pairs_folder` writes a ``pairs_folder`` data set (see :mod:`training.datasets`) of random,
smooth "places": the reference is a textured tile, the query the same tile seen differently (shifted,
recoloured, noisy), so a small network can learn the pairing in a few steps.
:func:`tiny_config` returns a matching training configuration mapping.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["place_image", "tiny_config", "write_pairs_folder"]


def place_image(seed: int, size: int = 48) -> np.ndarray:
    """A smooth random RGB texture (uint8, ``size`` square) standing for one place seen from above."""
    rng = np.random.default_rng([int(seed), 99])
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (3, 3), 0)


def _query_view(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = ref.shape[:2]
    dx, dy = (int(v) for v in rng.integers(-w // 10, w // 10 + 1, 2))
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    q = cv2.warpAffine(ref, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    gain = rng.uniform(0.8, 1.2, 3)
    q = np.clip(q.astype(np.float32) * gain + rng.normal(0, 6, q.shape), 0, 255).astype(np.uint8)
    return q


def write_pairs_folder(root: str | Path, n_train: int = 16, n_test: int = 8, size: int = 48, seed: int = 0,
                       query_dir: str = "map") -> Path:
    """Write ``root/{train,test}/{<query_dir>,satellite}/<stem>.png`` for ``n_train`` / ``n_test`` places."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    k = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for _ in range(n):
            ref = place_image(seed * 100003 + k, size)
            q = _query_view(ref, rng)
            for sub, img in ((query_dir, q), ("satellite", ref)):
                p = root / split / sub / f"p{k:04d}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(p), np.ascontiguousarray(img[:, :, ::-1]))
            k += 1
    return root


def tiny_config(out_dir: str | Path, data: dict[str, dict], phases: list[dict], backbone: str = "test_efficientnet",
                input_size: int = 32, **runtime) -> dict:
    """A small CPU configuration mapping: random-init ``backbone`` at ``input_size`` px, no progress bars, 1 thread."""
    rt = {"device": "cpu", "threads": 1, "progress": False, "num_workers": 0}
    rt.update(runtime)
    return {
        "out_dir": str(out_dir),
        "seed": 0,
        "model": {"backbone": backbone, "pretrained": False, "input_size": input_size, "name": "tiny"},
        "datasets": data,
        "phases": phases,
        "runtime": rt,
    }
