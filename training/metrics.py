"""Retrieval metrics: Recall@K, Recall@1% and average precision, University-1652 protocol.

For every query the gallery is ranked by descending similarity (ties keep gallery order). Gallery
items listed as *junk* for a query are removed from its ranking before anything is counted (as
``compute_mAP`` of the University-1652 baseline does). Then, with ``ngood`` positives at 0-based
ranks ``r_1 < r_2 < ...``:

* ``R@K``: 1 when ``r_1 < K`` (the first positive is among the top K);
* ``R@1%``: ``R@K`` with ``K = max(1, round(0.01 * G))``, ``G`` the gallery size (Sample4Geo uses
  ``round(0.01 * G)`` and so reports 0 for galleries under 50 items; we keep at least the top 1);
* ``AP``: trapezoidal average precision of the University-1652 code,
  ``sum_i (1 / ngood) * (p_{i-1} + p_i) / 2`` with ``p_i = i / (r_i + 1)`` (1-based ``i``) and
  ``p_0 = 1`` when ``r_1 = 0`` else ``p_{i-1} = (i - 1) / r_i``.

Queries without any positive are skipped (the baseline marks them ``cmc[0] = -1``). VIGOR's
*semi-positives* stay in the ranking as negatives (its R@K counts the positive only); when they are
given, ``hit_rate`` is the share of queries whose top 1 is a positive or a semi-positive.
All metrics are fractions in [0, 1], averaged over the counted queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gleam_ros.core.errors import InputError

__all__ = ["average_precision", "one_percent_k", "retrieval_metrics"]


def one_percent_k(gallery_size: int) -> int:
    """The K of Recall@1%: ``max(1, round(0.01 * gallery_size))``."""
    return max(1, int(round(0.01 * int(gallery_size))))


def average_precision(good_ranks: np.ndarray, ngood: int | None = None) -> float:
    """Trapezoidal AP of the University-1652 baseline from the sorted 0-based ranks of the positives."""
    ranks = np.sort(np.asarray(good_ranks, dtype=np.int64))
    n = len(ranks) if ngood is None else int(ngood)
    if n == 0 or len(ranks) == 0:
        return 0.0
    ap = 0.0
    for i, r in enumerate(ranks):
        precision = (i + 1) / (r + 1)
        old_precision = i / r if r != 0 else 1.0
        ap += (old_precision + precision) / 2.0 / n
    return float(ap)


def _as_index_lists(x: Sequence | None, q: int, name: str) -> list[np.ndarray] | None:
    if x is None:
        return None
    if len(x) != q:
        raise InputError(f"{name}: expected one entry per query ({q}), got {len(x)}")
    return [np.asarray(v, dtype=np.int64).reshape(-1) for v in x]


def retrieval_metrics(
    sim: np.ndarray,
    positives: Sequence,
    junk: Sequence | None = None,
    semi: Sequence | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K, Recall@1%, AP (and ``hit_rate`` with ``semi``) of a ``(Q, G)`` similarity matrix.

    ``positives[i]`` / ``junk[i]`` / ``semi[i]``: gallery indices of query ``i``. Returns
    ``{"R@1": ..., "R@5": ..., "R@10": ..., "R@1%": ..., "AP": ..., "queries": n, "gallery": G}``
    (``queries`` = queries with at least one positive, the ones averaged over).
    """
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2:
        raise InputError(f"similarity matrix must be 2-D (queries x gallery), got shape {s.shape}")
    q, g = s.shape
    pos = _as_index_lists(positives, q, "positives")
    jk = _as_index_lists(junk, q, "junk")
    sm = _as_index_lists(semi, q, "semi")
    ks = [int(k) for k in ks]
    k1p = one_percent_k(g)
    hits = np.zeros(len(ks) + 1)
    ap_sum = 0.0
    hit_rate = 0.0
    counted = 0
    for i in range(q):
        good = pos[i]
        if good.size == 0:
            continue
        if g and (good.min() < 0 or good.max() >= g):
            raise InputError(f"positives[{i}] has gallery indices outside [0, {g})")
        order = np.argsort(-s[i], kind="stable")
        if jk is not None and jk[i].size:
            order = order[~np.isin(order, jk[i])]
        rows = np.flatnonzero(np.isin(order, good))
        counted += 1
        if rows.size == 0:  # every positive was junk
            continue
        first = int(rows[0])
        for j, k in enumerate(ks):
            hits[j] += first < k
        hits[-1] += first < k1p
        ap_sum += average_precision(rows, ngood=len(np.unique(good)))
        if sm is not None:
            hit_rate += bool(order.size) and (order[0] in set(good.tolist()) | set(sm[i].tolist()))
    n = max(counted, 1)
    out = {f"R@{k}": float(hits[j] / n) for j, k in enumerate(ks)}
    out["R@1%"] = float(hits[-1] / n)
    out["AP"] = float(ap_sum / n)
    if sm is not None:
        out["hit_rate"] = float(hit_rate / n)
    out["queries"] = counted
    out["gallery"] = g
    return out
