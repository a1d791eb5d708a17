"""GLEAM-X verdict model: numpy logistic regression, sign constraints, precision-first threshold, model files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gleam_ros.core.errors import ConfigError, ModelError
from gleam_ros.core.explain import calibrate as C


def _synthetic(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    p = C.sigmoid(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5)
    y = (rng.random(n) < p).astype(int)
    return x, y


def test_fit_logistic_recovers_weights():
    x, y = _synthetic(4000)
    coef, icpt = C.fit_logistic(x, y, l2=1e-6)
    assert coef == pytest.approx([2.0, -1.0], abs=0.2) and icpt == pytest.approx(0.5, abs=0.15)
    with pytest.raises(ConfigError):
        C.fit_logistic(np.array([[np.nan]]), np.array([1]))


def test_sigmoid_is_stable():
    assert C.sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist() == [0.0, 0.5, 1.0]
    assert C.sigmoid(0.0) == 0.5


def test_sign_constraints_drop_wrong_way_weights():
    rng = np.random.default_rng(1)
    n = 500
    inl = rng.normal(size=n)
    y = (inl + 0.3 * rng.normal(size=n) > 0).astype(int)
    lc = 0.8 * y + rng.normal(scale=0.5, size=n)  # confounded: more land-cover difference on positives
    v = C.LogisticVariant.fit(np.c_[inl, lc], y, ["log_inliers", "lc_vegetation"])
    assert v.coef[0] > 0 and v.coef[1] == 0.0
    free = C.LogisticVariant.fit(np.c_[inl, lc], y, ["log_inliers", "lc_vegetation"], signs={})
    assert free.coef[1] > 0  # what an unconstrained fit would have told a reviewer


def test_precision_threshold_and_neutral_point():
    p = np.array([0.95, 0.93, 0.92, 0.97, 0.5, 0.1])
    y = np.array([1, 0, 1, 1, 0, 0])
    t = C.precision_threshold(p, y, cost_false_match=9.0, min_precision=0.99)
    assert 0.93 < t <= 0.95  # 0.9 would let the false match at 0.93 through
    assert C.precision_threshold(np.array([0.2, 0.3]), np.array([0, 1]), 3.0, 0.99) == 0.75
    v = np.r_[np.linspace(0, 1, 50), np.linspace(2, 3, 50)]
    lab = np.r_[np.zeros(50), np.ones(50)]
    t0, d = C.neutral_point(v, lab, (9.0, 1.0))
    assert 1.0 < t0 < 2.0 and d == 1.0
    assert C.neutral_point(np.ones(10), lab[:10], (9.0, 1.0)) == (9.0, 1.0)


def _rows(n=300, seed=2):
    rng = np.random.default_rng(seed)
    feats, ys, items = [], [], []
    for i in range(n):
        y = int(i % 3 == 0)
        inl = rng.integers(40, 400) if y else rng.integers(0, 9)
        f = {k: 0.0 for k in C.FEATURES}
        f.update(similarity=0.7 + 0.1 * y + 0.05 * rng.normal(), margin=0.05 * y - 0.05 + 0.03 * rng.normal(),
                 log_inliers=math.log1p(inl), inlier_ratio=(0.6 if y else 0.1) + 0.05 * rng.normal(),
                 spread=0.4 * y + 0.05, rms=1.0 if y else 8.0, plausible=float(y or rng.random() < 0.3),
                 log_aniso=0.05 if y else 1.5, aligned=float(y), edge_aligned=0.95 * y, edge_free=0.0 if y else 0.7)
        if i % 5 == 0:
            f["margin"] = None  # pairs without a next-best similarity
        feats.append(f)
        ys.append(y)
        items.append({"similarity": f["similarity"], "inliers": float(inl), "spread_pct": 100 * f["spread"]})
    return feats, ys, items


def test_fit_verdict_model_save_load_and_variants(tmp_path):
    feats, ys, items = _rows()
    m = C.fit_verdict_model(feats, ys, items, cost_false_match=9.0, min_precision=0.99, meta={"data": "synthetic"})
    assert set(m.variants) == {"full", "similarity", "geometry"} and m.threshold >= 0.9
    assert m.meta["heldout_scores"]["full"]["precision"] == 1.0
    assert 9 < m.neutral["inliers"][0] < 40 and m.neutral["inliers"][1] == 1.0
    f = dict(feats[3])  # a positive with every feature
    p_full, var = m.probability(f)
    assert var == "full" and p_full > 0.9
    f.pop("margin")
    assert m.probability(f)[1] == "similarity"
    f["similarity"] = None
    assert m.probability(f)[1] == "geometry"
    assert m.supports("inliers", 200.0) and not m.supports("inliers", 3.0) and not m.supports("inliers", math.nan)
    path = m.save(tmp_path / "v.json")
    m2 = C.VerdictModel.load(path)
    assert m2.threshold == m.threshold and m2.probability(feats[3]) == pytest.approx(m.probability(feats[3]))
    assert m2.neutral == {k: tuple(v) for k, v in m.neutral.items()}
    assert m2.probability({**feats[3], "margin": None})[1] == "similarity"  # richest first, whatever the file order
    assert m.modalities == m2.modalities == ("uav",)  # the default: simulated UAV pairs
    assert C.fit_verdict_model(feats, ys, items, min_precision=0.99, modalities=["map", "uav", "map"]).modalities == (
        "map", "uav")
    assert C.rule_model().modalities == ()


def test_rule_model_and_bad_files(tmp_path):
    r = C.rule_model()
    good = {"log_inliers": math.log1p(100), "inlier_ratio": 0.5, "spread": 0.3, "rms": 1.0, "plausible": 1.0}
    assert r.probability(good) == (0.95, "rule") and r.probability({**good, "spread": 0.05})[0] == 0.05
    with pytest.raises(ModelError, match="not found"):
        C.VerdictModel.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{]")
    with pytest.raises(ModelError, match="cannot read"):
        C.VerdictModel.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelError, match="not a"):
        C.VerdictModel.load(bad)
    bad.write_text(json.dumps({"format": C.FORMAT, "threshold": 0.9, "variants": {"full": {"features": ["nope"],
                                                                                           "mean": [0], "scale": [1],
                                                                                           "coef": [1],
                                                                                           "intercept": 0}}}))
    with pytest.raises(ModelError, match="unknown features"):
        C.VerdictModel.load(bad)


def test_shipped_model_loads_and_is_precision_first():
    path = C.default_model_path()
    assert path is not None and path.is_file(), "models/explainer/verdict.json is missing"
    m = C.load_verdict_model()
    assert not m.rule and {"full", "similarity", "geometry"} <= set(m.variants)
    assert m.threshold >= m.cost_false_match / (1 + m.cost_false_match) >= 0.9
    for v in m.variants.values():  # every weight agrees with its expected sign
        for f, c in zip(v.features, v.coef):
            assert c * C.FEATURE_SIGNS[f] >= 0, (f, c)
    assert m.meta["heldout_scores"]["full"]["precision"] >= 0.99
    assert m.modalities == ("uav",)  # fitted on simulated UAV pairs only (training/gleam_x/pairs.py)
