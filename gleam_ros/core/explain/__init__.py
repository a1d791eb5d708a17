"""GLEAM-X: explain whether a query image and a satellite reference show the same place.

One interface, two backends::

    exp = explainer.explain(query_rgb, reference_rgb, context=None, language="en")  # -> Explanation

- :class:`EvidenceExplainer` (default, CPU): measures (embedding similarity and margin, local-feature
  inliers, their spread, scale / height and rotation against priors, edge-orientation structure,
  land cover) and speaks one checkable sentence per measurement; the verdict comes from a logistic
  regression calibrated for precision on simulated pairs.
- :class:`~.mllm.MLLMExplainer`: a Qwen2.5-VL-style multimodal LLM (GLEAM-X) loaded from a local
  directory; its free-text answer is parsed into the same :class:`Explanation` and, with an evidence
  checker, each sentence is checked against measurements.

:class:`Explanation` and :class:`EvidenceItem` mirror ``msg/Explanation.msg`` and ``msg/EvidenceItem.msg``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from .calibrate import VerdictModel, load_verdict_model, rule_model
from .evidence import EvidenceConfig, EvidenceExplainer, Measurements
from .schema import (
    LANGUAGES,
    VERDICT_MATCH,
    VERDICT_NO_MATCH,
    EvidenceItem,
    ExplainContext,
    Explanation,
    Sentence,
)
from .text import faithfulness, parse_sentence, sentence_source, split_sentences

__all__ = [
    "LANGUAGES", "VERDICT_MATCH", "VERDICT_NO_MATCH", "EvidenceConfig", "EvidenceExplainer", "EvidenceItem",
    "ExplainContext", "Explainer", "Explanation", "MLLMExplainer", "Measurements", "Sentence", "VerdictModel",
    "faithfulness", "load_verdict_model", "make_explainer", "parse_sentence", "rule_model", "sentence_source",
    "split_sentences",
]


@runtime_checkable
class Explainer(Protocol):
    """What every explainer backend offers (a ROS node only needs this)."""

    name: str

    def explain(self, query_rgb: np.ndarray, reference_rgb: np.ndarray, context: ExplainContext | None = None,
                language: str = "en") -> Explanation:
        """Explain whether the two images show the same place."""
        ...


def make_explainer(kind: str = "evidence", **kwargs: Any) -> Explainer:
    """Build an explainer: ``kind="evidence"`` (kwargs of :class:`EvidenceExplainer`, whose ``backend`` is an
    optional encoder) or ``"mllm"`` (kwargs of :class:`~.mllm.MLLMExplainer`, ``model_dir`` required)."""
    if kind == "evidence":
        return EvidenceExplainer(**kwargs)
    if kind == "mllm":
        from .mllm import MLLMExplainer

        return MLLMExplainer(**kwargs)
    from ..errors import ConfigError

    raise ConfigError(f"unknown explainer backend {kind!r}; valid: evidence, mllm")


def __getattr__(name: str) -> Any:
    if name == "MLLMExplainer":  # lazy: importing transformers takes seconds
        from .mllm import MLLMExplainer

        return MLLMExplainer
    raise AttributeError(name)
