"""Data types of GLEAM-X explanations, mirroring ``msg/Explanation.msg`` and ``msg/EvidenceItem.msg``.

An :class:`Explanation` is what every explainer backend returns: a verdict (match / no match), the
probability that the verdict is right, the text in one language, the evidence items the text rests
on and an evidence image. Field names and meanings follow the ROS messages, so a node fills a
message field by field; extras that the messages do not carry (sentence-to-item links, flags, the
raw model answer, the evidence image) are documented on the class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..camera import CameraIntrinsics
from ..errors import InputError
from ..verify import Priors, Verification

VERDICT_NO_MATCH = 0  # Explanation.VERDICT_NO_MATCH
VERDICT_MATCH = 1  # Explanation.VERDICT_MATCH
VERDICT_LABELS = {VERDICT_NO_MATCH: "no match", VERDICT_MATCH: "match"}
LANGUAGES = ("en", "zh")


def check_language(language: str) -> str:
    """Return ``language`` if it is one of :data:`LANGUAGES`, else raise :class:`InputError`."""
    if language not in LANGUAGES:
        raise InputError(f"language must be one of {LANGUAGES}, got {language!r}")
    return language


def _box_list(boxes: Any) -> list[list[float]]:
    out = []
    for b in boxes or []:
        v = [float(x) for x in b]
        if len(v) != 4:
            raise InputError(f"a region must be a box [x0, y0, x1, y1], got {b!r}")
        out.append(v)
    return out


@dataclass
class EvidenceItem:
    """One measured fact an explanation rests on (``msg/EvidenceItem.msg`` plus ``id`` and ``details``).

    ``value`` is the measured value in ``unit`` ("", "px", "m", "deg", "%"), already rounded to the
    precision the sentence shows it with, so the numbers of ``description`` equal the item's numbers.
    ``details`` holds the further measured numbers the sentence quotes (e.g. the number of tentative
    matches next to the number of inliers). ``query_regions`` / ``reference_regions`` are boxes
    ``[x0, y0, x1, y1]`` in pixels of the query and the reference image as given to the explainer.
    ``variant`` names the sentence template that produced ``description`` (see :mod:`.text`).
    """

    id: str
    kind: str
    value: float
    unit: str
    supports_match: bool
    description: str = ""
    query_regions: list[list[float]] = field(default_factory=list)
    reference_regions: list[list[float]] = field(default_factory=list)
    details: dict[str, float] = field(default_factory=dict)
    variant: str = ""

    def __post_init__(self) -> None:
        self.value = float(self.value)
        self.supports_match = bool(self.supports_match)
        self.details = {str(k): float(v) for k, v in self.details.items()}
        self.query_regions = _box_list(self.query_regions)
        self.reference_regions = _box_list(self.reference_regions)

    def numbers(self) -> list[float]:
        """Every number the item's sentence may quote: ``value`` and the ``details`` values."""
        return [self.value, *self.details.values()]

    def flat_query_regions(self) -> list[float]:
        """``query_regions`` flattened to ``[x0, y0, x1, y1, ...]`` (the message's float32[] layout)."""
        return [v for b in self.query_regions for v in b]

    def flat_reference_regions(self) -> list[float]:
        """``reference_regions`` flattened to ``[x0, y0, x1, y1, ...]``."""
        return [v for b in self.reference_regions for v in b]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "id": self.id, "kind": self.kind, "value": _finite_or_none(self.value), "unit": self.unit,
            "supports_match": self.supports_match, "description": self.description,
            "query_regions": self.query_regions, "reference_regions": self.reference_regions,
            "details": {k: _finite_or_none(v) for k, v in self.details.items()}, "variant": self.variant,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvidenceItem:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(d["id"]), kind=str(d["kind"]), value=_none_to_nan(d["value"]), unit=str(d.get("unit", "")),
            supports_match=bool(d["supports_match"]), description=str(d.get("description", "")),
            query_regions=d.get("query_regions", []), reference_regions=d.get("reference_regions", []),
            details={k: _none_to_nan(v) for k, v in (d.get("details") or {}).items()}, variant=str(d.get("variant", "")),
        )


@dataclass
class Sentence:
    """One sentence of an explanation and the id of the evidence item it was generated from (None: unbacked)."""

    text: str
    item_id: str | None


@dataclass
class Explanation:
    """Why a query image and a reference do (not) show the same place (``msg/Explanation.msg`` plus extras).

    Message fields: ``verdict`` (:data:`VERDICT_MATCH` / :data:`VERDICT_NO_MATCH`), ``confidence``
    (probability that the verdict is right, [0, 1]), ``language`` ("en" / "zh"), ``text``,
    ``evidence``, ``tile_id`` (empty for a given image), ``query_stamp`` (seconds, None when unknown;
    the node fills the header stamps) and ``backend`` ("evidence" or the MLLM's name).

    Extras: ``evidence_image`` (query and reference side by side, RGB uint8, or None),
    ``p_match`` (the backend's probability of a match), ``sentences`` (each sentence of ``text`` with
    the evidence item it comes from), ``flags`` (e.g. ``verdict_missing``, ``prior_veto``,
    ``uncalibrated``), ``raw_answer`` (the MLLM's unparsed answer) and ``faithfulness`` (share of
    sentences backed by evidence; NaN when not assessed).
    """

    verdict: int
    confidence: float
    language: str
    text: str
    evidence: list[EvidenceItem] = field(default_factory=list)
    tile_id: str = ""
    query_stamp: float | None = None
    backend: str = "evidence"
    evidence_image: np.ndarray | None = None
    p_match: float = math.nan
    sentences: list[Sentence] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    raw_answer: str = ""
    faithfulness: float = math.nan

    @property
    def is_match(self) -> bool:
        """Whether the verdict is "match"."""
        return self.verdict == VERDICT_MATCH

    @property
    def verdict_label(self) -> str:
        """"match" or "no match"."""
        return VERDICT_LABELS[self.verdict]

    def item(self, item_id: str) -> EvidenceItem:
        """The evidence item with id ``item_id`` (KeyError when absent)."""
        for it in self.evidence:
            if it.id == item_id:
                return it
        raise KeyError(item_id)

    def items_of_kind(self, kind: str) -> list[EvidenceItem]:
        """Evidence items of one kind."""
        return [it for it in self.evidence if it.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (without the evidence image)."""
        return {
            "verdict": self.verdict, "verdict_label": self.verdict_label, "confidence": _finite_or_none(self.confidence),
            "p_match": _finite_or_none(self.p_match), "language": self.language, "text": self.text,
            "evidence": [it.to_dict() for it in self.evidence], "tile_id": self.tile_id,
            "query_stamp": self.query_stamp, "backend": self.backend,
            "sentences": [{"text": s.text, "item_id": s.item_id} for s in self.sentences],
            "flags": list(self.flags), "raw_answer": self.raw_answer,
            "faithfulness": _finite_or_none(self.faithfulness),
        }


@dataclass
class ExplainContext:
    """What the caller already knows about the pair; every field is optional.

    - ``verification``: a :class:`~gleam_ros.core.verify.Verification` of this query against this
      reference (its ``pts_tile`` must be pixels of the reference image given to the explainer);
      without it the evidence backend runs its own local-feature matching.
    - ``similarity``: embedding cosine similarity of query and reference; ``next_best_similarity``:
      that of the best tile of another place (the margin is the difference).
    - ``priors``: altitude (camera height above ground) and heading priors to check the geometry against.
    - ``intrinsics``: the query camera (turns the fitted scale into a camera height).
    - ``reference_gsd_m``: metres per reference pixel (taken from ``tile`` when given).
    - ``tile``: the reference :class:`~gleam_ros.core.tiles.Tile` (gives ``tile_id`` and the GSD).
    - ``modality``: query modality ("uav", "ground", "panorama", "map"); ``query_stamp``: seconds.
    """

    verification: Verification | None = None
    similarity: float | None = None
    next_best_similarity: float | None = None
    priors: Priors | None = None
    intrinsics: CameraIntrinsics | None = None
    reference_gsd_m: float | None = None
    tile: Any = None
    tile_id: str = ""
    modality: str = "uav"
    query_stamp: float | None = None

    def __post_init__(self) -> None:
        for name in ("similarity", "next_best_similarity", "reference_gsd_m"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(float(v)):
                raise InputError(f"ExplainContext.{name} must be finite or None, got {v!r}")
        if self.reference_gsd_m is not None and not float(self.reference_gsd_m) > 0:
            raise InputError(f"ExplainContext.reference_gsd_m must be positive, got {self.reference_gsd_m!r}")
        if self.priors is not None and not isinstance(self.priors, Priors):
            raise InputError(f"ExplainContext.priors must be a Priors, got {type(self.priors).__name__}")
        if self.intrinsics is not None and not isinstance(self.intrinsics, CameraIntrinsics):
            raise InputError(f"ExplainContext.intrinsics must be CameraIntrinsics, got {type(self.intrinsics).__name__}")

    @property
    def gsd_m(self) -> float | None:
        """Metres per reference pixel, from ``reference_gsd_m`` or the tile."""
        if self.reference_gsd_m is not None:
            return float(self.reference_gsd_m)
        g = getattr(self.tile, "gsd_m", None)
        return float(g) if g is not None else None

    @property
    def reference_id(self) -> str:
        """``tile_id`` or the tile's id (empty for a given image)."""
        return self.tile_id or str(getattr(self.tile, "tile_id", "") or "")


def check_rgb(img: Any, what: str) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image of at least 32 px per side (grey or RGBA converted), else InputError."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise InputError(f"{what} must be an (H, W, 3) RGB image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise InputError(f"{what} must be uint8, got dtype {a.dtype}")
    if a.shape[0] < 32 or a.shape[1] < 32:
        raise InputError(f"{what} is too small ({a.shape[1]}x{a.shape[0]} px, need at least 32x32)")
    return np.ascontiguousarray(a[:, :, :3])


def _finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _none_to_nan(v: Any) -> float:
    return math.nan if v is None else float(v)
