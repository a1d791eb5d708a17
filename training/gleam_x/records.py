"""GLEAM-X fine-tuning records: query image, reference image, instruction, bilingual target, verdict.

A record is written from a simulated pair (:mod:`.pairs`): the two images (JPEG), the GLEAM-X
instruction in English and Chinese (:func:`gleam_ros.core.explain.mllm.instruction`) and, as the
target, the evidence backend's explanation in each language followed by the answer-format verdict
line (``Verdict: match`` / ``结论：匹配``). Targets are faithful by construction (every sentence is
backed by a measurement) and must also be right: a pair whose evidence verdict disagrees with the
ground truth is not written (counted in the summary), so the fine-tune never learns a wrong answer.

``records.jsonl`` holds one JSON object per line; image paths are relative to its folder.

    python -m training.gleam_x.records --world 31 --queries 200 --out /data/gleamx_records
    python -m training.gleam_x.records --map /path/to/map --queries 200 --out /data/gleamx_records
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from gleam_ros.core.errors import InputError
from gleam_ros.core.explain.evidence import EvidenceExplainer
from gleam_ros.core.explain.mllm import VERDICT_LINES, instruction
from gleam_ros.core.explain.schema import LANGUAGES, VERDICT_LABELS

from .pairs import Pair

RECORDS_FILE = "records.jsonl"


@dataclass
class Record:
    """One GLEAM-X training example (paths relative to the records folder)."""

    id: str
    query: str
    reference: str
    modality: str
    instruction: dict[str, str]
    target: dict[str, str]
    verdict: str  # "match" | "no match"
    label: int
    kind: str = ""
    p_match: float = float("nan")
    evidence: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def images(self, root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
        """(query, reference) RGB uint8 images, read from ``root``."""
        return _read(Path(root) / self.query), _read(Path(root) / self.reference)


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read record image {path}")
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def _write(path: Path, rgb: np.ndarray, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise InputError(f"cannot write {path}")


def target_text(explanation_text: str, verdict: int, language: str) -> str:
    """The training target: the explanation, then the answer-format verdict line."""
    return f"{explanation_text}\n{VERDICT_LINES[language][verdict]}"


def make_record(pair: Pair, explainer: EvidenceExplainer, out_dir: str | os.PathLike, idx: int) -> Record | None:
    """Measure a pair once, explain it in both languages and write its images; None when the evidence verdict
    is wrong for this pair (such a target would teach a wrong answer)."""
    m = explainer.measure(pair.query, pair.reference, pair.context)
    exps = {lang: explainer.explain_measurements(m, lang, pair.context) for lang in LANGUAGES}
    verdict = exps["en"].verdict
    if verdict != pair.label:
        return None
    rid = f"{idx:06d}_{pair.query_id}_{pair.kind}"
    out = Path(out_dir)
    qp, rp = f"images/{rid}_query.jpg", f"images/{rid}_reference.jpg"
    _write(out / qp, pair.query)
    _write(out / rp, pair.reference)
    return Record(
        id=rid, query=qp, reference=rp, modality=pair.context.modality,
        instruction={lang: instruction(pair.context.modality, lang) for lang in LANGUAGES},
        target={lang: target_text(exps[lang].text, verdict, lang) for lang in LANGUAGES},
        verdict=VERDICT_LABELS[verdict], label=int(pair.label), kind=pair.kind, p_match=float(exps["en"].p_match),
        evidence=[it.to_dict() for it in exps["en"].evidence],
        meta={"tile_id": pair.tile.tile_id, "rank": pair.rank, "overlap": pair.overlap, "distance_m": pair.distance_m,
              "alt_m": pair.pose.alt_m, "heading_deg": pair.pose.heading_deg},
    )


def build_records(pairs: Iterable[Pair], explainer: EvidenceExplainer, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write a records folder (images + ``records.jsonl``); returns a summary (written / skipped per kind)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = {}, {}
    with open(out / RECORDS_FILE, "w", encoding="utf-8") as fh:
        for i, pair in enumerate(pairs):
            rec = make_record(pair, explainer, out, i)
            bucket = written if rec is not None else skipped
            bucket[pair.kind] = bucket.get(pair.kind, 0) + 1
            if rec is not None:
                fh.write(json.dumps(asdict(rec), ensure_ascii=False) + "\n")
    return {"records": str(out / RECORDS_FILE), "written": written, "skipped_wrong_verdict": skipped}


def load_records(path: str | os.PathLike) -> tuple[list[Record], Path]:
    """(records, their folder) from a records folder or its ``records.jsonl``."""
    p = Path(path)
    f = p / RECORDS_FILE if p.is_dir() else p
    if not f.is_file():
        raise InputError(f"no GLEAM-X records at {p} (expected {RECORDS_FILE})")
    recs = []
    for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            recs.append(Record(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise InputError(f"{f}:{n}: bad record: {exc}") from None
    return recs, f.parent


def main(argv: list[str] | None = None) -> int:
    """Command line: simulate pairs over a procedural world or a map and write records."""
    ap = argparse.ArgumentParser(prog="python -m training.gleam_x.records", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--world", type=int, default=None, help="procedural world seed (queries from another season)")
    src.add_argument("--map", default=None, help="a reference map (queries rendered from the same imagery)")
    ap.add_argument("--size", type=float, default=600.0, help="side of the --world, metres")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="verdict model of the evidence backend (default: the shipped one)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    from gleam_ros.core.encoder import TorchBackend

    from .pairs import PairSimulator, PairSpec

    torch.set_num_threads(a.threads)
    backend = TorchBackend(threads=a.threads)
    spec = PairSpec(n_queries=a.queries, seed=a.seed)
    if a.world is not None:
        from gleam_ros.core.maps import map_from_array
        from gleam_ros.core.sim.world import WorldConfig, make_world

        world = make_world(WorldConfig(seed=a.world, size_m=a.size))
        qmap = map_from_array(world.variant(season="autumn", seed=a.world + 1000), world.crs, world.transform)
        sim = PairSimulator(world.satellite_map(), backend, spec, query_map=qmap)
    else:
        from gleam_ros.core.maps import open_map

        sim = PairSimulator(open_map(a.map), backend, spec)
    summary = build_records(sim.pairs(), EvidenceExplainer(model=a.model), a.out)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
