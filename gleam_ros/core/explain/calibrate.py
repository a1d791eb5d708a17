"""The verdict model of the evidence backend: logistic regression in numpy, calibrated for precision.

A :class:`VerdictModel` turns the measured features of a pair (see :data:`FEATURES`) into the
probability that both images show the same place. It holds one logistic regression per *variant*
(:data:`VARIANTS`: with the embedding similarity and its margin, with the similarity only, geometry
and appearance only) and uses the richest variant whose features the pair has. A false "match" is
worse than a missed one: with a cost ratio ``c`` of a false match to a missed match, the decision
threshold on the (class-balanced) probability is ``c / (1 + c)``, raised further when held-out
simulated pairs show a lower precision than required (see :func:`fit_verdict_model`).

The model also stores per-feature *neutral points*: the value at which a one-feature logistic
regression is undecided. An evidence item speaks for a match when its value lies on the match side
of its neutral point.

Without a fitted model file the backend falls back to :func:`rule_model`, the geometric verifier's
thresholds as a crisp rule (flagged ``uncalibrated``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, ModelError

FORMAT = "gleam-x-verdict"
FORMAT_VERSION = 1
MODEL_FILE = "verdict.json"

GEOMETRY_FEATURES = (
    "log_inliers", "inlier_ratio", "spread", "rms", "plausible", "log_aniso", "aligned",
    "edge_aligned", "edge_free", "lc_vegetation", "lc_water", "lc_built_up",
)
EMBEDDING_FEATURES = ("similarity", "margin")
FEATURES = EMBEDDING_FEATURES + GEOMETRY_FEATURES
VARIANTS: dict[str, tuple[str, ...]] = {
    "full": ("similarity", "margin", *GEOMETRY_FEATURES),
    "similarity": ("similarity", *GEOMETRY_FEATURES),
    "geometry": GEOMETRY_FEATURES,
}
# Expected direction of each feature's effect on "same place" (+1 / -1): a fitted weight of the other sign
# (an artefact of nearly separable or confounded training data) is not kept, see LogisticVariant.fit.
FEATURE_SIGNS: dict[str, float] = {
    "similarity": 1.0, "margin": 1.0, "log_inliers": 1.0, "inlier_ratio": 1.0, "spread": 1.0, "rms": -1.0,
    "plausible": 1.0, "log_aniso": -1.0, "aligned": 1.0, "edge_aligned": 1.0, "edge_free": 1.0,
    "lc_vegetation": -1.0, "lc_water": -1.0, "lc_built_up": -1.0,
}
# Item neutral points: item key -> (value at which the 1-D model is undecided, +1 when larger values speak for a match)
NEUTRAL_KEYS = ("similarity", "margin", "inliers", "spread_pct", "edge_aligned", "edge_free",
                "lc_vegetation_pp", "lc_water_pp", "lc_built_up_pp")
DEFAULT_NEUTRAL: dict[str, tuple[float, float]] = {
    "similarity": (0.6, 1.0), "margin": (0.02, 1.0), "inliers": (30.0, 1.0), "spread_pct": (10.0, 1.0),
    "edge_aligned": (0.5, 1.0), "edge_free": (0.8, 1.0), "lc_vegetation_pp": (15.0, -1.0),
    "lc_water_pp": (10.0, -1.0), "lc_built_up_pp": (15.0, -1.0),
}


def sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out if out.ndim else float(out)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, sample_weight: np.ndarray | None = None,
                 max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (IRLS); returns (coef, intercept).

    ``x`` is (N, D) (standardise it first: the penalty ``l2 * |coef|^2 / 2`` treats every column alike;
    the intercept is not penalised), ``y`` is (N,) in {0, 1}, ``sample_weight`` (N,) >= 0.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"fit_logistic: x must be (N, D) and y (N,), got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ConfigError("fit_logistic: x contains NaN or infinite values")
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
    a = np.c_[x, np.ones(len(x))]
    beta = np.zeros(a.shape[1])
    reg = np.full(a.shape[1], float(l2))
    reg[-1] = 0.0
    for _ in range(max_iter):
        p = sigmoid(a @ beta)
        grad = a.T @ (w * (p - y)) + reg * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.max(np.abs(step))) < tol:
            break
    return beta[:-1].copy(), float(beta[-1])


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Sample weights giving both classes the same total weight."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"need both classes to fit, got {n_pos} positives and {n_neg} negatives")
    return np.where(y, len(y) / (2.0 * n_pos), len(y) / (2.0 * n_neg))


@dataclass
class LogisticVariant:
    """One logistic regression over a fixed feature list, with its standardisation."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def logit(self, feats: Mapping[str, float]) -> float:
        """Logit of a match for one pair's features (all of ``self.features`` must be present)."""
        x = np.array([float(feats[f]) for f in self.features])
        return float(((x - self.mean) / self.scale) @ self.coef + self.intercept)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits for an (N, len(features)) matrix."""
        return ((np.asarray(x, float) - self.mean) / self.scale) @ self.coef + self.intercept

    def contributions(self, feats: Mapping[str, float]) -> dict[str, float]:
        """Each feature's term of the logit (standardised value times weight)."""
        return {f: float((float(feats[f]) - m) / s * c)
                for f, m, s, c in zip(self.features, self.mean, self.scale, self.coef)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "verdict model") -> LogisticVariant:
        """Inverse of :meth:`to_dict`; a malformed entry raises :class:`ModelError`."""
        try:
            feats = tuple(str(f) for f in d["features"])
            arrs = [np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
            icpt = float(d["intercept"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed variant: {exc}") from None
        unknown = [f for f in feats if f not in FEATURES]
        if unknown:
            raise ModelError(f"{source}: unknown features {unknown}")
        if any(a.shape != (len(feats),) for a in arrs) or not all(np.isfinite(a).all() for a in arrs):
            raise ModelError(f"{source}: variant arrays must be finite and of length {len(feats)}")
        if not (arrs[1] > 0).all() or not math.isfinite(icpt):
            raise ModelError(f"{source}: scales must be positive and the intercept finite")
        return cls(feats, arrs[0], arrs[1], arrs[2], icpt)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, features: Sequence[str], l2: float = 1.0,
            signs: Mapping[str, float] | None = None) -> LogisticVariant:
        """Standardise ``x`` and fit a class-balanced L2 logistic regression with sign constraints.

        A feature whose weight comes out against its expected sign (``signs``, default
        :data:`FEATURE_SIGNS`) is dropped (weight 0) and the rest refitted, the worst offender first,
        until every weight agrees with its sign: a reviewer never sees "more land-cover difference,
        more likely the same place".
        """
        x = np.asarray(x, float)
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        z = (x - mean) / scale
        sg = np.array([float((FEATURE_SIGNS if signs is None else signs).get(f, 0.0)) for f in features])
        active = np.ones(len(features), bool)
        w = balanced_weights(y)
        while True:
            coef_a, icpt = fit_logistic(z[:, active], y, l2=l2, sample_weight=w)
            coef = np.zeros(len(features))
            coef[active] = coef_a
            wrong = coef * sg < 0
            if not wrong.any():
                break
            active[int(np.argmin(np.where(wrong, coef * sg, 0.0)))] = False
        return cls(tuple(features), mean, scale, coef, icpt)


@dataclass
class VerdictModel:
    """Probability of "same place" from measured features, and the precision-first decision threshold.

    ``variants`` maps a :data:`VARIANTS` name to its :class:`LogisticVariant` (richest first);
    ``threshold`` is the probability a match requires; ``neutral`` maps an item key of
    :data:`NEUTRAL_KEYS` to (neutral value, direction); ``rule`` marks the uncalibrated fallback;
    ``meta`` records how the model was fitted and how it scored on held-out pairs.
    """

    variants: dict[str, LogisticVariant]
    threshold: float = 0.9
    neutral: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_NEUTRAL))
    cost_false_match: float = 9.0
    rule: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"VerdictModel.threshold must be within (0, 1), got {self.threshold}")
        for k, v in DEFAULT_NEUTRAL.items():
            self.neutral.setdefault(k, v)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Query modalities the model was calibrated on (``meta["modalities"]``; models fitted before it
        was recorded were fitted on simulated UAV views only). Empty for the uncalibrated rule."""
        if self.rule:
            return ()
        return tuple(self.meta.get("modalities") or ("uav",))

    def pick(self, feats: Mapping[str, float | None]) -> str:
        """Name of the richest variant whose features are all present (not None / NaN) in ``feats``."""
        if self.rule:
            return "rule"
        order = [n for n in VARIANTS if n in self.variants] + [n for n in self.variants if n not in VARIANTS]
        for name in order:  # richest first, whatever the order of the file
            var = self.variants[name]
            if all(feats.get(f) is not None and math.isfinite(float(feats[f])) for f in var.features):
                return name
        raise ModelError(f"verdict model {self.source or ''}: no variant fits the available features {sorted(feats)}")

    def probability(self, feats: Mapping[str, float | None]) -> tuple[float, str]:
        """(probability of a match, variant used) for one pair's features."""
        name = self.pick(feats)
        if name == "rule":
            return _rule_probability(feats), name
        return float(sigmoid(self.variants[name].logit(feats))), name

    def supports(self, key: str, value: float) -> bool:
        """Whether an item value speaks for a match (lies on the match side of its neutral point)."""
        t, direction = self.neutral[key]
        return bool((value - t) * direction > 0) if math.isfinite(value) else False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "threshold": self.threshold,
            "cost_false_match": self.cost_false_match, "rule": self.rule,
            "variants": {k: v.to_dict() for k, v in self.variants.items()},
            "neutral": {k: list(v) for k, v in self.neutral.items()}, "meta": self.meta,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> VerdictModel:
        """Read a model written by :meth:`save`; a missing or malformed file raises :class:`ModelError`."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{path}: verdict model file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: cannot read verdict model: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelError(f"{path}: not a {FORMAT} file")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelError(f"{path}: format_version {d.get('format_version')} is newer than this code reads")
        variants = {str(k): LogisticVariant.from_dict(v, str(path)) for k, v in (d.get("variants") or {}).items()}
        rule = bool(d.get("rule", False))
        if not variants and not rule:
            raise ModelError(f"{path}: no variants")
        try:
            neutral = {str(k): (float(v[0]), float(v[1])) for k, v in (d.get("neutral") or {}).items()}
            m = cls(variants, threshold=float(d["threshold"]), neutral=neutral,
                    cost_false_match=float(d.get("cost_false_match", 9.0)), rule=rule, meta=dict(d.get("meta") or {}),
                    source=str(path))
        except (KeyError, TypeError, ValueError, IndexError, ConfigError) as exc:
            raise ModelError(f"{path}: malformed verdict model: {exc}") from None
        return m


def _rule_probability(feats: Mapping[str, float | None]) -> float:
    """The fallback rule: the geometric verifier's default thresholds, as a crisp 0.95 / 0.05."""
    def g(k: str, default: float) -> float:
        v = feats.get(k)
        return default if v is None or not math.isfinite(float(v)) else float(v)

    ok = (math.expm1(g("log_inliers", 0.0)) >= 30 - 1e-6 and g("inlier_ratio", 0.0) >= 0.15
          and g("spread", 0.0) >= 0.10 and g("rms", 99.0) <= 3.0 and g("plausible", 0.0) >= 0.5)
    return 0.95 if ok else 0.05


def rule_model() -> VerdictModel:
    """The uncalibrated fallback: the verifier's thresholds (30 inliers, ratio 0.15, spread 0.10, rms 3 px)."""
    return VerdictModel({}, threshold=0.9, rule=True, source="built-in rule",
                        meta={"note": "uncalibrated fallback: geometric verification thresholds"})


def default_model_path() -> Path | None:
    """Where the shipped verdict model lives: ``$GLEAM_EXPLAINER_MODEL``, the source tree's
    ``models/explainer/verdict.json`` or an installed ``<prefix>/share/gleam_ros/models/explainer/verdict.json``
    (prefix = ``sys.prefix`` or an ancestor of this module); None if none exists."""
    env = os.environ.get("GLEAM_EXPLAINER_MODEL")
    if env:
        return Path(env)
    from ..shipped import installed_model_paths

    rel = Path("explainer") / MODEL_FILE
    for p in [Path(__file__).resolve().parents[3] / "models" / rel, *installed_model_paths(rel)]:
        if p.is_file():
            return p
    return None


def load_verdict_model(path: str | os.PathLike | None = None) -> VerdictModel:
    """The verdict model at ``path``; by default the shipped one, or :func:`rule_model` when none is installed."""
    if path is not None:
        return VerdictModel.load(path)
    p = default_model_path()
    return VerdictModel.load(p) if p is not None else rule_model()


# ------------------------------------------------------------------------------------------------ fitting


def neutral_point(values: np.ndarray, y: np.ndarray, default: tuple[float, float]) -> tuple[float, float]:
    """Value at which a class-balanced 1-D logistic regression is undecided, and its direction (+1/-1).

    Falls back to ``default`` when the values are constant or the fit puts the point outside the data.
    """
    v = np.asarray(values, float)
    ok = np.isfinite(v)
    v, yy = v[ok], np.asarray(y)[ok]
    if len(v) < 4 or yy.all() or not yy.any() or v.std() < 1e-9:
        return default
    m, s = v.mean(), v.std()
    coef, icpt = fit_logistic(((v - m) / s)[:, None], yy, l2=1e-3, sample_weight=balanced_weights(yy))
    if abs(coef[0]) < 1e-6:
        return default
    t = m - icpt / coef[0] * s
    if not (v.min() <= t <= v.max()):
        return default
    return float(t), float(np.sign(coef[0]))


def precision_threshold(p: np.ndarray, y: np.ndarray, cost_false_match: float, min_precision: float) -> float:
    """Decision threshold: ``c / (1 + c)`` for a cost ratio ``c``, raised until the precision on (p, y) is at
    least ``min_precision`` (or no pair is left above it)."""
    t = cost_false_match / (1.0 + cost_false_match)
    p = np.asarray(p, float)
    y = np.asarray(y).astype(bool)
    cands = np.unique(np.r_[t, p[p > t]])
    for c in cands:
        sel = p >= c
        if not sel.any() or y[sel].mean() >= min_precision:
            return float(min(max(c, t), 0.999))
    return 0.999


def fit_verdict_model(feats: Sequence[Mapping[str, float | None]], y: Sequence[int], items: Sequence[Mapping[str, float]],
                      cost_false_match: float = 9.0, min_precision: float = 0.995, l2: float = 1.0,
                      holdout: float = 0.3, seed: int = 0, meta: Mapping[str, Any] | None = None,
                      modalities: Sequence[str] = ("uav",)) -> VerdictModel:
    """Fit every variant on simulated pairs and choose the decision threshold for precision.

    ``feats[i]`` are the :data:`FEATURES` of pair i (None where unavailable), ``y[i]`` 1 for the same place,
    ``items[i]`` the raw item values keyed by :data:`NEUTRAL_KEYS` (for the neutral points). A random
    ``holdout`` share of the pairs (by pair) is kept out of the fit; the threshold is ``c / (1 + c)``
    raised until the held-out precision of the richest variant reaches ``min_precision``; the
    variants are then refitted on all pairs. Held-out metrics of every variant go to ``meta``, and
    ``modalities`` (the query modalities of the pairs) to ``meta["modalities"]``.
    """
    y = np.asarray(y, dtype=int)
    n = len(y)
    if n != len(feats) or n != len(items):
        raise ConfigError("fit_verdict_model: feats, y and items must have the same length")
    rng = np.random.default_rng(seed)
    test = rng.random(n) < holdout
    variants: dict[str, LogisticVariant] = {}
    report: dict[str, Any] = {}
    threshold = None
    for name, fl in VARIANTS.items():
        rows = [i for i in range(n) if all(feats[i].get(f) is not None and math.isfinite(float(feats[i][f])) for f in fl)]
        if len(rows) < 10 or len(set(y[rows].tolist())) < 2:
            continue
        x = np.array([[float(feats[i][f]) for f in fl] for i in rows])
        yy = y[rows]
        tt = test[rows]
        if tt.any() and (~tt).any() and len(set(yy[~tt].tolist())) == 2:
            v = LogisticVariant.fit(x[~tt], yy[~tt], fl, l2=l2)
            p_test = sigmoid(v.logits(x[tt]))
            if threshold is None:
                threshold = precision_threshold(p_test, yy[tt], cost_false_match, min_precision)
            report[name] = _scores(p_test, yy[tt], threshold)
        variants[name] = LogisticVariant.fit(x, yy, fl, l2=l2)
    if not variants:
        raise ConfigError("fit_verdict_model: not enough pairs with both classes to fit any variant")
    if threshold is None:
        threshold = cost_false_match / (1.0 + cost_false_match)
    neutral = {}
    for k in NEUTRAL_KEYS:
        vals = np.array([float(it.get(k, math.nan)) for it in items])
        neutral[k] = neutral_point(vals, y, DEFAULT_NEUTRAL[k])
    info = dict(meta or {})
    info.update({"pairs": n, "positives": int(y.sum()), "negatives": int(n - y.sum()), "holdout": holdout,
                 "min_precision": min_precision, "heldout_scores": report, "modalities": sorted(set(modalities))})
    return VerdictModel(variants, threshold=threshold, neutral=neutral, cost_false_match=cost_false_match, meta=info)


def _scores(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    pred = np.asarray(p) >= threshold
    y = np.asarray(y).astype(bool)
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    return {"n": int(len(y)), "accuracy": (tp + tn) / max(len(y), 1), "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "threshold": threshold}
