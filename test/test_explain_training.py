"""GLEAM-X training data and evaluation: simulated positive / hard-negative pairs, fine-tuning records, metrics."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from gleam_ros.core.encoder import TorchBackend
from gleam_ros.core.explain import EvidenceExplainer, Explanation, faithfulness, split_sentences
from gleam_ros.core.explain.mllm import VERDICT_LINES, parse_answer
from gleam_ros.core.explain.schema import EvidenceItem
from gleam_ros.core.sim.world import WorldConfig, make_world
from training.gleam_x.evaluate import evaluate_explanations, sbert_model_path, sbert_similarity, verdict_metrics
from training.gleam_x.pairs import PairSimulator, PairSpec, summarize
from training.gleam_x.records import build_records, load_records

torch.set_num_threads(1)
cv2.setNumThreads(1)


@pytest.fixture(scope="module")
def pairs():
    world = make_world(WorldConfig(seed=5, size_m=320.0, gsd_m=0.3))
    sim = PairSimulator(world.satellite_map(), TorchBackend(threads=1), PairSpec(n_queries=2, alt_range=(80.0, 100.0),
                                                                               seed=1))
    return sim, list(sim.pairs())


def test_pairs_are_positives_and_hard_negatives(pairs):
    sim, ps = pairs
    s = summarize(ps)
    assert s["queries"] == 2 and s["positive"] == 2 and s["hard_embedding"] == 2 and s["hard_spatial"] == 2
    for p in ps:
        ctx = p.context
        assert ctx.tile is p.tile and ctx.intrinsics is not None and ctx.priors.alt_m > 0
        assert -1.0 <= ctx.similarity <= 1.0 and ctx.next_best_similarity is not None
        if p.kind == "positive":
            assert p.label == 1 and p.overlap >= 0.5
        else:
            assert p.label == 0 and p.overlap == 0.0 and p.distance_m >= sim.spec.tile_size_m
    for q in {p.query_id for p in ps}:
        group = {p.kind: p for p in ps if p.query_id == q}
        assert group["hard_embedding"].tile.tile_id != group["hard_spatial"].tile.tile_id
        # the embedding hard negative is the wrong tile retrieval ranks highest
        assert group["hard_embedding"].rank <= group["hard_spatial"].rank


def test_records_have_bilingual_faithful_targets(pairs, tmp_path):
    _, ps = pairs
    summary = build_records(ps, EvidenceExplainer(), tmp_path)
    recs, root = load_records(tmp_path)
    assert len(recs) == sum(summary["written"].values()) and len(recs) >= 4
    for rec in recs:
        q, r = rec.images(root)
        assert q.shape[2] == 3 and r.shape[2] == 3
        items = [EvidenceItem.from_dict(d) for d in rec.evidence]
        assert rec.verdict == ("match" if rec.label else "no match")
        for lang in ("en", "zh"):
            assert "Verdict" in rec.instruction["en"] and "结论" in rec.instruction["zh"]
            tgt = rec.target[lang]
            assert tgt.endswith(VERDICT_LINES[lang][rec.label])
            assert parse_answer(tgt).verdict == rec.label and parse_answer(tgt).explicit
            # every sentence of the target, the verdict line included, is backed by a measured item
            assert faithfulness(tgt, items, lang) == 1.0, tgt
            assert len(split_sentences(tgt, lang)) == len(items) + 1
    line = (tmp_path / "records.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert "结论" in json.loads(line)["target"]["zh"]


def test_verdict_metrics_and_no_match_bias():
    m = verdict_metrics([1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 1, 1])
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 0, 2, 2)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == 1.0 and m["recall"] == 0.5
    assert m["no_match_bias"] == pytest.approx(4 / 6 - 2 / 6)  # says "no match" too often
    assert math.isnan(verdict_metrics([0, 0], [0, 0])["precision"])


def test_evaluate_with_sentence_bert_and_faithfulness(pairs):
    _, ps = pairs
    assert (sbert_model_path() / "config.json").is_file()
    ex = EvidenceExplainer()
    exps = [ex.explain(p.query, p.reference, p.context) for p in ps[:3]]
    labels = [p.label for p in ps[:3]]
    refs = [e.text for e in exps]
    invented = Explanation(verdict=0, confidence=0.5, language="en", text="A church stands by the lake. Verdict: match.",
                           evidence=exps[0].evidence, flags=["verdict_missing"])
    out = evaluate_explanations(exps + [invented], labels + [1], references=refs + [refs[0]])
    assert out["sbert"]["per_item"][0] == pytest.approx(1.0, abs=1e-4)
    assert out["sbert"]["per_item"][3] < 0.9
    # the invented landmark is not backed; its verdict line is (the evidence for pair 0 says "match")
    assert ps[0].label == 1 and out["faithfulness"]["min"] == 0.5
    assert out["faithfulness"]["fully_faithful_share"] == pytest.approx(0.75)
    assert out["verdict"]["n"] == 4 and out["flags"]["verdict_missing"] == 1
    sims = sbert_similarity(["the roads agree"], ["the roads match"])
    assert 0.5 < sims[0] < 1.0
    assert np.isfinite(out["confidence"]["brier"])
