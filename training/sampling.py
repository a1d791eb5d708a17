"""Epoch plans: modality-balanced resampling and dynamic similarity sampling (hard negatives).

An epoch plan is a ``(n_batches, B)`` array of pair indices (``B`` = global contrastive batch: per-rank
batch x world size) plus one augmentation seed per slot. Every rank holds the same plan and takes its
columns ``[rank * b, (rank + 1) * b)``, so a 2-process run sees exactly the global batches of a
1-process run. A plan is a pure function of (seed, epoch, pool, neighbour table), and it is saved in
the training state, so a resumed run continues the same epoch exactly.

* **Modality balance**: each epoch draws the same number of pairs from every query modality present
  (``samples_per_epoch / n_modalities``): a modality with fewer pairs is repeated (whole shuffled
  passes, then a partial one), one with more is subsampled (a fresh subset every epoch).
* **Unique places**: no two pairs of a batch share a label (they would be each other's false negatives).
* **Dynamic similarity sampling** (Sample4Geo): with a neighbour table (for each pair, the other pairs
  whose reference is most similar to its query under the current weights, recomputed every epoch),
  a batch is grown from a random seed pair plus ``neighbours`` of its neighbours (half the nearest,
  half random among the ``pool`` nearest), so each batch holds hard negatives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gleam_ros.core.errors import ConfigError

__all__ = ["EpochPlan", "EpochPlanner", "neighbour_table"]


@dataclass
class EpochPlan:
    """Global batches of one epoch: ``batches`` and ``seeds`` are ``(n_batches, B)`` int64."""

    batches: np.ndarray
    seeds: np.ndarray

    def rank_slice(self, rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's columns of every batch."""
        b = self.batches.shape[1] // world
        return self.batches[:, rank * b:(rank + 1) * b], self.seeds[:, rank * b:(rank + 1) * b]


def neighbour_table(q: np.ndarray, r: np.ndarray, labels: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """For each row ``i``: indices of the ``k`` rows ``j`` with the highest ``q[i] . r[j]`` among other labels.

    ``q``, ``r``: ``(U, D)`` query / reference embeddings of U pairs; ``labels`` ``(U,)``. Returns ``(U, k')``
    int64, ``k' = min(k, U - 1)``, nearest first (rows with fewer candidates are padded with -1).
    """
    q = np.asarray(q, dtype=np.float32)
    r = np.asarray(r, dtype=np.float32)
    labels = np.asarray(labels)
    u = q.shape[0]
    k = max(0, min(int(k), u - 1))
    out = np.full((u, k), -1, dtype=np.int64)
    if k == 0:
        return out
    for s in range(0, u, chunk):
        sim = q[s:s + chunk] @ r.T
        sim[labels[s:s + chunk, None] == labels[None, :]] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sim, part, 1)
        order = np.argsort(-vals, axis=1, kind="stable")
        top = np.take_along_axis(part, order, 1)
        top[np.take_along_axis(vals, order, 1) == -np.inf] = -1
        out[s:s + chunk] = top
    return out


class EpochPlanner:
    """Builds :class:`EpochPlan` s for one phase.

    Args:
        modalities: query modality of every pair.
        labels: integer place label of every pair.
        batch: global contrastive batch size B.
        seed: seed of the phase (the plan of epoch e depends only on it, e and the neighbour table).
        samples_per_epoch: pairs drawn per epoch (default: number of pairs); ``n_batches = samples // B``.
        balance: resample modalities to equal shares.
        neighbours, pool: dynamic similarity sampling (see module doc).
    """

    def __init__(self, modalities: Sequence[str], labels: np.ndarray, batch: int, seed: int,
                 samples_per_epoch: int | None = None, balance: bool = True, neighbours: int = 4, pool: int = 16) -> None:
        self.modalities = np.asarray(list(modalities))
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.modalities) != len(self.labels):
            raise ValueError("one modality and one label per pair")
        self.batch = int(batch)
        self.seed = int(seed)
        self.samples = int(samples_per_epoch or len(self.labels))
        self.balance = bool(balance)
        self.neighbours = int(neighbours)
        self.pool = max(int(pool), self.neighbours)
        n_labels = len(np.unique(self.labels))
        if n_labels < self.batch:
            raise ConfigError(f"a global batch of {self.batch} pairs needs at least {self.batch} distinct places, "
                              f"the phase's data has {n_labels}: lower batch_size or add data")
        if self.samples < self.batch:
            raise ConfigError(f"samples_per_epoch ({self.samples}) is smaller than the global batch ({self.batch})")

    @property
    def n_batches(self) -> int:
        """Global batches per epoch."""
        return self.samples // self.batch

    def draw_pool(self, epoch: int) -> np.ndarray:
        """The pair indices of epoch ``epoch`` (length ``samples_per_epoch``, modality-balanced if enabled)."""
        rng = np.random.default_rng([self.seed, int(epoch), 1])
        n = len(self.labels)
        if not self.balance:
            reps = [rng.permutation(n) for _ in range(-(-self.samples // n))]
            return np.concatenate(reps)[: self.samples]
        mods = sorted(set(self.modalities.tolist()))
        share = [self.samples // len(mods) + (1 if i < self.samples % len(mods) else 0) for i in range(len(mods))]
        parts = []
        for m, want in zip(mods, share):
            idx = np.flatnonzero(self.modalities == m)
            passes = [idx[rng.permutation(len(idx))] for _ in range(-(-want // len(idx)))]
            parts.append(np.concatenate(passes)[:want])
        return np.concatenate(parts)

    def _near(self, table: np.ndarray | None, i: int, rng: np.random.Generator) -> np.ndarray:
        if table is None or self.neighbours == 0:
            return np.zeros(0, dtype=np.int64)
        row = table[i]
        row = row[row >= 0][: self.pool]
        half = self.neighbours // 2
        always = row[:half]
        rest = row[half:]
        rand = rest[rng.permutation(len(rest))][: self.neighbours - half]
        return np.concatenate([always, rand])

    def plan(self, epoch: int, table: np.ndarray | None = None, pool: np.ndarray | None = None) -> EpochPlan:
        """The plan of ``epoch``; ``table``: neighbour table over ALL pairs (``(N, k)``, -1 = none) or None."""
        pool = self.draw_pool(epoch) if pool is None else np.asarray(pool, dtype=np.int64)
        rng = np.random.default_rng([self.seed, int(epoch), 2])
        b = self.batch
        left: dict[int, int] = {}
        for i in pool.tolist():
            left[i] = left.get(i, 0) + 1
        order = deque(pool[rng.permutation(len(pool))].tolist())
        batches: list[list[int]] = []
        n_labels_total = len(np.unique(self.labels))
        def add(i: int, cur: list[int], labs: set[int]) -> bool:
            lab = int(self.labels[i])
            if left.get(i, 0) <= 0 or lab in labs:
                return False
            cur.append(i)
            labs.add(lab)
            left[i] -= 1
            return True

        while len(batches) < self.n_batches:
            cur: list[int] = []
            labs: set[int] = set()
            skipped: list[int] = []
            while order and len(cur) < b:
                i = order.popleft()
                if left.get(i, 0) <= 0:
                    continue
                if not add(i, cur, labs):
                    skipped.append(i)
                    continue
                for j in self._near(table, i, rng).tolist():
                    if len(cur) >= b:
                        break
                    add(int(j), cur, labs)
            order.extendleft(reversed(skipped))
            if len(cur) < b:  # the epoch's pool ran dry: top up with random pairs of unused places
                for i in rng.permutation(len(self.labels)).tolist():
                    if len(cur) >= b:
                        break
                    if int(self.labels[i]) not in labs:
                        cur.append(i)
                        labs.add(int(self.labels[i]))
            if len(cur) < b:  # pragma: no cover - excluded by the distinct-label check in __init__
                raise ConfigError(f"cannot fill a batch of {b} with distinct places ({n_labels_total} available)")
            batches.append(cur)
        arr = np.asarray(batches, dtype=np.int64).reshape(self.n_batches, b)
        seeds = np.random.default_rng([self.seed, int(epoch), 3]).integers(0, 2**62, size=arr.shape, dtype=np.int64)
        return EpochPlan(arr, seeds)
