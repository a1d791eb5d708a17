"""GLEAM-C metrics and sampling: recall / AP against hand-computed values, the loss, epoch plans (modality
balance, unique places, hard negatives, determinism), the learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gleam_ros.core.errors import ConfigError, InputError
from training.evaluate import set_similarity
from training.gleam_c import WarmupCosine
from training.losses import SymmetricInfoNCE
from training.metrics import average_precision, one_percent_k, retrieval_metrics
from training.sampling import EpochPlanner, neighbour_table

SIM = np.array([
    [0.9, 0.8, 0.1, 0.3, 0.2],  # positive 1 at rank 1
    [0.1, 0.2, 0.7, 0.6, 0.5],  # positives 2 and 4 at ranks 0 and 2
    [0.5, 0.4, 0.3, 0.2, 0.1],  # positive 4; gallery 0 is junk -> rank 3 of 4
    [0.5, 0.4, 0.3, 0.2, 0.1],  # no positive: not counted
])
POS = [[1], [2, 4], [4], []]
JUNK = [[], [], [0], []]


def test_recall_and_ap_by_hand():
    m = retrieval_metrics(SIM, POS, junk=JUNK, ks=(1, 2, 5))
    # AP (University-1652 trapezoid): q0: (0 + 1/2) / 2 = 0.25;  q1: (1 + 1) / 4 + (1/2 + 2/3) / 4 = 0.791667;
    # q2: (0 + 1/4) / 2 = 0.125
    assert m["AP"] == pytest.approx((0.25 + (0.5 + (0.5 + 2 / 3) / 4) + 0.125) / 3)
    assert m["R@1"] == pytest.approx(1 / 3) and m["R@2"] == pytest.approx(2 / 3) and m["R@5"] == 1.0
    assert m["R@1%"] == m["R@1"]  # gallery of 5: the top 1%, at least one item
    assert m["queries"] == 3 and m["gallery"] == 5
    assert average_precision([0, 2], 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    assert average_precision([0, 1, 2]) == 1.0
    # without the junk entry q2's positive falls to rank 4
    assert retrieval_metrics(SIM[2:3], [[4]])["AP"] == pytest.approx((0 + 1 / 5) / 2)


def test_semi_positive_hit_rate_and_one_percent():
    m = retrieval_metrics(SIM[:3], POS[:3], semi=[[0], [], []])
    assert m["hit_rate"] == pytest.approx(2 / 3)  # q0: top 1 is a semi-positive; q1: positive; q2: neither
    assert m["R@1"] == pytest.approx(1 / 3)  # semi-positives do not count for recall
    assert one_percent_k(5) == 1 and one_percent_k(200) == 2 and one_percent_k(1000) == 10
    g = 200
    sim = np.zeros((2, g))
    sim[:, :5] = [5, 4, 3, 2, 1]
    m = retrieval_metrics(sim, [[1], [2]])  # ranks 1 and 2; top 1% of 200 = top 2
    assert m["R@1%"] == 0.5 and m["R@1"] == 0.0 and m["R@5"] == 1.0
    with pytest.raises(InputError):
        retrieval_metrics(SIM, POS[:2])
    with pytest.raises(InputError):
        retrieval_metrics(SIM[:1], [[7]])


def test_similarity_is_the_best_over_yaw_hypotheses():
    q = np.array([[[1, 0], [0, 1]]], np.float32)  # one query, two hypotheses
    g = np.array([[[0, 1]], [[0.6, 0.8]]], np.float32)
    assert set_similarity(q, g).tolist() == [[1.0, pytest.approx(0.8)]]


def test_symmetric_infonce_matches_the_formula():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(6, 8), dim=1)
    r = F.normalize(torch.randn(6, 8), dim=1)
    loss_fn = SymmetricInfoNCE()
    assert loss_fn.scale == pytest.approx(1 / 0.07, rel=1e-5)
    logits = q @ r.t() / 0.07
    t = torch.arange(6)
    want = 0.5 * (F.cross_entropy(logits, t, label_smoothing=0.1) + F.cross_entropy(logits.t(), t, label_smoothing=0.1))

    def val(*a):
        return float(loss_fn(*a).detach())

    assert val(q, r) == pytest.approx(float(want), rel=1e-5)
    assert val(q, r, torch.arange(6)) == pytest.approx(float(want), rel=1e-5)  # unique labels: same
    # a repeated place: both of its references are targets (soft, uniform over the positives)
    lab = torch.tensor([0, 0, 1, 2, 3, 4])
    same = (lab[:, None] == lab[None]).float()
    tgt = same / same.sum(1, keepdim=True)
    want = 0.5 * (F.cross_entropy(logits, tgt, label_smoothing=0.1) + F.cross_entropy(logits.t(), tgt, label_smoothing=0.1))
    assert val(q, r, lab) == pytest.approx(float(want), rel=1e-5)
    loss_fn(q, r).backward()
    assert loss_fn.logit_scale.grad is not None
    assert val(q, q) < val(q, r)


def test_balanced_pool_and_unique_places():
    mods = ["uav"] * 30 + ["map"] * 10
    labels = np.arange(40) // 2  # pairs (0,1), (2,3) ... share a place
    p = EpochPlanner(mods, labels, batch=8, seed=3, samples_per_epoch=40, neighbours=0)
    pool = p.draw_pool(0)
    assert (np.isin(pool, np.arange(30)).sum(), np.isin(pool, np.arange(30, 40)).sum()) == (20, 20)
    assert set(np.bincount(pool[pool >= 30] - 30, minlength=10).tolist()) == {2}  # every map pair exactly twice
    assert len(np.unique(pool[pool < 30])) == 20  # uav subsampled without repeats
    plan = p.plan(0)
    assert plan.batches.shape == (5, 8) and plan.seeds.shape == (5, 8)
    for b in plan.batches:
        assert len(set(labels[b].tolist())) == 8
    again = p.plan(0)
    assert np.array_equal(plan.batches, again.batches) and np.array_equal(plan.seeds, again.seeds)
    assert not np.array_equal(p.plan(1).batches, plan.batches)
    r0, s0 = plan.rank_slice(0, 2)
    r1, _ = plan.rank_slice(1, 2)
    assert np.array_equal(np.concatenate([r0, r1], 1), plan.batches) and r0.shape == (5, 4) and s0.shape == (5, 4)
    with pytest.raises(ConfigError, match="distinct places"):
        EpochPlanner(mods, np.zeros(40, int), batch=8, seed=0)


def test_hard_negatives_fill_batches_with_neighbours():
    n = 64
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n // 4, 16))  # 16 clusters of 4 similar places
    emb = centres[np.arange(n) // 4] + 0.05 * rng.normal(size=(n, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.arange(n)
    table = neighbour_table(emb, emb, labels, k=6)
    assert table.shape == (n, 6) and not (table == np.arange(n)[:, None]).any()
    assert (table[:, :3] // 4 == (np.arange(n) // 4)[:, None]).all()  # nearest 3 are the cluster mates
    p = EpochPlanner(["uav"] * n, labels, batch=16, seed=1, neighbours=4, pool=6)

    def mates(plan):
        cl = plan.batches // 4
        return np.mean([16 - len(np.unique(c)) for c in cl])

    assert mates(p.plan(0, table)) > 6 > mates(p.plan(0, None))


def test_warmup_cosine():
    s = WarmupCosine(1.0, total=10, warmup=2, min_ratio=0.1)
    lrs = [s.lr_at(t) for t in range(10)]
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    s.step_count = 4
    t = WarmupCosine(0.0, 1, 0)
    t.load_state_dict(s.state_dict())
    assert t.lr_at(4) == s.lr_at(4) and t.step_count == 4
